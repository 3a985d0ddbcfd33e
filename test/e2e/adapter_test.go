package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/pkg/wsload"
	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

const (
	adapterNamespace = "wsscale-system"
	adapterName      = "wsscale-adapter"
	echoNamespace    = "adapter-e2e"
	connections      = 25
	targetPerPod     = 10
)

// TestAdapterServesConnectionsToTheHPA installs the adapter as a pod behind
// the custom.metrics.k8s.io APIService, holds a known number of connections
// on the echo pod with the load client, reads exactly that number through
// kube-apiserver, and watches an HPA scale the echo Deployment up on it and
// back down once the connections close.
func TestAdapterServesConnectionsToTheHPA(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	installAdapter(ctx, t, client, c.RESTConfig())
	echoPod := installEcho(ctx, t, client)
	// A pod with the Prometheus annotations but not the wsscale.io/scrape
	// label: the adapter's default watch never sees it, so it is absent
	// from every answer below.
	installUnlabelledPod(ctx, t, client)

	// Hold the connections on the one echo pod, dialled inside the node network.
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var open atomic.Int64
	loadDone := make(chan error, 1)
	go func() {
		cfg := wsload.DefaultConfig()
		cfg.URL = fmt.Sprintf("ws://%s:8080/ws", echoPod.Status.PodIP)
		cfg.Connections = connections
		cfg.ConnectRate = 0
		cfg.NetDialContext = c.DialContext
		cfg.ProgressInterval = 200 * time.Millisecond
		cfg.Progress = func(s wsload.Snapshot) { open.Store(s.Open) }
		_, err := wsload.Run(loadCtx, cfg)
		loadDone <- err
	}()
	poll(ctx, t, "all load connections open", time.Minute, func() (bool, string) {
		return open.Load() == connections, fmt.Sprintf("%d open", open.Load())
	})

	// Exactly those connections, through kube-apiserver, in both versions.
	for _, version := range []string{"v1beta2", "v1beta1"} {
		path := fmt.Sprintf("/apis/custom.metrics.k8s.io/%s/namespaces/%s/pods/*/websocket_connections", version, echoNamespace)
		poll(ctx, t, "metric of the loaded pod via "+version, time.Minute, func() (bool, string) {
			got, err := podValues(ctx, client, path)
			if err != nil {
				return false, err.Error()
			}
			return len(got) == 1 && got[echoPod.Name] == connections, fmt.Sprint(got)
		})
	}
	// The Deployment's sum, as an Object metric.
	poll(ctx, t, "Deployment sum", time.Minute, func() (bool, string) {
		v, err := objectValue(ctx, client, fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/deployments.apps/echo/websocket_connections", echoNamespace))
		return err == nil && v == connections, fmt.Sprint(v, err)
	})

	// The adapter's own metrics, on its metrics port.
	checkOwnMetrics(ctx, t, c, client)

	// Unauthenticated and unauthorised requests are refused.
	checkRefused(ctx, t, c.RESTConfig())

	// The HPA scales up: 25 connections at 10 per pod is 3 pods.
	createHPA(ctx, t, client, echoNamespace, targetPerPod)
	wantReplicas := int32((connections + targetPerPod - 1) / targetPerPod)
	poll(ctx, t, "HPA scale-up", 3*time.Minute, func() (bool, string) {
		d, err := client.AppsV1().Deployments(echoNamespace).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return d.Status.ReadyReplicas == wantReplicas && ptr.Deref(d.Spec.Replicas, 0) == wantReplicas,
			fmt.Sprintf("spec %d, ready %d", ptr.Deref(d.Spec.Replicas, 0), d.Status.ReadyReplicas)
	})
	// Every pod is reported, the new ones with 0, the loaded one unchanged.
	poll(ctx, t, "metrics of all pods after scale-up", time.Minute, func() (bool, string) {
		got, err := podValues(ctx, client, fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/websocket_connections", echoNamespace))
		if err != nil {
			return false, err.Error()
		}
		sum := int64(0)
		for _, v := range got {
			sum += v
		}
		return len(got) == int(wantReplicas) && got[echoPod.Name] == connections && sum == connections, fmt.Sprint(got)
	})

	// The connections close; the HPA scales back down to one pod.
	stopLoad()
	<-loadDone
	poll(ctx, t, "HPA scale-down", 4*time.Minute, func() (bool, string) {
		d, err := client.AppsV1().Deployments(echoNamespace).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return ptr.Deref(d.Spec.Replicas, 0) == 1, fmt.Sprintf("spec %d, ready %d", ptr.Deref(d.Spec.Replicas, 0), d.Status.ReadyReplicas)
	})
}

// checkOwnMetrics reads the adapter pod's /metrics on its secure port inside
// the node network: refused without credentials, served to the cluster admin
// (delegated authentication of the client certificate, then authorization).
// /readyz and /livez answer anyone, as the kubelet's probes need.
func checkOwnMetrics(ctx context.Context, t *testing.T, c *localcluster.Cluster, client kubernetes.Interface) {
	t.Helper()
	pods, err := client.CoreV1().Pods(adapterNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + adapterName})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("adapter pods: %v, %v", pods, err)
	}
	// The node agent probed /readyz and /livez over HTTPS: the pod is
	// Ready (else the APIService would have no endpoint) and never restarted.
	for _, cs := range pods.Items[0].Status.ContainerStatuses {
		if !cs.Ready || cs.RestartCount != 0 {
			t.Errorf("adapter container %s: ready %v, %d restarts", cs.Name, cs.Ready, cs.RestartCount)
		}
	}
	base := fmt.Sprintf("https://%s:6443", pods.Items[0].Status.PodIP)
	anonymous := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: c.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // self-signed serving cert
	}}
	adminCfg := c.RESTConfig()
	adminCfg.Insecure, adminCfg.CAData, adminCfg.CAFile = true, nil, ""
	adminCfg.Dial = c.DialContext
	adminTransport, err := rest.TransportFor(adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	admin := &http.Client{Timeout: 10 * time.Second, Transport: adminTransport}
	get := func(hc *http.Client, path string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}

	code, body, err := get(anonymous, "/readyz?verbose")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "[+]informer-sync ok") || !strings.Contains(body, "[+]first-scrape-round ok") {
		t.Errorf("anonymous GET /readyz?verbose: %d %v\n%s", code, err, body)
	}
	if code, body, err := get(anonymous, "/livez"); err != nil || code != http.StatusOK {
		t.Errorf("anonymous GET /livez: %d %v\n%s", code, err, body)
	}
	if code, _, err := get(anonymous, "/metrics"); err != nil || (code != http.StatusUnauthorized && code != http.StatusForbidden) {
		t.Errorf("anonymous GET /metrics: %d %v, want 401 or 403", code, err)
	} else {
		t.Logf("anonymous GET /metrics refused with %d", code)
	}

	want := []string{
		"wsscale_adapter_pods_tracked 1\n",
		`wsscale_adapter_pod_values{state="fresh"} 1` + "\n",
		"wsscale_adapter_scrape_duration_seconds_count ",
		`wsscale_adapter_scrape_errors_total{reason="timeout"} 0` + "\n",
		`wsscale_adapter_api_request_duration_seconds_count{code="200",method="by_selector",resource="pods"} `,
		`wsscale_adapter_api_request_duration_seconds_count{code="200",method="by_name",resource="deployments.apps"} `,
		"go_goroutines ",
		"apiserver_request_total{",
	}
	poll(ctx, t, "adapter's own metrics on the secure port", 30*time.Second, func() (bool, string) {
		code, body, err := get(admin, "/metrics")
		if err != nil {
			return false, err.Error()
		}
		if code != http.StatusOK {
			return false, fmt.Sprintf("HTTP %d: %.200s", code, body)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false, "missing " + w
			}
		}
		return true, "all present"
	})
}

