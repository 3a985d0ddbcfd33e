package wsecho

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/gobwas/ws"
)

// Builders of the table's frames and expectations.

func fr(op ws.OpCode, fin bool, p []byte) ws.Frame { return ws.NewFrame(op, fin, p) }

func withRsv(f ws.Frame, r1, r2, r3 bool) ws.Frame {
	f.Header.Rsv = ws.Rsv(r1, r2, r3)
	return f
}

func text(s string) ws.Frame   { return fr(ws.OpText, true, []byte(s)) }
func binMsg(p []byte) ws.Frame { return fr(ws.OpBinary, true, p) }
func ping(p []byte) ws.Frame   { return fr(ws.OpPing, true, p) }
func pong(p []byte) ws.Frame   { return fr(ws.OpPong, true, p) }
func closeFrame(p []byte) ws.Frame {
	return fr(ws.OpClose, true, p)
}

// closeWith builds the close payload itself: ws.NewCloseFrameBody would cut a reason that does
// not fit a control frame.
func closeWith(code ws.StatusCode, reason string) ws.Frame {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return closeFrame(append(p, reason...))
}

func send(frames ...ws.Frame) step { return step{frames: frames} }

func echoText(s string) message   { return message{op: ws.OpText, payload: []byte(s)} }
func echoBinary(p []byte) message { return message{op: ws.OpBinary, payload: p} }
func echoPong(p []byte) message   { return message{op: ws.OpPong, payload: p} }

// failWith: the server must fail the connection with code; dropping the TCP connection without
// a close frame is non-strict.
func failWith(code ws.StatusCode, echoes ...message) outcome {
	return outcome{echoes: echoes, closeCode: code, dropOK: true}
}

func echoes(m ...message) outcome { return outcome{echoes: m} }

