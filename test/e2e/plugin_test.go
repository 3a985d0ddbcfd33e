package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	autoscalingv1alpha1 "github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

// plugin runs `kubectl wsscale ARGS...` through the pinned kubectl, which finds kubectl-wsscale on
// PATH as any kubectl plugin, against the test cluster. It returns stdout, stderr and the exit code.
func plugin(ctx context.Context, t *testing.T, c *localcluster.Cluster, args ...string) (string, string, int) {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, ".local", "bin")
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), append([]string{"wsscale", "--kubeconfig", c.Kubeconfig()}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("kubectl wsscale %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), stderr.String(), code
}

// pluginStatus is the part of `status -o json` the tests read.
type pluginStatus struct {
	Workloads []struct {
		Namespace    string `json:"namespace"`
		HPA          string `json:"hpa"`
		ScaleGuard   string `json:"scaleGuard"`
		Deployment   string `json:"deployment"`
		GuardDesired *int32 `json:"guardDesiredReplicas"`
		Applied      *int32 `json:"appliedReplicas"`
		Ready        int32  `json:"readyReplicas"`
		Pods         []struct {
			Name        string           `json:"name"`
			Ready       bool             `json:"ready"`
			Draining    bool             `json:"draining"`
			Connections *int64           `json:"connections"`
			ValueAge    *metav1.Duration `json:"valueAge"`
			Note        string           `json:"note"`
		} `json:"pods"`
		Next *struct {
			Victims []string `json:"victims"`
			Why     string   `json:"why"`
			Blocked string   `json:"blocked"`
		} `json:"nextScaleDown"`
		Budget *struct {
			Max  int64 `json:"maxDisconnects"`
			Left int64 `json:"left"`
		} `json:"budget"`
		Events []struct {
			Reason string `json:"reason"`
		} `json:"events"`
		Problems []string `json:"problems"`
	} `json:"workloads"`
}

// pluginEcho runs the demo's echo Deployment (hack/demo/echo.yaml) with n replicas in ns behind a
// ClusterIP Service, and returns its ready pods sorted by name.
func pluginEcho(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string, n int32) []corev1.Pod {
	t.Helper()
	createNamespace(ctx, t, client, ns)
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	deploy, svc := demoManifests(t, ns)
	deploy.Spec.Replicas = ptr.To(n)
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Spec.Ports[0].NodePort = 0
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", int(n))
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods
}

// pluginAdapter installs the adapter with the ScaleGuard CRD and the guard's role, after removing
// custom metrics APIServices that point anywhere else (left by a chart test).
func pluginAdapter(ctx context.Context, t *testing.T, c *localcluster.Cluster) dynamic.Interface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range metricsAPIServices {
		obj, err := dyn.Resource(apiServiceResource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		if svc, _, _ := unstructured.NestedString(obj.Object, "spec", "service", "name"); svc != adapterName {
			if err := dyn.Resource(apiServiceResource).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	installScaleGuardCRD(ctx, t, dyn)
	installAdapter(ctx, t, c.Client(), c.RESTConfig())
	grantGuardRBAC(ctx, t, c.Client())
	return dyn
}

// pluginGuard puts a ScaleGuard named echo with the given scale-down settings in front of the
// Deployment echo in ns, and an HPA named echo through it on websocket_connections with a target of
// 1,000 per pod, far above the tests' loads, so that minReplicas holds. It returns the
// namespace's ScaleGuards.
func pluginGuard(ctx context.Context, t *testing.T, client kubernetes.Interface, dyn dynamic.Interface, ns string, scaleDown autoscalingv1alpha1.ScaleDownSpec, minReplicas, maxReplicas int32) dynamic.ResourceInterface {
	t.Helper()
	guard, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&autoscalingv1alpha1.ScaleGuard{
		TypeMeta:   metav1.TypeMeta{APIVersion: autoscalingv1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard"},
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: autoscalingv1alpha1.ScaleGuardSpec{
			TargetRef: autoscalingv1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"},
			ScaleDown: scaleDown,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	guards := dyn.Resource(scaleGuardResource).Namespace(ns)
	if _, err := guards.Create(ctx, &unstructured.Unstructured{Object: guard}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: autoscalingv1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard", Name: "echo"},
			MinReplicas:    ptr.To(minReplicas),
			MaxReplicas:    maxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: "websocket_connections"},
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resourceQuantity(1000)},
			}}},
		},
	}
	if _, err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return guards
}

