package localcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// supervisorEnv carries the path of the supervisor's configuration. A process
// started with it set runs the node supervisor instead of its main function.
const supervisorEnv = "WSSCALE_LOCALCLUSTER_SUPERVISOR_CONFIG"

// supervisorEventsFD is the descriptor on which the supervisor reports start-up.
const supervisorEventsFD = 3

// The parent re-executes its own binary (os.Args[0] through /proc/self/exe) in new
// namespaces; whichever program imports this package, the child turns into the
// supervisor here, before that program's main or TestMain runs.
func init() {
	path := os.Getenv(supervisorEnv)
	if path == "" {
		return
	}
	os.Unsetenv(supervisorEnv)
	os.Exit(runSupervisor(path))
}

// supervisorConfig is what the parent tells the supervisor.
type supervisorConfig struct {
	StateDir                  string
	BinDir                    string
	NodeName                  string
	Images                    map[string]string
	NodeAgent                 bool
	HPASyncPeriod             time.Duration
	HPADownscaleStabilization time.Duration
	StartTimeout              time.Duration
	StopTimeout               time.Duration
	ComponentGracePeriod      time.Duration
	ExtraArgs                 map[string][]string
	DownwardAPISyncDelay      time.Duration
}

// supervisorEvent is one line of the supervisor's report to the parent.
type supervisorEvent struct {
	Ready bool   `json:"ready,omitempty"`
	Error string `json:"error,omitempty"`
}

// runSupervisor runs the node: it starts the control plane and the node agent inside
// the node network, reports readiness, and tears everything down on SIGTERM/SIGINT
// or when a part fails. It returns the process exit code.
func runSupervisor(configPath string) int {
	klog.InitFlags(nil)
	defer klog.Flush()
	events := os.NewFile(supervisorEventsFD, "supervisor-events")
	report := func(ev supervisorEvent) {
		if events == nil {
			return
		}
		b, _ := json.Marshal(ev)
		events.Write(append(b, '\n'))
	}
	fail := func(err error) int {
		klog.ErrorS(err, "Local cluster failed")
		report(supervisorEvent{Error: err.Error()})
		return 1
	}

	raw, err := os.ReadFile(configPath)
	if err != nil {
		return fail(fmt.Errorf("read supervisor config: %w", err))
	}
	var cfg supervisorConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fail(fmt.Errorf("decode supervisor config: %w", err))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := setUpNodeNamespace(); err != nil {
		return fail(err)
	}
	s := &supervisor{cfg: cfg, clock: clock.RealClock{}, agentDone: make(chan error, 1)}
	startCtx, cancelStart := context.WithTimeout(ctx, cfg.StartTimeout)
	err = s.start(startCtx)
	cancelStart()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted during start-up: %w", err)
		}
		s.teardown()
		return fail(err)
	}
	report(supervisorEvent{Ready: true})
	events.Close()
	events = nil
	klog.InfoS("Local cluster is ready", "node", cfg.NodeName, "apiserver", fmt.Sprintf("https://%s:%d", NodeIP, APIServerPort))

	runErr := s.wait(ctx)
	s.teardown()
	if runErr != nil {
		klog.ErrorS(runErr, "Local cluster stopped after a failure")
		return 1
	}
	klog.InfoS("Local cluster stopped")
	return 0
}

// supervisor owns the processes of the node.
type supervisor struct {
	cfg   supervisorConfig
	clock clock.WithTicker

	pki        *clusterPKI
	components []*component // in start order

	agentCancel context.CancelFunc
	agentDone   chan error
	agentRuns   bool

	services *serviceProxy
}

// nodeAgentRunner is the part of the node agent the supervisor drives.
type nodeAgentRunner interface {
	Run(ctx context.Context) error
}

func (s *supervisor) path(elem ...string) string {
	return filepath.Join(append([]string{s.cfg.StateDir}, elem...)...)
}

