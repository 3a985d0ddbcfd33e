package wsecho

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"k8s.io/utils/clock"
)

// maxLingerBytes bounds what the server still reads (and discards) from a peer after it has sent a
// close frame, so that the kernel does not answer unread data with a reset that would destroy the
// close frame before the peer reads it.
const maxLingerBytes = 1 << 20

// conn is one WebSocket connection. Its reader goroutine (serve), or the echo goroutine it waits
// for, is the only one that reads and the only one that writes data messages; pings and close frames
// are control frames that gorilla allows from other goroutines.
//
// Idle connections are what this server holds most of, so an idle one costs as little as possible:
// between messages its reader waits for readability in a shallow call (not inside gorilla's frame
// reader) and leaves the deep work of a message to a short-lived goroutine, so that its own stack
// stays at the minimum; pong frames, the only traffic of an idle connection, are consumed there
// without entering gorilla; the read buffer is small and write buffers are pooled.
type conn struct {
	srv     *Server
	ws      *websocket.Conn
	br      *bufio.Reader   // gorilla's read buffer
	raw     syscall.RawConn // to wait for readability without reading
	started time.Time

	// echoing is waited for by the reader goroutine while echoMessages runs; ended is set by
	// echoMessages (before Done, so the reader sees it after Wait) when the connection has ended.
	echoing sync.WaitGroup
	ended   bool

	mu       sync.Mutex
	closing  bool        // a close frame was sent, or the connection is being cut
	reason   string      // why the server ended it, if it did
	pingTime clock.Timer // next keep-alive ping
}

func newConn(s *Server, ws *websocket.Conn, br *bufio.Reader) (*conn, error) {
	sc, ok := ws.NetConn().(syscall.Conn)
	if !ok || br == nil {
		return nil, fmt.Errorf("connection %s: not a socket", ws.RemoteAddr())
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("connection %s: %w", ws.RemoteAddr(), err)
	}
	return &conn{srv: s, ws: ws, br: br, raw: raw, started: s.clock.Now()}, nil
}

// goingAwayCloser is what a drain needs of a connection.
type goingAwayCloser interface {
	closeGoingAway()
}

var _ goingAwayCloser = (*conn)(nil)

func (c *conn) serve() {
	cfg := &c.srv.cfg
	c.ws.SetReadLimit(cfg.MaxMessageBytes)
	c.extendReadDeadline()
	c.ws.SetPongHandler(func(string) error {
		c.extendReadDeadline()
		return nil
	})
	c.mu.Lock()
	if !c.closing {
		// The first ping comes after a random part of the interval so that connections opened
		// together do not ping in lockstep.
		first := cfg.PingInterval/2 + rand.N(cfg.PingInterval/2+1)
		c.pingTime = c.srv.clock.AfterFunc(first, c.ping)
	}
	c.mu.Unlock()
	c.serveMessages()
}

// serveMessages waits for messages and has them echoed until the connection ends, and then cleans
// up. The echo itself runs on a short-lived goroutine while this one waits: reading and writing a
// message grows a goroutine's stack to 8 KiB, which the garbage collector shrinks, for an idle
// goroutine, only to 4 KiB, whereas this waiting loop fits in the smallest stack. So a connection
// that has had traffic costs no more when idle than one that never had.
func (c *conn) serveMessages() {
	defer c.finish()
	for {
		if err := c.awaitMessage(); err != nil {
			c.readFailed(err)
			return
		}
		if empty, err := c.skipPongs(); err != nil {
			c.readFailed(err)
			return
		} else if empty {
			continue
		}
		if c.badCloseAtHead() {
			return
		}
		c.echoing.Add(1)
		go c.echoMessages()
		c.echoing.Wait()
		if c.ended {
			return
		}
	}
}

// echoMessages echoes the message at the head of the read buffer, and the ones after it that are
// buffered already. It sets ended if the connection ended.
func (c *conn) echoMessages() {
	defer c.echoing.Done()
	for {
		if !c.echoMessage() {
			c.ended = true
			return
		}
		if c.br.Buffered() == 0 {
			return
		}
		if c.badCloseAtHead() {
			c.ended = true
			return
		}
	}
}

