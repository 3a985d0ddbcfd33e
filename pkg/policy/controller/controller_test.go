package controller

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
)

var t0 = time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)

const ns = "demo"

// fakeMetrics serves the values a test sets, as the adapter's store would.
type fakeMetrics struct {
	values map[string]*policy.Metrics
}

var _ PodMetrics = (*fakeMetrics)(nil)

func (f *fakeMetrics) Scraped(*corev1.Pod) bool { return true }

func (f *fakeMetrics) Lookup(_ context.Context, _ string, pods []string) ([]*policy.Metrics, error) {
	out := make([]*policy.Metrics, len(pods))
	for i, p := range pods {
		out[i] = f.values[p]
	}
	return out, nil
}

type fixture struct {
	registry *prometheus.Registry
	client   client.Client
	metrics  *fakeMetrics
	recorder *events.FakeRecorder
	clock    *testingclock.FakeClock
	r        *Reconciler
}

func deployment(replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns, UID: "deploy-uid", Generation: 1,
			Annotations: map[string]string{revisionAnnotation: "1"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: replicas, UpdatedReplicas: replicas},
	}
}

func replicaSet() *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Name: "echo-cur", Namespace: ns,
		Labels:      map[string]string{"app": "echo", appsv1.DefaultDeploymentUniqueLabelKey: "cur"},
		Annotations: map[string]string{revisionAnnotation: "1"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo", UID: "deploy-uid",
			Controller: ptr.To(true)}},
	}}
}

func servingPod(name string, age time.Duration) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(t0.Add(-age)),
			Labels:            map[string]string{"app": "echo", appsv1.DefaultDeploymentUniqueLabelKey: "cur"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.18.1.2",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func guard(replicas *int32) *v1alpha1.ScaleGuard {
	return &v1alpha1.ScaleGuard{
		ObjectMeta: metav1.ObjectMeta{Name: "g", Namespace: ns, Generation: 1},
		Spec: v1alpha1.ScaleGuardSpec{
			TargetRef: v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"},
			Replicas:  replicas,
			ScaleDown: v1alpha1.ScaleDownSpec{
				DrainTimeout: &metav1.Duration{Duration: time.Minute}, EmptyThreshold: ptr.To[int64](0),
				OnTimeout: v1alpha1.OnTimeoutProceed, MaxVictimsPerStep: ptr.To[int32](1),
			},
		},
	}
}

func newFixture(t *testing.T, objs ...client.Object) *fixture {
	t.Helper()
	return newFixtureWith(t, interceptor.Funcs{}, objs...)
}

// newFixtureWith builds the fixture on a fake client whose calls go through funcs first.
func newFixtureWith(t *testing.T, funcs interceptor.Funcs, objs ...client.Object) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&v1alpha1.ScaleGuard{}).WithObjects(objs...).
		WithInterceptorFuncs(funcs).Build()
	f := &fixture{client: c, metrics: &fakeMetrics{values: map[string]*policy.Metrics{}}, recorder: events.NewFakeRecorder(100),
		clock: testingclock.NewFakeClock(t0)}
	f.registry = prometheus.NewRegistry()
	inst, err := NewInstruments(f.registry)
	if err != nil {
		t.Fatal(err)
	}
	f.r = &Reconciler{Client: c, APIReader: c, Metrics: f.metrics, Recorder: f.recorder, Clock: f.clock, Instruments: inst}
	return f
}

func (f *fixture) reconcile(t *testing.T) reconcile.Result {
	t.Helper()
	res, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "g"}})
	if err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return res
}

func (f *fixture) guard(t *testing.T) *v1alpha1.ScaleGuard {
	t.Helper()
	var g v1alpha1.ScaleGuard
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "g"}, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

