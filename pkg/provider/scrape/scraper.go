// Package scrape reads the connection counts of pods from their metrics
// endpoints: a bounded pool of workers fed by a schedule that spreads every
// target over the interval, one keep-alive HTTP transport, a timeout and a
// size limit per scrape, and the zero-allocation exposition parser. Failing
// targets back off and hold a bounded share of the workers, so that pods
// that hang (a dead node) do not delay the healthy ones.
package scrape

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/provider/exposition"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
)

// acceptHeader asks for the text format first: it is what client libraries
// serve by default and the cheaper one to read.
const acceptHeader = "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.9,*/*;q=0.1"

// Causes of a cancelled scrape.
var (
	errScrapeTimeout = errors.New("scrape timed out")
	errTargetRemoved = errors.New("target removed")
	errTargetChanged = errors.New("target URL changed")
	errTooLarge      = errors.New("body too large")
)

// retainBodyBytes is the largest body buffer a worker keeps for the next
// scrape; a larger one, grown for an unusual body, is dropped.
const retainBodyBytes = 256 << 10

// Scraper scrapes a changing set of targets and reports to a Sink.
type Scraper struct {
	cfg       Config
	sink      Sink
	client    *http.Client
	header    http.Header
	selectors []exposition.Selector
	seed      maphash.Seed
	// offset places a target in the interval; tests replace it.
	offset func(PodKey) time.Duration
	// jitter returns a number in [0, 1) that shortens a back-off; tests
	// replace it.
	jitter func() float64
	// requeued, when set by a test, is told each time a target is put back
	// in the schedule after a scrape, with its due time, under mu.
	requeued func(key PodKey, due time.Time)

	mu      sync.Mutex
	targets map[PodKey]*target
	// queue holds the targets whose last scrape succeeded (or that were
	// never scraped), failing those whose last scrape failed: at most
	// FailingConcurrency of the latter are scraped at once.
	queue          targetQueue
	failing        targetQueue
	failingRunning int
	// waiting counts the scrapes that went on waiting for an answer in
	// the background after SlowAfter, each replaced by a new worker.
	waiting int
	workers sync.WaitGroup
	running bool
	wake    chan struct{}
	work    chan *target
}

// target is the schedule entry of one pod. The Scraper's mu guards every
// field but key and delivering.
type target struct {
	key PodKey
	url string
	u   *url.URL // parsed url; shared by every scrape, never modified
	gen uint64   // bumped when the URL changes
	due time.Time
	// index is the position in its queue, -1 while not queued (in flight,
	// handed to a worker, or removed).
	index int
	// failures counts the consecutive failed scrapes; a target with
	// failures is queued in the failing queue.
	failures int
	// failingSlot is set while the target is in flight as a failing one.
	failingSlot bool
	removed     bool
	cancel      context.CancelCauseFunc // set while a scrape is in flight
	// delivering is held while the sink is called for this target, so
	// that Remove can wait for a call in progress.
	delivering sync.Mutex
}

// New returns a Scraper for a valid configuration. Call Run to start it.
func New(cfg Config, sink Sink) (*Scraper, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("invalid scrape configuration: %w", errors.Join(errs...))
	}
	if sink == nil {
		return nil, errors.New("invalid scrape configuration: no sink")
	}
	cfg = cfg.withDefaults()
	cfg.Series = append([]metricsconfig.Series(nil), cfg.Series...)
	selectors := cfg.selectors()
	if _, err := exposition.NewParser(selectors...); err != nil {
		return nil, fmt.Errorf("invalid scrape configuration: %w", err)
	}
	transport := cfg.Transport
	switch {
	case transport != nil:
	case cfg.DisableKeepAlives:
		transport = NewTransport(cfg)
	default:
		transport = NewKeepAliveTransport(cfg)
	}
	s := &Scraper{
		cfg:  cfg,
		sink: sink,
		client: &http.Client{
			Transport: transport,
			// A metrics endpoint that redirects is misconfigured; following
			// it would let a pod point the adapter anywhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		header: http.Header{
			"Accept":     {acceptHeader},
			"User-Agent": {"wsscale-scraper"},
		},
		selectors: selectors,
		seed:      maphash.MakeSeed(),
		targets:   map[PodKey]*target{},
		wake:      make(chan struct{}, 1),
		work:      make(chan *target),
	}
	s.offset = s.hashOffset
	s.jitter = rand.Float64
	return s, nil
}

// hashOffset spreads targets uniformly and stably over the interval.
func (s *Scraper) hashOffset(key PodKey) time.Duration {
	return time.Duration(maphash.Comparable(s.seed, key) % uint64(s.cfg.Interval))
}