func (s *supervisor) start(ctx context.Context) error {
	for _, dir := range []string{"logs", "etcd", "kubeconfigs", "controller-manager", "scheduler", "apiserver", "node"} {
		if err := os.MkdirAll(s.path(dir), 0o700); err != nil {
			return fmt.Errorf("create state dir: %w", err)
		}
	}
	var err error
	s.pki, err = generatePKI(pkiRequest{
		Dir:         s.path("pki"),
		APIServerIP: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(NodeIP), net.ParseIP(firstServiceIP)},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		Now:      s.clock.Now(),
		Validity: 365 * 24 * time.Hour,
		NodeName: s.cfg.NodeName,
		NodeIP:   net.ParseIP(NodeIP),
	})
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", APIServerPort)
	kubeconfigs := map[string]*certificate{"admin": s.pki.Admin, "controller-manager": s.pki.ControllerMgr, "scheduler": s.pki.Scheduler}
	for name, cert := range kubeconfigs {
		if err := writeKubeconfig(s.path("kubeconfigs", name+".kubeconfig"), kubeconfigFor(server, s.pki.CA, cert)); err != nil {
			return err
		}
	}

	if err := checkPortsFree("127.0.0.1", etcdClientPort, etcdPeerPort, controllerManagerPort, schedulerPort); err != nil {
		return err
	}
	if err := checkPortsFree("0.0.0.0", APIServerPort); err != nil {
		return err
	}

	etcd, err := s.startComponent("etcd", s.etcdArgs())
	if err != nil {
		return err
	}
	if err := etcd.waitHealthy(ctx, httpCheck(&http.Client{}, fmt.Sprintf("http://127.0.0.1:%d/health", etcdClientPort))); err != nil {
		return err
	}

	apiserver, err := s.startComponent("kube-apiserver", s.apiserverArgs())
	if err != nil {
		return err
	}
	adminHTTP, err := s.adminHTTPClient()
	if err != nil {
		return err
	}
	if err := apiserver.waitHealthy(ctx, httpCheck(adminHTTP, server+"/readyz")); err != nil {
		return err
	}

	kcm, err := s.startComponent("kube-controller-manager", s.controllerManagerArgs())
	if err != nil {
		return err
	}
	scheduler, err := s.startComponent("kube-scheduler", s.schedulerArgs())
	if err != nil {
		return err
	}
	// Their serving certificates are self-signed; the check only asks whether they serve.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if err := kcm.waitHealthy(ctx, httpCheck(insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", controllerManagerPort))); err != nil {
		return err
	}
	if err := scheduler.waitHealthy(ctx, httpCheck(insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", schedulerPort))); err != nil {
		return err
	}

	rc, err := restConfigFromKubeconfig(kubeconfigFor(server, s.pki.CA, s.pki.Admin))
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	// Pods are admitted only once their namespace's default service account and
	// root CA config map exist; the controller manager creates both.
	if err := s.waitFor(ctx, "default service account and kube-root-ca.crt", func(ctx context.Context) error {
		if _, err := client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := client.CoreV1().ConfigMaps(metav1.NamespaceDefault).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err
	}); err != nil {
		return err
	}

	if !s.cfg.NodeAgent {
		return nil
	}
	if err := s.waitFor(ctx, "kubelet API access for kube-apiserver", func(ctx context.Context) error {
		return grantKubeletAPI(ctx, client)
	}); err != nil {
		return err
	}
	if err := routeServiceRange(ServiceCIDR); err != nil {
		return err
	}
	services := newServiceProxy(client, func(p servicePort) string {
		// Nothing maintains the kubernetes Service's endpoints (--endpoint-reconciler-type=none).
		if p.Namespace == metav1.NamespaceDefault && p.Service == "kubernetes" {
			return net.JoinHostPort(NodeIP, strconv.Itoa(APIServerPort))
		}
		return ""
	})
	if err := services.Start(); err != nil {
		return err
	}
	// Only a started proxy is stopped by teardown (Stop waits for its loop).
	s.services = services
	if err := s.waitFor(ctx, "cluster DNS objects", func(ctx context.Context) error {
		return installClusterDNS(ctx, client)
	}); err != nil {
		return err
	}
	if err := s.startNodeAgent(); err != nil {
		return err
	}
	return s.waitFor(ctx, "node "+s.cfg.NodeName+" to be Ready", func(ctx context.Context) error {
		node, err := client.CoreV1().Nodes().Get(ctx, s.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("not Ready yet")
	})
}

// waitFor polls check until it passes, while watching that no component or the
// node agent has ended.
func (s *supervisor) waitFor(ctx context.Context, what string, check healthCheck) error {
	last, err := pollCheck(ctx, s.clock, check, nil, func(last error) error {
		if apierrors.IsForbidden(last) || apierrors.IsUnauthorized(last) {
			return fmt.Errorf("wait for %s: %w", what, last)
		}
		return s.failure()
	})
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return fmt.Errorf("wait for %s: not done before the start-up deadline (last check: %v)", what, last)
	}
	return err
}

// failure reports a component or the node agent that has ended.
func (s *supervisor) failure() error {
	for _, c := range s.components {
		select {
		case <-c.Exited():
			return c.exitError("exited")
		default:
		}
	}
	if s.agentRuns {
		select {
		case err := <-s.agentDone:
			s.agentRuns = false
			return fmt.Errorf("node agent stopped during start-up: %v", err)
		default:
		}
	}
	return nil
}

// wait blocks until ctx ends (a clean stop) or a part of the node fails.
func (s *supervisor) wait(ctx context.Context) error {
	exited := make(chan *component, len(s.components))
	for _, c := range s.components {
		go func() {
			select {
			case <-c.Exited():
				exited <- c
			case <-ctx.Done():
			}
		}()
	}
	select {
	case <-ctx.Done():
		klog.InfoS("Stopping local cluster", "reason", context.Cause(ctx))
		return nil
	case c := <-exited:
		return c.exitError("exited unexpectedly")
	case err := <-s.agentDone:
		s.agentRuns = false
		return fmt.Errorf("node agent stopped unexpectedly: %v", err)
	}
}

