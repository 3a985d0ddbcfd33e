// Package wsload is a WebSocket load client: it opens many connections at a controlled rate, sends
// timestamped messages, measures echo round trips, and accounts for every way a connection ends.
package wsload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Config describes one load run.
type Config struct {
	// URL is the WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.
	URL string
	// Connections is how many connections to hold open.
	Connections int
	// ConnectRate is how many new connections to open per second; 0 opens them as fast as possible.
	ConnectRate float64
	// Duration is how long to hold the connections once all are open; 0 holds until ctx is done.
	Duration time.Duration
	// MessageInterval is how often each connection sends a message; 0 sends none unless Flood is set.
	MessageInterval time.Duration
	// Flood makes each connection send its next message as soon as the previous echo arrived.
	Flood bool
	// MessagesPerConnection stops a connection's sending after this many messages; it then stays
	// open, idle (0: no limit). One message then idle is how memory after traffic is measured.
	MessagesPerConnection int
	// MessageSize is the size of each message in bytes (at least 8: the send timestamp).
	MessageSize int
	// Binary sends binary messages instead of text.
	Binary bool
	// Reconnect reopens connections that end, after a jittered exponential back-off.
	Reconnect bool
	// ReconnectMin and ReconnectMax bound the back-off.
	ReconnectMin, ReconnectMax time.Duration
	// SourcePrefix spreads connections over the source addresses of this prefix (e.g. 127.0.0.0/8)
	// so that one machine can open more connections than one address has ephemeral ports.
	// The zero value uses the system's choice.
	SourcePrefix netip.Prefix
	// Origin is sent as the Origin header when set.
	Origin string
	// HandshakeTimeout bounds dialing and the upgrade.
	HandshakeTimeout time.Duration
	// NetDialContext, when set, dials instead of the default dialer (for example into a network
	// namespace). SourcePrefix is then ignored.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Progress, when set, is called every ProgressInterval with the counters so far.
	Progress         func(Snapshot)
	ProgressInterval time.Duration
}

// DefaultConfig returns a Config with the defaults of the load command.
func DefaultConfig() Config {
	return Config{
		URL:              "ws://127.0.0.1:8080/ws",
		Connections:      100,
		ConnectRate:      500,
		MessageSize:      64,
		ReconnectMin:     100 * time.Millisecond,
		ReconnectMax:     10 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		ProgressInterval: time.Second,
	}
}

// Validate returns every problem of c.
func (c Config) Validate() []error {
	var errs []error
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		errs = append(errs, fmt.Errorf("url %q: want ws://host:port/path or wss://", c.URL))
	}
	if c.Connections < 1 {
		errs = append(errs, fmt.Errorf("connections must be at least 1, got %d", c.Connections))
	}
	if c.ConnectRate < 0 {
		errs = append(errs, fmt.Errorf("connect rate must not be negative, got %v", c.ConnectRate))
	}
	if c.MessagesPerConnection < 0 {
		errs = append(errs, fmt.Errorf("messages per connection must not be negative, got %d", c.MessagesPerConnection))
	}
	if c.Duration < 0 || c.MessageInterval < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if (c.MessageInterval > 0 || c.Flood) && c.MessageSize < 8 {
		errs = append(errs, fmt.Errorf("message size must be at least 8 bytes (the timestamp), got %d", c.MessageSize))
	}
	if c.Reconnect && (c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin) {
		errs = append(errs, errors.New("reconnect back-off: want 0 < min <= max"))
	}
	if c.SourcePrefix.IsValid() && !c.SourcePrefix.Addr().Is4() {
		errs = append(errs, fmt.Errorf("source prefix %s: only IPv4 prefixes are supported", c.SourcePrefix))
	}
	return errs
}

// Snapshot is the state of a run at one moment.
type Snapshot struct {
	Elapsed       time.Duration
	Open          int64
	Opened        int64
	DialErrors    int64
	Sent          int64
	Received      int64
	Mismatched    int64
	AbnormalDrops int64
	Closes        map[int]int64
}

