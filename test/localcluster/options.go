package localcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/wsscale/wsscale/test/nodeagent"
)

// Addresses and ports of the node network. They are fixed: the namespace is private,
// so nothing else can hold them, and pods and charts can rely on them.
const (
	// NodeIP is the node's address inside the node network; components listen on it
	// and pods reach the API server there.
	NodeIP = "198.18.0.1"
	// PodCIDR is the range pod addresses come from.
	PodCIDR = "198.18.1.0/24"
	// ServiceCIDR is the Service ClusterIP allocation range. Nothing routes it; the
	// NodePort forwarder and the aggregator (with endpoint routing) use pod addresses.
	ServiceCIDR = "198.19.0.0/16"
	// firstServiceIP is the ClusterIP of the default/kubernetes Service.
	firstServiceIP = "198.19.0.1"
	// APIServerPort is kube-apiserver's secure port inside the node network.
	APIServerPort = 6443

	etcdClientPort        = 2379
	etcdPeerPort          = 2380
	controllerManagerPort = 10257
	schedulerPort         = 10259
	// KubeletPort is the node agent's kubelet API port on NodeIP (kubectl logs).
	KubeletPort = 10250
)

// Names of the pinned component binaries expected in Options.BinDir.
var componentBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// Options configures a local cluster.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and kube-scheduler
	// (hack/build-tools.sh builds them) and the project binaries pods run.
	BinDir string
	// StateDirParent is where the cluster's private state directory is created; the
	// directory is removed on exit.
	StateDirParent string
	// Kubeconfig is where the admin kubeconfig for host clients is written; empty
	// means only inside the state directory.
	Kubeconfig string
	// APIPort is the host loopback port forwarded to kube-apiserver; 0 picks a free one.
	APIPort int
	// NodeName is the name of the one Node.
	NodeName string
	// Images maps image repositories to binaries; nil means DefaultImages(BinDir).
	Images map[string]string
	// NodeAgent runs the process-based node agent; without it the cluster has no Node.
	NodeAgent bool
	// NodePorts forwards host 127.0.0.1:<nodePort> to Service endpoints.
	NodePorts bool
	// HPASyncPeriod is how often the HPA controller reconciles.
	HPASyncPeriod time.Duration
	// HPADownscaleStabilization is the HPA's default scale-down stabilisation window.
	HPADownscaleStabilization time.Duration
	// StartTimeout bounds the whole start-up.
	StartTimeout time.Duration
	// StopTimeout bounds the whole teardown before remaining processes are killed.
	StopTimeout time.Duration
	// ComponentGracePeriod is how long a component gets between SIGTERM and SIGKILL.
	ComponentGracePeriod time.Duration
	// ExtraArgs appends flags to a component's command line, keyed by binary name.
	ExtraArgs map[string][]string
	// KeepState leaves the state directory (logs, certificates) in place on exit.
	KeepState bool
	// DownwardAPISyncDelay is how long after a pod's labels or annotations change its
	// downwardAPI files do, as a kubelet's next pod sync (negative: at once).
	DownwardAPISyncDelay time.Duration
}

// NewOptions returns options with defaults suited to fast tests.
func NewOptions() *Options {
	return &Options{
		BinDir:                    filepath.Join(".local", "bin"),
		StateDirParent:            os.TempDir(),
		APIPort:                   6443,
		NodeName:                  "local-node-1",
		NodeAgent:                 true,
		NodePorts:                 true,
		HPASyncPeriod:             5 * time.Second,
		HPADownscaleStabilization: 30 * time.Second,
		StartTimeout:              3 * time.Minute,
		StopTimeout:               90 * time.Second,
		ComponentGracePeriod:      10 * time.Second,
		DownwardAPISyncDelay:      nodeagent.DefaultDownwardAPISyncDelay,
	}
}

// DefaultImages maps the project's image repositories to the binaries built into binDir (as
// `make cluster-up` builds them): the product's, and wsscale/testhost, the end-to-end tests' own
// image (test/cmd/testhost).
func DefaultImages(binDir string) map[string]string {
	return map[string]string{
		"wsscale/echo":     filepath.Join(binDir, "wsecho"), // built from cmd/echo
		"wsscale/adapter":  filepath.Join(binDir, "adapter"),
		"wsscale/testhost": filepath.Join(binDir, "testhost"),
		// The cluster DNS (CoreDNS, hack/build-module.sh builds it).
		"registry.k8s.io/coredns/coredns": filepath.Join(binDir, "coredns"),
		"coredns/coredns":                 filepath.Join(binDir, "coredns"),
		// The ingress controller (Traefik v3.6, hack/build-module.sh builds it); docker.io/traefik and
		// docker.io/library/traefik resolve to it too.
		"traefik": filepath.Join(binDir, "traefik"),
		// Prometheus (hack/build-module.sh builds it), from either registry users pull it from.
		"prom/prometheus":               filepath.Join(binDir, "prometheus"),
		"quay.io/prometheus/prometheus": filepath.Join(binDir, "prometheus"),
		// KEDA's operator and metrics API server, built only for the benchmark (hack/build-keda.sh).
		"ghcr.io/kedacore/keda":                   filepath.Join(binDir, "keda-operator"),
		"ghcr.io/kedacore/keda-metrics-apiserver": filepath.Join(binDir, "keda-adapter"),
		// The adapter chart's helm test image (its entrypoint is kubectl).
		"registry.k8s.io/kubectl": filepath.Join(binDir, "kubectl"),
	}
}

