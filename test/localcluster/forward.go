package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// dialFunc opens a connection; the node network's dialer is one.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// targetPicker names the address a new connection goes to, or fails when there is none.
type targetPicker func() (string, error)

// tcpForwarder accepts connections on a host listener and copies bytes both ways
// between each of them and a target picked per connection. It knows nothing of
// the protocol, so HTTP upgrades such as WebSocket pass unchanged.
type tcpForwarder struct {
	name        string
	ln          net.Listener
	dial        dialFunc
	pick        targetPicker
	dialTimeout time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newTCPForwarder(name string, ln net.Listener, dial dialFunc, pick targetPicker) *tcpForwarder {
	return &tcpForwarder{
		name:        name,
		ln:          ln,
		dial:        dial,
		pick:        pick,
		dialTimeout: 10 * time.Second,
		conns:       map[net.Conn]struct{}{},
	}
}

// Serve accepts until Close. It returns at once if the forwarder is closed.
func (f *tcpForwarder) Serve() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.wg.Add(1)
	f.mu.Unlock()
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				klog.ErrorS(err, "Forwarder stopped accepting", "forwarder", f.name)
			}
			return
		}
		if !f.track(c) {
			c.Close()
			return
		}
		go f.forward(c)
	}
}

func (f *tcpForwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	f.wg.Add(1)
	return true
}

func (f *tcpForwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
	f.wg.Done()
}

func (f *tcpForwarder) forward(client net.Conn) {
	defer f.untrack(client)
	target, err := f.pick()
	if err != nil {
		klog.V(2).InfoS("Dropping connection", "forwarder", f.name, "client", client.RemoteAddr(), "reason", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.dialTimeout)
	backend, err := f.dial(ctx, "tcp", target)
	cancel()
	if err != nil {
		klog.V(2).InfoS("Dropping connection", "forwarder", f.name, "client", client.RemoteAddr(), "target", target, "err", err)
		return
	}
	if !f.track(backend) {
		backend.Close()
		return
	}
	defer f.untrack(backend)
	done := make(chan struct{}, 2)
	go func() { pipe(backend, client); done <- struct{}{} }()
	go func() { pipe(client, backend); done <- struct{}{} }()
	<-done
	<-done
}

// pipe copies src to dst, then passes the end of the stream on as a half-close so
// that the other direction can finish.
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		cw.CloseWrite()
		return
	}
	// An error on one side ends the whole connection.
	dst.Close()
	src.Close()
}

// Addr is the address the forwarder listens on.
func (f *tcpForwarder) Addr() net.Addr { return f.ln.Addr() }

// Close stops listening, closes every forwarded connection and waits for them.
func (f *tcpForwarder) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		f.wg.Wait()
		return
	}
	f.closed = true
	f.ln.Close()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// listenHostPort listens on 127.0.0.1:port of the host and reports an occupied port
// in words a user can act on.
func listenHostPort(port int) (net.Listener, error) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("port %d already in use on 127.0.0.1: %w", port, err)
		}
		return nil, fmt.Errorf("listen on 127.0.0.1:%d: %w", port, err)
	}
	return ln, nil
}
