package store

import (
	"context"
	"errors"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// recordingObserver counts scrapes by reason.
type recordingObserver struct{ reasons map[scrape.Reason]int }

func (r *recordingObserver) ObserveScrape(_ time.Duration, reason scrape.Reason) { r.reasons[reason]++ }

func sample(at time.Time, values ...float64) scrape.Sample {
	s := scrape.Sample{Time: at}
	for _, v := range values {
		if v < 0 { // -1 marks an absent optional series
			s.Values = append(s.Values, scrape.Value{})
			continue
		}
		s.Values = append(s.Values, scrape.Value{Value: v, Present: true})
	}
	return s
}

func TestStore(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const stale = 10 * time.Second
	a := scrape.PodKey{Namespace: "ns", Name: "a"}
	type step struct {
		advance time.Duration
		apply   func(*Store)
	}
	tests := []struct {
		name  string
		steps []step
		// want is the value of each default metric for pod a, or -1 for none.
		want [2]float64
	}{
		{name: "never scraped", want: [2]float64{-1, -1}},
		{
			name:  "fresh",
			steps: []step{{apply: func(s *Store) { s.Observe(a, sample(t0, 40, 100)) }}},
			want:  [2]float64{40, 0.4},
		},
		{
			name:  "exactly at stale-after is still served",
			steps: []step{{apply: func(s *Store) { s.Observe(a, sample(t0, 40, 100)) }}, {advance: stale}},
			want:  [2]float64{40, 0.4},
		},
		{
			name:  "older than stale-after is not served",
			steps: []step{{apply: func(s *Store) { s.Observe(a, sample(t0, 40, 100)) }}, {advance: stale + time.Millisecond}},
			want:  [2]float64{-1, -1},
		},
		{
			name: "a failed scrape removes the value at once",
			steps: []step{
				{apply: func(s *Store) { s.Observe(a, sample(t0, 40, 100)) }},
				{advance: time.Second, apply: func(s *Store) {
					s.Fail(a, scrape.Failure{Time: t0.Add(time.Second), Reason: scrape.ReasonTimeout, Err: errors.New("slow")})
				}},
			},
			want: [2]float64{-1, -1},
		},
		{
			name: "a success after a failure serves again",
			steps: []step{
				{apply: func(s *Store) { s.Fail(a, scrape.Failure{Time: t0, Reason: scrape.ReasonParse}) }},
				{advance: 5 * time.Second, apply: func(s *Store) { s.Observe(a, sample(t0.Add(5*time.Second), 7, 10)) }},
			},
			want: [2]float64{7, 0.7},
		},
		{
			name:  "zero connections is a value",
			steps: []step{{apply: func(s *Store) { s.Observe(a, sample(t0, 0, 100)) }}},
			want:  [2]float64{0, 0},
		},
		{
			name:  "no divisor: no utilization, connections still served",
			steps: []step{{apply: func(s *Store) { s.Observe(a, sample(t0, 5, -1)) }}},
			want:  [2]float64{5, -1},
		},
		{
			name:  "zero divisor: no utilization",
			steps: []step{{apply: func(s *Store) { s.Observe(a, sample(t0, 5, 0)) }}},
			want:  [2]float64{5, -1},
		},
		{
			name: "deleted pod has no value and is not recreated by a late scrape",
			steps: []step{
				{apply: func(s *Store) { s.Observe(a, sample(t0, 40, 100)); s.Delete(a); s.Observe(a, sample(t0, 41, 100)) }},
			},
			want: [2]float64{-1, -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := testingclock.NewFakePassiveClock(t0)
			obs := &recordingObserver{reasons: map[scrape.Reason]int{}}
			s := New(metricsconfig.DefaultMetrics(), stale, clk, obs)
			s.Add(a)
			for _, st := range tt.steps {
				clk.SetTime(clk.Now().Add(st.advance))
				if st.apply != nil {
					st.apply(s)
				}
			}
			for m := range 2 {
				pts, err := s.Lookup(context.Background(), m, "ns", []string{"a", "unknown"})
				if err != nil {
					t.Fatal(err)
				}
				if pts[1].OK {
					t.Errorf("metric %d: unknown pod has a value %+v", m, pts[1])
				}
				got := -1.0
				if pts[0].OK {
					got = pts[0].Value
				}
				if got != tt.want[m] {
					t.Errorf("metric %d: value %v, want %v (point %+v)", m, got, tt.want[m], pts[0])
				}
			}
		})
	}
}

func TestStoreStats(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := testingclock.NewFakePassiveClock(t0)
	obs := &recordingObserver{reasons: map[scrape.Reason]int{}}
	s := New(metricsconfig.DefaultMetrics(), 10*time.Second, clk, obs)
	key := func(n string) scrape.PodKey { return scrape.PodKey{Namespace: "ns", Name: n} }
	for _, n := range []string{"fresh", "stale", "failed", "pending"} {
		s.Add(key(n))
	}
	s.Observe(key("stale"), sample(t0, 1, 2))
	clk.SetTime(t0.Add(11 * time.Second))
	s.Observe(key("fresh"), sample(clk.Now(), 1, 2))
	s.Fail(key("failed"), scrape.Failure{Time: clk.Now(), Reason: scrape.ReasonHTTPStatus})
	got := s.Stats()
	want := StoreStats{Tracked: 4, Fresh: 1, Stale: 1, Failed: 1, Pending: 1}
	if got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if obs.reasons[""] != 2 || obs.reasons[scrape.ReasonHTTPStatus] != 1 {
		t.Errorf("observed %v", obs.reasons)
	}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