// Set adds a target or changes its URL. A new target is first scraped at its
// place in the interval. Changing the URL abandons a scrape in flight.
func (s *Scraper) Set(t Target) error {
	u, err := url.Parse(t.URL)
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Key, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("target %s: URL %q is not http(s)://host[:port]/path", t.Key, t.URL)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.targets[t.Key]; ok {
		if old.url == t.URL {
			return nil
		}
		old.url, old.u = t.URL, u
		old.gen++
		if old.cancel != nil {
			old.cancel(errTargetChanged)
		}
		// A new address is a new chance: no back-off from the old one.
		if old.failures > 0 && old.index >= 0 {
			heap.Remove(&s.failing, old.index)
			old.failures = 0
			s.push(old)
		}
		old.failures = 0
		return nil
	}
	tg := &target{key: t.Key, url: t.URL, u: u, index: -1}
	tg.due = s.cfg.Clock.Now().Add(s.offset(t.Key))
	s.targets[t.Key] = tg
	heap.Push(&s.queue, tg)
	if tg.index == 0 {
		s.notify()
	}
	return nil
}

// Remove stops scraping a target and cancels a scrape in flight. When it
// returns, the sink is not called for key anymore.
func (s *Scraper) Remove(key PodKey) {
	s.mu.Lock()
	t, ok := s.targets[key]
	if !ok {
		s.mu.Unlock()
		return
	}
	delete(s.targets, key)
	t.removed = true
	if t.index >= 0 {
		heap.Remove(s.queueOf(t), t.index)
	}
	if t.cancel != nil {
		t.cancel(errTargetRemoved)
	}
	s.mu.Unlock()
	// Wait for a sink call in progress.
	t.delivering.Lock()
	t.delivering.Unlock()
}

// Len returns the number of targets.
func (s *Scraper) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.targets)
}

// queueOf returns the queue a target is in, or goes to: failing when its
// last scrape failed. mu must be held.
func (s *Scraper) queueOf(t *target) *targetQueue {
	if t.failures > 0 {
		return &s.failing
	}
	return &s.queue
}

// push queues a target in its queue and wakes the dispatcher if it is the
// next due there. mu must be held.
func (s *Scraper) push(t *target) {
	q := s.queueOf(t)
	heap.Push(q, t)
	if t.index == 0 {
		s.notify()
	}
}

// nextLocked pops the next target to scrape if one is due, or returns how
// long until one is (-1: none queued). A failing target is considered only
// while fewer than FailingConcurrency failing scrapes run. mu must be held.
func (s *Scraper) nextLocked(now time.Time) (*target, time.Duration) {
	var q *targetQueue
	if len(s.queue) > 0 {
		q = &s.queue
	}
	if len(s.failing) > 0 && s.failingRunning < s.cfg.FailingConcurrency &&
		(q == nil || s.failing[0].due.Before(s.queue[0].due)) {
		q = &s.failing
	}
	if q == nil {
		return nil, -1
	}
	if head := (*q)[0]; head.due.After(now) {
		return nil, head.due.Sub(now)
	}
	t := heap.Pop(q).(*target)
	if q == &s.failing {
		t.failingSlot = true
		s.failingRunning++
	}
	return t, 0
}

// releaseLocked frees the failing slot a finished scrape held. mu must be
// held.
func (s *Scraper) releaseLocked(t *target) {
	if t.failingSlot {
		t.failingSlot = false
		s.failingRunning--
		if len(s.failing) > 0 {
			s.notify()
		}
	}
}

// backoff returns when a target that failed failures times in a row, the
// last time in a scrape started at start, is scraped next.
func (s *Scraper) backoff(t *target, start time.Time) time.Time {
	if t.failures <= 1 {
		// One failure may be a blip: keep the target's place.
		return nextDue(t.due, start, s.cfg.Interval)
	}
	d := s.cfg.Interval
	for i := 1; i < t.failures && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	d -= time.Duration(float64(d) * s.jitter() / 5)
	return start.Add(d)
}

func (s *Scraper) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run scrapes until ctx is done, then waits for the scrapes in flight to be
// abandoned. It may be called once.
func (s *Scraper) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("scraper already started")
	}
	s.running = true
	s.mu.Unlock()

	klog.InfoS("Starting scraper", "interval", s.cfg.Interval, "timeout", s.cfg.Timeout,
		"concurrency", s.cfg.Concurrency, "failingConcurrency", s.cfg.FailingConcurrency,
		"backoffMax", s.cfg.BackoffMax, "maxBodyBytes", s.cfg.MaxBodyBytes, "targets", s.Len())
	defer klog.InfoS("Stopped scraper")
	for range s.cfg.Concurrency {
		s.workers.Go(func() { s.worker(ctx) })
	}
	s.dispatch(ctx)
	s.workers.Wait()
	return nil
}

