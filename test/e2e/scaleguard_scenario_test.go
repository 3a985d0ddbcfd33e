package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	autoscalingv1alpha1 "github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/test/e2e/framework"
)

// The scale-down scenario: six echo pods holding deliberately uneven loads, and an HPA whose
// target average (1,800 per pod) asks for two pods once it sees them.
var scenarioConnections = []int{2000, 1500, 40, 30, 0, 0}

const (
	scenarioTargetPerPod = 1800
	scenarioBudget       = 50
	scenarioWindow       = 30 * time.Second
	guardBindingName     = adapterName + ":scaleguard"
)

// scenarioOutcome is what one scale-down from six pods to two did to the clients.
type scenarioOutcome struct {
	removed    []string         // the pods that went, in the order they went
	cut        int64            // connections the removed pods held
	closes     map[string]int64 // server close codes seen by the clients of removed pods
	abrupt     int64            // connections that ended without a close frame
	closeTimes []time.Time      // when each close frame arrived
	maxWindow  int              // most closes in any window of scenarioWindow
	took       time.Duration    // from the HPA's creation to the Deployment at two ready pods
	connsOf    map[string]int   // connections each original pod held
}

// TestScaleGuardScenario is the ScaleGuard's end-to-end scenario with every part real: the
// adapter runs in the cluster (metrics API and the leader-elected guard), the echo pods drain on
// the label, the real HPA targets the ScaleGuard (behavior.scaleDown.tolerance 0), and six pods
// hold 2,000 / 1,500 / 40 / 30 / 0 / 0 connections. The HPA asks for two. The pods removed must
// be the four least connected; no client may lose its connection without a close frame; every
// close must be a 1001 from a drain; no window of the budget may see more disconnects than the
// budget allows; the Deployment must end at the HPA's two.
func TestScaleGuardScenario(t *testing.T) {
	out := runScaleDownScenario(t, true)
	want := map[string]bool{}
	for name, n := range out.connsOf {
		if n < 1000 {
			want[name] = true
		}
	}
	for _, name := range out.removed {
		if !want[name] {
			t.Errorf("removed %s with %d connections; want only the four least connected %v", name, out.connsOf[name], want)
		}
	}
	if out.abrupt != 0 {
		t.Errorf("%d connections ended without a close frame, want 0", out.abrupt)
	}
	for code, n := range out.closes {
		if code != "1001" {
			t.Errorf("%d server closes with code %s; every close must be a 1001 from a drain", n, code)
		}
	}
	if got := out.closes["1001"]; got != out.cut || out.cut != 70 {
		t.Errorf("%d clients got 1001 and the removed pods held %d; want both 70 (the pods of 40 and 30)", got, out.cut)
	}
	if out.maxWindow > scenarioBudget {
		t.Errorf("%d disconnects within %v, over the budget of %d", out.maxWindow, scenarioWindow, scenarioBudget)
	}
}

// TestPlainHPAScenario runs the same scenario with the HPA pointed at the Deployment directly, as
// the baseline the ScaleGuard is measured against: the ReplicaSet chooses the pods by its own
// ranking, whatever their connections.
func TestPlainHPAScenario(t *testing.T) {
	out := runScaleDownScenario(t, false)
	// The ReplicaSet's choice is its own; what is checked is that the numbers are complete.
	if got := out.closes["1001"] + out.abrupt + sumOtherCloses(out.closes); got != out.cut {
		t.Errorf("the removed pods held %d connections but %d ended", out.cut, got)
	}
}

func sumOtherCloses(closes map[string]int64) int64 {
	var n int64
	for code, c := range closes {
		if code != "1001" {
			n += c
		}
	}
	return n
}

