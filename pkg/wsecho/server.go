// Package wsecho is the reference WebSocket server: it echoes every message, enforces connection and
// message limits, exposes the metrics that wsscale scales on, and drains gracefully so that a
// scale-down never cuts clients without a close frame.
package wsecho

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/version"
)

// Config is everything the server needs to run. Build it with the echo command's options, which
// apply defaults and validate it; the zero value is not usable.
type Config struct {
	// MaxConnections is the number of concurrently open WebSocket connections; upgrades beyond it get
	// 503 with Retry-After.
	MaxConnections int
	// MaxMessageBytes limits one message; a larger one closes the connection with 1009.
	MaxMessageBytes int64
	// PingInterval is how often the server pings each client.
	PingInterval time.Duration
	// ReadTimeout is how long a connection may stay silent (no message, no pong) before it is
	// treated as half-open and dropped. It must exceed PingInterval.
	ReadTimeout time.Duration
	// WriteTimeout bounds every write; a client that does not read for this long is disconnected.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds reading the upgrade request's headers.
	HandshakeTimeout time.Duration
	// DrainTimeout is the window over which connections are closed (1001) when the server drains.
	DrainTimeout time.Duration
	// ShutdownDelay is how long the server keeps accepting upgrades after SIGTERM, unready, before it
	// drains: Services and load balancers take a few seconds to stop sending it new clients.
	ShutdownDelay time.Duration
	// CloseGrace is how long the server waits for a client's close frame after sending its own.
	CloseGrace time.Duration
	// ReleaseMemoryAfter is how long the server must have been quiet (no message, no connection
	// opened or ended) after traffic before it returns the memory the traffic left behind to the operating
	// system; 0 never does.
	ReleaseMemoryAfter time.Duration
	// RetryAfter is the Retry-After value sent with 503 responses.
	RetryAfter time.Duration
	// Origins decides which browser origins may connect.
	Origins OriginPolicy
}

// readBufferSize is the per-connection read buffer; frame headers and small messages fit in it.
const readBufferSize = 512

// Server is the reference WebSocket echo server. Create it with New.
type Server struct {
	cfg      Config
	clock    clock.WithDelayedExecution
	metrics  *metrics
	registry *prometheus.Registry
	upgrader websocket.Upgrader
	bufs     sync.Pool // *[]byte holding one message

	// slots counts connections open or being upgraded; it is what MaxConnections limits.
	slots atomic.Int64
	// activity counts messages and connections opened and ended, for releaseWhenQuiet.
	activity atomic.Uint64

	mu    sync.Mutex
	conns map[*conn]struct{}
	// drain is the drain in progress or finished; nil while the server serves.
	drain *drainRun
	// terminating is set for good by Terminate: the drain ends the process and cannot be undone.
	terminating bool
}

// drainRun is one drain: from Drain (or Terminate) until Undrain or the end of the process.
type drainRun struct {
	stop chan struct{} // closed by Undrain: abandon the schedule, keep the connections not yet closed
	idle chan struct{} // closed once no connection is left
	done chan struct{} // closed when the schedule has ended, every connection closed or cut
}

// New returns a server for cfg. It registers its metrics, together with the Go runtime, process and
// build-info collectors, on a registry of its own that MetricsHandler serves.
func New(cfg Config, clk clock.WithDelayedExecution) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	if err := version.Register(reg, "wsecho"); err != nil {
		panic(err) // a fresh registry refuses nothing
	}
	s := &Server{
		cfg:      cfg,
		clock:    clk,
		metrics:  newMetrics(reg, cfg.MaxConnections),
		registry: reg,
		conns:    make(map[*conn]struct{}),
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		// An idle connection should hold as little as possible: the small read buffer that
		// hijackWriter hands over (ReadBufferSize 0 makes gorilla use it; net/http's 4 KiB one is
		// released), and no write buffer, since those come from a pool.
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     cfg.Origins.Allowed,
		Error:           s.upgradeFailed,
	}
	return s
}

// Handler serves /ws (the echo endpoint), /health (readiness: fails from SIGTERM on and while
// draining, never because the server is full) and /livez.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	mux.HandleFunc("/health", s.serveReadiness)
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// MetricsHandler serves the Prometheus exposition of the server's metrics.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry})
}

// Registry is the registry holding the server's metrics.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Active returns the number of open WebSocket connections.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Draining reports whether the server is draining (or has drained): it refuses upgrades.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drain != nil
}

