package provider

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/wsscale/wsscale/pkg/provider/exposition"
	"github.com/wsscale/wsscale/pkg/provider/internal/podtest"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	podsel "github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func podInfo(metric string) cmprovider.CustomMetricInfo {
	return cmprovider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: metric}
}

func deploymentInfo(metric string) cmprovider.CustomMetricInfo {
	return cmprovider.CustomMetricInfo{GroupResource: deploymentsResource, Namespaced: true, Metric: metric}
}

// testProvider serves:
//
//	ns/echo-1, echo-2, echo-3: Deployment echo (two ReplicaSets, mid-rollout)
//	ns/other-1: Deployment other, no value
//	ns/pending, ns/podtest.Terminating, ns/unannotated, ns/bare (no owner)
//	ns2/echo-1: same name, other namespace
func testProvider(t *testing.T) (*Provider, *fakeSource) {
	t.Helper()
	lister := podIndexer(t,
		podtest.NewPod("ns", "echo-1", podtest.OwnedBy("ReplicaSet", "echo-aaa"), podtest.WithLabels("app", "echo", "tier", "ws")),
		podtest.NewPod("ns", "echo-2", podtest.OwnedBy("ReplicaSet", "echo-aaa"), podtest.WithLabels("app", "echo", "tier", "ws")),
		podtest.NewPod("ns", "echo-3", podtest.OwnedBy("ReplicaSet", "echo-bbb"), podtest.WithLabels("app", "echo", "tier", "edge")),
		podtest.NewPod("ns", "other-1", podtest.OwnedBy("ReplicaSet", "other-ccc"), podtest.WithLabels("app", "other")),
		podtest.NewPod("ns", "pending", podtest.OwnedBy("ReplicaSet", "echo-aaa"), podtest.WithPhase("Pending"), podtest.WithIP("")),
		podtest.NewPod("ns", "podtest.Terminating", podtest.OwnedBy("ReplicaSet", "echo-aaa"), podtest.Terminating()),
		podtest.NewPod("ns", "unannotated", podtest.OwnedBy("ReplicaSet", "echo-aaa"), podtest.WithAnnotations()),
		podtest.NewPod("ns", "bare", podtest.WithLabels("app", "bare")),
		podtest.NewPod("ns2", "echo-1", podtest.OwnedBy("ReplicaSet", "echo-aaa")),
	)
	rs := rsIndexer(t,
		podtest.NewReplicaSet("ns", "echo-aaa", "echo"),
		podtest.NewReplicaSet("ns", "echo-bbb", "echo"),
		podtest.NewReplicaSet("ns", "other-ccc", "other"),
		podtest.NewReplicaSet("ns2", "echo-aaa", "echo"),
	)
	pt := func(v float64, age time.Duration) store.Point {
		return store.Point{Value: v, Time: t0.Add(-age), OK: true}
	}
	src := &fakeSource{points: map[int]map[string]store.Point{
		0: {
			"ns/echo-1": pt(10, time.Second), "ns/echo-2": pt(20, 2*time.Second), "ns/echo-3": pt(30, 0),
			// Values a tracked-pod filter must hide even if the source had them.
			"ns/pending": pt(99, 0), "ns/podtest.Terminating": pt(99, 0), "ns/unannotated": pt(99, 0),
			"ns/bare": pt(5, 0), "ns2/echo-1": pt(1, 0),
		},
		1: {"ns/echo-1": pt(0.1, 0), "ns/echo-2": pt(0.2, 0), "ns/echo-3": pt(0.6, 0)},
	}}
	metrics := append(metricsconfig.DefaultMetrics(), metricsconfig.Metric{
		Name: "peak_connections", Series: metricsconfig.Series{Name: metricsconfig.ActiveSeries, Labels: []exposition.Label{{Name: "listener", Value: "public"}}},
		Aggregation: metricsconfig.AggregateMax,
	})
	src.points[2] = src.points[0]
	p, err := New(Config{
		Metrics: metrics, Pods: lister, ReplicaSets: rs, Source: src,
		Selection: &podsel.Selection{RequireAnnotation: true, PortName: podsel.DefaultMetricsPortName},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p, src
}

func statusCode(err error) int {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return int(status.Status().Code)
	}
	return 0
}

func podNames(list *custom_metrics.MetricValueList) map[string]string {
	out := map[string]string{}
	for _, v := range list.Items {
		out[v.DescribedObject.Namespace+"/"+v.DescribedObject.Name] = v.Value.String()
	}
	return out
}

func TestGetMetricBySelector(t *testing.T) {
	tests := []struct {
		name           string
		namespace      string
		selector       string
		metric         string
		metricSelector string
		want           map[string]string
		wantCode       int
	}{
		{
			name: "all tracked pods with values; untracked pods absent", namespace: "ns", metric: metricsconfig.ConnectionsMetric,
			want: map[string]string{"ns/echo-1": "10", "ns/echo-2": "20", "ns/echo-3": "30", "ns/bare": "5"},
		},
		{
			name: "equality selector", namespace: "ns", selector: "app=echo", metric: metricsconfig.ConnectionsMetric,
			want: map[string]string{"ns/echo-1": "10", "ns/echo-2": "20", "ns/echo-3": "30"},
		},
		{
			name: "set-based selector (matchExpressions)", namespace: "ns", selector: "app in (echo),tier notin (edge)", metric: metricsconfig.ConnectionsMetric,
			want: map[string]string{"ns/echo-1": "10", "ns/echo-2": "20"},
		},
		{
			name: "exists selector; pod without a value absent, not 0", namespace: "ns", selector: "app", metric: metricsconfig.ConnectionsMetric,
			want: map[string]string{"ns/echo-1": "10", "ns/echo-2": "20", "ns/echo-3": "30", "ns/bare": "5"},
		},
		{
			name: "utilization in milli-units", namespace: "ns", selector: "app=echo", metric: metricsconfig.UtilizationMetric,
			want: map[string]string{"ns/echo-1": "100m", "ns/echo-2": "200m", "ns/echo-3": "600m"},
		},
		{
			name: "other namespace", namespace: "ns2", metric: metricsconfig.ConnectionsMetric,
			want: map[string]string{"ns2/echo-1": "1"},
		},
		{
			name: "empty namespace: empty list, not an error", namespace: "empty", metric: metricsconfig.ConnectionsMetric,
			want: map[string]string{},
		},
		{name: "unknown metric", namespace: "ns", metric: "cpu_usage", wantCode: http.StatusNotFound},
		{
			name: "metric selector matching the series labels", namespace: "ns", selector: "tier=ws", metric: "peak_connections", metricSelector: "listener=public",
			want: map[string]string{"ns/echo-1": "10", "ns/echo-2": "20"},
		},
		{name: "metric selector not matching", namespace: "ns", metric: "peak_connections", metricSelector: "listener=private", wantCode: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := testProvider(t)
			sel, err := labels.Parse(tt.selector)
			if err != nil {
				t.Fatal(err)
			}
			msel, err := labels.Parse(tt.metricSelector)
			if err != nil {
				t.Fatal(err)
			}
			list, err := p.GetMetricBySelector(context.Background(), tt.namespace, sel, podInfo(tt.metric), msel)
			if tt.wantCode != 0 {
				if statusCode(err) != tt.wantCode {
					t.Fatalf("err = %v (code %d), want code %d", err, statusCode(err), tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := podNames(list)
			if len(got) != len(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
				}
			}
			for _, it := range list.Items {
				if it.Metric.Name != tt.metric || it.DescribedObject.Kind != "Pod" || it.Timestamp.IsZero() {
					t.Errorf("bad item %+v", it)
				}
				if tt.metricSelector != "" && (it.Metric.Selector == nil || len(it.Metric.Selector.MatchLabels) != 1) {
					t.Errorf("metric selector not echoed: %+v", it.Metric)
				}
			}
		})
	}
}

func TestGetMetricByName(t *testing.T) {
	tests := []struct {
		name     string
		info     cmprovider.CustomMetricInfo
		object   types.NamespacedName
		want     string
		wantTime time.Time
		wantCode int
	}{
		{name: "pod", info: podInfo(metricsconfig.ConnectionsMetric), object: types.NamespacedName{Namespace: "ns", Name: "echo-2"}, want: "20", wantTime: t0.Add(-2 * time.Second)},
		{name: "pod without value", info: podInfo(metricsconfig.ConnectionsMetric), object: types.NamespacedName{Namespace: "ns", Name: "other-1"}, wantCode: http.StatusNotFound},
		{name: "podtest.Terminating pod", info: podInfo(metricsconfig.ConnectionsMetric), object: types.NamespacedName{Namespace: "ns", Name: "podtest.Terminating"}, wantCode: http.StatusNotFound},
		{name: "no such pod", info: podInfo(metricsconfig.ConnectionsMetric), object: types.NamespacedName{Namespace: "ns", Name: "nope"}, wantCode: http.StatusNotFound},
		{name: "unknown metric", info: podInfo("nope"), object: types.NamespacedName{Namespace: "ns", Name: "echo-1"}, wantCode: http.StatusNotFound},
		{name: "unknown resource", info: cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "services"}, Namespaced: true, Metric: metricsconfig.ConnectionsMetric},
			object: types.NamespacedName{Namespace: "ns", Name: "echo"}, wantCode: http.StatusNotFound},
		{name: "root-scoped", info: cmprovider.CustomMetricInfo{GroupResource: podsResource, Metric: metricsconfig.ConnectionsMetric},
			object: types.NamespacedName{Name: "echo-1"}, wantCode: http.StatusNotFound},
		{
			name: "deployment sum over both ReplicaSets; oldest timestamp", info: deploymentInfo(metricsconfig.ConnectionsMetric),
			object: types.NamespacedName{Namespace: "ns", Name: "echo"}, want: "60", wantTime: t0.Add(-2 * time.Second),
		},
		{name: "deployment avg", info: deploymentInfo(metricsconfig.UtilizationMetric), object: types.NamespacedName{Namespace: "ns", Name: "echo"}, want: "300m"},
		{name: "deployment max", info: deploymentInfo("peak_connections"), object: types.NamespacedName{Namespace: "ns", Name: "echo"}, want: "30"},
		{name: "deployment with a pod without value: no partial sum", info: deploymentInfo(metricsconfig.ConnectionsMetric), object: types.NamespacedName{Namespace: "ns", Name: "other"}, wantCode: http.StatusNotFound},
		{name: "deployment without tracked pods", info: deploymentInfo(metricsconfig.ConnectionsMetric), object: types.NamespacedName{Namespace: "ns", Name: "ghost"}, wantCode: http.StatusNotFound},
		{name: "deployment in other namespace", info: deploymentInfo(metricsconfig.ConnectionsMetric), object: types.NamespacedName{Namespace: "ns2", Name: "echo"}, want: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := testProvider(t)
			v, err := p.GetMetricByName(context.Background(), tt.object, tt.info, labels.Everything())
			if tt.wantCode != 0 {
				if statusCode(err) != tt.wantCode {
					t.Fatalf("err = %v (code %d), want code %d", err, statusCode(err), tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Value.String() != tt.want {
				t.Errorf("value %s, want %s", v.Value.String(), tt.want)
			}
			if !tt.wantTime.IsZero() && !v.Timestamp.Time.Equal(tt.wantTime) {
				t.Errorf("timestamp %v, want %v", v.Timestamp, tt.wantTime)
			}
			if v.DescribedObject.Name != tt.object.Name || v.DescribedObject.Namespace != tt.object.Namespace {
				t.Errorf("described object %+v", v.DescribedObject)
			}
		})
	}
}

func TestDeploymentIncompleteMessage(t *testing.T) {
	p, src := testProvider(t)
	delete(src.points[0], "ns/echo-3")
	_, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "ns", Name: "echo"}, deploymentInfo(metricsconfig.ConnectionsMetric), labels.Everything())
	if !apierrors.IsNotFound(err) || err.Error() != "the server could not find the metric websocket_connections for deployments.apps echo: 1 of 3 pods that serve clients have no fresh value" {
		t.Fatalf("err = %v", err)
	}
	list, err := p.GetMetricBySelector(context.Background(), "ns", labels.Everything(), deploymentInfo(metricsconfig.ConnectionsMetric), labels.Everything())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("incomplete deployments listed: %+v", list.Items)
	}
}

