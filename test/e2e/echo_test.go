package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/pkg/wsecho"
	"github.com/wsscale/wsscale/pkg/wsload"
	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

// TestEchoDeployment runs the demo's echo Deployment on the local cluster: three Ready pods behind a
// Service, per-pod connection counts on each pod's /metrics, wscat through the NodePort, and a
// scale-down to one replica in which the two removed pods drain: every client of theirs gets 1001.
func TestEchoDeployment(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const ns = "e2e-echo"
	deploy, svc := demoManifests(t, ns)
	createNamespace(ctx, t, client, ns)
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	pods := waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", 3)
	waitForEndpoints(ctx, t, client, ns, svc.Name, 3)

	// A different number of connections to each pod, so that each pod's count is its own.
	runs := make(map[string]*loadRun)
	for i, pod := range pods {
		n := 5 + 3*i
		runs[pod.Name] = startLoad(c, pod.Status.PodIP, n)
	}
	for _, pod := range pods {
		want := runs[pod.Name].connections
		waitFor(ctx, t, 30*time.Second, func() (bool, string) {
			got, err := connectionsActive(ctx, c, pod.Status.PodIP)
			return err == nil && got == float64(want), fmt.Sprintf("pod %s: websocket_connections_active = %v (%v), want %d", pod.Name, got, err, want)
		})
	}

	// A client nobody here wrote reaches the Service through its NodePort on the host.
	wscatEcho(t, fmt.Sprintf("ws://127.0.0.1:%d/ws", svc.Spec.Ports[0].NodePort), "hello through the NodePort")

	// Scale down: the ReplicaSet controller deletes two pods; each drains before it exits.
	scale := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: deploy.Name, Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 1}}
	if _, err := client.AppsV1().Deployments(ns).UpdateScale(ctx, deploy.Name, scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	remaining := waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", 1)
	for name, run := range runs {
		if name == remaining[0].Name {
			continue
		}
		select {
		case res := <-run.done:
			if res.err != nil {
				t.Fatalf("load against removed pod %s: %v", name, res.err)
			}
			if got := res.ClosesByCode["1001"]; got != int64(run.connections) || res.AbnormalDrops != 0 {
				t.Errorf("clients of removed pod %s: closes %v, abnormal drops %d; want %d × 1001 and no drops",
					name, res.ClosesByCode, res.AbnormalDrops, run.connections)
			}
		case <-ctx.Done():
			t.Fatalf("clients of removed pod %s were never closed", name)
		}
	}
	// The pod that stays keeps its clients.
	keep := runs[remaining[0].Name]
	select {
	case res := <-keep.done:
		t.Fatalf("clients of the remaining pod were disconnected: %+v", res.Result)
	default:
	}
	keep.stop()
	if res := <-keep.done; res.err != nil || res.ClosedByClient != int64(keep.connections) {
		t.Errorf("remaining pod: %+v, %v; want all %d connections open until the client closed them", res.Result, res.err, keep.connections)
	}
	if err := client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete namespace: %v", err)
	}
}

