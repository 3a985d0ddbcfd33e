package nodeagent

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

// fakeCommands answers every command with a fixed result and records what it ran.
type fakeCommands struct {
	mu      sync.Mutex
	out     string
	code    int
	err     error
	ran     [][]string
	targets []execTarget
}

var _ commandRunner = (*fakeCommands)(nil)

func (f *fakeCommands) run(_ context.Context, target execTarget, argv []string) ([]byte, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ran = append(f.ran, argv)
	f.targets = append(f.targets, target)
	return []byte(f.out), f.code, f.err
}

func (f *fakeCommands) set(code int, out string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.code, f.out = code, out
}

func (f *fakeCommands) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ran)
}

func TestNsenterArgs(t *testing.T) {
	tests := []struct {
		name   string
		target execTarget
		argv   []string
		want   []string
	}{
		{
			name:   "root in /",
			target: execTarget{pid: 42},
			argv:   []string{"/bin/cat", "/tmp/healthy"},
			want:   []string{"--target", "42", "--mount", "--net", "--uts", "--wd=/", "--", "/bin/cat", "/tmp/healthy"},
		},
		{
			name:   "the container's uid, gid and working directory",
			target: execTarget{pid: 7, uid: ptr.To[int64](1000), gid: ptr.To[int64](2000), workDir: "/app"},
			argv:   []string{"/bin/true"},
			want:   []string{"--target", "7", "--mount", "--net", "--uts", "--setuid", "1000", "--setgid", "2000", "--wd=/app", "--", "/bin/true"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nsenterArgs(tt.target, tt.argv); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestExecProbe(t *testing.T) {
	tests := []struct {
		name    string
		runner  *fakeCommands
		wantOK  bool
		wantMsg string
	}{
		{name: "exit 0", runner: &fakeCommands{out: "fine"}, wantOK: true},
		{name: "output is the message", runner: &fakeCommands{code: 1, out: "cat: /tmp/healthy: No such file or directory\n"}, wantMsg: "cat: /tmp/healthy: No such file or directory"},
		{name: "silent failure", runner: &fakeCommands{code: 2}, wantMsg: `command "/bin/cat /tmp/healthy" exited with 2`},
		{name: "timeout", runner: &fakeCommands{code: -1, err: errExecTimeout}, wantMsg: `command "/bin/cat /tmp/healthy" timed out`},
		{name: "cannot run", runner: &fakeCommands{code: -1, err: errors.New("run /bin/cat: nsenter not found")}, wantMsg: "run /bin/cat: nsenter not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := execTarget{pid: 9, env: []string{"A=b"}}
			ok, msg := newProber(tt.runner).probe(context.Background(), &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"/bin/cat", "/tmp/healthy"}}}},
				probeTarget{podIP: "198.18.1.2", container: &v1.Container{Name: "c"}, exec: target})
			if ok != tt.wantOK || msg != tt.wantMsg {
				t.Errorf("got (%t, %q), want (%t, %q)", ok, msg, tt.wantOK, tt.wantMsg)
			}
			if len(tt.runner.targets) != 1 || tt.runner.targets[0].pid != 9 || !slices.Equal(tt.runner.targets[0].env, target.env) {
				t.Errorf("ran in %+v, want the container's process and environment", tt.runner.targets)
			}
		})
	}
}

func TestGRPCProbe(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("ready", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("sick", healthpb.HealthCheckResponse_NOT_SERVING)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	port := int32(lis.Addr().(*net.TCPAddr).Port)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := int32(closed.Addr().(*net.TCPAddr).Port)
	closed.Close()

	tests := []struct {
		name    string
		action  v1.GRPCAction
		wantOK  bool
		wantMsg string
	}{
		{name: "server serving", action: v1.GRPCAction{Port: port}, wantOK: true},
		{name: "named service serving", action: v1.GRPCAction{Port: port, Service: ptr.To("ready")}, wantOK: true},
		{name: "named service not serving", action: v1.GRPCAction{Port: port, Service: ptr.To("sick")}, wantMsg: `service unhealthy (responded with "NOT_SERVING")`},
		{name: "unknown service", action: v1.GRPCAction{Port: port, Service: ptr.To("nope")}},
		{name: "nothing listening", action: v1.GRPCAction{Port: closedPort}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, msg := newProber(&fakeCommands{}).probe(context.Background(), &v1.Probe{TimeoutSeconds: 5, ProbeHandler: v1.ProbeHandler{GRPC: &tt.action}},
				probeTarget{podIP: "127.0.0.1", container: &v1.Container{Name: "c"}})
			if ok != tt.wantOK || (tt.wantMsg != "" && msg != tt.wantMsg) || (!ok && msg == "") {
				t.Errorf("got (%t, %q), want (%t, %q)", ok, msg, tt.wantOK, tt.wantMsg)
			}
		})
	}
}

