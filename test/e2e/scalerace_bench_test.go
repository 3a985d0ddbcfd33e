package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	autoscalingv1alpha1 "github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/wsload"
	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

// The surge of the race: two pods, 300 connections per pod as the HPA's target, the load jumps
// from 600 to 3,000 connections. New connections arrive through the echo Service at raceRate
// per second, so that those arriving after a new pod is Ready can land on it.
const (
	raceNamespace  = "race"
	raceTarget     = 300
	raceBase       = 600
	raceSurge      = 3000
	raceRate       = 40
	raceMaxPods    = 12
	racePollRate   = 10 // metrics API requests per second on top of the HPA's
	raceSurgeLimit = 6 * time.Minute
	raceDropLimit  = 4 * time.Minute
	// raceEchoSelector selects the demo's echo pods.
	raceEchoSelector = "app.kubernetes.io/name=echo"
)

// raceDropLoads are the connections the newest pods hold when the load falls back to 600, the
// newest first; the other pods hold none. A ReplicaSet removes the newest pods first.
var raceDropLoads = []int{300, 200, 60, 40}

// raceSystem is one way of feeding the HPA: its components are installed before the echo
// Deployment's HPA is created and removed after.
type raceSystem struct {
	name string
	// install sets the system up.
	install func(ctx context.Context, t *testing.T, c *localcluster.Cluster) raceSetup
}

// raceSetup is what the race needs to know of an installed system.
type raceSetup struct {
	// path is the metrics API path the HPA reads.
	path string
	// scale creates what makes the HPA of the echo Deployment, and hpa is that HPA's name.
	scale func(ctx context.Context, t *testing.T, client kubernetes.Interface)
	hpa   string
	// components are the basenames of the binaries whose cost is measured.
	components []string
}

// raceSample is one second of the surge as the race saw it.
type raceSample struct {
	At      float64 `json:"at"` // seconds since the jump
	Desired int32   `json:"desired"`
	Ready   int32   `json:"ready"`
	Seen    string  `json:"seen"` // the HPA's current metric value
	Spread  bool    `json:"spread"`
}

// raceResult is one system's outcome.
type raceResult struct {
	System        string             `json:"system"`
	HPASync       string             `json:"hpaSyncPeriod"`
	PromInterval  string             `json:"prometheusScrapeInterval,omitempty"`
	ToDesired     float64            `json:"secondsToDesiredChange"`
	ToReady       float64            `json:"secondsToNewPodsReady"`
	ToSpread      float64            `json:"secondsToSpread"`
	FinalDesired  int32              `json:"finalDesired"`
	Timeline      []raceSample       `json:"timeline"`
	CPUSeconds    map[string]float64 `json:"cpuSeconds"`
	PeakRSSMiB    map[string]float64 `json:"peakRSSMiB"`
	APILatencyP50 float64            `json:"metricsAPILatencyP50ms"`
	APILatencyP99 float64            `json:"metricsAPILatencyP99ms"`
	APIRequests   int                `json:"metricsAPIRequests"`
	APIFailures   int                `json:"metricsAPIFailures"`
	Drop          *raceDrop          `json:"drop,omitempty"`
}

// raceDrop is what the fall back to 600 connections did to the clients.
type raceDrop struct {
	// RemovedHeld are the connections each removed pod held, in the order they went.
	RemovedHeld  []int            `json:"removedHeld"`
	Disconnected int64            `json:"clientsDisconnected"`
	Abrupt       int64            `json:"abruptDrops"`
	Closes       map[string]int64 `json:"closesByServerCode"`
	Took         float64          `json:"secondsToTwoPods"`
	Reached      bool             `json:"reachedTwoPods"`
}

