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

	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

// TestReadyz serves the checks through the generic API server's /readyz
// handler, as the adapter does, and follows one start: the caches sync, then
// the first scrape round ends.
func TestReadyz(t *testing.T) {
	var synced atomic.Bool
	values := store.New(metricsconfig.DefaultMetrics(), 10*time.Second, testingclock.NewFakeClock(t0), nil)
	m := mux.NewPathRecorderMux("test")
	healthz.InstallReadyzHandler(m, ReadinessChecks(synced.Load, values)...)
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
		{name: "synced, scraping began, pod not scraped", do: func() { synced.Store(true); values.Add(a); values.BeginFirstRound() },
			wantCode: http.StatusInternalServerError, want: []string{"[+]informer-sync ok", "[-]first-scrape-round failed"}},
		{name: "first round done", do: func() { values.Observe(a, sample(t0, 1, 2)) },
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