// Result is the summary of a run.
type Result struct {
	URL        string           `json:"url"`
	Target     int              `json:"targetConnections"`
	PeakOpen   int64            `json:"peakOpen"`
	Opened     int64            `json:"opened"`
	DialErrors map[string]int64 `json:"dialErrors"`
	Sent       int64            `json:"messagesSent"`
	Received   int64            `json:"messagesReceived"`
	// Echoed counts the connections that received at least one correct echo of their own message.
	Echoed          int64            `json:"echoedConnections"`
	Mismatched      int64            `json:"messagesMismatched"`
	MessagesPerSec  float64          `json:"messagesPerSecond"`
	RTT             Latency          `json:"roundTrip"`
	ClosesByCode    map[string]int64 `json:"closesByServerCode"`
	AbnormalDrops   int64            `json:"abnormalDrops"`
	ClosedByClient  int64            `json:"closedByClient"`
	RampUp          Seconds          `json:"rampUpSeconds"`
	Elapsed         Seconds          `json:"elapsedSeconds"`
	CloseTimestamps []Seconds        `json:"-"`
}

// Latency holds round-trip quantiles.
type Latency struct {
	Count uint64  `json:"count"`
	P50   Seconds `json:"p50"`
	P90   Seconds `json:"p90"`
	P99   Seconds `json:"p99"`
	Max   Seconds `json:"max"`
}

// Seconds is a duration that renders as seconds in JSON.
type Seconds time.Duration

// MarshalJSON renders s as fractional seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(s).Seconds(), 'f', 6, 64), nil
}

// String renders s as a Go duration.
func (s Seconds) String() string { return time.Duration(s).String() }

// run is the state shared by all connections of one load run.
type run struct {
	cfg    Config
	start  time.Time
	dialer *websocket.Dialer
	header http.Header
	rtt    shardedHistogram

	open, peak, opened, dialErrs, sent, received, echoed, mismatched, abnormal, byClient atomic.Int64

	mu         sync.Mutex
	closes     map[int]int64
	dialErrors map[string]int64
	closeTimes []Seconds
}

// Run opens cfg.Connections connections, holds them for cfg.Duration (or until ctx is done), closes
// them with a normal close frame, and returns what happened.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	r := &run{
		cfg:        cfg,
		start:      time.Now(),
		closes:     make(map[int]int64),
		dialErrors: make(map[string]int64),
		header:     http.Header{},
	}
	if cfg.Origin != "" {
		r.header.Set("Origin", cfg.Origin)
	}
	r.dialer = &websocket.Dialer{
		HandshakeTimeout: cfg.HandshakeTimeout,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		WriteBufferPool:  &sync.Pool{},
		NetDialContext:   cfg.NetDialContext,
	}

	stop, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	allOpen := make(chan struct{})
	var rampUp time.Duration

	progressDone := make(chan struct{})
	go r.reportProgress(stop, progressDone)

	var interval time.Duration
	if cfg.ConnectRate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.ConnectRate)
	}
	go func() {
		defer close(allOpen)
		next := time.Now()
		for i := 0; i < cfg.Connections; i++ {
			if interval > 0 {
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					select {
					case <-stop.Done():
						return
					case <-time.After(d):
					}
				}
			}
			if stop.Err() != nil {
				return
			}
			wg.Add(1)
			go func(id int) {
				defer wg.Done()
				r.connection(stop, id)
			}(i)
		}
	}()

	// Without reconnects the run also ends when every connection has ended.
	allEnded := make(chan struct{})
	go func() {
		<-allOpen
		wg.Wait()
		close(allEnded)
	}()
	select {
	case <-allOpen:
		rampUp = time.Since(r.start)
		var hold <-chan time.Time
		if cfg.Duration > 0 {
			t := time.NewTimer(cfg.Duration)
			defer t.Stop()
			hold = t.C
		}
		select {
		case <-hold:
		case <-ctx.Done():
		case <-allEnded:
		}
	case <-ctx.Done():
		rampUp = time.Since(r.start)
	}
	cancel()
	wg.Wait()
	<-progressDone
	return r.result(rampUp), nil
}

func (r *run) reportProgress(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	if r.cfg.Progress == nil || r.cfg.ProgressInterval <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.cfg.Progress(r.snapshot())
		}
	}
}

