package scrape

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePods is a transport that answers without a network: healthy pods
// serve a count at once, hanging pods (by host) never answer and wait for
// the scrape to be cancelled, failing pods refuse at once. It records how
// many scrapes of hanging pods run at once.
type fakePods struct {
	mu         sync.Mutex
	hanging    map[string]bool
	refusing   map[string]bool
	inFlight   int
	maxFlight  int
	enteredCh  chan string
	healthyHit map[string]int
}

func newFakePods() *fakePods {
	return &fakePods{
		hanging: map[string]bool{}, refusing: map[string]bool{},
		enteredCh: make(chan string, 1000), healthyHit: map[string]int{},
	}
}

func (f *fakePods) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	f.mu.Lock()
	hanging, refusing := f.hanging[host], f.refusing[host]
	switch {
	case hanging:
		f.inFlight++
		f.maxFlight = max(f.maxFlight, f.inFlight)
	case !refusing:
		f.healthyHit[host]++
	}
	f.mu.Unlock()
	switch {
	case hanging:
		f.enteredCh <- host
		<-req.Context().Done()
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
		return nil, req.Context().Err()
	case refusing:
		return nil, errors.New("connection refused")
	}
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"text/plain; version=0.0.4"}},
		Body:   io.NopCloser(strings.NewReader("websocket_connections_active 1\n")), ContentLength: -1,
		Request: req,
	}, nil
}

// resetMax starts a new measurement of the hanging scrapes at once.
func (f *fakePods) resetMax() {
	f.mu.Lock()
	f.maxFlight = f.inFlight
	f.mu.Unlock()
}

func (f *fakePods) max() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxFlight
}

// TestHangingTargetsHoldABoundedShareOfWorkers makes 6 of 12 targets hang
// with 4 workers. Once they have failed, at most a quarter of the workers
// (one) scrapes them at a time, and every healthy target is scraped on its
// slot while they hang; without the bound the hanging targets, due first,
// would take every worker until their timeout.
func TestHangingTargetsHoldABoundedShareOfWorkers(t *testing.T) {
	const hanging, healthy = 6, 6
	pods := newFakePods()
	cfg := testConfig()
	cfg.Concurrency = 4
	cfg.Transport = pods
	s, sink, clk := startScraper(t, cfg)
	// Hanging targets are due first in each interval, healthy ones 1 ms later.
	s.offset = func(k PodKey) time.Duration {
		if strings.HasPrefix(k.Name, "hang") {
			return 0
		}
		return time.Millisecond
	}
	for i := range hanging {
		host := fmt.Sprintf("hang-%d:9090", i)
		pods.mu.Lock()
		pods.refusing[host] = true
		pods.mu.Unlock()
		mustSet(t, s, key(fmt.Sprint("hang-", i)), "http://"+host+"/metrics")
	}
	for i := range healthy {
		mustSet(t, s, key(fmt.Sprint("ok-", i)), fmt.Sprintf("http://ok-%d:9090/metrics", i))
	}

	// First round: the future hanging targets fail at once (connection
	// refused), then their node goes dead and they hang.
	clk.Step(time.Millisecond)
	failed, ok := 0, 0
	for failed < hanging || ok < healthy {
		select {
		case e := <-sink.events:
			if e.failure != nil {
				failed++
			} else {
				ok++
			}
		case <-time.After(waitFor):
			t.Fatalf("first round: %d failed, %d scraped", failed, ok)
		}
	}
	pods.mu.Lock()
	for i := range hanging {
		host := fmt.Sprintf("hang-%d:9090", i)
		pods.refusing[host], pods.hanging[host] = false, true
	}
	pods.mu.Unlock()

	// Later rounds: the healthy targets are scraped while at most one
	// hanging target is in flight, without the clock moving past the
	// hanging scrapes' timeout.
	for round := range 2 {
		pods.resetMax()
		clk.Step(cfg.Interval)
		for ok := 0; ok < healthy; {
			select {
			case e := <-sink.events:
				if strings.HasPrefix(e.key.Name, "hang") {
					continue // timed out, stepped past by the round before
				}
				if e.failure != nil {
					t.Fatalf("round %d: %v", round, e)
				}
				ok++
			case <-time.After(waitFor):
				t.Fatalf("round %d: only %d of %d healthy targets scraped while hanging ones were in flight (at most %d at once)",
					round, ok, healthy, pods.max())
			}
		}
		if got := pods.max(); got > 1 {
			t.Errorf("round %d: %d hanging scrapes at once, want at most 1 (a quarter of 4 workers)", round, got)
		}
	}
}

