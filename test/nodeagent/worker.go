package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

const (
	defaultTerminationGrace = 30 * time.Second
	maxWorkerWait           = time.Minute
	teardownTimeout         = 30 * time.Second
	finalizeAttempts        = 5
)

// containerExit reports the end of one run of a container.
type containerExit struct {
	index int
	gen   int
	st    exitStatus
}

// probeResult is the outcome of one probe attempt.
type probeResult struct {
	index int
	gen   int
	kind  probeKind
	ok    bool
	msg   string
}

// hookResult reports the end of a lifecycle hook.
type hookResult struct {
	index     int
	gen       int
	postStart bool
	// failure is empty when the hook succeeded.
	failure string
}

// probeState tracks one probe of a running container.
type probeState struct {
	spec      *v1.Probe
	nextAt    time.Time
	inFlight  bool
	successes int32
	failures  int32
}

// containerState is the node's view of one container of a pod.
type containerState struct {
	spec v1.Container
	// init marks an init container: it runs to completion before the next one starts and
	// before any regular container.
	init bool
	// sidecar marks an init container with restartPolicy Always: it keeps running next to
	// the others and counts as done for the init sequence once started.
	sidecar bool
	// exec is where exec probes and hooks of the current run go.
	exec execTarget

	proc      containerProcess
	gen       int // number of starts; results of earlier runs are ignored
	startedAt time.Time
	ready     bool
	started   bool
	imageID   string

	waiting        *v1.ContainerStateWaiting
	terminated     *v1.ContainerStateTerminated
	lastTerminated *v1.ContainerStateTerminated
	nextStartAt    time.Time
	crash          crashBackOff
	startRetry     crashBackOff

	probes        [3]*probeState
	killAt        time.Time // SIGKILL deadline after a failed liveness probe
	killReason    string
	sigtermSent   bool
	sigkillSent   bool
	preStopActive bool
	// postStartActive holds probes back until the postStart hook returned, as the kubelet
	// only reports the container started then.
	postStartActive bool
	release         []func()
}

func (c *containerState) containerID() string {
	if c.proc == nil && c.terminated == nil {
		return ""
	}
	return fmt.Sprintf("nodeagent://%s-%d", c.spec.Name, c.gen)
}

// status renders the container's status.
func (c *containerState) status() v1.ContainerStatus {
	s := v1.ContainerStatus{
		Name:         c.spec.Name,
		Image:        c.spec.Image,
		ImageID:      c.imageID,
		ContainerID:  c.containerID(),
		Ready:        c.ready,
		Started:      ptr.To(c.proc != nil && c.started),
		RestartCount: int32(max(c.gen-1, 0)),
	}
	switch {
	case c.proc != nil:
		s.State.Running = &v1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
	case c.terminated != nil:
		s.State.Terminated = c.terminated.DeepCopy()
	case c.waiting != nil:
		s.State.Waiting = c.waiting.DeepCopy()
	default:
		s.State.Waiting = &v1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	if c.lastTerminated != nil {
		s.LastTerminationState.Terminated = c.lastTerminated.DeepCopy()
	}
	return s
}

// podWorker runs one pod from admission to finalised deletion in a single goroutine; the
// goroutines it spawns (process waiters, probes, preStop hooks) end with their task.
type podWorker struct {
	agent *Agent
	uid   types.UID

	mu     sync.Mutex
	latest *v1.Pod
	gone   bool
	// pendingDownward is when a change of labels or annotations, seen on an update, is
	// due in the downwardAPI files: a kubelet writes them at its next pod sync, a moment
	// after the update arrived.
	pendingDownward time.Time
	notify          chan struct{}

	exits  chan containerExit
	probes chan probeResult
	hooks  chan hookResult
	done   chan struct{}

	// Owned by run.
	pod            *v1.Pod
	ip             netip.Addr
	netns          string
	podDir         string
	volumes        *podVolumes
	containers     []*containerState
	startTime      time.Time
	sandboxReady   bool
	volumesReady   bool
	setupErr       error
	setupRetryAt   time.Time
	setupBackOff   crashBackOff
	nextVolumeSync time.Time
	lastStatus     *v1.PodStatus
	statusRetryAt  time.Time
	terminating    bool
	shutdown       bool
	killAt         time.Time
	finalized      bool
	// downwardAt is the run loop's copy of pendingDownward.
	downwardAt time.Time
	// initDone is set once every init container has completed (sidecars: started).
	initDone bool
}

func newPodWorker(a *Agent, pod *v1.Pod) *podWorker {
	n := len(pod.Spec.InitContainers) + len(pod.Spec.Containers)
	w := &podWorker{
		agent:        a,
		uid:          pod.UID,
		latest:       pod,
		notify:       make(chan struct{}, 1),
		exits:        make(chan containerExit, 2*n+1),
		probes:       make(chan probeResult, 3*n+1),
		hooks:        make(chan hookResult, 2*n+1),
		done:         make(chan struct{}),
		podDir:       filepath.Join(a.opts.StateDir, "pods", string(pod.UID)),
		setupBackOff: crashBackOff{base: time.Second, max: 30 * time.Second},
	}
	w.volumes = newPodVolumes(a.client, a.clock, filepath.Join(w.podDir, "volumes"), a.allocatable)
	add := func(spec *v1.Container, init bool) {
		w.containers = append(w.containers, &containerState{
			spec:       *spec.DeepCopy(),
			init:       init,
			sidecar:    init && isSidecar(spec),
			crash:      crashBackOff{base: a.opts.CrashLoopBackOffBase, max: a.opts.CrashLoopBackOffMax},
			startRetry: crashBackOff{base: a.opts.CrashLoopBackOffBase, max: a.opts.CrashLoopBackOffMax},
		})
	}
	// Init containers come first, so that their indexes are the same in w.containers.
	for i := range pod.Spec.InitContainers {
		add(&pod.Spec.InitContainers[i], true)
	}
	for i := range pod.Spec.Containers {
		add(&pod.Spec.Containers[i], false)
	}
	return w
}

// downwardMeta is what of a pod its downwardAPI files show and the API can change.
func downwardMeta(pod *v1.Pod) string {
	return fmt.Sprint(pod.Labels, pod.Annotations)
}

// specOf is the current spec of container i (init containers first).
func (w *podWorker) specOf(i int) *v1.Container {
	n := len(w.pod.Spec.InitContainers)
	if i < n {
		return &w.pod.Spec.InitContainers[i]
	}
	return &w.pod.Spec.Containers[i-n]
}

// initialized reports whether every init container has completed.
func (w *podWorker) initialized() bool {
	if w.initDone {
		// As the kubelet, init containers never run again once the pod is initialised.
		return true
	}
	for _, c := range w.containers {
		if c.init && !c.initStepDone() {
			return false
		}
	}
	w.initDone = true
	return true
}

// initStepDone reports whether the init sequence may go past init container c: it
// completed, or it is a sidecar that has started.
func (c *containerState) initStepDone() bool {
	if c.sidecar {
		return c.proc != nil && c.started
	}
	return c.terminated != nil && c.terminated.ExitCode == 0
}

// isSidecar reports whether init container c is a sidecar (restartPolicy Always).
func isSidecar(c *v1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
}

// update hands the worker a newer version of its pod.
func (w *podWorker) update(pod *v1.Pod) {
	w.mu.Lock()
	if w.pendingDownward.IsZero() && downwardMeta(pod) != downwardMeta(w.latest) {
		w.pendingDownward = w.agent.clock.Now().Add(w.agent.opts.DownwardAPISyncDelay)
	}
	w.latest = pod
	w.mu.Unlock()
	w.poke()
}

// downwardWritten clears the pending downward API update the files now show.
func (w *podWorker) downwardWritten() {
	w.mu.Lock()
	if w.pendingDownward.Equal(w.downwardAt) {
		w.pendingDownward = time.Time{}
	}
	w.mu.Unlock()
	w.downwardAt = time.Time{}
}

// markGone tells the worker its pod was removed from the API.
func (w *podWorker) markGone() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) poke() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *podWorker) snapshot() (*v1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.gone
}