// Drained returns a channel closed once the current drain has closed every connection (or cut what
// was left at the end of its window). While the server serves, the channel is nil: it never fires.
func (s *Server) Drained() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drain == nil {
		return nil
	}
	return s.drain.done
}

// ready reports whether the server should receive new clients: not while draining or terminating.
func (s *Server) ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drain == nil && !s.terminating
}

func (s *Server) serveReadiness(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("draining\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if s.Draining() {
		s.refuse(w, ReasonDraining, "server is draining")
		return
	}
	if s.slots.Add(1) > int64(s.cfg.MaxConnections) {
		s.slots.Add(-1)
		s.refuse(w, ReasonOverCapacity, "connection limit reached")
		return
	}
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := s.upgrader.Upgrade(hw, r, nil)
	if err != nil {
		// upgradeFailed has answered and counted it.
		s.slots.Add(-1)
		return
	}
	c, err := newConn(s, ws, hw.br)
	if err != nil {
		klog.ErrorS(err, "Cannot serve upgraded connection")
		_ = ws.NetConn().Close()
		s.slots.Add(-1)
		return
	}
	if !s.track(c) {
		// The drain started during the handshake: this client gets its close frame at once.
		go c.closeGoingAway()
	}
	go c.serve()
}

func (s *Server) refuse(w http.ResponseWriter, reason, msg string) {
	s.metrics.errors.WithLabelValues(reason).Inc()
	w.Header().Set("Retry-After", strconv.Itoa(int((s.cfg.RetryAfter+time.Second-1)/time.Second)))
	http.Error(w, msg, http.StatusServiceUnavailable)
}

func (s *Server) upgradeFailed(w http.ResponseWriter, _ *http.Request, status int, reason error) {
	if status == http.StatusForbidden {
		s.metrics.errors.WithLabelValues(ReasonOriginRejected).Inc()
	} else {
		s.metrics.errors.WithLabelValues(ReasonHandshake).Inc()
	}
	http.Error(w, reason.Error(), status)
}

// hijackWriter gives the upgraded connection a small read buffer and remembers it, so that the
// connection can look at buffered frames between messages.
type hijackWriter struct {
	http.ResponseWriter
	br *bufio.Reader
}

// Hijack takes over the connection with a readBufferSize reader instead of net/http's 4 KiB one.
func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Reader.Buffered() > 0 {
		// The client sent data before the handshake completed; keep the reader that holds it.
		h.br = brw.Reader
		return nc, brw, nil
	}
	h.br = bufio.NewReaderSize(nc, readBufferSize)
	return nc, bufio.NewReadWriter(h.br, brw.Writer), nil
}

// track registers an upgraded connection. It reports false if the server is draining.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = struct{}{}
	s.activity.Add(1)
	s.metrics.active.Inc()
	s.metrics.total.Inc()
	return s.drain == nil
}

// untrack removes a finished connection and releases its slot.
func (s *Server) untrack(c *conn, lifetime time.Duration) {
	s.mu.Lock()
	delete(s.conns, c)
	if s.drain != nil && len(s.conns) == 0 {
		closeOnce(s.drain.idle)
	}
	s.mu.Unlock()
	s.metrics.active.Dec()
	s.activity.Add(1)
	s.metrics.duration.Observe(lifetime.Seconds())
	s.slots.Add(-1)
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// Drain starts a graceful drain unless one is in progress or done: readiness fails, new upgrades are
// refused with 503, and every open connection is closed with 1001 (going away), spread evenly over
// DrainTimeout so that clients reconnect to other pods gradually instead of all at once. The server
// then stays up and refuses clients until Undrain or Terminate. Drained is closed when it is done.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startDrainLocked()
}

func (s *Server) startDrainLocked() {
	if s.drain != nil {
		return
	}
	run := &drainRun{stop: make(chan struct{}), idle: make(chan struct{}), done: make(chan struct{})}
	s.drain = run
	victims := make([]goingAwayCloser, 0, len(s.conns))
	for c := range s.conns {
		victims = append(victims, c)
	}
	if len(s.conns) == 0 {
		closeOnce(run.idle)
	}
	s.metrics.draining.Set(1)
	klog.InfoS("Draining WebSocket connections", "connections", len(victims), "window", s.cfg.DrainTimeout)
	go func() {
		d := drainer{clock: s.clock, window: s.cfg.DrainTimeout, closeGrace: s.cfg.CloseGrace}
		d.run(victims, run.idle, run.stop, func() { s.closeAll(run) })
		klog.InfoS("Drain finished", "remaining", s.Active())
		close(run.done)
	}()
}

