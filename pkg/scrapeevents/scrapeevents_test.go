package scrapeevents

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// recorded is one Event written through fakeRecorder.
type recorded struct {
	pod, typ, reason, note string
	uid                    string
}

type fakeRecorder struct {
	mu     sync.Mutex
	events []recorded
}

func (r *fakeRecorder) Eventf(regarding, _ runtime.Object, typ, reason, _, note string, args ...any) {
	p := regarding.(*corev1.Pod)
	r.mu.Lock()
	r.events = append(r.events, recorded{pod: p.Namespace + "/" + p.Name, typ: typ, reason: reason, note: fmt.Sprintf(note, args...), uid: string(p.UID)})
	r.mu.Unlock()
}

func (r *fakeRecorder) reasons() []string {
	var out []string
	for _, e := range r.events {
		out = append(out, e.pod+" "+e.reason)
	}
	return out
}

// countingSink is the next sink: it counts what it is passed.
type countingSink struct{ observed, failed int }

func (c *countingSink) Observe(scrape.PodKey, scrape.Sample) { c.observed++ }
func (c *countingSink) Fail(scrape.PodKey, scrape.Failure)   { c.failed++ }

func TestSinkReportsTransitions(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	next := &countingSink{}
	rec := &fakeRecorder{}
	cfg := DefaultConfig()
	cfg.Clock = clk
	cfg.Pod = func(k scrape.PodKey) runtime.Object {
		if k.Name != "a" {
			return nil
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name, UID: "uid-a"}}
	}
	s := New(next, rec, cfg)
	a, b := scrape.PodKey{Namespace: "ns", Name: "a"}, scrape.PodKey{Namespace: "ns", Name: "b"}
	refused := scrape.Failure{Reason: scrape.ReasonConnection, Err: errors.New("dial tcp 198.18.0.7:9090: connect: connection refused")}
	step := func(d time.Duration) { clk.SetTime(clk.Now().Add(d)) }

	// Healthy pods are not remembered.
	s.Observe(b, scrape.Sample{})
	// Two failures: below the threshold, no Event; a success forgets them.
	s.Fail(a, refused)
	s.Fail(a, refused)
	s.Observe(a, scrape.Sample{})
	if len(rec.events) != 0 || s.Failing() != 0 {
		t.Fatalf("events %v, failing %d after a short failure; want none", rec.reasons(), s.Failing())
	}
	// Three in a row: one Warning with the reason; more failures add nothing.
	for range 5 {
		s.Fail(a, refused)
		step(time.Second)
	}
	if len(rec.events) != 1 || rec.events[0].reason != ReasonFailing || rec.events[0].typ != corev1.EventTypeWarning ||
		!strings.Contains(rec.events[0].note, "3 scrapes in a row failed (connection): dial tcp 198.18.0.7:9090: connect: connection refused") || rec.events[0].uid != "uid-a" {
		t.Fatalf("events %+v, want one ScrapeFailing Warning with the reason on pod a (uid-a)", rec.events)
	}
	// Recovery 5 s after the Event: held back until MinInterval has passed since it.
	s.Observe(a, scrape.Sample{})
	if len(rec.events) != 1 {
		t.Fatalf("events %v: a recovery within MinInterval of the failing Event was written", rec.reasons())
	}
	step(30 * time.Second)
	s.Observe(a, scrape.Sample{})
	if got := rec.reasons(); len(got) != 2 || got[1] != "ns/a "+ReasonRecovered {
		t.Fatalf("events %v, want ScrapeFailing then ScrapeRecovered", got)
	}
	// A pod without an object is referred to by name.
	for range 3 {
		s.Fail(b, scrape.Failure{Reason: scrape.ReasonTimeout})
	}
	if got := rec.events[len(rec.events)-1]; got.pod != "ns/b" || got.reason != ReasonFailing || got.uid != "" {
		t.Errorf("last event %+v, want ScrapeFailing on ns/b", got)
	}
	if next.observed != 4 || next.failed != 10 {
		t.Errorf("next sink got %d observed and %d failed, want every outcome passed on (4, 10)", next.observed, next.failed)
	}
}

func TestSinkForgetsGonePods(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Now())
	cfg := DefaultConfig()
	cfg.Clock = clk
	s := New(&countingSink{}, &fakeRecorder{}, cfg)
	for i := range 100 {
		s.Fail(scrape.PodKey{Namespace: "ns", Name: fmt.Sprint(i)}, scrape.Failure{Reason: scrape.ReasonTimeout})
	}
	clk.SetTime(clk.Now().Add(cfg.ForgetAfter + time.Second))
	live := scrape.PodKey{Namespace: "ns", Name: "live"}
	for range 300 { // enough calls for a sweep
		s.Fail(live, scrape.Failure{Reason: scrape.ReasonTimeout})
	}
	if got := s.Failing(); got != 1 {
		t.Errorf("%d failing pods remembered, want only the one still scraped", got)
	}
}

func TestSinkTruncatesLongNotes(t *testing.T) {
	rec := &fakeRecorder{}
	s := New(&countingSink{}, rec, Config{FailuresBeforeEvent: 1})
	s.Fail(scrape.PodKey{Namespace: "ns", Name: "a"}, scrape.Failure{Reason: scrape.ReasonParse, Err: errors.New(strings.Repeat("x", 5000))})
	if len(rec.events) != 1 || len(rec.events[0].note) != maxNote {
		t.Fatalf("note of %d bytes, want %d", len(rec.events[0].note), maxNote)
	}
}
