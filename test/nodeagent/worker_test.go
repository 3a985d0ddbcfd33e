package nodeagent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

// fakeNetwork records sandboxes instead of creating namespaces.
type fakeNetwork struct {
	mu   sync.Mutex
	live map[string]netip.Addr
}

var _ podNetwork = (*fakeNetwork)(nil)

func (n *fakeNetwork) setup(_ context.Context, id string, ip netip.Addr) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.live == nil {
		n.live = map[string]netip.Addr{}
	}
	n.live[id] = ip
	return "/fake/netns/" + id, nil
}

func (n *fakeNetwork) teardown(_ context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.live, id)
	return nil
}

func (n *fakeNetwork) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.live)
}

// fakeProcess is a container that lives until the test ends it or a signal kills it.
type fakeProcess struct {
	rt         *fakeRuntime
	spec       *launchSpec
	onExit     func(exitStatus)
	ignoreTerm bool
	once       sync.Once
	mu         sync.Mutex
	signals    []syscall.Signal
}

var (
	_ containerProcess = (*fakeProcess)(nil)
	_ containerRuntime = (*fakeRuntime)(nil)
	_ probeRunner      = (*fakeProber)(nil)
)

func (p *fakeProcess) pid() int { return 4242 }

func (p *fakeProcess) signal(sig syscall.Signal) error {
	p.mu.Lock()
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	if sig == syscall.SIGKILL || !p.ignoreTerm {
		p.exit(128 + int32(sig))
	}
	return nil
}

func (p *fakeProcess) receivedSignals() []syscall.Signal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]syscall.Signal(nil), p.signals...)
}

func (p *fakeProcess) exit(code int32) {
	p.once.Do(func() { p.onExit(exitStatus{code: code, at: p.rt.clock.Now()}) })
}

// fakeRuntime starts fakeProcesses and hands each to the test.
type fakeRuntime struct {
	clock      *clocktesting.FakeClock
	ignoreTerm bool
	started    chan *fakeProcess
}

func (r *fakeRuntime) start(spec *launchSpec, _, _ string, onExit func(exitStatus)) (containerProcess, error) {
	p := &fakeProcess{rt: r, spec: spec, onExit: onExit, ignoreTerm: r.ignoreTerm}
	r.started <- p
	return p, nil
}

// fakeProber answers every probe with the current verdict of its kind.
type fakeProber struct {
	mu  sync.Mutex
	ok  map[probeKind]bool
	hit chan probeKind
}

func (p *fakeProber) set(kind probeKind, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ok[kind] = ok
}

func (p *fakeProber) probe(_ context.Context, spec *v1.Probe, t probeTarget) (bool, string) {
	// The target's container is a copy: tell the kinds apart by value.
	c := t.container
	kind := readinessProbe
	switch {
	case apiequality.Semantic.DeepEqual(spec, c.StartupProbe):
		kind = startupProbe
	case apiequality.Semantic.DeepEqual(spec, c.LivenessProbe):
		kind = livenessProbe
	}
	p.mu.Lock()
	ok := p.ok[kind]
	p.mu.Unlock()
	if !ok {
		return false, "probe says no"
	}
	return true, ""
}

type testEnv struct {
	agent   *Agent
	client  *fake.Clientset
	clock   *clocktesting.FakeClock
	rt      *fakeRuntime
	net     *fakeNetwork
	prober  *fakeProber
	cancel  context.CancelFunc
	binPath string
}

