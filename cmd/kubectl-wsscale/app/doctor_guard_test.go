package app

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

// guardFixture is a ScaleGuard "echo" in ns with the given generation and status.
func guardFixture(t *testing.T, generation int64, status v1alpha1.ScaleGuardStatus) *unstructured.Unstructured {
	t.Helper()
	g := &v1alpha1.ScaleGuard{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard"},
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "ns", Generation: generation},
		Spec:       v1alpha1.ScaleGuardSpec{TargetRef: v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"}},
		Status:     status,
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(g)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: obj}
}

// markedPod is a pod of ns carrying the drain label, marked by guard (no annotation when "").
func markedPod(name, uid, guard string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(uid),
		Labels: map[string]string{v1alpha1.DrainLabel: v1alpha1.DrainLabelValue}}}
	if guard != "" {
		p.Annotations = map[string]string{v1alpha1.GuardAnnotation: guard + " 2026-01-01T00:00:00Z"}
	}
	return p
}

func TestCheckGuards(t *testing.T) {
	ready := []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAsExpected}}
	step := &v1alpha1.ScaleDownStep{Victims: []v1alpha1.Victim{{Name: "echo-a", UID: "uid-a"}}}
	for _, tc := range []struct {
		name    string
		gen     int64
		status  v1alpha1.ScaleGuardStatus
		pods    []*corev1.Pod
		adapter *adapterService
		want    []string // "status object: evidence fragment | fix fragment", one per check in order
	}{
		{name: "acted on and ready", gen: 2, status: v1alpha1.ScaleGuardStatus{ObservedGeneration: 2, State: v1alpha1.StateSteady, Conditions: ready},
			want: []string{"pass ScaleGuard ns/echo: Ready, observedGeneration 2, state Steady |"}},
		{name: "behind, adapter not found", gen: 3, status: v1alpha1.ScaleGuardStatus{ObservedGeneration: 2, Conditions: ready},
			want: []string{"fail ScaleGuard ns/echo: status.observedGeneration 2 < generation 3: no controller is acting on it | kubectl -n wsscale-system logs deploy/wsscale"}},
		{name: "behind, adapter without pods", gen: 3, status: v1alpha1.ScaleGuardStatus{ObservedGeneration: 2, Conditions: ready},
			adapter: &adapterService{namespace: "metrics", name: "adapter", selector: "app=adapter"},
			want:    []string{"fail ScaleGuard ns/echo: no controller is acting on it | Service metrics/adapter selects no running pod: bring the adapter back (kubectl -n metrics get deploy,pods -l app=adapter)"}},
		{name: "behind, adapter running", gen: 3, status: v1alpha1.ScaleGuardStatus{ObservedGeneration: 2, Conditions: ready},
			adapter: &adapterService{namespace: "metrics", name: "adapter", selector: "app=adapter", running: 1},
			want:    []string{"fail ScaleGuard ns/echo: no controller is acting on it | kubectl -n metrics logs -l app=adapter"}},
		{name: "never acted on", gen: 1,
			want: []string{"fail ScaleGuard ns/echo: status.observedGeneration 0 < generation 1 |"}},
		{name: "not ready", gen: 1, status: v1alpha1.ScaleGuardStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonTargetNotFound, Message: "Deployment echo not found"}}},
			want: []string{"fail ScaleGuard ns/echo: Ready=False TargetNotFound: Deployment echo not found | kubectl -n ns describe scaleguard echo"}},
		{name: "no ready condition", gen: 1, status: v1alpha1.ScaleGuardStatus{ObservedGeneration: 1},
			want: []string{"fail ScaleGuard ns/echo: no Ready condition | kubectl -n ns describe scaleguard echo"}},
		{name: "victim of the step, stray of the guard, stray of a deleted guard, hand-labelled",
			gen: 1, status: v1alpha1.ScaleGuardStatus{ObservedGeneration: 1, Conditions: ready, Step: step},
			pods: []*corev1.Pod{markedPod("echo-a", "uid-a", "echo"), markedPod("echo-b", "uid-b", "echo"), markedPod("legacy-a", "uid-c", "legacy"), markedPod("other", "uid-d", "")},
			want: []string{
				"pass ScaleGuard ns/echo: Ready |",
				"fail pod ns/echo-b: it names ScaleGuard echo, whose status has no step with it: it refuses new clients for nothing | kubectl -n ns label pod echo-b wsscale.io/drain- && kubectl -n ns annotate pod echo-b wsscale.io/scale-guard- controller.kubernetes.io/pod-deletion-cost- (ScaleGuard echo un-marks its own strays",
				"fail pod ns/legacy-a: it names ScaleGuard legacy, which no longer exists: it refuses new clients for nothing | kubectl -n ns label pod legacy-a wsscale.io/drain- && kubectl -n ns annotate pod legacy-a wsscale.io/scale-guard- controller.kubernetes.io/pod-deletion-cost- (the adapter's ScaleGuard controller un-marks the pods of deleted ScaleGuards when it starts leading)",
				"fail pod ns/other: no ScaleGuard's step holds it | kubectl -n ns label pod other wsscale.io/drain- (no ScaleGuard marked it",
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			for _, p := range tc.pods {
				objs = append(objs, p)
			}
			dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
				map[schema.GroupVersionResource]string{scaleGuards: "ScaleGuardList"}, guardFixture(t, tc.gen, tc.status))
			d := &doctor{o: NewDoctorOptions(nil, testStreams()), c: &clients{kube: kubefake.NewClientset(objs...), dyn: dyn, namespace: "ns"}, adapter: tc.adapter}
			if err := d.checkGuards(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(d.checks) != len(tc.want) {
				t.Fatalf("%d checks, want %d: %+v", len(d.checks), len(tc.want), d.checks)
			}
			for i, want := range tc.want {
				head, fix, _ := strings.Cut(want, " |")
				fix = strings.TrimSpace(fix)
				head, evidence, _ := strings.Cut(head, ": ")
				status, object, _ := strings.Cut(head, " ")
				got := d.checks[i]
				if got.Area != "guard" || got.Status != status || got.Object != object || !strings.Contains(got.Evidence, evidence) || !strings.Contains(got.Fix, fix) {
					t.Errorf("check %d: %s %s %s: %s (fix: %s)\nwant %s %s with %q, fix with %q", i, got.Area, got.Status, got.Object, got.Evidence, got.Fix, status, object, evidence, fix)
				}
				if got.Status != Pass && got.Fix == "" {
					t.Errorf("check %d: %s without a fix", i, got.Status)
				}
			}
		})
	}
}
