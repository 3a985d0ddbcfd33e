package store

import (
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

func TestFirstRound(t *testing.T) {
	a := scrape.PodKey{Namespace: "ns", Name: "a"}
	b := scrape.PodKey{Namespace: "ns", Name: "b"}
	late := scrape.PodKey{Namespace: "ns", Name: "late"}
	tests := []struct {
		name  string
		steps func(*Store)
		want  bool
	}{
		{name: "before scraping begins", steps: func(s *Store) { s.Add(a) }},
		{name: "no pods when scraping begins", steps: func(s *Store) { s.BeginFirstRound() }, want: true},
		{name: "a pod not scraped yet", steps: func(s *Store) { s.Add(a); s.BeginFirstRound() }},
		{
			name:  "one of two pods scraped",
			steps: func(s *Store) { s.Add(a); s.Add(b); s.BeginFirstRound(); s.Observe(a, sample(t0, 1, 2)) },
		},
		{
			name: "every pod scraped",
			steps: func(s *Store) {
				s.Add(a)
				s.Add(b)
				s.BeginFirstRound()
				s.Observe(a, sample(t0, 1, 2))
				s.Observe(b, sample(t0, 1, 2))
			},
			want: true,
		},
		{
			name: "a failed scrape counts as done: the pod has been looked at",
			steps: func(s *Store) {
				s.Add(a)
				s.BeginFirstRound()
				s.Fail(a, scrape.Failure{Time: t0, Reason: scrape.ReasonTimeout})
			},
			want: true,
		},
		{
			name:  "a pod deleted before its scrape",
			steps: func(s *Store) { s.Add(a); s.BeginFirstRound(); s.Delete(a) },
			want:  true,
		},
		{
			name:  "a scrape before scraping began is not the round",
			steps: func(s *Store) { s.Add(a); s.Observe(a, sample(t0, 1, 2)); s.BeginFirstRound() },
		},
		{
			name:  "a pod added after scraping began does not hold readiness",
			steps: func(s *Store) { s.Add(a); s.BeginFirstRound(); s.Add(late); s.Observe(a, sample(t0, 1, 2)) },
			want:  true,
		},
		{
			name: "once done, stays done",
			steps: func(s *Store) {
				s.BeginFirstRound()
				s.Add(late)
				s.BeginFirstRound()
			},
			want: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(metricsconfig.DefaultMetrics(), 10*time.Second, testingclock.NewFakeClock(t0), nil)
			tt.steps(s)
			err := s.FirstRoundCheck().Check(nil)
			if got := err == nil; got != tt.want {
				t.Errorf("first round done = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}
