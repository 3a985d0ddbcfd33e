package nodeagent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// maxConcurrentNetworkOps bounds how many pod networks are set up or torn down at once.
const maxConcurrentNetworkOps = 4

// Agent is a process-based node agent: it registers a Node and runs the pods bound to it
// as local processes, each in its own network, mount and UTS namespace.
type Agent struct {
	opts    Options
	client  kubernetes.Interface
	clock   clock.WithTicker
	ips     *ipAllocator
	network podNetwork
	runtime containerRuntime
	prober  probeRunner
	// events sends what recorder records to the API; recorder reports as the kubelet.
	events      record.EventBroadcaster
	recorder    record.EventRecorder
	commands    commandRunner
	images      imageResolver
	allocatable v1.ResourceList
	// prepareNode readies the node network namespace (IPv4 forwarding).
	prepareNode func() error
	// networkSlots bounds concurrent sandbox set-ups and teardowns (each forks iproute2).
	networkSlots chan struct{}

	// logs tracks which container logs are still written, for kubectl logs -f.
	logs runningLogs

	mu       sync.Mutex
	workers  map[types.UID]*podWorker
	finished map[types.UID]bool
	runCtx   context.Context
	wg       sync.WaitGroup
}

// New validates o (reporting every problem at once) and returns an agent ready to Run.
func New(o Options) (*Agent, error) {
	errs := o.Validate()
	if len(errs) == 0 {
		errs = o.validateHost()
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("node agent options: %w", aggregate(errs))
	}
	o.complete()
	if o.Client == nil {
		cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", o.Kubeconfig, err)
		}
		cfg.QPS, cfg.Burst = 50, 100
		cfg.UserAgent = "wsscale-nodeagent/" + o.NodeName
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("create client: %w", err)
		}
		o.Client = client
	}
	events, recorder := newEventRecorder(o.NodeName)
	nodeIP := netip.MustParseAddr(o.NodeIP)
	cidr := netip.MustParsePrefix(o.PodCIDR)
	a := &Agent{
		opts:         o,
		client:       o.Client,
		clock:        o.Clock,
		ips:          newIPAllocator(cidr, nodeIP),
		network:      &vethNetwork{dir: filepath.Join(o.StateDir, "netns"), nodeIP: o.NodeIP},
		runtime:      &processRuntime{clock: o.Clock},
		prober:       newProber(nsenterRunner{nsenter: "nsenter"}),
		commands:     nsenterRunner{nsenter: "nsenter"},
		events:       events,
		recorder:     recorder,
		images:       imageResolver{images: o.Images},
		prepareNode:  enableForwarding,
		networkSlots: make(chan struct{}, maxConcurrentNetworkOps),
		workers:      map[types.UID]*podWorker{},
		finished:     map[types.UID]bool{},
		allocatable: v1.ResourceList{
			v1.ResourceCPU:              o.CPU,
			v1.ResourceMemory:           o.Memory,
			v1.ResourcePods:             *resource.NewQuantity(int64(o.MaxPods), resource.DecimalSI),
			v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		},
	}
	return a, nil
}

// mountJournal lists the mount points this agent created on the shared filesystem.
func (a *Agent) mountJournal() string { return filepath.Join(a.opts.StateDir, "mountpoints") }

func (a *Agent) envContext() envContext {
	return envContext{nodeIP: a.opts.NodeIP, apiServerPort: a.opts.APIServerPort, allocatable: a.allocatable}
}

func (a *Agent) logger() klog.Logger {
	return klog.Background().WithValues("node", a.opts.NodeName)
}