func (r *run) snapshot() Snapshot {
	r.mu.Lock()
	closes := make(map[int]int64, len(r.closes))
	for k, v := range r.closes {
		closes[k] = v
	}
	r.mu.Unlock()
	return Snapshot{
		Elapsed:       time.Since(r.start),
		Open:          r.open.Load(),
		Opened:        r.opened.Load(),
		DialErrors:    r.dialErrs.Load(),
		Sent:          r.sent.Load(),
		Received:      r.received.Load(),
		Mismatched:    r.mismatched.Load(),
		AbnormalDrops: r.abnormal.Load(),
		Closes:        closes,
	}
}

func (r *run) result(rampUp time.Duration) *Result {
	elapsed := time.Since(r.start)
	h := r.rtt.snapshot()
	res := &Result{
		URL:            r.cfg.URL,
		Target:         r.cfg.Connections,
		PeakOpen:       r.peak.Load(),
		Opened:         r.opened.Load(),
		Sent:           r.sent.Load(),
		Received:       r.received.Load(),
		Echoed:         r.echoed.Load(),
		Mismatched:     r.mismatched.Load(),
		AbnormalDrops:  r.abnormal.Load(),
		ClosedByClient: r.byClient.Load(),
		RampUp:         Seconds(rampUp),
		Elapsed:        Seconds(elapsed),
		RTT: Latency{
			Count: h.total,
			P50:   Seconds(h.quantile(0.50)),
			P90:   Seconds(h.quantile(0.90)),
			P99:   Seconds(h.quantile(0.99)),
			Max:   Seconds(h.max),
		},
		ClosesByCode: map[string]int64{},
		DialErrors:   map[string]int64{},
	}
	if elapsed > 0 {
		res.MessagesPerSec = float64(res.Received) / elapsed.Seconds()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for code, n := range r.closes {
		res.ClosesByCode[strconv.Itoa(code)] = n
	}
	for k, n := range r.dialErrors {
		res.DialErrors[k] = n
	}
	res.CloseTimestamps = append([]Seconds(nil), r.closeTimes...)
	sort.Slice(res.CloseTimestamps, func(i, j int) bool { return res.CloseTimestamps[i] < res.CloseTimestamps[j] })
	return res
}

// connection keeps connection id open until ctx is done, reconnecting if configured.
func (r *run) connection(ctx context.Context, id int) {
	attempt := 0
	for {
		ended := r.session(ctx, id)
		if ctx.Err() != nil || !r.cfg.Reconnect {
			return
		}
		if ended {
			attempt = 0
		}
		attempt++
		// Full jitter: a random wait up to the exponential bound, so that clients cut together do
		// not come back together.
		bound := r.cfg.ReconnectMin << min(attempt-1, 20)
		if bound > r.cfg.ReconnectMax || bound <= 0 {
			bound = r.cfg.ReconnectMax
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(rand.N(bound) + 1):
		}
	}
}

// session runs one connection from dial to close. It reports whether the connection had opened.
func (r *run) session(ctx context.Context, id int) bool {
	d := *r.dialer
	if d.NetDialContext == nil && r.cfg.SourcePrefix.IsValid() {
		local := sourceAddr(r.cfg.SourcePrefix, id)
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}, Timeout: r.cfg.HandshakeTimeout}
		d.NetDialContext = nd.DialContext
	}
	ws, resp, err := d.DialContext(ctx, r.cfg.URL, r.header)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if ctx.Err() == nil {
			r.dialErrs.Add(1)
			r.countDialError(dialErrorKind(resp, err))
		}
		return false
	}
	r.opened.Add(1)
	if n := r.open.Add(1); n > r.peak.Load() {
		for {
			p := r.peak.Load()
			if n <= p || r.peak.CompareAndSwap(p, n) {
				break
			}
		}
	}
	defer r.open.Add(-1)

	readDone := make(chan error, 1)
	echoed := make(chan struct{}, 1)
	go func() { readDone <- r.readEchoes(ws, id, echoed) }()

	var send <-chan time.Time
	if r.cfg.MessageInterval > 0 && !r.cfg.Flood {
		// A random phase spreads the connections' sends over the interval.
		first := time.NewTimer(rand.N(r.cfg.MessageInterval) + 1)
		defer first.Stop()
		select {
		case <-first.C:
		case <-ctx.Done():
		case err := <-readDone:
			r.ended(err)
			_ = ws.Close()
			return true
		}
		t := time.NewTicker(r.cfg.MessageInterval)
		defer t.Stop()
		send = t.C
	}
	msg := make([]byte, max(r.cfg.MessageSize, 8))
	for i := 8; i < len(msg); i++ {
		msg[i] = 'a' + byte(i%26)
	}
	kind := websocket.TextMessage
	if r.cfg.Binary {
		kind = websocket.BinaryMessage
	}
	sentHere := 0
	sendOne := func() bool {
		if limit := r.cfg.MessagesPerConnection; limit > 0 && sentHere >= limit {
			send = nil // idle from now on
			return false
		}
		sentHere++
		putStamp(msg, time.Since(r.start))
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(kind, msg); err != nil {
			return false
		}
		r.sent.Add(1)
		return true
	}
	if r.cfg.Flood {
		if !sendOne() {
			send = nil
		}
	}
	for {
		select {
		case <-ctx.Done():
			r.closeGracefully(ws, readDone)
			return true
		case err := <-readDone:
			r.ended(err)
			_ = ws.Close()
			return true
		case <-send:
			sendOne()
		case <-echoed:
			if r.cfg.Flood {
				sendOne()
			}
		}
	}
}

