// Package controller runs the ScaleGuard controller on controller-runtime: it gathers the facts
// about a ScaleGuard's target (the Deployment, its pods and their connection counts), asks
// package policy for a decision, and carries it out: the status, the victims' marks, the
// Deployment's replicas and the Events.
package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrl "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
)

// The ClusterRole the controller needs, generated into config/rbac/role.yaml (make update-crds).
// +kubebuilder:rbac:groups=autoscaling.wsscale.io,resources=scaleguards,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=autoscaling.wsscale.io,resources=scaleguards/status,verbs=get;update
// +kubebuilder:rbac:groups=autoscaling.wsscale.io,resources=scaleguards/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update

// FieldManager owns the target's spec.replicas: the guard applies it under this name.
const FieldManager = "wsscale-scaleguard"

// victimCost is the pod-deletion-cost of a victim: the lowest there is, so that the ReplicaSet
// removes victims before any pod a user ranked.
var victimCost = strconv.Itoa(math.MinInt32)

// Reconciler reconciles ScaleGuards.
type Reconciler struct {
	// Client reads from the shared cache and writes to the API.
	Client client.Client
	// APIReader reads the guard and its target live from the API: a commit never acts on a
	// stale replica count.
	APIReader client.Reader
	// Metrics gives the pods' connection counts.
	Metrics PodMetrics
	// Recorder emits the Events of every transition.
	Recorder events.EventRecorder
	// Clock is injected for tests.
	Clock clock.PassiveClock
	// Instruments record the controller's metrics; nil records none.
	Instruments *Instruments
}

var _ reconcile.Reconciler = (*Reconciler)(nil)

// SetupWithManager registers the controller: it reconciles a guard when the guard, its target
// Deployment or one of the pods of its namespace changes.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	guardsOf := func(match func(*v1alpha1.ScaleGuard) bool) handler.MapFunc {
		return func(ctx context.Context, obj client.Object) []reconcile.Request {
			var guards v1alpha1.ScaleGuardList
			if err := r.Client.List(ctx, &guards, client.InNamespace(obj.GetNamespace())); err != nil {
				klog.ErrorS(err, "List ScaleGuards to map an object", "object", klog.KObj(obj))
				return nil
			}
			var out []reconcile.Request
			for i := range guards.Items {
				if g := &guards.Items[i]; match == nil || match(g) {
					out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: g.Namespace, Name: g.Name}})
				}
			}
			return out
		}
	}
	return builder.ControllerManagedBy(mgr).
		Named("scaleguard").
		For(&v1alpha1.ScaleGuard{}).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
			return guardsOf(func(g *v1alpha1.ScaleGuard) bool { return g.Spec.TargetRef.Name == obj.GetName() })(ctx, obj)
		})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(guardsOf(nil))).
		WithOptions(ctrl.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

// conflictRequeue is how soon a guard is decided again after a write lost to a concurrent change.
const conflictRequeue = 200 * time.Millisecond

// Reconcile makes one decision for a guard and carries it out. A write that conflicts with a
// change made since the guard or its target was read (the HPA writing spec.replicas through
// /scale, a user, the ReplicaSet controller) is not an error: the decision was made on facts that
// are gone, so it is made again, soon, from the new ones, and nothing is logged as a failure.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := r.decide(ctx, req)
	if apierrors.IsConflict(err) {
		klog.V(2).InfoS("ScaleGuard or its target changed while deciding; deciding again", "scaleGuard", req.NamespacedName, "conflict", err.Error())
		return reconcile.Result{RequeueAfter: conflictRequeue}, nil
	}
	return res, err
}