// TestBackoffSchedule fails a target five times in a row, then lets it
// succeed, and checks when each scrape is due: its regular slot after one
// failure, then 2, 4, 8 intervals capped at BackoffMax, each shortened by
// the jitter (up to a fifth), and its interval again after a success.
func TestBackoffSchedule(t *testing.T) {
	const interval = 10 * time.Second
	tests := []struct {
		name   string
		jitter float64
		// want are the gaps between consecutive scrapes: five failures,
		// then successes.
		want []time.Duration
	}{
		{
			name: "no jitter", jitter: 0,
			want: []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 60 * time.Second, 60 * time.Second, 10 * time.Second},
		},
		{
			name: "largest jitter", jitter: 0.999,
			want: []time.Duration{10 * time.Second, 16004 * time.Millisecond, 32008 * time.Millisecond, 48012 * time.Millisecond, 48012 * time.Millisecond, 10 * time.Second},
		},
		{
			name: "half jitter", jitter: 0.5,
			want: []time.Duration{10 * time.Second, 18 * time.Second, 36 * time.Second, 54 * time.Second, 54 * time.Second, 10 * time.Second},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pods := newFakePods()
			pods.refusing["pod:9090"] = true
			cfg := testConfig()
			cfg.Interval = interval
			cfg.BackoffMax = time.Minute
			cfg.Transport = pods
			s, sink, clk := startScraper(t, cfg)
			s.jitter = func() float64 { return tc.jitter }
			dues := make(chan time.Time, 10)
			s.requeued = func(_ PodKey, due time.Time) { dues <- due }
			mustSet(t, s, key("pod"), "http://pod:9090/metrics")

			last := t0
			for i, gap := range tc.want {
				e := sink.next(t)
				if want := i < 5; (e.failure != nil) != want {
					t.Fatalf("scrape %d: %v, want failure %v", i, e, want)
				}
				if i == 4 {
					pods.mu.Lock()
					pods.refusing["pod:9090"] = false
					pods.mu.Unlock()
				}
				var due time.Time
				select {
				case due = <-dues:
				case <-time.After(waitFor):
					t.Fatal("target not requeued")
				}
				if got := due.Sub(last); got != gap {
					t.Errorf("gap after scrape %d = %v, want %v", i, got, gap)
				}
				clk.SetTime(due)
				last = due
			}
		})
	}
}

func TestConfigDefaultsForFailingTargets(t *testing.T) {
	tests := []struct {
		name           string
		concurrency    int
		interval       time.Duration
		wantFailing    int
		wantBackoffMax time.Duration
		setFailing     int
		setBackoffMax  time.Duration
	}{
		{name: "defaults", concurrency: 32, interval: 5 * time.Second, wantFailing: 8, wantBackoffMax: time.Minute},
		{name: "one worker", concurrency: 1, interval: 5 * time.Second, wantFailing: 1, wantBackoffMax: time.Minute},
		{name: "long interval", concurrency: 5, interval: 2 * time.Minute, wantFailing: 1, wantBackoffMax: 2 * time.Minute},
		{name: "set", concurrency: 32, interval: 5 * time.Second, setFailing: 2, setBackoffMax: 10 * time.Second, wantFailing: 2, wantBackoffMax: 10 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := NewConfig(activeSeries)
			cfg.Concurrency, cfg.Interval, cfg.Timeout = tc.concurrency, tc.interval, time.Second
			cfg.FailingConcurrency, cfg.BackoffMax = tc.setFailing, tc.setBackoffMax
			s, err := New(cfg, newRecordingSink())
			if err != nil {
				t.Fatal(err)
			}
			if s.cfg.FailingConcurrency != tc.wantFailing || s.cfg.BackoffMax != tc.wantBackoffMax {
				t.Errorf("failing concurrency %d, back-off max %v; want %d, %v",
					s.cfg.FailingConcurrency, s.cfg.BackoffMax, tc.wantFailing, tc.wantBackoffMax)
			}
		})
	}
}