// take is snapshot for the run loop: with it, when the pod's change of labels or
// annotations is due in the files, read under the same lock.
func (w *podWorker) take() (*v1.Pod, bool, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.gone, w.pendingDownward
}

func (w *podWorker) logger() klog.Logger {
	return klog.Background().WithValues("node", w.agent.opts.NodeName, "pod", klog.KObj(w.pod))
}

func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	for {
		now := w.agent.clock.Now()
		pod, gone, downwardAt := w.take()
		w.downwardAt = downwardAt
		w.pod = pod
		if (gone || pod.DeletionTimestamp != nil || ctx.Err() != nil) && !w.terminating {
			w.beginTermination(ctx, now, gone)
		} else if w.terminating && !gone && pod.DeletionGracePeriodSeconds != nil {
			// A second delete may shorten the grace period, never lengthen it.
			if limit := now.Add(time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second); limit.Before(w.killAt) {
				w.killAt = limit
			}
		}
		if ctx.Err() != nil && !w.shutdown {
			w.shutdown = true
			if limit := now.Add(w.agent.opts.ShutdownGracePeriod); w.killAt.After(limit) {
				w.killAt = limit
			}
		}
		if w.terminating {
			w.progressTermination(now)
			if !w.anyRunning() {
				w.finish(ctx, gone)
				return
			}
		} else {
			w.sync(ctx, now)
		}
		if !gone && !w.shutdown {
			w.writeStatus(ctx, now)
		}

		w.wait(ctx, w.nextWake(now))
	}
}

// wait sleeps until an event arrives or d has passed and handles the event. With nothing to
// wait for (d == 0) it only takes what is already there.
func (w *podWorker) wait(ctx context.Context, d time.Duration) {
	var timeout <-chan time.Time
	if d > 0 {
		timer := w.agent.clock.NewTimer(d)
		defer timer.Stop()
		timeout = timer.C()
	} else {
		ready := make(chan time.Time)
		close(ready)
		timeout = ready
	}
	var ctxDone <-chan struct{}
	if !w.shutdown {
		ctxDone = ctx.Done()
	}
	select {
	case <-w.notify:
	case ev := <-w.exits:
		w.handleExit(ev)
	case r := <-w.probes:
		w.handleProbe(ctx, r)
	case r := <-w.hooks:
		w.handleHook(r)
	case <-timeout:
	case <-ctxDone:
	}
}