// badCloseAtHead fails the connection with 1002 if the frame at the head of the read buffer is a
// close frame with a 1-byte payload: RFC 6455 (5.5.1) wants any close payload to begin with a 2-byte
// code, and gorilla reads such a frame as a close without a code and answers it as a clean close.
// It sees close frames that arrive between messages, where the buffer holds frame boundaries;
// one sent between the fragments of a message is still gorilla's to read.
func (c *conn) badCloseAtHead() bool {
	if c.br.Buffered() < 2 {
		return false
	}
	hdr, _ := c.br.Peek(2)
	if hdr[0]&0x0f != websocket.CloseMessage || hdr[1]&0x7f != 1 {
		return false
	}
	c.fail(ReasonProtocolError, websocket.FormatCloseMessage(websocket.CloseProtocolError, "close frame payload of 1 byte"))
	return true
}

// echoMessage reads one message and writes it back. It reports false once the connection has ended.
func (c *conn) echoMessage() bool {
	kind, r, err := c.ws.NextReader()
	if err != nil {
		c.readFailed(err)
		return false
	}
	bufp := c.srv.message()
	msg, err := readMessage(r, (*bufp)[:0])
	if err != nil {
		c.srv.bufs.Put(bufp)
		c.readFailed(err)
		return false
	}
	*bufp = msg
	c.srv.metrics.messagesIn.Inc()
	c.srv.activity.Add(1)
	if kind == websocket.TextMessage && !utf8.Valid(msg) {
		c.srv.bufs.Put(bufp)
		c.fail(ReasonInvalidUTF8, websocket.FormatCloseMessage(websocket.CloseInvalidFramePayloadData, "text message is not valid UTF-8"))
		return false
	}
	c.extendReadDeadline()
	_ = c.ws.SetWriteDeadline(c.srv.clock.Now().Add(c.srv.cfg.WriteTimeout))
	err = c.ws.WriteMessage(kind, msg)
	c.srv.bufs.Put(bufp)
	if err != nil {
		c.writeFailed(err)
		return false
	}
	c.srv.metrics.messagesOut.Inc()
	return true
}

// awaitMessage returns once the connection has something to read (or failed, or the read deadline
// passed), without reading it. It is called only between messages, where gorilla's reader holds no
// state but the read buffer.
func (c *conn) awaitMessage() error {
	if c.br.Buffered() > 0 {
		return nil
	}
	var peek [1]byte
	err := c.raw.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: nothing yet, wait for readability. Anything else (data, EOF, an error) is for
		// the frame reader to see.
		return err != syscall.EAGAIN
	})
	return err
}

// skipPongs consumes the complete pong frames at the head of the read buffer, each one extending the
// read deadline, and reports whether nothing else is buffered. Anything else, including a pong split
// over two reads, is left to gorilla.
func (c *conn) skipPongs() (empty bool, err error) {
	if c.br.Buffered() == 0 {
		// Data is waiting in the socket: one read moves what is there into the buffer.
		if _, err := c.br.Peek(1); err != nil {
			return false, err
		}
	}
	for c.br.Buffered() >= 2 {
		hdr, _ := c.br.Peek(2)
		size := 2 + 4 + int(hdr[1]&0x7f) // header, mask key, payload
		// A final, masked, unextended pong with a payload that fits a control frame.
		if hdr[0] != 0x80|websocket.PongMessage || hdr[1]&0x80 == 0 || size > 2+4+125 || c.br.Buffered() < size {
			return false, nil
		}
		_, _ = c.br.Discard(size)
		c.extendReadDeadline()
	}
	return c.br.Buffered() == 0, nil
}

// message returns a pooled buffer for one message.
func (s *Server) message() *[]byte {
	if b, ok := s.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 4096)
	return &b
}

// readMessage appends the whole message to buf. The read limit set on the connection bounds it.
func readMessage(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (c *conn) extendReadDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	_ = c.ws.SetReadDeadline(c.srv.clock.Now().Add(c.srv.cfg.ReadTimeout))
}

func (c *conn) ping() {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	err := c.ws.WriteControl(websocket.PingMessage, nil, c.srv.clock.Now().Add(c.srv.cfg.WriteTimeout))
	if err != nil {
		c.writeFailed(err)
		return
	}
	c.mu.Lock()
	if !c.closing {
		c.pingTime.Reset(c.srv.cfg.PingInterval)
	}
	c.mu.Unlock()
}