// decide reads the guard and its target, makes one decision and carries it out.
func (r *Reconciler) decide(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var g v1alpha1.ScaleGuard
	if err := r.APIReader.Get(ctx, req.NamespacedName, &g); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if g.DeletionTimestamp != nil {
		return reconcile.Result{}, r.finalize(ctx, &g)
	}
	if !controllerutil.ContainsFinalizer(&g, v1alpha1.Finalizer) {
		controllerutil.AddFinalizer(&g, v1alpha1.Finalizer)
		if err := r.Client.Update(ctx, &g); err != nil {
			return reconcile.Result{}, fmt.Errorf("add finalizer to %s: %w", req, err)
		}
	}

	in := policy.Input{Now: r.Clock.Now(), Name: g.Name, Generation: g.Generation, Spec: g.Spec, Status: g.Status}
	var err error
	if in.DuplicateOf, err = r.duplicateOf(ctx, &g); err != nil {
		return reconcile.Result{}, err
	}
	target, deploy, err := r.target(ctx, &g)
	if err != nil {
		return reconcile.Result{}, err
	}
	in.Target = target
	if deploy != nil {
		if in.Pods, err = r.pods(ctx, deploy); err != nil {
			return reconcile.Result{}, err
		}
	}
	d := policy.Decide(in)
	old := *g.Status.DeepCopy()
	res, err := r.carryOut(ctx, &g, deploy, d)
	if err == nil {
		r.Instruments.observe(&g, old, d, in.Now)
	}
	return res, err
}

// carryOut writes a decision: seed, status, un-mark, mark, apply, events. The status goes first
// so that a step and its reservation are on record before any pod is marked; a commit's
// apply goes before its status (the policy recognises a commit whose status was lost).
func (r *Reconciler) carryOut(ctx context.Context, g *v1alpha1.ScaleGuard, deploy *appsv1.Deployment, d policy.Decision) (reconcile.Result, error) {
	if d.SeedReplicas != nil {
		g.Spec.Replicas = d.SeedReplicas
		if err := r.Client.Update(ctx, g); err != nil {
			return reconcile.Result{}, fmt.Errorf("seed spec.replicas of %s: %w", klog.KObj(g), err)
		}
	}
	committing := d.Apply != nil && d.Status.Step != nil && d.Status.Step.CommitTime != nil && (g.Status.Step == nil || g.Status.Step.CommitTime == nil)
	if committing {
		if err := r.apply(ctx, deploy, *d.Apply); err != nil {
			return reconcile.Result{}, err
		}
	}
	if !equality.Semantic.DeepEqual(g.Status, d.Status) {
		g.Status = d.Status
		if err := r.Client.Status().Update(ctx, g); err != nil {
			return reconcile.Result{}, fmt.Errorf("update status of %s: %w", klog.KObj(g), err)
		}
	}
	for _, p := range d.Unmark {
		if err := r.unmark(ctx, g.Namespace, p); err != nil {
			return reconcile.Result{}, err
		}
	}
	for _, p := range d.Mark {
		if err := r.mark(ctx, g, p, d.Deadline); err != nil {
			return reconcile.Result{}, err
		}
	}
	if d.Apply != nil && !committing {
		if err := r.apply(ctx, deploy, *d.Apply); err != nil {
			return reconcile.Result{}, err
		}
	}
	for _, e := range d.Events {
		r.Recorder.Eventf(g, nil, e.Type, e.Reason, "Scale", "%s", e.Message)
		klog.InfoS("ScaleGuard transition", "scaleGuard", klog.KObj(g), "reason", e.Reason, "message", e.Message)
	}
	return reconcile.Result{RequeueAfter: d.RequeueAfter}, nil
}

// apply sets the Deployment's replicas by server-side apply under the guard's field manager,
// with the resourceVersion read live as a precondition: a change in between fails the write and
// the next decision sees it.
func (r *Reconciler) apply(ctx context.Context, d *appsv1.Deployment, replicas int32) error {
	ac := appsv1ac.Deployment(d.Name, d.Namespace).
		WithResourceVersion(d.ResourceVersion).
		WithSpec(appsv1ac.DeploymentSpec().WithReplicas(replicas))
	if err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply replicas %d to deployment %s: %w", replicas, klog.KObj(d), err)
	}
	return nil
}