// poll checks cond every 500ms until it holds or timeout passes.
func poll(ctx context.Context, t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, state := cond()
		last = state
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not reached within %v; last state: %s", what, timeout, last)
	}
	t.Logf("%s: %s", what, last)
}

func podValues(ctx context.Context, client kubernetes.Interface, path string) (map[string]int64, error) {
	body, err := client.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w (%s)", path, err, body)
	}
	var list cmv1beta2.MetricValueList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("decode %s: %w", body, err)
	}
	out := map[string]int64{}
	for _, it := range list.Items {
		out[it.DescribedObject.Name] = it.Value.Value()
	}
	return out, nil
}

func objectValue(ctx context.Context, client kubernetes.Interface, path string) (int64, error) {
	vals, err := podValues(ctx, client, path)
	if err != nil {
		return 0, err
	}
	if len(vals) != 1 {
		return 0, fmt.Errorf("want one value, got %v", vals)
	}
	for _, v := range vals {
		return v, nil
	}
	return 0, nil
}

// checkRefused sends the metrics request without credentials and as a user
// without RBAC on custom.metrics.k8s.io.
func checkRefused(ctx context.Context, t *testing.T, admin *rest.Config) {
	t.Helper()
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/websocket_connections", echoNamespace)
	anon, err := kubernetes.NewForConfig(rest.AnonymousClientConfig(admin))
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	if code := statusCode(err); code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Errorf("request without credentials: %v (code %d), want 401 or 403", err, code)
	} else {
		t.Logf("request without credentials refused with %d", code)
	}
	imp := rest.CopyConfig(admin)
	imp.Impersonate = rest.ImpersonationConfig{UserName: "nobody@example.com", Groups: []string{"system:authenticated"}}
	nobody, err := kubernetes.NewForConfig(imp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = nobody.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	if code := statusCode(err); code != http.StatusForbidden {
		t.Errorf("request of a user without RBAC: %v (code %d), want 403", err, code)
	} else {
		t.Logf("request of a user without RBAC refused with %d", code)
	}
}