// dispatch hands due targets to the workers. It blocks while every worker is
// busy, so a backlog delays scrapes instead of piling them up.
func (s *Scraper) dispatch(ctx context.Context) {
	clk := s.cfg.Clock
	timer := clk.NewTimer(time.Hour)
	stopTimer(timer)
	for {
		s.mu.Lock()
		now := clk.Now()
		next, wait := s.nextLocked(now)
		s.mu.Unlock()

		if next != nil {
			select {
			case s.work <- next:
				continue
			case <-ctx.Done():
				return
			}
		}
		var fire <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			// A clock that moved while the timer was armed (a fake clock
			// stepped by a test) would make it fire late: look again.
			if clk.Since(now) > time.Millisecond {
				stopTimer(timer)
				continue
			}
			fire = timer.C()
		}
		select {
		case <-fire:
		case <-s.wake:
		case <-ctx.Done():
			stopTimer(timer)
			return
		}
		stopTimer(timer)
	}
}

// stopTimer stops t and drains a value it may have delivered, so that a
// fake clock never blocks on a full channel.
func stopTimer(t clock.Timer) {
	t.Stop()
	select {
	case <-t.C():
	default:
	}
}

// worker owns a parser and a body buffer, reused across scrapes.
type worker struct {
	parser *exposition.Parser
	body   []byte
	// busy is set while a scrape runs, waiting once the scrape waits in
	// the background (the worker ends with it). Both are guarded by the
	// Scraper's mu.
	busy, waiting bool
}

func (s *Scraper) worker(ctx context.Context) {
	p, err := exposition.NewParser(s.selectors...)
	if err != nil {
		panic(err) // validated by New
	}
	w := &worker{parser: p}
	for {
		select {
		case t := <-s.work:
			s.scrapeTarget(ctx, w, t)
			s.mu.Lock()
			waited := w.waiting
			s.mu.Unlock()
			if waited {
				return // replaced when it started waiting
			}
		case <-ctx.Done():
			return
		}
	}
}

// slow is called when w's scrape of t has run for SlowAfter. Healthy pods
// answer well within it; a scrape still waiting is likely a pod that hangs,
// and must not hold a worker for the whole timeout, or a few hundred
// hanging pods (a dead node) would hold them all. The scrape goes on in the
// background and a new worker takes its place, while fewer than Concurrency
// scrapes wait so; beyond that it is cut, as timed out. A target that
// failed last time is cut at once: it would only take a waiting place a
// healthy pod that is merely slow may need, and hold its failing slot.
func (s *Scraper) slow(ctx context.Context, w *worker, t *target, cancel context.CancelCauseFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !w.busy || w.waiting || ctx.Err() != nil {
		return
	}
	if t.failingSlot || s.waiting >= s.cfg.Concurrency {
		cancel(errScrapeTimeout)
		return
	}
	s.waiting++
	w.waiting = true
	s.workers.Go(func() { s.worker(ctx) })
}

// scrapeTarget scrapes t once, reports the outcome unless t was removed or
// changed meanwhile, and puts t back in the queue.
func (s *Scraper) scrapeTarget(ctx context.Context, w *worker, t *target) {
	clk := s.cfg.Clock
	scrapeCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	s.mu.Lock()
	if t.removed {
		s.releaseLocked(t)
		s.mu.Unlock()
		return
	}
	gen, u := t.gen, t.u
	t.cancel = cancel
	w.busy = true
	s.mu.Unlock()

	start := clk.Now()
	timeout := clk.AfterFunc(s.cfg.Timeout, func() { cancel(errScrapeTimeout) })
	// slow takes s.mu, so it runs on a goroutine of its own: a clock may call AfterFunc's
	// function while holding a lock that a holder of s.mu waits for (the fake clock does).
	slow := clk.AfterFunc(s.cfg.SlowAfter, func() { go s.slow(ctx, w, t, cancel) })
	values, reason, err := s.scrape(scrapeCtx, w, u)
	timeout.Stop()
	slow.Stop()
	duration := clk.Since(start)

	t.delivering.Lock()
	s.mu.Lock()
	t.cancel = nil
	deliver := !t.removed && t.gen == gen && ctx.Err() == nil
	s.mu.Unlock()
	if deliver {
		if err != nil {
			s.sink.Fail(t.key, Failure{
				Time: start, Duration: duration, Reason: reason,
				Err: fmt.Errorf("scrape %s (%s): %w", t.key, u.Redacted(), err),
			})
		} else {
			s.sink.Observe(t.key, Sample{Time: start, Duration: duration, Values: values})
		}
	}
	t.delivering.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(t)
	w.busy = false
	if w.waiting {
		s.waiting--
	}
	if t.removed || ctx.Err() != nil {
		return
	}
	switch {
	case t.gen != gen:
		// The URL changed during the scrape: its outcome says nothing
		// about the new one.
		t.due = nextDue(t.due, start, s.cfg.Interval)
	case err != nil:
		t.failures++
		t.due = s.backoff(t, start)
	default:
		t.failures = 0
		// Slots are skipped only if they passed before this scrape
		// started: one that came due while the scrape ran is kept, so a
		// scrape that ends just after its next slot does not cost the pod
		// an interval of freshness.
		t.due = nextDue(t.due, start, s.cfg.Interval)
	}
	s.push(t)
	if s.requeued != nil {
		s.requeued(t.key, t.due)
	}
}

