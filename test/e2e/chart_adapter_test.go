package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

const (
	chartRelease   = "wsscale"
	chartNamespace = "wsscale-chart"
	chartEchoNS    = "chart-e2e"
)

var (
	apiServiceResource = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	metricsAPIServices = []string{"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"}
)

// helmRunner runs the pinned helm binary against the local cluster, with its caches and
// configuration in a temporary directory.
type helmRunner struct {
	bin, kubeconfig, home string
}

func newHelm(t *testing.T, c *localcluster.Cluster) *helmRunner {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, ".local", "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the pinned helm (make tools builds it into .local/bin): %v", err)
	}
	return &helmRunner{bin: bin, kubeconfig: c.Kubeconfig(), home: t.TempDir()}
}

func (h *helmRunner) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+h.kubeconfig,
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func chartDir(t *testing.T) string {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "deploy", "helm", "wsscale")
}

// sharedCRDDir finds the third-party CRD schemas (cert-manager, Prometheus Operator) that the
// chart's optional objects need: $WSSCALE_CRDS_DIR, else the nearest shared/crds above the repository.
func sharedCRDDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("WSSCALE_CRDS_DIR"); dir != "" {
		return dir
	}
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for dir := root; ; dir = filepath.Dir(dir) {
		if st, err := os.Stat(filepath.Join(dir, "shared", "crds")); err == nil && st.IsDir() {
			return filepath.Join(dir, "shared", "crds")
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("third-party CRD schemas not found: set WSSCALE_CRDS_DIR to the directory of cert-manager.yaml and prometheus-operator.yaml")
		}
	}
}

func decodeYAML(t *testing.T, name string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 0; ; i++ {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("%s document %d: %v", name, i, err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

// installCRDs applies the CRDs of files (for real, not as a dry run) and waits until they are established.
func installCRDs(ctx context.Context, t *testing.T, dyn dynamic.Interface, files ...string) {
	t.Helper()
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, crd := range decodeYAML(t, filepath.Base(file), data) {
			if _, err := dyn.Resource(crdResource).Apply(ctx, crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "wsscale-e2e", Force: true}); err != nil {
				t.Fatalf("CRD %s: %v", crd.GetName(), err)
			}
			poll(ctx, t, "CRD "+crd.GetName()+" established", time.Minute, func() (bool, string) {
				got, err := dyn.Resource(crdResource).Get(ctx, crd.GetName(), metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
				for _, c := range conds {
					if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
						return true, "Established"
					}
				}
				return false, "not established"
			})
		}
	}
}

// TestAdapterChartScenariosAreAccepted lints every ci/*-values.yaml scenario of the adapter chart
// with --strict, renders it with helm template, and submits every rendered object to the real API
// server with a strict server-side dry run.
func TestAdapterChartScenariosAreAccepted(t *testing.T) {
	c := framework.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := c.RESTConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	crds := sharedCRDDir(t)
	installCRDs(ctx, t, dyn, filepath.Join(crds, "cert-manager.yaml"), filepath.Join(crds, "prometheus-operator.yaml"))
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	if _, err := dyn.Resource(nsResource).Apply(ctx, checkNamespace, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": checkNamespace},
	}}, metav1.ApplyOptions{FieldManager: "wsscale-e2e", Force: true}); err != nil {
		t.Fatal(err)
	}
	helm := newHelm(t, c)
	chart := chartDir(t)
	scenarios, err := filepath.Glob(filepath.Join(chart, "ci", "*-values.yaml"))
	if err != nil || len(scenarios) == 0 {
		t.Fatalf("no scenarios in %s/ci: %v", chart, err)
	}
	for _, scenario := range scenarios {
		t.Run(filepath.Base(scenario), func(t *testing.T) {
			if out, err := helm.run(ctx, "lint", "--strict", chart, "-f", scenario); err != nil {
				t.Fatalf("lint: %v", err)
			} else if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Errorf("lint:\n%s", out)
			}
			out, err := helm.run(ctx, "template", chartRelease, chart, "-n", checkNamespace, "-f", scenario, "--kube-version", "1.37.0")
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeYAML(t, "rendered", []byte(out))
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			for _, obj := range objs {
				name := obj.GetKind() + " " + obj.GetName()
				gvk := obj.GroupVersionKind()
				mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				if err != nil {
					t.Errorf("%s: the API server does not serve %s: %v", name, gvk, err)
					continue
				}
				if obj.GetKind() == "Pod" {
					ensureServiceAccount(ctx, t, dyn, obj)
				}
				isolate(obj)
				var res dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
				if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
					obj.SetNamespace(checkNamespace)
					res = dyn.Resource(mapping.Resource).Namespace(checkNamespace)
				}
				if err := dryRun(ctx, res, obj); err != nil {
					t.Errorf("%s: rejected: %v", name, err)
				}
			}
		})
	}
}