// TestScaleRace races the systems that can feed the HPA on one cluster and the same load,
// one after the other (make bench-scale; docs/benchmarks.md); skipped unless WSSCALE_RACE=1. WSSCALE_RACE_SYSTEMS picks them
// (direct, prometheus, keda; default direct,prometheus), WSSCALE_RACE_PROM_INTERVAL sets
// Prometheus's scrape interval (default 15s) and WSSCALE_RACE_OUT the JSON report file. It is a
// measurement, not a test: it fails only when a system cannot be set up.
func TestScaleRace(t *testing.T) {
	if os.Getenv("WSSCALE_RACE") != "1" {
		t.Skip("the scale race runs from make bench-scale (WSSCALE_RACE=1): a measurement, not a test")
	}
	c := framework.Cluster(t)
	interval := envOr("WSSCALE_RACE_PROM_INTERVAL", "15s")
	systems := map[string]raceSystem{
		"direct":     {name: "wsscale direct scrape", install: installRaceDirect},
		"guard":      {name: "wsscale direct scrape + ScaleGuard", install: installRaceGuard},
		"prometheus": {name: "wsscale via Prometheus", install: installRacePrometheus(interval)},
		"keda":       {name: "KEDA Prometheus scaler", install: installRaceKEDA(interval)},
	}
	var results []raceResult
	for _, key := range strings.Split(envOr("WSSCALE_RACE_SYSTEMS", "direct,prometheus"), ",") {
		sys, ok := systems[strings.TrimSpace(key)]
		if !ok {
			t.Fatalf("unknown race system %q (direct, prometheus, keda)", key)
		}
		promInterval := ""
		if key == "prometheus" || key == "keda" {
			promInterval = interval
		}
		res := runRaceSurge(t, c, sys, promInterval)
		results = append(results, res)
		t.Logf("RACE-ROW | %s | %s | %s | %s | %s | %s | %d | %s | %s | %.1f / %.1f |", res.System, res.HPASync, orDash(res.PromInterval),
			secs(res.ToDesired), secs(res.ToReady), secs(res.ToSpread), res.FinalDesired, costText(res.CPUSeconds, "s"), costText(res.PeakRSSMiB, " MiB"),
			res.APILatencyP50, res.APILatencyP99)
		t.Logf("RACE-SEEN %s (sync %s, interval %s): %s", res.System, res.HPASync, orDash(res.PromInterval), seenText(res.Timeline))
		t.Logf("RACE %s: desired changed after %.1fs, new pods Ready after %.1fs, spread after %.1fs; cpu %v s, peak RSS %v MiB; metrics API p50 %.1f ms p99 %.1f ms (%d requests, %d failed)",
			res.System, res.ToDesired, res.ToReady, res.ToSpread, res.CPUSeconds, res.PeakRSSMiB, res.APILatencyP50, res.APILatencyP99, res.APIRequests, res.APIFailures)
	}
	if out := os.Getenv("WSSCALE_RACE_OUT"); out != "" {
		data, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(out, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// secs renders a time from the jump, or "never" (not within the surge's run, or for the spread:
// some pod was Ready only after the last connection had arrived).
func secs(v float64) string {
	if v < 0 {
		return "never"
	}
	return fmt.Sprintf("%.0f s", v)
}

// costText renders per-component costs in a fixed order.
func costText(m map[string]float64, unit string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.1f%s", k, m[k], unit))
	}
	return strings.Join(parts, ", ")
}

// seenText lists the value the HPA saw each time it changed, with the seconds since the jump.
func seenText(tl []raceSample) string {
	var parts []string
	last := ""
	for _, s := range tl {
		if s.Seen != last {
			parts = append(parts, fmt.Sprintf("%.0fs:%s(desired %d)", s.At, s.Seen, s.Desired))
			last = s.Seen
		}
	}
	return strings.Join(parts, " ")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func podsMetric(target int64) autoscalingv2.MetricSpec {
	return autoscalingv2.MetricSpec{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricSource{
		Metric: autoscalingv2.MetricIdentifier{Name: "websocket_connections"},
		Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resourceQuantity(target)},
	}}
}

// wsscaleSetup is the race set-up of the wsscale adapter: the HPA reads websocket_connections.
func wsscaleSetup(components ...string) raceSetup {
	return raceSetup{
		path: fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/websocket_connections", raceNamespace),
		scale: func(ctx context.Context, t *testing.T, client kubernetes.Interface) {
			createRaceHPA(ctx, t, client, podsMetric(raceTarget))
		},
		hpa:        "echo",
		components: components,
	}
}

func installRaceDirect(ctx context.Context, t *testing.T, c *localcluster.Cluster) raceSetup {
	installChartAdapter(ctx, t, c)
	return wsscaleSetup("adapter")
}

// installRaceGuard is the direct scrape with the HPA scaling a ScaleGuard in front of the
// Deployment (the chart grants the adapter the guard's permissions and installs its CRD).
func installRaceGuard(ctx context.Context, t *testing.T, c *localcluster.Cluster) raceSetup {
	installChartAdapter(ctx, t, c)
	setup := wsscaleSetup("adapter")
	setup.scale = func(ctx context.Context, t *testing.T, client kubernetes.Interface) {
		dyn, err := dynamic.NewForConfig(c.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&autoscalingv1alpha1.ScaleGuard{
			TypeMeta:   metav1.TypeMeta{APIVersion: autoscalingv1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard"},
			ObjectMeta: metav1.ObjectMeta{Name: "echo"},
			Spec: autoscalingv1alpha1.ScaleGuardSpec{
				TargetRef: autoscalingv1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"},
				ScaleDown: autoscalingv1alpha1.ScaleDownSpec{
					DrainTimeout:      &metav1.Duration{Duration: time.Minute},
					MaxVictimsPerStep: ptr.To[int32](4),
				},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		guards := dyn.Resource(scaleGuardResource).Namespace(raceNamespace)
		if _, err := guards.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create the ScaleGuard: %v", err)
		}
		t.Cleanup(func() {
			// The guard goes before the namespace, so that its finalizer is served.
			_ = guards.Delete(context.Background(), "echo", metav1.DeleteOptions{})
		})
		poll(ctx, t, "the ScaleGuard seeded from the Deployment", 2*time.Minute, func() (bool, string) {
			u, err := guards.Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			r, found, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
			return found && r == 2, fmt.Sprint(u.Object["spec"])
		})
		createRaceHPAFor(ctx, t, client, podsMetric(raceTarget), autoscalingv2.CrossVersionObjectReference{
			APIVersion: autoscalingv1alpha1.SchemeGroupVersion.String(), Kind: "ScaleGuard", Name: "echo"})
	}
	return setup
}

func installRacePrometheus(interval string) func(context.Context, *testing.T, *localcluster.Cluster) raceSetup {
	return func(ctx context.Context, t *testing.T, c *localcluster.Cluster) raceSetup {
		installPrometheus(ctx, t, c, interval)
		installPromAdapter(ctx, t, c)
		return wsscaleSetup("prometheus", "adapter")
	}
}

// installChartAdapter installs the adapter chart (one replica) with the given --set flags and
// uninstalls it at the end of the test.
func installChartAdapter(ctx context.Context, t *testing.T, c *localcluster.Cluster, set ...string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	removeForeignAPIServices(ctx, t, dyn)
	adoptScaleGuardCRD(ctx, t, dyn, promRelease, promAdapterNS)
	helm := newHelm(t, c)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if _, err := helm.run(cctx, "uninstall", promRelease, "-n", promAdapterNS, "--wait", "--ignore-not-found"); err != nil {
			t.Error(err)
		}
		_ = c.Client().CoreV1().Namespaces().Delete(cctx, promAdapterNS, metav1.DeleteOptions{})
		waitNamespaceGone(cctx, t, c.Client(), promAdapterNS)
	})
	args := append([]string{"install", promRelease, chartDir(t), "-n", promAdapterNS, "--create-namespace", "--wait", "--timeout", "5m",
		"--set", "replicaCount=1"}, set...)
	if _, err := helm.run(ctx, args...); err != nil {
		t.Fatal(err)
	}
	waitAPIServicesAvailable(ctx, t, dyn)
}

// runRaceSurge installs sys, holds 600 connections on two echo pods behind an HPA targeting
// 300 per pod, raises the load to 3,000 and follows the HPA, the pods and the connections.
func runRaceSurge(t *testing.T, c *localcluster.Cluster, sys raceSystem, promInterval string) raceResult {
	client := c.Client()
	// The latency poller has a client of its own without client-side rate limiting: the shared
	// client's limit (5 requests/s) is below the poll rate, and its queueing would be measured as
	// the metrics API's latency.
	pollCfg := c.RESTConfig()
	pollCfg.QPS, pollCfg.Burst = -1, 0
	pollClient, err := kubernetes.NewForConfig(pollCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	res := raceResult{System: sys.name, PromInterval: promInterval, CPUSeconds: map[string]float64{}, PeakRSSMiB: map[string]float64{}, ToDesired: -1, ToReady: -1, ToSpread: -1}

	// Each system runs in its own subtest, so that its clean-ups run before the next starts.
	t.Run(strings.ReplaceAll(sys.name, " ", "_"), func(t *testing.T) {
		setup := sys.install(ctx, t, c)
		cpuBefore := componentCPU(setup.components)
		svcIP := installRaceEcho(ctx, t, client)

		// 600 connections through the Service, spread over the two pods.
		base := startServiceLoad(c, svcIP, raceBase, 200)
		defer base.stop()
		poll(ctx, t, "600 connections held by two pods", 3*time.Minute, func() (bool, string) {
			per, err := raceConnections(ctx, c, client)
			return err == nil && sumInts(per) == raceBase && len(per) == 2, fmt.Sprint(per, err)
		})
		setup.scale(ctx, t, client)
		poll(ctx, t, "the HPA reads the 600 connections", 3*time.Minute, func() (bool, string) {
			h, err := client.AutoscalingV2().HorizontalPodAutoscalers(raceNamespace).Get(ctx, setup.hpa, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return h.Status.DesiredReplicas == 2 && hpaSeen(h) == "300", fmt.Sprintf("desired %d, seen %s", h.Status.DesiredReplicas, hpaSeen(h))
		})

		// An external metric's path comes from the HPA that KEDA made: its metric's name and selector.
		query := map[string]string{}
		if h, err := client.AutoscalingV2().HorizontalPodAutoscalers(raceNamespace).Get(ctx, setup.hpa, metav1.GetOptions{}); err == nil {
			for _, m := range h.Spec.Metrics {
				if m.External != nil {
					setup.path = fmt.Sprintf("/apis/external.metrics.k8s.io/v1beta1/namespaces/%s/%s", raceNamespace, m.External.Metric.Name)
					if m.External.Metric.Selector != nil {
						query["labelSelector"] = metav1.FormatLabelSelector(m.External.Metric.Selector)
					}
				}
			}
		}
		poller := startLatencyPoller(ctx, pollClient, setup.path, query)
		jump := time.Now()
		surge := startServiceLoad(c, svcIP, raceSurge-raceBase, raceRate)
		defer surge.stop()
		for time.Since(jump) < raceSurgeLimit {
			h, err := client.AutoscalingV2().HorizontalPodAutoscalers(raceNamespace).Get(ctx, setup.hpa, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			d, err := client.AppsV1().Deployments(raceNamespace).Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			per, _ := raceConnections(ctx, c, client)
			at := time.Since(jump).Seconds()
			spread := len(per) > 2 && len(per) == int(h.Status.DesiredReplicas) && minInt(per) > 0
			res.Timeline = append(res.Timeline, raceSample{At: at, Desired: h.Status.DesiredReplicas, Ready: d.Status.ReadyReplicas, Seen: hpaSeen(h), Spread: spread})
			if res.ToDesired < 0 && h.Status.DesiredReplicas > 2 {
				res.ToDesired = at
			}
			want := int32((raceSurge + raceTarget - 1) / raceTarget)
			if res.ToReady < 0 && d.Status.ReadyReplicas >= want {
				res.ToReady = at
			}
			if res.ToSpread < 0 && spread && d.Status.ReadyReplicas >= want {
				res.ToSpread = at
			}
			res.FinalDesired = h.Status.DesiredReplicas
			// Connections never move: once the last one has arrived, a pod still without any
			// stays so.
			arrived := float64(raceSurge-raceBase)/raceRate + 5
			if res.ToReady >= 0 && (res.ToSpread >= 0 || at > arrived) {
				break
			}
			time.Sleep(time.Second)
		}
		res.APIRequests, res.APIFailures, res.APILatencyP50, res.APILatencyP99 = poller.stop()
		cpuAfter := componentCPU(setup.components)
		for name, after := range cpuAfter {
			res.CPUSeconds[name] = round1(after.cpu - cpuBefore[name].cpu)
			res.PeakRSSMiB[name] = round1(float64(after.peak) / (1 << 20))
		}
		res.HPASync = hpaSyncPeriod()
		if res.ToReady >= 0 && os.Getenv("WSSCALE_RACE_DROP") != "0" {
			res.Drop = runRaceDrop(ctx, t, c, client, base, surge)
			t.Logf("RACE-DROP | %s | %s | %s | removed pods held %v | %d | %d | %v | %s |", res.System, res.HPASync, orDash(res.PromInterval),
				res.Drop.RemovedHeld, res.Drop.Disconnected, res.Drop.Abrupt, res.Drop.Closes, dropTook(res.Drop))
		}
		surge.stop()
		base.stop()
		deleteRaceEcho(t, client)
	})
	return res
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

func hpaSyncPeriod() string {
	return envOr("WSSCALE_E2E_HPA_SYNC_PERIOD", "5s")
}

func sumInts(m map[string]int) int {
	s := 0
	for _, v := range m {
		s += v
	}
	return s
}

func minInt(m map[string]int) int {
	first := true
	out := 0
	for _, v := range m {
		if first || v < out {
			out, first = v, false
		}
	}
	return out
}

// hpaSeen is the HPA's current value of its one metric, as it last read it.
func hpaSeen(h *autoscalingv2.HorizontalPodAutoscaler) string {
	for _, m := range h.Status.CurrentMetrics {
		switch {
		case m.Pods != nil && m.Pods.Current.AverageValue != nil:
			return m.Pods.Current.AverageValue.String()
		case m.External != nil && m.External.Current.AverageValue != nil:
			return m.External.Current.AverageValue.String()
		}
	}
	return ""
}

// raceConnections reads websocket_connections_active from every Ready echo pod.
func raceConnections(ctx context.Context, c *localcluster.Cluster, client kubernetes.Interface) (map[string]int, error) {
	list, err := client.CoreV1().Pods(raceNamespace).List(ctx, metav1.ListOptions{LabelSelector: raceEchoSelector})
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || !isReady(&p) {
			continue
		}
		v, err := connectionsActive(ctx, c, p.Status.PodIP)
		if err != nil {
			return out, err
		}
		out[p.Name] = int(v)
	}
	return out, nil
}

// startServiceLoad opens n connections through the echo Service's ClusterIP at rate per second.
func startServiceLoad(c *localcluster.Cluster, addr string, n, rate int) *loadRun {
	cfg := wsload.DefaultConfig()
	cfg.URL = "ws://" + addr + "/ws"
	cfg.Connections = n
	cfg.ConnectRate = float64(rate)
	cfg.Duration = 0
	cfg.NetDialContext = c.DialContext
	ctx, cancel := context.WithCancel(context.Background())
	run := &loadRun{connections: n, stop: cancel, done: make(chan loadResult, 1)}
	go func() {
		res, err := wsload.Run(ctx, cfg)
		run.done <- loadResult{Result: res, err: err}
	}()
	return run
}

// installRaceEcho creates the demo's echo Deployment (two replicas; drains on the label) and a
// ClusterIP Service in front of it, and returns the Service's address.
func installRaceEcho(ctx context.Context, t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	createNamespace(ctx, t, client, raceNamespace)
	deploy, svc := demoManifests(t, raceNamespace)
	deploy.Spec.Replicas = ptr.To[int32](2)
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	for i := range svc.Spec.Ports {
		svc.Spec.Ports[i].NodePort = 0
	}
	must[*appsv1.Deployment](t, "echo deployment")(client.AppsV1().Deployments(raceNamespace).Create(ctx, deploy, metav1.CreateOptions{}))
	svc = must[*corev1.Service](t, "echo service")(client.CoreV1().Services(raceNamespace).Create(ctx, svc, metav1.CreateOptions{}))
	waitForReadyPods(ctx, t, client, raceNamespace, raceEchoSelector, 2)
	waitForEndpoints(ctx, t, client, raceNamespace, "echo", 2)
	return net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(svc.Spec.Ports[0].Port))
}

func deleteRaceEcho(t *testing.T, client kubernetes.Interface) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_ = client.AutoscalingV2().HorizontalPodAutoscalers(raceNamespace).Delete(ctx, "echo", metav1.DeleteOptions{})
	_ = client.CoreV1().Namespaces().Delete(ctx, raceNamespace, metav1.DeleteOptions{})
	waitNamespaceGone(ctx, t, client, raceNamespace)
}

func createRaceHPA(ctx context.Context, t *testing.T, client kubernetes.Interface, metric autoscalingv2.MetricSpec) {
	t.Helper()
	createRaceHPAFor(ctx, t, client, metric, autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"})
}

// raceScaleDownWindow is every system's scale-down stabilisation window.
const raceScaleDownWindow = 30

func createRaceHPAFor(ctx context.Context, t *testing.T, client kubernetes.Interface, metric autoscalingv2.MetricSpec, target autoscalingv2.CrossVersionObjectReference) {
	t.Helper()
	must[*autoscalingv2.HorizontalPodAutoscaler](t, "HPA")(client.AutoscalingV2().HorizontalPodAutoscalers(raceNamespace).Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: target,
			MinReplicas:    ptr.To[int32](2),
			MaxReplicas:    raceMaxPods,
			Metrics:        []autoscalingv2.MetricSpec{metric},
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](raceScaleDownWindow)},
			},
		},
	}, metav1.CreateOptions{}))
}

