package provider

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	podsel "github.com/wsscale/wsscale/pkg/provider/pods"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/wsscale/wsscale/pkg/provider/internal/podtest"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

// signallingSink passes scrapes to the value store and signals each one.
type signallingSink struct {
	*store.Store
	done chan scrape.PodKey
}

func (s *signallingSink) Observe(k scrape.PodKey, v scrape.Sample) {
	s.Store.Observe(k, v)
	s.done <- k
}

func (s *signallingSink) Fail(k scrape.PodKey, f scrape.Failure) {
	s.Store.Fail(k, f)
	s.done <- k
}

// TestScrapedPodsThroughTheAPI runs pods as httptest servers, the real
// scraper on a fake clock, the value store and the Provider: good pods are served
// with their values, bad ones are absent (never 0), and a change is visible
// after the next scrape.
func TestScrapedPodsThroughTheAPI(t *testing.T) {
	var mu sync.Mutex
	active := map[string]string{}
	bodies := map[string]func(w http.ResponseWriter){
		"good-1": nil, "good-2": nil,
		"http-500": func(w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) },
		"html":     func(w http.ResponseWriter) { fmt.Fprint(w, "<html><body>hello</body></html>") },
		"nan":      func(w http.ResponseWriter) { fmt.Fprint(w, "websocket_connections_active NaN\n") },
		"negative": func(w http.ResponseWriter) { fmt.Fprint(w, "websocket_connections_active -3\n") },
		"fraction": func(w http.ResponseWriter) { fmt.Fprint(w, "websocket_connections_active 2.5\n") },
		"duplicate": func(w http.ResponseWriter) {
			fmt.Fprint(w, "websocket_connections_active{a=\"1\"} 1\nwebsocket_connections_active{a=\"2\"} 2\n")
		},
		"missing": func(w http.ResponseWriter) { fmt.Fprint(w, "other_metric 1\n") },
	}
	var pods []*corev1.Pod
	for name, bad := range bodies {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if bad != nil {
				bad(w)
				return
			}
			mu.Lock()
			v := active[name]
			mu.Unlock()
			fmt.Fprintf(w, "# TYPE websocket_connections_active gauge\nwebsocket_connections_active %s\nwebsocket_connections_max 100\n", v)
		}))
		t.Cleanup(srv.Close)
		host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		pods = append(pods, podtest.NewPod("ns", name, podtest.WithIP(host), podtest.WithAnnotations(podsel.ScrapeAnnotation, "true", podsel.PortAnnotation, port)))
	}
	// One pod with nothing listening on its port. Not a port freed by this test: tests running in
	// parallel may bind it again, and a scrape of a foreign server would not end (the scrape
	// timeout runs on the fake clock). Nothing listens on port 1.
	pods = append(pods, podtest.NewPod("ns", "wrong-port", podtest.WithIP("127.0.0.1"), podtest.WithAnnotations(podsel.ScrapeAnnotation, "true", podsel.PortAnnotation, "1")))
	active["good-1"], active["good-2"] = "3", "0"

	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := testingclock.NewFakeClock(start)
	const interval = 5 * time.Second
	metrics := metricsconfig.DefaultMetrics()
	values := store.New(metrics, 2*interval, clk, nil)
	sink := &signallingSink{Store: values, done: make(chan scrape.PodKey, 100)}
	cfg := scrape.NewConfig(metricsconfig.ScrapeSeries(metrics)...)
	cfg.Interval, cfg.Timeout, cfg.Clock, cfg.Concurrency = interval, 2*time.Second, clk, 4
	scraper, err := scrape.New(cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	sel := &podsel.Selection{RequireAnnotation: true, PortName: podsel.DefaultMetricsPortName}
	tracker := podsel.NewPodTracker(sel, scraper, values)
	for _, p := range pods {
		tracker.OnAdd(p, true)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { _ = scraper.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()

	prov, err := New(Config{Metrics: metrics, Pods: podIndexer(t, pods...), ReplicaSets: rsIndexer(t), Selection: sel, Source: values})
	if err != nil {
		t.Fatal(err)
	}
	// scrapeAll advances the clock by one interval and waits for one scrape
	// of every pod.
	scrapeAll := func() {
		t.Helper()
		clk.Step(interval)
		seen := map[scrape.PodKey]bool{}
		deadline := time.After(20 * time.Second)
		for len(seen) < len(pods) {
			select {
			case k := <-sink.done:
				seen[k] = true
			case <-deadline:
				var missing []string
				for _, p := range pods {
					if !seen[scrape.PodKey{Namespace: p.Namespace, Name: p.Name}] {
						missing = append(missing, p.Name)
					}
				}
				t.Fatalf("only %d of %d pods scraped; missing %v", len(seen), len(pods), missing)
			}
		}
	}
	get := func() map[string]string {
		t.Helper()
		list, err := prov.GetMetricBySelector(context.Background(), "ns", labels.Everything(), podInfo(metricsconfig.ConnectionsMetric), labels.Everything())
		if err != nil {
			t.Fatal(err)
		}
		return podNames(list)
	}

	scrapeAll()
	if got := get(); len(got) != 2 || got["ns/good-1"] != "3" || got["ns/good-2"] != "0" {
		t.Fatalf("after first scrape: %v, want only good-1=3 and good-2=0", got)
	}
	// A body without a valid count is a successful scrape without a value
	// for the metric; an unreachable pod, an error page or garbage fail the
	// scrape as a whole.
	if st := values.Stats(); st.Fresh != 7 || st.Failed != 3 {
		t.Errorf("stats %+v, want 7 fresh scrapes and 3 failed", st)
	}
	if st := values.MetricStats()[0]; st != (store.MetricStats{Metric: metricsconfig.ConnectionsMetric, Fresh: 2, Failed: 3, Missing: 1, Invalid: 4}) {
		t.Errorf("stats of %s: %+v", metricsconfig.ConnectionsMetric, st)
	}

	mu.Lock()
	active["good-1"] = "42"
	mu.Unlock()
	scrapeAll()
	if got := get(); got["ns/good-1"] != "42" {
		t.Fatalf("after change: %v, want good-1=42", got)
	}

	// Without scrapes the values go stale and are no longer served.
	cancel()
	<-runDone
	clk.Step(2*interval + time.Second)
	if got := get(); len(got) != 0 {
		t.Fatalf("stale values served: %v", got)
	}
}

// TestMissingSeriesBlanksOnlyItsMetric serves the README's two metrics from
// pods of which only one exposes the second metric's series: every pod keeps
// websocket_connections, and sessions_per_capacity is missing, or invalid,
// for the others alone.
func TestMissingSeriesBlanksOnlyItsMetric(t *testing.T) {
	metrics, err := metricsconfig.ParseMetricsConfig("metrics.yaml", []byte(`metrics:
- name: websocket_connections
  series: websocket_connections_active
  rule: count
- name: sessions_per_capacity
  series: app_sessions
  labels: {region: eu}
  divideBy: app_capacity
`))
	if err != nil {
		t.Fatal(err)
	}
	bodies := map[string]string{
		"both":         "websocket_connections_active 7\napp_sessions{region=\"eu\"} 30\napp_capacity 60\n",
		"no-sessions":  "websocket_connections_active 5\n",
		"no-capacity":  "websocket_connections_active 4\napp_sessions{region=\"eu\"} 30\n",
		"nan-sessions": "websocket_connections_active 3\napp_sessions{region=\"eu\"} NaN\napp_capacity 60\n",
		"two-sessions": "websocket_connections_active 2\napp_sessions{region=\"eu\",a=\"1\"} 1\napp_sessions{region=\"eu\",a=\"2\"} 1\napp_capacity 60\n",
		"no-conns":     "app_sessions{region=\"eu\"} 6\napp_capacity 60\n",
	}
	var pods []*corev1.Pod
	for name, body := range bodies {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) }))
		t.Cleanup(srv.Close)
		host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		pods = append(pods, podtest.NewPod("ns", name, podtest.WithIP(host), podtest.WithAnnotations(podsel.ScrapeAnnotation, "true", podsel.PortAnnotation, port)))
	}
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	const interval = 5 * time.Second
	values := store.New(metrics, 2*interval, clk, nil)
	sink := &signallingSink{Store: values, done: make(chan scrape.PodKey, 100)}
	cfg := scrape.NewConfig(metricsconfig.ScrapeSeries(metrics)...)
	cfg.Interval, cfg.Timeout, cfg.Clock, cfg.Concurrency = interval, 2*time.Second, clk, 4
	scraper, err := scrape.New(cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	sel := &podsel.Selection{RequireAnnotation: true, PortName: podsel.DefaultMetricsPortName}
	tracker := podsel.NewPodTracker(sel, scraper, values)
	for _, p := range pods {
		tracker.OnAdd(p, true)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { _ = scraper.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()
	clk.Step(interval)
	deadline := time.After(20 * time.Second)
	for range pods {
		select {
		case <-sink.done:
		case <-deadline:
			t.Fatal("not every pod was scraped")
		}
	}

	prov, err := New(Config{Metrics: metrics, Pods: podIndexer(t, pods...), ReplicaSets: rsIndexer(t), Selection: sel, Source: values})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		metric string
		want   map[string]string
	}{
		{
			name: "connections of every pod that exposes them", metric: metricsconfig.ConnectionsMetric,
			want: map[string]string{"ns/both": "7", "ns/no-sessions": "5", "ns/no-capacity": "4", "ns/nan-sessions": "3", "ns/two-sessions": "2"},
		},
		{
			name: "sessions per capacity only where both series are valid", metric: "sessions_per_capacity",
			want: map[string]string{"ns/both": "500m", "ns/no-conns": "100m"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := prov.GetMetricBySelector(context.Background(), "ns", labels.Everything(), podInfo(tt.metric), labels.Everything())
			if err != nil {
				t.Fatal(err)
			}
			if got := podNames(list); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	wantStats := []store.MetricStats{
		{Metric: metricsconfig.ConnectionsMetric, Fresh: 5, Missing: 1},
		{Metric: "sessions_per_capacity", Fresh: 2, Missing: 2, Invalid: 2},
	}
	if got := values.MetricStats(); !reflect.DeepEqual(got, wantStats) {
		t.Errorf("MetricStats = %+v, want %+v", got, wantStats)
	}
	if st := values.Stats(); st.Fresh != len(pods) || st.Failed != 0 {
		t.Errorf("Stats = %+v, want every scrape successful", st)
	}
}
