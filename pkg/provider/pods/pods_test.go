package pods

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/wsscale/wsscale/pkg/provider/internal/podtest"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

func TestSelected(t *testing.T) {
	echo := labels.SelectorFromSet(labels.Set{"app": "echo"})
	tests := []struct {
		name string
		sel  Selection
		pod  *corev1.Pod
		want bool
	}{
		{name: "annotated running pod", sel: Selection{RequireAnnotation: true}, pod: podtest.NewPod("ns", "a"), want: true},
		{name: "pending", sel: Selection{RequireAnnotation: true}, pod: podtest.NewPod("ns", "a", podtest.WithPhase(corev1.PodPending)), want: false},
		{name: "succeeded", sel: Selection{}, pod: podtest.NewPod("ns", "a", podtest.WithPhase(corev1.PodSucceeded)), want: false},
		{name: "no IP", sel: Selection{}, pod: podtest.NewPod("ns", "a", podtest.WithIP("")), want: false},
		{name: "podtest.Terminating", sel: Selection{}, pod: podtest.NewPod("ns", "a", podtest.Terminating()), want: false},
		{name: "annotation required, absent", sel: Selection{RequireAnnotation: true}, pod: podtest.NewPod("ns", "a", podtest.WithAnnotations()), want: false},
		{name: "annotation required, false", sel: Selection{RequireAnnotation: true}, pod: podtest.NewPod("ns", "a", podtest.WithAnnotations(ScrapeAnnotation, "false")), want: false},
		{name: "annotation not required", sel: Selection{}, pod: podtest.NewPod("ns", "a", podtest.WithAnnotations()), want: true},
		{name: "selector matches", sel: Selection{Selector: echo}, pod: podtest.NewPod("ns", "a"), want: true},
		{name: "selector does not match", sel: Selection{Selector: echo}, pod: podtest.NewPod("ns", "a", podtest.WithLabels("app", "web")), want: false},
		{name: "selector and annotation", sel: Selection{Selector: echo, RequireAnnotation: true}, pod: podtest.NewPod("ns", "a", podtest.WithAnnotations()), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.sel.Selected(tt.pod); got != tt.want {
				t.Errorf("Selected = %v, want %v", got, tt.want)
			}
		})
	}
}

func withPorts(ports ...corev1.ContainerPort) podtest.Opt {
	return func(p *corev1.Pod) {
		p.Spec.Containers = []corev1.Container{{Name: "c", Ports: ports}}
	}
}

func TestTarget(t *testing.T) {
	sel := &Selection{PortName: "metrics"}
	tests := []struct {
		name    string
		pod     *corev1.Pod
		want    string
		wantErr bool
	}{
		{name: "port annotation", pod: podtest.NewPod("ns", "a"), want: "http://198.18.0.10:9090/metrics"},
		{name: "path annotation", pod: podtest.NewPod("ns", "a", podtest.WithAnnotations(PortAnnotation, "8080", PathAnnotation, "stats")), want: "http://198.18.0.10:8080/stats"},
		{name: "named port", pod: podtest.NewPod("ns", "a", podtest.WithAnnotations(), withPorts(corev1.ContainerPort{Name: "ws", ContainerPort: 8080}, corev1.ContainerPort{Name: "metrics", ContainerPort: 9100})), want: "http://198.18.0.10:9100/metrics"},
		{name: "IPv6", pod: podtest.NewPod("ns", "a", podtest.WithIP("fd00::7")), want: "http://[fd00::7]:9090/metrics"},
		{name: "bad port annotation", pod: podtest.NewPod("ns", "a", podtest.WithAnnotations(PortAnnotation, "http")), wantErr: true},
		{name: "port out of range", pod: podtest.NewPod("ns", "a", podtest.WithAnnotations(PortAnnotation, "70000")), wantErr: true},
		{name: "no port", pod: podtest.NewPod("ns", "a", podtest.WithAnnotations(), withPorts(corev1.ContainerPort{Name: "ws", ContainerPort: 8080})), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sel.Target(tt.pod)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (got.URL != tt.want || got.Key != (scrape.PodKey{Namespace: "ns", Name: "a"})) {
				t.Errorf("Target = %+v, want URL %s", got, tt.want)
			}
		})
	}
}

func TestStripPod(t *testing.T) {
	sel := &Selection{PortName: "metrics"}
	full := podtest.NewPod("ns", "a", podtest.OwnedBy("ReplicaSet", "rs"),
		podtest.WithAnnotations(ScrapeAnnotation, "true", PathAnnotation, "/m", "kubectl.kubernetes.io/last-applied-configuration", "{...}"),
		withPorts(corev1.ContainerPort{Name: "ws", ContainerPort: 8080}, corev1.ContainerPort{Name: "metrics", ContainerPort: 9090}))
	full.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	full.Spec.Containers[0].Image = "wsscale/echo"
	full.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "b"}}
	full.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, Reason: "r", Message: "m", LastTransitionTime: metav1.Now()},
	}
	full.Status.ContainerStatuses = []corev1.ContainerStatus{
		{Name: "echo", Image: "wsscale/echo", RestartCount: 3, Ready: true, ContainerID: "process://1"},
		{Name: "sidecar", RestartCount: 1},
	}
	full.Spec.NodeName = "node-1"

	obj, err := sel.StripPod(full)
	if err != nil {
		t.Fatal(err)
	}
	got := obj.(*corev1.Pod)
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: "a", UID: full.UID, Labels: full.Labels,
			Annotations:     map[string]string{ScrapeAnnotation: "true", PathAnnotation: "/m"},
			OwnerReferences: full.OwnerReferences,
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.18.0.10",
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{RestartCount: 4}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("StripPod =\n%+v\nwant\n%+v", got, want)
	}
	// What the adapter decides from the stripped pod is what it decides
	// from the full one.
	if sel.Selected(got) != sel.Selected(full) || Ready(got) != Ready(full) || restartCount(got) != restartCount(full) {
		t.Error("selection, readiness or restart count differs after stripping")
	}
	t1, err1 := sel.Target(got)
	t2, err2 := sel.Target(full)
	if t1 != t2 || (err1 == nil) != (err2 == nil) {
		t.Errorf("target differs after stripping: %v %v / %v %v", t1, err1, t2, err2)
	}
	if other, _ := sel.StripPod("not a pod"); other != "not a pod" {
		t.Error("non-pods must pass through")
	}
	rs, _ := StripReplicaSet(podtest.NewReplicaSet("ns", "rs", "echo"))
	if len(rs.(interface {
		GetOwnerReferences() []metav1.OwnerReference
	}).GetOwnerReferences()) != 1 {
		t.Error("ReplicaSet lost its owner")
	}
}