// nextDue keeps a target on its place in the interval: one interval after
// the last due time, skipping the slots missed by a late scrape.
func nextDue(due, now time.Time, interval time.Duration) time.Time {
	next := due.Add(interval)
	if next.Before(now) {
		missed := now.Sub(next) / interval
		next = next.Add(missed * interval)
		if next.Before(now) {
			next = next.Add(interval)
		}
	}
	return next
}

// scrape fetches, parses and validates one body.
func (s *Scraper) scrape(ctx context.Context, w *worker, u *url.URL) ([]Value, Reason, error) {
	// A request is built per scrape rather than kept per target: at 10,000 pods
	// a kept request would cost more memory than the pod's idle connection.
	req := (&http.Request{
		Method: http.MethodGet, URL: u, Host: u.Host, Header: s.header,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}).WithContext(ctx)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, classify(ctx, err), err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Read a little so that a short error page does not cost the
		// connection; a long one is cut off with it.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		return nil, ReasonHTTPStatus, fmt.Errorf("HTTP status %s", resp.Status)
	}
	if resp.ContentLength > s.cfg.MaxBodyBytes {
		return nil, ReasonTooLarge, fmt.Errorf("%w: Content-Length %d exceeds the limit of %d bytes",
			errTooLarge, resp.ContentLength, s.cfg.MaxBodyBytes)
	}
	w.body, err = readBody(w.body[:0], resp.Body, resp.ContentLength, s.cfg.MaxBodyBytes)
	defer func() {
		if cap(w.body) > retainBodyBytes {
			w.body = nil
		}
	}()
	if errors.Is(err, errTooLarge) {
		return nil, ReasonTooLarge, fmt.Errorf("%w: more than %d bytes", errTooLarge, s.cfg.MaxBodyBytes)
	}
	if err != nil {
		return nil, classify(ctx, err), fmt.Errorf("read body: %w", err)
	}

	p := w.parser
	defer p.Reset() // drop the reference to the body
	if err := p.Parse(w.body, exposition.FormatFromContentType(resp.Header.Get("Content-Type"))); err != nil {
		if errors.Is(err, exposition.ErrDuplicateSeries) {
			return nil, ReasonDuplicate, err
		}
		return nil, ReasonParse, err
	}
	// Each series stands alone: one that is absent or invalid leaves the
	// others their values, so that a metric a pod does not serve never
	// blanks one it does.
	values := make([]Value, len(s.cfg.Series))
	for i, series := range s.cfg.Series {
		samples := p.Samples(i)
		switch {
		case len(samples) == 0:
			values[i].Problem = ReasonMissing
		case len(samples) > 1:
			values[i].Problem = ReasonDuplicate
		case series.Rule.Check(samples[0].Value) != "":
			values[i].Problem = ReasonInvalidValue
		default:
			values[i] = Value{Value: samples[0].Value, Present: true}
		}
	}
	return values, "", nil
}

// readBody reads r into dst, failing with errTooLarge once more than limit
// bytes came: it never holds more than limit+1 bytes.
func readBody(dst []byte, r io.Reader, contentLength, limit int64) ([]byte, error) {
	if contentLength > 0 && int64(cap(dst)) < contentLength+1 {
		// +1 leaves room to see io.EOF without growing.
		dst = make([]byte, 0, contentLength+1)
	}
	for {
		if len(dst) == cap(dst) {
			if int64(len(dst)) > limit {
				return dst, errTooLarge
			}
			size := min(max(2*int64(cap(dst)), 16<<10), limit+1)
			grown := make([]byte, len(dst), size)
			copy(grown, dst)
			dst = grown
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if int64(len(dst)) > limit {
			return dst, errTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// classify maps a transport error to a reason.
func classify(ctx context.Context, err error) Reason {
	if errors.Is(context.Cause(ctx), errScrapeTimeout) {
		return ReasonTimeout
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return ReasonTimeout
	}
	return ReasonConnection
}