func TestDeploymentList(t *testing.T) {
	p, src := testProvider(t)
	src.points[0]["ns/other-1"] = store.Point{Value: 4, Time: t0, OK: true}
	list, err := p.GetMetricBySelector(context.Background(), "ns", labels.Everything(), deploymentInfo(metricsconfig.ConnectionsMetric), labels.Everything())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range list.Items {
		got = append(got, it.DescribedObject.Kind+"/"+it.DescribedObject.Name+"="+it.Value.String())
	}
	sort.Strings(got)
	if len(got) != 2 || got[0] != "Deployment/echo=60" || got[1] != "Deployment/other=4" {
		t.Errorf("got %v", got)
	}
	sel, _ := labels.Parse("app=echo")
	if _, err := p.GetMetricBySelector(context.Background(), "ns", sel, deploymentInfo(metricsconfig.ConnectionsMetric), labels.Everything()); statusCode(err) != http.StatusBadRequest {
		t.Errorf("label selector on deployments: err = %v, want 400", err)
	}
}

func TestSourceErrorIsAStatus(t *testing.T) {
	p, src := testProvider(t)
	src.err = errors.New("prometheus down")
	_, err := p.GetMetricBySelector(context.Background(), "ns", labels.Everything(), podInfo(metricsconfig.ConnectionsMetric), labels.Everything())
	if statusCode(err) != http.StatusServiceUnavailable {
		t.Fatalf("err = %v (code %d), want 503", err, statusCode(err))
	}
}

func TestListAllMetrics(t *testing.T) {
	p, _ := testProvider(t)
	infos := p.ListAllMetrics()
	if len(infos) != 6 {
		t.Fatalf("got %d infos: %v", len(infos), infos)
	}
	for _, in := range infos {
		if !in.Namespaced || (in.GroupResource != podsResource && in.GroupResource != deploymentsResource) {
			t.Errorf("bad info %v", in)
		}
	}
}

func TestQuantity(t *testing.T) {
	for _, tt := range []struct {
		in   float64
		want string
	}{{0, "0"}, {12345, "12345"}, {0.25, "250m"}, {1.5, "1500m"}, {0.0004, "0"}} {
		q := quantity(tt.in)
		if q.String() != tt.want {
			t.Errorf("quantity(%v) = %s, want %s", tt.in, q.String(), tt.want)
		}
	}
}