func statusCode(err error) int {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return int(status.Status().Code)
	}
	return 0
}

func resourceQuantity(v int64) *resource.Quantity { return resource.NewQuantity(v, resource.DecimalSI) }

func must[T any](t testing.TB, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// installAdapter creates what the chart would: namespace, service account,
// RBAC, the adapter Deployment, its Service and the two APIServices, and
// waits until the aggregator reports them Available.
func installAdapter(ctx context.Context, t *testing.T, client kubernetes.Interface, admin *rest.Config) {
	t.Helper()
	must[*corev1.Namespace](t, "namespace")(client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: adapterNamespace}}, metav1.CreateOptions{}))
	must[*corev1.ServiceAccount](t, "service account")(client.CoreV1().ServiceAccounts(adapterNamespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: adapterName}}, metav1.CreateOptions{}))
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: adapterName, Namespace: adapterNamespace}}
	must[*rbacv1.ClusterRole](t, "reader role")(client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: adapterName},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"apiregistration.k8s.io"}, Resources: []string{"apiservices"}, Verbs: []string{"get"}},
			{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
	}, metav1.CreateOptions{}))
	for name, role := range map[string]string{adapterName: adapterName, adapterName + ":auth-delegator": "system:auth-delegator"} {
		must[*rbacv1.ClusterRoleBinding](t, "cluster role binding")(client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		}, metav1.CreateOptions{}))
	}
	must[*rbacv1.RoleBinding](t, "auth reader binding")(client.RbacV1().RoleBindings("kube-system").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: adapterName + ":auth-reader"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "extension-apiserver-authentication-reader"},
	}, metav1.CreateOptions{}))

	labels := map[string]string{"app": adapterName}
	must[*appsv1.Deployment](t, "adapter deployment")(client.AppsV1().Deployments(adapterNamespace).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: adapterName},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: adapterName,
					Containers: []corev1.Container{{
						Name:  "adapter",
						Image: "wsscale/adapter:dev",
						Args: []string{
							"--secure-port=6443", "--cert-dir=/var/run/serving-cert",
							"--scrape-interval=1s",
							"--apiservice-service=" + adapterNamespace + "/" + adapterName, "--v=2",
						},
						Ports: []corev1.ContainerPort{{Name: "https", ContainerPort: 6443}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/readyz", Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}}, PeriodSeconds: 1},
						LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/livez", Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}}, PeriodSeconds: 5},
						VolumeMounts: []corev1.VolumeMount{{Name: "serving-cert", MountPath: "/var/run/serving-cert"}},
					}},
					Volumes: []corev1.Volume{{Name: "serving-cert", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}, metav1.CreateOptions{}))
	must[*corev1.Service](t, "adapter service")(client.CoreV1().Services(adapterNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: adapterName},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(6443)}}},
	}, metav1.CreateOptions{}))

	dyn, err := dynamic.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	apiServices := dyn.Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"})
	for _, v := range []struct {
		version  string
		priority int64
	}{{"v1beta2", 200}, {"v1beta1", 100}} {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
			"metadata": map[string]any{"name": v.version + ".custom.metrics.k8s.io"},
			"spec": map[string]any{
				"group": "custom.metrics.k8s.io", "version": v.version,
				"service":               map[string]any{"namespace": adapterNamespace, "name": adapterName, "port": int64(443)},
				"insecureSkipTLSVerify": true, "groupPriorityMinimum": int64(100), "versionPriority": v.priority,
			},
		}}
		must[*unstructured.Unstructured](t, "APIService")(apiServices.Create(ctx, obj, metav1.CreateOptions{}))
	}
	for _, name := range []string{"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"} {
		poll(ctx, t, "APIService "+name+" Available", 3*time.Minute, func() (bool, string) {
			obj, err := apiServices.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
			var states []string
			for _, c := range conds {
				m, _ := c.(map[string]any)
				states = append(states, fmt.Sprintf("%v=%v (%v)", m["type"], m["status"], m["message"]))
				if m["type"] == "Available" && m["status"] == "True" {
					return true, strings.Join(states, "; ")
				}
			}
			return false, strings.Join(states, "; ")
		})
	}
}