// teardown stops the node agent (which stops the pods), then the components in
// reverse start order.
func (s *supervisor) teardown() {
	if s.agentRuns {
		s.agentCancel()
		t := s.clock.NewTimer(s.cfg.StopTimeout)
		select {
		case err := <-s.agentDone:
			if err != nil && !errors.Is(err, context.Canceled) {
				klog.ErrorS(err, "Node agent stopped with an error")
			}
		case <-t.C():
			klog.InfoS("Node agent did not stop in time; its pods die with the node", "timeout", s.cfg.StopTimeout)
		}
		t.Stop()
		s.agentRuns = false
	}
	if s.services != nil {
		s.services.Stop()
		s.services = nil
	}
	for i := len(s.components) - 1; i >= 0; i-- {
		s.components[i].Stop(s.cfg.ComponentGracePeriod)
	}
}

func (s *supervisor) startComponent(name string, args []string) (*component, error) {
	args = append(args, s.cfg.ExtraArgs[name]...)
	c, err := startComponent(name, filepath.Join(s.cfg.BinDir, name), args, s.path("logs"), s.clock)
	if err != nil {
		return nil, err
	}
	s.components = append(s.components, c)
	return c, nil
}

func (s *supervisor) etcdArgs() []string {
	client := fmt.Sprintf("http://127.0.0.1:%d", etcdClientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	return []string{
		"--name=local",
		"--data-dir=" + s.path("etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=local=" + peer,
		// The data lives for one run; durability across power loss buys nothing.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}
}

func (s *supervisor) apiserverArgs() []string {
	p := s.pki
	return []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdClientPort),
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--advertise-address=" + NodeIP,
		"--cert-dir=" + s.path("apiserver"),
		"--tls-cert-file=" + p.APIServer.CertFile,
		"--tls-private-key-file=" + p.APIServer.KeyFile,
		"--client-ca-file=" + p.CA.CertFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.ServiceAccountPubKeyFile,
		"--service-account-signing-key-file=" + p.ServiceAccountKeyFile,
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// Aggregated API servers authenticate kube-apiserver by this client
		// certificate and read the user from these headers.
		"--requestheader-client-ca-file=" + p.FrontProxyCA.CertFile,
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--proxy-client-cert-file=" + p.FrontProxyClient.CertFile,
		"--proxy-client-key-file=" + p.FrontProxyClient.KeyFile,
		// ClusterIPs are not routed here; the aggregator dials endpoint (pod) addresses.
		"--enable-aggregator-routing=true",
		// The node's kubelet API (kubectl logs): kube-apiserver dials the node's InternalIP,
		// verifies the serving certificate against the cluster CA and presents its client one.
		"--kubelet-client-certificate=" + p.KubeletClient.CertFile,
		"--kubelet-client-key=" + p.KubeletClient.KeyFile,
		"--kubelet-certificate-authority=" + p.CA.CertFile,
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		// No kubernetes Service endpoints: pods reach the API server at the node address.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
}

func (s *supervisor) controllerManagerArgs() []string {
	return append(s.controlLoopArgs("controller-manager", controllerManagerPort),
		"--controllers=*",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+s.pki.ServiceAccountKeyFile,
		"--root-ca-file="+s.pki.CA.CertFile,
		"--cluster-signing-cert-file="+s.pki.CA.CertFile,
		"--cluster-signing-key-file="+s.pki.CA.KeyFile,
		"--allocate-node-cidrs=false",
		"--horizontal-pod-autoscaler-sync-period="+s.cfg.HPASyncPeriod.String(),
		"--horizontal-pod-autoscaler-downscale-stabilization="+s.cfg.HPADownscaleStabilization.String(),
	)
}

func (s *supervisor) schedulerArgs() []string {
	return s.controlLoopArgs("scheduler", schedulerPort)
}

// controlLoopArgs are the flags kube-controller-manager and kube-scheduler share: their own
// kubeconfig for everything, health and metrics on loopback, no leader election (one of each).
func (s *supervisor) controlLoopArgs(name string, port int) []string {
	kc := s.path("kubeconfigs", name+".kubeconfig")
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + s.path(name),
		"--leader-elect=false",
		"--profiling=false",
	}
}

func (s *supervisor) adminHTTPClient() (*http.Client, error) {
	pair, err := tls.X509KeyPair(s.pki.Admin.CertPEM, s.pki.Admin.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("admin key pair: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(s.pki.CA.CertPEM)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      roots,
	}}}, nil
}

// httpCheck passes when url answers 200.
func httpCheck(client *http.Client, url string) healthCheck {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}