func (f *fixture) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestReconcileSeedsReplicasAndAddsTheFinalizer(t *testing.T) {
	f := newFixture(t, guard(nil), deployment(3), replicaSet(), servingPod("a", time.Hour), servingPod("b", time.Hour), servingPod("c", time.Hour))
	f.reconcile(t)
	g := f.guard(t)
	if g.Spec.Replicas == nil || *g.Spec.Replicas != 3 || g.Status.AppliedReplicas == nil || *g.Status.AppliedReplicas != 3 {
		t.Errorf("spec.replicas %v applied %v, want 3 seeded from the Deployment", g.Spec.Replicas, g.Status.AppliedReplicas)
	}
	if len(g.Finalizers) != 1 || g.Finalizers[0] != v1alpha1.Finalizer {
		t.Errorf("finalizers %v", g.Finalizers)
	}
	if g.Status.Selector != "app=echo,wsscale.io/drain notin (true)" || g.Status.Replicas != 3 {
		t.Errorf("status %+v", g.Status)
	}
	// A second pass with nothing new writes nothing.
	rv := g.ResourceVersion
	f.reconcile(t)
	if g2 := f.guard(t); g2.ResourceVersion != rv {
		t.Errorf("a decision without change wrote the guard: %s → %s", rv, g2.ResourceVersion)
	}
}

