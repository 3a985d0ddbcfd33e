package scrape

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// KeepAliveTransport is an HTTP/1.1 transport for scraping many hosts (pods) over and over. Like
// net/http's transport it keeps one connection per host open between scrapes, but it holds no
// goroutine for an idle connection (net/http holds two, about 8 kB of stack), so that an idle pod
// costs a socket and a few hundred bytes. Requests to one host must not overlap, which the scraper
// guarantees; a request that finds the host's connection in use opens another one.
//
// It speaks plain http for GET requests without a body; anything else goes to Fallback.
type KeepAliveTransport struct {
	// Dial opens connections.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// IdleTimeout closes connections unused for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a response's status line and headers.
	MaxHeaderBytes int64
	// Fallback serves requests this transport does not handle (https, bodies).
	Fallback http.RoundTripper

	mu        sync.Mutex
	idle      map[string]*idleConn
	lastSweep time.Time
	readers   sync.Pool // *bufio.Reader
	writers   sync.Pool // *bufio.Writer
}

var _ http.RoundTripper = (*KeepAliveTransport)(nil)

type idleConn struct {
	conn  net.Conn
	since time.Time
}

// NewKeepAliveTransport returns the transport with the scraper's settings.
func NewKeepAliveTransport(cfg Config) *KeepAliveTransport {
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	return &KeepAliveTransport{
		Dial:           dialer.DialContext,
		IdleTimeout:    max(90*time.Second, 3*cfg.Interval),
		MaxHeaderBytes: 64 << 10,
		Fallback:       NewTransport(cfg),
	}
}

// errHeadersTooLarge is returned when a response's headers exceed MaxHeaderBytes.
var errHeadersTooLarge = errors.New("response headers too large")

// RoundTrip sends one request. A reused connection that the server closed while it was idle is
// replaced once, transparently: the requests are idempotent GETs.
func (t *KeepAliveTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.Method != http.MethodGet || (req.Body != nil && req.Body != http.NoBody) {
		return t.Fallback.RoundTrip(req)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	if conn := t.takeIdle(addr); conn != nil {
		resp, err, sent := t.exchange(req, addr, conn)
		if err == nil || sent || req.Context().Err() != nil {
			return resp, err
		}
		// The server had closed the idle connection: nothing of the response arrived.
	}
	conn, err := t.Dial(req.Context(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	resp, err, _ := t.exchange(req, addr, conn)
	return resp, err
}

// exchange writes the request on conn and reads the response head. sent reports whether any part
// of a response arrived (after which a retry would not be safe to hide).
func (t *KeepAliveTransport) exchange(req *http.Request, addr string, conn net.Conn) (resp *http.Response, err error, sent bool) {
	ctx := req.Context()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	// Cancellation unblocks reads and writes by moving the deadline to now.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	fail := func(err error, sent bool) (*http.Response, error, bool) {
		stop()
		_ = conn.Close()
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w: %w", cause, err)
		}
		return nil, err, sent
	}
	if err := t.writeRequest(req, conn); err != nil {
		return fail(err, false)
	}
	limited := &headerLimit{r: conn, left: t.MaxHeaderBytes}
	br := t.reader(limited)
	resp, err = http.ReadResponse(br, req)
	if err != nil {
		sent = br.Buffered() > 0 || limited.read > 0
		t.readers.Put(br)
		if limited.left <= 0 {
			err = errHeadersTooLarge
		}
		if !sent && isStale(err) {
			stop()
			_ = conn.Close()
			return nil, err, false
		}
		return fail(err, true)
	}
	limited.left = -1 // the body has its own limit, the scraper's
	resp.Body = &keepAliveBody{t: t, addr: addr, conn: conn, br: br, body: resp.Body,
		reuse: !resp.Close, stop: stop}
	return resp, nil, true
}

// writeRequest sends req in one write through a pooled buffer (Request.Write would allocate one).
func (t *KeepAliveTransport) writeRequest(req *http.Request, conn net.Conn) error {
	bw, ok := t.writers.Get().(*bufio.Writer)
	if !ok {
		bw = bufio.NewWriterSize(conn, 512)
	}
	bw.Reset(conn)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	t.writers.Put(bw)
	return err
}

func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (t *KeepAliveTransport) reader(r io.Reader) *bufio.Reader {
	if br, ok := t.readers.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, 4<<10)
}

// takeIdle returns the host's idle connection, if it has a usable one, and closes connections that
// have been idle too long (pods that went away).
func (t *KeepAliveTransport) takeIdle(addr string) net.Conn {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) > t.IdleTimeout/2 {
		t.lastSweep = now
		for a, ic := range t.idle {
			if now.Sub(ic.since) > t.IdleTimeout {
				_ = ic.conn.Close()
				delete(t.idle, a)
			}
		}
	}
	ic, ok := t.idle[addr]
	if !ok {
		return nil
	}
	delete(t.idle, addr)
	if now.Sub(ic.since) > t.IdleTimeout {
		_ = ic.conn.Close()
		return nil
	}
	return ic.conn
}

func (t *KeepAliveTransport) putIdle(addr string, conn net.Conn) {
	_ = conn.SetDeadline(time.Time{})
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil {
		t.idle = make(map[string]*idleConn)
	}
	if old, ok := t.idle[addr]; ok {
		_ = old.conn.Close()
	}
	t.idle[addr] = &idleConn{conn: conn, since: time.Now()}
}

// CloseIdleConnections closes every idle connection.
func (t *KeepAliveTransport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for a, ic := range t.idle {
		_ = ic.conn.Close()
		delete(t.idle, a)
	}
	if f, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}

// keepAliveBody returns the connection to the idle set once the body has been read to its end, and
// closes it if the body is abandoned earlier: draining a body that may never end is not an option.
type keepAliveBody struct {
	t      *KeepAliveTransport
	addr   string
	conn   net.Conn
	br     *bufio.Reader
	body   io.ReadCloser
	reuse  bool
	stop   func() bool
	sawEOF bool
	done   bool
}

func (b *keepAliveBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("read on closed response body")
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.sawEOF = true
	}
	return n, err
}

func (b *keepAliveBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	b.stop()
	// A connection is reusable only if the response ended cleanly and nothing beyond it arrived.
	if b.sawEOF && b.reuse && b.br.Buffered() == 0 {
		b.t.readers.Put(b.br)
		b.t.putIdle(b.addr, b.conn)
		return nil
	}
	b.t.readers.Put(b.br)
	return b.conn.Close()
}

// headerLimit stops reading after left bytes while the response head is read; left < 0 lifts it.
type headerLimit struct {
	r    io.Reader
	left int64
	read int64
}

func (h *headerLimit) Read(p []byte) (int, error) {
	if h.left == 0 {
		return 0, errHeadersTooLarge
	}
	if h.left > 0 && int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.r.Read(p)
	h.read += int64(n)
	if h.left > 0 {
		h.left -= int64(n)
	}
	return n, err
}