func TestBuildPodStatusInitContainers(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	running := v1.ContainerStatus{Name: "init", State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}}
	completed := v1.ContainerStatus{Name: "init", State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}
	failed := v1.ContainerStatus{Name: "init", State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}}}
	backOff := v1.ContainerStatus{Name: "init", State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1}}}
	waitingMain := v1.ContainerStatus{Name: "main", State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "PodInitializing"}}}
	runningMain := v1.ContainerStatus{Name: "main", Ready: true, State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}}
	tests := []struct {
		name            string
		policy          v1.RestartPolicy
		init            v1.ContainerStatus
		main            v1.ContainerStatus
		wantPhase       v1.PodPhase
		wantInitialized v1.ConditionStatus
		wantMessage     string
	}{
		{name: "init running", policy: v1.RestartPolicyAlways, init: running, main: waitingMain, wantPhase: v1.PodPending,
			wantInitialized: v1.ConditionFalse, wantMessage: "containers with incomplete status: [init]"},
		{name: "init backing off", policy: v1.RestartPolicyAlways, init: backOff, main: waitingMain, wantPhase: v1.PodPending,
			wantInitialized: v1.ConditionFalse, wantMessage: "containers with incomplete status: [init]"},
		{name: "init failed, restart policy Never", policy: v1.RestartPolicyNever, init: failed, main: waitingMain, wantPhase: v1.PodFailed,
			wantInitialized: v1.ConditionFalse, wantMessage: "containers with incomplete status: [init]"},
		{name: "initialised", policy: v1.RestartPolicyAlways, init: completed, main: runningMain, wantPhase: v1.PodRunning, wantInitialized: v1.ConditionTrue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &v1.Pod{Spec: v1.PodSpec{RestartPolicy: tt.policy}}
			st := buildPodStatus(pod, statusInput{now: t0, sandboxReady: true, containers: []v1.ContainerStatus{tt.main}, initContainers: []v1.ContainerStatus{tt.init}})
			if st.Phase != tt.wantPhase {
				t.Errorf("phase %s, want %s", st.Phase, tt.wantPhase)
			}
			for _, c := range st.Conditions {
				if c.Type == v1.PodInitialized && (c.Status != tt.wantInitialized || c.Message != tt.wantMessage) {
					t.Errorf("Initialized %s %q, want %s %q", c.Status, c.Message, tt.wantInitialized, tt.wantMessage)
				}
			}
			if len(st.InitContainerStatuses) != 1 || st.InitContainerStatuses[0].Name != "init" {
				t.Errorf("init container statuses %+v", st.InitContainerStatuses)
			}
		})
	}
}

func TestWorkerInitContainers(t *testing.T) {
	tests := []struct {
		name   string
		policy v1.RestartPolicy
	}{
		{name: "restart policy Always: a failed init container runs again", policy: v1.RestartPolicyAlways},
		{name: "restart policy Never: a failed init container fails the pod", policy: v1.RestartPolicyNever},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t, false)
			pod := echoPod("init")
			pod.Spec.RestartPolicy = tt.policy
			pod.Spec.InitContainers = []v1.Container{
				{Name: "first", Image: "wsscale/echo:dev", Args: []string{"first"}},
				{Name: "second", Image: "wsscale/echo:dev", Args: []string{"second"}},
			}
			e.add(t, pod)
			arg := func(p *fakeProcess) string { return p.spec.Argv[len(p.spec.Argv)-1] }
			first := e.nextProcess(t)
			if arg(first) != "first" {
				t.Fatalf("first process %q, want the first init container", first.spec.Argv)
			}
			e.waitStatus(t, "init", "pending while the first init container runs", func(p *v1.Pod) bool {
				return p.Status.Phase == v1.PodPending && len(p.Status.InitContainerStatuses) == 2 &&
					p.Status.InitContainerStatuses[0].State.Running != nil &&
					p.Status.InitContainerStatuses[1].State.Waiting != nil &&
					containerStatus(p).State.Waiting != nil && containerStatus(p).State.Waiting.Reason == "PodInitializing"
			})
			first.exit(0)
			second := e.nextProcess(t)
			if arg(second) != "second" {
				t.Fatalf("second process %q, want the second init container", second.spec.Argv)
			}
			second.exit(1)
			if tt.policy == v1.RestartPolicyNever {
				got := e.waitStatus(t, "init", "failed", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodFailed })
				if s := containerStatus(got); s.State.Running != nil || s.RestartCount != 0 {
					t.Errorf("main container ran: %+v", s)
				}
				select {
				case p := <-e.rt.started:
					t.Errorf("process %q started after the init container failed", p.spec.Argv)
				default:
				}
				return
			}
			again := e.nextProcess(t) // the first restart is immediate
			if arg(again) != "second" {
				t.Fatalf("process %q, want the second init container again", again.spec.Argv)
			}
			again.exit(0)
			main := e.nextProcess(t)
			if arg(main) != "--drain-annotations-file=/etc/podinfo/annotations" {
				t.Fatalf("process %q, want the main container", main.spec.Argv)
			}
			got := e.waitStatus(t, "init", "running and initialised", func(p *v1.Pod) bool {
				return p.Status.Phase == v1.PodRunning && podReady(p)
			})
			if rc := got.Status.InitContainerStatuses[1].RestartCount; rc != 1 {
				t.Errorf("second init container restarts %d, want 1", rc)
			}
		})
	}
}