// TestPluginStatus holds known numbers of connections on three echo pods with the load client
// (30, 12 and 0) and checks what `kubectl wsscale status` shows: those counts per pod as the HPA
// reads them, the guard's desired and applied replicas, the empty pod as the next victim, the
// budget; then it records a guarded scale-down with `record` and checks the picture's structure.
func TestPluginStatus(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dyn := pluginAdapter(ctx, t, c)
	const ns = "plugin-status"
	pods := pluginEcho(ctx, t, client, ns, 3)
	want := map[string]int64{pods[0].Name: 30, pods[1].Name: 12, pods[2].Name: 0}
	for _, p := range pods {
		if n := want[p.Name]; n > 0 {
			run := startLoad(c, p.Status.PodIP, int(n))
			defer run.stop()
		}
	}
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/websocket_connections", ns)
	poll(ctx, t, "the adapter serves the loads", time.Minute, func() (bool, string) {
		got, err := podValues(ctx, client, path)
		if err != nil {
			return false, err.Error()
		}
		for name, n := range want {
			if v, ok := got[name]; !ok || v != n {
				return false, fmt.Sprint(got)
			}
		}
		return true, fmt.Sprint(got)
	})

	// An HPA through the guard that keeps three pods.
	guards := pluginGuard(ctx, t, client, dyn, ns, autoscalingv1alpha1.ScaleDownSpec{
		DrainTimeout:     &metav1.Duration{Duration: time.Minute},
		DisconnectBudget: &autoscalingv1alpha1.DisconnectBudget{MaxDisconnects: 50, Window: &metav1.Duration{Duration: time.Minute}},
	}, 3, 5)
	t.Cleanup(func() { _ = guards.Delete(context.Background(), "echo", metav1.DeleteOptions{}) })

	var st pluginStatus
	poll(ctx, t, "kubectl wsscale status -o json", 2*time.Minute, func() (bool, string) {
		out, errOut, code := plugin(ctx, t, c, "-n", ns, "status", "-o", "json")
		if code != 0 {
			return false, fmt.Sprintf("exit %d: %s", code, errOut)
		}
		st = pluginStatus{}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return false, fmt.Sprintf("%v: %s", err, out)
		}
		if len(st.Workloads) != 1 {
			return false, out
		}
		w := st.Workloads[0]
		got := map[string]int64{}
		for _, p := range w.Pods {
			if p.Connections != nil {
				got[p.Name] = *p.Connections
			}
		}
		ok := w.GuardDesired != nil && *w.GuardDesired == 3 && w.Applied != nil && *w.Applied == 3 && w.Ready == 3 &&
			fmt.Sprint(got) == fmt.Sprint(want) && w.Next != nil && len(w.Next.Victims) == 1
		return ok, out
	})
	w := st.Workloads[0]
	if w.HPA != "echo" || w.ScaleGuard != "echo" || w.Deployment != "echo" {
		t.Errorf("workload %s → %s → %s, want the HPA, ScaleGuard and Deployment echo", w.HPA, w.ScaleGuard, w.Deployment)
	}
	for _, p := range w.Pods {
		if !p.Ready || p.Draining || p.ValueAge == nil || p.ValueAge.Duration > 30*time.Second {
			t.Errorf("pod %s: ready %v, draining %v, value age %v; want ready, serving, a fresh value", p.Name, p.Ready, p.Draining, p.ValueAge)
		}
	}
	if !strings.HasPrefix(w.Next.Victims[0], pods[2].Name+" (0 connections)") {
		t.Errorf("next victim %v (%s), want %s, the pod without connections", w.Next.Victims, w.Next.Why, pods[2].Name)
	}
	if w.Budget == nil || w.Budget.Max != 50 || w.Budget.Left != 50 {
		t.Errorf("budget %+v, want 50 of 50 left", w.Budget)
	}

	// The text form shows the same numbers.
	out, errOut, code := plugin(ctx, t, c, "-n", ns, "status", "echo")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	t.Logf("kubectl wsscale status:\n%s", out)
	for name, n := range want {
		if !containsLine(out, name, fmt.Sprintf(" %d ", n)) {
			t.Errorf("status lacks a line with %s and %d connections", name, n)
		}
	}
	for _, s := range []string{"HPA echo → ScaleGuard echo → Deployment echo", "next victim: " + pods[2].Name, "50 of 50 disconnects left", "total"} {
		if !strings.Contains(out, s) {
			t.Errorf("status lacks %q", s)
		}
	}
	// -w redraws in place until interrupted.
	wctx, wcancel := context.WithTimeout(ctx, 3500*time.Millisecond)
	out, _, _ = plugin(wctx, t, c, "-n", ns, "status", "-w", "--interval", "1s")
	wcancel()
	if n := strings.Count(out, "\033[H\033[2J"); n < 2 {
		t.Errorf("status -w redrew %d times in 3.5 s at 1 s, want at least 2", n)
	}
	// Bad input.
	if _, errOut, code := plugin(ctx, t, c, "-n", ns, "status", "-o", "xml", "a", "b"); code != 2 || !strings.Contains(errOut, `--output "xml"`) || !strings.Contains(errOut, "at most one TARGET") {
		t.Errorf("status -o xml a b: exit %d, %q; want exit 2 naming both problems", code, errOut)
	}
	if out, _, code := plugin(ctx, t, c, "-n", ns, "status", "nothing-here"); code != 0 || !strings.Contains(out, "No WebSocket workload") {
		t.Errorf("status of an unknown target: exit %d, %q", code, out)
	}

	// record: the HPA goes, the guard is asked for two; it drains the empty pod and removes it.
	if err := client.AutoscalingV2().HorizontalPodAutoscalers(ns).Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "timeline.svg")
	recorded := make(chan string, 1)
	go func() {
		out, errOut, code := plugin(ctx, t, c, "-n", ns, "record", "echo", "--duration", "25s", "--interval", "1s", "-o", file)
		recorded <- fmt.Sprintf("exit %d: %s%s", code, out, errOut)
	}()
	time.Sleep(3 * time.Second) // a few samples before the scale-down
	if _, err := guards.Patch(ctx, "echo", types.MergePatchType, []byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	result := <-recorded
	t.Logf("record: %s", result)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("record wrote nothing: %v (%s)", err, result)
	}
	if keep := os.Getenv("WSSCALE_E2E_TIMELINE"); keep != "" { // to look at it
		if err := os.WriteFile(keep, data, 0o644); err != nil {
			t.Error(err)
		}
	}
	checkTimelineSVG(t, data, podNames(pods), []string{"VictimsMarked"})
}

