// Package localcluster runs a real Kubernetes control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) and the process-based node agent on one
// machine, for the demo and the end-to-end tests.
//
// The host's network configuration is never changed. The process that calls Start
// stays in the host network namespace and re-executes its own binary as a node
// supervisor in new network, mount and PID namespaces: the node network. Components
// listen there, pods get addresses from 198.18.1.0/24 there, and the supervisor is
// the PID namespace's init, so when it ends every process of the node ends with it.
// The calling process forwards host 127.0.0.1:<api port> to kube-apiserver and
// 127.0.0.1:<nodePort> to the endpoints of NodePort Services, and offers a dialer
// into the node network for clients on the host.
//
// A binary that uses this package must run as root (it creates namespaces) and must
// not change os.Args[0]'s meaning: the supervisor is the same binary, selected by an
// environment variable in this package's init.
package localcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// Cluster is a running local cluster. Stop it to remove every trace of it.
type Cluster struct {
	opts     Options
	stateDir string

	kubeconfig        string // host kubeconfig
	removeKubeconfig  bool
	hostConfig        *rest.Config
	client            kubernetes.Interface
	apiPort           int
	supervisor        *exec.Cmd
	supervisorDone    chan struct{}
	supervisorErr     error // valid once supervisorDone is closed
	supervisorLogFile *os.File

	netns        *netnsDialer
	apiForwarder *tcpForwarder
	nodePorts    *nodePortForwarder

	startFailed bool
	stopOnce    sync.Once
	stopErr     error
}

// Start brings a cluster up and returns once it is ready: the API server is ready,
// the controllers and the scheduler are healthy and (with the node agent) the Node
// is Ready. On any failure it tears down what it started and returns an error that
// carries the tail of the failing component's log.
func Start(ctx context.Context, o *Options) (*Cluster, error) {
	if errs := o.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("invalid local cluster options: %w", utilerrors.NewAggregate(errs))
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the local cluster must run as root: it creates network, mount and PID namespaces")
	}
	c := &Cluster{opts: *o, supervisorDone: make(chan struct{})}
	binDir, err := filepath.Abs(o.BinDir)
	if err != nil {
		return nil, fmt.Errorf("bin dir: %w", err)
	}
	c.opts.BinDir = binDir
	if err := checkBinaries(binDir); err != nil {
		return nil, err
	}
	if c.opts.Images == nil {
		c.opts.Images = DefaultImages(binDir)
	}

	ln, err := listenHostPort(o.APIPort)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("kube-apiserver forward: %w (is a local cluster already running? `make cluster-down` stops it; --api-port picks another port)", err)
		}
		return nil, fmt.Errorf("kube-apiserver forward: %w", err)
	}
	c.apiPort = ln.Addr().(*net.TCPAddr).Port

	if err := os.MkdirAll(o.StateDirParent, 0o755); err != nil {
		ln.Close()
		return nil, fmt.Errorf("state dir parent: %w", err)
	}
	c.stateDir, err = os.MkdirTemp(o.StateDirParent, "wsscale-localcluster-")
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	startErr := c.start(ctx, ln)
	if startErr != nil {
		// The supervisor reported the failure already; its exit status adds nothing.
		c.startFailed = true
		if stopErr := c.Stop(); stopErr != nil {
			klog.ErrorS(stopErr, "Teardown after a failed start-up")
		}
		if !o.KeepState {
			startErr = fmt.Errorf("%w\n(the state directory and its logs were removed; --keep-state keeps them)", startErr)
		}
		return nil, startErr
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context, ln net.Listener) error {
	c.apiForwarder = newTCPForwarder("kube-apiserver", ln, func(ctx context.Context, network, addr string) (net.Conn, error) {
		return c.DialContext(ctx, network, addr)
	}, func() (string, error) {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(APIServerPort)), nil
	})

	events, err := c.startSupervisor()
	if err != nil {
		return err
	}
	c.netns, err = newNetnsDialer(fmt.Sprintf("/proc/%d/ns/net", c.supervisor.Process.Pid))
	if err != nil {
		return err
	}

	deadline := c.opts.StartTimeout + 30*time.Second
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	select {
	case ev, ok := <-events:
		switch {
		case ok && ev.Ready:
		case ok && ev.Error != "":
			return fmt.Errorf("start local cluster: %s", ev.Error)
		default:
			<-c.supervisorDone
			return fmt.Errorf("start local cluster: node supervisor exited (%v); last lines of %s:\n%s",
				c.supervisorErr, c.path("supervisor.log"), fileTail(c.path("supervisor.log"), logTailLines))
		}
	case <-ctx.Done():
		return fmt.Errorf("start local cluster: %w", ctx.Err())
	case <-timer.C:
		return fmt.Errorf("start local cluster: not ready after %s; see %s", deadline, c.path("supervisor.log"))
	}

	if err := c.connect(); err != nil {
		return err
	}
	go c.apiForwarder.Serve()
	if c.opts.NodePorts {
		c.nodePorts = newNodePortForwarder(c.client, c.DialContext, listenHostPort)
		if err := c.nodePorts.Start(); err != nil {
			return err
		}
	}
	klog.InfoS("Local cluster is up", "kubeconfig", c.kubeconfig, "apiserver", c.hostConfig.Host, "stateDir", c.stateDir)
	return nil
}