// TestAdapterChartRendering checks what the scenarios cannot: values.schema.json rejects unknown
// keys and wrong types with a message naming them, and in tls.mode auto one render's Secret and
// caBundle belong together (the serving certificate verifies against the bundle for the Service's
// DNS name), without a cluster (helm template: lookup finds nothing).
func TestAdapterChartRendering(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	helm := &helmRunner{bin: filepath.Join(root, ".local", "bin", "helm"), home: t.TempDir()}
	chart := chartDir(t)
	for _, tc := range []struct {
		name, set, want string
	}{
		{name: "unknown key", set: "adapter.scrapeIntervall=2s", want: "scrapeIntervall"},
		{name: "wrong type", set: "replicaCount=two", want: "replicaCount"},
		{name: "unknown TLS mode", set: "tls.mode=none", want: "/tls/mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helm.run(ctx, "template", chartRelease, chart, "--kube-version", "1.37.0", "--set", tc.set)
			if err == nil || !strings.Contains(out, "schema") || !strings.Contains(out, tc.want) {
				t.Errorf("--set %s: err %v, want a schema error naming %s:\n%s", tc.set, err, tc.want, out)
			}
		})
	}
	t.Run("auto TLS is consistent", func(t *testing.T) {
		out, err := helm.run(ctx, "template", chartRelease, chart, "-n", chartNamespace, "--kube-version", "1.37.0")
		if err != nil {
			t.Fatal(err)
		}
		var secret map[string]any
		var bundles []string
		for _, obj := range decodeYAML(t, "rendered", []byte(out)) {
			switch obj.GetKind() {
			case "Secret":
				secret, _, _ = unstructured.NestedMap(obj.Object, "data")
			case "APIService":
				if skip, _, _ := unstructured.NestedBool(obj.Object, "spec", "insecureSkipTLSVerify"); skip {
					t.Errorf("APIService %s: insecureSkipTLSVerify by default", obj.GetName())
				}
				b, _, _ := unstructured.NestedString(obj.Object, "spec", "caBundle")
				bundles = append(bundles, b)
			}
		}
		if len(bundles) != 2 || bundles[0] == "" || bundles[0] != bundles[1] || secret == nil || secret["ca.crt"] != bundles[0] {
			t.Fatalf("caBundles %d, Secret ca.crt equal to them: %v", len(bundles), secret != nil && secret["ca.crt"] == bundles[0])
		}
		decode := func(key string) []byte {
			v, _ := secret[key].(string)
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				t.Fatalf("Secret %s: %v", key, err)
			}
			return b
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(decode("ca.crt")) {
			t.Fatal("ca.crt: no certificate")
		}
		pair, err := tls.X509KeyPair(decode("tls.crt"), decode("tls.key"))
		if err != nil {
			t.Fatalf("tls.crt and tls.key: %v", err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		dnsName := chartRelease + "." + chartNamespace + ".svc"
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: dnsName}); err != nil {
			t.Errorf("serving certificate for %s against caBundle: %v", dnsName, err)
		}
	})
}