// TestEchoFollowsDrainLabel marks a pod of the demo's Deployment with the drain label, as ScaleGuard
// does: its clients get 1001, it leaves the Service's endpoints and stays up (not restarted); when
// the label goes it serves again.
func TestEchoFollowsDrainLabel(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const ns = "e2e-echo-label"
	deploy, svc := demoManifests(t, ns)
	deploy.Spec.Replicas = ptr.To[int32](2)
	svc.Spec.Ports[0].NodePort = 0 // the demo's fixed port may be held by another test's Service
	createNamespace(ctx, t, client, ns)
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", 2)
	waitForEndpoints(ctx, t, client, ns, svc.Name, 2)
	victim := pods[0]
	const clients = 10
	run := startLoad(c, victim.Status.PodIP, clients)
	waitFor(ctx, t, 30*time.Second, func() (bool, string) {
		got, err := connectionsActive(ctx, c, victim.Status.PodIP)
		return err == nil && got == clients, fmt.Sprintf("websocket_connections_active = %v (%v), want %d", got, err, clients)
	})

	label := func(value *string) {
		t.Helper()
		v := "null"
		if value != nil {
			v = strconv.Quote(*value)
		}
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, wsecho.DrainLabel, v)
		if _, err := client.CoreV1().Pods(ns).Patch(ctx, victim.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("label pod %s: %v", victim.Name, err)
		}
	}
	podIs := func(ready bool, draining float64) {
		t.Helper()
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			p, err := client.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			d, err := podMetric(ctx, c, victim.Status.PodIP, "websocket_draining")
			return isReady(p) == ready && err == nil && d == draining,
				fmt.Sprintf("pod %s: %s, websocket_draining %v (%v); want ready=%v, draining %v", p.Name, podState(p), d, err, ready, draining)
		})
		waitForEndpoints(ctx, t, client, ns, svc.Name, map[bool]int{true: 2, false: 1}[ready])
	}

	label(ptr.To("true"))
	select {
	case res := <-run.done:
		if res.err != nil {
			t.Fatalf("load: %v", res.err)
		}
		if got := res.ClosesByCode["1001"]; got != clients || res.AbnormalDrops != 0 {
			t.Errorf("clients of the labelled pod: closes %v, abnormal drops %d; want %d × 1001 and no drops", res.ClosesByCode, res.AbnormalDrops, clients)
		}
	case <-ctx.Done():
		t.Fatal("clients of the labelled pod were never closed")
	}
	podIs(false, 1)

	label(nil)
	podIs(true, 0)
	again := startLoad(c, victim.Status.PodIP, 3)
	waitFor(ctx, t, 30*time.Second, func() (bool, string) {
		got, err := connectionsActive(ctx, c, victim.Status.PodIP)
		return err == nil && got == 3, fmt.Sprintf("after the label went: websocket_connections_active = %v (%v), want 3", got, err)
	})
	again.stop()
	<-again.done

	p, err := client.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.RestartCount != 0 {
			t.Errorf("container %s restarted %d times; a drain by label must not end the server", cs.Name, cs.RestartCount)
		}
	}
	if err := client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete namespace: %v", err)
	}
}

// demoManifests reads the demo's Deployment and Service (hack/demo/echo.yaml) into namespace ns,
// so that the manifest the demo applies is the one tested here.
func demoManifests(t *testing.T, ns string) (*appsv1.Deployment, *corev1.Service) {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "hack", "demo", "echo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		deploy *appsv1.Deployment
		svc    *corev1.Service
	)
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("hack/demo/echo.yaml: %v", err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			deploy = o
		case *corev1.Service:
			svc = o
		default:
			t.Fatalf("hack/demo/echo.yaml: unexpected %T", obj)
		}
		obj.(metav1.Object).SetNamespace(ns)
	}
	if deploy == nil || svc == nil {
		t.Fatal("hack/demo/echo.yaml must hold a Deployment and a Service")
	}
	return deploy, svc
}

func createNamespace(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) {
	t.Helper()
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// Pods need the namespace's default service account.
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		_, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprintf("service account %s/default: %v", ns, err)
	})
}

// waitFor polls cond until it holds, failing the test with cond's last message after within.
func waitFor(ctx context.Context, t *testing.T, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out after %v: %s", within, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitForReadyPods waits until exactly n pods match the selector, all Ready and none terminating.
func waitForReadyPods(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var ready []corev1.Pod
	waitFor(ctx, t, 2*time.Minute, func() (bool, string) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		ready = ready[:0]
		var states []string
		for _, p := range list.Items {
			states = append(states, fmt.Sprintf("%s:%s", p.Name, podState(&p)))
			if p.DeletionTimestamp == nil && isReady(&p) {
				ready = append(ready, p)
			}
		}
		return len(ready) == n && len(list.Items) == n, fmt.Sprintf("want %d ready pods, have %v", n, states)
	})
	return ready
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podState(p *corev1.Pod) string {
	s := string(p.Status.Phase)
	if p.DeletionTimestamp != nil {
		s += "/terminating"
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			s += "/" + w.Reason
		}
	}
	if isReady(p) {
		s += "/ready"
	}
	return s
}