// startSupervisor re-executes this binary as the node supervisor in new network,
// mount and PID namespaces and returns the stream of its start-up reports.
func (c *Cluster) startSupervisor() (<-chan supervisorEvent, error) {
	cfg := supervisorConfig{
		StateDir:                  c.stateDir,
		BinDir:                    c.opts.BinDir,
		NodeName:                  c.opts.NodeName,
		Images:                    c.opts.Images,
		NodeAgent:                 c.opts.NodeAgent,
		HPASyncPeriod:             c.opts.HPASyncPeriod,
		HPADownscaleStabilization: c.opts.HPADownscaleStabilization,
		StartTimeout:              c.opts.StartTimeout,
		StopTimeout:               c.opts.StopTimeout,
		ComponentGracePeriod:      c.opts.ComponentGracePeriod,
		ExtraArgs:                 c.opts.ExtraArgs,
		DownwardAPISyncDelay:      c.opts.DownwardAPISyncDelay,
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode supervisor config: %w", err)
	}
	cfgPath := c.path("supervisor.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		return nil, fmt.Errorf("write supervisor config: %w", err)
	}
	logFile, err := os.OpenFile(c.path("supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open supervisor log: %w", err)
	}
	c.supervisorLogFile = logFile
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("supervisor pipe: %w", err)
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{os.Args[0]}
	cmd.Env = append(os.Environ(), supervisorEnv+"="+cfgPath)
	cmd.Dir = c.stateDir
	cmd.Stdout = logFile
	cmd.Stderr = io.MultiWriter(logFile, os.Stderr)
	cmd.ExtraFiles = []*os.File{w} // descriptor supervisorEventsFD
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		// Nothing of the node outlives this process, even if it is killed.
		Pdeathsig: syscall.SIGKILL,
		// A Ctrl-C in a terminal reaches this process only; it stops the node in order.
		Setpgid: true,
	}
	err = spawner().Start(cmd)
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start node supervisor: %w", err)
	}
	c.supervisor = cmd
	go func() {
		c.supervisorErr = cmd.Wait()
		close(c.supervisorDone)
	}()

	events := make(chan supervisorEvent, 1)
	go func() {
		defer close(events)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev supervisorEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				continue
			}
			events <- ev
			return
		}
	}()
	return events, nil
}

// connect writes the host kubeconfig and builds the clients of the running cluster.
func (c *Cluster) connect() error {
	admin, err := clientcmd.LoadFromFile(c.path("kubeconfigs", "admin.kubeconfig"))
	if err != nil {
		return fmt.Errorf("read admin kubeconfig: %w", err)
	}
	for _, cl := range admin.Clusters {
		cl.Server = fmt.Sprintf("https://127.0.0.1:%d", c.apiPort)
	}
	c.kubeconfig = c.opts.Kubeconfig
	if c.kubeconfig == "" {
		c.kubeconfig = c.path("kubeconfig")
	} else {
		c.removeKubeconfig = true
	}
	if err := writeKubeconfig(c.kubeconfig, admin); err != nil {
		return err
	}
	c.hostConfig, err = restConfigFromKubeconfig(admin)
	if err != nil {
		return err
	}
	// The runner's own clients skip the host forwarder and dial into the node network.
	direct := rest.CopyConfig(c.hostConfig)
	direct.Host = fmt.Sprintf("https://127.0.0.1:%d", APIServerPort)
	direct.Dial = c.DialContext
	c.client, err = kubernetes.NewForConfig(direct)
	if err != nil {
		return fmt.Errorf("cluster client: %w", err)
	}
	return nil
}