func newTestEnv(t *testing.T, ignoreTerm bool) *testEnv {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "echo")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC))
	client := fake.NewClientset()
	a, err := New(Options{
		Client: client, NodeName: "node-a", NodeIP: "198.18.0.1", APIServerPort: 6443, PodCIDR: "198.18.1.0/24",
		Images: map[string]string{"wsscale/echo": bin}, StateDir: filepath.Join(dir, "state"), Clock: clk,
		CrashLoopBackOffBase: 10 * time.Second, CrashLoopBackOffMax: 40 * time.Second, ShutdownGracePeriod: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{
		agent: a, client: client, clock: clk, binPath: bin,
		rt:     &fakeRuntime{clock: clk, ignoreTerm: ignoreTerm, started: make(chan *fakeProcess, 100)},
		net:    &fakeNetwork{},
		prober: &fakeProber{ok: map[probeKind]bool{}},
	}
	a.runtime, a.network, a.prober = env.rt, env.net, env.prober
	// Nothing sends the broadcaster's events anywhere in unit tests; tests that check
	// events swap in a fakeRecorder.
	t.Cleanup(a.events.Shutdown)
	a.prepareNode = func() error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	env.cancel = cancel
	a.runCtx = ctx
	t.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() { a.wg.Wait(); close(done) }()
		// Shutdown grace runs on the fake clock: keep stepping it until the workers end.
		_ = wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			select {
			case <-done:
				return true, nil
			default:
				clk.Step(time.Second)
				return false, nil
			}
		})
	})
	return env
}

func echoPod(name string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: k8stypes.UID("uid-" + name)},
		Spec: v1.PodSpec{
			NodeName: "node-a", RestartPolicy: v1.RestartPolicyAlways, TerminationGracePeriodSeconds: ptr.To[int64](20),
			Containers: []v1.Container{{Name: "echo", Image: "wsscale/echo:dev", Args: []string{"--drain-annotations-file=/etc/podinfo/annotations"}}},
		},
	}
}

// add creates pod in the fake API and hands it to the agent as the informer would.
func (e *testEnv) add(t *testing.T, pod *v1.Pod) {
	t.Helper()
	created, err := e.client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.agent.podChanged(created)
}

func (e *testEnv) update(t *testing.T, pod *v1.Pod) {
	t.Helper()
	updated, err := e.client.CoreV1().Pods(pod.Namespace).Update(context.Background(), pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.agent.podChanged(updated)
}

func (e *testEnv) nextProcess(t *testing.T) *fakeProcess {
	t.Helper()
	select {
	case p := <-e.rt.started:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no container started")
		return nil
	}
}

// waitStatus waits until the pod's status in the API satisfies cond.
func (e *testEnv) waitStatus(t *testing.T, name, what string, cond func(*v1.Pod) bool) *v1.Pod {
	t.Helper()
	var last *v1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := e.client.CoreV1().Pods("ns").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s of %s: %v; last status: %+v", what, name, err, last.Status)
	}
	return last
}

// stepWhenWaiting advances the fake clock once every worker sleeps on its timer.
func (e *testEnv) stepWhenWaiting(t *testing.T, d time.Duration) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return e.clock.HasWaiters(), nil
	}); err != nil {
		t.Fatal("worker never waited on the clock")
	}
	e.clock.Step(d)
}

func containerStatus(p *v1.Pod) v1.ContainerStatus {
	if len(p.Status.ContainerStatuses) == 0 {
		return v1.ContainerStatus{}
	}
	return p.Status.ContainerStatuses[0]
}