func waitForEndpoints(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, service string, n int) {
	t.Helper()
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		slices, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
		if err != nil {
			return false, err.Error()
		}
		var addrs []string
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					addrs = append(addrs, e.Addresses...)
				}
			}
		}
		return len(addrs) == n, fmt.Sprintf("EndpointSlices of %s have ready addresses %v, want %d", service, addrs, n)
	})
}

// loadRun is a load client holding connections to one pod.
type loadRun struct {
	connections int
	stop        context.CancelFunc
	done        chan loadResult
}

type loadResult struct {
	*wsload.Result
	err error
}

// startLoad opens n idle connections to the echo server at podIP through the cluster's network.
func startLoad(c *localcluster.Cluster, podIP string, n int) *loadRun {
	cfg := wsload.DefaultConfig()
	cfg.URL = "ws://" + net.JoinHostPort(podIP, "8080") + "/ws"
	cfg.Connections = n
	cfg.ConnectRate = 0
	cfg.Duration = 0 // until stopped, or until every connection has ended
	cfg.NetDialContext = c.DialContext
	ctx, cancel := context.WithCancel(context.Background())
	run := &loadRun{connections: n, stop: cancel, done: make(chan loadResult, 1)}
	go func() {
		res, err := wsload.Run(ctx, cfg)
		run.done <- loadResult{Result: res, err: err}
	}()
	return run
}

// connectionsActive reads websocket_connections_active from a pod's /metrics.
func connectionsActive(ctx context.Context, c *localcluster.Cluster, podIP string) (float64, error) {
	return podMetric(ctx, c, podIP, "websocket_connections_active")
}

// podMetric reads one unlabelled series from a pod's /metrics.
func podMetric(ctx context.Context, c *localcluster.Cluster, podIP, name string) (float64, error) {
	return scrapeSeries(ctx, c, net.JoinHostPort(podIP, "9090"), name)
}

// scrapeSeries reads one series, written as in the exposition (name and labels), from /metrics at addr.
func scrapeSeries(ctx context.Context, c *localcluster.Cluster, addr, series string) (float64, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: c.DialContext}, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics of %s", series, addr)
}

// wscatEcho sends msg with wscat (from the npm registry, installed from test/e2e/node) and expects
// the echo back. args are more wscat options (a Host header, --no-check).
func wscatEcho(t *testing.T, url, msg string, args ...string) {
	t.Helper()
	wscat := filepath.Join(nodeClientsDir(t), "node_modules", ".bin", "wscat")
	cmd := exec.Command(wscat, append(args, "--connect", url, "--execute", msg, "--wait", "2")...)
	// wscat exits when its standard input closes; keep it open until it is done.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wscat: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("wscat did not finish:\n%s", out.String())
	}
	if !strings.Contains(out.String(), msg) {
		t.Errorf("wscat did not get its echo; output:\n%s", out.String())
	}
}

// nodeClientsDir returns test/e2e/node with its npm clients (wscat, ws) installed by npm ci.
func nodeClientsDir(t *testing.T) string {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "test", "e2e", "node")
	nodeClientsOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws", "package.json")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "node_modules", ".bin", "wscat")); err == nil {
				return
			}
		}
		install := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		install.Dir = dir
		if out, err := install.CombinedOutput(); err != nil {
			nodeClientsErr = fmt.Errorf("install the clients with npm ci in %s: %v\n%s", dir, err, out)
		}
	})
	if nodeClientsErr != nil {
		t.Fatal(nodeClientsErr)
	}
	return dir
}

var (
	nodeClientsOnce sync.Once
	nodeClientsErr  error
)