// fakeTargets records the scraper's targets.
type fakeTargets struct {
	mu      sync.Mutex
	targets map[scrape.PodKey]string
	events  chan string
}

func newFakeTargets() *fakeTargets {
	return &fakeTargets{targets: map[scrape.PodKey]string{}, events: make(chan string, 100)}
}

func (f *fakeTargets) Set(t scrape.Target) error {
	f.mu.Lock()
	f.targets[t.Key] = t.URL
	f.mu.Unlock()
	f.events <- "set " + t.Key.String()
	return nil
}

func (f *fakeTargets) Remove(k scrape.PodKey) {
	f.mu.Lock()
	delete(f.targets, k)
	f.mu.Unlock()
	f.events <- "remove " + k.String()
}

func (f *fakeTargets) next(t *testing.T) string {
	t.Helper()
	select {
	case e := <-f.events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no scraper event within 10s")
		return ""
	}
}

// TestPodTrackerWithInformer drives the tracker through a fake clientset and
// the real (stripping) informers.
func TestPodTrackerWithInformer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(
		podtest.NewPod("ns", "a"),
		podtest.NewPod("ns", "pending", podtest.WithPhase(corev1.PodPending), podtest.WithIP("")),
		podtest.NewPod("ns", "web", podtest.WithLabels("app", "web")),
	)
	sel := &Selection{Selector: labels.SelectorFromSet(labels.Set{"app": "echo"}), RequireAnnotation: true, PortName: "metrics"}
	inf, err := NewInformers(client, "", sel)
	if err != nil {
		t.Fatal(err)
	}
	targets := newFakeTargets()
	values := store.New(metricsconfig.DefaultMetrics(), time.Minute, testingclock.NewFakePassiveClock(time.Now()), nil)
	tracker := NewPodTracker(sel, targets, values)
	if err := inf.AddPodHandler(tracker); err != nil {
		t.Fatal(err)
	}
	inf.Start(ctx)
	defer func() { cancel(); inf.Shutdown() }()
	if err := inf.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	// Synced means the handlers have seen every pod of the initial list
	// too: the first scrape round begins from a complete Store.
	if got := tracker.Tracked(); got != 1 {
		t.Fatalf("tracked %d pods right after the sync, want 1", got)
	}
	if e := targets.next(t); e != "set ns/a" {
		t.Fatalf("event %q, want set ns/a", e)
	}
	if tracker.Tracked() != 1 || values.Stats().Pending != 1 {
		t.Fatalf("tracked %d, values %+v", tracker.Tracked(), values.Stats())
	}
	// The cache holds stripped pods.
	cached, err := corelisters.NewPodLister(inf.Pods()).Pods("ns").Get("a")
	if err != nil || cached.Spec.Containers != nil || cached.ManagedFields != nil {
		t.Fatalf("cached pod %+v, %v", cached, err)
	}

	pods := client.CoreV1().Pods("ns")
	// A pod that starts running is scraped.
	running := podtest.NewPod("ns", "pending")
	if _, err := pods.UpdateStatus(ctx, running, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if e := targets.next(t); e != "set ns/pending" {
		t.Fatalf("event %q, want set ns/pending", e)
	}
	// A podtest.Terminating pod drops out at once.
	term := podtest.NewPod("ns", "a", podtest.Terminating())
	if _, err := pods.Update(ctx, term, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if e := targets.next(t); e != "remove ns/a" {
		t.Fatalf("event %q, want remove ns/a", e)
	}
	// A deleted pod drops out.
	if err := pods.Delete(ctx, "pending", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if e := targets.next(t); e != "remove ns/pending" {
		t.Fatalf("event %q, want remove ns/pending", e)
	}
	if tracker.Tracked() != 0 || values.Stats().Tracked != 0 {
		t.Errorf("tracked %d, values %+v after removals", tracker.Tracked(), values.Stats())
	}
	// A pod that loses the annotation drops out; one that gains it is added.
	if _, err := pods.Create(ctx, podtest.NewPod("ns", "b"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if e := targets.next(t); e != "set ns/b" {
		t.Fatalf("event %q, want set ns/b", e)
	}
	if _, err := pods.Update(ctx, podtest.NewPod("ns", "b", podtest.WithAnnotations()), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if e := targets.next(t); e != "remove ns/b" {
		t.Fatalf("event %q, want remove ns/b", e)
	}
}
