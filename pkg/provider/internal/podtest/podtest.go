// Package podtest builds pods and ReplicaSets for the provider's tests.
package podtest

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Opt changes a test pod.
type Opt func(*corev1.Pod)

// WithLabels sets the pod's labels to the key/value pairs kv.
func WithLabels(kv ...string) Opt {
	return func(p *corev1.Pod) {
		p.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
}

// WithReady sets the pod's Ready condition.
func WithReady(ready bool) Opt {
	return func(p *corev1.Pod) {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	}
}

// WithPhase sets the pod's phase.
func WithPhase(ph corev1.PodPhase) Opt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

// WithIP sets the pod's IP.
func WithIP(ip string) Opt { return func(p *corev1.Pod) { p.Status.PodIP = ip } }

// Terminating marks the pod as being deleted.
func Terminating() Opt {
	return func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }
}

// WithAnnotations sets the pod's annotations to the key/value pairs kv.
func WithAnnotations(kv ...string) Opt {
	return func(p *corev1.Pod) {
		p.Annotations = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Annotations[kv[i]] = kv[i+1]
		}
	}
}

// OwnedBy makes the pod controlled by the object kind/name.
func OwnedBy(kind, name string) Opt {
	return func(p *corev1.Pod) {
		t := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: types.UID("uid-" + name), Controller: &t}}
	}
}

// NewPod returns a running, Ready, annotated pod with an IP.
func NewPod(ns, name string, opts ...Opt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name),
			Labels:      map[string]string{"app": "echo"},
			Annotations: map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.18.0.10",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// NewReplicaSet returns a ReplicaSet controlled by deployment, if not "".
func NewReplicaSet(ns, name, deployment string) *appsv1.ReplicaSet {
	t := true
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)}}
	if deployment != "" {
		rs.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: deployment, UID: types.UID("uid-" + deployment), Controller: &t}}
	}
	return rs
}