// componentCost is a component's CPU seconds (user + system) and peak RSS, summed over its processes.
type componentCost struct {
	cpu  float64
	peak int64
}

// componentCPU finds the processes running each component binary (by the basename of their
// executable) and reads their CPU time and peak RSS from /proc.
func componentCPU(names []string) map[string]componentCost {
	out := map[string]componentCost{}
	for _, n := range names {
		out[n] = componentCost{}
	}
	entries, _ := os.ReadDir("/proc")
	ticks := 100.0 // USER_HZ on Linux
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		name := filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
		cost, ok := out[name]
		if !ok {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces) start after the last ')'.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		cost.cpu += (utime + stime) / ticks
		if m, err := processMemory(pid); err == nil {
			cost.peak += m.peak
		}
		out[name] = cost
	}
	return out
}

// latencyPoller requests the metrics API at racePollRate per second and records the latencies.
type latencyPoller struct {
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	mu        sync.Mutex
	latencies []time.Duration
	failed    int
}

func startLatencyPoller(ctx context.Context, client kubernetes.Interface, path string, query map[string]string) *latencyPoller {
	ctx, cancel := context.WithCancel(ctx)
	p := &latencyPoller{cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(time.Second / racePollRate)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			start := time.Now()
			req := client.CoreV1().RESTClient().Get().AbsPath(path)
			for k, v := range query {
				req = req.Param(k, v)
			}
			_, err := req.DoRaw(ctx)
			took := time.Since(start)
			p.mu.Lock()
			if err != nil {
				if ctx.Err() == nil {
					p.failed++
				}
			} else {
				p.latencies = append(p.latencies, took)
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// stop ends the polling and returns the requests, failures, and the p50 and p99 latency in ms.
func (p *latencyPoller) stop() (int, int, float64, float64) {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	l := append([]time.Duration(nil), p.latencies...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	q := func(f float64) float64 {
		if len(l) == 0 {
			return 0
		}
		return round1(float64(l[int(f*float64(len(l)-1))]) / float64(time.Millisecond))
	}
	return len(l) + p.failed, p.failed, q(0.5), q(0.99)
}

func dropTook(d *raceDrop) string {
	if !d.Reached {
		return fmt.Sprintf("not within %v", raceDropLimit)
	}
	return fmt.Sprintf("%.0f s", d.Took)
}

// runRaceDrop ends the surge's connections, puts 600 deliberately uneven ones on the newest pods
// (raceDropLoads) and follows the scale-down to two pods: which pods went, and what their
// clients saw.
func runRaceDrop(ctx context.Context, t *testing.T, c *localcluster.Cluster, client kubernetes.Interface, loads ...*loadRun) *raceDrop {
	for _, l := range loads {
		l.stop()
	}
	poll(ctx, t, "the surge's connections closed", 2*time.Minute, func() (bool, string) {
		per, err := raceConnections(ctx, c, client)
		return err == nil && sumInts(per) == 0, fmt.Sprint(per, err)
	})
	list, err := client.CoreV1().Pods(raceNamespace).List(ctx, metav1.ListOptions{LabelSelector: raceEchoSelector})
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && isReady(&p) {
			pods = append(pods, p)
		}
	}
	sort.Slice(pods, func(i, j int) bool {
		a, b := pods[i].CreationTimestamp.Time, pods[j].CreationTimestamp.Time
		if !a.Equal(b) {
			return a.After(b)
		}
		return pods[i].Name > pods[j].Name
	})
	held := map[string]int{}
	runs := map[string]*loadRun{}
	for i, p := range pods {
		if i < len(raceDropLoads) {
			held[p.Name] = raceDropLoads[i]
			runs[p.Name] = startLoad(c, p.Status.PodIP, raceDropLoads[i])
		}
	}
	defer func() {
		for _, r := range runs {
			r.stop()
		}
	}()
	poll(ctx, t, "the uneven 600 held", 2*time.Minute, func() (bool, string) {
		per, err := raceConnections(ctx, c, client)
		if err != nil {
			return false, err.Error()
		}
		for name, n := range held {
			if per[name] != n {
				return false, fmt.Sprint(per)
			}
		}
		return true, fmt.Sprint(per)
	})
	out := &raceDrop{Closes: map[string]int64{}}
	began := time.Now()
	gone := map[string]bool{}
	for time.Since(began) < raceDropLimit {
		list, err := client.CoreV1().Pods(raceNamespace).List(ctx, metav1.ListOptions{LabelSelector: raceEchoSelector})
		if err != nil {
			t.Fatal(err)
		}
		present := map[string]bool{}
		ready := 0
		for _, p := range list.Items {
			present[p.Name] = p.DeletionTimestamp == nil
			if p.DeletionTimestamp == nil && isReady(&p) {
				ready++
			}
		}
		for _, p := range pods {
			if !present[p.Name] && !gone[p.Name] {
				gone[p.Name] = true
				out.RemovedHeld = append(out.RemovedHeld, held[p.Name])
			}
		}
		d, err := client.AppsV1().Deployments(raceNamespace).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ptr.Deref(d.Spec.Replicas, 0) == 2 && ready == 2 && len(gone) == len(pods)-2 {
			out.Reached = true
			break
		}
		time.Sleep(time.Second)
	}
	out.Took = round1(time.Since(began).Seconds())
	for name, run := range runs {
		if !gone[name] {
			continue
		}
		select {
		case res := <-run.done:
			if res.Result != nil {
				for code, n := range res.ClosesByCode {
					out.Closes[code] += n
					out.Disconnected += n
				}
				out.Abrupt += res.AbnormalDrops
				out.Disconnected += res.AbnormalDrops
			}
		case <-time.After(time.Minute):
			t.Errorf("the clients of removed pod %s never all ended", name)
		}
		delete(runs, name)
	}
	return out
}