// AddFlags registers the options' flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.BinDir, "bin-dir", o.BinDir, "Directory with the pinned control plane binaries and the project binaries pods run.")
	fs.StringVar(&o.StateDirParent, "state-dir-parent", o.StateDirParent, "Directory in which the cluster's temporary state directory is created.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Where to write the admin kubeconfig for host clients (removed on exit).")
	fs.IntVar(&o.APIPort, "api-port", o.APIPort, "Host port on 127.0.0.1 forwarded to kube-apiserver; 0 picks a free port.")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "Name of the node.")
	fs.BoolVar(&o.NodeAgent, "node-agent", o.NodeAgent, "Run the process-based node agent (without it no pod runs).")
	fs.BoolVar(&o.NodePorts, "node-ports", o.NodePorts, "Forward 127.0.0.1:<nodePort> on the host to the endpoints of NodePort Services.")
	fs.DurationVar(&o.HPASyncPeriod, "hpa-sync-period", o.HPASyncPeriod, "kube-controller-manager --horizontal-pod-autoscaler-sync-period.")
	fs.DurationVar(&o.HPADownscaleStabilization, "hpa-downscale-stabilization", o.HPADownscaleStabilization, "kube-controller-manager --horizontal-pod-autoscaler-downscale-stabilization.")
	fs.DurationVar(&o.StartTimeout, "start-timeout", o.StartTimeout, "How long start-up may take before it is abandoned.")
	fs.DurationVar(&o.StopTimeout, "stop-timeout", o.StopTimeout, "How long teardown may take before remaining processes are killed.")
	fs.DurationVar(&o.ComponentGracePeriod, "component-grace-period", o.ComponentGracePeriod, "Time between SIGTERM and SIGKILL for each component.")
	fs.DurationVar(&o.DownwardAPISyncDelay, "downward-api-sync-delay", o.DownwardAPISyncDelay, "How long after a pod's labels or annotations change its downwardAPI files do, as a kubelet's next sync (negative: at once).")
	fs.BoolVar(&o.KeepState, "keep-state", o.KeepState, "Keep the state directory (logs, certificates, etcd data) on exit.")
	fs.Var(&componentArgsFlag{args: &o.ExtraArgs}, "component-arg",
		"Extra flag for a component, as <component>=<flag>, e.g. kube-apiserver=--v=4 (repeatable).")
}

// componentArgsFlag collects repeated <component>=<flag> values into Options.ExtraArgs.
type componentArgsFlag struct {
	args *map[string][]string
}

var _ pflag.Value = (*componentArgsFlag)(nil)

func (f *componentArgsFlag) String() string {
	if f.args == nil || *f.args == nil {
		return ""
	}
	var parts []string
	for name, args := range *f.args {
		for _, a := range args {
			parts = append(parts, name+"="+a)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (f *componentArgsFlag) Set(v string) error {
	name, arg, ok := strings.Cut(v, "=")
	if !ok || name == "" || arg == "" {
		return fmt.Errorf("want <component>=<flag>, got %q", v)
	}
	if *f.args == nil {
		*f.args = map[string][]string{}
	}
	(*f.args)[name] = append((*f.args)[name], arg)
	return nil
}

func (f *componentArgsFlag) Type() string { return "component=flag" }

// Validate returns every problem with the options at once.
func (o *Options) Validate() []error {
	var errs []error
	if o.BinDir == "" {
		errs = append(errs, fmt.Errorf("bin dir: required"))
	}
	if o.StateDirParent == "" {
		errs = append(errs, fmt.Errorf("state dir parent: required"))
	}
	if o.APIPort < 0 || o.APIPort > 65535 {
		errs = append(errs, fmt.Errorf("api port %d: must be in 0..65535", o.APIPort))
	}
	if o.NodeName == "" {
		errs = append(errs, fmt.Errorf("node name: required"))
	}
	for _, d := range []struct {
		name  string
		value time.Duration
	}{
		{"hpa sync period", o.HPASyncPeriod},
		{"hpa downscale stabilization", o.HPADownscaleStabilization},
		{"start timeout", o.StartTimeout},
		{"stop timeout", o.StopTimeout},
		{"component grace period", o.ComponentGracePeriod},
	} {
		if d.value <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", d.name, d.value))
		}
	}
	names := make([]string, 0, len(o.ExtraArgs))
	for bin := range o.ExtraArgs {
		names = append(names, bin)
	}
	sort.Strings(names)
	for _, bin := range names {
		if !isComponent(bin) {
			errs = append(errs, fmt.Errorf("extra args: %q is not one of %v", bin, componentBinaries))
		}
	}
	return errs
}

func isComponent(name string) bool {
	for _, c := range componentBinaries {
		if c == name {
			return true
		}
	}
	return false
}
