package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/test/e2e/framework"
)

// testhostGRPCPort is where a wsscale/testhost pod started with --grpc-port serves grpc.health.v1.
const testhostGRPCPort = 9090

// testhostContainer is a wsscale/testhost container serving on testhostPort (and gRPC health on
// testhostGRPCPort).
func testhostContainer(name string) corev1.Container {
	return corev1.Container{
		Name:  name,
		Image: "wsscale/testhost:dev",
		Args:  []string{"serve", "--port", fmt.Sprint(testhostPort), "--grpc-port", fmt.Sprint(testhostGRPCPort)},
	}
}

func getPod(ctx context.Context, client kubernetes.Interface, ns, name string) (*corev1.Pod, string) {
	p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err.Error()
	}
	return p, fmt.Sprintf("phase %s conditions %s containers %s init %s", p.Status.Phase, conditionsText(p), statusesText(p.Status.ContainerStatuses), statusesText(p.Status.InitContainerStatuses))
}

func conditionsText(p *corev1.Pod) string {
	var parts []string
	for _, c := range p.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s", c.Type, c.Status))
	}
	return strings.Join(parts, ",")
}

func statusesText(statuses []corev1.ContainerStatus) string {
	var parts []string
	for _, cs := range statuses {
		s := fmt.Sprintf("%s(ready=%t restarts=%d", cs.Name, cs.Ready, cs.RestartCount)
		switch {
		case cs.State.Running != nil:
			s += " running"
		case cs.State.Waiting != nil:
			s += " waiting " + cs.State.Waiting.Reason
		case cs.State.Terminated != nil:
			s += fmt.Sprintf(" terminated %s %d", cs.State.Terminated.Reason, cs.State.Terminated.ExitCode)
		}
		parts = append(parts, s+")")
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

// TestExecAndGRPCProbes runs probes the way charts write them: an exec readiness probe with a
// command from the node's filesystem, run in the container's mount namespace (it reads the pod's
// /tmp emptyDir) with the container's uid and environment, and a gRPC liveness probe against
// grpc.health.v1. The pod is not Ready until the file the exec probe reads exists, and a
// NOT_SERVING answer restarts the container.
func TestExecAndGRPCProbes(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const ns = "node-probes"
	createNamespace(ctx, t, client, ns)
	ctr := testhostContainer("testhost")
	ctr.Env = []corev1.EnvVar{{Name: "PROBE_MARKER", Value: "from-the-container"}}
	ctr.VolumeMounts = []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
	ctr.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1, ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
		Command: []string{"/bin/sh", "-c", `test "$PROBE_MARKER" = from-the-container && test "$(id -u)" = 1234 && /bin/cat /tmp/ready`},
	}}}
	ctr.LivenessProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 2, ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: testhostGRPCPort}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probes"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			SecurityContext:               &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1234), RunAsGroup: ptr.To[int64](1234)},
			Containers:                    []corev1.Container{ctr},
			Volumes:                       []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}))

	// Running with an IP, and the exec probe has had several periods to (wrongly) pass.
	var ip string
	poll(ctx, t, "container running", 90*time.Second, func() (bool, string) {
		p, state := getPod(ctx, client, ns, pod.Name)
		if p == nil || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Running == nil || p.Status.PodIP == "" {
			return false, state
		}
		ip = p.Status.PodIP
		return true, state
	})
	th := testhostClient{c: c, ip: ip}
	th.get(ctx, t, "/healthz")
	time.Sleep(4 * time.Second)
	if p, state := getPod(ctx, client, ns, pod.Name); p == nil || podCondition(p, corev1.PodReady) == corev1.ConditionTrue {
		t.Fatalf("pod Ready although its exec readiness probe reads a file that does not exist: %s", state)
	}
	if got := th.get(ctx, t, "/write", "path", "/tmp/ready", "data", "yes"); got != "ok" {
		t.Fatalf("write /tmp/ready: %q", got)
	}
	waitPodReady(ctx, t, client, ns, pod.Name)

	th.get(ctx, t, "/grpc-health", "status", "NOT_SERVING")
	poll(ctx, t, "restart after the gRPC liveness probe failed", 60*time.Second, func() (bool, string) {
		p, state := getPod(ctx, client, ns, pod.Name)
		if p == nil || len(p.Status.ContainerStatuses) == 0 {
			return false, state
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount >= 1, state
	})
}