// Undrain ends a drain that Drain started: the server is ready again and accepts upgrades, and the
// connections that have not been sent their close frame yet stay open. It does nothing while the
// server serves, and nothing after Terminate: only the end of the process ends that drain.
func (s *Server) Undrain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drain == nil || s.terminating {
		return
	}
	close(s.drain.stop)
	s.drain = nil
	s.metrics.draining.Set(0)
	klog.InfoS("Drain withdrawn, serving again", "connections", len(s.conns))
}

// Terminate drains the server for good (the process is about to end) and returns once the drain is
// done or ctx is done. Readiness fails at once; upgrades are still accepted for ShutdownDelay, while
// the endpoints catch up, and then the drain starts. A drain by label already in progress or done
// (the pod is out of the endpoints already) keeps its schedule, without the delay.
func (s *Server) Terminate(ctx context.Context) {
	s.mu.Lock()
	wait := !s.terminating && s.drain == nil && s.cfg.ShutdownDelay > 0
	s.terminating = true
	s.mu.Unlock()
	if wait {
		klog.InfoS("Shutting down: unready now, draining after the shutdown delay", "delay", s.cfg.ShutdownDelay)
		select {
		case <-s.clock.After(s.cfg.ShutdownDelay):
		case <-ctx.Done():
			return
		}
	}
	s.mu.Lock()
	s.startDrainLocked()
	done := s.drain.done
	s.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// closeAll cuts every connection still open; the drain run calls it when its window has run out,
// after every connection has been sent its close frame. It does nothing if that drain was withdrawn
// in the meantime: the connections open now are served again.
func (s *Server) closeAll(run *drainRun) {
	s.mu.Lock()
	if s.drain != run {
		s.mu.Unlock()
		return
	}
	left := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		left = append(left, c)
	}
	s.mu.Unlock()
	for _, c := range left {
		c.closeNow()
	}
}

// Serve runs the WebSocket and metrics endpoints on the given listeners until ctx is cancelled
// (SIGTERM), then terminates the server (shutdown delay, drain) and returns nil, or the first error
// of a listener.
// Drains started by Drain (the drain label) do not end it.
func (s *Server) Serve(ctx context.Context, wsListener, metricsListener net.Listener) error {
	main := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.MetricsHandler())
	metricsSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	if s.cfg.ReleaseMemoryAfter > 0 {
		releaseCtx, stop := context.WithCancel(ctx)
		defer stop()
		go s.releaseWhenQuiet(releaseCtx, s.cfg.ReleaseMemoryAfter, releaseMemory)
	}
	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("websocket listener: %w", main.Serve(wsListener)) }()
	go func() { errc <- fmt.Errorf("metrics listener: %w", metricsSrv.Serve(metricsListener)) }()
	klog.InfoS("Serving", "websocket", wsListener.Addr().String(), "metrics", metricsListener.Addr().String(),
		"maxConnections", s.cfg.MaxConnections)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.Terminate(context.Background())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := main.Shutdown(shutdownCtx); err != nil && serveErr == nil {
		serveErr = fmt.Errorf("shut down websocket listener: %w", err)
	}
	if err := metricsSrv.Shutdown(shutdownCtx); err != nil && serveErr == nil {
		serveErr = fmt.Errorf("shut down metrics listener: %w", err)
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// releaseWhenQuiet calls release once the server has been quiet for a whole period after some
// activity. A burst of messages or of new connections (their handshakes) leaves memory behind that idle connections do not need: message and
// write buffers in pools, and garbage. Pools are emptied and garbage freed only by garbage
// collections, which an idle server, allocating nothing, does not trigger (the runtime forces one
// every two minutes), and freed memory goes back to the operating system only gradually; until then
// it counts in the pod's memory as if every connection still used it.
func (s *Server) releaseWhenQuiet(ctx context.Context, period time.Duration, release func()) {
	last := s.activity.Load()
	released := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(period):
		}
		now := s.activity.Load()
		switch {
		case now != last:
			released = false
		case !released:
			release()
			released = true
		}
		last = now
	}
}

// releaseMemory empties the pools (they keep their contents through one collection), frees the
// garbage and returns the free memory to the operating system.
func releaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}