func podReady(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func TestWorkerRunsPodAndWritesStatus(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("echo-1")
	pod.Spec.Containers[0].Env = []v1.EnvVar{{Name: "POD_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}}}
	pod.Spec.Containers[0].ReadinessProbe = &v1.Probe{
		ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 5, SuccessThreshold: 2, FailureThreshold: 2,
	}
	e.prober.set(readinessProbe, true)
	e.add(t, pod)
	proc := e.nextProcess(t)
	if proc.spec.Binary != e.binPath || proc.spec.Hostname != "echo-1" || proc.spec.NetNS != "/fake/netns/uid-echo-1" {
		t.Errorf("launch spec %+v", proc.spec)
	}
	if want := []string{e.binPath, "--drain-annotations-file=/etc/podinfo/annotations"}; len(proc.spec.Argv) != 2 || proc.spec.Argv[1] != want[1] {
		t.Errorf("argv %q, want %q", proc.spec.Argv, want)
	}
	got := e.waitStatus(t, "echo-1", "running, not ready", func(p *v1.Pod) bool {
		return containerStatus(p).State.Running != nil && p.Status.Phase == v1.PodRunning
	})
	if got.Status.PodIP == "" || got.Status.HostIP != "198.18.0.1" || podReady(got) || !*containerStatus(got).Started {
		t.Errorf("status before readiness: %+v", got.Status)
	}
	var envIP string
	for _, kv := range proc.spec.Env {
		if v, ok := cutPrefix(kv, "POD_IP="); ok {
			envIP = v
		}
	}
	if envIP != got.Status.PodIP {
		t.Errorf("POD_IP=%q, status podIP %q", envIP, got.Status.PodIP)
	}
	// Two successes are needed: the first probe runs at start, the second a period later.
	// (The clock steps by whole periods until then: a step may come before the first
	// result, which then counts from the stepped time.)
	e.stepUntil(t, "echo-1", "ready", 5*time.Second, podReady)
	// Two failures make it unready again.
	e.prober.set(readinessProbe, false)
	e.stepUntil(t, "echo-1", "unready", 5*time.Second, func(p *v1.Pod) bool { return !podReady(p) && containerStatus(p).State.Running != nil })
}

// stepUntil advances the fake clock by d whenever the workers wait, until the pod's status
// satisfies cond; at most 10 steps.
func (e *testEnv) stepUntil(t *testing.T, name, what string, d time.Duration, cond func(*v1.Pod) bool) {
	t.Helper()
	for range 10 {
		e.stepWhenWaiting(t, d)
		ok := false
		_ = wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			p, err := e.client.CoreV1().Pods("ns").Get(ctx, name, metav1.GetOptions{})
			ok = err == nil && cond(p)
			return ok, nil
		})
		if ok {
			return
		}
	}
	e.waitStatus(t, name, what, cond)
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

func TestWorkerCrashLoopBackOff(t *testing.T) {
	e := newTestEnv(t, false)
	e.add(t, echoPod("crash"))
	e.nextProcess(t).exit(2)
	// The first restart is immediate.
	p := e.nextProcess(t)
	e.waitStatus(t, "crash", "first restart", func(p *v1.Pod) bool {
		cs := containerStatus(p)
		return cs.RestartCount == 1 && cs.State.Running != nil && cs.LastTerminationState.Terminated != nil &&
			cs.LastTerminationState.Terminated.ExitCode == 2 && cs.LastTerminationState.Terminated.Reason == "Error"
	})
	for i, delay := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second} {
		p.exit(1)
		got := e.waitStatus(t, "crash", "CrashLoopBackOff", func(p *v1.Pod) bool {
			w := containerStatus(p).State.Waiting
			return w != nil && w.Reason == "CrashLoopBackOff"
		})
		if want := "back-off " + delay.String() + " restarting failed container=echo pod=crash_ns(uid-crash)"; containerStatus(got).State.Waiting.Message != want {
			t.Errorf("crash %d: message %q, want %q", i, containerStatus(got).State.Waiting.Message, want)
		}
		if got.Status.Phase != v1.PodRunning || podReady(got) {
			t.Errorf("crash %d: phase %s ready %v", i, got.Status.Phase, podReady(got))
		}
		e.stepWhenWaiting(t, delay-time.Second)
		select {
		case <-e.rt.started:
			t.Fatalf("crash %d: restarted before %s", i, delay)
		default:
		}
		e.stepWhenWaiting(t, time.Second)
		p = e.nextProcess(t)
		e.waitStatus(t, "crash", "restarted", func(p *v1.Pod) bool {
			return containerStatus(p).RestartCount == int32(i+2) && containerStatus(p).State.Running != nil
		})
	}
}

func TestWorkerRestartPolicyNever(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("job")
	pod.Spec.RestartPolicy = v1.RestartPolicyNever
	e.add(t, pod)
	e.nextProcess(t).exit(0)
	got := e.waitStatus(t, "job", "succeeded", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodSucceeded })
	if cs := containerStatus(got); cs.State.Terminated == nil || cs.State.Terminated.Reason != "Completed" || cs.RestartCount != 0 {
		t.Errorf("container status %+v", cs)
	}
}

