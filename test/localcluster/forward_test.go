package localcluster

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echoServer accepts connections and echoes what it reads until the client
// half-closes, then closes its side.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln
}

func startForwarder(t *testing.T, pick targetPicker) *tcpForwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	f := newTCPForwarder("test", ln, d.DialContext, pick)
	go f.Serve()
	t.Cleanup(f.Close)
	return f
}

func TestForwarderCopiesBothWaysAndHalfCloses(t *testing.T) {
	backend := echoServer(t)
	f := startForwarder(t, func() (string, error) { return backend.Addr().String(), nil })

	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := strings.Repeat("websocket frames are just bytes; ", 10000)
	go func() {
		io.WriteString(c, msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	// The echo server ends its side only after it saw our half-close pass through.
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Errorf("echoed %d bytes, want %d", len(got), len(msg))
	}
}

func TestForwarderDropsConnectionWithoutTarget(t *testing.T) {
	f := startForwarder(t, func() (string, error) { return "", errors.New("no ready endpoints") })
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("read %d bytes, want the connection closed", n)
	}
}

func TestForwarderCloseEndsOpenConnections(t *testing.T) {
	backend := echoServer(t)
	f := startForwarder(t, func() (string, error) { return backend.Addr().String(), nil })
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// A round trip proves the connection is established end to end.
	io.WriteString(c, "x")
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("read %d bytes after Close, want the connection closed", n)
	}
	if _, err := net.Dial("tcp", f.Addr().String()); err == nil {
		t.Errorf("forwarder still accepts after Close")
	}
}

func TestListenHostPortReportsBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	_, err = listenHostPort(port)
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("listenHostPort(%d) = %v, want an \"already in use\" error", port, err)
	}
	if err := checkPortsFree("127.0.0.1", port); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("checkPortsFree(%d) = %v, want an \"already in use\" error", port, err)
	}
}