func TestWorkerPostStartHook(t *testing.T) {
	tests := []struct {
		name     string
		code     int
		wantKill bool
	}{
		{name: "succeeds: the container becomes ready", code: 0},
		{name: "fails: the container is killed and restarted", code: 1, wantKill: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t, false)
			cmds := &fakeCommands{code: tt.code, out: "hook output"}
			e.agent.commands = cmds
			pod := echoPod("hook")
			pod.Spec.Containers[0].Lifecycle = &v1.Lifecycle{PostStart: &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{"/bin/touch", "/tmp/started"}}}}
			e.add(t, pod)
			p := e.nextProcess(t)
			if !tt.wantKill {
				e.waitStatus(t, "hook", "ready", podReady)
				if cmds.calls() != 1 || cmds.targets[0].pid != p.pid() {
					t.Errorf("hook ran %v in %+v", cmds.ran, cmds.targets)
				}
				return
			}
			got := e.waitStatus(t, "hook", "restarted", func(p *v1.Pod) bool { return containerStatus(p).RestartCount == 1 })
			if sigs := p.receivedSignals(); len(sigs) == 0 || sigs[0] != syscall.SIGTERM {
				t.Errorf("signals %v, want SIGTERM", sigs)
			}
			if last := containerStatus(got).LastTerminationState.Terminated; last == nil || last.Message != "FailedPostStartHook" {
				t.Errorf("last state %+v", last)
			}
		})
	}
}

func TestWorkerDownwardAPIDelay(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("downward")
	pod.Labels = map[string]string{"app": "echo"}
	pod.Spec.Volumes = []v1.Volume{{Name: "podinfo", VolumeSource: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{
		Items: []v1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels"}}},
	}}}}
	e.add(t, pod)
	e.nextProcess(t)
	e.waitStatus(t, "downward", "ready", podReady)
	file := filepath.Join(e.agent.opts.StateDir, "pods", string(pod.UID), "volumes", "podinfo", "labels")
	read := func() string { b, _ := os.ReadFile(file); return string(b) }
	if got := read(); got != `app="echo"` {
		t.Fatalf("labels file %q", got)
	}
	cur, err := e.client.CoreV1().Pods("ns").Get(context.Background(), "downward", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Labels["wsscale.io/drain"] = "true"
	e.update(t, cur)
	want := `app="echo"` + "\n" + `wsscale.io/drain="true"`
	// The update schedules the write DefaultDownwardAPISyncDelay after its arrival.
	e.stepWhenWaiting(t, DefaultDownwardAPISyncDelay-time.Second)
	if got := read(); got != `app="echo"` {
		t.Fatalf("labels file %q before the sync delay passed", got)
	}
	// The worker may take the update only after the first step (it was already waiting when the
	// update came): a second full delay makes the write due in either case.
	e.stepWhenWaiting(t, DefaultDownwardAPISyncDelay)
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return read() == want, nil
	}); err != nil {
		t.Fatalf("labels file %q after the sync delay, want %q", read(), want)
	}
}