// TestReconcileScaleDownStep walks one step through the controller: the least-connected pod is
// marked in one patch after the step is recorded, the Deployment is lowered by server-side apply
// once it has drained, the step closes when it is gone.
func TestReconcileScaleDownStep(t *testing.T) {
	f := newFixture(t, guard(ptr.To[int32](2)), deployment(3), replicaSet(),
		servingPod("a", 3*time.Hour), servingPod("b", 2*time.Hour), servingPod("c", time.Hour))
	f.metrics.values = map[string]*policy.Metrics{
		"a": {Connections: 50, ScrapeStart: t0.Add(-time.Second)},
		"b": {Connections: 2, ScrapeStart: t0.Add(-time.Second)},
		"c": {Connections: 9, ScrapeStart: t0.Add(-time.Second)},
	}
	res := f.reconcile(t)
	g := f.guard(t)
	if g.Status.Step == nil || len(g.Status.Step.Victims) != 1 || g.Status.Step.Victims[0].Name != "b" || res.RequeueAfter != policy.PollWhileDraining {
		t.Fatalf("step %+v requeue %v", g.Status.Step, res.RequeueAfter)
	}
	b := f.pod(t, "b")
	if b.Labels[v1alpha1.DrainLabel] != "true" || b.Annotations[v1alpha1.DeletionCostAnnotation] != "-2147483648" ||
		!strings.HasPrefix(b.Annotations[v1alpha1.GuardAnnotation], "g 2026-12-02T09:01:00Z") {
		t.Errorf("victim metadata %v %v", b.Labels, b.Annotations)
	}
	if ev := f.events(); len(ev) != 1 || !strings.Contains(ev[0], policy.EventVictimsMarked) {
		t.Errorf("events %v", ev)
	}

	// The server drains: unready, empty, seen by a scrape after the mark.
	f.clock.Step(5 * time.Second)
	b.Status.Conditions[0].Status = corev1.ConditionFalse
	if err := f.client.Status().Update(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	f.metrics.values["b"] = &policy.Metrics{Connections: 0, Draining: true, ScrapeStart: t0.Add(4 * time.Second)}
	f.reconcile(t)
	var d appsv1.Deployment
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "echo"}, &d); err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("deployment replicas %d, want 2", *d.Spec.Replicas)
	}
	if g = f.guard(t); g.Status.Step == nil || g.Status.Step.CommitTime == nil || *g.Status.AppliedReplicas != 2 || g.Status.State != v1alpha1.StateVerifying {
		t.Errorf("status after commit %+v", g.Status)
	}

	// The ReplicaSet deletes the victim.
	if err := f.client.Delete(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	f.clock.Step(2 * time.Second)
	f.reconcile(t)
	if g = f.guard(t); g.Status.Step != nil || len(g.Status.Ledger) != 1 || g.Status.Ledger[0].Open || g.Status.State != v1alpha1.StateSteady {
		t.Errorf("status after the victim went %+v", g.Status)
	}

	// The step's metrics: one victim, one complete step, the 2 connections it held at the mark.
	want := `
# HELP wsscale_guard_blocked 1 while a scale-down waits, labelled with the reason (ScaleDownBlocked condition).
# TYPE wsscale_guard_blocked gauge
# HELP wsscale_guard_budget_used Disconnects counted against the disconnect budget in its current window.
# TYPE wsscale_guard_budget_used gauge
wsscale_guard_budget_used{namespace="demo",scaleguard="g"} 2
# HELP wsscale_guard_connections_disconnected_total Client connections that ended scale-down steps disconnected, as recorded in the ledger.
# TYPE wsscale_guard_connections_disconnected_total counter
wsscale_guard_connections_disconnected_total{namespace="demo",scaleguard="g"} 2
# HELP wsscale_guard_steps_total Scale-down steps ended, by outcome.
# TYPE wsscale_guard_steps_total counter
wsscale_guard_steps_total{namespace="demo",outcome="complete",scaleguard="g"} 1
# HELP wsscale_guard_victims_total Pods marked as victims of scale-down steps.
# TYPE wsscale_guard_victims_total counter
wsscale_guard_victims_total{namespace="demo",scaleguard="g"} 1
`
	if err := testutil.GatherAndCompare(f.registry, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestInstrumentsBlockedByReason(t *testing.T) {
	g := guard(ptr.To[int32](1))
	g.Spec.Paused = true
	f := newFixture(t, g, deployment(2), replicaSet(), servingPod("a", time.Hour), servingPod("b", time.Hour))
	f.metrics.values = map[string]*policy.Metrics{"a": {ScrapeStart: t0}, "b": {ScrapeStart: t0}}
	f.reconcile(t)
	if got := testutil.ToFloat64(f.r.Instruments.blocked.WithLabelValues(ns, "g", v1alpha1.ReasonPaused)); got != 1 {
		t.Errorf("wsscale_guard_blocked{reason=Paused} = %v, want 1", got)
	}
	live := f.guard(t)
	live.Spec.Paused = false
	if err := f.client.Update(context.Background(), live); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t)
	if n := testutil.CollectAndCount(f.r.Instruments.blocked); n != 0 {
		t.Errorf("%d wsscale_guard_blocked series once nothing blocks, want 0", n)
	}
}

func TestReconcileDeletedGuardReleasesItsVictims(t *testing.T) {
	g := guard(ptr.To[int32](2))
	g.Finalizers = []string{v1alpha1.Finalizer}
	victim := servingPod("b", time.Hour)
	victim.Labels[v1alpha1.DrainLabel] = "true"
	victim.Annotations = map[string]string{v1alpha1.DeletionCostAnnotation: victimCost, v1alpha1.GuardAnnotation: "g 2026-12-02T09:10:00Z"}
	other := servingPod("x", time.Hour)
	other.Labels[v1alpha1.DrainLabel] = "true"
	other.Annotations = map[string]string{v1alpha1.GuardAnnotation: "another 2026-12-02T09:10:00Z"}
	f := newFixture(t, g, deployment(3), replicaSet(), victim, other)
	if err := f.client.Delete(context.Background(), f.guard(t)); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t)
	if p := f.pod(t, "b"); p.Labels[v1alpha1.DrainLabel] != "" || len(p.Annotations) != 0 {
		t.Errorf("victim still marked: %v %v", p.Labels, p.Annotations)
	}
	if p := f.pod(t, "x"); p.Labels[v1alpha1.DrainLabel] != "true" {
		t.Errorf("another guard's victim was released")
	}
	var gone v1alpha1.ScaleGuard
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "g"}, &gone); err == nil {
		t.Errorf("guard still there with finalizers %v", gone.Finalizers)
	}
}

func TestSweepReleasesPodsOfMissingGuards(t *testing.T) {
	orphan := servingPod("o", time.Hour)
	orphan.Labels[v1alpha1.DrainLabel] = "true"
	orphan.Annotations = map[string]string{v1alpha1.DeletionCostAnnotation: victimCost, v1alpha1.GuardAnnotation: "gone 2026-12-02T09:10:00Z"}
	kept := servingPod("k", time.Hour)
	kept.Labels[v1alpha1.DrainLabel] = "true"
	kept.Annotations = map[string]string{v1alpha1.GuardAnnotation: "g 2026-12-02T09:10:00Z"}
	f := newFixture(t, guard(ptr.To[int32](2)), orphan, kept)
	if err := f.r.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := f.pod(t, "o"); p.Labels[v1alpha1.DrainLabel] != "" {
		t.Errorf("orphan still marked")
	}
	if p := f.pod(t, "k"); p.Labels[v1alpha1.DrainLabel] != "true" {
		t.Errorf("a live guard's victim was swept")
	}
}

