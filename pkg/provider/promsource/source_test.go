package promsource

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/wsscale/wsscale/pkg/provider"
	"github.com/wsscale/wsscale/pkg/provider/exposition"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// fakePrometheus answers /api/v1/query with canned bodies keyed by query,
// in the JSON of the Prometheus HTTP API, and records the queries.
type fakePrometheus struct {
	mu      sync.Mutex
	answers map[string]string // query -> "data" JSON
	queries []string
	delay   chan struct{} // when set, answers wait for it
}

func (f *fakePrometheus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form.Get("query")
	f.mu.Lock()
	f.queries = append(f.queries, q)
	data, ok := f.answers[q]
	delay := f.delay
	f.mu.Unlock()
	if delay != nil {
		select {
		case <-delay:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"unexpected query %q"}`, q)
		return
	}
	fmt.Fprintf(w, `{"status":"success","data":%s}`, data)
}

// matrix renders a matrix result: each series is pod, unix-seconds time, value.
func matrix(series ...[3]string) string {
	var parts []string
	for _, s := range series {
		parts = append(parts, fmt.Sprintf(`{"metric":{"__name__":"x","namespace":"ns","pod":%q},"values":[[%s,%q]]}`, s[0], s[1], s[2]))
	}
	return `{"resultType":"matrix","result":[` + strings.Join(parts, ",") + `]}`
}

func TestLookup(t *testing.T) {
	now := time.Unix(1_800_000_000, 0).UTC()
	ts := func(ago time.Duration) string { return fmt.Sprintf("%.3f", float64(now.Add(-ago).UnixMilli())/1000) }
	fp := &fakePrometheus{answers: map[string]string{
		`websocket_connections_active{namespace="ns"}[10s]`: matrix(
			[3]string{"a", ts(time.Second), "12"},
			[3]string{"b", ts(3 * time.Second), "0"},
			[3]string{"stale", ts(11 * time.Second), "5"},
			[3]string{"nan", ts(0), "NaN"},
			[3]string{"neg", ts(0), "-1"},
			[3]string{"frac", ts(0), "1.5"},
			[3]string{"dup", ts(0), "1"},
			[3]string{"dup", ts(0), "2"},
			[3]string{"nomax", ts(0), "4"},
		),
		`websocket_connections_max{namespace="ns"}[10s]`: matrix(
			[3]string{"a", ts(2 * time.Second), "100"},
			[3]string{"b", ts(0), "100"},
		),
		`websocket_connections_active{namespace="empty"}[10s]`:  `{"resultType":"matrix","result":[]}`,
		`sessions{region="eu",namespace="ns"}[10s]`:             matrix([3]string{"a", ts(0), "7"}),
		`websocket_connections_active{namespace="vector"}[10s]`: `{"resultType":"vector","result":[]}`,
	}}
	srv := httptest.NewServer(fp)
	defer srv.Close()
	metrics := append(provider.DefaultMetrics(), provider.Metric{
		Name: "sessions", Series: scrape.Series{Name: "sessions", Labels: []exposition.Label{{Name: "region", Value: "eu"}}}, Aggregation: provider.AggregateSum,
	})
	src, err := New(Config{
		URL: srv.URL, Timeout: time.Second, StaleAfter: 10 * time.Second, Metrics: metrics,
		NamespaceLabel: "namespace", PodLabel: "pod", Clock: testingclock.NewFakePassiveClock(now),
	})
	if err != nil {
		t.Fatal(err)
	}
	pods := []string{"a", "b", "stale", "nan", "neg", "frac", "dup", "nomax", "absent"}
	tests := []struct {
		name      string
		metric    int
		namespace string
		want      map[string]float64
		wantTime  map[string]time.Time
		wantErr   string
	}{
		{
			name: "connections", metric: 0, namespace: "ns",
			want:     map[string]float64{"a": 12, "b": 0, "nomax": 4},
			wantTime: map[string]time.Time{"a": now.Add(-time.Second), "b": now.Add(-3 * time.Second)},
		},
		{
			name: "utilization: oldest of the two samples", metric: 1, namespace: "ns",
			want:     map[string]float64{"a": 0.12, "b": 0},
			wantTime: map[string]time.Time{"a": now.Add(-2 * time.Second), "b": now.Add(-3 * time.Second)},
		},
		{name: "labels become matchers", metric: 2, namespace: "ns", want: map[string]float64{"a": 7}},
		{name: "no series", metric: 0, namespace: "empty", want: map[string]float64{}},
		{name: "Prometheus error", metric: 0, namespace: "unknown", wantErr: "400"},
		{name: "wrong result type", metric: 0, namespace: "vector", wantErr: "want a matrix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			points, err := src.Lookup(context.Background(), tt.metric, tt.namespace, pods)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range pods {
				want, ok := tt.want[p]
				if points[i].OK != ok || (ok && points[i].Value != want) {
					t.Errorf("%s: %+v, want %v (present %v)", p, points[i], want, ok)
				}
				if wt, ok := tt.wantTime[p]; ok && !points[i].Time.Equal(wt) {
					t.Errorf("%s: time %v, want %v", p, points[i].Time, wt)
				}
			}
		})
	}
	// One query per namespace and series, never a pod-name regex.
	for _, q := range fp.queries {
		if strings.Contains(q, "=~") || strings.Contains(q, "pod=") {
			t.Errorf("query selects pods by name: %s", q)
		}
	}
}

func TestLookupTimeout(t *testing.T) {
	fp := &fakePrometheus{answers: map[string]string{}, delay: make(chan struct{})}
	srv := httptest.NewServer(fp)
	defer func() { close(fp.delay); srv.Close() }()
	src, err := New(Config{URL: srv.URL, Timeout: 50 * time.Millisecond, StaleAfter: 10 * time.Second,
		Metrics: provider.DefaultMetrics(), NamespaceLabel: "namespace", PodLabel: "pod"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := src.Lookup(context.Background(), 0, "ns", []string{"a"})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("no error from a Prometheus that does not answer")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Lookup not bounded by the timeout")
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"no Prometheus URL", "timeout must be positive", "stale-after", "label names"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}
