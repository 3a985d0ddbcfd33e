package controller

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
	"github.com/wsscale/wsscale/pkg/provider/pods"
)

// revisionAnnotation is the Deployment controller's revision, on a Deployment and its ReplicaSets:
// the current ReplicaSet carries the Deployment's.
const revisionAnnotation = "deployment.kubernetes.io/revision"

// PodMetrics is the seam to the adapter's scraped values: what it knows of each pod.
type PodMetrics interface {
	// Scraped reports whether the adapter's scrape selection includes the pod.
	Scraped(pod *corev1.Pod) bool
	// Lookup returns the fresh values of the named pods of namespace, in the same order; nil
	// for a pod without a fresh value (never a zero value).
	Lookup(ctx context.Context, namespace string, pods []string) ([]*policy.Metrics, error)
}

// target reads the Deployment named by the guard, live from the API, and the facts about it.
func (r *Reconciler) target(ctx context.Context, g *v1alpha1.ScaleGuard) (policy.Target, *appsv1.Deployment, error) {
	ref := g.Spec.TargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
		// Found but not supported: the guard says so instead of guessing.
		return policy.Target{Found: true}, nil, nil
	}
	var d appsv1.Deployment
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: g.Namespace, Name: ref.Name}, &d); err != nil {
		if apierrors.IsNotFound(err) {
			return policy.Target{}, nil, nil
		}
		return policy.Target{}, nil, fmt.Errorf("get deployment %s/%s: %w", g.Namespace, ref.Name, err)
	}
	t := policy.Target{
		Found: true, Supported: true,
		Replicas:        ptr.Deref(d.Spec.Replicas, 1),
		Generation:      d.Generation,
		StatusReplicas:  d.Status.Replicas,
		UpdatedReplicas: d.Status.UpdatedReplicas,
	}
	t.ObservedGeneration = d.Status.ObservedGeneration
	if d.Spec.Selector != nil {
		t.Selector = metav1.FormatLabelSelector(d.Spec.Selector)
	}
	var sets appsv1.ReplicaSetList
	if err := r.Client.List(ctx, &sets, client.InNamespace(d.Namespace)); err != nil {
		return policy.Target{}, nil, fmt.Errorf("list replicasets of %s/%s: %w", d.Namespace, d.Name, err)
	}
	for i := range sets.Items {
		rs := &sets.Items[i]
		if metav1.IsControlledBy(rs, &d) && rs.Annotations[revisionAnnotation] == d.Annotations[revisionAnnotation] {
			t.TemplateHash = rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
		}
	}
	return t, &d, nil
}

// pods lists the target's pods by its selector and gathers their facts and values.
func (r *Reconciler) pods(ctx context.Context, d *appsv1.Deployment) ([]policy.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		return nil, fmt.Errorf("selector of %s/%s: %v", d.Namespace, d.Name, err)
	}
	var list corev1.PodList
	if err := r.Client.List(ctx, &list, client.InNamespace(d.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("list pods of %s/%s: %w", d.Namespace, d.Name, err)
	}
	names := make([]string, len(list.Items))
	for i := range list.Items {
		names[i] = list.Items[i].Name
	}
	values, err := r.Metrics.Lookup(ctx, d.Namespace, names)
	if err != nil {
		return nil, fmt.Errorf("connection counts of %s/%s: %w", d.Namespace, d.Name, err)
	}
	out := make([]policy.Pod, 0, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		out = append(out, policy.Pod{
			Name: p.Name, UID: p.UID, Created: p.CreationTimestamp.Time, Phase: p.Status.Phase,
			Ready:        pods.Ready(p),
			Terminating:  p.DeletionTimestamp != nil,
			TemplateHash: p.Labels[appsv1.DefaultDeploymentUniqueLabelKey],
			Marked:       p.Labels[v1alpha1.DrainLabel] == v1alpha1.DrainLabelValue,
			MarkedBy:     markedBy(p),
			CostVisible:  p.Annotations[v1alpha1.DeletionCostAnnotation] == victimCost,
			Scraped:      r.Metrics.Scraped(p),
			Metrics:      values[i],
		})
	}
	return out, nil
}

// duplicateOf names the oldest other ScaleGuard of the namespace with the same target, if it is
// older than g: the first guard keeps the target, later ones are refused.
func (r *Reconciler) duplicateOf(ctx context.Context, g *v1alpha1.ScaleGuard) (string, error) {
	var guards v1alpha1.ScaleGuardList
	if err := r.Client.List(ctx, &guards, client.InNamespace(g.Namespace)); err != nil {
		return "", fmt.Errorf("list scaleguards: %w", err)
	}
	for _, o := range guards.Items {
		if o.Name == g.Name || o.DeletionTimestamp != nil || o.Spec.TargetRef.Kind != g.Spec.TargetRef.Kind || o.Spec.TargetRef.Name != g.Spec.TargetRef.Name {
			continue
		}
		if o.CreationTimestamp.Before(&g.CreationTimestamp) || (o.CreationTimestamp.Equal(&g.CreationTimestamp) && o.Name < g.Name) {
			return o.Name, nil
		}
	}
	return "", nil
}

// markedBy returns the guard named by a pod's guard annotation ("NAME DEADLINE").
func markedBy(p *corev1.Pod) string {
	name, _, _ := strings.Cut(p.Annotations[v1alpha1.GuardAnnotation], " ")
	return name
}