// TestAdapterChartLifecycle installs the adapter chart with no values, proves that the HPA reads
// websocket_connections through it and that helm test passes, upgrades it with a value that rolls
// the pods while a poller reads the metrics API every 100 ms (no failed request, the same CA in
// caBundle), checks that a second release is refused, rolls back, and uninstalls without leaving
// an APIService, RBAC or Secret behind.
func TestAdapterChartLifecycle(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	helm := newHelm(t, c)
	// A copy of the chart with a probe CRD next to the generated ones, changed before the upgrade:
	// the upgrade must update it (Helm never upgrades a chart's crds/ folder, the chart renders
	// them as templates) and the uninstall must keep it.
	chart := t.TempDir()
	if err := os.CopyFS(chart, os.DirFS(chartDir(t))); err != nil {
		t.Fatal(err)
	}
	probeCRD := filepath.Join(chart, "files", "crds", "e2e-probe.yaml")
	if err := os.WriteFile(probeCRD, []byte(probeCRDYAML("first")), 0o644); err != nil {
		t.Fatal(err)
	}
	removeForeignAPIServices(ctx, t, dyn)
	adoptScaleGuardCRD(ctx, t, dyn, chartRelease, chartNamespace)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		_, _ = helm.run(cctx, "uninstall", chartRelease, "-n", chartNamespace, "--wait", "--ignore-not-found")
		_ = client.CoreV1().Namespaces().Delete(cctx, chartEchoNS, metav1.DeleteOptions{})
		_ = dyn.Resource(crdResource).Delete(cctx, probeCRDName, metav1.DeleteOptions{})
	})

	if _, err := helm.run(ctx, "install", chartRelease, chart, "-n", chartNamespace, "--create-namespace", "--wait", "--timeout", "5m"); err != nil {
		t.Fatal(err)
	}
	waitAPIServicesAvailable(ctx, t, dyn)
	caBefore := caBundles(ctx, t, dyn)
	podsBefore := adapterPods(ctx, t, client)
	if len(podsBefore) != 2 {
		t.Fatalf("adapter pods after install: %v, want 2", podsBefore)
	}

	installChartEcho(ctx, t, client)
	// The HPA comes once both adapter replicas have scraped the new pod (the API server spreads
	// requests over them, and each scrapes on its own schedule): 20 answers in a row with its
	// value, over twice the scrape interval. Any FailedGetPodsMetric below is then the chart's
	// fault, not a first scrape's delay.
	inARow := 0
	poll(ctx, t, "echo pod's websocket_connections through the API server, 20 times in a row", time.Minute, func() (bool, string) {
		got, err := podValues(ctx, client, "/apis/custom.metrics.k8s.io/v1beta2/namespaces/"+chartEchoNS+"/pods/*/websocket_connections")
		if err != nil || len(got) != 1 {
			inARow = 0
			return false, fmt.Sprint(got, err)
		}
		inARow++
		return inARow >= 20, fmt.Sprint(got)
	})
	createChartHPA(ctx, t, client)
	poll(ctx, t, "HPA reads websocket_connections", 2*time.Minute, func() (bool, string) {
		hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(chartEchoNS).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		var state []string
		active := false
		for _, cond := range hpa.Status.Conditions {
			state = append(state, fmt.Sprintf("%s=%s (%s: %s)", cond.Type, cond.Status, cond.Reason, cond.Message))
			if cond.Type == autoscalingv2.ScalingActive && cond.Status == corev1.ConditionTrue {
				active = true
			}
		}
		for _, m := range hpa.Status.CurrentMetrics {
			if m.Pods != nil && m.Pods.Metric.Name == "websocket_connections" {
				state = append(state, "current "+m.Pods.Current.AverageValue.String())
				return active, strings.Join(state, "; ")
			}
		}
		return false, strings.Join(state, "; ")
	})
	events, err := client.CoreV1().Events(chartEchoNS).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedGetPodsMetric"})
	if err != nil {
		t.Fatal(err)
	}
	if len(events.Items) > 0 {
		t.Errorf("HPA events FailedGetPodsMetric: %s", events.Items[0].Message)
	}
	if out, err := helm.run(ctx, "test", chartRelease, "-n", chartNamespace, "--timeout", "2m"); err != nil {
		t.Fatalf("helm test: %v", err)
	} else {
		t.Logf("helm test:\n%s", out)
	}

	// The upgrade rolls both pods (a new scrape interval is a new argument) while the API is read
	// every 100 ms through the API server.
	if got := probeCRDField(ctx, t, dyn); got != "first" {
		t.Errorf("probe CRD after install: field %q, want first", got)
	}
	if err := os.WriteFile(probeCRD, []byte(probeCRDYAML("second")), 0o644); err != nil {
		t.Fatal(err)
	}
	// Its own client: the shared one's rate limit (5 requests/s) would thin out the polling.
	pollCfg := c.RESTConfig()
	pollCfg.QPS, pollCfg.Burst = 100, 100
	pollClient, err := kubernetes.NewForConfig(pollCfg)
	if err != nil {
		t.Fatal(err)
	}
	stats := startMetricsPoller(ctx, pollClient)
	if _, err := helm.run(ctx, "upgrade", chartRelease, chart, "-n", chartNamespace, "--set", "adapter.scrapeInterval=2s", "--wait", "--timeout", "5m"); err != nil {
		stats.stop()
		t.Fatal(err)
	}
	// helm --wait returns once the new pods are ready; the old ones are still in their preStop
	// delay. Keep polling until they are gone.
	poll(ctx, t, "old adapter pods gone", 2*time.Minute, func() (bool, string) {
		now := adapterPods(ctx, t, client)
		for _, p := range podsBefore {
			for _, n := range now {
				if n == p {
					return false, fmt.Sprint(now)
				}
			}
		}
		return len(now) == 2, fmt.Sprint(now)
	})
	total, failed, firstErr := stats.stop()
	t.Logf("metrics API during the upgrade: %d requests, %d failed (%d not started: too many in flight)", total, failed, stats.skipped.Load())
	if failed > 0 || total == 0 {
		t.Errorf("metrics API during the upgrade: %d of %d requests failed; first: %v", failed, total, firstErr)
	}
	if caAfter := caBundles(ctx, t, dyn); caAfter != caBefore {
		t.Errorf("caBundle changed on upgrade")
	}
	if got := probeCRDField(ctx, t, dyn); got != "second" {
		t.Errorf("probe CRD after upgrade: field %q, want second (the upgrade did not update the CRD)", got)
	}

	// A second release in another namespace is refused with the owner's name.
	out, err := helm.run(ctx, "install", "other", chart, "-n", "wsscale-other", "--create-namespace")
	if err == nil || !strings.Contains(out, `belongs to the Helm release "wsscale" in namespace "wsscale-chart"`) {
		t.Errorf("second install: want refusal naming the owner, got %v", err)
	} else {
		t.Logf("second install refused: %s", strings.TrimSpace(out))
	}
	_ = client.CoreV1().Namespaces().Delete(ctx, "wsscale-other", metav1.DeleteOptions{})

	if _, err := helm.run(ctx, "rollback", chartRelease, "1", "-n", chartNamespace, "--wait", "--timeout", "5m"); err != nil {
		t.Fatal(err)
	}
	waitAPIServicesAvailable(ctx, t, dyn)
	if caAfter := caBundles(ctx, t, dyn); caAfter != caBefore {
		t.Errorf("caBundle changed on rollback")
	}

	if _, err := helm.run(ctx, "uninstall", chartRelease, "-n", chartNamespace, "--wait", "--timeout", "3m"); err != nil {
		t.Fatal(err)
	}
	checkNothingLeft(ctx, t, client, dyn)
	if _, err := dyn.Resource(crdResource).Get(ctx, probeCRDName, metav1.GetOptions{}); err != nil {
		t.Errorf("probe CRD after uninstall: %v, want kept (helm.sh/resource-policy: keep)", err)
	}
}

