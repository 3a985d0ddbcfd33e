package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	autoscalingv1alpha1 "github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
	"github.com/wsscale/wsscale/pkg/policy/controller"
	"github.com/wsscale/wsscale/test/e2e/framework"
)

// runningGuard is one controller manager, as one adapter replica runs it.
type runningGuard struct {
	mgr  manager.Manager
	stop context.CancelFunc
	done chan error
}

// startGuard starts a leader-elected controller manager on the namespace's Lease.
func startGuard(ctx context.Context, t *testing.T, cfg *rest.Config, ns string, pm controller.PodMetrics) *runningGuard {
	t.Helper()
	ctrllog.SetLogger(klog.NewKlogr())
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := autoscalingv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	lease, renew, retry := 4*time.Second, 3*time.Second, 500*time.Millisecond
	mgr, err := manager.New(cfg, manager.Options{
		Scheme: scheme, Logger: klog.NewKlogr(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache:          cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		LeaderElection: true, LeaderElectionID: "wsscale-scaleguard", LeaderElectionNamespace: ns,
		LeaderElectionResourceLock: "leases", LeaderElectionReleaseOnCancel: true,
		LeaseDuration: &lease, RenewDeadline: &renew, RetryPeriod: &retry,
		// Two managers in one test process, as two adapter replicas would be in two.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controller.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Metrics: pm,
		Recorder: mgr.GetEventRecorder(controller.FieldManager), Clock: clock.RealClock{}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	g := &runningGuard{mgr: mgr, stop: stop, done: make(chan error, 1)}
	go func() { g.done <- mgr.Start(mctx) }()
	return g
}

func (g *runningGuard) elected() bool {
	select {
	case <-g.mgr.Elected():
		return true
	default:
		return false
	}
}

func (g *runningGuard) shutdown(t *testing.T) {
	t.Helper()
	g.stop()
	if err := <-g.done; err != nil {
		t.Errorf("controller manager: %v", err)
	}
}

// TestScaleGuardFaults drives the controller through the faults of a scale-down on the real
// control plane, with two leader-elected controller managers as two adapter replicas: exactly one
// leads; the leader stopped mid-drain, the other resumes the step without reserving again; the
// Deployment scaled behind the guard's back (a condition, no fight, then adopted, victims released);
// a pod without a fresh value (hold); a victim deleted by someone else; the guard deleted mid-drain
// (its victim serves again, the Deployment keeps its size); a missing target.
func TestScaleGuardFaults(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	installScaleGuardCRD(ctx, t, dyn)
	const ns = "scaleguard-faults"
	createNamespace(ctx, t, client, ns)
	deploy, _ := demoManifests(t, ns)
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", 3)
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	conns := &fixedConnections{counts: map[string]int64{pods[0].Name: 100, pods[1].Name: 5, pods[2].Name: 50}}

	a := startGuard(ctx, t, c.RESTConfig(), ns, conns)
	b := startGuard(ctx, t, c.RESTConfig(), ns, conns)
	defer func() {
		for _, g := range []*runningGuard{a, b} {
			if g != nil {
				g.shutdown(t)
			}
		}
	}()
	var leader, follower *runningGuard
	waitFor(ctx, t, 30*time.Second, func() (bool, string) {
		switch {
		case a.elected() && b.elected():
			t.Fatal("both controller managers lead")
		case a.elected():
			leader, follower = a, b
		case b.elected():
			leader, follower = b, a
		}
		return leader != nil, "no leader yet"
	})

	guards := dyn.Resource(scaleGuardResource).Namespace(ns)
	create := func(name, target string, spec autoscalingv1alpha1.ScaleDownSpec) {
		t.Helper()
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&autoscalingv1alpha1.ScaleGuard{
			TypeMeta:   metav1.TypeMeta{APIVersion: autoscalingv1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard"},
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: autoscalingv1alpha1.ScaleGuardSpec{
				TargetRef: autoscalingv1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: target}, ScaleDown: spec},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := guards.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create ScaleGuard %s: %v", name, err)
		}
	}
	get := func(name string) *autoscalingv1alpha1.ScaleGuard {
		t.Helper()
		u, err := guards.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get ScaleGuard %s: %v", name, err)
		}
		var g autoscalingv1alpha1.ScaleGuard
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &g); err != nil {
			t.Fatal(err)
		}
		return &g
	}
	condition := func(g *autoscalingv1alpha1.ScaleGuard, typ string) string {
		if c := meta.FindStatusCondition(g.Status.Conditions, typ); c != nil {
			return string(c.Status) + "/" + c.Reason
		}
		return "absent"
	}
	scaleGuard := func(n int) {
		t.Helper()
		if _, err := guards.Patch(ctx, "echo", types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)), metav1.PatchOptions{}, "scale"); err != nil {
			t.Fatal(err)
		}
	}
	marked := func(name string) bool {
		p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Labels[autoscalingv1alpha1.DrainLabel] == "true"
	}
	deploymentReplicas := func() int32 {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return *d.Spec.Replicas
	}

	// A step that waits: the servers here do not follow the label, and onTimeout is Hold.
	create("echo", "echo", autoscalingv1alpha1.ScaleDownSpec{DrainTimeout: &metav1.Duration{Duration: 10 * time.Minute}, OnTimeout: autoscalingv1alpha1.OnTimeoutHold})
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		g := get("echo")
		return g.Spec.Replicas != nil && *g.Spec.Replicas == 3, fmt.Sprintf("spec.replicas %v", g.Spec.Replicas)
	})
	scaleGuard(2)
	var step *autoscalingv1alpha1.ScaleDownStep
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		g := get("echo")
		step = g.Status.Step
		return step != nil && marked(pods[1].Name), fmt.Sprintf("step %+v", step)
	})
	if len(step.Victims) != 1 || step.Victims[0].Name != pods[1].Name {
		t.Fatalf("victims %+v, want the least connected %s", step.Victims, pods[1].Name)
	}

	t.Run("the leader stops mid-drain: the other replica resumes the step, ledger intact", func(t *testing.T) {
		leader.shutdown(t)
		if leader == a {
			a = nil
		} else {
			b = nil
		}
		waitFor(ctx, t, 30*time.Second, func() (bool, string) { return follower.elected(), "the other replica does not lead" })
		// Any change makes the new leader decide; the step must be the same one.
		if _, err := guards.Patch(ctx, "echo", types.MergePatchType, []byte(`{"metadata":{"annotations":{"touch":"1"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // bounded: a few decisions of the new leader
		g := get("echo")
		if g.Status.Step == nil || !g.Status.Step.MarkTime.Equal(&step.MarkTime) || len(g.Status.Ledger) != 1 || !g.Status.Ledger[0].Open {
			t.Errorf("after the failover: step %+v ledger %+v; want the same step and one open reservation", g.Status.Step, g.Status.Ledger)
		}
		if !marked(pods[1].Name) || deploymentReplicas() != 3 {
			t.Errorf("victim marked %v, deployment %d; want marked and 3 (Hold)", marked(pods[1].Name), deploymentReplicas())
		}
	})

	t.Run("the Deployment scaled behind the guard's back: a condition, no fight; adopting releases the victim", func(t *testing.T) {
		scale := fmt.Sprintf(`{"spec":{"replicas":%d}}`, 4)
		if _, err := client.AppsV1().Deployments(ns).Patch(ctx, "echo", types.MergePatchType, []byte(scale), metav1.PatchOptions{}, "scale"); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			g := get("echo")
			return condition(g, autoscalingv1alpha1.ConditionReady) == "False/ForeignReplicaChange", condition(g, autoscalingv1alpha1.ConditionReady)
		})
		time.Sleep(2 * time.Second) // bounded: the guard must not write back
		if n := deploymentReplicas(); n != 4 {
			t.Errorf("deployment replicas %d, want 4: the guard fought the change", n)
		}
		scaleGuard(4)
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			g := get("echo")
			return condition(g, autoscalingv1alpha1.ConditionReady) == "True/AsExpected" && g.Status.Step == nil && !marked(pods[1].Name),
				fmt.Sprintf("ready %s step %+v victim marked %v", condition(g, autoscalingv1alpha1.ConditionReady), g.Status.Step, marked(pods[1].Name))
		})
	})

	var fourth string
	t.Run("a pod without a fresh value holds the scale-down", func(t *testing.T) {
		all := waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", 4)
		for _, p := range all {
			if _, ok := conns.counts[p.Name]; !ok {
				fourth = p.Name
			}
		}
		scaleGuard(3)
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			g := get("echo")
			return condition(g, autoscalingv1alpha1.ConditionScaleDownBlocked) == "True/MetricsUnavailable" && g.Status.Step == nil,
				fmt.Sprintf("blocked %s step %+v", condition(g, autoscalingv1alpha1.ConditionScaleDownBlocked), g.Status.Step)
		})
	})

	t.Run("a victim deleted by someone else: the step is abandoned and planned again", func(t *testing.T) {
		conns.mu.Lock()
		conns.counts[fourth] = 1
		conns.mu.Unlock()
		waitFor(ctx, t, time.Minute, func() (bool, string) { return marked(fourth), fourth + " not marked" })
		if err := client.CoreV1().Pods(ns).Delete(ctx, fourth, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			evs, err := client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			for _, e := range evs.Items {
				if e.Reason == policy.EventVictimLost && e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, fourth) {
					return true, ""
				}
			}
			return false, "no VictimLost event"
		})
		// The replacement pod has no value: the guard holds again instead of guessing.
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			g := get("echo")
			return condition(g, autoscalingv1alpha1.ConditionScaleDownBlocked) == "True/MetricsUnavailable",
				condition(g, autoscalingv1alpha1.ConditionScaleDownBlocked)
		})
	})

	t.Run("the guard deleted mid-drain: the victim serves again, the Deployment keeps its size", func(t *testing.T) {
		all := waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", 4)
		conns.mu.Lock()
		for _, p := range all {
			if _, ok := conns.counts[p.Name]; !ok {
				conns.counts[p.Name] = 500
			}
		}
		conns.mu.Unlock()
		waitFor(ctx, t, time.Minute, func() (bool, string) { return marked(pods[1].Name), pods[1].Name + " not marked" })
		if err := guards.Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			_, err := guards.Get(ctx, "echo", metav1.GetOptions{})
			return err != nil && !marked(pods[1].Name), fmt.Sprintf("guard: %v, victim marked %v", err, marked(pods[1].Name))
		})
		if n := deploymentReplicas(); n != 4 {
			t.Errorf("deployment replicas %d after deleting the guard, want 4", n)
		}
	})

	t.Run("a missing target", func(t *testing.T) {
		create("ghost", "nope", autoscalingv1alpha1.ScaleDownSpec{})
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			g := get("ghost")
			return condition(g, autoscalingv1alpha1.ConditionReady) == "False/TargetNotFound", condition(g, autoscalingv1alpha1.ConditionReady)
		})
	})
}
