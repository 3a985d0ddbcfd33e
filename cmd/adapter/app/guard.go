package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
	"github.com/wsscale/wsscale/pkg/policy/controller"
	"github.com/wsscale/wsscale/pkg/provider"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/pods"
)

// DrainingMetric is the reference server's gauge (0/1) of whether it drains; the adapter scrapes
// it for the ScaleGuard, which commits a step only when a victim's server has seen its mark.
const DrainingMetric = "websocket_draining"

// GuardOptions are the ScaleGuard controller's flags.
type GuardOptions struct {
	// Enabled runs the ScaleGuard controller in the adapter.
	Enabled bool
	// LeaderElect makes the replicas of the adapter elect one that runs the controller.
	LeaderElect bool
	// LeaseNamespace and LeaseName name the Lease of the election.
	LeaseNamespace, LeaseName string
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// NewGuardOptions returns the defaults: the controller on, with leader election.
func NewGuardOptions() *GuardOptions {
	return &GuardOptions{
		Enabled: true, LeaderElect: true, LeaseName: "wsscale-scaleguard",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
	}
}

// AddFlags adds the controller's flags to fs.
func (o *GuardOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Enabled, "scale-guard", o.Enabled, "Run the ScaleGuard controller (connection-aware scale-down); it waits for the ScaleGuard CRD to be installed.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect one adapter replica on a Lease to run the ScaleGuard controller (every replica serves the metrics API).")
	fs.StringVar(&o.LeaseNamespace, "leader-election-namespace", o.LeaseNamespace, "Namespace of the election's Lease (default: the pod's namespace, else default).")
	fs.StringVar(&o.LeaseName, "leader-election-lease", o.LeaseName, "Name of the election's Lease.")
	fs.DurationVar(&o.LeaseDuration, "leader-election-lease-duration", o.LeaseDuration, "How long a leader holds the Lease without renewing it.")
	fs.DurationVar(&o.RenewDeadline, "leader-election-renew-deadline", o.RenewDeadline, "How long the leader keeps trying to renew before it gives up leading (the adapter then exits).")
	fs.DurationVar(&o.RetryPeriod, "leader-election-retry-period", o.RetryPeriod, "How often candidates try to take or renew the Lease.")
}

// Validate returns every problem of the controller's flags.
func (o *GuardOptions) Validate() []error {
	if !o.Enabled || !o.LeaderElect {
		return nil
	}
	var errs []error
	if o.LeaseName == "" {
		errs = append(errs, errors.New("--leader-election-lease must not be empty"))
	}
	if o.RetryPeriod <= 0 || o.RenewDeadline <= o.RetryPeriod || o.LeaseDuration <= o.RenewDeadline {
		errs = append(errs, fmt.Errorf("leader election needs 0 < --leader-election-retry-period (%v) < --leader-election-renew-deadline (%v) < --leader-election-lease-duration (%v)",
			o.RetryPeriod, o.RenewDeadline, o.LeaseDuration))
	}
	return errs
}

// withGuardMetrics adds websocket_draining to the scraped metrics when the guard runs and the
// configuration does not scrape it already.
func withGuardMetrics(o *GuardOptions, metrics []metricsconfig.Metric) []metricsconfig.Metric {
	if !o.Enabled {
		return metrics
	}
	for _, m := range metrics {
		if m.Name == DrainingMetric {
			return metrics
		}
	}
	return append(metrics, metricsconfig.Metric{
		Name:        DrainingMetric,
		Series:      metricsconfig.Series{Name: DrainingMetric, Rule: metricsconfig.Count}, // a pod without it keeps its other values
		Aggregation: metricsconfig.AggregateMax,
	})
}

// sourceMetrics adapts the adapter's value source to the controller's PodMetrics.
type sourceMetrics struct {
	source      provider.Source
	selection   *pods.Selection
	connections int // index of websocket_connections
	draining    int // index of websocket_draining
}

var _ controller.PodMetrics = (*sourceMetrics)(nil)

func newSourceMetrics(source provider.Source, selection *pods.Selection, metrics []metricsconfig.Metric) (*sourceMetrics, error) {
	s := &sourceMetrics{source: source, selection: selection, connections: -1, draining: -1}
	for i, m := range metrics {
		switch m.Name {
		case metricsconfig.ConnectionsMetric:
			s.connections = i
		case DrainingMetric:
			s.draining = i
		}
	}
	if s.connections < 0 || s.draining < 0 {
		return nil, fmt.Errorf("the ScaleGuard controller needs the metrics %s and %s in the adapter's configuration (or --scale-guard=false)", metricsconfig.ConnectionsMetric, DrainingMetric)
	}
	return s, nil
}

// Scraped reports whether the adapter's selection includes the pod. A pod that is not running
// yet cannot be scraped by anyone; the policy holds for it as a Pending pod instead.
func (s *sourceMetrics) Scraped(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
		return true
	}
	return s.selection.Selected(pod)
}

// Lookup returns the pods' fresh connection counts and draining flags.
func (s *sourceMetrics) Lookup(ctx context.Context, namespace string, pods []string) ([]*policy.Metrics, error) {
	conns, err := s.source.Lookup(ctx, s.connections, namespace, pods)
	if err != nil {
		return nil, err
	}
	draining, err := s.source.Lookup(ctx, s.draining, namespace, pods)
	if err != nil {
		return nil, err
	}
	out := make([]*policy.Metrics, len(pods))
	for i, c := range conns {
		if !c.OK {
			continue
		}
		// A server without the draining gauge never shows as draining: its victims wait for the
		// deadline and onTimeout.
		d := draining[i]
		out[i] = &policy.Metrics{Connections: int64(c.Value), Draining: d.OK && d.Value == 1, ScrapeStart: c.Time}
	}
	return out, nil
}