// Run registers the node, runs its pods and blocks until ctx is done. It then stops every
// pod (SIGTERM, grace period capped by ShutdownGracePeriod, SIGKILL), removes their network
// namespaces, veth pairs, mount points and volume directories, and returns. Container logs
// stay in StateDir/logs.
func (a *Agent) Run(ctx context.Context) error {
	log := a.logger()
	for _, d := range []string{"pods", "netns", "logs"} {
		if err := os.MkdirAll(filepath.Join(a.opts.StateDir, d), 0o755); err != nil {
			return fmt.Errorf("create state dir: %w", err)
		}
	}
	a.removeStaleSandboxes(ctx)
	if err := mountPoints.removeJournaled(a.mountJournal()); err != nil {
		log.Error(err, "Removing stale mount points failed")
	}
	if err := a.prepareNode(); err != nil {
		return err
	}
	if err := a.registerNode(ctx); err != nil {
		return err
	}
	log.Info("Node registered", "nodeIP", a.opts.NodeIP, "podCIDR", a.opts.PodCIDR)

	startEventSink(a.events, a.client)
	// Shut down last: the pods' final events (Killing) go out first.
	defer a.events.Shutdown()

	a.mu.Lock()
	a.runCtx = ctx
	a.mu.Unlock()

	var loops sync.WaitGroup
	loops.Add(2)
	go func() { defer loops.Done(); a.runLease(ctx) }()
	go func() { defer loops.Done(); a.runNodeStatus(ctx) }()
	if o := a.opts.KubeletAPI; o.Port != 0 {
		api := &kubeletAPI{
			nodeName: a.opts.NodeName, logDir: filepath.Join(a.opts.StateDir, "logs"),
			client: a.client, clock: a.clock, podUID: a.podUID, running: a.logs.running,
		}
		loops.Add(1)
		go func() {
			defer loops.Done()
			if err := api.serve(ctx, net.JoinHostPort(a.opts.NodeIP, strconv.Itoa(o.Port)), o); err != nil {
				log.Error(err, "Kubelet API stopped; kubectl logs will fail")
			}
		}()
	}

	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.opts.NodeName).String()
	}))
	podInformer := factory.Core().V1().Pods().Informer()
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.podChanged(obj) },
		UpdateFunc: func(_, obj any) { a.podChanged(obj) },
		DeleteFunc: a.podDeleted,
	}); err != nil {
		return fmt.Errorf("watch pods: %w", err)
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	log.Info("Stopping pods")
	a.wg.Wait()
	loops.Wait()
	a.removeStaleSandboxes(context.WithoutCancel(ctx))
	if err := mountPoints.removeJournaled(a.mountJournal()); err != nil {
		log.Error(err, "Removing mount points failed")
	}
	log.Info("Node agent stopped")
	return nil
}

// podUID returns the UID of the pod this node runs as namespace/name.
func (a *Agent) podUID(namespace, name string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, w := range a.workers {
		if p, _ := w.snapshot(); p != nil && p.Namespace == namespace && p.Name == name {
			return string(uid), true
		}
	}
	return "", false
}

// removeStaleSandboxes removes network namespaces a previous run left behind.
func (a *Agent) removeStaleSandboxes(ctx context.Context) {
	entries, err := os.ReadDir(filepath.Join(a.opts.StateDir, "netns"))
	if err != nil {
		return
	}
	for _, e := range entries {
		if err := a.network.teardown(ctx, e.Name()); err != nil {
			a.logger().Error(err, "Removing stale pod network failed", "id", e.Name())
		}
	}
}

// podChanged starts a worker for a new pod or hands the update to its worker.
func (a *Agent) podChanged(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok || pod.Spec.NodeName != a.opts.NodeName {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w, ok := a.workers[pod.UID]; ok {
		w.update(pod)
		return
	}
	if a.finished[pod.UID] || a.runCtx == nil || a.runCtx.Err() != nil {
		return
	}
	terminal := pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
	if terminal && pod.DeletionTimestamp == nil {
		// Finished before this agent started; nothing to run.
		return
	}
	if len(a.workers) >= a.opts.MaxPods && !terminal {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.reject(pod, "OutOfpods", fmt.Sprintf("Node didn't have enough resource: pods, capacity %d", a.opts.MaxPods))
		}()
		return
	}
	// A terminal pod being deleted gets a worker too: it only finalises the deletion.
	w := newPodWorker(a, pod)
	a.workers[pod.UID] = w
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		w.run(a.runCtx)
		a.mu.Lock()
		delete(a.workers, w.uid)
		if w.finalized {
			a.finished[w.uid] = true
		}
		a.mu.Unlock()
	}()
}

// podDeleted tells the pod's worker that the pod is gone from the API.
func (a *Agent) podDeleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.finished, pod.UID)
	if w, ok := a.workers[pod.UID]; ok {
		w.markGone()
	}
}

// reject fails a pod the node cannot admit, as the kubelet's admission does.
func (a *Agent) reject(pod *v1.Pod, reason, message string) {
	if pod.Status.Phase == v1.PodFailed {
		return
	}
	ctx, cancel := context.WithTimeout(a.runCtx, 10*time.Second)
	defer cancel()
	p := pod.DeepCopy()
	p.Status.Phase = v1.PodFailed
	p.Status.Reason = reason
	p.Status.Message = message
	if _, err := a.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		a.logger().Error(err, "Rejecting pod failed", "pod", klog.KObj(pod))
	}
}

// workerCount is the number of pods the agent currently runs.
func (a *Agent) workerCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.workers)
}

// withNetworkSlot runs f while holding one of the agent's network slots.
func (a *Agent) withNetworkSlot(ctx context.Context, f func() error) error {
	select {
	case a.networkSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-a.networkSlots }()
	return f()
}
