package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

// testhostPort is where the wsscale/testhost image serves what its pod sees.
const testhostPort = 8080

// TestVolumesMountAtAnyPath mounts volumes where charts put them: an emptyDir at /tmp (above
// the node's state directory, where the other volumes' sources live), one at /var (above the
// service-account token's mount point), one inside another volume, and a configMap, all next
// to the service-account token. Each must be visible, with its content, from inside the pod,
// and nothing written to the pod's /tmp may reach the host's.
func TestVolumesMountAtAnyPath(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "node-volumes"
	must[*corev1.Namespace](t, "namespace")(client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	must[*corev1.ConfigMap](t, "configmap")(client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data:       map[string]string{"greeting": "hello from a configMap"},
	}, metav1.CreateOptions{}))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "volumes"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers: []corev1.Container{{
				Name:  "testhost",
				Image: "wsscale/testhost:dev",
				Args:  []string{"serve", "--port", fmt.Sprint(testhostPort)},
				// The order is the one that broke: /tmp first hid every later volume's source.
				VolumeMounts: []corev1.VolumeMount{
					{Name: "tmp", MountPath: "/tmp"},
					{Name: "nested", MountPath: "/tmp/certs/inner"},
					{Name: "var", MountPath: "/var"},
					{Name: "settings", MountPath: "/etc/testhost", ReadOnly: true},
				},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(testhostPort)},
				}},
			}},
			Volumes: []corev1.Volume{
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "nested", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "var", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "settings", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "settings"},
				}}},
			},
		},
	}
	must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}))
	ip := waitPodReady(ctx, t, client, ns, pod.Name)
	th := testhostClient{c: c, ip: ip}

	token := th.get(ctx, t, "/cat", "path", "/var/run/secrets/kubernetes.io/serviceaccount/token")
	if strings.Count(token, ".") != 2 {
		t.Errorf("service-account token under the /var emptyDir: got %q, want a JWT", token)
	}
	if ns := th.get(ctx, t, "/cat", "path", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"); ns != "node-volumes" {
		t.Errorf("service-account namespace file: got %q", ns)
	}
	if got := th.get(ctx, t, "/cat", "path", "/etc/testhost/greeting"); got != "hello from a configMap" {
		t.Errorf("configMap file: got %q", got)
	}
	marker := fmt.Sprintf("wsscale-e2e-volume-%d", time.Now().UnixNano())
	for _, dir := range []string{"/tmp", "/tmp/certs/inner", "/var"} {
		path := dir + "/" + marker
		if got := th.get(ctx, t, "/write", "path", path, "data", dir); got != "ok" {
			t.Fatalf("write %s in the pod: %q", path, got)
		}
		if got := th.get(ctx, t, "/cat", "path", path); got != dir {
			t.Errorf("read back %s: got %q, want %q", path, got, dir)
		}
	}
	if _, err := os.Stat("/tmp/" + marker); !os.IsNotExist(err) {
		t.Errorf("a file written to the pod's /tmp emptyDir appeared on the host (%v)", err)
	}
	if got, code := th.try(ctx, "/write", "path", "/etc/testhost/new", "data", "x"); code == http.StatusOK {
		t.Errorf("write into the read-only configMap mount succeeded: %q", got)
	}
}

// waitPodReady waits for the pod to be Ready and returns its IP; on a timeout it reports the
// pod's phase and container states.
func waitPodReady(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name string) string {
	t.Helper()
	var ip string
	poll(ctx, t, "pod "+ns+"/"+name+" ready", 90*time.Second, func() (bool, string) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ip = p.Status.PodIP
		state := fmt.Sprintf("phase %s ip %q", p.Status.Phase, ip)
		for _, cs := range p.Status.ContainerStatuses {
			switch {
			case cs.State.Waiting != nil:
				state += fmt.Sprintf("; %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
			case cs.State.Terminated != nil:
				state += fmt.Sprintf("; %s terminated: %s %s", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.Message)
			}
			if cs.LastTerminationState.Terminated != nil {
				state += fmt.Sprintf("; last: %s %s", cs.LastTerminationState.Terminated.Reason, cs.LastTerminationState.Terminated.Message)
			}
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && ip != "" {
				return true, state
			}
		}
		return false, state
	})
	return ip
}

