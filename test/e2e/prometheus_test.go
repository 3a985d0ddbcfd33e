package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

const (
	promNamespace    = "monitoring"
	promRelease      = "wsscale-prom"
	promAdapterNS    = "wsscale-prom"
	promEchoNS       = "prom-e2e"
	promConnections  = 25
	promTargetPerPod = 10
	// promScrapeInterval is Prometheus's scrape interval in this test, the seed's ServiceMonitor's.
	promScrapeInterval = 15 * time.Second
)

// TestPrometheusPipelineScalesTheHPA runs the pipeline most clusters have: Prometheus (the pinned
// release, deployed from deploy/prometheus) discovers and scrapes the echo pods, the adapter
// installed by its chart with source prometheus queries it, and the HPA scales the echo
// Deployment on the values that went pod → Prometheus → adapter → HPA. The query the adapter
// sends is read from Prometheus's own query log, and the HPA scales back down once the
// connections close.
func TestPrometheusPipelineScalesTheHPA(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	prom := installPrometheus(ctx, t, c, model.Duration(promScrapeInterval).String())
	echoPod := installPromEcho(ctx, t, client)

	// Prometheus found the pod through Kubernetes service discovery and scraped it, with the
	// namespace and pod labels the adapter reads.
	series := fmt.Sprintf(`websocket_connections_active{namespace=%q}`, promEchoNS)
	poll(ctx, t, "Prometheus scraped the echo pod", 2*time.Minute, func() (bool, string) {
		got, err := prom.instant(ctx, series)
		if err != nil {
			return false, err.Error()
		}
		v, ok := got[echoPod.Name]
		return ok && v == 0 && len(got) == 1, fmt.Sprint(got)
	})

	installPromAdapter(ctx, t, c)

	load := startLoad(c, echoPod.Status.PodIP, promConnections)
	defer load.stop()
	poll(ctx, t, "Prometheus sees the connections", 2*time.Minute, func() (bool, string) {
		got, err := prom.instant(ctx, series)
		if err != nil {
			return false, err.Error()
		}
		return got[echoPod.Name] == promConnections, fmt.Sprint(got)
	})
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/websocket_connections", promEchoNS)
	poll(ctx, t, "the adapter serves Prometheus's value", time.Minute, func() (bool, string) {
		got, err := podValues(ctx, client, path)
		if err != nil {
			return false, err.Error()
		}
		return len(got) == 1 && got[echoPod.Name] == promConnections, fmt.Sprint(got)
	})

	// The query the adapter really sent, as Prometheus logged it: the series with an equality
	// matcher on its namespace, and the time of each sample.
	sel := fmt.Sprintf(`websocket_connections_active{namespace=%q}`, promEchoNS)
	want := sel + ` or label_replace(timestamp(` + sel + `), "wsscale_sample_time", "true", "", "")`
	poll(ctx, t, "the adapter's query in Prometheus's query log", time.Minute, func() (bool, string) {
		queries, err := prom.loggedQueries(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, q := range queries {
			if q == want {
				return true, q
			}
		}
		return false, fmt.Sprintf("want %s among %d logged queries: %v", want, len(queries), lastN(queries, 5))
	})

	// The HPA scales up: 25 connections at 10 per pod is 3 pods.
	createHPA(ctx, t, client, promEchoNS, promTargetPerPod)
	wantReplicas := int32((promConnections + promTargetPerPod - 1) / promTargetPerPod)
	poll(ctx, t, "HPA scale-up on Prometheus's values", 4*time.Minute, func() (bool, string) {
		d, err := client.AppsV1().Deployments(promEchoNS).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return d.Status.ReadyReplicas == wantReplicas && ptr.Deref(d.Spec.Replicas, 0) == wantReplicas,
			fmt.Sprintf("spec %d, ready %d", ptr.Deref(d.Spec.Replicas, 0), d.Status.ReadyReplicas)
	})
	// Prometheus discovers the new pods and the adapter serves each of them once scraped.
	poll(ctx, t, "every pod's value through Prometheus", 2*time.Minute, func() (bool, string) {
		got, err := podValues(ctx, client, path)
		if err != nil {
			return false, err.Error()
		}
		sum := int64(0)
		for _, v := range got {
			sum += v
		}
		return len(got) == int(wantReplicas) && got[echoPod.Name] == promConnections && sum == promConnections, fmt.Sprint(got)
	})
	hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(promEchoNS).Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("HPA status: desired %d, metrics %s", hpa.Status.DesiredReplicas, hpaMetricsText(hpa))

	// The connections close; the HPA scales back down to one pod.
	load.stop()
	poll(ctx, t, "HPA scale-down on Prometheus's values", 5*time.Minute, func() (bool, string) {
		d, err := client.AppsV1().Deployments(promEchoNS).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return ptr.Deref(d.Spec.Replicas, 0) == 1, fmt.Sprintf("spec %d, ready %d", ptr.Deref(d.Spec.Replicas, 0), d.Status.ReadyReplicas)
	})

	// Staleness: the remaining pod's endpoint moves to a port nothing listens on. Prometheus
	// drops the old target (a staleness marker ends its series) and fails every scrape of the
	// new one; the pod stays Running and Ready, so the adapter still asks for it. Its value
	// must go within two of Prometheus's scrape intervals, not linger for minutes.
	pods := waitForReadyPods(ctx, t, client, promEchoNS, "app=echo", 1)
	last := pods[0].Name
	poll(ctx, t, "the remaining pod's value", time.Minute, func() (bool, string) {
		got, err := podValues(ctx, client, path)
		return err == nil && len(got) == 1 && got[last] == 0, fmt.Sprint(got, err)
	})
	patch := []byte(`{"metadata":{"annotations":{"prometheus.io/port":"1"}}}`)
	if _, err := client.CoreV1().Pods(promEchoNS).Patch(ctx, last, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	broken := time.Now()
	poll(ctx, t, "Prometheus fails the moved target", time.Minute, func() (bool, string) {
		got, err := prom.instant(ctx, fmt.Sprintf(`up{namespace=%q}`, promEchoNS))
		return err == nil && len(got) == 1 && got[last] == 0, fmt.Sprint(got, err)
	})
	poll(ctx, t, "the adapter stops serving the unscraped pod", 4*time.Minute, func() (bool, string) {
		got, err := podValues(ctx, client, path)
		if apierrors.IsNotFound(err) {
			return true, err.Error() // no pod of the namespace has a value
		}
		if err != nil {
			return false, err.Error()
		}
		_, ok := got[last]
		return !ok, fmt.Sprint(got)
	})
	gone := time.Since(broken)
	bound := 2*promScrapeInterval + 15*time.Second // two scrapes, plus discovery and query slack
	t.Logf("the unscraped pod's value was served for %v after its endpoint moved (bound %v)", gone.Round(time.Second), bound)
	if gone > bound {
		t.Errorf("the adapter served a pod Prometheus no longer scrapes for %v, more than two scrape intervals of %v", gone.Round(time.Second), promScrapeInterval)
	}
}

func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func hpaMetricsText(h *autoscalingv2.HorizontalPodAutoscaler) string {
	var parts []string
	for _, m := range h.Status.CurrentMetrics {
		if m.Pods != nil {
			parts = append(parts, fmt.Sprintf("%s average %s", m.Pods.Metric.Name, m.Pods.Current.AverageValue))
		}
	}
	return strings.Join(parts, ", ")
}

// promServer is the Prometheus pod of the local cluster, reached inside the node network.
type promServer struct {
	client kubernetes.Interface
	pod    string
	http   *http.Client
	base   string
}

// installPrometheus applies deploy/prometheus/prometheus.yaml with the given scrape interval and
// Prometheus's query log on its standard output, waits until Prometheus is ready and removes
// everything at the end of the test.
func installPrometheus(ctx context.Context, t *testing.T, c *localcluster.Cluster, interval string) *promServer {
	t.Helper()
	objs := prometheusObjects(t, interval)
	d := newDryRunner(t, c.RESTConfig())
	t.Cleanup(func() { deletePrometheus(t, c.RESTConfig(), objs) })
	for _, obj := range objs {
		res, err := d.resource(obj, obj.GetNamespace())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.apply(ctx, res, obj, nil); err != nil {
			t.Fatalf("apply %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	client := c.Client()
	var pod corev1.Pod
	poll(ctx, t, "Prometheus ready", 3*time.Minute, func() (bool, string) {
		pods, err := client.CoreV1().Pods(promNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=prometheus"})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for _, p := range pods.Items {
			states = append(states, podState(&p))
			if isReady(&p) && len(pods.Items) == 1 {
				pod = p
				return true, strings.Join(states, ", ")
			}
		}
		return false, strings.Join(states, ", ")
	})
	return &promServer{
		client: client,
		pod:    pod.Name,
		http:   &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: c.DialContext}},
		base:   "http://" + net.JoinHostPort(pod.Status.PodIP, "9090"),
	}
}

// prometheusObjects decodes the shipped manifest with the scrape interval replaced and the query
// log turned on.
func prometheusObjects(t *testing.T, interval string) []*unstructured.Unstructured {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "deploy", "prometheus", "prometheus.yaml")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for old, repl := range map[string]string{
		"      scrape_interval: 15s\n":     "      scrape_interval: " + interval + "\n",
		"      evaluation_interval: 15s\n": "      evaluation_interval: " + interval + "\n      query_log_file: /dev/stdout\n",
	} {
		if !strings.Contains(text, old) {
			t.Fatalf("%s no longer contains %q", file, old)
		}
		text = strings.Replace(text, old, repl, 1)
	}
	return decodeYAML(t, file, []byte(text))
}

// deletePrometheus removes the manifest's objects (the namespace last, waiting until it is gone).
func deletePrometheus(t *testing.T, cfg *rest.Config, objs []*unstructured.Unstructured) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDryRunner(t, cfg)
	for i := len(objs) - 1; i >= 0; i-- {
		res, err := d.resource(objs[i], objs[i].GetNamespace())
		if err != nil {
			t.Error(err)
			continue
		}
		if err := res.Delete(ctx, objs[i].GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete %s %s: %v", objs[i].GetKind(), objs[i].GetName(), err)
		}
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Error(err)
		return
	}
	waitNamespaceGone(ctx, t, client, promNamespace)
}

func waitNamespaceGone(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) {
	for ctx.Err() == nil {
		if _, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("namespace %s still there", ns)
}

// instant runs an instant query and returns the value of each series by its pod label.
func (p *promServer) instant(ctx context.Context, query string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("decode %s: %w", body, err)
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", query, out.Error)
	}
	got := map[string]float64{}
	for _, r := range out.Data.Result {
		s, _ := r.Value[1].(string)
		var v float64
		if _, err := fmt.Sscan(s, &v); err != nil {
			return nil, fmt.Errorf("value %q: %w", s, err)
		}
		got[r.Metric["pod"]] = v
	}
	return got, nil
}

// loggedQueries returns the expressions of Prometheus's query log (its standard output, read
// through the kubelet API as kubectl logs does), oldest first.
func (p *promServer) loggedQueries(ctx context.Context) ([]string, error) {
	rc, err := p.client.CoreV1().Pods(promNamespace).GetLogs(p.pod, &corev1.PodLogOptions{Container: "prometheus"}).Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var queries []string
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var entry struct {
			Params struct {
				Query string `json:"query"`
			} `json:"params"`
		}
		if json.Unmarshal(sc.Bytes(), &entry) == nil && entry.Params.Query != "" {
			queries = append(queries, entry.Params.Query)
		}
	}
	return queries, sc.Err()
}

// installPromEcho creates the echo Deployment (one replica, the chart's selection label and the
// scrape annotations) and returns its ready pod.
func installPromEcho(ctx context.Context, t *testing.T, client kubernetes.Interface) *corev1.Pod {
	t.Helper()
	must[*corev1.Namespace](t, "namespace")(client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: promEchoNS}}, metav1.CreateOptions{}))
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_ = client.CoreV1().Namespaces().Delete(cctx, promEchoNS, metav1.DeleteOptions{})
		waitNamespaceGone(cctx, t, client, promEchoNS)
	})
	return createScrapedEcho(ctx, t, client, promEchoNS)
}

// installPromAdapter installs the adapter chart reading Prometheus through its Service name.
func installPromAdapter(ctx context.Context, t *testing.T, c *localcluster.Cluster) {
	t.Helper()
	installChartAdapter(ctx, t, c, "--set", "adapter.source=prometheus", "--set", "adapter.prometheus.url=http://prometheus."+promNamespace+".svc:9090")
}