// nextWake is how long the worker may sleep before something is due.
func (w *podWorker) nextWake(now time.Time) time.Duration {
	next := now.Add(maxWorkerWait)
	consider := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	if w.terminating {
		if now.Before(w.killAt) {
			consider(w.killAt)
		}
	} else {
		if !w.sandboxReady || !w.volumesReady {
			consider(w.setupRetryAt)
		}
		consider(w.nextVolumeSync)
		consider(w.downwardAt)
	}
	consider(w.statusRetryAt)
	initialized := w.initialized()
	for _, c := range w.containers {
		if c.proc == nil && c.terminated == nil && !w.terminating && (c.init != initialized || c.sidecar) {
			consider(c.nextStartAt)
		}
		if c.proc != nil && !w.terminating {
			if !c.sigkillSent {
				consider(c.killAt)
			}
			for _, p := range c.probes {
				if p != nil && !p.inFlight && w.probeActive(c, p) {
					consider(p.nextAt)
				}
			}
		}
	}
	d := next.Sub(now)
	if d < 0 {
		d = 0
	}
	return d
}

// podWithIPs is the pod as the downward API sees it: with this node's view of its IPs.
func (w *podWorker) podWithIPs() *v1.Pod {
	p := w.pod.DeepCopy()
	hostIP := w.agent.opts.NodeIP
	p.Status.HostIP = hostIP
	p.Status.HostIPs = []v1.HostIP{{IP: hostIP}}
	if w.ip.IsValid() {
		p.Status.PodIP = w.ip.String()
		p.Status.PodIPs = []v1.PodIP{{IP: w.ip.String()}}
	}
	return p
}

// sync brings the pod towards running: sandbox, volumes, containers, probes.
func (w *podWorker) sync(ctx context.Context, now time.Time) {
	if w.startTime.IsZero() {
		w.startTime = now
	}
	if (!w.sandboxReady || !w.volumesReady) && !now.Before(w.setupRetryAt) {
		w.setup(ctx, now)
	}
	downwardDue := !w.downwardAt.IsZero() && !now.Before(w.downwardAt)
	if w.sandboxReady && w.volumesReady && (downwardDue || !now.Before(w.nextVolumeSync)) {
		refresh := !now.Before(w.nextVolumeSync)
		pod := w.podWithIPs()
		if err := w.volumes.sync(ctx, pod, refresh); err != nil {
			w.logger().Error(err, "Updating volumes failed")
		}
		if downwardDue {
			w.downwardWritten()
		}
		if refresh {
			w.nextVolumeSync = now.Add(w.agent.opts.VolumeResyncPeriod)
		}
	}
	if !w.sandboxReady || !w.volumesReady {
		return
	}
	if w.initialized() {
		for i, c := range w.containers {
			if (!c.init || c.sidecar) && c.proc == nil && c.terminated == nil && !now.Before(c.nextStartAt) {
				w.startContainer(ctx, i, now)
			}
		}
	} else {
		// One init container at a time, in order, each to completion (a sidecar: until it
		// has started); sidecars before the current one are restarted when they stop.
		for i, c := range w.containers {
			if !c.init {
				continue
			}
			if c.proc == nil && c.terminated == nil && !now.Before(c.nextStartAt) && (c.sidecar || !c.initStepDone()) {
				w.startContainer(ctx, i, now)
			}
			if !c.initStepDone() {
				break
			}
		}
	}
	for i, c := range w.containers {
		if c.proc == nil {
			continue
		}
		if !c.killAt.IsZero() && !now.Before(c.killAt) && !c.sigkillSent {
			c.sigkillSent = true
			w.signal(c, syscall.SIGKILL)
		}
		for kind, p := range c.probes {
			if p != nil && !p.inFlight && w.probeActive(c, p) && !now.Before(p.nextAt) {
				w.launchProbe(ctx, i, probeKind(kind))
			}
		}
	}
}

// setup creates the pod's network and volumes; failures are retried with back-off and
// shown as ContainerCreating.
func (w *podWorker) setup(ctx context.Context, now time.Time) {
	var err error
	if !w.sandboxReady {
		if err = w.setupSandbox(ctx); err != nil {
			w.event(nil, v1.EventTypeWarning, eventFailedSandbox, "Failed to create pod sandbox: %v", err)
		}
	}
	if err == nil && !w.volumesReady {
		pod := w.podWithIPs()
		if err = w.volumes.sync(ctx, pod, true); err == nil {
			w.volumesReady = true
			w.downwardWritten()
			w.nextVolumeSync = now.Add(w.agent.opts.VolumeResyncPeriod)
		} else {
			w.event(nil, v1.EventTypeWarning, eventFailedMount, "MountVolume.SetUp failed: %v", err)
			err = fmt.Errorf("mount volumes: %w", err)
		}
	}
	w.setupErr = err
	if err != nil {
		w.setupRetryAt = now.Add(max(w.setupBackOff.next(0), time.Second))
		w.logger().Error(err, "Preparing pod failed")
	}
}

