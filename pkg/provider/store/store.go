// Package store keeps the latest values of every tracked pod, as computed
// from its last scrape, and judges their freshness: the scraper's sink and
// the custom metrics API's source of values.
package store

import (
	"context"
	"math"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// Point is the value of one metric of one pod, as every value source gives
// it (the Store and the Prometheus source).
type Point struct {
	// Value is the metric's value; meaningful only when OK.
	Value float64
	// Time is when the value was observed.
	Time time.Time
	// OK is false when the pod has no fresh value.
	OK bool
	// HadValue is true when the pod had a value since its containers last
	// started, fresh or not: it may hold connections even without a fresh
	// value. Sources that cannot tell leave it false.
	HadValue bool
}

// ScrapeObserver is told about every scrape, for the adapter's own metrics.
type ScrapeObserver interface {
	// ObserveScrape records a scrape; reason is "" for a successful one.
	ObserveScrape(duration time.Duration, reason scrape.Reason)
}

// Store keeps the latest values of every tracked pod, as computed from its
// last scrape. It is the scraper's Sink and the provider's Source.
type Store struct {
	plan       metricsconfig.Plan
	names      []string // of the metrics
	staleAfter time.Duration
	clock      clock.PassiveClock
	observer   ScrapeObserver

	mu   sync.RWMutex
	pods map[scrape.PodKey]*podValues
	// firstRound holds the pods tracked when scraping began that have not
	// been scraped since; nil before BeginFirstRound. roundDone latches once
	// it empties.
	firstRound map[scrape.PodKey]struct{}
	roundDone  bool
}

// podValues are the values of one pod. values is nil until the first
// successful scrape and again after a failed one: a failure leaves no
// value, not the previous one and not 0.
type podValues struct {
	time   time.Time
	values []float64 // per metric; NaN when the pod has no value for it
	// problems says, per metric, why values is NaN: a series of the metric
	// was missing or invalid (ReasonMissing, ReasonInvalidValue,
	// ReasonDuplicate).
	problems []scrape.Reason
	// hadValue: a scrape succeeded since the pod's containers last started.
	hadValue bool
}

var _ scrape.Sink = (*Store)(nil)

// New returns a Store for metrics whose values are served while they
// are at most staleAfter old. observer may be nil.
func New(metrics []metricsconfig.Metric, staleAfter time.Duration, clk clock.PassiveClock, observer ScrapeObserver) *Store {
	if clk == nil {
		clk = clock.RealClock{}
	}
	names := make([]string, len(metrics))
	for i, m := range metrics {
		names[i] = m.Name
	}
	return &Store{
		plan:       metricsconfig.NewPlan(metrics),
		names:      names,
		staleAfter: staleAfter,
		clock:      clk,
		observer:   observer,
		pods:       map[scrape.PodKey]*podValues{},
	}
}

// Add starts tracking a pod; it has no value until it is scraped.
func (s *Store) Add(key scrape.PodKey) {
	s.mu.Lock()
	if _, ok := s.pods[key]; !ok {
		s.pods[key] = &podValues{}
	}
	s.mu.Unlock()
}

// Delete forgets a pod.
func (s *Store) Delete(key scrape.PodKey) {
	s.mu.Lock()
	delete(s.pods, key)
	s.scrapedLocked(key)
	s.mu.Unlock()
}

// Restarted records that a container of a tracked pod restarted: whatever
// connections it held are gone, so until its next successful scrape it
// counts as a pod that had no value (see Point.HadValue).
func (s *Store) Restarted(key scrape.PodKey) {
	s.mu.Lock()
	if p, ok := s.pods[key]; ok {
		p.hadValue = false
	}
	s.mu.Unlock()
}

// BeginFirstRound marks the start of scraping: the first round is done once
// every pod tracked now has been scraped once, successfully or not, or has
// gone. Pods added later do not hold it up, so that a cluster that keeps
// starting pods cannot keep the adapter unready. Later calls do nothing.
func (s *Store) BeginFirstRound() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstRound != nil || s.roundDone {
		return
	}
	s.firstRound = make(map[scrape.PodKey]struct{}, len(s.pods))
	for key := range s.pods {
		s.firstRound[key] = struct{}{}
	}
	s.roundDone = len(s.firstRound) == 0
}

// FirstRoundDone reports whether the first scrape round is done, and how
// many pods it still waits for.
func (s *Store) FirstRoundDone() (bool, int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.firstRound == nil && !s.roundDone {
		return false, len(s.pods)
	}
	return s.roundDone, len(s.firstRound)
}

// scrapedLocked takes a pod off the first round's list; s.mu is held.
func (s *Store) scrapedLocked(key scrape.PodKey) {
	if s.firstRound == nil {
		return
	}
	delete(s.firstRound, key)
	if len(s.firstRound) == 0 {
		s.firstRound, s.roundDone = nil, true
	}
}