// TestExecLifecycleHooks runs exec postStart and preStop hooks in the container's namespaces:
// postStart writes into the pod's /tmp, preStop into a hostPath the test reads after the pod
// is gone. A failing postStart hook kills the container, which restarts, as the kubelet does.
func TestExecLifecycleHooks(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const ns = "node-hooks"
	createNamespace(ctx, t, client, ns)
	hostDir, err := os.MkdirTemp("", "wsscale-e2e-hooks-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hostDir) })
	if err := os.Chmod(hostDir, 0o777); err != nil {
		t.Fatal(err)
	}

	ctr := testhostContainer("testhost")
	ctr.VolumeMounts = []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}, {Name: "hooks", MountPath: "/hooks"}}
	ctr.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(testhostPort)},
	}}
	ctr.Lifecycle = &corev1.Lifecycle{
		PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/sh", "-c", "echo started > /tmp/poststart"}}},
		PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/sh", "-c", "echo stopping > /hooks/prestop"}}},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hooks"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers:                    []corev1.Container{ctr},
			Volumes: []corev1.Volume{
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "hooks", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}},
			},
		},
	}
	created := must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}))
	ip := waitPodReady(ctx, t, client, ns, pod.Name)
	th := testhostClient{c: c, ip: ip}
	if got := th.get(ctx, t, "/cat", "path", "/tmp/poststart"); got != "started\n" {
		t.Errorf("file written by the postStart hook: %q, want %q", got, "started\n")
	}
	must[struct{}](t, "delete pod")(struct{}{}, client.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}))
	waitPodGone(ctx, t, client, ns, pod.Name, created.UID)
	data, err := os.ReadFile(filepath.Join(hostDir, "prestop"))
	if err != nil || string(data) != "stopping\n" {
		t.Errorf("file written by the preStop hook: %q, %v; want %q", data, err, "stopping\n")
	}

	failing := testhostContainer("testhost")
	failing.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/false"}}}}
	bad := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "failing-poststart"},
		Spec:       corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{failing}},
	}
	must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, bad, metav1.CreateOptions{}))
	poll(ctx, t, "container killed by its failing postStart hook", 60*time.Second, func() (bool, string) {
		p, state := getPod(ctx, client, ns, bad.Name)
		if p == nil || len(p.Status.ContainerStatuses) == 0 {
			return false, state
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount >= 1 && !cs.Ready, state
	})
}

func waitPodGone(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name string, uid types.UID) {
	t.Helper()
	poll(ctx, t, "pod "+ns+"/"+name+" gone", 60*time.Second, func() (bool, string) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return strings.Contains(err.Error(), "not found"), err.Error()
		}
		return p.UID != uid, "still there: " + string(p.Status.Phase)
	})
}

// TestInitContainers runs init containers as the kubelet does: in order, each to completion
// before the next, while the pod is Pending with Initialized False; a failing one is
// restarted until it succeeds (restartPolicy Always), or fails the pod (restartPolicy Never).
func TestInitContainers(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const ns = "node-init"
	createNamespace(ctx, t, client, ns)
	step := func(name string, args ...string) corev1.Container {
		return corev1.Container{
			Name: name, Image: "wsscale/testhost:dev", Args: append([]string{"step"}, args...),
			VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
		}
	}
	main := testhostContainer("main")
	main.VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	main.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(testhostPort)},
	}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "init"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			InitContainers: []corev1.Container{
				step("first", "--append", "/data/order=first", "--sleep", "3s"),
				// Fails its first run: restarted, then completes.
				step("second", "--append", "/data/order=second", "--once", "/data/second-tried"),
			},
			Containers: []corev1.Container{main},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}))
	poll(ctx, t, "first init container running, pod Pending and not Initialized", 60*time.Second, func() (bool, string) {
		p, state := getPod(ctx, client, ns, pod.Name)
		if p == nil || len(p.Status.InitContainerStatuses) != 2 {
			return false, state
		}
		first := p.Status.InitContainerStatuses[0]
		return first.State.Running != nil && p.Status.Phase == corev1.PodPending &&
			podCondition(p, corev1.PodInitialized) == corev1.ConditionFalse &&
			len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			p.Status.ContainerStatuses[0].State.Waiting.Reason == "PodInitializing", state
	})
	ip := waitPodReady(ctx, t, client, ns, pod.Name)
	p, state := getPod(ctx, client, ns, pod.Name)
	if p == nil || podCondition(p, corev1.PodInitialized) != corev1.ConditionTrue {
		t.Fatalf("ready pod not Initialized: %s", state)
	}
	for i, want := range []int32{0, 1} {
		st := p.Status.InitContainerStatuses[i]
		if st.State.Terminated == nil || st.State.Terminated.Reason != "Completed" || st.RestartCount != want {
			t.Errorf("init container %s: %s, want Completed with %d restarts", st.Name, statusesText([]corev1.ContainerStatus{st}), want)
		}
	}
	th := testhostClient{c: c, ip: ip}
	// The second ran twice; nothing of it ran before the first had finished.
	if got := th.get(ctx, t, "/cat", "path", "/data/order"); got != "first\nsecond\nsecond\n" {
		t.Errorf("order the init containers ran in: %q", got)
	}

	never := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "init-never"},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			InitContainers:                []corev1.Container{step("fails", "--exit", "3")},
			Containers:                    []corev1.Container{main},
			Volumes:                       pod.Spec.Volumes,
		},
	}
	must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, never, metav1.CreateOptions{}))
	poll(ctx, t, "pod Failed by its init container", 60*time.Second, func() (bool, string) {
		p, state := getPod(ctx, client, ns, never.Name)
		if p == nil || len(p.Status.InitContainerStatuses) != 1 {
			return false, state
		}
		st := p.Status.InitContainerStatuses[0]
		return p.Status.Phase == corev1.PodFailed && st.State.Terminated != nil && st.State.Terminated.ExitCode == 3 &&
			p.Status.ContainerStatuses[0].State.Running == nil && p.Status.ContainerStatuses[0].RestartCount == 0, state
	})
}

