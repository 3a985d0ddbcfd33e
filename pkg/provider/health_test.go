package provider

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/apiserver/pkg/server/mux"
	testingclock "k8s.io/utils/clock/testing"

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
			s := NewStore(DefaultMetrics(), 10*time.Second, testingclock.NewFakeClock(t0), nil)
			tt.steps(s)
			err := s.FirstRoundCheck().Check(nil)
			if got := err == nil; got != tt.want {
				t.Errorf("first round done = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

// TestReadyz serves the checks through the generic API server's /readyz
// handler, as the adapter does, and follows one start: the caches sync, then
// the first scrape round ends.
func TestReadyz(t *testing.T) {
	var synced atomic.Bool
	store := NewStore(DefaultMetrics(), 10*time.Second, testingclock.NewFakeClock(t0), nil)
	m := mux.NewPathRecorderMux("test")
	healthz.InstallReadyzHandler(m, ReadinessChecks(synced.Load, store)...)
	srv := httptest.NewServer(m)
	defer srv.Close()

	get := func() (int, string) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + "/readyz?verbose")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	a := scrape.PodKey{Namespace: "ns", Name: "a"}
	steps := []struct {
		name     string
		do       func()
		wantCode int
		want     []string
	}{
		{name: "caches not synced", do: func() {}, wantCode: http.StatusInternalServerError,
			want: []string{"[-]informer-sync failed", "[-]first-scrape-round failed"}},
		{name: "synced, scraping began, pod not scraped", do: func() { synced.Store(true); store.Add(a); store.BeginFirstRound() },
			wantCode: http.StatusInternalServerError, want: []string{"[+]informer-sync ok", "[-]first-scrape-round failed"}},
		{name: "first round done", do: func() { store.Observe(a, sample(t0, 1, 2)) },
			wantCode: http.StatusOK, want: []string{"[+]informer-sync ok", "[+]first-scrape-round ok"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do()
			code, body := get()
			if code != st.wantCode {
				t.Errorf("code %d, want %d:\n%s", code, st.wantCode, body)
			}
			for _, w := range st.want {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %q:\n%s", w, body)
				}
			}
		})
	}
}