// checkTimelineSVG checks a timeline picture's structure: an area for every pod, the replica
// line, and a marker for each reason.
func checkTimelineSVG(t *testing.T, data []byte, pods []string, reasons []string) {
	t.Helper()
	s := string(data)
	if !strings.HasPrefix(s, "<svg ") || !strings.HasSuffix(strings.TrimSpace(s), "</svg>") {
		t.Fatalf("not an SVG document: %.200s", s)
	}
	for _, p := range pods {
		if !strings.Contains(s, `<path class="pod" data-pod="`+p+`"`) {
			t.Errorf("the timeline has no area for pod %s", p)
		}
	}
	if !strings.Contains(s, `<path class="replicas"`) {
		t.Error("the timeline has no replica line")
	}
	for _, r := range reasons {
		if !strings.Contains(s, `data-reason="`+r+`"`) {
			t.Errorf("the timeline has no %s marker", r)
		}
	}
}

func podNames(pods []corev1.Pod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.Name
	}
	return out
}

// containsLine reports whether a line of out holds every part.
func containsLine(out string, parts ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line+" ", p)
		}
		if ok {
			return true
		}
	}
	return false
}

// doctorCheck is one check of `doctor -o json`.
type doctorCheck struct {
	Area, Object, Status, Evidence, Fix string
}

// runDoctor runs the doctor on ns and returns its checks and exit code.
func runDoctor(ctx context.Context, t *testing.T, c *localcluster.Cluster, ns string) ([]doctorCheck, int) {
	t.Helper()
	out, errOut, code := plugin(ctx, t, c, "-n", ns, "doctor", "-o", "json")
	var doc struct{ Checks []doctorCheck }
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("doctor -o json: exit %d, %v: %s %s", code, err, out, errOut)
	}
	return doc.Checks, code
}

// expectCheck runs the doctor until a check of area whose object contains object has the status
// (and, for a failure, evidence and fix containing the given words), and returns it.
func expectCheck(ctx context.Context, t *testing.T, c *localcluster.Cluster, ns, area, object, status string, words ...string) doctorCheck {
	t.Helper()
	var found doctorCheck
	poll(ctx, t, fmt.Sprintf("doctor: %s %s %s", status, area, object), 2*time.Minute, func() (bool, string) {
		checks, code := runDoctor(ctx, t, c, ns)
		var seen []string
		for _, ch := range checks {
			if ch.Area != area || !strings.Contains(ch.Object, object) {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s: %s (fix: %s)", ch.Status, ch.Evidence, ch.Fix))
			if ch.Status != status {
				continue
			}
			all := true
			for _, w := range words {
				all = all && strings.Contains(ch.Evidence+" "+ch.Fix, w)
			}
			if all && (status != checkFail || code == 1) {
				found = ch
				return true, fmt.Sprintf("%s %s: %s; fix: %s", ch.Status, ch.Object, ch.Evidence, ch.Fix)
			}
		}
		return false, fmt.Sprintf("exit %d, checks of %s %s: %v", code, area, object, seen)
	})
	return found
}

// Check outcomes as the doctor prints them.
const (
	checkPass = "pass"
	checkWarn = "warn"
	checkFail = "fail"
)

var httpRoutesResource = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}

