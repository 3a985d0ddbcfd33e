package scrape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/wsscale/wsscale/pkg/provider/exposition"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
)

// waitFor bounds every wait of these tests; nothing waits on real time
// otherwise.
const waitFor = 10 * time.Second

var (
	activeSeries = metricsconfig.Series{Name: "websocket_connections_active", Rule: metricsconfig.Count}
	maxSeries    = metricsconfig.Series{Name: "websocket_connections_max", Rule: metricsconfig.Count}
)

// event is one call of the sink.
type event struct {
	key     PodKey
	sample  *Sample
	failure *Failure
}

func (e event) String() string {
	if e.failure != nil {
		return fmt.Sprintf("%s: fail %s: %v", e.key, e.failure.Reason, e.failure.Err)
	}
	return fmt.Sprintf("%s: observe %+v", e.key, e.sample.Values)
}

// recordingSink sends every call to a channel, and checks that calls for one
// key never overlap.
type recordingSink struct {
	events chan event
	mu     sync.Mutex
	busy   map[PodKey]bool
	errs   []string
}

var _ Sink = (*recordingSink)(nil)

func newRecordingSink() *recordingSink {
	return &recordingSink{events: make(chan event, 10000), busy: map[PodKey]bool{}}
}

func (r *recordingSink) enter(key PodKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.busy[key] {
		r.errs = append(r.errs, fmt.Sprintf("overlapping sink calls for %s", key))
	}
	r.busy[key] = true
}

func (r *recordingSink) leave(key PodKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.busy[key] = false
}

func (r *recordingSink) Observe(key PodKey, s Sample) {
	r.enter(key)
	defer r.leave(key)
	r.events <- event{key: key, sample: &s}
}

func (r *recordingSink) Fail(key PodKey, f Failure) {
	r.enter(key)
	defer r.leave(key)
	r.events <- event{key: key, failure: &f}
}

func (r *recordingSink) next(t *testing.T) event {
	t.Helper()
	select {
	case e := <-r.events:
		return e
	case <-time.After(waitFor):
		t.Fatal("no scrape reported")
		return event{}
	}
}

func (r *recordingSink) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Error(e)
	}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// startScraper runs a scraper on a fake clock. Every target is due as soon
// as it is set unless the test replaces offset before setting it.
func startScraper(t *testing.T, cfg Config) (*Scraper, *recordingSink, *testingclock.FakeClock) {
	t.Helper()
	clk := testingclock.NewFakeClock(t0)
	cfg.Clock = clk
	sink := newRecordingSink()
	s, err := New(cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	s.offset = func(PodKey) time.Duration { return 0 }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Error("Run did not return after cancel")
		}
		sink.check(t)
	})
	return s, sink, clk
}

func testConfig() Config {
	cfg := NewConfig(activeSeries, maxSeries)
	cfg.Interval = 10 * time.Second
	cfg.Timeout = 5 * time.Second
	cfg.Concurrency = 4
	cfg.MaxBodyBytes = 1 << 20
	return cfg
}

func key(name string) PodKey { return PodKey{Namespace: "ns", Name: name} }

func mustSet(t *testing.T, s *Scraper, k PodKey, url string) {
	t.Helper()
	if err := s.Set(Target{Key: k, URL: url}); err != nil {
		t.Fatal(err)
	}
}

// text serves body in the text format.
func text(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = io.WriteString(w, body)
	}
}

// closedPortURL returns a loopback URL on which nothing listens.
func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/metrics"
}

