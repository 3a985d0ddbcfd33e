package provider

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/wsscale/wsscale/pkg/provider/internal/podtest"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	podsel "github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

func notReady() podtest.Opt { return podtest.WithReady(false) }

// hashed gives a pod the pod-template-hash label of a Deployment's ReplicaSet.
func hashed(hash string) podtest.Opt {
	return func(p *corev1.Pod) { p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = hash }
}

// TestDeploymentRule checks which pods a Deployment's value needs: every
// pod that may serve clients (Ready, or had a value since its containers
// started) must have a fresh one, else the answer is NotFound and the HPA
// holds; a pod that serves nobody (not Ready and never had a value:
// starting, crash-looping) is left out instead of freezing the Deployment.
func TestDeploymentRule(t *testing.T) {
	fresh := func(v float64) store.Point { return store.Point{Value: v, Time: t0, OK: true, HadValue: true} }
	hadValue := store.Point{HadValue: true} // scraped before, no fresh value now
	web := types.NamespacedName{Namespace: "r", Name: "web"}
	defaultSets := []*appsv1.ReplicaSet{podtest.NewReplicaSet("r", "web-111", "web"), podtest.NewReplicaSet("r", "web-222", "web")}
	pod := func(name, rs string, opts ...podtest.Opt) *corev1.Pod {
		return podtest.NewPod("r", name, append([]podtest.Opt{podtest.OwnedBy("ReplicaSet", rs)}, opts...)...)
	}
	tests := []struct {
		name     string
		pods     []*corev1.Pod
		sets     []*appsv1.ReplicaSet // nil: web-111 and web-222 of web
		points   map[string]store.Point
		want     string
		wantCode int
		wantMsg  string
	}{
		{
			name:   "every pod fresh",
			pods:   []*corev1.Pod{pod("a", "web-111"), pod("b", "web-222")},
			points: map[string]store.Point{"a": fresh(10), "b": fresh(5)},
			want:   "15",
		},
		{
			name:     "a Ready pod without a value holds the Deployment",
			pods:     []*corev1.Pod{pod("a", "web-111"), pod("b", "web-222")},
			points:   map[string]store.Point{"a": fresh(10)},
			wantCode: http.StatusNotFound, wantMsg: "1 of 2 pods that serve clients have no fresh value",
		},
		{
			name:   "a new pod before its first scrape is left out (rollout)",
			pods:   []*corev1.Pod{pod("a", "web-111"), pod("new", "web-222", notReady())},
			points: map[string]store.Point{"a": fresh(10)},
			want:   "10",
		},
		{
			name:   "a crash-looping pod (not Ready, no value since its restart) is left out",
			pods:   []*corev1.Pod{pod("a", "web-111"), pod("crash", "web-111", notReady())},
			points: map[string]store.Point{"a": fresh(10), "crash": {}},
			want:   "10",
		},
		{
			name:     "a draining pod (not Ready, had a value) whose scrape fails holds the Deployment",
			pods:     []*corev1.Pod{pod("a", "web-111"), pod("drain", "web-111", notReady())},
			points:   map[string]store.Point{"a": fresh(10), "drain": hadValue},
			wantCode: http.StatusNotFound, wantMsg: "1 of 2 pods that serve clients have no fresh value",
		},
		{
			name:   "a not-Ready pod with a fresh value counts",
			pods:   []*corev1.Pod{pod("a", "web-111"), pod("drain", "web-111", notReady())},
			points: map[string]store.Point{"a": fresh(10), "drain": fresh(7)},
			want:   "17",
		},
		{
			name:     "no pod has a value: no answer rather than 0",
			pods:     []*corev1.Pod{pod("new-1", "web-222", notReady()), pod("new-2", "web-222", notReady())},
			wantCode: http.StatusNotFound, wantMsg: "no pod of the Deployment has a value yet",
		},
		{
			name:     "a Ready pod whose ReplicaSet is not in the cache yet holds the Deployment",
			pods:     []*corev1.Pod{pod("a", "web-111"), pod("b", "web-333", hashed("333"))},
			points:   map[string]store.Point{"a": fresh(10), "b": fresh(5)},
			wantCode: http.StatusNotFound, wantMsg: `ReplicaSet "web-333" of pod "b" is not in the cache`,
		},
		{
			name:     "the same, without a pod-template-hash label",
			pods:     []*corev1.Pod{pod("a", "web-111"), pod("b", "web-333")},
			points:   map[string]store.Point{"a": fresh(10), "b": fresh(5)},
			wantCode: http.StatusNotFound, wantMsg: `ReplicaSet "web-333" of pod "b" is not in the cache`,
		},
		{
			name:   "a starting pod whose ReplicaSet is not in the cache yet is left out",
			pods:   []*corev1.Pod{pod("a", "web-111"), pod("new", "web-333", hashed("333"), notReady())},
			points: map[string]store.Point{"a": fresh(10)},
			want:   "10",
		},
		{
			name: "a ReplicaSet of the same name but another UID is not the pod's",
			pods: []*corev1.Pod{pod("a", "web-111"), pod("b", "web-222")},
			sets: []*appsv1.ReplicaSet{podtest.NewReplicaSet("r", "web-111", "web"),
				func() *appsv1.ReplicaSet {
					rs := podtest.NewReplicaSet("r", "web-222", "web")
					rs.UID = "recreated"
					return rs
				}()},
			points:   map[string]store.Point{"a": fresh(10), "b": fresh(5)},
			wantCode: http.StatusNotFound, wantMsg: `ReplicaSet "web-222" of pod "b" is not in the cache`,
		},
		{
			name:   "an uncached ReplicaSet of another Deployment sharing the name prefix does not hold",
			pods:   []*corev1.Pod{pod("a", "web-111"), pod("canary", "web-canary-444", hashed("444"))},
			points: map[string]store.Point{"a": fresh(10), "canary": fresh(3)},
			want:   "10",
		},
		{
			name:   "pods of other Deployments and bare pods do not count",
			pods:   []*corev1.Pod{pod("a", "web-111"), pod("x", "api-555"), podtest.NewPod("r", "bare")},
			sets:   append([]*appsv1.ReplicaSet{podtest.NewReplicaSet("r", "api-555", "api")}, defaultSets...),
			points: map[string]store.Point{"a": fresh(10), "x": fresh(100), "bare": fresh(1000)},
			want:   "10",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sets := tt.sets
			if sets == nil {
				sets = defaultSets
			}
			points := map[string]store.Point{}
			for name, pt := range tt.points {
				points["r/"+name] = pt
			}
			p, err := New(Config{
				Metrics: metricsconfig.DefaultMetrics(), Pods: podIndexer(t, tt.pods...), ReplicaSets: rsIndexer(t, sets...),
				Source:    &fakeSource{points: map[int]map[string]store.Point{0: points}},
				Selection: &podsel.Selection{PortName: podsel.DefaultMetricsPortName},
			})
			if err != nil {
				t.Fatal(err)
			}
			v, err := p.GetMetricByName(context.Background(), web, deploymentInfo(metricsconfig.ConnectionsMetric), labels.Everything())
			if tt.wantCode != 0 {
				if statusCode(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("err = %v (code %d), want code %d with %q", err, statusCode(err), tt.wantCode, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Value.String() != tt.want {
				t.Errorf("value %s, want %s", v.Value.String(), tt.want)
			}
			// The list of every Deployment agrees.
			list, err := p.GetMetricBySelector(context.Background(), "r", labels.Everything(), deploymentInfo(metricsconfig.ConnectionsMetric), labels.Everything())
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range list.Items {
				if it.DescribedObject.Name == "web" && it.Value.String() != tt.want {
					t.Errorf("listed value %s, want %s", it.Value.String(), tt.want)
				}
			}
		})
	}
}

// TestResourceNames asks for the same values under every name a user may
// write for pods and Deployments.
func TestResourceNames(t *testing.T) {
	p, _ := testProvider(t)
	tests := []struct {
		name     string
		resource schema.GroupResource
		object   string
		want     string
		wantCode int
	}{
		{name: "deployments.apps", resource: schema.GroupResource{Group: "apps", Resource: "deployments"}, object: "echo", want: "60"},
		{name: "deployments", resource: schema.GroupResource{Resource: "deployments"}, object: "echo", want: "60"},
		{name: "deployment", resource: schema.GroupResource{Resource: "deployment"}, object: "echo", want: "60"},
		{name: "deployment.apps", resource: schema.GroupResource{Group: "apps", Resource: "deployment"}, object: "echo", want: "60"},
		{name: "deploy", resource: schema.GroupResource{Resource: "deploy"}, object: "echo", want: "60"},
		{name: "pods", resource: schema.GroupResource{Resource: "pods"}, object: "echo-1", want: "10"},
		{name: "pod", resource: schema.GroupResource{Resource: "pod"}, object: "echo-1", want: "10"},
		{name: "po", resource: schema.GroupResource{Resource: "po"}, object: "echo-1", want: "10"},
		{name: "replicasets: not served", resource: schema.GroupResource{Group: "apps", Resource: "replicasets"}, object: "echo-aaa", wantCode: http.StatusNotFound},
		{name: "pods of another group", resource: schema.GroupResource{Group: "example.com", Resource: "pods"}, object: "echo-1", wantCode: http.StatusNotFound},
		{name: "unknown resource", resource: schema.GroupResource{Resource: "gadgets"}, object: "echo", wantCode: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := cmprovider.CustomMetricInfo{GroupResource: tt.resource, Namespaced: true, Metric: metricsconfig.ConnectionsMetric}
			v, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "ns", Name: tt.object}, info, labels.Everything())
			if tt.wantCode != 0 {
				if statusCode(err) != tt.wantCode {
					t.Fatalf("err = %v, want code %d", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Value.String() != tt.want {
				t.Errorf("value %s, want %s", v.Value.String(), tt.want)
			}
			list, err := p.GetMetricBySelector(context.Background(), "ns", labels.Everything(), info, labels.Everything())
			if err != nil || len(list.Items) == 0 {
				t.Errorf("list: %v, %v", list, err)
			}
		})
	}
}

// TestHadValue follows a pod through the states the Deployment rule tells
// apart: never scraped, scraped, failing after a value (still may serve),
// restarted (serves nobody until scraped again), and the restart seen by the
// pods.PodTracker from the pod's container statuses.
func TestHadValue(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	values := store.New(metricsconfig.DefaultMetrics(), 10*time.Second, clk, nil)
	sel := &podsel.Selection{PortName: podsel.DefaultMetricsPortName}
	tracker := podsel.NewPodTracker(sel, nil, values)
	withRestarts := func(n int32) podtest.Opt {
		return func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "echo", RestartCount: n}}
		}
	}
	a := scrape.PodKey{Namespace: "ns", Name: "a"}
	steps := []struct {
		name    string
		do      func()
		wantOK  bool
		wantHad bool
	}{
		{name: "tracked, never scraped", do: func() { tracker.OnAdd(podtest.NewPod("ns", "a", withRestarts(0)), true) }},
		{name: "scraped", do: func() { values.Observe(a, sample(clk.Now(), 3, 10)) }, wantOK: true, wantHad: true},
		{name: "scrape fails: no value, but it had one", do: func() { values.Fail(a, scrape.Failure{Time: clk.Now(), Reason: scrape.ReasonTimeout}) }, wantHad: true},
		{name: "an update without a restart changes nothing", do: func() { tracker.OnUpdate(nil, podtest.NewPod("ns", "a", withRestarts(0), notReady())) }, wantHad: true},
		{name: "the container restarted", do: func() { tracker.OnUpdate(nil, podtest.NewPod("ns", "a", withRestarts(1), notReady())) }},
		{name: "scraped again", do: func() { values.Observe(a, sample(clk.Now(), 0, 10)) }, wantOK: true, wantHad: true},
		{name: "stale: no value, but it had one", do: func() { clk.Step(11 * time.Second) }, wantHad: true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do()
			pts, err := values.Lookup(context.Background(), 0, "ns", []string{"a"})
			if err != nil {
				t.Fatal(err)
			}
			if pts[0].OK != st.wantOK || pts[0].HadValue != st.wantHad {
				t.Errorf("point %+v, want OK %v, HadValue %v", pts[0], st.wantOK, st.wantHad)
			}
		})
	}
}