// TestHangingScrapesLeaveTheirWorkers runs 6 new targets that hang and 2
// healthy ones due just after them on 2 workers. Each hanging scrape holds
// its worker for SlowAfter only: the first two go on waiting in the
// background (as many as there are workers), the next are cut as timed out,
// and the healthy targets are scraped well before the hanging scrapes'
// timeout. Without it the healthy ones would wait for two full timeouts.
func TestHangingScrapesLeaveTheirWorkers(t *testing.T) {
	pods := newFakePods()
	cfg := testConfig()
	cfg.Concurrency = 2
	cfg.SlowAfter = time.Second
	cfg.Transport = pods
	s, sink, clk := startScraper(t, cfg)
	s.offset = func(k PodKey) time.Duration {
		if strings.HasPrefix(k.Name, "hang") {
			return 0
		}
		return time.Millisecond
	}
	for i := range 6 {
		host := fmt.Sprintf("hang-%d:9090", i)
		pods.mu.Lock()
		pods.hanging[host] = true
		pods.mu.Unlock()
		mustSet(t, s, key(fmt.Sprint("hang-", i)), "http://"+host+"/metrics")
	}
	for i := range 2 {
		mustSet(t, s, key(fmt.Sprint("ok-", i)), fmt.Sprintf("http://ok-%d:9090/metrics", i))
	}
	entered := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-pods.enteredCh:
			case <-time.After(waitFor):
				t.Fatal("hanging scrapes not started")
			}
		}
	}
	clk.Step(time.Millisecond)
	entered(2)
	clk.Step(cfg.SlowAfter) // the first two wait in the background
	entered(2)
	clk.Step(cfg.SlowAfter) // the waiting slots are full: cut, and the next two start
	entered(2)
	clk.Step(cfg.SlowAfter) // cut again; the healthy targets get the workers
	cut, ok := 0, 0
	for cut < 4 || ok < 2 {
		e := sink.next(t)
		switch {
		case strings.HasPrefix(e.key.Name, "hang") && e.failure != nil && e.failure.Reason == ReasonTimeout:
			cut++
		case strings.HasPrefix(e.key.Name, "ok") && e.failure == nil:
			ok++
		default:
			t.Fatalf("%v, want hanging scrapes cut as timed out and healthy ones scraped", e)
		}
	}
	if elapsed := clk.Since(t0); elapsed >= cfg.Timeout {
		t.Errorf("healthy targets scraped after %v, want before the %v timeout", elapsed, cfg.Timeout)
	}
	// The two waiting scrapes time out in the background.
	clk.Step(cfg.Timeout)
	for range 2 {
		if e := sink.next(t); e.failure == nil || e.failure.Reason != ReasonTimeout {
			t.Fatalf("%v, want a waiting scrape timing out", e)
		}
	}
}

// TestNewURLEndsBackoff: a target that backs off and gets a new URL (the
// pod's port changed) starts afresh: its next failure keeps its slot.
func TestNewURLEndsBackoff(t *testing.T) {
	pods := newFakePods()
	pods.refusing["old:9090"], pods.refusing["new:9090"] = true, true
	cfg := testConfig()
	cfg.Transport = pods
	s, sink, clk := startScraper(t, cfg)
	s.jitter = func() float64 { return 0 }
	dues := make(chan time.Time, 10)
	s.requeued = func(_ PodKey, due time.Time) { dues <- due }
	mustSet(t, s, key("pod"), "http://old:9090/metrics")
	next := func() time.Time {
		t.Helper()
		if e := sink.next(t); e.failure == nil {
			t.Fatalf("%v, want a failure", e)
		}
		select {
		case due := <-dues:
			return due
		case <-time.After(waitFor):
			t.Fatal("target not requeued")
			return time.Time{}
		}
	}
	due := next() // first failure: its slot
	clk.SetTime(due)
	due2 := next() // second: back-off
	if got := due2.Sub(due); got != 2*cfg.Interval {
		t.Fatalf("back-off %v, want %v", got, 2*cfg.Interval)
	}
	mustSet(t, s, key("pod"), "http://new:9090/metrics")
	clk.SetTime(due2)
	if got := next().Sub(due2); got != cfg.Interval {
		t.Errorf("after a new URL the next failure waits %v, want %v (its slot)", got, cfg.Interval)
	}
}

// TestFailingTargetIsCutAtSlowAfter: a target whose last scrape failed and
// that hangs now is cut at SlowAfter instead of waiting in the background,
// so that failing targets never take the waiting slots of healthy ones and
// each costs its failing slot SlowAfter only.
func TestFailingTargetIsCutAtSlowAfter(t *testing.T) {
	pods := newFakePods()
	pods.refusing["pod:9090"] = true
	cfg := testConfig()
	cfg.SlowAfter = time.Second
	cfg.Transport = pods
	s, sink, clk := startScraper(t, cfg)
	mustSet(t, s, key("pod"), "http://pod:9090/metrics")
	if e := sink.next(t); e.failure == nil {
		t.Fatalf("%v, want a failure", e)
	}
	pods.mu.Lock()
	pods.refusing["pod:9090"], pods.hanging["pod:9090"] = false, true
	pods.mu.Unlock()
	clk.Step(cfg.Interval)
	select {
	case <-pods.enteredCh:
	case <-time.After(waitFor):
		t.Fatal("scrape not started")
	}
	clk.Step(cfg.SlowAfter)
	e := sink.next(t)
	if e.failure == nil || e.failure.Reason != ReasonTimeout || e.failure.Duration != cfg.SlowAfter {
		t.Fatalf("%v, want the failing target cut as timed out at %v", e, cfg.SlowAfter)
	}
}