func TestScrapeOutcomes(t *testing.T) {
	const tenMB = 10 << 20
	tests := []struct {
		name    string
		handler http.HandlerFunc // nil: nothing listens
		// stepTimeout: the handler blocks; step the clock past the timeout
		// once it is entered.
		stepTimeout bool
		want        []Value // for a success
		wantReason  Reason
		wantErr     string
	}{
		{
			name:    "gauge and limit",
			handler: text("# TYPE websocket_connections_active gauge\nwebsocket_connections_active 1234\nwebsocket_connections_max 10000\n"),
			want:    []Value{{Value: 1234, Present: true}, {Value: 10000, Present: true}},
		},
		{
			name:    "one series absent",
			handler: text("websocket_connections_active 0\n"),
			want:    []Value{{Value: 0, Present: true}, {Problem: ReasonMissing}},
		},
		{
			name: "openmetrics",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
				_, _ = io.WriteString(w, "# TYPE websocket_connections_active gauge\nwebsocket_connections_active 7 1700000000.5\n# EOF\n")
			},
			want: []Value{{Value: 7, Present: true}, {Problem: ReasonMissing}},
		},
		{
			name: "openmetrics cut before # EOF",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0")
				_, _ = io.WriteString(w, "websocket_connections_active 7\n")
			},
			wantReason: ReasonParse,
			wantErr:    "missing # EOF",
		},
		{
			name:       "garbage",
			handler:    text("\x00\x13garbage\xff\n"),
			wantReason: ReasonParse,
			wantErr:    "line 1:",
		},
		{
			name: "html error page",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				_, _ = io.WriteString(w, "<!DOCTYPE html>\n<html><body><h1>Welcome to nginx!</h1></body></html>\n")
			},
			wantReason: ReasonParse,
			wantErr:    "line 1: invalid metric name",
		},
		{
			name: "10 MB body with Content-Length",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(tenMB))
				_, _ = w.Write(make([]byte, tenMB))
			},
			wantReason: ReasonTooLarge,
			wantErr:    "Content-Length 10485760 exceeds the limit of 1048576 bytes",
		},
		{
			name: "10 MB body chunked",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				line := []byte("websocket_connections_total{i=\"0000000000\"} 1\n")
				for written := 0; written < tenMB; written += len(line) {
					if _, err := w.Write(line); err != nil {
						return
					}
				}
			},
			wantReason: ReasonTooLarge,
			wantErr:    "more than 1048576 bytes",
		},
		{
			name: "body that never ends",
			handler: func(w http.ResponseWriter, r *http.Request) {
				chunk := []byte(strings.Repeat("go_goroutines 1\n", 256))
				for r.Context().Err() == nil {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			},
			wantReason: ReasonTooLarge,
			wantErr:    "more than 1048576 bytes",
		},
		{
			name: "status 500",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "internal error", http.StatusInternalServerError)
			},
			wantReason: ReasonHTTPStatus,
			wantErr:    "HTTP status 500 Internal Server Error",
		},
		{
			name: "redirect is not followed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusFound)
			},
			wantReason: ReasonHTTPStatus,
			wantErr:    "HTTP status 302 Found",
		},
		{
			name:       "connection refused",
			handler:    nil,
			wantReason: ReasonConnection,
			wantErr:    "connection refused",
		},
		{
			name: "connection closed mid-body",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", "1000")
				_, _ = io.WriteString(w, "websocket_connections_active 1")
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			},
			wantReason: ReasonConnection,
			wantErr:    "unexpected EOF",
		},
		{
			name:        "slow server",
			stepTimeout: true,
			wantReason:  ReasonTimeout,
			wantErr:     "scrape timed out",
		},
		{
			name:    "NaN",
			handler: text("websocket_connections_active NaN\nwebsocket_connections_max 10\n"),
			want:    []Value{{Problem: ReasonInvalidValue}, {Value: 10, Present: true}},
		},
		{
			name:    "+Inf",
			handler: text("websocket_connections_active +Inf\n"),
			want:    []Value{{Problem: ReasonInvalidValue}, {Problem: ReasonMissing}},
		},
		{
			name:    "negative count",
			handler: text("websocket_connections_active -3\nwebsocket_connections_max 10\n"),
			want:    []Value{{Problem: ReasonInvalidValue}, {Value: 10, Present: true}},
		},
		{
			name:    "non-integer count",
			handler: text("websocket_connections_active 2.5\nwebsocket_connections_max 10\n"),
			want:    []Value{{Problem: ReasonInvalidValue}, {Value: 10, Present: true}},
		},
		{
			name:    "invalid limit leaves the count",
			handler: text("websocket_connections_active 2\nwebsocket_connections_max -Inf\n"),
			want:    []Value{{Value: 2, Present: true}, {Problem: ReasonInvalidValue}},
		},
		{
			name:       "duplicate series",
			handler:    text("websocket_connections_active 2\nwebsocket_connections_active 3\n"),
			wantReason: ReasonDuplicate,
			wantErr:    "line 2: duplicate series",
		},
		{
			name:    "two label sets match one series",
			handler: text("websocket_connections_active{path=\"/a\"} 2\nwebsocket_connections_active{path=\"/b\"} 3\nwebsocket_connections_max 10\n"),
			want:    []Value{{Problem: ReasonDuplicate}, {Value: 10, Present: true}},
		},
		{
			name:    "no wanted series",
			handler: text("go_goroutines 8\n"),
			want:    []Value{{Problem: ReasonMissing}, {Problem: ReasonMissing}},
		},
		{
			name:    "count absent, limit present",
			handler: text("websocket_connections_max 10\n"),
			want:    []Value{{Problem: ReasonMissing}, {Value: 10, Present: true}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entered := make(chan struct{}, 1)
			handler := tc.handler
			if tc.stepTimeout {
				handler = func(w http.ResponseWriter, r *http.Request) {
					entered <- struct{}{}
					<-r.Context().Done()
				}
			}
			url := closedPortURL(t)
			if handler != nil {
				srv := httptest.NewServer(handler)
				t.Cleanup(srv.Close)
				url = srv.URL + "/metrics"
			}
			cfg := testConfig()
			s, sink, clk := startScraper(t, cfg)
			mustSet(t, s, key("pod"), url)
			if tc.stepTimeout {
				select {
				case <-entered:
				case <-time.After(waitFor):
					t.Fatal("slow handler not reached")
				}
				clk.Step(cfg.Timeout)
			}
			e := sink.next(t)
			if e.key != key("pod") {
				t.Errorf("key = %v", e.key)
			}
			if tc.wantReason == "" {
				if e.failure != nil {
					t.Fatalf("scrape failed: %v", e)
				}
				if !e.sample.Time.Equal(t0) {
					t.Errorf("sample time = %v, want %v", e.sample.Time, t0)
				}
				if fmt.Sprint(e.sample.Values) != fmt.Sprint(tc.want) {
					t.Errorf("values = %+v, want %+v", e.sample.Values, tc.want)
				}
				return
			}
			if e.failure == nil {
				t.Fatalf("scrape succeeded with %+v, want failure %s", e.sample.Values, tc.wantReason)
			}
			if e.failure.Reason != tc.wantReason {
				t.Errorf("reason = %s, want %s (%v)", e.failure.Reason, tc.wantReason, e.failure.Err)
			}
			if msg := fmt.Sprint(e.failure.Err); !strings.Contains(msg, tc.wantErr) || !strings.Contains(msg, "scrape ns/pod") {
				t.Errorf("error %q does not contain %q and the pod", msg, tc.wantErr)
			}
		})
	}
}

