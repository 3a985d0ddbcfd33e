package provider

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// podOpt changes a test pod.
type podOpt func(*corev1.Pod)

func withLabels(kv ...string) podOpt {
	return func(p *corev1.Pod) {
		p.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withReady(ready bool) podOpt {
	return func(p *corev1.Pod) {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	}
}
func withPhase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }
func withIP(ip string) podOpt             { return func(p *corev1.Pod) { p.Status.PodIP = ip } }
func terminating() podOpt {
	return func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }
}
func withAnnotations(kv ...string) podOpt {
	return func(p *corev1.Pod) {
		p.Annotations = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Annotations[kv[i]] = kv[i+1]
		}
	}
}
func ownedBy(kind, name string) podOpt {
	return func(p *corev1.Pod) {
		t := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: types.UID("uid-" + name), Controller: &t}}
	}
}

// newPod returns a running, Ready, annotated pod with an IP.
func newPod(ns, name string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name),
			Labels:      map[string]string{"app": "echo"},
			Annotations: map[string]string{ScrapeAnnotation: "true", PortAnnotation: "9090"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.18.0.10",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func newReplicaSet(ns, name, deployment string) *appsv1.ReplicaSet {
	t := true
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)}}
	if deployment != "" {
		rs.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: deployment, UID: types.UID("uid-" + deployment), Controller: &t}}
	}
	return rs
}

func podIndexer(t testing.TB, pods ...*corev1.Pod) cache.Indexer {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, PodIndexers())
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return idx
}

func rsIndexer(t testing.TB, sets ...*appsv1.ReplicaSet) cache.Indexer {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, ReplicaSetIndexers())
	for _, rs := range sets {
		if err := idx.Add(rs); err != nil {
			t.Fatal(err)
		}
	}
	return idx
}

// fakeSource serves fixed points by "namespace/pod", per metric.
type fakeSource struct {
	points map[int]map[string]Point
	err    error
	calls  int
}

var _ Source = (*fakeSource)(nil)

func (f *fakeSource) Lookup(_ context.Context, metric int, namespace string, pods []string) ([]Point, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	out := make([]Point, len(pods))
	for i, p := range pods {
		out[i] = f.points[metric][namespace+"/"+p]
	}
	return out, nil
}