// closeGracefully ends a connection from the client side with 1000 and waits briefly for the reply.
func (r *run) closeGracefully(ws *websocket.Conn, readDone <-chan error) {
	r.byClient.Add(1)
	_ = ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "load run finished"), time.Now().Add(time.Second))
	select {
	case <-readDone:
	case <-time.After(2 * time.Second):
	}
	_ = ws.Close()
}

func (r *run) readEchoes(ws *websocket.Conn, id int, echoed chan<- struct{}) error {
	first := true
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		now := time.Since(r.start)
		sent, ok := readStamp(data)
		if !ok || len(data) != max(r.cfg.MessageSize, 8) {
			r.mismatched.Add(1)
			continue
		}
		r.received.Add(1)
		if first {
			first = false
			r.echoed.Add(1)
		}
		r.rtt.record(id, now-sent)
		select {
		case echoed <- struct{}{}:
		default:
		}
	}
}

// ended classifies how a connection that the client did not close ended.
func (r *run) ended(err error) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
		r.mu.Lock()
		r.closes[ce.Code]++
		r.closeTimes = append(r.closeTimes, Seconds(time.Since(r.start)))
		r.mu.Unlock()
		return
	}
	// 1006 is what gorilla reports for a connection lost without a close frame.
	r.abnormal.Add(1)
}

func (r *run) countDialError(kind string) {
	r.mu.Lock()
	r.dialErrors[kind]++
	r.mu.Unlock()
}

func dialErrorKind(resp *http.Response, err error) string {
	switch {
	case resp != nil:
		return "http_" + strconv.Itoa(resp.StatusCode)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no_source_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_open_files"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return "reset"
	}
	return "other"
}

// sourceAddr is the id-th address of prefix, skipping the network address.
func sourceAddr(prefix netip.Prefix, id int) netip.Addr {
	size := uint64(1) << uint(32-prefix.Bits())
	if size > 2 {
		size -= 2 // no network or broadcast address
	}
	base := binary.BigEndian.Uint32(prefix.Masked().Addr().AsSlice())
	v := base + 1 + uint32(uint64(id)%size)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// The send time is carried in the first 8 bytes as 7-bit ASCII (56 bits: 2.2 years of nanoseconds),
// so that text messages stay valid UTF-8.
func putStamp(msg []byte, d time.Duration) {
	v := uint64(d)
	for i := 7; i >= 0; i-- {
		msg[i] = byte(v & 0x7f)
		v >>= 7
	}
}

func readStamp(data []byte) (time.Duration, bool) {
	if len(data) < 8 {
		return 0, false
	}
	var v uint64
	for _, c := range data[:8] {
		v = v<<7 | uint64(c&0x7f)
	}
	return time.Duration(v), true
}