func TestRequestHeaders(t *testing.T) {
	headers := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		headers <- r.Header.Clone()
		text("websocket_connections_active 1\n")(w, r)
	}))
	t.Cleanup(srv.Close)
	s, sink, _ := startScraper(t, testConfig())
	mustSet(t, s, key("pod"), srv.URL+"/metrics")
	if e := sink.next(t); e.failure != nil {
		t.Fatal(e)
	}
	h := <-headers
	for _, want := range []string{"text/plain;version=0.0.4", "application/openmetrics-text;version=1.0.0"} {
		if !strings.Contains(h.Get("Accept"), want) {
			t.Errorf("Accept %q does not offer %s", h.Get("Accept"), want)
		}
	}
	if got := h.Get("Accept-Encoding"); got != "" {
		t.Errorf("Accept-Encoding = %q, want none", got)
	}
	if got := h.Get("User-Agent"); got != "wsscale-scraper" {
		t.Errorf("User-Agent = %q", got)
	}
}

// TestSlowTargetsDoNotBlockOthers occupies all workers but one with targets
// that never answer, and checks that another target keeps its schedule.
// With one worker fewer the fast target would never be scraped. The slow
// targets may take all those workers (FailingConcurrency) and keep their
// slot after one failure; from the second they back off, which
// TestBackoffSchedule covers.
func TestSlowTargetsDoNotBlockOthers(t *testing.T) {
	const workers = 4
	cfg := testConfig()
	cfg.Concurrency = workers
	cfg.FailingConcurrency = workers - 1
	cfg.Timeout = cfg.Interval
	cfg.SlowAfter = cfg.Timeout // hold the workers: TestHangingScrapesLeaveTheirWorkers covers SlowAfter
	s, sink, clk := startScraper(t, cfg)

	entered := make(chan string, 100)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		entered <- r.URL.Path
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	var fastHits atomic.Int32
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fastHits.Add(1)
		text("websocket_connections_active 5\n")(w, r)
	}))
	t.Cleanup(fast.Close)

	// Slow targets are due at the start of each interval, the fast one in
	// its middle, while the slow scrapes hang until their timeout.
	s.offset = func(k PodKey) time.Duration {
		if k.Name == "fast" {
			return cfg.Interval / 2
		}
		return 0
	}
	for i := range workers - 1 {
		mustSet(t, s, key(fmt.Sprint("slow-", i)), fmt.Sprintf("%s/slow-%d", slow.URL, i))
	}
	mustSet(t, s, key("fast"), fast.URL)

	waitEntered := func() {
		t.Helper()
		for range workers - 1 {
			select {
			case <-entered:
			case <-time.After(waitFor):
				t.Fatal("slow targets not all in flight")
			}
		}
	}
	const rounds = 2
	for round := range rounds {
		waitEntered() // every worker but one is now stuck
		clk.Step(cfg.Interval / 2)
		e := sink.next(t)
		if e.key != key("fast") || e.failure != nil || e.sample.Values[0].Value != 5 {
			t.Fatalf("round %d: got %v, want the fast target scraped while the slow ones hang", round, e)
		}
		clk.Step(cfg.Interval / 2) // the slow scrapes time out
		for range workers - 1 {
			e := sink.next(t)
			if e.key.Name == "fast" || e.failure == nil || e.failure.Reason != ReasonTimeout {
				t.Fatalf("round %d: got %v, want a slow target timing out", round, e)
			}
		}
	}
	if got := fastHits.Load(); got != rounds {
		t.Errorf("fast target scraped %d times, want %d", got, rounds)
	}
}

