package wsecho

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/utils/clock"
)

// testConfig is a configuration with short timeouts so that tests finish quickly.
func testConfig() Config {
	return Config{
		MaxConnections:   100,
		MaxMessageBytes:  1024,
		PingInterval:     time.Minute,
		ReadTimeout:      2 * time.Minute,
		WriteTimeout:     5 * time.Second,
		HandshakeTimeout: 5 * time.Second,
		DrainTimeout:     time.Second,
		CloseGrace:       500 * time.Millisecond,
		RetryAfter:       3 * time.Second,
	}
}

type testServer struct {
	*Server
	addr        string // host:port of the WebSocket listener
	metricsAddr string
	cancel      context.CancelFunc
	done        chan error
}

func (ts *testServer) url() string { return "ws://" + ts.addr + "/ws" }

// startServer runs a server on loopback until the test ends.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	return startServerWithClock(t, cfg, clock.RealClock{})
}

// startServerWithClock runs a server with the given clock on loopback until the test ends.
func startServerWithClock(t *testing.T, cfg Config, clk clock.WithDelayedExecution) *testServer {
	t.Helper()
	wsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{
		Server:      New(cfg, clk),
		addr:        wsLis.Addr().String(),
		metricsAddr: mLis.Addr().String(),
		cancel:      cancel,
		done:        make(chan error, 1),
	}
	go func() { ts.done <- ts.Serve(ctx, wsLis, mLis) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	return ts
}

func dial(t *testing.T, ts *testServer) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(ts.url(), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", ts.url(), err, status)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually polls cond until it holds or the deadline passes; it fails the test with msg otherwise.
func eventually(t *testing.T, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: "+msg, append([]any{within}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawConn is a WebSocket client that writes frames byte by byte, so that tests can send what no
// correct client library would.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string, extraHeaders string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	rc := &rawConn{Conn: nc, br: bufio.NewReader(nc)}
	if err := rc.handshake(addr, extraHeaders); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawConn) handshake(host, extraHeaders string) error {
	req := "GET /ws HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extraHeaders + "\r\n"
	if _, err := io.WriteString(rc, req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("handshake: HTTP %d", resp.StatusCode)
	}
	return nil
}

// frame encodes one client frame. rsv sets the RSV bits (0-7); masked false sends an unmasked frame,
// which RFC 6455 forbids from clients.
func frame(fin bool, rsv, opcode byte, masked bool, payload []byte) []byte {
	b0 := opcode | rsv<<4
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	maskBit := byte(0)
	if masked {
		maskBit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, maskBit|byte(n))
	case n < 1<<16:
		out = append(out, maskBit|126, byte(n>>8), byte(n))
	default:
		out = append(out, maskBit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

// readClose reads server frames until a close frame and returns its code; io.EOF or a reset means the
// server dropped the connection without one.
func (rc *rawConn) readClose(within time.Duration) (int, error) {
	_ = rc.SetReadDeadline(time.Now().Add(within))
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(rc.br, hdr[:]); err != nil {
			return 0, err
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(rc.br, ext[:]); err != nil {
				return 0, err
			}
			n = uint64(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(rc.br, ext[:]); err != nil {
				return 0, err
			}
			n = binary.BigEndian.Uint64(ext[:])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(rc.br, payload); err != nil {
			return 0, err
		}
		if hdr[0]&0x0f == websocket.CloseMessage {
			if len(payload) < 2 {
				return websocket.CloseNoStatusReceived, nil
			}
			return int(binary.BigEndian.Uint16(payload)), nil
		}
	}
}

// errorCount reads websocket_errors_total{reason} from the server's registry.
func errorCount(t *testing.T, s *Server, reason string) float64 {
	t.Helper()
	return counterValue(t, s, "websocket_errors_total", "reason", reason)
}

func counterValue(t *testing.T, s *Server, name, label, value string) float64 {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{%s=%q} not found", name, label, value)
	return 0
}

func isClosedWithoutFrame(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(fmt.Sprint(err), "connection reset") || (errors.As(err, &ne) && !ne.Timeout())
}
