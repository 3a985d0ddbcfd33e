package promsource

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/wsscale/wsscale/pkg/provider/exposition"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
)

// fakeSeries is one series of the fake Prometheus: its labels (with
// __name__) and samples, oldest first.
type fakeSeries struct {
	labels  map[string]string
	samples []fakeSample
}

type fakeSample struct {
	t time.Time
	v string
}

// staleMarker is the value of a fake sample that stands for Prometheus's
// staleness marker: written when a target disappears or a scrape fails, it
// ends the series.
const staleMarker = "stale"

// fakePrometheus is a tiny TSDB behind /api/v1/query: it parses each query
// (parsePromQL), selects the series whose labels satisfy every matcher, and
// answers their samples within the range, in the JSON of the Prometheus
// HTTP API. So the tests check what a query means, not how it is spelled.
// It records the parsed queries.
type fakePrometheus struct {
	series []fakeSeries
	now    time.Time

	mu      sync.Mutex
	queries []parsedSelector
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
	f.mu.Lock()
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
	badData := func(err error) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":%q}`, err.Error())
	}
	q, err := parsePromQL(r.Form.Get("query"))
	if err != nil {
		badData(err)
		return
	}
	f.mu.Lock()
	f.queries = append(f.queries, q)
	f.mu.Unlock()
	if q.window == 0 {
		f.instant(w, q)
		return
	}
	type stream struct {
		Metric map[string]string `json:"metric"`
		Values [][2]any          `json:"values"`
	}
	result := []stream{}
	for _, s := range f.series {
		if s.labels["__name__"] != q.metric || !matches(s.labels, q.matchers) {
			continue
		}
		st := stream{Metric: s.labels}
		for _, smp := range s.samples {
			// A range selector never returns staleness markers.
			if smp.v != staleMarker && smp.t.After(f.now.Add(-q.window)) && !smp.t.After(f.now) {
				st.Values = append(st.Values, [2]any{float64(smp.t.UnixMilli()) / 1000, smp.v})
			}
		}
		if len(st.Values) > 0 {
			result = append(result, st)
		}
	}
	data, _ := json.Marshal(map[string]any{"resultType": "matrix", "result": result})
	fmt.Fprintf(w, `{"status":"success","data":%s}`, data)
}

// lookbackDelta is how far back Prometheus's instant selector looks for a
// series' latest sample (its default).
const lookbackDelta = 5 * time.Minute

// instant answers the union of values and sample times as Prometheus
// evaluates it: each matching series' latest sample within the lookback,
// unless that is a staleness marker; the value under the series' labels and
// its time, in seconds, under the labels without the name plus the time label.
func (f *fakePrometheus) instant(w http.ResponseWriter, q parsedSelector) {
	type sample struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	result := []sample{}
	at := float64(f.now.UnixMilli()) / 1000
	for _, s := range f.series {
		if s.labels["__name__"] != q.metric || !matches(s.labels, q.matchers) {
			continue
		}
		var latest *fakeSample
		for i, smp := range s.samples {
			if smp.t.After(f.now.Add(-lookbackDelta)) && !smp.t.After(f.now) {
				latest = &s.samples[i]
			}
		}
		if latest == nil || latest.v == staleMarker {
			continue
		}
		result = append(result, sample{Metric: s.labels, Value: [2]any{at, latest.v}})
		timeLabels := map[string]string{q.timeLabel: "true"}
		for k, v := range s.labels {
			if k != "__name__" {
				timeLabels[k] = v
			}
		}
		result = append(result, sample{Metric: timeLabels, Value: [2]any{at, strconv.FormatFloat(float64(latest.t.UnixMilli())/1000, 'f', -1, 64)}})
	}
	data, _ := json.Marshal(map[string]any{"resultType": "vector", "result": result})
	fmt.Fprintf(w, `{"status":"success","data":%s}`, data)
}

// matches applies equality matchers; the source must send no other kind.
func matches(labels map[string]string, ms []parsedMatcher) bool {
	for _, m := range ms {
		if m.op != "=" || labels[m.label] != m.value {
			return false
		}
	}
	return true
}

func (f *fakePrometheus) parsed() []parsedSelector {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]parsedSelector(nil), f.queries...)
}