// TestRemoveStopsScraping removes a target while its scrape hangs: the
// request is cancelled, nothing is reported for it, and it is not scraped
// again while another target keeps being scraped.
func TestRemoveStopsScraping(t *testing.T) {
	cfg := testConfig()
	s, sink, clk := startScraper(t, cfg)

	var removedHits atomic.Int32
	entered := make(chan struct{}, 10)
	cancelled := make(chan struct{}, 10)
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		removedHits.Add(1)
		entered <- struct{}{}
		<-r.Context().Done()
		cancelled <- struct{}{}
	}))
	t.Cleanup(hang.Close)
	other := httptest.NewServer(text("websocket_connections_active 1\n"))
	t.Cleanup(other.Close)

	mustSet(t, s, key("gone"), hang.URL)
	mustSet(t, s, key("stays"), other.URL)
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("scrape of the removed target not started")
	}
	if e := sink.next(t); e.key != key("stays") {
		t.Fatalf("got %v", e)
	}
	s.Remove(key("gone"))
	select {
	case <-cancelled:
	case <-time.After(waitFor):
		t.Fatal("in-flight scrape not cancelled by Remove")
	}
	if n := s.Len(); n != 1 {
		t.Errorf("Len = %d after Remove, want 1", n)
	}
	for i := range 3 {
		clk.Step(cfg.Interval)
		if e := sink.next(t); e.key != key("stays") || e.failure != nil {
			t.Fatalf("interval %d: got %v, want only the remaining target", i, e)
		}
	}
	if got := removedHits.Load(); got != 1 {
		t.Errorf("removed target scraped %d times, want 1", got)
	}
	s.Remove(key("never-added")) // no-op
}

