package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/wsscale/wsscale/pkg/wsecho"
	"github.com/wsscale/wsscale/pkg/wsload"
	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

const (
	traefikManifest        = "deploy/traefik/traefik.yaml"
	traefikGatewayManifest = "deploy/traefik/gateway.yaml"
	traefikNS              = "traefik"
	traefikSelector        = "app.kubernetes.io/name=traefik"
	// appPingInterval is the chart's PING_INTERVAL: the server pings every client this often.
	appPingInterval = 30 * time.Second
	// idleHold is how long an idle WebSocket must survive the proxy: more than three ping intervals,
	// and more than Traefik's default entry point readTimeout (60 s).
	idleHold = 3*appPingInterval + 5*time.Second
	// lbIdleSurvives is the idle timeout of a load balancer in front of Traefik that the server's pings
	// keep open; lbIdleCuts is one below the ping interval, which cuts an idle WebSocket.
	lbIdleSurvives = appPingInterval + 15*time.Second
	lbIdleCuts     = 10 * time.Second
)

// traefikEntry is how a host client reaches one Traefik entry point: its NodePort on the host's
// loopback, with TLS or without.
type traefikEntry struct {
	port    int
	tls     bool
	address string // host:port to connect to instead of the NodePort, when set
}

// traefikInstall is the Traefik of deploy/traefik running on the local cluster.
type traefikInstall struct {
	web, websecure traefikEntry
}

var (
	traefikMu        sync.Mutex
	traefikInstalled *traefikInstall
)