func (w *podWorker) setupSandbox(ctx context.Context) error {
	if w.pod.Spec.HostNetwork {
		// The containers share the node network namespace and the node's address.
		w.ip = netip.MustParseAddr(w.agent.opts.NodeIP)
		w.sandboxReady = true
		return nil
	}
	if !w.ip.IsValid() {
		ip, err := w.agent.ips.allocate()
		if err != nil {
			return err
		}
		w.ip = ip
	}
	ctx, cancel := context.WithTimeout(ctx, teardownTimeout)
	defer cancel()
	var ns string
	err := w.agent.withNetworkSlot(ctx, func() error {
		var err error
		ns, err = w.agent.network.setup(ctx, string(w.uid), w.ip)
		return err
	})
	if err != nil {
		return fmt.Errorf("create pod sandbox: %w", err)
	}
	w.netns = ns
	w.sandboxReady = true
	return nil
}

// startContainer resolves the image, environment and mounts of container i and starts it.
func (w *podWorker) startContainer(ctx context.Context, i int, now time.Time) {
	c := w.containers[i]
	log := w.logger().WithValues("container", c.spec.Name)
	retry := func(reason string, err error) {
		if reason != "ErrImagePull" && reason != "ImagePullBackOff" {
			w.event(c, v1.EventTypeWarning, eventFailed, "Error: %v", err)
		}
		c.waiting = &v1.ContainerStateWaiting{Reason: reason, Message: err.Error()}
		c.nextStartAt = now.Add(c.startRetry.next(0))
		log.Info("Container cannot start", "reason", reason, "err", err.Error())
	}
	if img := w.specOf(i).Image; c.spec.Image != img {
		c.spec.Image = img
	}
	binary, err := w.agent.images.resolve(c.spec.Image)
	if err != nil {
		reason := "ErrImagePull"
		if c.waiting != nil && (c.waiting.Reason == "ErrImagePull" || c.waiting.Reason == "ImagePullBackOff") {
			reason = "ImagePullBackOff"
			w.event(c, v1.EventTypeNormal, eventBackOff, "Back-off pulling image %q", c.spec.Image)
		} else {
			w.event(c, v1.EventTypeWarning, eventFailed, "Failed to pull image %q: %v", c.spec.Image, err)
		}
		retry(reason, err)
		return
	}
	w.event(c, v1.EventTypeNormal, eventPulled, "Container image %q already present on machine", c.spec.Image)
	c.imageID = "local://" + binary
	pod := w.podWithIPs()
	env, err := makeEnvironment(ctx, newObjectCache(w.agent.client, pod.Namespace), pod, &c.spec, w.agent.envContext())
	if err != nil {
		retry("CreateContainerConfigError", err)
		return
	}
	mounts, release, err := w.containerMounts(&c.spec, env)
	if err != nil {
		retry("CreateContainerConfigError", err)
		return
	}
	if content, own := resolvConf(pod, w.agent.opts.ClusterDNS, w.agent.opts.ClusterDomain); own {
		path := filepath.Join(w.podDir, "resolv.conf")
		// A pod without volumes has no directory yet.
		err := os.MkdirAll(w.podDir, 0o755)
		if err == nil {
			err = os.WriteFile(path, []byte(content), 0o644)
		}
		if err != nil {
			for _, r := range release {
				r()
			}
			retry("CreateContainerConfigError", fmt.Errorf("write resolv.conf: %w", err))
			return
		}
		mounts = append(mounts, bindMount{Source: path, Target: "/etc/resolv.conf"})
	}
	argv := append([]string{binary}, containerArgs(&c.spec, env)...)
	spec := &launchSpec{
		NetNS:    w.netns,
		Hostname: podHostname(w.pod),
		Binary:   binary,
		Argv:     argv,
		Env:      env.environ(),
		Mounts:   mounts,
		WorkDir:  c.spec.WorkingDir,
	}
	spec.UID, spec.GID, spec.Groups = credentials(w.pod, &c.spec)
	gen := c.gen + 1
	specPath := filepath.Join(w.podDir, "containers", c.spec.Name, fmt.Sprintf("launch-%d.json", gen))
	logPath := filepath.Join(w.agent.opts.StateDir, "logs", fmt.Sprintf("%s_%s_%s", w.pod.Namespace, w.pod.Name, w.uid), c.spec.Name, fmt.Sprintf("%d.log", gen-1))
	// Marked before the start, so that an exit can never come before the mark.
	w.agent.logs.set(logPath, true)
	proc, err := w.agent.runtime.start(spec, specPath, logPath, func(st exitStatus) {
		w.agent.logs.set(logPath, false)
		// Buffered for every container's single live process: never blocks.
		w.exits <- containerExit{index: i, gen: gen, st: st}
	})
	if err != nil {
		w.agent.logs.set(logPath, false)
		for _, r := range release {
			r()
		}
		var se *startError
		if errors.As(err, &se) {
			w.event(c, v1.EventTypeNormal, eventCreated, "Created container: %s", c.spec.Name)
			w.event(c, v1.EventTypeWarning, eventFailed, "Error: %s", se.msg)
			// The kubelet reports a failed exec as a terminated run that is restarted with back-off.
			c.gen = gen
			c.startedAt = now
			w.recordExit(c, exitStatus{code: 128, at: now}, "StartError", se.msg)
			return
		}
		retry("RunContainerError", err)
		return
	}
	w.event(c, v1.EventTypeNormal, eventCreated, "Created container: %s", c.spec.Name)
	w.event(c, v1.EventTypeNormal, eventStarted, "Started container %s", c.spec.Name)
	log.Info("Started container", "pid", proc.pid(), "binary", binary, "restartCount", gen-1, "log", logPath)
	c.proc, c.gen, c.startedAt = proc, gen, now
	c.release = release
	c.waiting, c.terminated = nil, nil
	c.killAt, c.killReason, c.sigtermSent, c.sigkillSent = time.Time{}, "", false, false
	c.startRetry.restarts = 0
	c.exec = execTarget{pid: proc.pid(), env: spec.Env, uid: spec.UID, gid: spec.GID, workDir: spec.WorkDir}
	c.started = c.spec.StartupProbe == nil
	c.ready = false
	if c.init && !c.sidecar {
		// Init containers are not probed and are never ready.
		c.started = false
		return
	}
	for kind, spec := range []*v1.Probe{c.spec.StartupProbe, c.spec.LivenessProbe, c.spec.ReadinessProbe} {
		c.probes[kind] = nil
		if spec != nil {
			c.probes[kind] = &probeState{spec: spec, nextAt: now.Add(time.Duration(spec.InitialDelaySeconds) * time.Second)}
		}
	}
	c.postStartActive = false
	if h := c.spec.Lifecycle; h != nil && h.PostStart != nil {
		c.postStartActive = true
		w.runHook(ctx, i, h.PostStart, true)
		return
	}
	w.markStarted(c)
}