func TestWorkerUnknownImage(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("nginx")
	pod.Spec.Containers[0].Image = "nginx:1.27"
	e.add(t, pod)
	e.waitStatus(t, "nginx", "ImagePullBackOff", func(p *v1.Pod) bool {
		w := containerStatus(p).State.Waiting
		return w != nil && w.Reason == "ImagePullBackOff" && p.Status.Phase == v1.PodPending
	})
	// The first attempt reported ErrImagePull (the retry follows at once, so look at the
	// status writes rather than the current status).
	var reasons []string
	for _, a := range e.client.Actions() {
		if u, ok := a.(k8stesting.UpdateAction); ok && a.GetSubresource() == "status" {
			if w := containerStatus(u.GetObject().(*v1.Pod)).State.Waiting; w != nil {
				reasons = append(reasons, w.Reason)
			}
		}
	}
	if len(reasons) < 2 || reasons[0] != "ErrImagePull" || reasons[len(reasons)-1] != "ImagePullBackOff" {
		t.Errorf("waiting reasons written: %v, want ErrImagePull first, ImagePullBackOff last", reasons)
	}
}

func TestWorkerBadEnv(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("badenv")
	pod.Spec.Containers[0].Env = []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{
		LocalObjectReference: v1.LocalObjectReference{Name: "absent"}, Key: "k"}}}}
	e.add(t, pod)
	e.waitStatus(t, "badenv", "CreateContainerConfigError", func(p *v1.Pod) bool {
		w := containerStatus(p).State.Waiting
		return w != nil && w.Reason == "CreateContainerConfigError" && w.Message == `configmap "absent" not found`
	})
	// Once the configMap exists the container starts.
	if _, err := e.client.CoreV1().ConfigMaps("ns").Create(context.Background(), &v1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "absent", Namespace: "ns"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.stepWhenWaiting(t, 10*time.Second)
	e.nextProcess(t)
}

func TestWorkerLivenessFailureRestarts(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("live")
	pod.Spec.Containers[0].LivenessProbe = &v1.Probe{
		ProbeHandler:        v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/livez", Port: intstr.FromInt32(8080)}},
		InitialDelaySeconds: 3, PeriodSeconds: 2, FailureThreshold: 2,
	}
	e.add(t, pod)
	p := e.nextProcess(t)
	e.stepWhenWaiting(t, 3*time.Second) // first probe: failure 1
	e.stepWhenWaiting(t, 2*time.Second) // failure 2: kill
	e.nextProcess(t)
	if sigs := p.receivedSignals(); len(sigs) != 1 || sigs[0] != syscall.SIGTERM {
		t.Errorf("signals %v, want [SIGTERM]", sigs)
	}
	got := e.waitStatus(t, "live", "restart after liveness failure", func(p *v1.Pod) bool {
		return containerStatus(p).RestartCount == 1 && containerStatus(p).State.Running != nil
	})
	if last := containerStatus(got).LastTerminationState.Terminated; last == nil || last.ExitCode != 143 || last.Message != "Liveness probe failed: probe says no" {
		t.Errorf("last state %+v", last)
	}
}

// expectGoroutines waits until no more than baseline goroutines run.
func expectGoroutines(t *testing.T, baseline int) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return runtime.NumGoroutine() <= baseline, nil
	}); err != nil {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, want <= %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
	}
}