// series returns a series with one sample per (age, value) pair.
func series(now time.Time, name, namespace, pod string, extra map[string]string, samples ...any) fakeSeries {
	l := map[string]string{"__name__": name, "namespace": namespace, "pod": pod, "job": "kubernetes-pods"}
	for k, v := range extra {
		l[k] = v
	}
	s := fakeSeries{labels: l}
	for i := 0; i+1 < len(samples); i += 2 {
		s.samples = append(s.samples, fakeSample{t: now.Add(-samples[i].(time.Duration)), v: samples[i+1].(string)})
	}
	return s
}

var sessionsMetric = metricsconfig.Metric{
	Name:        "sessions",
	Series:      metricsconfig.Series{Name: "sessions", Labels: []exposition.Label{{Name: "region", Value: "eu"}}},
	Aggregation: metricsconfig.AggregateSum,
}

func TestLookup(t *testing.T) {
	now := time.Unix(1_800_000_000, 0).UTC()
	const sec = time.Second
	active, max := metricsconfig.ActiveSeries, metricsconfig.MaxSeries
	fp := &fakePrometheus{now: now, series: []fakeSeries{
		series(now, active, "ns", "a", nil, 31*sec, "10", sec, "12"),
		series(now, active, "ns", "b", nil, 3*sec, "0"),
		// Prometheus scrapes every 30 s: a 45 s old sample is current.
		series(now, active, "ns", "slow-scrape", nil, 45*sec, "9"),
		series(now, active, "ns", "stale", nil, 2*time.Minute+sec, "5"),
		series(now, active, "ns", "nan", nil, time.Duration(0), "NaN"),
		series(now, active, "ns", "neg", nil, time.Duration(0), "-1"),
		series(now, active, "ns", "frac", nil, time.Duration(0), "1.5"),
		series(now, active, "ns", "dup", map[string]string{"instance": "1"}, time.Duration(0), "1"),
		series(now, active, "ns", "dup", map[string]string{"instance": "2"}, time.Duration(0), "2"),
		series(now, active, "ns", "nomax", nil, time.Duration(0), "4"),
		// Prometheus stopped scraping the pod (its target went, or the scrape failed): the
		// staleness marker after the last sample ends the series.
		series(now, active, "ns", "ended", nil, 20*sec, "6", 5*sec, staleMarker),
		series(now, active, "other", "a", nil, time.Duration(0), "77"), // same pod name, another namespace
		series(now, max, "ns", "a", nil, 2*sec, "100"),
		series(now, max, "ns", "b", nil, time.Duration(0), "100"),
		series(now, "sessions", "ns", "a", map[string]string{"region": "eu"}, time.Duration(0), "7"),
		series(now, "sessions", "ns", "b", map[string]string{"region": "us"}, time.Duration(0), "8"),
		series(now, "sessions", "ns", "nomax", nil, time.Duration(0), "9"),
	}}
	srv := httptest.NewServer(fp)
	defer srv.Close()
	metrics := append(metricsconfig.DefaultMetrics(), sessionsMetric)
	src, err := New(Config{
		URL: srv.URL, Timeout: time.Second, Metrics: metrics,
		NamespaceLabel: "namespace", PodLabel: "pod", Clock: testingclock.NewFakePassiveClock(now),
	})
	if err != nil {
		t.Fatal(err)
	}
	if src.StaleAfter() != DefaultStaleAfter {
		t.Errorf("default stale-after %v, want %v", src.StaleAfter(), DefaultStaleAfter)
	}
	pods := []string{"a", "b", "slow-scrape", "stale", "nan", "neg", "frac", "dup", "nomax", "ended", "absent"}
	tests := []struct {
		name      string
		metric    int
		namespace string
		want      map[string]float64
		wantTime  map[string]time.Time
		// wantQueries are the meanings of the queries sent.
		wantQueries []parsedSelector
	}{
		{
			name: "connections: latest fresh valid sample", metric: 0, namespace: "ns",
			want:     map[string]float64{"a": 12, "b": 0, "slow-scrape": 9, "nomax": 4},
			wantTime: map[string]time.Time{"a": now.Add(-sec), "b": now.Add(-3 * sec), "slow-scrape": now.Add(-45 * sec)},
			wantQueries: []parsedSelector{{metric: active, timeLabel: SampleTimeLabel,
				matchers: []parsedMatcher{{label: "namespace", op: "=", value: "ns"}}}},
		},
		{
			name: "the namespace is a matcher", metric: 0, namespace: "other",
			want: map[string]float64{"a": 77},
			wantQueries: []parsedSelector{{metric: active, timeLabel: SampleTimeLabel,
				matchers: []parsedMatcher{{label: "namespace", op: "=", value: "other"}}}},
		},
		{
			name: "utilization: oldest of the two samples", metric: 1, namespace: "ns",
			want:     map[string]float64{"a": 0.12, "b": 0},
			wantTime: map[string]time.Time{"a": now.Add(-2 * sec), "b": now.Add(-3 * sec)},
			wantQueries: []parsedSelector{
				{metric: active, timeLabel: SampleTimeLabel, matchers: []parsedMatcher{{label: "namespace", op: "=", value: "ns"}}},
				{metric: max, timeLabel: SampleTimeLabel, matchers: []parsedMatcher{{label: "namespace", op: "=", value: "ns"}}},
			},
		},
		{
			name: "series labels are equality matchers", metric: 2, namespace: "ns",
			want: map[string]float64{"a": 7},
			wantQueries: []parsedSelector{{metric: "sessions", timeLabel: SampleTimeLabel, matchers: []parsedMatcher{
				{label: "namespace", op: "=", value: "ns"}, {label: "region", op: "=", value: "eu"},
			}}},
		},
		{
			name: "no series", metric: 0, namespace: "empty", want: map[string]float64{},
			wantQueries: []parsedSelector{{metric: active, timeLabel: SampleTimeLabel,
				matchers: []parsedMatcher{{label: "namespace", op: "=", value: "empty"}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fp.parsed())
			points, err := src.Lookup(context.Background(), tt.metric, tt.namespace, pods)
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
			got := fp.parsed()[before:]
			for i := range got {
				sort.Slice(got[i].matchers, func(a, b int) bool { return got[i].matchers[a].label < got[i].matchers[b].label })
			}
			if !reflect.DeepEqual(got, tt.wantQueries) {
				t.Errorf("queries\n%+v\nwant\n%+v", got, tt.wantQueries)
			}
		})
	}
}

func TestLookupErrors(t *testing.T) {
	now := time.Unix(1_800_000_000, 0).UTC()
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
	}{
		{
			name: "Prometheus error",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"status":"error","errorType":"bad_data","error":"parse error"}`)
			},
			wantErr: "bad_data",
		},
		{
			name: "wrong result type",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"status":"success","data":{"resultType":"matrix","result":[]}}`)
			},
			wantErr: "want a vector",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			src, err := New(Config{URL: srv.URL, Timeout: time.Second, Metrics: metricsconfig.DefaultMetrics(),
				NamespaceLabel: "namespace", PodLabel: "pod", Clock: testingclock.NewFakePassiveClock(now)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = src.Lookup(context.Background(), 0, "ns", []string{"a"})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestSelectorString(t *testing.T) {
	tests := []struct {
		name string
		sel  Selector
		want parsedSelector
	}{
		{
			name: "plain",
			sel:  Selector{Metric: "m", Matchers: []Matcher{{Label: "namespace", Value: "ns"}}},
			want: parsedSelector{metric: "m", timeLabel: SampleTimeLabel, matchers: []parsedMatcher{{label: "namespace", op: "=", value: "ns"}}},
		},
		{
			name: "values are quoted, never patterns",
			sel: Selector{Metric: "m", Matchers: []Matcher{
				{Label: "a", Value: `x".*|"y`}, {Label: "b", Value: "new\nline\\"}, {Label: "c", Value: "é"},
			}},
			want: parsedSelector{metric: "m", timeLabel: SampleTimeLabel, matchers: []parsedMatcher{
				{label: "a", op: "=", value: `x".*|"y`}, {label: "b", op: "=", value: "new\nline\\"}, {label: "c", op: "=", value: "é"},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePromQL(tt.sel.String())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s parses as %+v, want %+v", tt.sel, got, tt.want)
			}
		})
	}
}

func TestLookupTimeout(t *testing.T) {
	fp := &fakePrometheus{delay: make(chan struct{})}
	srv := httptest.NewServer(fp)
	defer func() { close(fp.delay); srv.Close() }()
	src, err := New(Config{URL: srv.URL, Timeout: 50 * time.Millisecond, StaleAfter: 10 * time.Second,
		Metrics: metricsconfig.DefaultMetrics(), NamespaceLabel: "namespace", PodLabel: "pod"})
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
	_, err := New(Config{StaleAfter: -time.Second, NamespaceLabel: "name-space"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"no Prometheus URL", "timeout must be positive", "stale-after", "label names", `"name-space" is not a label name`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}