// markStarted makes a started container ready when nothing (postStart hook, startup or
// readiness probe) holds it back.
func (w *podWorker) markStarted(c *containerState) {
	if c.started && c.probes[readinessProbe] == nil {
		c.ready = true
	}
}

func podHostname(pod *v1.Pod) string {
	if pod.Spec.Hostname != "" {
		return pod.Spec.Hostname
	}
	name := pod.Name
	if len(name) > 63 {
		name = name[:63]
	}
	return strings.TrimRight(name, "-.")
}

// credentials picks runAsUser, runAsGroup and the supplementary groups; the container's
// security context overrides the pod's.
func credentials(pod *v1.Pod, c *v1.Container) (*int64, *int64, []int64) {
	var uid, gid *int64
	var groups []int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
		if psc.FSGroup != nil {
			groups = append(groups, *psc.FSGroup)
		}
		groups = append(groups, psc.SupplementalGroups...)
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	if uid != nil && gid == nil {
		// An image without a USER group runs as group 0.
		gid = ptr.To[int64](0)
	}
	return uid, gid, groups
}

// containerMounts maps the container's volumeMounts to bind mounts of prepared volume
// directories and creates their mount points. subPath mounts resolve the path once, so
// (as with the kubelet) they do not see later updates.
func (w *podWorker) containerMounts(c *v1.Container, env *envList) ([]bindMount, []func(), error) {
	var mounts []bindMount
	var release []func()
	fail := func(err error) ([]bindMount, []func(), error) {
		for _, r := range release {
			r()
		}
		return nil, nil, err
	}
	for _, vm := range c.VolumeMounts {
		var vol *v1.Volume
		for i := range w.pod.Spec.Volumes {
			if w.pod.Spec.Volumes[i].Name == vm.Name {
				vol = &w.pod.Spec.Volumes[i]
			}
		}
		if vol == nil {
			return fail(fmt.Errorf("volume mount %q: no such volume", vm.Name))
		}
		if !filepath.IsAbs(vm.MountPath) {
			return fail(fmt.Errorf("volume mount %q: mount path %q is not absolute", vm.Name, vm.MountPath))
		}
		src := w.volumes.hostPath(vol)
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expand(vm.SubPathExpr, env.get)
		}
		isFile := false
		if sub != "" {
			if err := validatePayloadPath(sub); err != nil && !strings.HasPrefix(sub, "..") {
				return fail(fmt.Errorf("volume mount %q: subPath: %w", vm.Name, err))
			}
			resolved, err := filepath.EvalSymlinks(filepath.Join(src, sub))
			if os.IsNotExist(err) {
				// The kubelet creates a missing subPath as a directory.
				if err = os.MkdirAll(filepath.Join(src, sub), 0o755); err == nil {
					resolved = filepath.Join(src, sub)
				}
			}
			if err != nil {
				return fail(fmt.Errorf("volume mount %q: subPath %q: %w", vm.Name, sub, err))
			}
			if !strings.HasPrefix(resolved, src+"/") && resolved != src && vol.HostPath == nil {
				return fail(fmt.Errorf("volume mount %q: subPath %q leaves the volume", vm.Name, sub))
			}
			st, err := os.Stat(resolved)
			if err != nil {
				return fail(fmt.Errorf("volume mount %q: %w", vm.Name, err))
			}
			isFile = !st.IsDir()
			src = resolved
		} else if st, err := os.Stat(src); err == nil && !st.IsDir() {
			isFile = true
		}
		r, err := mountPoints.acquire(vm.MountPath, isFile, w.agent.mountJournal())
		if err != nil {
			return fail(err)
		}
		release = append(release, r)
		mounts = append(mounts, bindMount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	return mounts, release, nil
}

func (w *podWorker) signal(c *containerState, sig syscall.Signal) {
	if c.proc == nil {
		return
	}
	if err := c.proc.signal(sig); err != nil {
		w.logger().Error(err, "Signalling container failed", "container", c.spec.Name, "signal", sig.String())
	}
}

// handleExit records the end of a container run and schedules its restart.
func (w *podWorker) handleExit(ev containerExit) {
	c := w.containers[ev.index]
	if ev.gen != c.gen || c.proc == nil {
		return
	}
	c.proc = nil
	for _, r := range c.release {
		r()
	}
	c.release = nil
	reason := "Completed"
	if ev.st.code != 0 {
		reason = "Error"
	}
	w.recordExit(c, ev.st, reason, c.killReason)
}

func (w *podWorker) recordExit(c *containerState, st exitStatus, reason, message string) {
	term := &v1.ContainerStateTerminated{
		ExitCode:    st.code,
		Signal:      int32(st.signal),
		Reason:      reason,
		Message:     message,
		StartedAt:   metav1.NewTime(c.startedAt),
		FinishedAt:  metav1.NewTime(st.at),
		ContainerID: fmt.Sprintf("nodeagent://%s-%d", c.spec.Name, c.gen),
	}
	c.ready, c.started = false, false
	for i := range c.probes {
		c.probes[i] = nil
	}
	w.logger().Info("Container exited", "container", c.spec.Name, "exitCode", st.code, "reason", reason)
	restart := false
	if !w.terminating {
		switch w.pod.Spec.RestartPolicy {
		case v1.RestartPolicyNever:
		case v1.RestartPolicyOnFailure:
			restart = st.code != 0
		default:
			// An init container that completed is done; one that failed runs again.
			restart = !c.init || st.code != 0
		}
		// A sidecar restarts whatever the pod's policy.
		restart = restart || c.sidecar
	}
	if !restart {
		c.terminated = term
		return
	}
	c.lastTerminated = term
	c.terminated = nil
	delay := c.crash.next(st.at.Sub(c.startedAt))
	c.nextStartAt = st.at.Add(delay)
	c.waiting = nil
	if delay > 0 {
		w.event(c, v1.EventTypeWarning, eventBackOff, "Back-off restarting failed container %s in pod %s_%s(%s)", c.spec.Name, w.pod.Name, w.pod.Namespace, w.uid)
		c.waiting = &v1.ContainerStateWaiting{
			Reason:  "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", delay, c.spec.Name, w.pod.Name, w.pod.Namespace, w.uid),
		}
	}
}