func TestWorkerGracefulDeletion(t *testing.T) {
	e := newTestEnv(t, true) // the process ignores SIGTERM: only SIGKILL at the deadline stops it
	baseline := runtime.NumGoroutine()
	pod := echoPod("del")
	pod.Spec.Containers[0].ReadinessProbe = &v1.Probe{ProbeHandler: v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Port: intstr.FromInt32(8080)}}}
	pod.Spec.Containers[0].LivenessProbe = &v1.Probe{ProbeHandler: v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Port: intstr.FromInt32(8080)}}}
	e.prober.set(livenessProbe, true)
	e.add(t, pod)
	p := e.nextProcess(t)
	e.waitStatus(t, "del", "running", func(p *v1.Pod) bool { return containerStatus(p).State.Running != nil })
	if e.net.count() != 1 {
		t.Fatalf("%d sandboxes", e.net.count())
	}
	cur, _ := e.client.CoreV1().Pods("ns").Get(context.Background(), "del", metav1.GetOptions{})
	now := metav1.NewTime(e.clock.Now())
	cur.DeletionTimestamp, cur.DeletionGracePeriodSeconds = &now, ptr.To[int64](7)
	e.update(t, cur)
	waitSignals := func(n int) []syscall.Signal {
		var sigs []syscall.Signal
		_ = wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			sigs = p.receivedSignals()
			return len(sigs) >= n, nil
		})
		return sigs
	}
	if sigs := waitSignals(1); len(sigs) != 1 || sigs[0] != syscall.SIGTERM {
		t.Fatalf("signals %v, want [SIGTERM]", sigs)
	}
	e.stepWhenWaiting(t, 6*time.Second)
	if sigs := p.receivedSignals(); len(sigs) != 1 {
		t.Fatalf("signals before the grace period ended: %v", sigs)
	}
	e.stepWhenWaiting(t, time.Second)
	if sigs := waitSignals(2); len(sigs) != 2 || sigs[1] != syscall.SIGKILL {
		t.Fatalf("signals %v, want [SIGTERM SIGKILL]", sigs)
	}
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.client.CoreV1().Pods("ns").Get(ctx, "del", metav1.GetOptions{})
		return apierrors.IsNotFound(err) && e.agent.workerCount() == 0, nil
	}); err != nil {
		t.Fatalf("pod not finalised: %v", err)
	}
	if e.net.count() != 0 {
		t.Errorf("sandbox left after deletion")
	}
	// The worker and everything it started (probes, waiters) are gone.
	expectGoroutines(t, baseline)
	// A late update of the deleted pod does not start it again.
	e.agent.podChanged(cur)
	if n := e.agent.workerCount(); n != 0 {
		t.Errorf("%d workers after a late update", n)
	}
	var deletes int
	for _, a := range e.client.Actions() {
		if a.GetVerb() == "delete" && a.GetResource().Resource == "pods" {
			deletes++
		}
	}
	if deletes != 1 {
		t.Errorf("%d pod deletes", deletes)
	}
}

func TestWorkerShorterSecondDeletion(t *testing.T) {
	e := newTestEnv(t, true)
	e.add(t, echoPod("short"))
	p := e.nextProcess(t)
	e.waitStatus(t, "short", "running", func(p *v1.Pod) bool { return containerStatus(p).State.Running != nil })
	cur, _ := e.client.CoreV1().Pods("ns").Get(context.Background(), "short", metav1.GetOptions{})
	now := metav1.NewTime(e.clock.Now())
	cur.DeletionTimestamp, cur.DeletionGracePeriodSeconds = &now, ptr.To[int64](30)
	e.update(t, cur)
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return len(p.receivedSignals()) == 1, nil
	}); err != nil {
		t.Fatalf("no SIGTERM: %v", p.receivedSignals())
	}
	cur = cur.DeepCopy()
	cur.DeletionGracePeriodSeconds = ptr.To[int64](0)
	e.update(t, cur)
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		sigs := p.receivedSignals()
		return len(sigs) > 0 && sigs[len(sigs)-1] == syscall.SIGKILL, nil
	}); err != nil {
		t.Fatalf("no SIGKILL after the grace period was cut to 0: %v", p.receivedSignals())
	}
}

