package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	autoscalingv1alpha1 "github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
	"github.com/wsscale/wsscale/test/e2e/framework"
)

const (
	guardedAppNS      = "e2e-charts-guard"
	guardedAppRelease = "echo"
	guardedAppName    = "echo-websocket-app"
	guardLease        = "wsscale-scaleguard"
	// The app chart's values: the HPA targets a ScaleGuard; a short drain keeps the test short while
	// still spreading the closes; no scale-down stabilization, so that the HPA follows its bounds.
	guardedAppValues = `
server:
  drainTimeoutSeconds: 10
preStopSleepSeconds: 1
autoscaling:
  minReplicas: 3
  maxReplicas: 3
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 0
      policies:
        - type: Pods
          value: 1
          periodSeconds: 15
scaleGuard:
  enabled: true
  scaleDown:
    drainTimeout: 2m
    maxVictimsPerStep: 1
    disconnectBudget:
      maxDisconnects: 50
      window: 10m
`
)

// TestChartsGuardedScaleDown installs the two charts side by side as users do: the adapter chart
// (two replicas, leader election for the guard) and the websocket-app chart with its HPA targeting
// a ScaleGuard. The HPA reads the pods' real websocket_connections through the adapter. Lowering
// the HPA's bounds with `helm upgrade` then scales down through the guard twice: the least
// connected pod drains (its clients get 1001, none is cut) before the Deployment shrinks. During
// the second drain the adapter pod that leads the guard is killed: the other replica takes the
// Lease and finishes the step; no pod stays marked, the ledger stays within the budget, and the
// Events show who did what.
func TestChartsGuardedScaleDown(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	helm := newHelm(t, c)
	removeForeignAPIServices(ctx, t, dyn)
	adoptScaleGuardCRD(ctx, t, dyn, chartRelease, chartNamespace)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		// The app (its ScaleGuard's finalizer needs the adapter) before the adapter.
		if _, err := helm.run(cctx, "uninstall", guardedAppRelease, "-n", guardedAppNS, "--wait", "--ignore-not-found"); err != nil {
			t.Logf("uninstall the app: %v", err)
		}
		if _, err := helm.run(cctx, "uninstall", chartRelease, "-n", chartNamespace, "--wait", "--ignore-not-found"); err != nil {
			t.Logf("uninstall the adapter: %v", err)
		}
		_ = client.CoreV1().Namespaces().Delete(cctx, guardedAppNS, metav1.DeleteOptions{})
	})

	// Short leader election timings (chart values), so that a killed leader is replaced in seconds.
	if _, err := helm.run(ctx, "install", chartRelease, chartDir(t), "-n", chartNamespace, "--create-namespace",
		"--wait", "--timeout", "5m", "--set", "adapter.scrapeInterval=2s",
		"--set-json", `adapter.extraArgs=["--leader-election-lease-duration=6s","--leader-election-renew-deadline=4s","--leader-election-retry-period=1s"]`); err != nil {
		t.Fatal(err)
	}
	waitAPIServicesAvailable(ctx, t, dyn)

	// The app chart with no values at all, next to the adapter chart: its HPA shows a current value.
	createNamespace(ctx, t, client, defaultsAppNS)
	if _, err := helm.run(ctx, "install", "echo", filepath.Join(root, appChart), "-n", defaultsAppNS, "--wait", "--timeout", "3m"); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, 2*time.Minute, func() (bool, string) {
		_, ok, why := hpaCurrentConnections(ctx, client, defaultsAppNS, "echo-websocket-app")
		return ok, why
	})
	if _, err := helm.run(ctx, "uninstall", "echo", "-n", defaultsAppNS, "--wait"); err != nil {
		t.Errorf("uninstall the app with default values: %v", err)
	}
	if err := client.CoreV1().Namespaces().Delete(ctx, defaultsAppNS, metav1.DeleteOptions{}); err != nil {
		t.Logf("delete namespace %s: %v", defaultsAppNS, err)
	}

	createNamespace(ctx, t, client, guardedAppNS)
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte(guardedAppValues), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := helm.run(ctx, "install", guardedAppRelease, filepath.Join(root, appChart), "-n", guardedAppNS,
		"-f", values, "--wait", "--timeout", "3m"); err != nil {
		t.Fatal(err)
	}

	// The HPA writes 3 into the guard, which scales the Deployment up at once.
	selector := "app.kubernetes.io/instance=" + guardedAppRelease + ",app.kubernetes.io/name=websocket-app"
	pods := waitForReadyPods(ctx, t, client, guardedAppNS, selector, 3)
	// helm test before the load: its connections are gone once every pod holds exactly its clients,
	// so they never count in a victim's cost.
	if out, err := helm.run(ctx, "test", guardedAppRelease, "-n", guardedAppNS, "--timeout", "2m"); err != nil || !strings.Contains(out, "Phase:          Succeeded") {
		t.Errorf("helm test of the app: %v\n%s", err, out)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	conns := map[string]int{pods[0].Name: 20, pods[1].Name: 12, pods[2].Name: 4}
	runs := map[string]*loadRun{}
	defer func() {
		for _, r := range runs {
			r.stop()
		}
	}()
	for _, p := range pods {
		runs[p.Name] = startLoad(c, p.Status.PodIP, conns[p.Name])
	}
	for _, p := range pods {
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			got, err := connectionsActive(ctx, c, p.Status.PodIP)
			return err == nil && got == float64(conns[p.Name]), fmt.Sprintf("pod %s: websocket_connections_active %v (%v), want %d", p.Name, got, err, conns[p.Name])
		})
	}
	// The HPA's current value is the adapter's: 36 connections over 3 pods.
	waitFor(ctx, t, 2*time.Minute, func() (bool, string) {
		v, ok, why := hpaCurrentConnections(ctx, client, guardedAppNS, guardedAppName)
		return ok && v == 12, why
	})

	// Step 1: the HPA's bounds lowered to 2 by the chart; the guard drains the pod of 4.
	began := time.Now()
	if _, err := helm.run(ctx, "upgrade", guardedAppRelease, filepath.Join(root, appChart), "-n", guardedAppNS, "--reuse-values",
		"--set", "autoscaling.minReplicas=2,autoscaling.maxReplicas=2"); err != nil {
		t.Fatal(err)
	}
	waitGuardedStep(ctx, t, client, dyn, selector, pods[2].Name, 2, nil)
	checkDrainedClients(t, runs, pods[2].Name, conns[pods[2].Name])
	t.Logf("step 1: %s (%d connections) drained and removed in %v", pods[2].Name, conns[pods[2].Name], time.Since(began).Round(time.Second))

	// Step 2: to 1, with the leading adapter pod killed while the victim drains.
	oldLeader := leaseHolder(ctx, t, client)
	began = time.Now()
	if _, err := helm.run(ctx, "upgrade", guardedAppRelease, filepath.Join(root, appChart), "-n", guardedAppNS, "--reuse-values",
		"--set", "autoscaling.minReplicas=1,autoscaling.maxReplicas=1"); err != nil {
		t.Fatal(err)
	}
	killLeader := func() {
		// A kill, not a graceful stop: no Lease release, the other replica waits for it to expire.
		if err := client.CoreV1().Pods(chartNamespace).Delete(ctx, oldLeader, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatalf("kill the leading adapter pod %s: %v", oldLeader, err)
		}
		t.Logf("killed the leading adapter pod %s %v after the upgrade", oldLeader, time.Since(began).Round(time.Second))
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			now := leaseHolder(ctx, t, client)
			return now != "" && now != oldLeader, "Lease held by " + now
		})
		t.Logf("the Lease is held by %s", leaseHolder(ctx, t, client))
	}
	waitGuardedStep(ctx, t, client, dyn, selector, pods[1].Name, 1, killLeader)
	checkDrainedClients(t, runs, pods[1].Name, conns[pods[1].Name])
	t.Logf("step 2: %s (%d connections) drained and removed in %v, across the failover", pods[1].Name, conns[pods[1].Name], time.Since(began).Round(time.Second))

	// Nothing stranded, the ledger within the budget, and the clients of the pod that stays intact.
	marked, err := client.CoreV1().Pods(guardedAppNS).List(ctx, metav1.ListOptions{LabelSelector: autoscalingv1alpha1.DrainLabel + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range marked.Items {
		t.Errorf("pod %s is still marked for draining", p.Name)
	}
	g, err := getScaleGuard(ctx, dyn, guardedAppNS, guardedAppName)
	if err != nil {
		t.Fatal(err)
	}
	var spent int64
	for _, e := range g.Status.Ledger {
		if e.Open {
			t.Errorf("ledger entry still open: %+v", e)
		}
		spent += e.Disconnects
	}
	if len(g.Status.Ledger) != 2 || spent != 16 {
		t.Errorf("ledger %+v: want two closed steps disconnecting 4 and 12 clients", g.Status.Ledger)
	}
	if spent > 50 {
		t.Errorf("the steps disconnected %d clients, over the budget of 50", spent)
	}
	select {
	case res := <-runs[pods[0].Name].done:
		t.Errorf("the clients of %s, which stays, ended: %+v", pods[0].Name, res.Result)
	default:
	}

	// The story in Events: the step was planned by the killed leader and finished by the other replica.
	evs, err := client.EventsV1().Events(guardedAppNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(evs.Items, func(i, j int) bool { return evs.Items[i].EventTime.Before(&evs.Items[j].EventTime) })
	var story []string
	markedBy, finishedBy := "", ""
	for _, e := range evs.Items {
		if e.Regarding.Kind != "ScaleGuard" {
			continue
		}
		story = append(story, fmt.Sprintf("%s %s [%s]: %s", e.Type, e.Reason, e.ReportingInstance, e.Note))
		if strings.Contains(e.Note, pods[1].Name) || e.Reason == policy.EventStepComplete {
			switch e.Reason {
			case policy.EventVictimsMarked:
				markedBy = e.ReportingInstance
			case policy.EventStepComplete:
				finishedBy = e.ReportingInstance
			}
		}
	}
	t.Logf("the ScaleGuard's Events:\n  %s", strings.Join(story, "\n  "))
	if !strings.HasSuffix(markedBy, oldLeader) || finishedBy == "" || strings.HasSuffix(finishedBy, oldLeader) {
		t.Errorf("step 2 marked by %q and finished by %q; want it marked by the killed leader %s and finished by the other replica", markedBy, finishedBy, oldLeader)
	}
}

// waitGuardedStep waits until the guard has marked victim, the victim is gone and the Deployment
// and the HPA are at want, with the step closed. During the drain (once the victim is marked) it
// calls whileDraining, if set.
func waitGuardedStep(ctx context.Context, t *testing.T, client kubernetes.Interface, dyn dynamic.Interface, selector, victim string, want int32, whileDraining func()) {
	t.Helper()
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		p, err := client.CoreV1().Pods(guardedAppNS).Get(ctx, victim, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Labels[autoscalingv1alpha1.DrainLabel] == "true", fmt.Sprintf("%s not marked: labels %v", victim, p.Labels)
	})
	if whileDraining != nil {
		whileDraining()
	}
	waitFor(ctx, t, 3*time.Minute, func() (bool, string) {
		d, err := client.AppsV1().Deployments(guardedAppNS).Get(ctx, guardedAppName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		g, err := getScaleGuard(ctx, dyn, guardedAppNS, guardedAppName)
		if err != nil {
			return false, err.Error()
		}
		_, err = client.CoreV1().Pods(guardedAppNS).Get(ctx, victim, metav1.GetOptions{})
		gone := apierrors.IsNotFound(err)
		hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(guardedAppNS).Get(ctx, guardedAppName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return *d.Spec.Replicas == want && gone && g.Status.Step == nil && hpa.Status.DesiredReplicas == want,
			fmt.Sprintf("deployment %d, victim %s gone %v, HPA desired %d, guard %s step %+v", *d.Spec.Replicas, victim, gone, hpa.Status.DesiredReplicas, g.Status.State, g.Status.Step)
	})
	// The HPA never refused the guard.
	hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(guardedAppNS).Get(ctx, guardedAppName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range hpa.Status.Conditions {
		if c.Type == autoscalingv2.AbleToScale && c.Status != corev1.ConditionTrue {
			t.Errorf("HPA: %s=%s (%s: %s)", c.Type, c.Status, c.Reason, c.Message)
		}
	}
}

// checkDrainedClients checks that every client of the removed pod got a 1001 and none was cut.
func checkDrainedClients(t *testing.T, runs map[string]*loadRun, pod string, n int) {
	t.Helper()
	select {
	case res := <-runs[pod].done:
		delete(runs, pod)
		if res.err != nil {
			t.Fatalf("load against %s: %v", pod, res.err)
		}
		if res.ClosesByCode["1001"] != int64(n) || res.AbnormalDrops != 0 || len(res.ClosesByCode) != 1 {
			t.Errorf("clients of %s: closes %v, abnormal drops %d; want %d × 1001 and nothing else", pod, res.ClosesByCode, res.AbnormalDrops, n)
		}
		t.Logf("clients of %s: closes %v, abnormal drops %d", pod, res.ClosesByCode, res.AbnormalDrops)
	case <-time.After(time.Minute):
		t.Fatalf("the clients of %s never all ended", pod)
	}
}

// leaseHolder is the adapter pod that holds the guard's Lease (controller-runtime's identity is the
// host name, the pod's name, and a suffix).
func leaseHolder(ctx context.Context, t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	l, err := client.CoordinationV1().Leases(chartNamespace).Get(ctx, guardLease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	holder, _, _ := strings.Cut(*l.Spec.HolderIdentity, "_")
	return holder
}

// adoptScaleGuardCRD marks a ScaleGuard CRD that another test applied without Helm, or another
// release installed, as the adapter release's (release in namespace), as a user adopts existing
// objects, so that the chart's install can own it.
func adoptScaleGuardCRD(ctx context.Context, t *testing.T, dyn dynamic.Interface, release, namespace string) {
	t.Helper()
	const name = "scaleguards.autoscaling.wsscale.io"
	crd, err := dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if a := crd.GetAnnotations(); a["meta.helm.sh/release-name"] == release && a["meta.helm.sh/release-namespace"] == namespace {
		return
	}
	patch := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{
			"name":        name,
			"labels":      map[string]any{"app.kubernetes.io/managed-by": "Helm"},
			"annotations": map[string]any{"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace},
		},
	}}
	if _, err := dyn.Resource(crdResource).Apply(ctx, name, patch, metav1.ApplyOptions{FieldManager: "wsscale-e2e-adopt", Force: true}); err != nil {
		t.Fatalf("adopt CRD %s for the chart: %v", name, err)
	}
}

// defaultsAppNS holds the websocket-app chart installed with no values next to the adapter chart.
const defaultsAppNS = "chart-defaults"

// hpaCurrentConnections returns the HPA's current average websocket_connections, whether it has
// one, and what it shows otherwise.
func hpaCurrentConnections(ctx context.Context, client kubernetes.Interface, ns, name string) (int64, bool, string) {
	hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, false, err.Error()
	}
	for _, m := range hpa.Status.CurrentMetrics {
		if m.Pods != nil && m.Pods.Metric.Name == "websocket_connections" && m.Pods.Current.AverageValue != nil {
			return m.Pods.Current.AverageValue.Value(), true, "HPA " + ns + "/" + name + " current websocket_connections " + m.Pods.Current.AverageValue.String()
		}
	}
	return 0, false, fmt.Sprintf("HPA %s/%s has no websocket_connections value yet: %+v", ns, name, hpa.Status.Conditions)
}