// installTraefik installs Traefik as deploy/traefik describes it (with its GatewayClass and Gateway), with the CRDs of its
// own version (from the pinned module, copied by hack/build-tools.sh) and the Gateway API standard
// channel (shared/crds), once per test binary, and waits until both replicas serve.
func installTraefik(ctx context.Context, t *testing.T, c *localcluster.Cluster) *traefikInstall {
	t.Helper()
	traefikMu.Lock()
	defer traefikMu.Unlock()
	if traefikInstalled != nil {
		return traefikInstalled
	}
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	d := newDryRunner(t, c.RESTConfig())
	crds := filepath.Join(root, ".local", "bin", "traefik-crds.yaml")
	data, err := os.ReadFile(crds)
	if err != nil {
		t.Fatalf("Traefik's CRDs (hack/build-tools.sh copies them from the pinned module): %v", err)
	}
	d.installCRDs(ctx, crds, data)
	gw := filepath.Join(sharedCRDDir(t), "gateway-api.yaml")
	if data, err = os.ReadFile(gw); err != nil {
		t.Fatal(err)
	}
	d.installCRDs(ctx, gw, data)
	d.resetMapper()

	for _, file := range []string{traefikManifest, traefikGatewayManifest} {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeObjects(data)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, obj := range objs {
			res, err := d.resource(obj, obj.GetNamespace())
			if err == nil {
				err = d.apply(ctx, res, obj, nil)
			}
			if err != nil {
				t.Fatalf("%s: apply %s %s: %v", file, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
	// The Gateway's HTTPS listener serves a certificate of its own, as a real one would.
	certPEM, keyPEM := selfSignedCert(t, "*.example.com")
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "public-tls", Namespace: "gateway-system"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	if _, err := c.Client().CoreV1().Secrets("gateway-system").Create(ctx, secret, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	waitForReadyPods(ctx, t, c.Client(), traefikNS, traefikSelector, 2)
	waitForEndpoints(ctx, t, c.Client(), traefikNS, "traefik", 2)
	svc, err := c.Client().CoreV1().Services(traefikNS).Get(ctx, "traefik", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in := &traefikInstall{}
	for _, p := range svc.Spec.Ports {
		switch p.Name {
		case "web":
			in.web = traefikEntry{port: int(p.NodePort)}
		case "websecure":
			in.websecure = traefikEntry{port: int(p.NodePort), tls: true}
		}
	}
	if in.web.port == 0 || in.websecure.port == 0 {
		t.Fatalf("Service traefik/traefik has no web and websecure NodePorts: %+v", svc.Spec.Ports)
	}
	traefikInstalled = in
	return in
}

// dial connects to the entry point, whatever address the client asked for: the client's URL keeps the
// host the routes match (ws://ws.example.com/ws), the connection goes to Traefik's NodePort. Over TLS the
// SNI is that host; certificates are not checked (the entry point serves Traefik's default one).
func (e traefikEntry) dial(host string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", e.addr())
		if err != nil || !e.tls {
			return conn, err
		}
		tc := tls.Client(conn, &tls.Config{ServerName: host, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tc, nil
	}
}

func (e traefikEntry) addr() string {
	if e.address != "" {
		return e.address
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(e.port))
}

// withAddr is the same entry point reached through another address (a proxy in front of it).
func (e traefikEntry) withAddr(addr string) traefikEntry {
	e.address = addr
	return e
}

// url is the address third-party clients connect to, with the host in a Host header.
func (e traefikEntry) url() string {
	if e.tls {
		return "wss://" + e.addr() + "/ws"
	}
	return "ws://" + e.addr() + "/ws"
}

// traefikScenario is one exposure scenario of the websocket-app chart, served by Traefik.
type traefikScenario struct {
	name    string   // the subtest and the namespace's suffix
	values  string   // the chart's ci/<values>-values.yaml
	set     []string // more helm arguments
	host    string   // the host its route matches
	secure  bool     // served on the websecure entry point
	sticky  bool     // the scenario enables sticky sessions
	sigterm bool     // drain a pod by deleting it (SIGTERM) instead of the drain label
	// cutControl also holds an idle wscat behind a load balancer whose idle timeout is below the ping
	// interval, which must cut it.
	cutControl bool
	wantKind   string // the route object the scenario renders
}

var traefikScenarios = []traefikScenario{
	{name: "ingress", values: "ingress-traefik", host: "ws.example.com", secure: true, sticky: true, wantKind: "Ingress"},
	{name: "ingressroute", values: "traefik", host: "ws.example.com", sticky: true, sigterm: true, cutControl: true, wantKind: "IngressRoute"},
	// The Ingress above holds ws.example.com on the same entry point; the route gets a host of its own.
	{name: "httproute", values: "gateway-api", set: []string{"--set", "exposure.host=gw.example.com"}, host: "gw.example.com", secure: true, wantKind: "HTTPRoute"},
}

// TestTraefikExposureScenarios runs Traefik v3.6 as the cluster's ingress controller and each Traefik
// exposure of the websocket-app chart (Kubernetes Ingress, IngressRoute, Gateway API HTTPRoute) as the
// chart renders it, and proves through the proxy: text echo with wscat and binary with the ws library,
// the load client's echoes spread over the pods, sticky sessions where the scenario enables them, idle
// WebSockets outliving several ping intervals, and a drained pod's clients closed with 1001 (not 1006)
// and reconnected to the other pod.
func TestTraefikExposureScenarios(t *testing.T) {
	c := framework.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	t.Cleanup(cancel) // after the parallel subtests, not when this function returns
	tr := installTraefik(ctx, t, c)
	for _, sc := range traefikScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			entry := tr.web
			if sc.secure {
				entry = tr.websecure
			}
			runTraefikScenario(ctx, t, c, sc, entry)
		})
	}
}

func runTraefikScenario(ctx context.Context, t *testing.T, c *localcluster.Cluster, sc traefikScenario, entry traefikEntry) {
	client := c.Client()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ns := "e2e-traefik-" + sc.name
	createNamespace(ctx, t, client, ns)
	t.Cleanup(func() {
		if err := client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
			t.Logf("delete namespace %s: %v", ns, err)
		}
	})
	values := filepath.Join(root, appChart, "ci", sc.values+"-values.yaml")
	d := newDryRunner(t, c.RESTConfig())
	var kinds []string
	for _, obj := range renderChart(t, root, appChart, ns, values, sc.set...) {
		kinds = append(kinds, obj.GetKind())
		res, err := d.resource(obj, ns)
		if err == nil {
			err = d.apply(ctx, res, obj, nil)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	if !strings.Contains(strings.Join(kinds, ","), sc.wantKind) {
		t.Fatalf("scenario %s renders no %s: %v", sc.values, sc.wantKind, kinds)
	}
	const selector = "app.kubernetes.io/instance=check,app.kubernetes.io/name=websocket-app"
	pods := waitForReadyPods(ctx, t, client, ns, selector, 2)
	waitForEndpoints(ctx, t, client, ns, "check-websocket-app", 2)
	ips := map[string]string{}
	for _, p := range pods {
		ips[p.Name] = p.Status.PodIP
	}
	counts := func() map[string]float64 {
		got := map[string]float64{}
		for name, ip := range ips {
			v, err := connectionsActive(ctx, c, ip)
			if err != nil {
				v = -1
			}
			got[name] = v
		}
		return got
	}
	waitCounts := func(what string, ok func(map[string]float64) bool) map[string]float64 {
		t.Helper()
		var got map[string]float64
		waitFor(ctx, t, time.Minute, func() (bool, string) {
			got = counts()
			return ok(got), fmt.Sprintf("%s: websocket_connections_active per pod %v", what, got)
		})
		return got
	}
	allZero := func(m map[string]float64) bool {
		for _, v := range m {
			if v != 0 {
				return false
			}
		}
		return true
	}

	// The route is live once Traefik has read it: until then the entry point answers 404.
	waitRouteLive(ctx, t, entry, sc.host)

	// Echo with clients nobody here wrote: wscat (text) and the ws library wscat is built on (binary).
	wscatEcho(t, entry.url(), "hello through "+sc.wantKind, "--host", sc.host, "--no-check")
	nodeBinaryEcho(t, entry.url(), sc.host)
	if sc.wantKind == "HTTPRoute" {
		doctorOnTraefikGateway(ctx, t, c, ns, entry, sc.host)
	} else {
		// No false alarm: Traefik's entry point timeouts end requests, not upgraded connections (the
		// idle clients below outlive its 60 s readTimeout), and the doctor flags nothing on the route.
		expectCheck(ctx, t, c, ns, "exposure", sc.wantKind+" "+ns+"/", checkPass, "Traefik: no setting of the route cuts an upgraded connection")
		checks, _ := runDoctor(ctx, t, c, ns)
		for _, ch := range checks {
			if ch.Area == "exposure" && ch.Status != checkPass {
				t.Errorf("doctor on Traefik's %s: %s %s: %s", sc.wantKind, ch.Status, ch.Object, ch.Evidence)
			}
		}
	}

	// The load client: binary echoes on 20 connections, spread over both pods (it keeps no cookies).
	waitCounts("before the load", allZero)
	const clients = 20
	load := startTraefikLoad(entry, sc.host, clients, func(cfg *wsload.Config) {
		cfg.Binary = true
		cfg.MessageInterval = 100 * time.Millisecond
		cfg.MessageSize = 512
	})
	spread := waitCounts("load on both pods", func(m map[string]float64) bool {
		sum, low := 0.0, float64(clients)
		for _, v := range m {
			sum += v
			low = min(low, v)
		}
		return sum == clients && low > 0
	})
	time.Sleep(2 * time.Second) // a few echoes on every connection
	res := load.finish(t)
	if res.Sent == 0 || res.Received != res.Sent || res.Mismatched != 0 || res.AbnormalDrops != 0 || len(res.ClosesByCode) != 0 {
		t.Errorf("load through Traefik: sent %d, received %d, mismatched %d, closes %v, abnormal drops %d; want every binary echo back and no close",
			res.Sent, res.Received, res.Mismatched, res.ClosesByCode, res.AbnormalDrops)
	}
	t.Logf("load: %d binary echoes on %d connections, spread %v, round trip p50 %v p99 %v", res.Received, clients, spread, res.RTT.P50, res.RTT.P99)

	// Sticky sessions: connections that carry the cookie of the first one all land on its pod.
	if sc.sticky {
		waitCounts("before the sticky clients", allZero)
		jar, err := cookiejar.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		var conns []*websocket.Conn
		for i := 0; i < 6; i++ {
			conn, resp, err := dialThrough(ctx, entry, sc.host, jar)
			if err != nil {
				t.Fatalf("sticky client %d: %v (%s)", i, err, respStatus(resp))
			}
			conns = append(conns, conn)
		}
		u, _ := url.Parse("http://" + sc.host + "/ws")
		got := waitCounts("sticky clients on one pod", func(m map[string]float64) bool {
			sum, high := 0.0, 0.0
			for _, v := range m {
				sum += v
				high = max(high, v)
			}
			return sum == float64(len(conns)) && high == float64(len(conns))
		})
		t.Logf("sticky: cookies %v; per pod %v", jar.Cookies(u), got)
		for _, conn := range conns {
			_ = conn.Close()
		}
	}

	// Idle: WebSockets that send nothing outlive several ping intervals and Traefik's default read
	// timeout (60 s). The load client's connections go to Traefik directly; wscat's goes through a load
	// balancer in front of it that cuts connections silent for lbIdleSurvives (above the ping interval),
	// so it survives only if the server's pings and the client's pongs pass Traefik. The negative control
	// (one scenario) holds wscat behind a load balancer whose idle timeout is below the ping interval:
	// that one is cut.
	waitCounts("before the idle clients", allZero)
	idle := startTraefikLoad(entry, sc.host, 4, nil)
	waitCounts("idle clients open", func(m map[string]float64) bool { return sumf(m) == 4 })
	lb := startIdleTimeoutProxy(t, entry.addr(), lbIdleSurvives)
	var cut chan wscatHold
	if sc.cutControl {
		short := startIdleTimeoutProxy(t, entry.addr(), lbIdleCuts)
		cut = make(chan wscatHold, 1)
		go func() { cut <- holdWscat(t, entry.withAddr(short).url(), sc.host, idleHold) }()
	}
	held := holdWscat(t, entry.withAddr(lb).url(), sc.host, idleHold)
	res = idle.finish(t)
	if res.ClosedByClient != 4 || len(res.ClosesByCode) != 0 || res.AbnormalDrops != 0 {
		t.Errorf("idle clients after %v: closed by client %d, by server %v, abnormal drops %d; want all 4 open until the client closed them",
			idleHold, res.ClosedByClient, res.ClosesByCode, res.AbnormalDrops)
	}
	if held.lasted < idleHold {
		t.Errorf("wscat behind a load balancer with a %v idle timeout was cut after %v (%d pings); want it open for %v:\n%s",
			lbIdleSurvives, held.lasted, held.pings, idleHold, held.output)
	}
	if want := int(idleHold / appPingInterval); held.pings < want {
		t.Errorf("wscat saw %d pings through Traefik in %v; want at least %d", held.pings, idleHold, want)
	}
	t.Logf("idle: 4 load clients open after %v; wscat behind a %v idle-timeout load balancer open after %v with %d pings",
		idleHold, lbIdleSurvives, held.lasted, held.pings)
	if cut != nil {
		h := <-cut
		if h.lasted >= appPingInterval || h.pings > 0 {
			t.Errorf("wscat behind a load balancer with a %v idle timeout (below the %v ping interval) lasted %v with %d pings; want it cut before the first ping",
				lbIdleCuts, appPingInterval, h.lasted, h.pings)
		}
		t.Logf("negative control: behind a %v idle-timeout load balancer wscat was cut after %v", lbIdleCuts, h.lasted.Round(100*time.Millisecond))
	}

	// Drain through the proxy: the drained pod's clients get its 1001, not a 1006 from the proxy, and
	// reconnect through Traefik to the other pod.
	waitCounts("before the drain", allZero)
	drain := startTraefikLoad(entry, sc.host, clients, func(cfg *wsload.Config) {
		cfg.Reconnect = true
		cfg.ReconnectMin = 200 * time.Millisecond
		cfg.ReconnectMax = 2 * time.Second
	})
	before := waitCounts("drain clients open on both pods", func(m map[string]float64) bool {
		low := float64(clients)
		for _, v := range m {
			low = min(low, v)
		}
		return sumf(m) == clients && low > 0
	})
	victim, other := pods[0], pods[1]
	onVictim := before[victim.Name]
	if sc.sigterm {
		if err := client.CoreV1().Pods(ns).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	} else {
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, wsecho.DrainLabel)
		if _, err := client.CoreV1().Pods(ns).Patch(ctx, victim.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The chart drains over DRAIN_TIMEOUT (30 s), after its preStop sleep when the pod is deleted.
	waitFor(ctx, t, 90*time.Second, func() (bool, string) {
		s := drain.snapshot()
		closed := s.Closes[1001] + s.AbnormalDrops
		return closed >= int64(onVictim) && s.Open == clients, fmt.Sprintf("victim's %v clients: closes %v, abnormal %d, open %d", onVictim, s.Closes, s.AbnormalDrops, s.Open)
	})
	after := map[string]float64{}
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		// A deleted pod's replacement may take some of the reconnecting clients: count every pod of the
		// Deployment but the victim.
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		after = map[string]float64{}
		sum := 0.0
		for _, p := range list.Items {
			if p.Name == victim.Name || p.Status.PodIP == "" {
				continue
			}
			v, err := connectionsActive(ctx, c, p.Status.PodIP)
			if err != nil {
				continue
			}
			after[p.Name] = v
			sum += v
		}
		return sum == clients, fmt.Sprintf("clients on the other pods %v, want %d", after, clients)
	})
	res = drain.finish(t)
	if res.ClosesByCode["1001"] != int64(onVictim) || res.AbnormalDrops != 0 {
		t.Errorf("drained pod %s held %v clients: closes %v, abnormal drops %d; want %v × 1001 and no abnormal drop",
			victim.Name, onVictim, res.ClosesByCode, res.AbnormalDrops, onVictim)
	}
	how := "drain label"
	if sc.sigterm {
		how = "SIGTERM"
	}
	t.Logf("drain by %s: pod %s held %v of %d clients; closes %v, abnormal drops %d, failed reconnects %v; afterwards %v (other pod %s)",
		how, victim.Name, onVictim, clients, res.ClosesByCode, res.AbnormalDrops, res.DialErrors, after, other.Name)
}

// traefikLoad is a load client holding connections through Traefik.
type traefikLoad struct {
	stop context.CancelFunc
	done chan loadResult
	mu   sync.Mutex
	last wsload.Snapshot
}

// startTraefikLoad opens n connections to host through the entry point and holds them until finish.
func startTraefikLoad(entry traefikEntry, host string, n int, configure func(*wsload.Config)) *traefikLoad {
	cfg := wsload.DefaultConfig()
	cfg.URL = "ws://" + host + "/ws"
	cfg.Connections = n
	cfg.ConnectRate = 50 // below the scenarios' rate limit (average 50/s, burst 100)
	cfg.Duration = 0
	cfg.NetDialContext = entry.dial(host)
	cfg.ProgressInterval = 200 * time.Millisecond
	if configure != nil {
		configure(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &traefikLoad{stop: cancel, done: make(chan loadResult, 1)}
	cfg.Progress = func(s wsload.Snapshot) {
		l.mu.Lock()
		l.last = s
		l.mu.Unlock()
	}
	go func() {
		res, err := wsload.Run(ctx, cfg)
		l.done <- loadResult{Result: res, err: err}
	}()
	return l
}

func (l *traefikLoad) snapshot() wsload.Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// finish closes the connections and returns what happened to them.
func (l *traefikLoad) finish(t *testing.T) *wsload.Result {
	t.Helper()
	l.stop()
	select {
	case res := <-l.done:
		if res.err != nil {
			t.Fatalf("load: %v", res.err)
		}
		return res.Result
	case <-time.After(30 * time.Second):
		t.Fatal("the load client did not stop")
		return nil
	}
}

// dialThrough opens one WebSocket to host through the entry point, with the cookies of jar.
func dialThrough(ctx context.Context, entry traefikEntry, host string, jar http.CookieJar) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{NetDialContext: entry.dial(host), Jar: jar, HandshakeTimeout: 10 * time.Second}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return d.DialContext(dctx, "ws://"+host+"/ws", nil)
}

func respStatus(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	return resp.Status
}

// nodeBinaryEcho sends a binary message with the ws library (test/e2e/node/binary-echo.js) and
// expects the same bytes back.
func nodeBinaryEcho(t *testing.T, url, host string) {
	t.Helper()
	dir := nodeClientsDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "node", filepath.Join(dir, "binary-echo.js"), url, host).CombinedOutput()
	if err != nil {
		t.Fatalf("binary echo with the ws library: %v\n%s", err, out)
	}
}

// wscatHold is what happened to a wscat connection held open without sending anything.
type wscatHold struct {
	lasted time.Duration // how long it stayed open, at most the hold
	pings  int           // pings it received
	output string
}

// holdWscat holds a wscat connection open without sending anything for hold, or until it ends.
func holdWscat(t *testing.T, url, host string, hold time.Duration) wscatHold {
	wscat := filepath.Join(nodeClientsDir(t), "node_modules", ".bin", "wscat")
	cmd := exec.Command(wscat, "--host", host, "--no-check", "--show-ping-pong", "--no-color", "--connect", url)
	stdin, err := cmd.StdinPipe() // wscat exits when its standard input closes
	if err != nil {
		return wscatHold{output: err.Error()}
	}
	defer stdin.Close()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return wscatHold{output: err.Error()}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(hold):
		_ = cmd.Process.Kill()
		<-exited
	}
	h := wscatHold{lasted: min(time.Since(start), hold), output: out.String()}
	h.pings = strings.Count(h.output, "Received ping")
	return h
}

// syncBuffer is a bytes.Buffer safe for a process's output and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startIdleTimeoutProxy plays a load balancer in front of Traefik: a TCP proxy on the host's loopback
// that closes a connection on which no byte has passed in either direction for idleTimeout, as cloud
// load balancers do (AWS ALB: 60 s by default). It returns its address.
func startIdleTimeoutProxy(t *testing.T, target string, idleTimeout time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer down.Close()
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				var last atomic.Int64
				last.Store(time.Now().UnixNano())
				pipe := func(dst, src net.Conn) {
					buf := make([]byte, 32<<10)
					for {
						n, err := src.Read(buf)
						if n > 0 {
							last.Store(time.Now().UnixNano())
							if _, werr := dst.Write(buf[:n]); werr != nil {
								break
							}
						}
						if err != nil {
							break
						}
					}
					_ = dst.Close()
					_ = src.Close()
				}
				go pipe(up, down)
				done := make(chan struct{})
				go func() { pipe(down, up); close(done) }()
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-done:
						return
					case <-tick.C:
						if time.Since(time.Unix(0, last.Load())) >= idleTimeout {
							return // the deferred closes cut both sides without a close frame
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// selfSignedCert returns a certificate and key for host, PEM-encoded.
func selfSignedCert(t *testing.T, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func sumf(m map[string]float64) float64 {
	s := 0.0
	for _, v := range m {
		s += v
	}
	return s
}

// TestTraefikProxyEvents shows what proxy-side events do to established WebSockets: a route added for
// another host (Traefik rebuilds its routing) cuts none of them, and a Traefik pod that stops (as in a
// rollout or an eviction) cuts only the connections that pass through it, after its lifeCycle grace
// (requestAcceptGraceTimeout + graceTimeOut), without a close frame; the other replica's stay open and
// keep echoing.
func TestTraefikProxyEvents(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	tr := installTraefik(ctx, t, c)
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const ns, host = "e2e-traefik-events", "events.example.com"
	createNamespace(ctx, t, client, ns)
	t.Cleanup(func() {
		if err := client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
			t.Logf("delete namespace %s: %v", ns, err)
		}
	})
	d := newDryRunner(t, c.RESTConfig())
	var route *unstructured.Unstructured
	for _, obj := range renderChart(t, root, appChart, ns, filepath.Join(root, appChart, "ci", "traefik-values.yaml"), "--set", "exposure.host="+host) {
		res, err := d.resource(obj, ns)
		if err == nil {
			err = d.apply(ctx, res, obj, nil)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
		if obj.GetKind() == "IngressRoute" {
			route = obj
		}
	}
	waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/instance=check,app.kubernetes.io/name=websocket-app", 2)
	waitForEndpoints(ctx, t, client, ns, "check-websocket-app", 2)
	entry := tr.web
	waitRouteLive(ctx, t, entry, host)

	const clients = 20
	load := startTraefikLoad(entry, host, clients, func(cfg *wsload.Config) {
		cfg.MessageInterval = 500 * time.Millisecond
	})
	defer load.stop()
	traefikPods := waitForReadyPods(ctx, t, client, traefikNS, traefikSelector, 2)
	perTraefik := map[string]float64{}
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		sum := 0.0
		for _, p := range traefikPods {
			v, err := traefikOpenConnections(ctx, c, p.Status.PodIP, "web")
			if err != nil {
				return false, err.Error()
			}
			perTraefik[p.Name] = v
			sum += v
		}
		return load.snapshot().Open == clients && sum == clients, fmt.Sprintf("open %d; Traefik's open connections per pod %v, want %d in all", load.snapshot().Open, perTraefik, clients)
	})
	t.Logf("%d clients through Traefik, per Traefik pod %v", clients, perTraefik)

	// A route for another host: Traefik rebuilds its configuration; no established socket notices.
	other := route.DeepCopy()
	other.SetName("unrelated")
	other.SetResourceVersion("")
	routes, _, _ := unstructured.NestedSlice(other.Object, "spec", "routes")
	routes[0].(map[string]any)["match"] = "Host(`unrelated.example.com`)"
	if err := unstructured.SetNestedSlice(other.Object, routes, "spec", "routes"); err != nil {
		t.Fatal(err)
	}
	res, err := d.resource(other, ns)
	if err == nil {
		err = d.apply(ctx, res, other, nil)
	}
	if err != nil {
		t.Fatalf("unrelated IngressRoute: %v", err)
	}
	waitRouteLive(ctx, t, entry, "unrelated.example.com")
	received := load.snapshot().Received
	time.Sleep(2 * time.Second) // echoes keep flowing
	if s := load.snapshot(); s.Open != clients || len(s.Closes) != 0 || s.AbnormalDrops != 0 || s.Received <= received {
		t.Errorf("after an unrelated route was added: open %d, closes %v, abnormal drops %d, echoes %d → %d; want all %d open and echoing",
			s.Open, s.Closes, s.AbnormalDrops, received, s.Received, clients)
	}

	// One Traefik pod stops: only its connections end.
	var victim corev1.Pod
	for _, p := range traefikPods {
		if perTraefik[p.Name] > 0 {
			victim = p
			break
		}
	}
	cutWant := int64(perTraefik[victim.Name])
	stopped := time.Now()
	if err := client.CoreV1().Pods(traefikNS).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var cutAfter time.Duration
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		s := load.snapshot()
		ended := s.AbnormalDrops + sumCloses(s.Closes)
		if ended >= cutWant && cutAfter == 0 {
			cutAfter = time.Since(stopped)
		}
		return ended >= cutWant, fmt.Sprintf("%v after the Traefik pod %s stopped: abnormal drops %d, closes %v; want its %d connections ended", time.Since(stopped).Round(time.Second), victim.Name, s.AbnormalDrops, s.Closes, cutWant)
	})
	received = load.snapshot().Received
	time.Sleep(3 * time.Second) // anything else that would end, ends
	s := load.snapshot()
	if ended := s.AbnormalDrops + sumCloses(s.Closes); ended != cutWant || s.Open != clients-cutWant || s.Received <= received {
		t.Errorf("after Traefik pod %s stopped: %d ended (abnormal %d, closes %v), %d open, echoes %d → %d; want exactly its %d ended and the other %d open and echoing",
			victim.Name, ended, s.AbnormalDrops, s.Closes, s.Open, received, s.Received, cutWant, clients-cutWant)
	}
	t.Logf("Traefik pod %s stopped: its %d WebSockets ended %v later (abnormal drops %d, close frames %v); the other %d stayed open",
		victim.Name, cutWant, cutAfter.Round(100*time.Millisecond), s.AbnormalDrops, s.Closes, s.Open)
	waitForReadyPods(ctx, t, client, traefikNS, traefikSelector, 2)
}

func sumCloses(m map[int]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// traefikOpenConnections reads traefik_open_connections of one entry point from a Traefik pod's metrics.
func traefikOpenConnections(ctx context.Context, c *localcluster.Cluster, podIP, entryPoint string) (float64, error) {
	return scrapeSeries(ctx, c, net.JoinHostPort(podIP, "9000"), fmt.Sprintf(`traefik_open_connections{entrypoint=%q,protocol="TCP"}`, entryPoint))
}

// doctorOnTraefikGateway checks the doctor's Gateway API check against the status Traefik itself
// writes on the chart's HTTPRoute: Accepted by Gateway public; a parentRef to a listener the Gateway
// does not have is refused by Traefik and fails the check; restored, it passes again and the route
// carries WebSockets again.
func doctorOnTraefikGateway(ctx context.Context, t *testing.T, c *localcluster.Cluster, ns string, entry traefikEntry, host string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	routes := dyn.Resource(httpRoutesResource).Namespace(ns)
	list, err := routes.List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("HTTPRoutes in %s: %v, %v; want the chart's one", ns, list, err)
	}
	name := list.Items[0].GetName()
	obj := "HTTPRoute " + ns + "/" + name
	expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, "Accepted by Gateway public")
	setSection := func(section string) {
		patch := fmt.Sprintf(`{"spec":{"parentRefs":[{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"public","namespace":"gateway-system","sectionName":%q}]}}`, section)
		if _, err := routes.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setSection("no-such-listener")
	ch := expectCheck(ctx, t, c, ns, "exposure", obj, checkFail, "not Accepted: Gateway public: Accepted=False NoMatchingParent", "sectionName and port must name a listener")
	t.Logf("Traefik refused the route: %s", ch.Evidence)
	setSection("https")
	expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, "Accepted by Gateway public")
	waitRouteLive(ctx, t, entry, host)

	// A request timeout on the route: Envoy-based controllers end a WebSocket at that age; Traefik
	// does not, and the doctor says so only because this holds an idle WebSocket on such a route
	// through Traefik for three times the timeout.
	jsonPatch := func(p string) {
		if _, err := routes.Patch(ctx, name, types.JSONPatchType, []byte(p), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	const routeTimeout = 5 * time.Second
	jsonPatch(fmt.Sprintf(`[{"op":"add","path":"/spec/rules/0/timeouts","value":{"request":%q}}]`, routeTimeout.String()))
	expectCheck(ctx, t, c, ns, "exposure", obj, checkPass, "timeouts request=5s with controller traefik.io/gateway-controller: Traefik does not end an upgraded connection")
	poll(ctx, t, "Traefik serves the route with its timeout", time.Minute, func() (bool, string) {
		r, err := routes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		parents, _, _ := unstructured.NestedSlice(r.Object, "status", "parents")
		for _, p := range parents {
			conds, _, _ := unstructured.NestedSlice(p.(map[string]any), "conditions")
			for _, c := range conds {
				cm := c.(map[string]any)
				if cm["type"] == "Accepted" && cm["status"] == "True" && cm["observedGeneration"] == r.GetGeneration() {
					return true, ""
				}
			}
		}
		return false, fmt.Sprintf("status %v, generation %d", parents, r.GetGeneration())
	})
	conn, resp, err := dialThrough(ctx, entry, host, nil)
	if err != nil {
		t.Fatalf("upgrade through Traefik with a route timeout: %v (%s)", err, respStatus(resp))
	}
	start := time.Now()
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		t.Errorf("an idle WebSocket on a route with timeouts.request %v ended after %v: %v; the doctor passes such routes on Traefik", routeTimeout, time.Since(start), err)
	case <-time.After(3 * routeTimeout):
		t.Logf("an idle WebSocket on a route with timeouts.request %v is open after %v", routeTimeout, 3*routeTimeout)
	}
	_ = conn.Close()
	jsonPatch(`[{"op":"remove","path":"/spec/rules/0/timeouts"}]`)
	waitRouteLive(ctx, t, entry, host)
}

// waitRouteLive waits until WebSocket upgrades for host through the entry point succeed five times
// in a row: Traefik has read the route and its backends (until then the entry point answers 404,
// and right after it first serves a route it can still answer 503 while its endpoints settle).
func waitRouteLive(ctx context.Context, t *testing.T, entry traefikEntry, host string) {
	t.Helper()
	inARow := 0
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		conn, resp, err := dialThrough(ctx, entry, host, nil)
		if err != nil {
			inARow = 0
			return false, fmt.Sprintf("upgrade through Traefik for %s: %v (%s)", host, err, respStatus(resp))
		}
		_ = conn.Close()
		inARow++
		return inARow >= 5, fmt.Sprintf("%d upgrades in a row", inARow)
	})
}
