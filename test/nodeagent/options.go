package nodeagent

import (
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Defaults of the optional Options fields.
const (
	DefaultCPU                  = "8"
	DefaultMemory               = "16Gi"
	DefaultMaxPods              = 110
	DefaultCrashLoopBackOffBase = 10 * time.Second
	DefaultCrashLoopBackOffMax  = 5 * time.Minute
	DefaultLeaseDuration        = 40 * time.Second
	DefaultNodeStatusPeriod     = 10 * time.Second
	DefaultVolumeResyncPeriod   = 15 * time.Second
	DefaultShutdownGracePeriod  = 10 * time.Second
	DefaultDownwardAPISyncDelay = 2 * time.Second
)

// Options configures one node agent. Several agents may run in one process as long as
// NodeName, PodCIDR and StateDir differ.
type Options struct {
	// Kubeconfig is an admin kubeconfig usable from the node network namespace.
	Kubeconfig string
	// NodeName is the name of the Node this agent registers and serves.
	NodeName string
	// NodeIP is the node's InternalIP; it must already be a local address of the node
	// network namespace. Pods reach the API server at NodeIP:APIServerPort.
	NodeIP string
	// APIServerPort is the port pods use together with KUBERNETES_SERVICE_HOST=NodeIP.
	APIServerPort int
	// PodCIDR is the IPv4 range pod addresses are allocated from.
	PodCIDR string
	// Images maps an image repository (no tag or digest) to an absolute binary path.
	Images map[string]string
	// StateDir holds the agent's pod volumes, network namespace files and container logs.
	StateDir string

	// CPU is the node's cpu capacity (default DefaultCPU).
	CPU resource.Quantity
	// Memory is the node's memory capacity (default DefaultMemory).
	Memory resource.Quantity
	// MaxPods is the node's pod capacity and the bound on concurrently served pods.
	MaxPods int
	// CrashLoopBackOffBase is the first restart delay of a crashing container; it doubles
	// up to CrashLoopBackOffMax.
	CrashLoopBackOffBase time.Duration
	// CrashLoopBackOffMax caps the restart delay.
	CrashLoopBackOffMax time.Duration
	// LeaseDuration is the node lease duration; the lease is renewed every quarter of it.
	LeaseDuration time.Duration
	// NodeStatusPeriod is how often the Node's Ready condition heartbeat is refreshed.
	NodeStatusPeriod time.Duration
	// VolumeResyncPeriod is how often configMap, secret and token volumes are refreshed.
	VolumeResyncPeriod time.Duration
	// ShutdownGracePeriod caps the termination grace of each pod when the agent stops.
	ShutdownGracePeriod time.Duration
	// DownwardAPISyncDelay is how long after a change of a pod's labels or annotations its
	// downwardAPI files change (default DefaultDownwardAPISyncDelay): a kubelet rewrites
	// them at its next pod sync, not at once, and code that watches them (a drain label)
	// should meet that timing. A negative value updates them at once.
	DownwardAPISyncDelay time.Duration

	// Client, when set, is used instead of a client built from Kubeconfig.
	Client kubernetes.Interface
	// ClusterDNS are the nameservers of pods with the ClusterFirst DNS policy, and
	// ClusterDomain their search domain; without them such pods keep the node's resolver.
	ClusterDNS    []string
	ClusterDomain string
	// KubeletAPI serves the kubelet's log endpoint for kubectl logs; a zero port serves none.
	KubeletAPI KubeletAPIOptions
	// Clock, when set, replaces the real clock.
	Clock clock.WithTicker
}

// complete fills unset optional fields with their defaults.
func (o *Options) complete() {
	if o.CPU.IsZero() {
		o.CPU = resource.MustParse(DefaultCPU)
	}
	if o.Memory.IsZero() {
		o.Memory = resource.MustParse(DefaultMemory)
	}
	o.MaxPods = cmp.Or(o.MaxPods, DefaultMaxPods)
	o.CrashLoopBackOffBase = cmp.Or(o.CrashLoopBackOffBase, DefaultCrashLoopBackOffBase)
	o.CrashLoopBackOffMax = cmp.Or(o.CrashLoopBackOffMax, DefaultCrashLoopBackOffMax)
	o.LeaseDuration = cmp.Or(o.LeaseDuration, DefaultLeaseDuration)
	o.NodeStatusPeriod = cmp.Or(o.NodeStatusPeriod, DefaultNodeStatusPeriod)
	o.VolumeResyncPeriod = cmp.Or(o.VolumeResyncPeriod, DefaultVolumeResyncPeriod)
	o.ShutdownGracePeriod = cmp.Or(o.ShutdownGracePeriod, DefaultShutdownGracePeriod)
	o.DownwardAPISyncDelay = cmp.Or(o.DownwardAPISyncDelay, DefaultDownwardAPISyncDelay)
	if o.DownwardAPISyncDelay < 0 {
		o.DownwardAPISyncDelay = 0
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
}

// Validate returns every problem of the options at once.
func (o *Options) Validate() []error {
	var errs []error
	if o.Client == nil && o.Kubeconfig == "" {
		errs = append(errs, fmt.Errorf("kubeconfig: required"))
	}
	if o.NodeName == "" {
		errs = append(errs, fmt.Errorf("node name: required"))
	} else if msgs := validation.IsDNS1123Subdomain(o.NodeName); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("node name %q: %s", o.NodeName, strings.Join(msgs, "; ")))
	}
	nodeIP, err := netip.ParseAddr(o.NodeIP)
	if err != nil || !nodeIP.Is4() {
		errs = append(errs, fmt.Errorf("node IP %q: must be an IPv4 address", o.NodeIP))
	}
	if o.APIServerPort <= 0 || o.APIServerPort > 65535 {
		errs = append(errs, fmt.Errorf("API server port %d: must be in 1..65535", o.APIServerPort))
	}
	if cidr, err := netip.ParsePrefix(o.PodCIDR); err != nil || !cidr.Addr().Is4() {
		errs = append(errs, fmt.Errorf("pod CIDR %q: must be an IPv4 prefix", o.PodCIDR))
	} else if cidr.Bits() > 30 {
		errs = append(errs, fmt.Errorf("pod CIDR %q: must hold at least two addresses (prefix length <= 30)", o.PodCIDR))
	} else if cidr.Masked() != cidr {
		errs = append(errs, fmt.Errorf("pod CIDR %q: host bits set, want %s", o.PodCIDR, cidr.Masked()))
	}
	for repo, bin := range o.Images {
		if repo == "" || strings.ContainsAny(repo, "@") || hasTag(repo) {
			errs = append(errs, fmt.Errorf("images: repository %q: must have no tag or digest", repo))
		}
		if !filepath.IsAbs(bin) {
			errs = append(errs, fmt.Errorf("images: %s: binary %q: must be an absolute path", repo, bin))
		}
	}
	if o.StateDir == "" {
		errs = append(errs, fmt.Errorf("state dir: required"))
	} else if !filepath.IsAbs(o.StateDir) {
		errs = append(errs, fmt.Errorf("state dir %q: must be an absolute path", o.StateDir))
	}
	if o.MaxPods < 0 {
		errs = append(errs, fmt.Errorf("max pods %d: must not be negative", o.MaxPods))
	}
	for name, d := range map[string]time.Duration{
		"crash loop back-off base": o.CrashLoopBackOffBase, "crash loop back-off max": o.CrashLoopBackOffMax,
		"lease duration": o.LeaseDuration, "node status period": o.NodeStatusPeriod,
		"volume resync period": o.VolumeResyncPeriod, "shutdown grace period": o.ShutdownGracePeriod,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: must not be negative", name, d))
		}
	}
	if o.CrashLoopBackOffBase > 0 && o.CrashLoopBackOffMax > 0 && o.CrashLoopBackOffMax < o.CrashLoopBackOffBase {
		errs = append(errs, fmt.Errorf("crash loop back-off max %s: below base %s", o.CrashLoopBackOffMax, o.CrashLoopBackOffBase))
	}
	if o.CPU.Sign() < 0 || o.Memory.Sign() < 0 {
		errs = append(errs, fmt.Errorf("cpu %s, memory %s: must not be negative", o.CPU.String(), o.Memory.String()))
	}
	errs = append(errs, o.KubeletAPI.validate()...)
	return errs
}

// validateHost checks what only the running system can tell: the binaries exist.
func (o *Options) validateHost() []error {
	var errs []error
	for repo, bin := range o.Images {
		if !filepath.IsAbs(bin) {
			continue
		}
		st, err := os.Stat(bin)
		switch {
		case err != nil:
			// A missing binary is reported per pod as an image pull failure, so that the
			// runner can start before every binary is built; only log-worthy here.
		case st.IsDir() || st.Mode()&0o111 == 0:
			errs = append(errs, fmt.Errorf("images: %s: %s is not an executable file", repo, bin))
		}
	}
	return errs
}

func aggregate(errs []error) error {
	return utilerrors.NewAggregate(errs)
}