// TestSetChangesURL moves a target to another endpoint.
func TestSetChangesURL(t *testing.T) {
	cfg := testConfig()
	s, sink, clk := startScraper(t, cfg)
	a := httptest.NewServer(text("websocket_connections_active 1\n"))
	t.Cleanup(a.Close)
	b := httptest.NewServer(text("websocket_connections_active 2\n"))
	t.Cleanup(b.Close)

	mustSet(t, s, key("pod"), a.URL)
	if e := sink.next(t); e.failure != nil || e.sample.Values[0].Value != 1 {
		t.Fatalf("got %v", e)
	}
	mustSet(t, s, key("pod"), a.URL) // unchanged: no effect
	mustSet(t, s, key("pod"), b.URL)
	clk.Step(cfg.Interval)
	if e := sink.next(t); e.failure != nil || e.sample.Values[0].Value != 2 {
		t.Fatalf("got %v, want the new URL scraped", e)
	}
	// startScraper already runs it.
	if err := s.Run(context.Background()); err == nil {
		t.Error("second Run did not fail")
	}
}

func TestSetRejectsBadURLs(t *testing.T) {
	s, err := New(testConfig(), newRecordingSink())
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"", "10.0.0.1:9090/metrics", "ftp://10.0.0.1/metrics", "http:///metrics", "http://[::1"} {
		if err := s.Set(Target{Key: key("pod"), URL: u}); err == nil {
			t.Errorf("Set(%q) accepted", u)
		}
	}
	if s.Len() != 0 {
		t.Errorf("Len = %d", s.Len())
	}
}

