package framework_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/test/e2e/framework"
)

func TestMain(m *testing.M) { framework.Main(m) }

func TestControlPlaneServes(t *testing.T) {
	c := framework.Cluster(t)
	ctx := context.Background()

	// Through the host port, as kubectl would.
	host, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	body, err := host.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil || string(body) != "ok" {
		t.Fatalf("GET /readyz through 127.0.0.1:%d = %q, %v; want ok", c.APIPort(), body, err)
	}
	v, err := host.Discovery().ServerVersion()
	if err != nil || v.GitVersion != "v1.37.2" {
		t.Errorf("server version = %v, %v; want v1.37.2", v, err)
	}

	nss, err := c.Client().CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ns := range nss.Items {
		names = append(names, ns.Name)
	}
	for _, want := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		if !slices.Contains(names, want) {
			t.Errorf("namespaces = %v, missing %s", names, want)
		}
	}
}

func TestAggregationIsConfigured(t *testing.T) {
	c := framework.Cluster(t)
	// Aggregated API servers read the front-proxy settings from this config map.
	cm, err := c.Client().CoreV1().ConfigMaps("kube-system").Get(context.Background(), "extension-apiserver-authentication", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"requestheader-allowed-names":        `["front-proxy-client"]`,
		"requestheader-username-headers":     `["X-Remote-User"]`,
		"requestheader-group-headers":        `["X-Remote-Group"]`,
		"requestheader-extra-headers-prefix": `["X-Remote-Extra-"]`,
	} {
		if got := cm.Data[key]; got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if !strings.Contains(cm.Data["requestheader-client-ca-file"], "BEGIN CERTIFICATE") {
		t.Errorf("requestheader-client-ca-file holds no certificate")
	}
}

func TestNodeIsReady(t *testing.T) {
	c := framework.Cluster(t)
	node, err := c.Client().CoreV1().Nodes().Get(context.Background(), "local-node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, cond := range node.Status.Conditions {
		ready = ready || (cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue)
	}
	if !ready {
		t.Errorf("node conditions = %+v, want Ready", node.Status.Conditions)
	}
}

func TestHostKubectl(t *testing.T) {
	c := framework.Cluster(t)
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed; the host port is covered by TestControlPlaneServes")
	}
	out, err := exec.Command(kubectl, "--kubeconfig", c.Kubeconfig(), "get", "--raw", "/readyz").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("kubectl get --raw /readyz = %q, %v", out, err)
	}
}

// TestPodsAreReachable runs the echo server as pods and reaches them through a
// node port on the host and directly at their pod addresses.
func TestPodsAreReachable(t *testing.T) {
	c := framework.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := c.Client()
	ns := createNamespace(t, client)

	labels := map[string]string{"app": "echo"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "echo",
					Image: "wsscale/echo:e2e",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 1,
					},
				}}},
			},
		},
	}
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodePort := svc.Spec.Ports[0].NodePort

	var podIPs []string
	err = wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		slices, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=echo"})
		if err != nil {
			return false, err
		}
		podIPs = podIPs[:0]
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					podIPs = append(podIPs, ep.Addresses...)
				}
			}
		}
		return len(podIPs) == 2, nil
	})
	if err != nil {
		t.Fatalf("wait for 2 ready endpoints: %v (have %v); node supervisor log: %s", err, podIPs, c.LogPath("supervisor"))
	}

	direct := &http.Client{Transport: &http.Transport{DialContext: c.DialContext}, Timeout: 5 * time.Second}
	for _, ip := range podIPs {
		if got := get(t, direct, fmt.Sprintf("http://%s/health", net.JoinHostPort(ip, "8080"))); got != "ok" {
			t.Errorf("pod %s /health = %q, want ok", ip, got)
		}
	}
	viaNodePort := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/health", nodePort)
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		resp, err := viaNodePort.Get(url)
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b)) == "ok", nil
	})
	if err != nil {
		t.Fatalf("GET %s never answered ok: %v", url, err)
	}

	// Deleting the Service closes its node port.
	if err := client.CoreV1().Services(ns).Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", nodePort), time.Second)
		if err != nil {
			return true, nil
		}
		conn.Close()
		return false, nil
	})
	if err != nil {
		t.Errorf("node port %d still accepts connections after the Service was deleted", nodePort)
	}
}

func get(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return strings.TrimSpace(string(b))
}

// createNamespace makes a namespace for one test and deletes it afterwards.
func createNamespace(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	ns, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "framework-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	// Pods are admitted once the namespace's default service account exists.
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s: default service account never appeared: %v", ns.Name, err)
	}
	return ns.Name
}