// DialContext opens a TCP connection to addr inside the node network, where pod
// addresses (198.18.1.0/24) and the node address (198.18.0.1) are reachable.
// Hosts names other than "localhost" are not resolved.
func (c *Cluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.netns == nil {
		return nil, errDialerClosed
	}
	return c.netns.DialContext(ctx, network, addr)
}

// Kubeconfig is the path of the admin kubeconfig for host clients.
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// RESTConfig returns a new admin client configuration that reaches the API server
// through the host port.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.hostConfig) }

// Client is an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// APIPort is the host loopback port forwarded to kube-apiserver.
func (c *Cluster) APIPort() int { return c.apiPort }

// SupervisorPID is the process that runs the control plane's supervision and the node agent
// (0 before the cluster started): its memory is the node agent's cost per pod.
func (c *Cluster) SupervisorPID() int {
	if c.supervisor == nil || c.supervisor.Process == nil {
		return 0
	}
	return c.supervisor.Process.Pid
}

// StateDir is the cluster's private directory: logs, certificates, etcd data.
func (c *Cluster) StateDir() string { return c.stateDir }

// LogPath is the log file of a component ("etcd", "kube-apiserver", ...) or of the
// node supervisor ("supervisor").
func (c *Cluster) LogPath(component string) string {
	if component == "supervisor" {
		return c.path("supervisor.log")
	}
	return c.path("logs", component+".log")
}

// Done is closed when the node supervisor has ended, after Stop or on a failure.
func (c *Cluster) Done() <-chan struct{} { return c.supervisorDone }

// Err describes why the node supervisor ended; valid once Done is closed.
func (c *Cluster) Err() error {
	select {
	case <-c.supervisorDone:
	default:
		return nil
	}
	if c.supervisorErr != nil {
		return fmt.Errorf("node supervisor: %v; last lines of %s:\n%s", c.supervisorErr, c.path("supervisor.log"),
			fileTail(c.path("supervisor.log"), logTailLines))
	}
	return nil
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.stateDir}, elem...)...)
}

// Stop tears the cluster down: forwarders close, the supervisor stops the node
// agent (and with it the pods) and the components, and the state directory and
// the kubeconfig written for the host are removed. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Cluster) stop() error {
	var errs []error
	if c.nodePorts != nil {
		c.nodePorts.Stop()
	}
	if c.apiForwarder != nil {
		c.apiForwarder.Close()
	}
	if c.supervisor != nil {
		select {
		case <-c.supervisorDone:
		default:
			_ = c.supervisor.Process.Signal(syscall.SIGTERM)
		}
		// The supervisor gives the node agent StopTimeout and each component its
		// grace period; past that, killing it (the PID namespace's init) ends
		// every process of the node at once.
		limit := c.opts.StopTimeout + 4*c.opts.ComponentGracePeriod + 10*time.Second
		t := time.NewTimer(limit)
		select {
		case <-c.supervisorDone:
		case <-t.C:
			errs = append(errs, fmt.Errorf("node supervisor did not stop within %s; killed it", limit))
			_ = c.supervisor.Process.Kill()
			<-c.supervisorDone
		}
		t.Stop()
		if c.supervisorErr != nil && !c.startFailed {
			errs = append(errs, fmt.Errorf("node supervisor: %w; last lines of %s:\n%s", c.supervisorErr,
				c.path("supervisor.log"), fileTail(c.path("supervisor.log"), logTailLines)))
		}
	}
	if c.netns != nil {
		c.netns.Close()
	}
	if c.supervisorLogFile != nil {
		c.supervisorLogFile.Close()
	}
	if c.removeKubeconfig {
		if err := os.Remove(c.kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove kubeconfig: %w", err))
		}
	}
	if c.stateDir != "" {
		if c.opts.KeepState {
			klog.InfoS("Keeping the state directory", "stateDir", c.stateDir)
		} else if err := os.RemoveAll(c.stateDir); err != nil {
			errs = append(errs, fmt.Errorf("remove state dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// checkBinaries fails with a pointer to the build script when a component is missing.
func checkBinaries(binDir string) error {
	var missing []string
	for _, b := range componentBinaries {
		st, err := os.Stat(filepath.Join(binDir, b))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s in %s: build the pinned components with hack/build-tools.sh (make tools)",
			strings.Join(missing, ", "), binDir)
	}
	return nil
}