// TestDownwardAPIUpdateDelay changes a label shown in a downwardAPI volume: as on a kubelet,
// the file changes seconds later (the next pod sync), not at once, so code watching it (the
// echo server's drain label) meets real timing.
func TestDownwardAPIUpdateDelay(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "node-downward"
	createNamespace(ctx, t, client, ns)
	ctr := testhostContainer("testhost")
	ctr.VolumeMounts = []corev1.VolumeMount{{Name: "podinfo", MountPath: "/etc/podinfo"}}
	ctr.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(testhostPort)},
	}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "downward", Labels: map[string]string{"app": "downward"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers:                    []corev1.Container{ctr},
			Volumes: []corev1.Volume{{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
				Items: []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}},
			}}}},
		},
	}
	must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}))
	th := testhostClient{c: c, ip: waitPodReady(ctx, t, client, ns, pod.Name)}
	if got := th.get(ctx, t, "/cat", "path", "/etc/podinfo/labels"); got != `app="downward"` {
		t.Fatalf("labels file: %q", got)
	}
	patch := []byte(`{"metadata":{"labels":{"wsscale.io/drain":"true"}}}`)
	must[*corev1.Pod](t, "label pod")(client.CoreV1().Pods(ns).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}))
	patched := time.Now()
	time.Sleep(700 * time.Millisecond)
	if got := th.get(ctx, t, "/cat", "path", "/etc/podinfo/labels"); got != `app="downward"` {
		t.Errorf("labels file %v after the label change: %q, want the old labels (a kubelet updates them at its next sync)", time.Since(patched).Round(time.Millisecond), got)
	}
	created, _ := getPod(ctx, client, ns, pod.Name)
	poll(ctx, t, "labels file updated", 30*time.Second, func() (bool, string) {
		got, _ := th.try(ctx, "/cat", "path", "/etc/podinfo/labels")
		onNode := ""
		if created != nil {
			// What the node wrote, to tell a missed update from a broken mount.
			dir := filepath.Join(c.StateDir(), "node", "pods", string(created.UID), "volumes", "podinfo")
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				onNode += " " + e.Name()
			}
			data, err := os.ReadFile(filepath.Join(dir, "labels"))
			onNode += fmt.Sprintf("; labels on the node: %q %v", data, err)
		}
		return strings.Contains(got, `wsscale.io/drain="true"`), fmt.Sprintf("%q after %v; volume on the node:%s", got, time.Since(patched).Round(time.Millisecond), onNode)
	})
}

// TestSidecarInitContainer runs a sidecar as Kubernetes defines it: an init container with
// restartPolicy Always starts first and keeps running; the init containers after it and the
// regular containers start once it has started, share its network namespace and count its
// readiness.
func TestSidecarInitContainer(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "node-sidecar"
	const sidecarPort = 8081
	createNamespace(ctx, t, client, ns)
	sidecar := corev1.Container{
		Name: "sidecar", Image: "wsscale/testhost:dev", Args: []string{"serve", "--port", fmt.Sprint(sidecarPort)},
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(sidecarPort)},
		}},
	}
	main := testhostContainer("main")
	main.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(testhostPort)},
	}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sidecar"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			InitContainers: []corev1.Container{
				sidecar,
				{Name: "step", Image: "wsscale/testhost:dev", Args: []string{"step", "--sleep", "1s"}},
			},
			Containers: []corev1.Container{main},
		},
	}
	must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}))
	th := testhostClient{c: c, ip: waitPodReady(ctx, t, client, ns, pod.Name)}
	p, state := getPod(ctx, client, ns, pod.Name)
	if p == nil || len(p.Status.InitContainerStatuses) != 2 {
		t.Fatalf("pod: %s", state)
	}
	if s := p.Status.InitContainerStatuses[0]; s.State.Running == nil || !s.Ready {
		t.Errorf("sidecar: %s, want running and ready", state)
	}
	if s := p.Status.InitContainerStatuses[1]; s.State.Terminated == nil || s.State.Terminated.Reason != "Completed" {
		t.Errorf("init container after the sidecar: %s, want Completed", state)
	}
	if got := th.get(ctx, t, "/fetch", "url", fmt.Sprintf("http://127.0.0.1:%d/healthz", sidecarPort)); got != "ok" {
		t.Errorf("the sidecar from the main container over localhost: %q", got)
	}
}