func repeat(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// fragments splits p into frames of size n, the first of op, the others continuations.
func fragments(op ws.OpCode, p []byte, n int) []ws.Frame {
	var out []ws.Frame
	for first := true; first || len(p) > 0; first = false {
		k := min(n, len(p))
		o := ws.OpContinuation
		if first {
			o = op
		}
		out = append(out, fr(o, k == len(p), p[:k]))
		p = p[k:]
	}
	return out
}

// conformanceCases is the table, numbered as in Autobahn.
func conformanceCases() []conformanceCase {
	var cs []conformanceCase
	add := func(id, desc string, want outcome, steps ...step) {
		cs = append(cs, conformanceCase{id: id, desc: desc, steps: steps, want: want})
	}

	// 1 Framing: every payload length encoding (7-bit, 16-bit, 64-bit), text and binary.
	lengths := []int{0, 125, 126, 127, 128, 65535, 65536}
	for i, n := range lengths {
		s := string(repeat('*', n))
		add(fmt.Sprintf("1.1.%d", i+1), fmt.Sprintf("text message of %d bytes", n), echoes(echoText(s)), send(text(s)))
	}
	big := string(repeat('*', 65536))
	add("1.1.8", "text message of 65536 bytes, written in chops of 997 bytes", echoes(echoText(big)), step{frames: []ws.Frame{text(big)}, chop: 997})
	for i, n := range lengths {
		b := repeat(0xfe, n)
		add(fmt.Sprintf("1.2.%d", i+1), fmt.Sprintf("binary message of %d bytes", n), echoes(echoBinary(b)), send(binMsg(b)))
	}
	bigb := repeat(0xfe, 65536)
	add("1.2.8", "binary message of 65536 bytes, written in chops of 997 bytes", echoes(echoBinary(bigb)), step{frames: []ws.Frame{binMsg(bigb)}, chop: 997})

	// 2 Pings and pongs.
	add("2.1", "ping without payload", echoes(echoPong(nil)), send(ping(nil)))
	add("2.2", "ping with a 12-byte text payload", echoes(echoPong([]byte("Hello, world"))), send(ping([]byte("Hello, world"))))
	add("2.3", "ping with a binary payload", echoes(echoPong([]byte{0, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0, 0xff})), send(ping([]byte{0, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0, 0xff})))
	add("2.4", "ping with a 125-byte payload (the most a control frame holds)", echoes(echoPong(repeat(0xfe, 125))), send(ping(repeat(0xfe, 125))))
	add("2.5", "ping with a 126-byte payload", failWith(ws.StatusProtocolError), send(ping(repeat(0xfe, 126))))
	add("2.6", "ping with a 125-byte payload, written byte by byte", echoes(echoPong(repeat(0xfe, 125))), step{frames: []ws.Frame{ping(repeat(0xfe, 125))}, chop: 1})
	add("2.7", "unsolicited pong without payload: ignored", echoes(), send(pong(nil)))
	add("2.8", "unsolicited pong with payload: ignored", echoes(), send(pong([]byte("unsolicited pong payload"))))
	add("2.9", "unsolicited pong, then ping: only the ping answered", echoes(echoPong([]byte("ping payload"))), send(pong([]byte("unsolicited pong payload")), ping([]byte("ping payload"))))
	var pings []ws.Frame
	var pongs []message
	for i := range 10 {
		p := []byte(fmt.Sprintf("payload-%d", i))
		pings = append(pings, ping(p))
		pongs = append(pongs, echoPong(p))
	}
	add("2.10", "10 pings back to back: 10 pongs with their payloads", echoes(pongs...), send(pings...))
	add("2.11", "10 pings back to back, written in chops of 1 byte", echoes(pongs...), step{frames: pings, chop: 1})

	// 3 Reserved bits: no extension is negotiated, so any RSV bit fails the connection.
	add("3.1", "text with RSV1", failWith(ws.StatusProtocolError), send(withRsv(text("Hello, world!"), true, false, false)))
	add("3.2", "text, then text with RSV2, then ping", failWith(ws.StatusProtocolError, echoText("Hello, world!")),
		send(text("Hello, world!"), withRsv(text("Hello, world!"), false, true, false), ping([]byte("Hello, world!"))))
	add("3.3", "as 3.2 with RSV1+RSV2, written frame by frame", failWith(ws.StatusProtocolError, echoText("Hello, world!")),
		step{frames: []ws.Frame{text("Hello, world!")}, wait: 200 * time.Millisecond},
		send(withRsv(text("Hello, world!"), true, true, false), ping([]byte("Hello, world!"))))
	add("3.4", "as 3.2 with RSV3, written in chops of 1 byte", failWith(ws.StatusProtocolError, echoText("Hello, world!")),
		step{frames: []ws.Frame{text("Hello, world!"), withRsv(text("Hello, world!"), false, false, true), ping([]byte("Hello, world!"))}, chop: 1})
	add("3.5", "binary with RSV1+RSV3", failWith(ws.StatusProtocolError), send(withRsv(binMsg([]byte{0, 0xff, 0xfe}), true, false, true)))
	add("3.6", "ping with RSV2+RSV3", failWith(ws.StatusProtocolError), send(withRsv(ping([]byte("Hello, world!")), false, true, true)))
	add("3.7", "close with RSV1+RSV2+RSV3", failWith(ws.StatusProtocolError), send(withRsv(closeWith(ws.StatusNormalClosure, ""), true, true, true)))

	// 4 Opcodes: reserved non-control (3-7) and control (0xB-0xF) opcodes fail the connection.
	for i, op := range []ws.OpCode{3, 4, 5, 6, 7} {
		add(fmt.Sprintf("4.1.%d", i+1), fmt.Sprintf("reserved opcode %d, then text", op), failWith(ws.StatusProtocolError),
			send(fr(op, true, []byte("reserved")), text("Hello, world!")))
	}
	add("4.1.6", "text, then reserved opcode 6 with payload, then ping", failWith(ws.StatusProtocolError, echoText("Hello, world!")),
		send(text("Hello, world!"), fr(6, true, []byte("Hello, world!")), ping([]byte("Hello, world!"))))
	for i, op := range []ws.OpCode{0xB, 0xC, 0xD, 0xE, 0xF} {
		add(fmt.Sprintf("4.2.%d", i+1), fmt.Sprintf("text, reserved control opcode %d, ping", op), failWith(ws.StatusProtocolError, echoText("Hello, world!")),
			send(text("Hello, world!"), fr(op, true, []byte("Hello, world!")), ping([]byte("Hello, world!"))))
	}

	// 5 Fragmentation.
	add("5.1", "ping in 2 fragments (control frames must not be fragmented)", failWith(ws.StatusProtocolError),
		send(fr(ws.OpPing, false, []byte("fragment1")), fr(ws.OpContinuation, true, []byte("fragment2"))))
	add("5.2", "pong in 2 fragments", failWith(ws.StatusProtocolError),
		send(fr(ws.OpPong, false, []byte("fragment1")), fr(ws.OpContinuation, true, []byte("fragment2"))))
	add("5.3", "text in 2 fragments", echoes(echoText("fragment1fragment2")),
		send(fr(ws.OpText, false, []byte("fragment1")), fr(ws.OpContinuation, true, []byte("fragment2"))))
	add("5.4", "text in 2 fragments, written in chops of 1 byte", echoes(echoText("fragment1fragment2")),
		step{frames: []ws.Frame{fr(ws.OpText, false, []byte("fragment1")), fr(ws.OpContinuation, true, []byte("fragment2"))}, chop: 1})
	add("5.5", "text in 2 fragments, a pause between them", echoes(echoText("fragment1fragment2")),
		step{frames: []ws.Frame{fr(ws.OpText, false, []byte("fragment1"))}, wait: 100 * time.Millisecond},
		send(fr(ws.OpContinuation, true, []byte("fragment2"))))
	add("5.6", "text in 2 fragments, a ping between them", echoes(echoPong([]byte("pongme!")), echoText("fragment1fragment2")),
		send(fr(ws.OpText, false, []byte("fragment1")), ping([]byte("pongme!")), fr(ws.OpContinuation, true, []byte("fragment2"))))
	add("5.7", "as 5.6, written in chops of 1 byte", echoes(echoPong([]byte("pongme!")), echoText("fragment1fragment2")),
		step{frames: []ws.Frame{fr(ws.OpText, false, []byte("fragment1")), ping([]byte("pongme!")), fr(ws.OpContinuation, true, []byte("fragment2"))}, chop: 1})
	add("5.8", "as 5.6, pauses between the frames", echoes(echoPong([]byte("pongme!")), echoText("fragment1fragment2")),
		step{frames: []ws.Frame{fr(ws.OpText, false, []byte("fragment1"))}, wait: 100 * time.Millisecond},
		step{frames: []ws.Frame{ping([]byte("pongme!"))}},
		send(fr(ws.OpContinuation, true, []byte("fragment2"))))
	add("5.9", "final continuation without a message to continue, then text", failWith(ws.StatusProtocolError),
		send(fr(ws.OpContinuation, true, []byte("non-continuation payload")), text("Hello, world!")))
	add("5.10", "as 5.9, written in chops of 1 byte", failWith(ws.StatusProtocolError),
		step{frames: []ws.Frame{fr(ws.OpContinuation, true, []byte("non-continuation payload")), text("Hello, world!")}, chop: 1})
	add("5.12", "non-final continuation without a message to continue", failWith(ws.StatusProtocolError),
		send(fr(ws.OpContinuation, false, []byte("non-continuation payload")), text("Hello, world!")))
	add("5.15", "text in 2 fragments, then a continuation and a text frame that continue nothing", failWith(ws.StatusProtocolError, echoText("fragment1fragment2")),
		send(fr(ws.OpText, false, []byte("fragment1")), fr(ws.OpContinuation, true, []byte("fragment2")),
			fr(ws.OpContinuation, false, []byte("fragment3")), fr(ws.OpText, true, []byte("fragment4"))))
	add("5.16", "continuation first, then a complete fragmented text", failWith(ws.StatusProtocolError),
		send(fr(ws.OpContinuation, false, []byte("fragment1")), fr(ws.OpText, false, []byte("fragment2")), fr(ws.OpContinuation, true, []byte("fragment3"))))
	add("5.18", "text fragment, then a new text frame instead of a continuation", failWith(ws.StatusProtocolError),
		send(fr(ws.OpText, false, []byte("fragment1")), fr(ws.OpText, true, []byte("fragment2"))))
	add("5.19", "text in 5 fragments with 2 pings among them", echoes(echoPong([]byte("pongme 1!")), echoPong([]byte("pongme 2!")), echoText("fragment1fragment2fragment3fragment4fragment5")),
		send(fr(ws.OpText, false, []byte("fragment1")), fr(ws.OpContinuation, false, []byte("fragment2")), ping([]byte("pongme 1!")),
			fr(ws.OpContinuation, false, []byte("fragment3")), fr(ws.OpContinuation, false, []byte("fragment4")), ping([]byte("pongme 2!")),
			fr(ws.OpContinuation, true, []byte("fragment5"))))
	add("5.20", "as 5.19, written in chops of 1 byte", echoes(echoPong([]byte("pongme 1!")), echoPong([]byte("pongme 2!")), echoText("fragment1fragment2fragment3fragment4fragment5")),
		step{frames: []ws.Frame{fr(ws.OpText, false, []byte("fragment1")), fr(ws.OpContinuation, false, []byte("fragment2")), ping([]byte("pongme 1!")),
			fr(ws.OpContinuation, false, []byte("fragment3")), fr(ws.OpContinuation, false, []byte("fragment4")), ping([]byte("pongme 2!")),
			fr(ws.OpContinuation, true, []byte("fragment5"))}, chop: 1})
	cs = append(cs, utf8Cases()...)
	cs = append(cs, closeCases()...)
	cs = append(cs, limitCases()...)
	return cs
}

// κόσμε, the Greek word in Markus Kuhn's UTF-8 test file that Autobahn uses.
const kosme = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"

func utf8Cases() []conformanceCase {
	var cs []conformanceCase
	add := func(id, desc string, want outcome, steps ...step) {
		cs = append(cs, conformanceCase{id: id, desc: desc, steps: steps, want: want})
	}
	// 6.1 Empty fragments.
	add("6.1.1", "text message of 0 bytes in 3 empty fragments", echoes(echoText("")),
		send(fr(ws.OpText, false, nil), fr(ws.OpContinuation, false, nil), fr(ws.OpContinuation, true, nil)))
	add("6.1.2", "text of 0 bytes: empty first and last fragments around an empty continuation", echoes(echoText("")),
		send(fr(ws.OpText, false, nil), fr(ws.OpContinuation, true, nil)))
	add("6.1.3", "text in 3 fragments, the first and last empty", echoes(echoText("middle frame payload")),
		send(fr(ws.OpText, false, nil), fr(ws.OpContinuation, false, []byte("middle frame payload")), fr(ws.OpContinuation, true, nil)))

	// 6.2 Valid UTF-8 split anywhere, even inside a code point.
	hello := "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"
	add("6.2.1", "valid UTF-8 text in one fragment", echoes(echoText(hello)), send(text(hello)))
	add("6.2.2", "valid UTF-8 text in 2 fragments split on a code point boundary", echoes(echoText(hello)),
		send(fr(ws.OpText, false, []byte(hello[:7])), fr(ws.OpContinuation, true, []byte(hello[7:]))))
	add("6.2.3", "valid UTF-8 text in fragments of 1 byte (split inside code points)", echoes(echoText(hello)),
		send(fragments(ws.OpText, []byte(hello), 1)...))
	add("6.2.4", "κόσμε in fragments of 1 byte", echoes(echoText(kosme)), send(fragments(ws.OpText, []byte(kosme), 1)...))

	// 6.3 Invalid UTF-8 in a whole message and in fragments.
	invalid := kosme + "\xed\xa0\x80" + "edited"
	add("6.3.1", "text with a UTF-16 surrogate (ED A0 80) after κόσμε", failWith(ws.StatusInvalidFramePayloadData), send(text(invalid)))
	add("6.3.2", "the same in fragments of 1 byte", failWith(ws.StatusInvalidFramePayloadData), send(fragments(ws.OpText, []byte(invalid), 1)...))

	// 6.4 Fail fast: invalid UTF-8 in the middle of a fragmented message. Strict is to fail as
	// soon as the invalid fragment arrives, before the message is complete.
	ff := []struct {
		id, desc    string
		first, rest []byte
		tail        []byte
	}{
		{"6.4.1", "κόσμε, then a fragment with an invalid code point (F4 90 80 80 = U+110000), then more", []byte(kosme), []byte("\xf4\x90\x80\x80"), []byte("edited")},
		{"6.4.2", "κόσμε + F4, then 90 80 80 (invalid across the boundary), then more", []byte(kosme + "\xf4"), []byte("\x90\x80\x80"), []byte("edited")},
		{"6.4.3", "as 6.4.1, the invalid fragment written in chops of 1 byte", []byte(kosme), []byte("\xf4\x90\x80\x80"), []byte("edited")},
		{"6.4.4", "invalid byte FF in the first fragment", []byte("\xff"), []byte(kosme), []byte("edited")},
	}
	for i, c := range ff {
		chop := 0
		if i == 2 {
			chop = 1
		}
		add(c.id, c.desc, outcome{closeCode: ws.StatusInvalidFramePayloadData, dropOK: true, failFast: true},
			step{frames: []ws.Frame{fr(ws.OpText, false, c.first), fr(ws.OpContinuation, false, c.rest)}, chop: chop, wait: 300 * time.Millisecond},
			send(fr(ws.OpContinuation, true, c.tail)))
	}

	// 6.5-6.12 Markus Kuhn's UTF-8 samples: valid boundary values echo, malformed ones fail with
	// 1007. Noncharacters such as U+FFFE are valid UTF-8.
	valid := []struct{ id, desc, s string }{
		{"6.5.1", "Greek κόσμε", kosme},
		{"6.6.1", "first code point of each length: U+0000", "\x00"},
		{"6.6.2", "U+0080", "\xc2\x80"},
		{"6.6.3", "U+0800", "\xe0\xa0\x80"},
		{"6.6.4", "U+10000", "\xf0\x90\x80\x80"},
		{"6.7.1", "last code point of each length: U+007F", "\x7f"},
		{"6.7.2", "U+07FF", "\xdf\xbf"},
		{"6.7.3", "U+FFFF", "\xef\xbf\xbf"},
		{"6.7.4", "U+10FFFF", "\xf4\x8f\xbf\xbf"},
		{"6.8.1", "other boundaries: U+D7FF", "\xed\x9f\xbf"},
		{"6.8.2", "U+E000", "\xee\x80\x80"},
		{"6.8.3", "U+FFFD", "\xef\xbf\xbd"},
		{"6.9.1", "noncharacter U+FFFE", "\xef\xbf\xbe"},
		{"6.9.2", "noncharacter U+FDD0", "\xef\xb7\x90"},
		{"6.9.3", "noncharacter U+10FFFE", "\xf4\x8f\xbf\xbe"},
	}
	for _, v := range valid {
		add(v.id, "valid UTF-8: "+v.desc, echoes(echoText(v.s)), send(text(v.s)))
	}
	bad := []struct{ id, desc, s string }{
		{"6.10.1", "code point above U+10FFFF (F4 90 80 80)", "\xf4\x90\x80\x80"},
		{"6.10.2", "5-byte sequence (F8 88 80 80 80)", "\xf8\x88\x80\x80\x80"},
		{"6.10.3", "6-byte sequence (FC 84 80 80 80 80)", "\xfc\x84\x80\x80\x80\x80"},
		{"6.11.1", "unexpected continuation byte 80", "\x80"},
		{"6.11.2", "unexpected continuation byte BF", "\xbf"},
		{"6.11.3", "continuation bytes 80 BF 80 BF", "\x80\xbf\x80\xbf"},
		{"6.12.1", "lonely start byte C0 followed by a space", "\xc0 "},
		{"6.12.2", "lonely start byte E0 followed by a space", "\xe0 "},
		{"6.12.3", "lonely start byte F0 followed by a space", "\xf0 "},
		{"6.13.1", "2-byte sequence missing its last byte (C2)", "\xc2"},
		{"6.13.2", "3-byte sequence missing its last byte (E0 A0)", "\xe0\xa0"},
		{"6.13.3", "4-byte sequence missing its last byte (F0 90 80)", "\xf0\x90\x80"},
		{"6.14.1", "impossible byte FE", "\xfe"},
		{"6.14.2", "impossible byte FF", "\xff"},
		{"6.14.3", "impossible bytes FE FE FF FF", "\xfe\xfe\xff\xff"},
		{"6.15.1", "overlong '/' in 2 bytes (C0 AF)", "\xc0\xaf"},
		{"6.15.2", "overlong '/' in 3 bytes (E0 80 AF)", "\xe0\x80\xaf"},
		{"6.15.3", "overlong '/' in 4 bytes (F0 80 80 AF)", "\xf0\x80\x80\xaf"},
		{"6.15.4", "overlong NUL in 2 bytes (C0 80)", "\xc0\x80"},
		{"6.15.5", "largest overlong 3-byte (E0 9F BF)", "\xe0\x9f\xbf"},
		{"6.16.1", "UTF-16 surrogate U+D800 (ED A0 80)", "\xed\xa0\x80"},
		{"6.16.2", "UTF-16 surrogate U+DFFF (ED BF BF)", "\xed\xbf\xbf"},
		{"6.16.3", "surrogate pair U+D800 U+DC00", "\xed\xa0\x80\xed\xb0\x80"},
		{"6.17.1", "κόσμε followed by a truncated 3-byte sequence", kosme + "\xe1\xbd"},
	}
	for _, b := range bad {
		add(b.id, "invalid UTF-8: "+b.desc, failWith(ws.StatusInvalidFramePayloadData), send(text(b.s)))
	}
	// Every cut of κόσμε: a prefix that ends inside a code point is invalid as a message.
	for n := 1; n <= len(kosme); n++ {
		prefix := kosme[:n]
		want := echoes(echoText(prefix))
		validCut := map[int]bool{2: true, 5: true, 7: true, 9: true, 11: true}[n]
		if !validCut {
			want = failWith(ws.StatusInvalidFramePayloadData)
		}
		add(fmt.Sprintf("6.18.%d", n), fmt.Sprintf("the first %d bytes of κόσμε", n), want, send(text(prefix)))
	}
	return cs
}

func closeCases() []conformanceCase {
	var cs []conformanceCase
	add := func(id, desc string, want outcome, steps ...step) {
		cs = append(cs, conformanceCase{id: id, desc: desc, steps: steps, want: want})
	}
	// 7.1 Basic close behaviour: nothing is answered after the close handshake started.
	add("7.1.1", "text, then close 1000", echoes(echoText("Hello World!")), send(text("Hello World!")))
	add("7.1.2", "close 1000, then a second close", outcome{closeCode: ws.StatusNormalClosure},
		send(closeWith(ws.StatusNormalClosure, ""), closeWith(ws.StatusNormalClosure, "")))
	add("7.1.3", "close 1000, then ping: no pong", outcome{closeCode: ws.StatusNormalClosure},
		send(closeWith(ws.StatusNormalClosure, ""), ping([]byte("Hello World!"))))
	add("7.1.4", "close 1000, then text: no echo", outcome{closeCode: ws.StatusNormalClosure},
		send(closeWith(ws.StatusNormalClosure, ""), text("Hello World!")))
	add("7.1.5", "text fragment, close 1000, then the last fragment: no echo", outcome{closeCode: ws.StatusNormalClosure},
		send(fr(ws.OpText, false, []byte("fragment1")), closeWith(ws.StatusNormalClosure, ""), fr(ws.OpContinuation, true, []byte("fragment2"))))
	big := string(repeat('*', 256<<10))
	add("7.1.6", "256 KiB text, then close 1000 at once", echoes(echoText(big)), send(text(big)))

	// 7.3 Close frame payloads.
	add("7.3.1", "close without payload", outcome{closeCode: 0, echoCode: []ws.StatusCode{0}},
		send(closeFrame(nil)))
	add("7.3.2", "close with a 1-byte payload", failWith(ws.StatusProtocolError), send(closeFrame([]byte{0x03})))
	add("7.3.3", "close 1000 without reason", outcome{closeCode: ws.StatusNormalClosure}, send(closeWith(ws.StatusNormalClosure, "")))
	add("7.3.4", "close 1000 with a reason", outcome{closeCode: ws.StatusNormalClosure}, send(closeWith(ws.StatusNormalClosure, "Hello World!")))
	add("7.3.5", "close 1000 with a 123-byte reason (125-byte payload)", outcome{closeCode: ws.StatusNormalClosure},
		send(closeWith(ws.StatusNormalClosure, string(repeat('*', 123)))))
	add("7.3.6", "close 1000 with a 124-byte reason (126-byte payload)", failWith(ws.StatusProtocolError),
		send(closeWith(ws.StatusNormalClosure, string(repeat('*', 124)))))
	add("7.5.1", "close 1000 with an invalid UTF-8 reason", failWith(ws.StatusProtocolError),
		send(closeWith(ws.StatusNormalClosure, kosme+"\xed\xa0\x80edited")))

	// 7.7 Valid close codes are answered (with the same code or 1000); 7.9 invalid ones fail
	// with 1002. The codes are Autobahn's, plus 1015 (never sent on the wire) and codes above
	// 4999 among the invalid ones.
	for i, code := range []ws.StatusCode{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		add(fmt.Sprintf("7.7.%d", i+1), fmt.Sprintf("close with valid code %d", code),
			outcome{closeCode: 0, echoCode: []ws.StatusCode{code}}, send(closeWith(code, "")))
	}
	for i, code := range []ws.StatusCode{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		add(fmt.Sprintf("7.9.%d", i+1), fmt.Sprintf("close with invalid code %d", code), failWith(ws.StatusProtocolError), send(closeWith(code, "")))
	}
	// These cases end with the server's answer to the client's own close, not a failure; mark
	// them so that runCase does not send a second close.
	for i := range cs {
		if cs[i].want.closeCode == ws.StatusNormalClosure && len(cs[i].want.echoes) == 0 {
			cs[i].want.dropOK = false
		}
	}
	return cs
}

func limitCases() []conformanceCase {
	var cs []conformanceCase
	add := func(id, desc string, want outcome, limit int64, steps ...step) {
		cs = append(cs, conformanceCase{id: id, desc: desc, steps: steps, want: want, limit: limit})
	}
	sizes := []int{64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20}
	for i, n := range sizes {
		s := string(repeat('*', n))
		add(fmt.Sprintf("9.1.%d", i+1), fmt.Sprintf("text message of %s", size(n)), echoes(echoText(s)), 0, send(text(s)))
	}
	for i, n := range sizes {
		b := repeat(0xfe, n)
		add(fmt.Sprintf("9.2.%d", i+1), fmt.Sprintf("binary message of %s", size(n)), echoes(echoBinary(b)), 0, send(binMsg(b)))
	}
	msg := repeat('*', 4<<20)
	for i, n := range []int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20} {
		add(fmt.Sprintf("9.3.%d", i+1), fmt.Sprintf("4 MiB text in fragments of %s", size(n)), echoes(echoText(string(msg))), 0,
			send(fragments(ws.OpText, msg, n)...))
	}
	bmsg := repeat(0xfe, 4<<20)
	for i, n := range []int{64, 4 << 10, 64 << 10, 1 << 20} {
		add(fmt.Sprintf("9.4.%d", i+1), fmt.Sprintf("4 MiB binary in fragments of %s", size(n)), echoes(echoBinary(bmsg)), 0,
			send(fragments(ws.OpBinary, bmsg, n)...))
	}
	m1 := repeat('*', 1<<20)
	for i, n := range []int{64, 128, 256, 512, 1 << 10, 2 << 10} {
		add(fmt.Sprintf("9.5.%d", i+1), fmt.Sprintf("1 MiB text written in chops of %s", size(n)), echoes(echoText(string(m1))), 0,
			step{frames: []ws.Frame{text(string(m1))}, chop: n})
	}
	for i, n := range []int{0, 16, 64, 256, 1 << 10, 4 << 10} {
		var frames []ws.Frame
		var want []message
		p := string(repeat('*', n))
		for range 1000 {
			frames = append(frames, text(p))
			want = append(want, echoText(p))
		}
		add(fmt.Sprintf("9.7.%d", i+1), fmt.Sprintf("1000 text messages of %s back to back", size(n)), echoes(want...), 0, send(frames...))
		var bframes []ws.Frame
		var bwant []message
		bp := repeat(0xfe, n)
		for range 1000 {
			bframes = append(bframes, binMsg(bp))
			bwant = append(bwant, echoBinary(bp))
		}
		add(fmt.Sprintf("9.8.%d", i+1), fmt.Sprintf("1000 binary messages of %s back to back", size(n)), echoes(bwant...), 0, send(bframes...))
	}

	// The server's own limit: a message above MAX_MESSAGE_BYTES closes with 1009, whole or in
	// fragments, and a frame header that announces more is refused before its payload arrives.
	const limit = 64 << 10
	add("L.1", "text of the limit (64 KiB)", echoes(echoText(string(repeat('*', limit)))), limit, send(text(string(repeat('*', limit)))))
	add("L.2", "text of the limit + 1 byte", failWith(ws.StatusMessageTooBig), limit, send(text(string(repeat('*', limit+1)))))
	add("L.3", "text of the limit + 1 byte in fragments of 1 KiB", failWith(ws.StatusMessageTooBig), limit,
		send(fragments(ws.OpText, repeat('*', limit+1), 1<<10)...))
	hdr := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1 << 40, Masked: true, Mask: ws.NewMask()}
	var raw bytes.Buffer
	_ = ws.WriteHeader(&raw, hdr)
	add("L.4", "a frame header announcing 1 TiB, no payload", failWith(ws.StatusMessageTooBig), limit, step{raw: raw.Bytes()})
	return cs
}

func size(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