// installEcho creates the echo Deployment with one replica and returns its
// running pod.
func installEcho(ctx context.Context, t *testing.T, client kubernetes.Interface) *corev1.Pod {
	t.Helper()
	must[*corev1.Namespace](t, "namespace")(client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: echoNamespace}}, metav1.CreateOptions{}))
	labels := map[string]string{"app": "echo", "wsscale.io/scrape": "true"}
	must[*appsv1.Deployment](t, "echo deployment")(client.AppsV1().Deployments(echoNamespace).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics",
				}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{
						Name:  "echo",
						Image: "wsscale/echo:dev",
						Env: []corev1.EnvVar{
							{Name: "PORT", Value: "8080"}, {Name: "METRICS_PORT", Value: "9090"},
							{Name: "DRAIN_TIMEOUT", Value: "2s"}, {Name: "MAX_CONNECTIONS", Value: "1000"},
						},
						Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("ws")}},
							PeriodSeconds: 1},
						Resources: corev1.ResourceRequirements{},
					}},
				},
			},
		},
	}, metav1.CreateOptions{}))
	var pod corev1.Pod
	poll(ctx, t, "echo pod ready", 2*time.Minute, func() (bool, string) {
		pods, err := client.CoreV1().Pods(echoNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for _, p := range pods.Items {
			states = append(states, fmt.Sprintf("%s %s %s", p.Name, p.Status.Phase, p.Status.PodIP))
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && len(pods.Items) == 1 {
					pod = p
					return true, strings.Join(states, ", ")
				}
			}
		}
		sort.Strings(states)
		return false, strings.Join(states, ", ")
	})
	return &pod
}

// installUnlabelledPod runs an echo pod annotated prometheus.io/scrape=true
// without the wsscale.io/scrape label, and waits until it is ready.
func installUnlabelledPod(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	t.Helper()
	must[*corev1.Pod](t, "unlabelled pod")(client.CoreV1().Pods(echoNamespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "unlabelled", Labels: map[string]string{"app": "unlabelled"}, Annotations: map[string]string{
			"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics",
		}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "echo", Image: "wsscale/echo:dev",
				Env:   []corev1.EnvVar{{Name: "PORT", Value: "8080"}, {Name: "METRICS_PORT", Value: "9090"}},
				Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("ws")}},
					PeriodSeconds: 1},
			}},
		},
	}, metav1.CreateOptions{}))
	poll(ctx, t, "unlabelled pod ready", 2*time.Minute, func() (bool, string) {
		p, err := client.CoreV1().Pods(echoNamespace).Get(ctx, "unlabelled", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, string(p.Status.Phase)
			}
		}
		return false, string(p.Status.Phase)
	})
}

// createHPA creates the HPA "echo" in ns on Deployment echo: 1 to 4 pods, target websocket_connections
// per pod on average, a 5 s scale-down stabilisation window.
func createHPA(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string, target int64) {
	t.Helper()
	must[*autoscalingv2.HorizontalPodAutoscaler](t, "HPA")(client.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"},
			MinReplicas:    ptr.To[int32](1),
			MaxReplicas:    4,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: "websocket_connections"},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resourceQuantity(target)},
				},
			}},
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](5)},
			},
		},
	}, metav1.CreateOptions{}))
}