func (w *podWorker) probeActive(c *containerState, p *probeState) bool {
	if c.postStartActive {
		return false
	}
	switch p {
	case c.probes[startupProbe]:
		return !c.started && !w.terminating
	case c.probes[livenessProbe]:
		return c.started && !w.terminating && c.killAt.IsZero()
	default:
		return c.started
	}
}

func (w *podWorker) launchProbe(ctx context.Context, i int, kind probeKind) {
	c := w.containers[i]
	p := c.probes[kind]
	p.inFlight = true
	spec, target, gen := p.spec, w.probeTarget(c), c.gen
	go func() {
		ok, msg := w.agent.prober.probe(ctx, spec, target)
		select {
		case w.probes <- probeResult{index: i, gen: gen, kind: kind, ok: ok, msg: msg}:
		case <-w.done:
		}
	}()
}

func (w *podWorker) handleProbe(ctx context.Context, r probeResult) {
	c := w.containers[r.index]
	if r.gen != c.gen || c.proc == nil || c.probes[r.kind] == nil {
		return
	}
	p := c.probes[r.kind]
	now := w.agent.clock.Now()
	p.inFlight = false
	period := time.Duration(p.spec.PeriodSeconds) * time.Second
	if period <= 0 {
		period = 10 * time.Second
	}
	p.nextAt = now.Add(period)
	if r.ok {
		p.successes++
		p.failures = 0
	} else {
		p.failures++
		p.successes = 0
		// As the kubelet: every failed attempt is reported, not only the one that crosses
		// the threshold.
		w.event(c, v1.EventTypeWarning, eventUnhealthy, "%s probe failed: %s", r.kind, r.msg)
	}
	failureThreshold := p.spec.FailureThreshold
	if failureThreshold <= 0 {
		failureThreshold = 3
	}
	successThreshold := p.spec.SuccessThreshold
	if successThreshold <= 0 || r.kind != readinessProbe {
		successThreshold = 1
	}
	switch r.kind {
	case startupProbe:
		if p.successes >= successThreshold {
			c.started = true
			for _, k := range []probeKind{livenessProbe, readinessProbe} {
				if q := c.probes[k]; q != nil {
					q.nextAt = maxTime(now, c.startedAt.Add(time.Duration(q.spec.InitialDelaySeconds)*time.Second))
				}
			}
			w.markStarted(c)
		} else if p.failures >= failureThreshold {
			w.event(c, v1.EventTypeNormal, eventKilling, "Container %s failed startup probe, will be restarted", c.spec.Name)
			w.killUnhealthy(c, p, "Startup probe failed: "+r.msg, now)
		}
	case livenessProbe:
		if p.failures >= failureThreshold {
			w.event(c, v1.EventTypeNormal, eventKilling, "Container %s failed liveness probe, will be restarted", c.spec.Name)
			w.killUnhealthy(c, p, "Liveness probe failed: "+r.msg, now)
		}
	case readinessProbe:
		if p.successes >= successThreshold {
			c.ready = true
		} else if p.failures >= failureThreshold {
			c.ready = false
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// killUnhealthy stops a container whose liveness or startup probe failed; it restarts
// according to the restart policy once it has exited.
func (w *podWorker) killUnhealthy(c *containerState, p *probeState, reason string, now time.Time) {
	if !c.killAt.IsZero() {
		return
	}
	grace := w.terminationGrace()
	if p.spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*p.spec.TerminationGracePeriodSeconds) * time.Second
	}
	w.logger().Info("Killing unhealthy container", "container", c.spec.Name, "reason", reason, "grace", grace)
	c.killReason = reason
	c.killAt = now.Add(grace)
	c.sigtermSent = true
	w.signal(c, syscall.SIGTERM)
}

func (w *podWorker) terminationGrace() time.Duration {
	if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return defaultTerminationGrace
}

// beginTermination starts stopping every container: preStop hooks first, then SIGTERM,
// SIGKILL at the end of the grace period.
func (w *podWorker) beginTermination(ctx context.Context, now time.Time, gone bool) {
	w.terminating = true
	grace := w.terminationGrace()
	if !gone && w.pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*w.pod.DeletionGracePeriodSeconds) * time.Second
	}
	if ctx.Err() != nil && grace > w.agent.opts.ShutdownGracePeriod {
		grace = w.agent.opts.ShutdownGracePeriod
	}
	w.killAt = now.Add(grace)
	for _, c := range w.containers {
		if c.proc == nil && c.terminated == nil && c.lastTerminated != nil {
			// Waiting for a restart that will not come: it stays terminated.
			c.terminated, c.waiting, c.lastTerminated = c.lastTerminated, nil, nil
		}
	}
	w.logger().Info("Stopping pod", "grace", grace, "deletedFromAPI", gone, "shutdown", ctx.Err() != nil)
	for _, c := range w.containers {
		if c.proc != nil && !gone && ctx.Err() == nil {
			w.event(c, v1.EventTypeNormal, eventKilling, "Stopping container %s", c.spec.Name)
		}
	}
	for i, c := range w.containers {
		if c.proc == nil || (c.init && !c.sidecar) {
			continue
		}
		if hook := c.spec.Lifecycle; hook != nil && hook.PreStop != nil && grace > 0 && ctx.Err() == nil {
			c.preStopActive = true
			w.runHook(ctx, i, hook.PreStop, false)
		}
	}
}