const probeCRDName = "probes.e2e.wsscale.io"

// probeCRDYAML is a CRD whose schema has one property, named field; changing the name changes
// the CRD.
func probeCRDYAML(field string) string {
	return `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ` + probeCRDName + `
spec:
  group: e2e.wsscale.io
  names: {kind: Probe, listKind: ProbeList, plural: probes, singular: probe}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                ` + field + `: {type: string}
`
}

// probeCRDField returns the name of the probe CRD's one spec property in the cluster, and checks
// that the chart marked it to be kept.
func probeCRDField(ctx context.Context, t *testing.T, dyn dynamic.Interface) string {
	t.Helper()
	crd, err := dyn.Resource(crdResource).Get(ctx, probeCRDName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("probe CRD: %v", err)
	}
	if got := crd.GetAnnotations()["helm.sh/resource-policy"]; got != "keep" {
		t.Errorf("probe CRD: helm.sh/resource-policy %q, want keep", got)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	if len(versions) != 1 {
		t.Fatalf("probe CRD versions: %v", versions)
	}
	props, _, _ := unstructured.NestedMap(versions[0].(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties")
	for name := range props {
		return name
	}
	return ""
}

// ensureServiceAccount creates, for real, the service account a pod of the dry run refers to: the
// API server refuses a pod whose service account does not exist, and a dry-run ServiceAccount is
// not stored.
func ensureServiceAccount(ctx context.Context, t *testing.T, dyn dynamic.Interface, pod *unstructured.Unstructured) {
	t.Helper()
	name, _, _ := unstructured.NestedString(pod.Object, "spec", "serviceAccountName")
	if name == "" {
		return
	}
	sa := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": name, "namespace": checkNamespace},
	}}
	res := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}).Namespace(checkNamespace)
	if _, err := res.Apply(ctx, name, sa, metav1.ApplyOptions{FieldManager: "wsscale-e2e", Force: true}); err != nil {
		t.Fatalf("service account %s for the dry run: %v", name, err)
	}
}