// testhostClient calls a wsscale/testhost pod through the cluster's network.
type testhostClient struct {
	c  *localcluster.Cluster
	ip string
}

// try calls path with the query pairs and returns the body and status code (0 when the call
// itself failed, with the error as the body).
func (h testhostClient) try(ctx context.Context, path string, query ...string) (string, int) {
	q := url.Values{}
	for i := 0; i+1 < len(query); i += 2 {
		q.Set(query[i], query[i+1])
	}
	u := fmt.Sprintf("http://%s:%d%s?%s", h.ip, testhostPort, path, q.Encode())
	hc := &http.Client{Transport: &http.Transport{DialContext: h.c.DialContext}, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err.Error(), 0
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(body), resp.StatusCode
}

// get is try that fails the test unless the answer is 200.
func (h testhostClient) get(ctx context.Context, t *testing.T, path string, query ...string) string {
	t.Helper()
	body, code := h.try(ctx, path, query...)
	if code != http.StatusOK {
		t.Fatalf("GET %s %v from the pod: %d %s", path, query, code, body)
	}
	return body
}

// TestKubectlLogs reads container logs the way users do, with the real kubectl through the
// API server, which calls the node's kubelet API: a container chosen with -c, --tail,
// -f while the container writes, and --previous after a restart. The kubelet API itself
// refuses callers without a client certificate and callers RBAC does not allow.
func TestKubectlLogs(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const ns = "node-logs"
	must[*corev1.Namespace](t, "namespace")(client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	container := func(name string, port int32) corev1.Container {
		return corev1.Container{
			Name: name, Image: "wsscale/testhost:dev", Args: []string{"serve", "--port", fmt.Sprint(port)},
			ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(port)},
			}},
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "logs"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers:                    []corev1.Container{container("first", testhostPort), container("second", testhostPort+1)},
		},
	}
	must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}))
	ip := waitPodReady(ctx, t, client, ns, pod.Name)
	th := testhostClient{c: c, ip: ip}
	for i := 1; i <= 5; i++ {
		th.get(ctx, t, "/log", "line", fmt.Sprintf("line-%d", i))
	}

	kubectl := func(args ...string) (string, error) {
		root, err := framework.RepoRoot()
		if err != nil {
			return "", err
		}
		cmd := exec.CommandContext(ctx, filepath.Join(root, ".local", "bin", "kubectl"),
			append([]string{"--kubeconfig", c.Kubeconfig(), "-n", ns}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := kubectl("logs", "logs", "-c", "first")
	if err != nil || !strings.Contains(out, "serving on :8080") || !strings.Contains(out, "line-1\n") || !strings.Contains(out, "line-5\n") {
		t.Fatalf("kubectl logs -c first: err %v, output:\n%s", err, out)
	}
	if out, err := kubectl("logs", "logs", "-c", "first", "--tail", "2"); err != nil || out != "line-4\nline-5\n" {
		t.Errorf("kubectl logs --tail 2: err %v, got %q, want the last two lines", err, out)
	}
	if out, err := kubectl("logs", "logs", "-c", "second"); err != nil || !strings.Contains(out, "serving on :8081") || strings.Contains(out, "line-1") {
		t.Errorf("kubectl logs -c second: err %v, output:\n%s", err, out)
	}
	if out, err := kubectl("logs", "logs", "-c", "first", "--previous"); err == nil || !strings.Contains(out, "previous terminated container") {
		t.Errorf("kubectl logs --previous before any restart: err %v, output %q; want an error naming the missing previous container", err, out)
	}

	// -f: a line written after the stream opened arrives on it.
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	followCtx, stopFollow := context.WithCancel(ctx)
	follow := exec.CommandContext(followCtx, filepath.Join(root, ".local", "bin", "kubectl"), "--kubeconfig", c.Kubeconfig(), "-n", ns,
		"logs", "-f", "logs", "-c", "first", "--tail", "1")
	stream, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	// The reader reports everything received so far after each read.
	received := make(chan string, 64)
	go func() {
		defer close(received)
		var got strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := stream.Read(buf)
			got.Write(buf[:n])
			received <- got.String()
			if err != nil {
				return
			}
		}
	}()
	waitStream := func(want string) string {
		t.Helper()
		timeout := time.After(30 * time.Second)
		last := ""
		for {
			select {
			case got, ok := <-received:
				if !ok {
					t.Fatalf("kubectl logs -f ended before %q arrived; got %q", want, last)
				}
				last = got
				if strings.Contains(got, want) {
					return got
				}
			case <-timeout:
				t.Fatalf("kubectl logs -f: %q did not arrive within 30s; got %q", want, last)
			}
		}
	}
	waitStream("line-5\n") // --tail 1: the stream is open
	th.get(ctx, t, "/log", "line", "followed-line")
	if got := waitStream("followed-line\n"); strings.Contains(got, "line-4") {
		t.Errorf("kubectl logs -f --tail 1 sent more than the last line: %q", got)
	}
	stopFollow()
	_ = follow.Wait()

	// --previous after the container exits and restarts.
	th.get(ctx, t, "/exit", "code", "3")
	poll(ctx, t, "first container restarted and ready", 90*time.Second, func() (bool, string) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == "first" {
				return cs.RestartCount >= 1 && cs.Ready, fmt.Sprintf("restarts %d ready %v", cs.RestartCount, cs.Ready)
			}
		}
		return false, "no status"
	})
	if out, err := kubectl("logs", "logs", "-c", "first", "--previous"); err != nil || !strings.Contains(out, "line-5\n") || !strings.Contains(out, "followed-line") {
		t.Errorf("kubectl logs --previous: err %v, output:\n%s", err, out)
	}
	if out, err := kubectl("logs", "logs", "-c", "first"); err != nil || strings.Contains(out, "line-5") || !strings.Contains(out, "serving on :8080") {
		t.Errorf("kubectl logs after the restart: want only the new run, err %v, output:\n%s", err, out)
	}

	// The kubelet API directly: no client certificate, then a user RBAC does not allow.
	kubeletURL := fmt.Sprintf("https://%s:%d/containerLogs/%s/logs/first", localcluster.NodeIP, localcluster.KubeletPort, ns)
	for _, tc := range []struct {
		name     string
		certBase string
		want     int
	}{
		{name: "no client certificate", want: http.StatusUnauthorized},
		{name: "the scheduler's identity", certBase: "scheduler", want: http.StatusForbidden},
		{name: "cluster admin", certBase: "admin", want: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tlsConfig := &tls.Config{RootCAs: x509.NewCertPool()}
			caPEM, err := os.ReadFile(filepath.Join(c.StateDir(), "pki", "ca.crt"))
			if err != nil {
				t.Fatal(err)
			}
			tlsConfig.RootCAs.AppendCertsFromPEM(caPEM)
			if tc.certBase != "" {
				pair, err := tls.LoadX509KeyPair(filepath.Join(c.StateDir(), "pki", tc.certBase+".crt"), filepath.Join(c.StateDir(), "pki", tc.certBase+".key"))
				if err != nil {
					t.Fatal(err)
				}
				tlsConfig.Certificates = []tls.Certificate{pair}
			}
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: c.DialContext, TLSClientConfig: tlsConfig}}
			resp, err := hc.Get(kubeletURL)
			if err != nil {
				t.Fatalf("GET %s: %v", kubeletURL, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("GET %s as %s: %d %s, want %d", kubeletURL, tc.name, resp.StatusCode, body, tc.want)
			}
		})
	}
}