// probeTarget is container c's current run as probes and hooks see it.
func (w *podWorker) probeTarget(c *containerState) probeTarget {
	return probeTarget{podIP: w.ip.String(), container: c.spec.DeepCopy(), exec: c.exec}
}

// runHook runs a postStart or preStop hook (exec, httpGet or sleep) of container i and
// reports its end on w.hooks. A hook may run as long as the termination grace period.
func (w *podWorker) runHook(ctx context.Context, i int, h *v1.LifecycleHandler, postStart bool) {
	c := w.containers[i]
	target, gen, podName := w.probeTarget(c), c.gen, w.pod.Name
	h = h.DeepCopy()
	clk := w.agent.clock
	timeout := w.terminationGrace()
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(timeout, time.Second))
		defer cancel()
		var failure string
		switch {
		case h.Sleep != nil:
			select {
			case <-clk.After(time.Duration(h.Sleep.Seconds) * time.Second):
			case <-w.done:
			}
		case h.HTTPGet != nil:
			probe := &v1.Probe{ProbeHandler: v1.ProbeHandler{HTTPGet: h.HTTPGet}, TimeoutSeconds: int32(max(timeout, time.Second) / time.Second)}
			if ok, msg := w.agent.prober.probe(ctx, probe, target); !ok {
				failure = fmt.Sprintf("HTTP lifecycle hook (%s) for Container %q in Pod %q failed - error: %s", h.HTTPGet.Path, target.container.Name, podName, msg)
			}
		case h.Exec != nil:
			out, code, err := w.agent.commands.run(ctx, target.exec, h.Exec.Command)
			if err != nil || code != 0 {
				if err == nil {
					err = fmt.Errorf("command %q exited with %d: %s", strings.Join(h.Exec.Command, " "), code, strings.TrimSpace(string(out)))
				}
				failure = fmt.Sprintf("Exec lifecycle hook (%s) for Container %q in Pod %q failed - error: %v", h.Exec.Command, target.container.Name, podName, err)
			}
		}
		select {
		case w.hooks <- hookResult{index: i, gen: gen, postStart: postStart, failure: failure}:
		case <-w.done:
		}
	}()
}

// handleHook ends a hook: a preStop hook lets SIGTERM go; a failed postStart hook kills
// the container, which restarts per restartPolicy, as the kubelet does.
func (w *podWorker) handleHook(r hookResult) {
	c := w.containers[r.index]
	if !r.postStart {
		c.preStopActive = false
		if r.failure != "" {
			w.event(c, v1.EventTypeWarning, eventFailedPreStopHook, "%s", r.failure)
			w.logger().Info("PreStop hook failed", "container", c.spec.Name, "failure", r.failure)
		}
		return
	}
	if r.gen != c.gen || c.proc == nil {
		return
	}
	c.postStartActive = false
	if r.failure == "" {
		w.markStarted(c)
		return
	}
	w.logger().Info("PostStart hook failed; killing the container", "container", c.spec.Name, "failure", r.failure)
	if !c.killAt.IsZero() || w.terminating {
		return
	}
	w.event(c, v1.EventTypeWarning, eventFailedPostStartHook, "%s", r.failure)
	w.event(c, v1.EventTypeNormal, eventKilling, "FailedPostStartHook")
	c.killReason = "FailedPostStartHook"
	c.killAt = w.agent.clock.Now().Add(w.terminationGrace())
	c.sigtermSent = true
	w.signal(c, syscall.SIGTERM)
}