// TestTargetsAreSpreadOverTheInterval checks, with the real offsets, that
// every target is scraped once per interval at its own place in it, and that
// the places are spread rather than bunched.
func TestTargetsAreSpreadOverTheInterval(t *testing.T) {
	const (
		targets = 200
		slots   = 10
	)
	cfg := testConfig()
	cfg.Concurrency = 8
	clk := testingclock.NewFakeClock(t0)
	cfg.Clock = clk
	sink := newRecordingSink()
	s, err := New(cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(text("websocket_connections_active 3\n"))
	t.Cleanup(srv.Close)
	perSlot := make([]int, slots)
	offsets := map[PodKey]time.Duration{}
	for i := range targets {
		k := key(fmt.Sprint("pod-", i))
		mustSet(t, s, k, fmt.Sprintf("%s/%d", srv.URL, i))
		off := s.offset(k)
		if off < 0 || off >= cfg.Interval {
			t.Fatalf("offset %v outside the interval", off)
		}
		offsets[k] = off
		perSlot[off*slots/cfg.Interval]++
	}
	for i, n := range perSlot {
		// 20 expected per slot; 50 would take a badly skewed hash.
		if n > 50 {
			t.Errorf("slot %d holds %d of %d targets: %v", i, n, targets, perSlot)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	step := cfg.Interval / slots
	scraped := map[PodKey]int{}
	for i := 0; i <= 3*slots; i++ {
		if i > 0 {
			clk.Step(step)
		}
		elapsed := time.Duration(i) * step
		want := 0
		for _, off := range offsets {
			if off <= elapsed {
				want += int((elapsed-off)/cfg.Interval) + 1
			}
		}
		got := 0
		for _, n := range scraped {
			got += n
		}
		for ; got < want; got++ {
			e := sink.next(t)
			if e.failure != nil {
				t.Fatalf("scrape failed: %v", e)
			}
			if due := t0.Add(offsets[e.key]); e.sample.Time.Before(due) {
				t.Fatalf("%s scraped at %v, before its place at %v", e.key, e.sample.Time, due)
			}
			scraped[e.key]++
		}
	}
	for k, n := range scraped {
		if n < 3 || n > 4 {
			t.Errorf("%s scraped %d times in 3 intervals", k, n)
		}
	}
	if len(scraped) != targets {
		t.Errorf("%d of %d targets scraped", len(scraped), targets)
	}
	sink.check(t)
}

func TestNextDue(t *testing.T) {
	const interval = 5 * time.Second
	tests := []struct {
		name     string
		due, now time.Duration
		want     time.Duration
	}{
		{name: "on time", due: 0, now: time.Second, want: 5 * time.Second},
		{name: "finished at the next slot", due: 0, now: 5 * time.Second, want: 5 * time.Second},
		{name: "missed one slot", due: 0, now: 6 * time.Second, want: 10 * time.Second},
		{name: "missed many slots", due: 0, now: 23 * time.Second, want: 25 * time.Second},
		{name: "exactly on a later slot", due: 0, now: 20 * time.Second, want: 20 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := nextDue(t0.Add(tc.due), t0.Add(tc.now), interval)
			if want := t0.Add(tc.want); !got.Equal(want) {
				t.Errorf("nextDue = %v, want %v", got.Sub(t0), tc.want)
			}
		})
	}
}

// endless is a reader that never ends.
type endless struct{ read int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	e.read += int64(len(p))
	return len(p), nil
}

func TestReadBodyIsBounded(t *testing.T) {
	const limit = 1 << 20
	tests := []struct {
		name          string
		r             io.Reader
		contentLength int64
		wantLen       int
		wantErr       error
	}{
		{name: "endless", r: &endless{}, contentLength: -1, wantErr: errTooLarge},
		{name: "at the limit", r: strings.NewReader(strings.Repeat("a", limit)), contentLength: -1, wantLen: limit},
		{name: "one byte over", r: strings.NewReader(strings.Repeat("a", limit+1)), contentLength: -1, wantErr: errTooLarge},
		{name: "content length known", r: strings.NewReader("abc"), contentLength: 3, wantLen: 3},
		{name: "short read", r: io.LimitReader(&endless{}, 10), contentLength: -1, wantLen: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readBody(nil, tc.r, tc.contentLength, limit)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			if cap(got) > limit+1 {
				t.Errorf("buffer grew to %d bytes, limit %d", cap(got), limit)
			}
			if tc.wantErr == nil && len(got) != tc.wantLen {
				t.Errorf("read %d bytes, want %d", len(got), tc.wantLen)
			}
			if e, ok := tc.r.(*endless); ok && e.read > limit+1 {
				t.Errorf("read %d bytes from an endless body, limit %d", e.read, limit)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	good := testConfig()
	if errs := good.Validate(); len(errs) != 0 {
		t.Fatalf("default test config invalid: %v", errs)
	}
	bad := Config{
		Series: []metricsconfig.Series{
			{Name: "", Rule: metricsconfig.Count},
			{Name: "a", Rule: 9},
			{Name: "b", Labels: []exposition.Label{{Name: "x", Value: "1"}}},
			{Name: "b", Labels: []exposition.Label{{Name: "x", Value: "1"}}},
			{Name: "c", Labels: []exposition.Label{{Name: ""}, {Name: "y"}, {Name: "y"}}},
		},
		Interval:           time.Second,
		Timeout:            2 * time.Second,
		Concurrency:        0,
		MaxBodyBytes:       0,
		FailingConcurrency: -1,
		BackoffMax:         time.Millisecond,
	}
	errs := bad.Validate()
	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{
		"series 0: empty name", "series 1 (a): unknown value rule 9", "series 3 (b): given twice",
		"series 4 (c): empty label name", `series 4 (c): label "y" given twice`,
		"timeout 2s exceeds the interval 1s", "concurrency must be at least 1", "max body bytes must be positive", "no clock",
		"failing concurrency must not be negative", "back-off maximum 1ms is shorter than the interval 1s",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("Validate does not report %q; got:\n%s", want, all)
		}
	}
	if _, err := New(bad, newRecordingSink()); err == nil {
		t.Error("New accepted an invalid config")
	}
	if _, err := New(testConfig(), nil); err == nil {
		t.Error("New accepted a nil sink")
	}
	tooMany := testConfig()
	tooMany.FailingConcurrency = tooMany.Concurrency + 1
	if errs := tooMany.Validate(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "failing concurrency 5 exceeds the concurrency 4") {
		t.Errorf("failing concurrency above concurrency: %v", errs)
	}
	empty := Config{}
	if errs := empty.Validate(); len(errs) < 5 {
		t.Errorf("empty config: %d errors, want one per missing field: %v", len(errs), errs)
	}
}