// runScaleDownScenario sets up the six pods and their loads, lets the real HPA (through the guard
// when guarded) take the Deployment to two, and reports what the clients saw.
func runScaleDownScenario(t *testing.T, guarded bool) scenarioOutcome {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ns := "scenario-plain-hpa"
	if guarded {
		ns = "scenario-scaleguard"
		installScaleGuardCRD(ctx, t, dyn)
	}
	installAdapter(ctx, t, client, c.RESTConfig())
	if guarded {
		grantGuardRBAC(ctx, t, client)
	}
	createNamespace(ctx, t, client, ns)
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})

	deploy, _ := demoManifests(t, ns)
	deploy.Spec.Replicas = ptr.To[int32](int32(len(scenarioConnections)))
	// A shorter drain than the demo's keeps the scenario short; the closes are still spread.
	for i, e := range deploy.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "DRAIN_TIMEOUT" {
			deploy.Spec.Template.Spec.Containers[0].Env[i].Value = "4s"
		}
	}
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", len(scenarioConnections))
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })

	out := scenarioOutcome{closes: map[string]int64{}, connsOf: map[string]int{}}
	runs := map[string]*loadRun{}
	starts := map[string]time.Time{}
	for i, p := range pods {
		n := scenarioConnections[i]
		out.connsOf[p.Name] = n
		if n > 0 {
			starts[p.Name] = time.Now()
			runs[p.Name] = startLoad(c, p.Status.PodIP, n)
		}
	}
	defer func() {
		for _, r := range runs {
			r.stop()
		}
	}()
	for _, p := range pods {
		want := out.connsOf[p.Name]
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			got, err := connectionsActive(ctx, c, p.Status.PodIP)
			return err == nil && got == float64(want), fmt.Sprintf("pod %s: websocket_connections_active %v (%v), want %d", p.Name, got, err, want)
		})
	}
	// The HPA (and the guard) read the same numbers through the adapter.
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/websocket_connections", ns)
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		vals, err := podValues(ctx, client, path)
		if err != nil {
			return false, err.Error()
		}
		for name, n := range out.connsOf {
			if vals[name] != int64(n) {
				return false, fmt.Sprintf("adapter serves %v, want %v", vals, out.connsOf)
			}
		}
		return true, ""
	})

	guards := dyn.Resource(scaleGuardResource).Namespace(ns)
	getGuard := func() (*autoscalingv1alpha1.ScaleGuard, error) {
		u, err := guards.Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		var g autoscalingv1alpha1.ScaleGuard
		return &g, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &g)
	}
	target := autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"}
	if guarded {
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&autoscalingv1alpha1.ScaleGuard{
			TypeMeta:   metav1.TypeMeta{APIVersion: autoscalingv1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard"},
			ObjectMeta: metav1.ObjectMeta{Name: "echo"},
			Spec: autoscalingv1alpha1.ScaleGuardSpec{
				TargetRef: autoscalingv1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"},
				ScaleDown: autoscalingv1alpha1.ScaleDownSpec{
					DrainTimeout:      &metav1.Duration{Duration: time.Minute},
					MaxVictimsPerStep: ptr.To[int32](2),
					DisconnectBudget:  &autoscalingv1alpha1.DisconnectBudget{MaxDisconnects: scenarioBudget, Window: &metav1.Duration{Duration: scenarioWindow}},
				},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := guards.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create the ScaleGuard: %v", err)
		}
		// The adapter's guard seeds spec.replicas from the Deployment.
		waitFor(ctx, t, 2*time.Minute, func() (bool, string) {
			g, err := getGuard()
			if err != nil {
				return false, err.Error()
			}
			return g.Spec.Replicas != nil && *g.Spec.Replicas == 6 && g.Status.Replicas == 6,
				fmt.Sprintf("the adapter's guard has not seeded the ScaleGuard: spec %v status %+v", g.Spec.Replicas, g.Status)
		})
		target = autoscalingv2.CrossVersionObjectReference{APIVersion: autoscalingv1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard", Name: "echo"}
	}

	began := time.Now()
	if _, err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: target,
			MinReplicas:    ptr.To[int32](2),
			MaxReplicas:    6,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: "websocket_connections"},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resourceQuantity(scenarioTargetPerPod)},
				},
			}},
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleDown: &autoscalingv2.HPAScalingRules{
				StabilizationWindowSeconds: ptr.To[int32](0),
				Tolerance:                  resource.NewQuantity(0, resource.DecimalSI),
			}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Watch the pods go: each must have been marked by the guard (when there is one) first.
	marked := map[string]bool{}
	gone := map[string]bool{}
	waitFor(ctx, t, 3*time.Minute, func() (bool, string) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=echo"})
		if err != nil {
			return false, err.Error()
		}
		present := map[string]bool{}
		ready := 0
		for _, p := range list.Items {
			present[p.Name] = p.DeletionTimestamp == nil
			if p.Labels[autoscalingv1alpha1.DrainLabel] == "true" {
				marked[p.Name] = true
			}
			if p.DeletionTimestamp == nil && isReady(&p) {
				ready++
			}
		}
		for _, p := range pods {
			if !present[p.Name] && !gone[p.Name] {
				gone[p.Name] = true
				out.removed = append(out.removed, p.Name)
				t.Logf("%v: %s went, %d connections, marked by the guard: %v", time.Since(began).Round(time.Second), p.Name, out.connsOf[p.Name], marked[p.Name])
			}
		}
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		state := fmt.Sprintf("deployment %d, ready %d, removed %v, marked %v", *d.Spec.Replicas, ready, out.removed, marked)
		done := *d.Spec.Replicas == 2 && ready == 2 && len(out.removed) == 4
		if guarded {
			g, err := getGuard()
			if err != nil {
				return false, err.Error()
			}
			state += fmt.Sprintf(", guard %s step %+v", g.Status.State, g.Status.Step)
			done = done && g.Status.Step == nil
		}
		return done, state
	})
	out.took = time.Since(began)

	for _, name := range out.removed {
		if guarded && !marked[name] {
			t.Errorf("pod %s went without the guard's mark", name)
		}
		out.cut += int64(out.connsOf[name])
		run, ok := runs[name]
		if !ok {
			continue
		}
		select {
		case res := <-run.done:
			if res.err != nil {
				t.Fatalf("load against %s: %v", name, res.err)
			}
			for code, n := range res.ClosesByCode {
				out.closes[code] += n
			}
			out.abrupt += res.AbnormalDrops
			for _, ts := range res.CloseTimestamps {
				out.closeTimes = append(out.closeTimes, starts[name].Add(time.Duration(ts)))
			}
			delete(runs, name)
		case <-time.After(time.Minute):
			t.Fatalf("the clients of removed pod %s never all ended", name)
		}
	}
	// The pods that stay keep every client until the client closes.
	for name, run := range runs {
		select {
		case res := <-run.done:
			t.Errorf("clients of %s, which stays, were disconnected: %+v", name, res.Result)
			continue
		default:
		}
		run.stop()
		if res := <-run.done; res.err != nil || res.ClosedByClient != int64(run.connections) || res.AbnormalDrops != 0 {
			t.Errorf("clients of %s, which stays: %+v, %v; want all %d open until the client closed them", name, res.Result, res.err, run.connections)
		}
		delete(runs, name)
	}
	out.maxWindow = maxInWindow(out.closeTimes, scenarioWindow)

	hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hpa.Status.DesiredReplicas != 2 {
		t.Errorf("the HPA's desired replicas are %d, want 2", hpa.Status.DesiredReplicas)
	}
	if guarded {
		logGuardEvents(ctx, t, client, ns)
		g, err := getGuard()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("ledger %+v", g.Status.Ledger)
	}
	t.Logf("SCENARIO guarded=%v removed=%v cut=%d closes=%v abrupt=%d maxPer%v=%d took=%v",
		guarded, out.removed, out.cut, out.closes, out.abrupt, scenarioWindow, out.maxWindow, out.took.Round(time.Second))

	// The HPA and the guard go before the namespace, so that the guard's finalizer is served.
	if err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete the HPA: %v", err)
	}
	if guarded {
		if err := guards.Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete the ScaleGuard: %v", err)
		}
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			_, err := getGuard()
			return apierrors.IsNotFound(err), fmt.Sprintf("the ScaleGuard is still there: %v", err)
		})
	}
	return out
}

