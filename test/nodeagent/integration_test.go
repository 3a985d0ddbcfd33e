package nodeagent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// inNetnsEnv marks the copy of the test binary that runs inside a private network and
// mount namespace created for the integration test.
const inNetnsEnv = "NODEAGENT_TEST_IN_NETNS"

const (
	testNodeIP  = "198.18.0.1"
	testNode2IP = "198.18.0.2"
)

// reexecInPrivateNamespaces runs the calling test again inside `unshare --net --mount`
// and reports whether the caller is that inner copy.
func reexecInPrivateNamespaces(t *testing.T) bool {
	t.Helper()
	if os.Getenv(inNetnsEnv) != "" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network and mount namespaces")
	}
	for _, tool := range []string{"unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--mount", "--propagation", "private", "--",
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("inner test output:\n%s", out)
	if err != nil {
		t.Fatalf("inner test in private namespaces failed: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("inner test did not pass")
	}
	return false
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func testPod(name string, labels map[string]string, mode string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "default", UID: k8stypes.UID("uid-" + name), Labels: labels,
			Annotations: map[string]string{"wsscale.io/drain": "false"},
		},
		Spec: v1.PodSpec{
			NodeName:                      "node-a",
			RestartPolicy:                 v1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			ServiceAccountName:            "default",
			Containers: []v1.Container{{
				Name:    "server",
				Image:   "test/server:v1",
				Command: []string{"/server", "--from-command"},
				Args:    []string{"--name=$(POD_NAME)"},
				Env: []v1.EnvVar{
					{Name: testServerEnv, Value: mode},
					{Name: "POD_NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "GREETING", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{
						LocalObjectReference: v1.LocalObjectReference{Name: "app-config"}, Key: "greeting"}}},
				},
				Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &v1.Probe{
					ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
					PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: 3, SuccessThreshold: 1,
				},
				LivenessProbe: &v1.Probe{
					ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: 3,
				},
				VolumeMounts: []v1.VolumeMount{
					{Name: "podinfo", MountPath: "/etc/podinfo", ReadOnly: true},
					{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
					{Name: "scratch", MountPath: "/scratch"},
				},
			}},
			Volumes: []v1.Volume{
				{Name: "podinfo", VolumeSource: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{Items: []v1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
					{Path: "annotations", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
				}}}},
				{Name: "kube-api-access", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{
					DefaultMode: ptr.To[int32](0o644),
					Sources: []v1.VolumeProjection{
						{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
						{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"},
							Items: []v1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
						{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{
							{Path: "namespace", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
					},
				}}},
				{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
			},
		},
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond()
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestPodsRunInOwnNamespaces runs real pod processes, each in its own network and mount
// namespace behind a veth pair, inside a network namespace private to the test.
func TestPodsRunInOwnNamespaces(t *testing.T) {
	if !reexecInPrivateNamespaces(t) {
		return
	}
	mustRun(t, "ip", "link", "set", "lo", "up")
	mustRun(t, "ip", "addr", "add", testNodeIP+"/32", "dev", "lo")
	mustRun(t, "ip", "addr", "add", testNode2IP+"/32", "dev", "lo")

	// Stands in for the API server port that pods must reach at NodeIP.
	apiLn, err := net.Listen("tcp", testNodeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer apiLn.Close()
	go func() {
		for {
			c, err := apiLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	apiPort := apiLn.Addr().(*net.TCPAddr).Port

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const saMountPoint = "/var/run/secrets/kubernetes.io/serviceaccount"
	_, statErr := os.Stat(saMountPoint)
	saMountPointExisted := statErr == nil

	client := fake.NewClientset(
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "default"}, Data: map[string]string{"ca.crt": "test-ca"}},
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app-config", Namespace: "default"}, Data: map[string]string{"greeting": "hello"}},
	)
	client.PrependReactor("create", "serviceaccounts", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "token" {
			return false, nil, nil
		}
		return true, &authenticationv1.TokenRequest{Status: authenticationv1.TokenRequestStatus{
			Token: "test-token", ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Hour)),
		}}, nil
	})
	stateDir := t.TempDir()
	agent, err := New(Options{
		Client:               client,
		NodeName:             "node-a",
		NodeIP:               testNodeIP,
		APIServerPort:        apiPort,
		PodCIDR:              "198.18.1.0/24",
		Images:               map[string]string{"test/server": self},
		StateDir:             stateDir,
		CrashLoopBackOffBase: 200 * time.Millisecond,
		CrashLoopBackOffMax:  time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A second node in the same process.
	stateDir2 := t.TempDir()
	agent2, err := New(Options{
		Client: client, NodeName: "node-b", NodeIP: testNode2IP, APIServerPort: apiPort, PodCIDR: "198.18.2.0/24",
		Images: map[string]string{"test/server": self}, StateDir: stateDir2,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 2)
	go func() { runErr <- agent.Run(ctx) }()
	go func() { runErr <- agent2.Run(ctx) }()
	stopped := false
	t.Cleanup(func() {
		// On failure, still stop the pods before the state dirs are removed.
		if !stopped {
			cancel()
			<-runErr
			<-runErr
		}
	})

	pods := client.CoreV1().Pods("default")
	podOnNodeB := testPod("pod-c", map[string]string{"app": "echo"}, "serve")
	podOnNodeB.Spec.NodeName = "node-b"
	for _, p := range []*v1.Pod{
		testPod("pod-a", map[string]string{"app": "echo"}, "serve"),
		testPod("pod-b", map[string]string{"app": "echo"}, "serve"),
		testPod("pod-crash", nil, "crash"),
		podOnNodeB,
	} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	podIPs := map[string]string{}
	for _, name := range []string{"pod-a", "pod-b", "pod-c"} {
		waitFor(t, name+" ready", 60*time.Second, func() (bool, error) {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range p.Status.Conditions {
				if c.Type == v1.PodReady && c.Status == v1.ConditionTrue {
					podIPs[name] = p.Status.PodIP
					return p.Status.Phase == v1.PodRunning, nil
				}
			}
			return false, nil
		})
	}
	t.Logf("pod IPs: %v", podIPs)
	if podIPs["pod-a"] == podIPs["pod-b"] {
		t.Fatalf("pods share IP %s", podIPs["pod-a"])
	}
	if !strings.HasPrefix(podIPs["pod-c"], "198.18.2.") {
		t.Fatalf("pod-c on node-b got %s, want an address of node-b's pod CIDR", podIPs["pod-c"])
	}
	if p, _ := pods.Get(ctx, "pod-c", metav1.GetOptions{}); p.Status.HostIP != testNode2IP {
		t.Errorf("pod-c host IP %s", p.Status.HostIP)
	}
	podC := podIPs["pod-c"]
	delete(podIPs, "pod-c")

	// Both pods listen on :8080 in their own namespace and are reached at their own IP.
	for name, ip := range podIPs {
		code, body := httpGet(t, "http://"+ip+":8080/info")
		if code != http.StatusOK {
			t.Fatalf("%s /info: %d %s", name, code, body)
		}
		var info struct {
			Hostname string
			Env      map[string]string
			Args     []string
		}
		if err := json.Unmarshal([]byte(body), &info); err != nil {
			t.Fatalf("%s /info: %v: %s", name, err, body)
		}
		if info.Hostname != name {
			t.Errorf("%s: hostname %q", name, info.Hostname)
		}
		wantEnv := map[string]string{
			"POD_IP": ip, "POD_NAME": name, "GREETING": "hello", "HOSTNAME": name,
			"KUBERNETES_SERVICE_HOST": testNodeIP, "KUBERNETES_SERVICE_PORT": strconv.Itoa(apiPort),
		}
		for k, v := range wantEnv {
			if info.Env[k] != v {
				t.Errorf("%s: env %s=%q, want %q", name, k, info.Env[k], v)
			}
		}
		if want := []string{"--from-command", "--name=" + name}; strings.Join(info.Args, " ") != strings.Join(want, " ") {
			t.Errorf("%s: args %q, want %q", name, info.Args, want)
		}
		for path, want := range map[string]string{
			saMountPoint + "/token":     "test-token",
			saMountPoint + "/ca.crt":    "test-ca",
			saMountPoint + "/namespace": "default",
			"/etc/podinfo/labels":       `app="echo"`,
			"/etc/podinfo/annotations":  `wsscale.io/drain="false"`,
		} {
			if code, body := httpGet(t, "http://"+ip+":8080/file?path="+path); code != http.StatusOK || body != want {
				t.Errorf("%s: %s = %d %q, want %q", name, path, code, body, want)
			}
		}
	}
	// The mounts exist only inside the pods.
	if _, err := os.Stat(saMountPoint + "/token"); err == nil {
		t.Errorf("%s/token is visible outside the pods", saMountPoint)
	}
	// Pod to pod (on the same node and across nodes), and pod to the API server port.
	for _, addr := range []string{podIPs["pod-b"] + ":8080", podC + ":8080", net.JoinHostPort(testNodeIP, strconv.Itoa(apiPort))} {
		if code, body := httpGet(t, "http://"+podIPs["pod-a"]+":8080/dial?addr="+addr); code != http.StatusOK {
			t.Errorf("pod-a cannot reach %s: %d %s", addr, code, body)
		}
	}
	if code, body := httpGet(t, "http://"+podC+":8080/dial?addr="+podIPs["pod-a"]+":8080"); code != http.StatusOK {
		t.Errorf("pod-c cannot reach pod-a: %d %s", code, body)
	}

	// The downward API file changes in place when the annotation changes.
	p, err := pods.Get(ctx, "pod-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Annotations["wsscale.io/drain"] = "true"
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "drain annotation in pod-a", 10*time.Second, func() (bool, error) {
		_, body := httpGet(t, "http://"+podIPs["pod-a"]+":8080/file?path=/etc/podinfo/annotations")
		return body == `wsscale.io/drain="true"`, nil
	})
	if _, body := httpGet(t, "http://"+podIPs["pod-b"]+":8080/file?path=/etc/podinfo/annotations"); body != `wsscale.io/drain="false"` {
		t.Errorf("pod-b annotations changed: %q", body)
	}

	// A crashing container is restarted with back-off.
	waitFor(t, "pod-crash in CrashLoopBackOff", 30*time.Second, func() (bool, error) {
		p, err := pods.Get(ctx, "pod-crash", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) != 1 {
			return false, err
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount >= 2 && cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" &&
			cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.ExitCode == 3, nil
	})

	// Graceful deletion: SIGTERM, then the pod is finalised with grace period 0.
	p, err = pods.Get(ctx, "pod-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	p.DeletionTimestamp = &now
	p.DeletionGracePeriodSeconds = ptr.To[int64](5)
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pod-a finalised", 20*time.Second, func() (bool, error) {
		_, err := pods.Get(ctx, "pod-a", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	logDir := filepath.Join(stateDir, "logs", "default_pod-a_"+string(p.UID), "server")
	logData, err := os.ReadFile(filepath.Join(logDir, "0.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logData, []byte("received SIGTERM")) || !bytes.Contains(logData, []byte("test server stopped")) {
		t.Errorf("pod-a log lacks a graceful stop:\n%s", logData)
	}
	if links := mustRun(t, "ip", "-o", "link", "show"); strings.Contains(links, hostVethName(string(p.UID))) {
		t.Errorf("veth of pod-a still present:\n%s", links)
	}
	if code, _ := httpGet(t, "http://"+podIPs["pod-b"]+":8080/healthz"); code != http.StatusOK {
		t.Errorf("pod-b not serving after pod-a's deletion")
	}

	// Shutdown stops the remaining pods and removes everything it created.
	cancel()
	stopped = true
	for range 2 {
		select {
		case err := <-runErr:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	if n := agent.workerCount() + agent2.workerCount(); n != 0 {
		t.Errorf("%d pod workers left", n)
	}
	if links := mustRun(t, "ip", "-o", "link", "show"); strings.Contains(links, "wsp") {
		t.Errorf("veths left behind:\n%s", links)
	}
	if routes := mustRun(t, "ip", "route", "show"); strings.TrimSpace(routes) != "" {
		t.Errorf("routes left behind:\n%s", routes)
	}
	for _, dir := range []string{stateDir, stateDir2} {
		if entries, _ := os.ReadDir(filepath.Join(dir, "netns")); len(entries) != 0 {
			t.Errorf("network namespace files left: %v", entries)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "pods")); len(entries) != 0 {
			t.Errorf("pod directories left: %v", entries)
		}
	}
	if _, err := os.Stat(saMountPoint); (err == nil) != saMountPointExisted {
		t.Errorf("mount point %s: existed before %v, exists after %v", saMountPoint, saMountPointExisted, err == nil)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(stateDir)) || bytes.Contains(mi, []byte(stateDir2)) {
		t.Errorf("mounts under the state dir left:\n%s", mi)
	}
	fmt.Fprintln(os.Stderr, "pod-b log:", readLog(stateDir, "pod-b"))
}

func readLog(stateDir, pod string) string {
	matches, _ := filepath.Glob(filepath.Join(stateDir, "logs", "default_"+pod+"_*", "server", "*.log"))
	var b strings.Builder
	for _, m := range matches {
		data, _ := os.ReadFile(m)
		b.Write(data)
	}
	return b.String()
}