// TestPluginDoctor breaks each thing a doctor check looks at, sees the check fail with the right
// fix, repairs it, and sees it pass: the APIService pointed at a missing Service, an HPA on a
// metric nobody serves, a pod without the scrape selection, failing scrapes, a Gateway API route
// that is not Accepted, the exposure settings that cut WebSockets (an Istio route timeout and
// h2UpgradePolicy, Ingress NGINX read/send timeouts, HAProxy's timeout-tunnel, a Linkerd Server's
// protocol and authorization, a cloud load balancer's idle timeout: each repaired with the
// websocket-app chart's own rendering, applied against the real CRDs), --probe through a load
// balancer that cuts idle connections, and a grace period below the drain.
func TestPluginDoctor(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dyn := pluginAdapter(ctx, t, c)
	installCRDs(ctx, t, dyn, filepath.Join(sharedCRDDir(t), "gateway-api.yaml"), filepath.Join(sharedCRDDir(t), "istio.yaml"), filepath.Join(sharedCRDDir(t), "linkerd.yaml"))
	kube := newDryRunner(t, c.RESTConfig()) // after the CRDs: it discovers their resources on first use
	const ns = "plugin-doctor"
	pods := pluginEcho(ctx, t, client, ns, 2)
	hpas := client.AutoscalingV2().HorizontalPodAutoscalers(ns)

	t.Run("apiservice", func(t *testing.T) {
		res := dyn.Resource(apiServiceResource)
		setService := func(name string) {
			patch := fmt.Sprintf(`{"spec":{"service":{"name":%q}}}`, name)
			if _, err := res.Patch(ctx, "v1beta2.custom.metrics.k8s.io", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		expectCheck(ctx, t, c, ns, "apiservice", "v1beta2", checkPass, "wsscale's adapter")
		setService("missing-adapter")
		t.Cleanup(func() { setService(adapterName) })
		expectCheck(ctx, t, c, ns, "apiservice", "v1beta2", checkFail, "missing-adapter, which does not exist", "point spec.service at the adapter's Service")
		setService(adapterName)
		expectCheck(ctx, t, c, ns, "apiservice", "v1beta2", checkPass, "Available")
	})

	t.Run("hpa metric nobody serves", func(t *testing.T) {
		hpa := &autoscalingv2.HorizontalPodAutoscaler{
			ObjectMeta: metav1.ObjectMeta{Name: "echo"},
			Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
				ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"},
				MinReplicas:    ptr.To[int32](2),
				MaxReplicas:    2,
				Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: "websocket_connection"}, // not served
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resourceQuantity(100)},
				}}},
			},
		}
		if _, err := hpas.Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		expectCheck(ctx, t, c, ns, "hpa", "HPA "+ns+"/echo", checkFail, "websocket_connection, which no adapter serves", "websocket_connections for pods")
		got, err := hpas.Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got.Spec.Metrics[0].Pods.Metric.Name = "websocket_connections"
		if _, err := hpas.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		expectCheck(ctx, t, c, ns, "hpa", "HPA "+ns+"/echo", checkPass, "ScalingActive=True")
	})

	t.Run("pod without the scrape selection", func(t *testing.T) {
		label := func(patch string) {
			if _, err := client.CoreV1().Pods(ns).Patch(ctx, pods[1].Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		expectCheck(ctx, t, c, ns, "pods", "pods of "+ns+"/echo", checkPass, "tracks all 2 pods")
		label(`{"metadata":{"labels":{"wsscale.io/scrape":null}}}`)
		t.Cleanup(func() { label(`{"metadata":{"labels":{"wsscale.io/scrape":"true"}}}`) })
		expectCheck(ctx, t, c, ns, "pods", "pods of "+ns+"/echo", checkFail, pods[1].Name+": no wsscale.io/scrape=true label", "add the label wsscale.io/scrape=true to the Deployment's pod template")
		label(`{"metadata":{"labels":{"wsscale.io/scrape":"true"}}}`)
		expectCheck(ctx, t, c, ns, "pods", "pods of "+ns+"/echo", checkPass, "tracks all 2 pods")
	})

	t.Run("failing scrapes", func(t *testing.T) {
		// The pod's metrics annotation points at a port nothing listens on: the adapter's scrapes
		// are refused, it writes ScrapeFailing on the pod, and the doctor reads it there.
		port := func(p string) {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"prometheus.io/port":%q}}}`, p)
			if _, err := client.CoreV1().Pods(ns).Patch(ctx, pods[0].Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		port("9999")
		t.Cleanup(func() { port("9090") })
		expectCheck(ctx, t, c, ns, "pods", "pods of "+ns+"/echo", checkFail, pods[0].Name+": scrapes failing since", "connection refused", "make /metrics answer on port 9999")
		port("9090")
		expectCheck(ctx, t, c, ns, "pods", "pods of "+ns+"/echo", checkPass, "tracks all 2 pods")
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			evs, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pods[0].Name + ",reason=ScrapeRecovered"})
			return err == nil && len(evs.Items) > 0, fmt.Sprintf("no ScrapeRecovered Event on %s: %v", pods[0].Name, err)
		})
	})

	t.Run("gateway route not accepted", func(t *testing.T) {
		routes := dyn.Resource(httpRoutesResource).Namespace(ns)
		route := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
			"metadata": map[string]any{"name": "echo"},
			"spec": map[string]any{
				"parentRefs": []any{map[string]any{"name": "public", "namespace": "gateways"}},
				"rules":      []any{map[string]any{"backendRefs": []any{map[string]any{"name": "echo", "port": int64(80)}}}},
			},
		}}
		created, err := routes.Create(ctx, route, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		expectCheck(ctx, t, c, ns, "exposure", "HTTPRoute "+ns+"/echo", checkFail, "no parent has accepted it", "spec.parentRefs")
		// What a Gateway controller writes when the listener does not admit the namespace, then
		// once it does.
		setAccepted := func(status, reason, msg string) {
			obj, err := routes.Get(ctx, created.GetName(), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			parents := []any{map[string]any{
				"parentRef":      map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gateways"},
				"controllerName": "example.com/gateway-controller",
				"conditions": []any{map[string]any{
					"type": "Accepted", "status": status, "reason": reason, "message": msg,
					"lastTransitionTime": time.Now().UTC().Format(time.RFC3339), "observedGeneration": obj.GetGeneration(),
				}},
			}}
			if err := unstructured.SetNestedSlice(obj.Object, parents, "status", "parents"); err != nil {
				t.Fatal(err)
			}
			if _, err := routes.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		setAccepted("False", "NotAllowedByListeners", "no listener of Gateway gateways/public admits routes from namespace "+ns)
		expectCheck(ctx, t, c, ns, "exposure", "HTTPRoute "+ns+"/echo", checkFail, "Accepted=False NotAllowedByListeners", "allowedRoutes must admit this namespace")
		setAccepted("True", "Accepted", "")
		expectCheck(ctx, t, c, ns, "exposure", "HTTPRoute "+ns+"/echo", checkPass, "Accepted by Gateway public")
	})

	t.Run("istio virtualservice timeout and h2 upgrade", func(t *testing.T) {
		chart := chartExposure(t, ns, "istio-values.yaml", "VirtualService", "DestinationRule")
		vs, dr := chart["VirtualService"], chart["DestinationRule"]
		broken := vs.DeepCopy()
		http, _, _ := unstructured.NestedSlice(broken.Object, "spec", "http")
		http[0].(map[string]any)["timeout"] = "30s"
		if err := unstructured.SetNestedSlice(broken.Object, http, "spec", "http"); err != nil {
			t.Fatal(err)
		}
		applyObject(ctx, t, kube, broken)
		expectCheck(ctx, t, c, ns, "exposure", "VirtualService "+ns+"/echo", checkFail, "route websocket timeout 30s", "remove timeout from the WebSocket route")
		applyObject(ctx, t, kube, vs) // the chart's own rendering: no timeout
		expectCheck(ctx, t, c, ns, "exposure", "VirtualService "+ns+"/echo", checkPass, "no route timeout")

		brokenDR := dr.DeepCopy()
		if err := unstructured.SetNestedField(brokenDR.Object, "UPGRADE", "spec", "trafficPolicy", "connectionPool", "http", "h2UpgradePolicy"); err != nil {
			t.Fatal(err)
		}
		applyObject(ctx, t, kube, brokenDR)
		expectCheck(ctx, t, c, ns, "exposure", "DestinationRule "+ns+"/echo", checkFail, "h2UpgradePolicy UPGRADE", "DO_NOT_UPGRADE")
		applyObject(ctx, t, kube, dr)
		expectCheck(ctx, t, c, ns, "exposure", "DestinationRule "+ns+"/echo", checkPass, "h2UpgradePolicy DO_NOT_UPGRADE")
	})

	t.Run("ingress nginx timeouts", func(t *testing.T) {
		ing := chartExposure(t, ns, "ingress-nginx-values.yaml", "Ingress")["Ingress"]
		obj := "Ingress " + ns + "/echo (class nginx)"
		broken := ing.DeepCopy()
		setAnnotation(broken, "nginx.ingress.kubernetes.io/proxy-read-timeout", "30")
		applyObject(ctx, t, kube, broken)
		t.Cleanup(func() { deleteObject(t, kube, ing) })
		// The demo's server pings every 30 s; with the doctor's margin of 2 NGINX must wait 60 s.
		expectCheck(ctx, t, c, ns, "exposure", obj, checkFail, "proxy-read-timeout=30: NGINX closes a WebSocket quiet for 30s", `proxy-read-timeout: "3600"`)
		unsetAnnotation(broken, "nginx.ingress.kubernetes.io/proxy-read-timeout")
		setAnnotation(broken, "nginx.ingress.kubernetes.io/proxy-send-timeout", "an hour")
		applyObject(ctx, t, kube, broken)
		expectCheck(ctx, t, c, ns, "exposure", obj, checkFail, `proxy-send-timeout="an hour" is not a number of seconds`)
		applyObject(ctx, t, kube, ing) // the chart's rendering: 3600 both ways
		expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, "proxy-read-timeout=3600 ≥ ping interval 30s")
		expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, "proxy-send-timeout=3600 ≥ ping interval 30s")
		expectCheck(ctx, t, c, ns, "exposure", obj, checkWarn, "retired in March 2026", "Gateway API")
		deleteObject(t, kube, ing)
	})

	t.Run("haproxy timeout-tunnel", func(t *testing.T) {
		ing := chartExposure(t, ns, "ingress-haproxy-values.yaml", "Ingress")["Ingress"]
		obj := "Ingress " + ns + "/echo (class haproxy)"
		broken := ing.DeepCopy()
		setAnnotation(broken, "haproxy.org/timeout-tunnel", "30s")
		applyObject(ctx, t, kube, broken)
		t.Cleanup(func() { deleteObject(t, kube, ing) })
		expectCheck(ctx, t, c, ns, "exposure", obj, checkFail, "timeout-tunnel=30s: HAProxy closes a WebSocket quiet for 30s", "set haproxy.org/timeout-tunnel to 1h")
		setAnnotation(broken, "haproxy.org/timeout-tunnel", "1 hour")
		applyObject(ctx, t, kube, broken)
		expectCheck(ctx, t, c, ns, "exposure", obj, checkFail, `timeout-tunnel="1 hour"`, "use an HAProxy time such as 1h")
		setAnnotation(broken, "haproxy.org/timeout-tunnel", "1h")
		applyObject(ctx, t, kube, broken)
		expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, "timeout-tunnel=1h ≥ ping interval 30s")
		applyObject(ctx, t, kube, ing) // the chart's rendering leaves the tunnel timeout to the controller
		expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, "no haproxy.org/timeout-tunnel on the Ingress")
		deleteObject(t, kube, ing)
	})

	t.Run("linkerd server", func(t *testing.T) {
		chart := chartExposure(t, ns, "linkerd-values.yaml", "Server", "AuthorizationPolicy", "MeshTLSAuthentication")
		server, authz, authn := chart["Server"], chart["AuthorizationPolicy"], chart["MeshTLSAuthentication"]
		// The chart's Server selects the chart's pods; here it selects the demo's echo pods.
		if err := unstructured.SetNestedStringMap(server.Object, map[string]string{"app.kubernetes.io/name": "echo"}, "spec", "podSelector", "matchLabels"); err != nil {
			t.Fatal(err)
		}
		obj := "Linkerd Server " + ns + "/" + server.GetName()
		broken := server.DeepCopy()
		if err := unstructured.SetNestedField(broken.Object, "HTTP/2", "spec", "proxyProtocol"); err != nil {
			t.Fatal(err)
		}
		applyObject(ctx, t, kube, broken) // and no authorization yet
		t.Cleanup(func() {
			for _, o := range []*unstructured.Unstructured{authz, authn, server} {
				deleteObject(t, kube, o)
			}
		})
		expectCheck(ctx, t, c, ns, "exposure", obj, checkFail, "proxyProtocol HTTP/2", "set spec.proxyProtocol to HTTP/1")
		expectCheck(ctx, t, c, ns, "exposure", obj, checkFail, "Linkerd denies every connection", "AuthorizationPolicy with targetRef kind Server name "+server.GetName())
		for _, o := range []*unstructured.Unstructured{server, authn, authz} { // the chart's rendering
			applyObject(ctx, t, kube, o)
		}
		expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, "proxyProtocol HTTP/1 carries the HTTP/1.1 Upgrade")
		expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, "an authorization admits clients")
	})

	t.Run("cloud load balancer idle timeout", func(t *testing.T) {
		services := client.CoreV1().Services(ns)
		lb := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "echo-lb", Annotations: map[string]string{
				"service.beta.kubernetes.io/aws-load-balancer-connection-idle-timeout": "30",
			}},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeLoadBalancer,
				Selector: map[string]string{"app.kubernetes.io/name": "echo"},
				Ports:    []corev1.ServicePort{{Name: "ws", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		if _, err := services.Create(ctx, lb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = services.Delete(context.Background(), lb.Name, metav1.DeleteOptions{}) })
		obj := "Service " + ns + "/echo-lb (LoadBalancer)"
		key := "service.beta.kubernetes.io/aws-load-balancer-connection-idle-timeout"
		expectCheck(ctx, t, c, ns, "exposure", obj, checkFail, key+"=30: the load balancer drops connections idle 30s", "raise "+key+" to at least 60 (seconds)")
		annotate := func(k, v string) {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, k, v)
			if _, err := services.Patch(ctx, lb.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		annotate(key, "3600")
		expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, key+"=3600 ≥ ping interval 30s")
		// Azure counts minutes.
		azure := "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout"
		annotate(azure, "4")
		expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, azure+"=4 ≥ ping interval 30s")
		annotate(azure, "soon")
		expectCheck(ctx, t, c, ns, "exposure", obj, checkFail, azure+`="soon" is not a number`, "a whole number of at least 1 (minutes)")
		if err := services.Delete(ctx, lb.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("probe through a load balancer", func(t *testing.T) {
		// A NodePort Service reaches the pods from the host (the local cluster forwards
		// 127.0.0.1:<nodePort>); in front of it a TCP proxy plays a load balancer that drops
		// connections idle for 3 s, shorter than the server's 30 s pings.
		svc, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "echo-nodeport"},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeNodePort,
				Selector: map[string]string{"app.kubernetes.io/name": "echo"},
				Ports:    []corev1.ServicePort{{Name: "ws", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = client.CoreV1().Services(ns).Delete(context.Background(), svc.Name, metav1.DeleteOptions{})
		})
		nodePort := fmt.Sprintf("127.0.0.1:%d", svc.Spec.Ports[0].NodePort)
		cutting := startIdleTimeoutProxy(t, nodePort, 3*time.Second)
		probeCheck := func(addr string) doctorCheck {
			t.Helper()
			out, errOut, code := plugin(ctx, t, c, "-n", ns, "doctor", "-o", "json", "--probe", "ws://"+addr+"/ws", "--probe-duration", "8s")
			var doc struct{ Checks []doctorCheck }
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("doctor --probe: exit %d, %v: %s %s", code, err, out, errOut)
			}
			for _, ch := range doc.Checks {
				if ch.Area == "probe" {
					t.Logf("probe through %s (exit %d): %s: %s (fix: %s)", addr, code, ch.Status, ch.Evidence, ch.Fix)
					if ch.Status == checkFail && code != 1 {
						t.Errorf("a failed probe exits %d, want 1", code)
					}
					return ch
				}
			}
			t.Fatalf("doctor --probe printed no probe check: %s", out)
			return doctorCheck{}
		}
		// The NodePort forwarder may not listen yet: the first probe straight to it must hold.
		var direct doctorCheck
		poll(ctx, t, "probe straight to the NodePort holds", time.Minute, func() (bool, string) {
			direct = probeCheck(nodePort)
			return direct.Status == checkPass, direct.Evidence
		})
		if !strings.Contains(direct.Evidence, "held idle for 8s") {
			t.Errorf("probe to the NodePort: %q, want held idle for 8s", direct.Evidence)
		}
		ch := probeCheck(cutting)
		if ch.Status != checkFail || !strings.Contains(ch.Evidence, "without a close frame") || !strings.Contains(ch.Fix, "raise that hop's idle or tunnel timeout") {
			t.Errorf("probe through a load balancer with a 3 s idle timeout: %s %q (fix %q), want fail: cut without a close frame, raise the idle timeout", ch.Status, ch.Evidence, ch.Fix)
		}
		// The fix: that hop's idle timeout above the server's ping interval.
		raised := startIdleTimeoutProxy(t, nodePort, 2*time.Minute)
		if ch := probeCheck(raised); ch.Status != checkPass {
			t.Errorf("probe through the load balancer with its idle timeout raised: %s %q, want pass", ch.Status, ch.Evidence)
		}
	})

	// Last: changing the pod template rolls the pods.
	t.Run("grace period below the drain", func(t *testing.T) {
		deploys := client.AppsV1().Deployments(ns)
		setGrace := func(s int64) {
			patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":%d}}}}`, s)
			if _, err := deploys.Patch(ctx, "echo", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		expectCheck(ctx, t, c, ns, "drain", "Deployment "+ns+"/echo", checkPass, "terminationGracePeriodSeconds 20 >")
		setGrace(5)
		expectCheck(ctx, t, c, ns, "drain", "Deployment "+ns+"/echo", checkFail, "terminationGracePeriodSeconds 5 is not above the drain", "drain window 10s", "at least 20")
		setGrace(20)
		expectCheck(ctx, t, c, ns, "drain", "Deployment "+ns+"/echo", checkPass, "terminationGracePeriodSeconds 20 >")
		var d *appsv1.Deployment
		poll(ctx, t, "rollout back to ready", 2*time.Minute, func() (bool, string) {
			var err error
			d, err = deploys.Get(ctx, "echo", metav1.GetOptions{})
			return err == nil && d.Status.UpdatedReplicas == 2 && d.Status.ReadyReplicas == 2 && d.Status.Replicas == 2, fmt.Sprintf("%+v %v", d.Status, err)
		})
	})

	// With everything repaired, nothing fails and the exit code is 0.
	checks, code := runDoctor(ctx, t, c, ns)
	for _, ch := range checks {
		if ch.Status == checkFail {
			t.Errorf("after the repairs: fail %s %s: %s", ch.Area, ch.Object, ch.Evidence)
		}
	}
	if code != 0 {
		t.Errorf("doctor exit code %d with no failed check, want 0", code)
	}
	out, _, _ := plugin(ctx, t, c, "-n", ns, "doctor")
	t.Logf("kubectl wsscale doctor:\n%s", out)
}