// maxInWindow is the most timestamps within any window of length w.
func maxInWindow(times []time.Time, w time.Duration) int {
	sorted := append([]time.Time(nil), times...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Before(sorted[j]) })
	most, lo := 0, 0
	for hi := range sorted {
		for sorted[hi].Sub(sorted[lo]) >= w {
			lo++
		}
		most = max(most, hi-lo+1)
	}
	return most
}

// grantGuardRBAC binds the guard's ClusterRole (config/rbac/role.yaml, Lease included) to the
// adapter's service account, and unbinds it when the test ends: the other ScaleGuard tests run
// their own controllers, which the adapter's must not compete with.
func grantGuardRBAC(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(bytes.TrimPrefix(bytes.TrimSpace(data), []byte("---\n")), nil, nil)
	if err != nil {
		t.Fatalf("config/rbac/role.yaml: %v", err)
	}
	role, ok := obj.(*rbacv1.ClusterRole)
	if !ok {
		t.Fatalf("config/rbac/role.yaml holds a %T, want a ClusterRole", obj)
	}
	must[*rbacv1.ClusterRole](t, "the guard's role")(client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}))
	must[*rbacv1.ClusterRoleBinding](t, "the guard's binding")(client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: guardBindingName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: adapterName, Namespace: adapterNamespace}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
	}, metav1.CreateOptions{}))
	t.Cleanup(func() {
		if err := client.RbacV1().ClusterRoleBindings().Delete(context.Background(), guardBindingName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("unbind the guard's role: %v", err)
		}
	})
}

// logGuardEvents prints the ScaleGuard's Events: which pods it chose and why, step by step.
func logGuardEvents(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) {
	t.Helper()
	evs, err := client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(evs.Items, func(i, j int) bool { return evs.Items[i].EventTime.Before(&evs.Items[j].EventTime) })
	var lines []string
	for _, e := range evs.Items {
		if e.Regarding.Kind == "ScaleGuard" {
			lines = append(lines, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Note))
		}
	}
	t.Logf("the ScaleGuard's Events:\n  %s", strings.Join(lines, "\n  "))
}