func TestReconcileTargets(t *testing.T) {
	tests := []struct {
		name string
		ref  v1alpha1.TargetRef
		want string
	}{
		{name: "a StatefulSet is refused", ref: v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "echo"}, want: "False/Unsupported"},
		{name: "another API version of Deployment is refused", ref: v1alpha1.TargetRef{APIVersion: "apps/v1beta2", Kind: "Deployment", Name: "echo"}, want: "False/Unsupported"},
		{name: "a missing Deployment", ref: v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "nope"}, want: "False/TargetNotFound"},
		{name: "the Deployment", ref: v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"}, want: "True/AsExpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := guard(ptr.To[int32](2))
			g.Spec.TargetRef = tt.ref
			f := newFixture(t, g, deployment(2), replicaSet(), servingPod("a", time.Hour), servingPod("b", time.Hour))
			f.metrics.values = map[string]*policy.Metrics{"a": {ScrapeStart: t0}, "b": {ScrapeStart: t0}}
			f.reconcile(t)
			got := "absent"
			for _, c := range f.guard(t).Status.Conditions {
				if c.Type == v1alpha1.ConditionReady {
					got = string(c.Status) + "/" + c.Reason
				}
			}
			if got != tt.want {
				t.Errorf("Ready = %s, want %s", got, tt.want)
			}
		})
	}
}

// A status update that loses to a concurrent change of the guard is not a reconcile error (the
// controller would log it as one): the decision is made again shortly, and then it is written.
// Any other failure is still an error.
func TestReconcileRetriesConflictsQuietly(t *testing.T) {
	objs := func() []client.Object {
		return []client.Object{guard(ptr.To[int32](2)), deployment(3), replicaSet(),
			servingPod("a", 3*time.Hour), servingPod("b", 2*time.Hour), servingPod("c", time.Hour)}
	}
	values := map[string]*policy.Metrics{
		"a": {Connections: 50, ScrapeStart: t0.Add(-time.Second)},
		"b": {Connections: 2, ScrapeStart: t0.Add(-time.Second)},
		"c": {Connections: 9, ScrapeStart: t0.Add(-time.Second)},
	}
	gr := schema.GroupResource{Group: v1alpha1.SchemeGroupVersion.Group, Resource: "scaleguards"}
	for _, tc := range []struct {
		name    string
		failure error
		wantErr bool
	}{
		{name: "conflict", failure: apierrors.NewConflict(gr, "g", errors.New("the object has been modified"))},
		{name: "server error", failure: apierrors.NewInternalError(errors.New("etcd unavailable")), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failures := 1
			f := newFixtureWith(t, interceptor.Funcs{
				SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
					if sub == "status" && failures > 0 {
						failures--
						return tc.failure
					}
					return c.SubResource(sub).Update(ctx, obj, opts...)
				},
			}, objs()...)
			f.metrics.values = values
			res, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "g"}})
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "etcd unavailable") {
					t.Fatalf("reconcile: %v, want the server error", err)
				}
				return
			}
			if err != nil || res.RequeueAfter <= 0 {
				t.Fatalf("reconcile after a conflict: result %+v, error %v; want no error and a requeue", res, err)
			}
			// Nothing was marked before the step was on record.
			if b := f.pod(t, "b"); b.Labels[v1alpha1.DrainLabel] == "true" {
				t.Errorf("pod b was marked although the step's status was not written")
			}
			f.reconcile(t)
			if g := f.guard(t); g.Status.Step == nil || len(g.Status.Step.Victims) != 1 || g.Status.Step.Victims[0].Name != "b" {
				t.Errorf("after the retry: step %+v, want b marked", g.Status.Step)
			}
			if b := f.pod(t, "b"); b.Labels[v1alpha1.DrainLabel] != "true" {
				t.Errorf("pod b not marked after the retry")
			}
		})
	}
}