// TestServicesAndClusterDNS calls Services from a pod the way applications do: by name,
// through the cluster DNS (CoreDNS behind kube-dns), to a ClusterIP that forwards to the
// Service's ready endpoints; a headless Service's name resolves to its pods.
func TestServicesAndClusterDNS(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	const ns = "node-dns"
	must[*corev1.Namespace](t, "namespace")(client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	labels := map[string]string{"app": "web"}
	testhost := corev1.Container{
		Name: "testhost", Image: "wsscale/testhost:dev", Args: []string{"serve", "--port", fmt.Sprint(testhostPort)},
		ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(testhostPort)},
		}},
	}
	for _, name := range []string{"web-1", "web-2"} {
		must[*corev1.Pod](t, "web pod")(client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec:       corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](2), Containers: []corev1.Container{testhost}},
		}, metav1.CreateOptions{}))
	}
	must[*corev1.Pod](t, "client pod")(client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec:       corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](2), Containers: []corev1.Container{testhost}},
	}, metav1.CreateOptions{}))
	svc := must[*corev1.Service](t, "service")(client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(testhostPort)},
		}},
	}, metav1.CreateOptions{}))
	must[*corev1.Service](t, "headless service")(client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-headless"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Port: testhostPort},
		}},
	}, metav1.CreateOptions{}))
	web1 := waitPodReady(ctx, t, client, ns, "web-1")
	web2 := waitPodReady(ctx, t, client, ns, "web-2")
	th := testhostClient{c: c, ip: waitPodReady(ctx, t, client, ns, "client")}

	resolv := th.get(ctx, t, "/cat", "path", "/etc/resolv.conf")
	if !strings.Contains(resolv, "nameserver "+localcluster.ClusterDNSIP+"\n") || !strings.Contains(resolv, "search node-dns.svc.cluster.local svc.cluster.local cluster.local\n") {
		t.Errorf("the pod's resolv.conf does not name the cluster DNS:\n%s", resolv)
	}
	// The cluster DNS is a Deployment like any other; wait until it serves.
	poll(ctx, t, "the cluster DNS answers from the pod", 2*time.Minute, func() (bool, string) {
		got, code := th.try(ctx, "/resolve", "name", "kubernetes.default")
		return code == http.StatusOK && got == "198.19.0.1", fmt.Sprintf("%d %s", code, got)
	})
	for _, tc := range []struct{ name, want string }{
		{"web", svc.Spec.ClusterIP},
		{"web.node-dns", svc.Spec.ClusterIP},
		{"web.node-dns.svc.cluster.local", svc.Spec.ClusterIP},
		{"web-headless", strings.Join(sortedPair(web1, web2), "\n")},
	} {
		if got, code := th.try(ctx, "/resolve", "name", tc.name); code != http.StatusOK || got != tc.want {
			t.Errorf("resolve %s from the pod: %d %q, want %q", tc.name, code, got, tc.want)
		}
	}
	seen := map[string]int{}
	for range 8 {
		got, code := th.try(ctx, "/fetch", "url", "http://web/hostname")
		if code != http.StatusOK {
			t.Fatalf("GET http://web/hostname from the pod: %d %s", code, got)
		}
		seen[got]++
	}
	if seen["web-1"] == 0 || seen["web-2"] == 0 || len(seen) != 2 {
		t.Errorf("the Service's ClusterIP spread 8 requests as %v, want both web pods", seen)
	}
	// A pod that is not ready leaves the Service: its endpoint is no longer used.
	must[*corev1.Pod](t, "delete web-2")(nil, client.CoreV1().Pods(ns).Delete(ctx, "web-2", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	poll(ctx, t, "only web-1 answers behind the Service", time.Minute, func() (bool, string) {
		for range 4 {
			if got, code := th.try(ctx, "/fetch", "url", "http://web.node-dns.svc/hostname"); code != http.StatusOK || got != "web-1" {
				return false, fmt.Sprintf("%d %s", code, got)
			}
		}
		return true, "web-1 x4"
	})
	if after, _ := os.ReadFile("/etc/resolv.conf"); string(after) != string(hostResolv) {
		t.Errorf("the host's /etc/resolv.conf changed:\nbefore %q\nafter  %q", hostResolv, after)
	}
}

func sortedPair(a, b string) []string {
	if a > b {
		a, b = b, a
	}
	return []string{a, b}
}