func (w *podWorker) progressTermination(now time.Time) {
	for _, c := range w.containers {
		if c.proc == nil {
			continue
		}
		if !now.Before(w.killAt) {
			if !c.sigkillSent {
				c.sigkillSent = true
				w.signal(c, syscall.SIGKILL)
			}
			continue
		}
		if !c.preStopActive && !c.sigtermSent {
			c.sigtermSent = true
			w.signal(c, syscall.SIGTERM)
		}
	}
}

func (w *podWorker) anyRunning() bool {
	for _, c := range w.containers {
		if c.proc != nil {
			return true
		}
	}
	return false
}

// finish tears down the pod's sandbox and, unless the agent is shutting down, writes the
// final status and deletes the pod with grace period 0 as the kubelet does.
func (w *podWorker) finish(ctx context.Context, gone bool) {
	log := w.logger()
	for _, c := range w.containers {
		for _, r := range c.release {
			r()
		}
		c.release = nil
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
	defer cancel()
	if !w.pod.Spec.HostNetwork {
		if err := w.agent.withNetworkSlot(tctx, func() error { return w.agent.network.teardown(tctx, string(w.uid)) }); err != nil {
			log.Error(err, "Removing pod network failed")
		}
		if w.ip.IsValid() {
			w.agent.ips.release(w.ip)
		}
	}
	if err := os.RemoveAll(w.podDir); err != nil {
		log.Error(err, "Removing pod directory failed")
	}
	w.sandboxReady = false
	if gone || ctx.Err() != nil {
		log.Info("Pod stopped")
		return
	}
	w.writeStatus(ctx, w.agent.clock.Now())
	for attempt := 0; attempt < finalizeAttempts; attempt++ {
		err := w.agent.client.CoreV1().Pods(w.pod.Namespace).Delete(ctx, w.pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &w.uid},
		})
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			w.finalized = true
			log.Info("Pod deleted")
			return
		}
		log.Error(err, "Finalising pod deletion failed", "attempt", attempt+1)
		select {
		case <-ctx.Done():
			return
		case <-w.agent.clock.After(time.Second):
		}
	}
}

// currentStatus computes the pod status from the worker's state.
func (w *podWorker) currentStatus(now time.Time) v1.PodStatus {
	statuses := make([]v1.ContainerStatus, 0, len(w.pod.Spec.Containers))
	var initStatuses []v1.ContainerStatus
	initialized := w.initialized()
	for _, c := range w.containers {
		s := c.status()
		if s.State.Waiting != nil && s.State.Waiting.Reason == "ContainerCreating" {
			switch {
			case w.setupErr != nil:
				s.State.Waiting.Message = w.setupErr.Error()
			case c.init || !initialized:
				// As the kubelet: containers wait for the pod's initialisation.
				s.State.Waiting.Reason = "PodInitializing"
			}
		}
		if c.init {
			initStatuses = append(initStatuses, s)
		} else {
			statuses = append(statuses, s)
		}
	}
	in := statusInput{
		now:            now,
		hostIP:         w.agent.opts.NodeIP,
		startTime:      w.startTime,
		sandboxReady:   w.sandboxReady,
		containers:     statuses,
		initContainers: initStatuses,
		initialized:    initialized,
	}
	if w.ip.IsValid() && w.sandboxReady {
		in.podIP = w.ip.String()
	}
	pod := w.pod
	if w.terminating && !w.anyRunning() {
		// A pod that has stopped for deletion ends in a terminal phase.
		pod = pod.DeepCopy()
		pod.Spec.RestartPolicy = v1.RestartPolicyNever
	}
	st := buildPodStatus(pod, in)
	if !w.sandboxReady && w.terminating {
		st.PodIP, st.PodIPs = w.pod.Status.PodIP, w.pod.Status.PodIPs
	}
	st.ObservedGeneration = w.pod.Generation
	return st
}

// writeStatus sends the status to the API when it changed.
func (w *podWorker) writeStatus(ctx context.Context, now time.Time) {
	if now.Before(w.statusRetryAt) {
		return
	}
	st := w.currentStatus(now)
	if w.lastStatus != nil && apiequality.Semantic.DeepEqual(*w.lastStatus, st) {
		return
	}
	pods := w.agent.client.CoreV1().Pods(w.pod.Namespace)
	pod := w.pod.DeepCopy()
	pod.Status = st
	_, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		var fresh *v1.Pod
		fresh, err = pods.Get(ctx, w.pod.Name, metav1.GetOptions{})
		if err == nil && fresh.UID == w.uid {
			fresh.Status = st
			_, err = pods.UpdateStatus(ctx, fresh, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			w.statusRetryAt = now.Add(maxWorkerWait)
			return
		}
		if ctx.Err() == nil {
			w.logger().Error(err, "Updating pod status failed")
		}
		w.statusRetryAt = now.Add(time.Second)
		return
	}
	w.statusRetryAt = time.Time{}
	w.lastStatus = &st
}