func TestWorkerSidecarInitContainer(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("sidecar")
	pod.Spec.RestartPolicy = v1.RestartPolicyNever
	pod.Spec.InitContainers = []v1.Container{
		{Name: "proxy", Image: "wsscale/echo:dev", Args: []string{"proxy"}, RestartPolicy: ptr.To(v1.ContainerRestartPolicyAlways)},
		{Name: "migrate", Image: "wsscale/echo:dev", Args: []string{"migrate"}},
	}
	e.add(t, pod)
	arg := func(p *fakeProcess) string { return p.spec.Argv[len(p.spec.Argv)-1] }
	proxy := e.nextProcess(t)
	if arg(proxy) != "proxy" {
		t.Fatalf("first process %q, want the sidecar", proxy.spec.Argv)
	}
	// The sidecar has started: the next init container runs while it keeps running.
	migrate := e.nextProcess(t)
	if arg(migrate) != "migrate" {
		t.Fatalf("second process %q, want the second init container", migrate.spec.Argv)
	}
	migrate.exit(0)
	if main := e.nextProcess(t); arg(main) != "--drain-annotations-file=/etc/podinfo/annotations" {
		t.Fatalf("process %q, want the main container", main.spec.Argv)
	}
	got := e.waitStatus(t, "sidecar", "ready", podReady)
	if s := got.Status.InitContainerStatuses[0]; s.State.Running == nil || !s.Ready {
		t.Errorf("sidecar status %+v, want running and ready", s)
	}
	// A sidecar restarts whatever the pod's restart policy, and the pod stays initialised.
	proxy.exit(1)
	if again := e.nextProcess(t); arg(again) != "proxy" {
		t.Fatalf("process %q, want the sidecar again", again.spec.Argv)
	}
	got = e.waitStatus(t, "sidecar", "sidecar restarted", func(p *v1.Pod) bool {
		return p.Status.InitContainerStatuses[0].RestartCount == 1 && podReady(p)
	})
	for _, c := range got.Status.Conditions {
		if c.Type == v1.PodInitialized && c.Status != v1.ConditionTrue {
			t.Errorf("Initialized %s after the sidecar restarted", c.Status)
		}
	}
}

func TestWorkerStartupProbe(t *testing.T) {
	e := newTestEnv(t, false)
	pod := echoPod("slow")
	pod.Spec.Containers[0].StartupProbe = &v1.Probe{PeriodSeconds: 1, FailureThreshold: 30, ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"/bin/cat", "/tmp/started"}}}}
	pod.Spec.Containers[0].LivenessProbe = &v1.Probe{PeriodSeconds: 5, ProbeHandler: v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Port: intstr.FromInt32(8080)}}}
	e.prober.set(livenessProbe, true)
	rec := &fakeRecorder{}
	e.agent.recorder = rec
	e.add(t, pod)
	e.nextProcess(t)
	// Until the startup probe passes, the container is not started, not ready, and its
	// liveness probe does not run.
	rec.waitEvent(t, recordedEvent{"spec.containers{echo}", v1.EventTypeWarning, "Unhealthy", "Startup probe failed: probe says no"})
	got := e.waitStatus(t, "slow", "running, not started", func(p *v1.Pod) bool { return containerStatus(p).State.Running != nil })
	if s := containerStatus(got); *s.Started || s.Ready {
		t.Errorf("status before the startup probe passed: %+v", s)
	}
	e.prober.set(startupProbe, true)
	e.stepUntil(t, "slow", "started and ready", time.Second, func(p *v1.Pod) bool {
		s := containerStatus(p)
		return s.Started != nil && *s.Started && s.Ready
	})
	for _, ev := range rec.all() {
		if ev.reason == "Unhealthy" && strings.HasPrefix(ev.message, "Liveness") {
			t.Errorf("liveness probe failed: %s", ev)
		}
	}
}

func TestNsenterRunner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nsenter needs root")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("no nsenter")
	}
	// This process's own namespaces stand in for a container's.
	self := execTarget{pid: os.Getpid(), env: []string{"PROBE_MARKER=from-the-container"}, uid: ptr.To[int64](1234), gid: ptr.To[int64](1234), workDir: "/tmp"}
	tests := []struct {
		name     string
		argv     []string
		timeout  time.Duration
		wantOut  string
		wantCode int
		wantErr  error
	}{
		{name: "environment, identity and working directory", argv: []string{"/bin/sh", "-c", `echo "$PROBE_MARKER $(id -u):$(id -g) $(pwd)"`}, timeout: 10 * time.Second,
			wantOut: "from-the-container 1234:1234 /tmp\n"},
		{name: "exit code", argv: []string{"/bin/sh", "-c", "exit 3"}, timeout: 10 * time.Second, wantCode: 3},
		{name: "killed at the timeout", argv: []string{"/bin/sleep", "30"}, timeout: 300 * time.Millisecond, wantCode: -1, wantErr: errExecTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			out, code, err := nsenterRunner{nsenter: "nsenter"}.run(ctx, self, tt.argv)
			if string(out) != tt.wantOut || code != tt.wantCode || !errors.Is(err, tt.wantErr) {
				t.Errorf("got (%q, %d, %v), want (%q, %d, %v)", out, code, err, tt.wantOut, tt.wantCode, tt.wantErr)
			}
		})
	}
}