// chartExposure renders the websocket-app chart with one of its ci values files, named echo like
// the test's workload, and returns the rendered objects of the kinds asked for, by kind.
func chartExposure(t *testing.T, ns, ciValues string, kinds ...string) map[string]*unstructured.Unstructured {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(filepath.Join(root, "deploy", "helm", "websocket-app", "ci", ciValues))
	if err != nil {
		t.Fatal(err)
	}
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, append(base, []byte("\nfullnameOverride: echo\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	out := map[string]*unstructured.Unstructured{}
	for _, obj := range renderChart(t, root, filepath.Join("deploy", "helm", "websocket-app"), ns, values) {
		for _, k := range kinds {
			if obj.GetKind() == k {
				obj.SetNamespace(ns)
				out[k] = obj
			}
		}
	}
	for _, k := range kinds {
		if out[k] == nil {
			t.Fatalf("the chart's %s scenario renders no %s", ciValues, k)
		}
	}
	return out
}

// applyObject server-side applies obj in its namespace for real, with strict field validation:
// the real CRD schemas judge it.
func applyObject(ctx context.Context, t *testing.T, d *dryRunner, obj *unstructured.Unstructured) {
	t.Helper()
	res, err := d.resource(obj, obj.GetNamespace())
	if err == nil {
		err = d.apply(ctx, res, obj, nil)
	}
	if err != nil {
		t.Fatalf("apply %s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
}

func deleteObject(t *testing.T, d *dryRunner, obj *unstructured.Unstructured) {
	t.Helper()
	res, err := d.resource(obj, obj.GetNamespace())
	if err == nil {
		err = res.Delete(context.Background(), obj.GetName(), metav1.DeleteOptions{})
	}
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete %s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
}

func setAnnotation(obj *unstructured.Unstructured, key, value string) {
	a := obj.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[key] = value
	obj.SetAnnotations(a)
}

func unsetAnnotation(obj *unstructured.Unstructured, key string) {
	a := obj.GetAnnotations()
	delete(a, key)
	obj.SetAnnotations(a)
}
