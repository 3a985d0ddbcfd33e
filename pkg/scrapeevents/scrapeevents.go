// Package scrapeevents tells users when the adapter cannot scrape a pod, where their kubectl
// credentials can read it: a Kubernetes Event on the pod when its scrapes start failing (with
// the reason) and another when they recover. The adapter's own metrics sit behind its
// authentication; Events on the pod reach `kubectl describe pod` and `kubectl wsscale doctor`.
//
// Sink wraps the scraper's sink and only watches the outcomes: it changes no value. Healthy pods
// cost nothing; only failing pods are remembered, and Events of one pod are at least
// MinInterval apart.
package scrapeevents

import (
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// Event reasons on the pod.
const (
	// ReasonFailing: the pod's scrapes fail; the note says why.
	ReasonFailing = "ScrapeFailing"
	// ReasonRecovered: a scrape of the pod succeeded again.
	ReasonRecovered = "ScrapeRecovered"
	// action is the Event's action (events.k8s.io).
	action = "Scrape"
	// maxNote is the API's limit of an Event's note.
	maxNote = 1024
)

// Recorder writes Events; k8s.io/client-go/tools/events.EventRecorder is one.
type Recorder interface {
	Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Config tunes a Sink.
type Config struct {
	// FailuresBeforeEvent is how many scrapes in a row must fail before the pod gets a
	// ScrapeFailing Event, so that a pod that is still starting does not.
	FailuresBeforeEvent int
	// MinInterval is the least time between two Events of one pod.
	MinInterval time.Duration
	// ForgetAfter drops a failing pod that has not been scraped for this long (it is gone).
	ForgetAfter time.Duration
	// Pod returns the pod object of a key for the Event's reference (with its UID); nil, or
	// a nil result, refers to the pod by namespace and name only.
	Pod func(scrape.PodKey) runtime.Object
	// Clock is the time source; nil means the real clock.
	Clock clock.PassiveClock
}

// DefaultConfig returns the defaults: an Event after 3 failures in a row, at most one per pod
// per 30 s.
func DefaultConfig() Config {
	return Config{FailuresBeforeEvent: 3, MinInterval: 30 * time.Second, ForgetAfter: 10 * time.Minute}
}

// Sink passes every outcome to the next sink and records failing and recovered transitions.
type Sink struct {
	next scrape.Sink
	rec  Recorder
	cfg  Config

	mu    sync.Mutex
	pods  map[scrape.PodKey]*podState
	calls int
}

// podState is what is remembered of a failing pod.
type podState struct {
	failures  int
	reported  bool // a ScrapeFailing Event is the pod's last one
	lastEvent time.Time
	lastSeen  time.Time
}

var _ scrape.Sink = (*Sink)(nil)

// New returns a Sink in front of next.
func New(next scrape.Sink, rec Recorder, cfg Config) *Sink {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.FailuresBeforeEvent < 1 {
		cfg.FailuresBeforeEvent = 1
	}
	return &Sink{next: next, rec: rec, cfg: cfg, pods: map[scrape.PodKey]*podState{}}
}

// event is an Event to write once the lock is released.
type event struct {
	key         scrape.PodKey
	typ, reason string
	note        string
}

// Observe passes a successful scrape on; a pod reported failing gets a ScrapeRecovered Event.
func (s *Sink) Observe(key scrape.PodKey, sample scrape.Sample) {
	s.next.Observe(key, sample)
	s.mu.Lock()
	st := s.pods[key]
	if st == nil {
		s.mu.Unlock()
		return
	}
	now := s.cfg.Clock.Now()
	st.failures, st.lastSeen = 0, now
	var ev *event
	switch {
	case !st.reported:
		delete(s.pods, key)
	case now.Sub(st.lastEvent) >= s.cfg.MinInterval:
		ev = &event{key, corev1.EventTypeNormal, ReasonRecovered, "scrapes succeed again"}
		delete(s.pods, key)
	}
	// Otherwise the recovery is reported by a later successful scrape, once MinInterval passed.
	s.mu.Unlock()
	s.emit(ev)
}

// Fail passes a failed scrape on; after FailuresBeforeEvent in a row the pod gets a
// ScrapeFailing Event with the reason.
func (s *Sink) Fail(key scrape.PodKey, f scrape.Failure) {
	s.next.Fail(key, f)
	s.mu.Lock()
	now := s.cfg.Clock.Now()
	s.sweepLocked(now)
	st := s.pods[key]
	if st == nil {
		st = &podState{}
		s.pods[key] = st
	}
	st.failures++
	st.lastSeen = now
	var ev *event
	if !st.reported && st.failures >= s.cfg.FailuresBeforeEvent && (st.lastEvent.IsZero() || now.Sub(st.lastEvent) >= s.cfg.MinInterval) {
		note := fmt.Sprintf("%d scrapes in a row failed (%s)", st.failures, f.Reason)
		if f.Err != nil {
			note += ": " + f.Err.Error()
		}
		ev = &event{key, corev1.EventTypeWarning, ReasonFailing, note}
		st.reported, st.lastEvent = true, now
	}
	s.mu.Unlock()
	s.emit(ev)
}

// sweepLocked forgets, now and then, failing pods not scraped for ForgetAfter.
func (s *Sink) sweepLocked(now time.Time) {
	s.calls++
	if s.cfg.ForgetAfter <= 0 || s.calls%256 != 0 {
		return
	}
	for k, st := range s.pods {
		if now.Sub(st.lastSeen) > s.cfg.ForgetAfter {
			delete(s.pods, k)
		}
	}
}

// Failing returns how many pods are remembered as failing.
func (s *Sink) Failing() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pods)
}

func (s *Sink) emit(ev *event) {
	if ev == nil {
		return
	}
	var obj runtime.Object
	if s.cfg.Pod != nil {
		obj = s.cfg.Pod(ev.key)
	}
	if obj == nil {
		obj = &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ev.key.Namespace, Name: ev.key.Name},
		}
	}
	note := ev.note
	if len(note) > maxNote {
		note = note[:maxNote-3] + "..."
	}
	s.rec.Eventf(obj, nil, ev.typ, ev.reason, action, "%s", note)
}
