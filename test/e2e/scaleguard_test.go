package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	autoscalingv1alpha1 "github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
	"github.com/wsscale/wsscale/pkg/policy/controller"
	"github.com/wsscale/wsscale/test/e2e/framework"
)

// fixedConnections reports a fixed connection count per pod, fresh at every look-up, as the
// adapter's store would for servers holding steady loads.
type fixedConnections struct {
	mu     sync.Mutex
	counts map[string]int64
}

func (f *fixedConnections) Scraped(*corev1.Pod) bool { return true }

func (f *fixedConnections) Lookup(_ context.Context, _ string, pods []string) ([]*policy.Metrics, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*policy.Metrics, len(pods))
	for i, p := range pods {
		if n, ok := f.counts[p]; ok {
			out[i] = &policy.Metrics{Connections: n, ScrapeStart: time.Now()}
		}
	}
	return out, nil
}

// TestScaleGuardScalesDownTheLeastConnected runs the ScaleGuard controller against the real
// API server, HPA controller, ReplicaSet controller and node agent: an HPA targeting the guard
// takes a Deployment of four pods to two, one step at a time, and the pods removed are exactly the
// victims the guard marked, the least connected. The echo servers here do not follow the drain
// label, so each step goes at its (short) deadline with onTimeout Proceed.
func TestScaleGuardScalesDownTheLeastConnected(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	installScaleGuardCRD(ctx, t, dyn)

	const ns = "scaleguard-e2e"
	createNamespace(ctx, t, client, ns)
	deploy, _ := demoManifests(t, ns)
	deploy.Spec.Replicas = ptr.To[int32](4)
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", 4)
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	conns := &fixedConnections{counts: map[string]int64{}}
	for i, p := range pods {
		conns.counts[p.Name] = []int64{300, 10, 200, 0}[i]
	}
	wantRemoved := map[string]bool{pods[1].Name: true, pods[3].Name: true}

	// The controller, in this process, as the adapter runs it (without leader election).
	ctrllog.SetLogger(klog.NewKlogr())
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := autoscalingv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mgr, err := manager.New(c.RESTConfig(), manager.Options{
		Scheme: scheme, Logger: klog.NewKlogr(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache: cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controller.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Metrics: conns,
		Recorder: mgr.GetEventRecorder(controller.FieldManager), Clock: clock.RealClock{}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stopMgr := context.WithCancel(ctx)
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(mgrCtx) }()
	defer func() {
		stopMgr()
		if err := <-mgrDone; err != nil {
			t.Errorf("controller manager: %v", err)
		}
	}()

	guards := dyn.Resource(scaleGuardResource).Namespace(ns)
	guard := &autoscalingv1alpha1.ScaleGuard{
		TypeMeta:   metav1.TypeMeta{APIVersion: autoscalingv1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard"},
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: autoscalingv1alpha1.ScaleGuardSpec{
			TargetRef: autoscalingv1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"},
			ScaleDown: autoscalingv1alpha1.ScaleDownSpec{DrainTimeout: &metav1.Duration{Duration: 5 * time.Second}},
		},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(guard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := guards.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the ScaleGuard: %v", err)
	}
	getGuard := func() (*autoscalingv1alpha1.ScaleGuard, error) {
		got, err := guards.Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		var g autoscalingv1alpha1.ScaleGuard
		return &g, runtime.DefaultUnstructuredConverter.FromUnstructured(got.Object, &g)
	}
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		g, err := getGuard()
		if err != nil {
			return false, err.Error()
		}
		return g.Spec.Replicas != nil && *g.Spec.Replicas == 4 && g.Status.Replicas == 4, fmt.Sprintf("spec %v status %+v", g.Spec.Replicas, g.Status)
	})

	// The real HPA controller targets the guard: its replicas (4) are above maxReplicas, so the
	// HPA writes 2 through the guard's /scale, whatever the metrics.
	if _, err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{
				APIVersion: autoscalingv1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard", Name: "echo"},
			MinReplicas: ptr.To[int32](1),
			MaxReplicas: 2,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: "websocket_connections"},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resourceQuantity(300)},
				},
			}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Watch every pod that goes: each must have been marked by the guard before it went.
	var removed []string
	marked := map[string]bool{}
	waitFor(ctx, t, 4*time.Minute, func() (bool, string) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=echo"})
		if err != nil {
			return false, err.Error()
		}
		present := map[string]bool{}
		for _, p := range list.Items {
			present[p.Name] = p.DeletionTimestamp == nil
			if p.Labels[autoscalingv1alpha1.DrainLabel] == "true" {
				marked[p.Name] = true
			}
		}
		for _, p := range pods {
			if !present[p.Name] && !contains(removed, p.Name) {
				removed = append(removed, p.Name)
			}
		}
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		g, err := getGuard()
		if err != nil {
			return false, err.Error()
		}
		return *d.Spec.Replicas == 2 && len(removed) == 2 && g.Status.Step == nil,
			fmt.Sprintf("deployment %d, removed %v, marked %v, guard state %s step %+v", *d.Spec.Replicas, removed, marked, g.Status.State, g.Status.Step)
	})
	for _, name := range removed {
		if !wantRemoved[name] || !marked[name] {
			t.Errorf("removed %s (marked by the guard: %v); want only the least connected %v", name, marked[name], wantRemoved)
		}
	}

	g, err := getGuard()
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Status.Ledger) != 2 || g.Status.Ledger[0].Disconnects != 0 || g.Status.Ledger[1].Disconnects != 10 || *g.Status.AppliedReplicas != 2 {
		t.Errorf("status %+v: want two closed steps of 0 and 10 disconnects, applied 2", g.Status)
	}
	evs, err := client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range evs.Items {
		if e.Regarding.Kind == "ScaleGuard" {
			seen[e.Reason]++
		}
	}
	for _, reason := range []string{policy.EventSeeded, policy.EventVictimsMarked, policy.EventCommitted, policy.EventStepComplete} {
		if seen[reason] == 0 {
			t.Errorf("no %s Event; saw %v", reason, seen)
		}
	}

	// In range, the HPA reads the guard's scale and parses its selector (draining pods excluded)
	// before it asks for metrics: it must never call the selector invalid.
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		able, active := false, false
		for _, c := range hpa.Status.Conditions {
			states = append(states, fmt.Sprintf("%s=%s (%s: %s)", c.Type, c.Status, c.Reason, c.Message))
			if c.Reason == "InvalidSelector" || c.Reason == "FailedGetScale" {
				t.Fatalf("the HPA refuses the ScaleGuard: %v", states)
			}
			able = able || (c.Type == autoscalingv2.AbleToScale && c.Status == corev1.ConditionTrue)
			active = active || c.Type == autoscalingv2.ScalingActive
		}
		return able && active && hpa.Status.CurrentReplicas == 2 && hpa.Status.DesiredReplicas <= 2, fmt.Sprintf("HPA %d/%d: %v", hpa.Status.CurrentReplicas, hpa.Status.DesiredReplicas, states)
	})
	if err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// Deleting the guard leaves the Deployment at its size; the finalizer lets it go.
	if err := guards.Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		_, err := getGuard()
		return err != nil && strings.Contains(err.Error(), "not found"), fmt.Sprintf("guard still there: %v", err)
	})
	if d, err := client.AppsV1().Deployments(ns).Get(ctx, "echo", metav1.GetOptions{}); err != nil || *d.Spec.Replicas != 2 {
		t.Errorf("after deleting the guard the deployment has %v replicas (%v), want 2", d.Spec.Replicas, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