// Observe records a successful scrape of a tracked pod.
func (s *Store) Observe(key scrape.PodKey, sample scrape.Sample) {
	if s.observer != nil {
		s.observer.ObserveScrape(sample.Duration, "")
	}
	// Each metric stands alone: a series one metric lacks leaves the others
	// their values.
	values := make([]float64, len(s.plan.Numerator))
	problems := make([]scrape.Reason, len(s.plan.Numerator))
	for m, n := range s.plan.Numerator {
		values[m], problems[m] = seriesQuotient(sample.Values, n, s.plan.Divisor[m])
	}
	s.mu.Lock()
	if p, ok := s.pods[key]; ok {
		p.time, p.values, p.problems, p.hadValue = sample.Time, values, problems, true
	}
	s.scrapedLocked(key)
	s.mu.Unlock()
}

// seriesQuotient computes one metric from the series of a scrape: the
// numerator, divided by the divisor unless d is -1. Without a value it
// returns NaN and why.
func seriesQuotient(series []scrape.Value, n, d int) (float64, scrape.Reason) {
	num := series[n]
	if !num.Present {
		return math.NaN(), num.Problem
	}
	if d < 0 {
		return num.Value, ""
	}
	switch div := series[d]; {
	case !div.Present:
		return math.NaN(), div.Problem
	case div.Value == 0:
		return math.NaN(), scrape.ReasonInvalidValue
	default:
		return num.Value / div.Value, ""
	}
}

// Fail records a failed scrape: the pod has no value until the next
// successful one.
func (s *Store) Fail(key scrape.PodKey, failure scrape.Failure) {
	if s.observer != nil {
		s.observer.ObserveScrape(failure.Duration, failure.Reason)
	}
	s.mu.Lock()
	if p, ok := s.pods[key]; ok {
		p.time, p.values, p.problems = failure.Time, nil, nil
	}
	s.scrapedLocked(key)
	s.mu.Unlock()
}

// Lookup returns the value of metric (an index into the served metrics) for
// each named pod of namespace, in the same order. A pod without a fresh
// value gets a Point with OK false, never a zero value.
func (s *Store) Lookup(_ context.Context, metric int, namespace string, pods []string) ([]Point, error) {
	out := make([]Point, len(pods))
	oldest := s.clock.Now().Add(-s.staleAfter)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i, name := range pods {
		p, ok := s.pods[scrape.PodKey{Namespace: namespace, Name: name}]
		if !ok {
			continue
		}
		out[i].HadValue = p.hadValue
		if p.values == nil || p.time.Before(oldest) {
			continue
		}
		if v := p.values[metric]; !math.IsNaN(v) {
			out[i] = Point{Value: v, Time: p.time, OK: true, HadValue: true}
		}
	}
	return out, nil
}

// StoreStats counts the tracked pods by the outcome of their last scrape.
type StoreStats struct {
	// Tracked is the number of tracked pods.
	Tracked int
	// Fresh were scraped successfully at most staleAfter ago (some of
	// their metrics may still lack a value: see MetricStats).
	Fresh int
	// Stale have values that are too old to be served.
	Stale int
	// Failed had their last scrape fail.
	Failed int
	// Pending were never scraped yet.
	Pending int
}

// Stats counts the pods by state, for the adapter's own metrics.
func (s *Store) Stats() StoreStats {
	oldest := s.clock.Now().Add(-s.staleAfter)
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := StoreStats{Tracked: len(s.pods)}
	for _, p := range s.pods {
		switch {
		case p.time.IsZero():
			st.Pending++
		case p.values == nil:
			st.Failed++
		case p.time.Before(oldest):
			st.Stale++
		default:
			st.Fresh++
		}
	}
	return st
}

// MetricStats counts the tracked pods by the state of one metric's value.
type MetricStats struct {
	// Metric is the served metric's name.
	Metric string
	// Fresh pods have a value that is served.
	Fresh int
	// Stale pods have a value that is too old to be served.
	Stale int
	// Failed pods had their last scrape fail as a whole.
	Failed int
	// Pending pods were never scraped yet.
	Pending int
	// Missing pods were scraped but did not expose a series of the metric.
	Missing int
	// Invalid pods exposed a series of the metric with a value its rule
	// rejects, more than once, or a divisor of 0.
	Invalid int
}

// MetricStats counts, per served metric, the pods by the state of their
// value, for the adapter's own metrics: a series that some pods lack shows
// up as missing for the metrics that use it, and for those alone.
func (s *Store) MetricStats() []MetricStats {
	oldest := s.clock.Now().Add(-s.staleAfter)
	out := make([]MetricStats, len(s.names))
	for m, name := range s.names {
		out[m].Metric = name
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, p := range s.pods {
		for m := range out {
			st := &out[m]
			switch {
			case p.time.IsZero():
				st.Pending++
			case p.values == nil:
				st.Failed++
			case p.time.Before(oldest):
				st.Stale++
			case !math.IsNaN(p.values[m]):
				st.Fresh++
			case p.problems[m] == scrape.ReasonInvalidValue || p.problems[m] == scrape.ReasonDuplicate:
				st.Invalid++
			default:
				st.Missing++
			}
		}
	}
	return out
}