// removeForeignAPIServices deletes custom.metrics.k8s.io APIServices that another test of this
// cluster registered without Helm, so that the chart's ownership check does not refuse the install.
func removeForeignAPIServices(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	for _, name := range metricsAPIServices {
		obj, err := dyn.Resource(apiServiceResource).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if obj.GetAnnotations()["meta.helm.sh/release-name"] != "" {
			continue
		}
		t.Logf("deleting APIService %s left by another test", name)
		if err := dyn.Resource(apiServiceResource).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
}

func waitAPIServicesAvailable(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	for _, name := range metricsAPIServices {
		poll(ctx, t, "APIService "+name+" Available", 3*time.Minute, func() (bool, string) {
			obj, err := dyn.Resource(apiServiceResource).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if skip, _, _ := unstructured.NestedBool(obj.Object, "spec", "insecureSkipTLSVerify"); skip {
				return false, "insecureSkipTLSVerify is set"
			}
			conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Available" {
					return m["status"] == "True", fmt.Sprintf("%v (%v)", m["status"], m["message"])
				}
			}
			return false, "no Available condition"
		})
	}
}

// caBundles returns the caBundle of both APIServices, failing t unless they are set and equal.
func caBundles(ctx context.Context, t *testing.T, dyn dynamic.Interface) string {
	t.Helper()
	var bundles []string
	for _, name := range metricsAPIServices {
		obj, err := dyn.Resource(apiServiceResource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, _, _ := unstructured.NestedString(obj.Object, "spec", "caBundle")
		bundles = append(bundles, b)
	}
	if bundles[0] == "" || bundles[0] != bundles[1] {
		t.Fatalf("caBundles of %v: empty or different", metricsAPIServices)
	}
	return bundles[0]
}

func adapterPods(ctx context.Context, t *testing.T, client kubernetes.Interface) []string {
	t.Helper()
	pods, err := client.CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=wsscale,app.kubernetes.io/instance=" + chartRelease})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	return names
}

// metricsPoller reads /apis/custom.metrics.k8s.io/v1beta2 and the echo pods' metric through the
// API server every 100 ms and counts the requests that fail.
type metricsPoller struct {
	cancel        context.CancelFunc
	done          chan struct{}
	total, failed atomic.Int64
	// skipped counts the requests a tick did not start because maxInFlight were open.
	skipped      atomic.Int64
	mu           sync.Mutex
	firstFailure error
}

func startMetricsPoller(ctx context.Context, client kubernetes.Interface) *metricsPoller {
	ctx, cancel := context.WithCancel(ctx)
	p := &metricsPoller{cancel: cancel, done: make(chan struct{})}
	paths := []string{
		"/apis/custom.metrics.k8s.io/v1beta2",
		"/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + chartEchoNS + "/pods/*/websocket_connections",
	}
	// Each tick starts its requests without waiting for the previous ones, so that a slow answer
	// does not thin the polling out; at most maxInFlight requests are open at once.
	const maxInFlight = 20
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	get := func(path string) {
		defer wg.Done()
		defer func() { <-sem }()
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		_, err := client.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(rctx)
		if ctx.Err() != nil {
			return // stopped: neither a success nor a failure
		}
		p.total.Add(1)
		if err != nil {
			p.failed.Add(1)
			p.mu.Lock()
			if p.firstFailure == nil {
				p.firstFailure = fmt.Errorf("%s at %s: %w", path, time.Now().Format(time.RFC3339Nano), err)
			}
			p.mu.Unlock()
		}
	}
	go func() {
		defer close(p.done)
		defer wg.Wait()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, path := range paths {
				select {
				case sem <- struct{}{}:
					wg.Add(1)
					go get(path)
				default:
					p.skipped.Add(1)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *metricsPoller) stop() (total, failed int64, first error) {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total.Load(), p.failed.Load(), p.firstFailure
}

// installChartEcho runs one echo pod selected by the chart's default pod selection.
func installChartEcho(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	t.Helper()
	must[*corev1.Namespace](t, "namespace")(client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: chartEchoNS}}, metav1.CreateOptions{}))
	createScrapedEcho(ctx, t, client, chartEchoNS)
}

// createScrapedEcho creates the Deployment echo in ns (one replica, the chart's selection label and
// the scrape annotations) and returns its ready pod.
func createScrapedEcho(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) *corev1.Pod {
	t.Helper()
	labels := map[string]string{"app": "echo", "wsscale.io/scrape": "true"}
	must[*appsv1.Deployment](t, "echo deployment")(client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"prometheus.io/port": "9090", "prometheus.io/path": "/metrics"}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{
						Name: "echo", Image: "wsscale/echo:dev",
						Env:   []corev1.EnvVar{{Name: "PORT", Value: "8080"}, {Name: "METRICS_PORT", Value: "9090"}, {Name: "DRAIN_TIMEOUT", Value: "2s"}},
						Ports: []corev1.ContainerPort{{Name: "ws", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("ws")}},
							PeriodSeconds: 1},
					}},
				},
			},
		},
	}, metav1.CreateOptions{}))
	pods := waitForReadyPods(ctx, t, client, ns, "app=echo", 1)
	return &pods[0]
}

func createChartHPA(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	t.Helper()
	must[*autoscalingv2.HorizontalPodAutoscaler](t, "HPA")(client.AutoscalingV2().HorizontalPodAutoscalers(chartEchoNS).Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"},
			MinReplicas:    ptr.To[int32](1),
			MaxReplicas:    3,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: "websocket_connections"},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resourceQuantity(100)},
				},
			}},
		},
	}, metav1.CreateOptions{}))
}

// checkNothingLeft proves that helm uninstall removed the APIServices, the RBAC and the Secret.
func checkNothingLeft(ctx context.Context, t *testing.T, client kubernetes.Interface, dyn dynamic.Interface) {
	t.Helper()
	for _, name := range metricsAPIServices {
		if _, err := dyn.Resource(apiServiceResource).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("APIService %s after uninstall: %v, want NotFound", name, err)
		}
	}
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + chartRelease + ",app.kubernetes.io/managed-by=Helm"}
	if crs, err := client.RbacV1().ClusterRoles().List(ctx, sel); err != nil || len(crs.Items) > 0 {
		t.Errorf("ClusterRoles after uninstall: %v %v", crs, err)
	}
	if crbs, err := client.RbacV1().ClusterRoleBindings().List(ctx, sel); err != nil || len(crbs.Items) > 0 {
		t.Errorf("ClusterRoleBindings after uninstall: %v %v", crbs, err)
	}
	if rbs, err := client.RbacV1().RoleBindings("kube-system").List(ctx, sel); err != nil || len(rbs.Items) > 0 {
		t.Errorf("RoleBindings in kube-system after uninstall: %v %v", rbs, err)
	}
	if secrets, err := client.CoreV1().Secrets(chartNamespace).List(ctx, metav1.ListOptions{}); err != nil {
		t.Error(err)
	} else {
		for _, s := range secrets.Items {
			t.Errorf("Secret %s left after uninstall", s.Name)
		}
	}
}