// mark makes a pod a victim in one patch: the drain label, the lowest deletion cost, and the
// annotation naming the guard and the step's deadline.
func (r *Reconciler) mark(ctx context.Context, g *v1alpha1.ScaleGuard, p policy.PodRef, deadline time.Time) error {
	return r.patchPod(ctx, g.Namespace, p, map[string]any{
		"labels": map[string]any{v1alpha1.DrainLabel: v1alpha1.DrainLabelValue},
		"annotations": map[string]any{
			v1alpha1.DeletionCostAnnotation: victimCost,
			v1alpha1.GuardAnnotation:        g.Name + " " + deadline.UTC().Format(time.RFC3339),
		},
	})
}

// unmark makes a victim serve again.
func (r *Reconciler) unmark(ctx context.Context, namespace string, p policy.PodRef) error {
	return r.patchPod(ctx, namespace, p, map[string]any{
		"labels":      map[string]any{v1alpha1.DrainLabel: nil},
		"annotations": map[string]any{v1alpha1.DeletionCostAnnotation: nil, v1alpha1.GuardAnnotation: nil},
	})
}

// patchPod merges metadata into a pod, with its UID as a precondition so that a new pod of the
// same name is never touched; a pod that is gone needs nothing.
func (r *Reconciler) patchPod(ctx context.Context, namespace string, p policy.PodRef, metadata map[string]any) error {
	metadata["uid"] = string(p.UID)
	body, err := json.Marshal(map[string]any{"metadata": metadata})
	if err != nil {
		return err
	}
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = namespace, p.Name
	if err := r.Client.Patch(ctx, pod, client.RawPatch(types.MergePatchType, body)); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("patch pod %s/%s: %w", namespace, p.Name, err)
	}
	return nil
}

// finalize un-marks every pod the guard marked, then lets the guard go. The Deployment keeps its
// current size.
func (r *Reconciler) finalize(ctx context.Context, g *v1alpha1.ScaleGuard) error {
	if !controllerutil.ContainsFinalizer(g, v1alpha1.Finalizer) {
		return nil
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(g.Namespace), client.MatchingLabels{v1alpha1.DrainLabel: v1alpha1.DrainLabelValue}); err != nil {
		return fmt.Errorf("list victims of %s: %w", klog.KObj(g), err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if markedBy(p) == g.Name && p.DeletionTimestamp == nil {
			if err := r.unmark(ctx, g.Namespace, policy.PodRef{Name: p.Name, UID: p.UID}); err != nil {
				return err
			}
			r.Recorder.Eventf(g, nil, corev1.EventTypeNormal, policy.EventVictimsReleased, "Scale", "ScaleGuard deleted: %s serves again", p.Name)
		}
	}
	controllerutil.RemoveFinalizer(g, v1alpha1.Finalizer)
	if err := r.Client.Update(ctx, g); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer of %s: %w", klog.KObj(g), err)
	}
	r.Instruments.forget(g)
	return nil
}

// Sweep un-marks pods marked by a ScaleGuard that no longer exists (deleted without its
// finalizer running, e.g. while no controller ran). It runs once when the controller starts leading.
func (r *Reconciler) Sweep(ctx context.Context) error {
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.MatchingLabels{v1alpha1.DrainLabel: v1alpha1.DrainLabelValue}); err != nil {
		return fmt.Errorf("list marked pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		name := markedBy(p)
		if name == "" || p.DeletionTimestamp != nil {
			continue
		}
		var g v1alpha1.ScaleGuard
		err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: name}, &g)
		if err == nil {
			continue // the guard's own decisions un-mark its strays
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get scaleguard %s/%s: %w", p.Namespace, name, err)
		}
		klog.InfoS("Un-marking a pod whose ScaleGuard is gone", "pod", klog.KObj(p), "scaleGuard", name)
		if err := r.unmark(ctx, p.Namespace, policy.PodRef{Name: p.Name, UID: p.UID}); err != nil {
			return err
		}
	}
	return nil
}