// guard runs the ScaleGuard controller once its CRD is served.
type guard struct {
	restConfig *rest.Config
	mgr        manager.Manager
}

// guardCacheOptions returns the options of the controller's cache: every pod and Deployment of
// the watched namespaces, without their managed fields (never read: the target is read live).
//
// Why the controller keeps a pod watch of its own instead of sharing the metrics provider's: the
// two selections do not overlap enough for one watch to serve both without undoing what makes the
// provider's cheap.
//   - The provider watches only the pods it scrapes: those its label selector matches
//     (wsscale.io/scrape=true by default), filtered by the API server, and only Running ones
//     (field selector status.phase=Running), each stripped to a few hundred bytes
//     (pods.Selection.StripPod). On 10,000 pods of which 100 are selected that is 0.58 MB of heap
//     instead of 32.9 MB for every pod (docs/benchmarks.md).
//   - The controller must see every pod of a guarded Deployment by the Deployment's own selector,
//     whatever its labels and phase: a Pending or terminating pod holds a scale-down step, a pod
//     outside the provider's selection is reported as not scraped (policy.Pod.Scraped) rather
//     than silently missing, and a committed step is verified by the victims' disappearance. It
//     also reads and patches fields the provider strips (the labels it writes, the
//     pod-deletion-cost annotation, container states) through controller-runtime's client, which
//     reads its cache.
//
// One shared watch would thus have to be the wider one, every pod of the namespaces in every
// phase, unstripped: the cost the provider's narrow default removed. So there are two, each as
// narrow as its reader allows; TestGuardCacheSeesWhatTheProviderLeavesOut checks the difference.
func guardCacheOptions(namespace string) cache.Options {
	opts := cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
	if namespace != "" {
		opts.DefaultNamespaces = map[string]cache.Config{namespace: {}}
	}
	return opts
}

// newGuard builds the controller's manager: its own cache of ScaleGuards, Deployments,
// ReplicaSets and pods (see guardCacheOptions for why it is not the provider's), leader election on a Lease, and controller-runtime's metrics and probe
// servers off (the adapter serves its own).
func newGuard(o *GuardOptions, restConfig *rest.Config, namespace string, pm controller.PodMetrics, reg prometheus.Registerer) (*guard, error) {
	instruments, err := controller.NewInstruments(reg)
	if err != nil {
		return nil, fmt.Errorf("register scaleguard metrics: %w", err)
	}
	// controller-runtime logs through klog like the rest of the adapter.
	ctrllog.SetLogger(klog.NewKlogr())
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	leaseNS := o.LeaseNamespace
	if leaseNS == "" {
		leaseNS = "default"
		if ns, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
			leaseNS = strings.TrimSpace(string(ns))
		}
	}
	opts := manager.Options{
		Scheme:                        scheme,
		Logger:                        klog.NewKlogr().WithName("scaleguard"),
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              o.LeaseName,
		LeaderElectionNamespace:       leaseNS,
		LeaderElectionResourceLock:    "leases",
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &o.LeaseDuration,
		RenewDeadline:                 &o.RenewDeadline,
		RetryPeriod:                   &o.RetryPeriod,
	}
	opts.Cache = guardCacheOptions(namespace)
	mgr, err := manager.New(restConfig, opts)
	if err != nil {
		return nil, fmt.Errorf("scaleguard controller manager: %w", err)
	}
	r := &controller.Reconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Metrics: pm,
		Recorder: mgr.GetEventRecorder(controller.FieldManager), Clock: clock.RealClock{}, Instruments: instruments,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("scaleguard controller: %w", err)
	}
	// Runs once on the leader: un-mark pods whose ScaleGuard is gone.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if err := r.Sweep(ctx); err != nil {
			klog.ErrorS(err, "Sweeping pods marked by deleted ScaleGuards")
		}
		return nil
	})); err != nil {
		return nil, err
	}
	return &guard{restConfig: restConfig, mgr: mgr}, nil
}

// Run waits until the API server serves ScaleGuards, then runs the controller until ctx is done.
// Without the CRD the adapter keeps serving metrics and the guard waits, saying so once.
func (g *guard) Run(ctx context.Context) error {
	disco, err := discovery.NewDiscoveryClientForConfig(g.restConfig)
	if err != nil {
		return fmt.Errorf("discovery client: %w", err)
	}
	said := false
	err = wait.PollUntilContextCancel(ctx, 10*time.Second, true, func(context.Context) (bool, error) {
		list, err := disco.ServerResourcesForGroupVersion(v1alpha1.SchemeGroupVersion.String())
		if err == nil {
			for _, r := range list.APIResources {
				if r.Name == "scaleguards" {
					return true, nil
				}
			}
		}
		if !said && (err == nil || apierrors.IsNotFound(err)) {
			klog.InfoS("The ScaleGuard CRD is not installed; the ScaleGuard controller waits for it", "crd", "scaleguards."+v1alpha1.GroupName)
			said = true
		} else if err != nil && !apierrors.IsNotFound(err) {
			klog.ErrorS(err, "Discovering the ScaleGuard API")
		}
		return false, nil
	})
	if err != nil {
		return nil // ctx done
	}
	klog.InfoS("Starting the ScaleGuard controller")
	return g.mgr.Start(ctx)
}