// readFailed ends the connection after NextReader or a message read returned err.
func (c *conn) readFailed(err error) {
	c.mu.Lock()
	weClosed := c.closing
	c.mu.Unlock()
	var closeErr *websocket.CloseError
	switch {
	case errors.As(err, &closeErr) && closeErr.Code != websocket.CloseAbnormalClosure:
		// The peer closed (or answered our close); gorilla has replied with a close frame.
	case weClosed:
		// We sent a close frame or cut the connection; the reason is already recorded.
	case errors.Is(err, websocket.ErrReadLimit):
		// gorilla has sent 1009.
		c.fail(ReasonMessageTooBig, nil)
	case isTimeout(err):
		c.fail(ReasonReadTimeout, websocket.FormatCloseMessage(websocket.CloseGoingAway, "read timeout"))
	case closeErr != nil || isPeerGone(err):
		// gorilla reports a connection lost without a close frame as 1006.
		c.fail(ReasonAbnormalClosure, nil)
	default:
		// gorilla has sent 1002 with the violation as the reason.
		c.fail(ReasonProtocolError, nil)
	}
}

// writeFailed ends the connection after a data or ping write returned err.
func (c *conn) writeFailed(err error) {
	c.mu.Lock()
	weClosed := c.closing
	c.mu.Unlock()
	switch {
	case errors.Is(err, websocket.ErrCloseSent):
	case isTimeout(err):
		// Also after a drain's close frame, which cuts a blocked write short: the client was not
		// reading either way.
		c.fail(ReasonWriteTimeout, nil)
		// A reader blocked on this connection must not wait out its own deadline.
		c.closeNow()
	case weClosed:
	default:
		c.fail(ReasonAbnormalClosure, nil)
		c.closeNow()
	}
}

// fail records why the server ends the connection and, if closeMsg is set, sends it as a close frame.
func (c *conn) fail(reason string, closeMsg []byte) {
	c.mu.Lock()
	first := c.reason == ""
	if first {
		c.reason = reason
	}
	c.closing = true
	c.mu.Unlock()
	if first {
		c.srv.metrics.errors.WithLabelValues(reason).Inc()
	}
	if closeMsg != nil {
		_ = c.ws.WriteControl(websocket.CloseMessage, closeMsg, c.srv.clock.Now().Add(c.srv.cfg.WriteTimeout))
	}
}

// closeGoingAway sends close 1001 and gives the peer CloseGrace to answer before the reader gives up.
// The whole close handshake gets CloseGrace (at most WriteTimeout): a write already blocked on a
// client that stopped reading is cut short to that deadline, so that neither the close frame nor the
// drain waits a full write timeout for a client that will not read it, and a close frame that cannot
// be written by then ends the connection.
func (c *conn) closeGoingAway() {
	deadline := c.srv.clock.Now().Add(min(c.srv.cfg.CloseGrace, c.srv.cfg.WriteTimeout))
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	_ = c.ws.NetConn().SetReadDeadline(c.srv.clock.Now().Add(c.srv.cfg.CloseGrace))
	// Applies to a data write in progress, which holds gorilla's write lock.
	_ = c.ws.NetConn().SetWriteDeadline(deadline)
	c.mu.Unlock()
	err := c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseGoingAway, "server is draining"), deadline)
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		if isTimeout(err) {
			// The client was not reading: counted as the slow client it is.
			c.fail(ReasonWriteTimeout, nil)
		}
		c.closeNow()
	}
}

// closeNow cuts the TCP connection; the reader returns and finish cleans up.
func (c *conn) closeNow() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	_ = c.ws.NetConn().Close()
}

// finish runs once, when the reader returns.
func (c *conn) finish() {
	c.mu.Lock()
	c.closing = true
	if c.pingTime != nil {
		c.pingTime.Stop()
	}
	c.mu.Unlock()
	lingerClose(c.ws.NetConn(), c.srv.clock.Now().Add(c.srv.cfg.CloseGrace))
	c.srv.untrack(c, c.srv.clock.Since(c.started))
}

// lingerClose closes nc after half-closing it and discarding what the peer still sends, up to a
// limit and a deadline, so that a close frame already written reaches the peer instead of being
// destroyed by a reset (the kernel resets a socket closed with unread data).
func lingerClose(nc net.Conn, deadline time.Time) {
	if tc, ok := nc.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err == nil {
			_ = tc.SetReadDeadline(deadline)
			_, _ = io.CopyN(io.Discard, tc, maxLingerBytes)
		}
	}
	_ = nc.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isPeerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}