func TestWorkerPodDeletedFromAPI(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("gone")
	e.add(t, pod)
	p := e.nextProcess(t)
	e.waitStatus(t, "gone", "running", func(p *v1.Pod) bool { return containerStatus(p).State.Running != nil })
	if err := e.client.CoreV1().Pods("ns").Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.agent.podDeleted(cache.DeletedFinalStateUnknown{Key: "ns/gone", Obj: pod})
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return e.agent.workerCount() == 0, nil
	}); err != nil {
		t.Fatal("worker did not stop")
	}
	if sigs := p.receivedSignals(); len(sigs) == 0 || sigs[0] != syscall.SIGTERM {
		t.Errorf("signals %v", sigs)
	}
	if e.net.count() != 0 {
		t.Errorf("sandbox left")
	}
}

func TestWorkerHostNetwork(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("hostnet")
	pod.Spec.HostNetwork = true
	e.add(t, pod)
	proc := e.nextProcess(t)
	if proc.spec.NetNS != "" {
		t.Errorf("host network pod joins namespace %q", proc.spec.NetNS)
	}
	got := e.waitStatus(t, "hostnet", "running", func(p *v1.Pod) bool { return containerStatus(p).State.Running != nil })
	if got.Status.PodIP != "198.18.0.1" || e.net.count() != 0 {
		t.Errorf("pod IP %s, %d sandboxes", got.Status.PodIP, e.net.count())
	}
}

func TestAgentAdmissionLimit(t *testing.T) {
	e := newTestEnv(t, false)
	e.agent.opts.MaxPods = 1
	e.add(t, echoPod("first"))
	e.nextProcess(t)
	e.add(t, echoPod("second"))
	e.waitStatus(t, "second", "rejected", func(p *v1.Pod) bool {
		return p.Status.Phase == v1.PodFailed && p.Status.Reason == "OutOfpods"
	})
}

func TestNodeRegistrationAndLease(t *testing.T) {
	e := newTestEnv(t, false)
	ctx := context.Background()
	if err := e.agent.registerNode(ctx); err != nil {
		t.Fatal(err)
	}
	node, err := e.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Spec.PodCIDR != "198.18.1.0/24" || node.Labels["kubernetes.io/hostname"] != "node-a" {
		t.Errorf("node %+v", node.ObjectMeta)
	}
	if len(node.Status.Addresses) == 0 || node.Status.Addresses[0] != (v1.NodeAddress{Type: v1.NodeInternalIP, Address: "198.18.0.1"}) {
		t.Errorf("addresses %+v", node.Status.Addresses)
	}
	if q := node.Status.Allocatable[v1.ResourcePods]; q.Value() != DefaultMaxPods {
		t.Errorf("allocatable pods %s", q.String())
	}
	var ready v1.NodeCondition
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeReady {
			ready = c
		}
	}
	if ready.Status != v1.ConditionTrue || !ready.LastHeartbeatTime.Time.Equal(e.clock.Now()) {
		t.Errorf("Ready %+v", ready)
	}
	// Registering again (a restarted agent) takes the node over.
	if err := e.agent.registerNode(ctx); err != nil {
		t.Fatal(err)
	}

	if err := e.agent.renewLease(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.Step(10 * time.Second)
	if err := e.agent.renewLease(ctx); err != nil {
		t.Fatal(err)
	}
	lease, err := e.client.CoordinationV1().Leases(leaseNamespace).Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := coordinationv1.LeaseSpec{HolderIdentity: ptr.To("node-a"), LeaseDurationSeconds: ptr.To[int32](40)}
	if *lease.Spec.HolderIdentity != *want.HolderIdentity || *lease.Spec.LeaseDurationSeconds != *want.LeaseDurationSeconds ||
		!lease.Spec.RenewTime.Time.Equal(e.clock.Now()) || len(lease.OwnerReferences) != 1 || lease.OwnerReferences[0].Kind != "Node" {
		t.Errorf("lease %+v", lease)
	}

	e.clock.Step(10 * time.Second)
	if err := e.agent.updateNodeStatus(ctx); err != nil {
		t.Fatal(err)
	}
	node, _ = e.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeReady && (!c.LastHeartbeatTime.Time.Equal(e.clock.Now()) || c.LastTransitionTime.Time.Equal(e.clock.Now())) {
			t.Errorf("after heartbeat: %+v", c)
		}
	}
}
