package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/wsscale/wsscale/test/e2e/framework"
)

const (
	appChart            = "deploy/helm/websocket-app"
	appChartCheckNS     = "e2e-chart-app-check"
	appChartInstallNS   = "e2e-chart-app"
	scaleGuardCRDPath   = "config/crd/bases/autoscaling.wsscale.io_scaleguards.yaml"
	fieldManagerE2E     = "wsscale-e2e"
	strictFieldValidate = "Strict"
)

// TestWebSocketAppChartScenariosAreAccepted renders every ci/*-values.yaml scenario of the websocket-app
// chart and submits each object to the real API server as a strict server-side dry run (what
// `kubectl apply --dry-run=server --validate=strict` does), with the third-party CRDs the scenarios use
// installed from the shared CRD folder. It also checks that the same dry run rejects the mistakes the
// chart avoids, so that a pass means something.
func TestWebSocketAppChartScenariosAreAccepted(t *testing.T) {
	c := framework.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	v := newDryRunner(t, c.RESTConfig())
	installThirdPartyCRDs(ctx, t, v, root)
	guardCRD := dryRunScaleGuardCRD(ctx, t, v, root)
	v.resetMapper()
	createNamespace(ctx, t, c.Client(), appChartCheckNS)

	scenarios, err := filepath.Glob(filepath.Join(root, appChart, "ci", "*-values.yaml"))
	if err != nil || len(scenarios) == 0 {
		t.Fatalf("no ci scenarios in %s: %v", appChart, err)
	}
	for _, values := range scenarios {
		scenario := strings.TrimSuffix(filepath.Base(values), "-values.yaml")
		t.Run(scenario, func(t *testing.T) {
			objs := renderChart(t, root, appChart, appChartCheckNS, values)
			if len(objs) == 0 {
				t.Fatal("the scenario renders no objects")
			}
			var kinds []string
			for _, obj := range objs {
				kinds = append(kinds, obj.GetKind())
				if obj.GetKind() == "ScaleGuard" && !guardCRD {
					t.Logf("ScaleGuard %s not checked: %s is not in this tree", obj.GetName(), scaleGuardCRDPath)
					continue
				}
				if err := v.dryRun(ctx, obj, appChartCheckNS); err != nil {
					t.Errorf("%s %s: rejected: %v", obj.GetKind(), obj.GetName(), err)
					continue
				}
				// An API server drops fields of disabled features silently; the guarded HPA's
				// tolerance must survive, or the HPA keeps its 10% dead band.
				if want, ok, _ := unstructured.NestedFieldNoCopy(obj.Object, "spec", "behavior", "scaleDown", "tolerance"); ok {
					got, kept, _ := unstructured.NestedFieldNoCopy(v.last.Object, "spec", "behavior", "scaleDown", "tolerance")
					if !kept || fmt.Sprint(got) != fmt.Sprint(want) {
						t.Errorf("%s %s: behavior.scaleDown.tolerance %v was not kept by the API server (got %v)", obj.GetKind(), obj.GetName(), want, got)
					}
				}
			}
			sort.Strings(kinds)
			t.Logf("checked: %s", strings.Join(kinds, ", "))
		})
	}

	// The dry run must reject what a real cluster rejects; each case breaks one rendered object the way
	// widely shared configurations do.
	mistakes := []struct {
		name     string
		scenario string
		kind     string
		breakIt  func(obj *unstructured.Unstructured)
	}{
		{
			name: "removed traefik.containo.us group", scenario: "traefik", kind: "IngressRoute",
			breakIt: func(obj *unstructured.Unstructured) { obj.SetAPIVersion("traefik.containo.us/v1alpha1") },
		},
		{
			name: "session persistence is not in the standard channel", scenario: "gateway-api", kind: "HTTPRoute",
			breakIt: func(obj *unstructured.Unstructured) {
				rules, _, _ := unstructured.NestedSlice(obj.Object, "spec", "rules")
				rules[0].(map[string]any)["sessionPersistence"] = map[string]any{"type": "Cookie", "sessionName": "s"}
				_ = unstructured.SetNestedSlice(obj.Object, rules, "spec", "rules")
			},
		},
		{
			name: "unknown field in a Traefik sticky cookie", scenario: "traefik", kind: "IngressRoute",
			breakIt: func(obj *unstructured.Unstructured) {
				routes, _, _ := unstructured.NestedSlice(obj.Object, "spec", "routes")
				svc := routes[0].(map[string]any)["services"].([]any)[0].(map[string]any)
				svc["sticky"].(map[string]any)["cookie"].(map[string]any)["maxAgeSeconds"] = int64(60)
				_ = unstructured.SetNestedSlice(obj.Object, routes, "spec", "routes")
			},
		},
		{
			name: "DestinationRule with both simple and consistentHash", scenario: "istio", kind: "DestinationRule",
			breakIt: func(obj *unstructured.Unstructured) {
				_ = unstructured.SetNestedField(obj.Object, "LEAST_REQUEST", "spec", "trafficPolicy", "loadBalancer", "simple")
			},
		},
		{
			name: "HPA Pods metric with a Utilization target", scenario: "default", kind: "HorizontalPodAutoscaler",
			breakIt: func(obj *unstructured.Unstructured) {
				metrics, _, _ := unstructured.NestedSlice(obj.Object, "spec", "metrics")
				metrics[0].(map[string]any)["pods"].(map[string]any)["target"] = map[string]any{"type": "Utilization", "averageUtilization": int64(50)}
				_ = unstructured.SetNestedSlice(obj.Object, metrics, "spec", "metrics")
			},
		},
	}
	for _, m := range mistakes {
		t.Run("rejects "+m.name, func(t *testing.T) {
			values := filepath.Join(root, appChart, "ci", m.scenario+"-values.yaml")
			var found bool
			for _, obj := range renderChart(t, root, appChart, appChartCheckNS, values) {
				if obj.GetKind() != m.kind {
					continue
				}
				found = true
				m.breakIt(obj)
				if err := v.dryRun(ctx, obj, appChartCheckNS); err == nil {
					t.Errorf("%s %s was accepted; a real cluster rejects it", obj.GetKind(), obj.GetName())
				} else {
					t.Logf("rejected as expected: %v", err)
				}
			}
			if !found {
				t.Fatalf("scenario %s renders no %s", m.scenario, m.kind)
			}
		})
	}
}

// TestWebSocketAppChartInstalls installs the chart with no values at all on the local cluster (its default
// image runs there): the pods become Ready behind the Service, and the Deployment's replicas belong to the
// HPA, which raises them to minReplicas although the chart leaves the field out.
func TestWebSocketAppChartInstalls(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	createNamespace(ctx, t, client, appChartInstallNS)
	const release = "echo"
	out, err := runHelm(ctx, root, c.Kubeconfig(), "install", release, filepath.Join(root, appChart),
		"--namespace", appChartInstallNS, "--wait", "--timeout", "3m")
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := runHelm(ctx, root, c.Kubeconfig(), "uninstall", release, "--namespace", appChartInstallNS, "--wait"); err != nil {
			t.Logf("helm uninstall: %v\n%s", err, out)
		}
		if err := client.CoreV1().Namespaces().Delete(ctx, appChartInstallNS, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("delete namespace %s: %v", appChartInstallNS, err)
		}
	})
	if !strings.Contains(out, "rollout status deployment/echo-websocket-app") {
		t.Errorf("NOTES do not tell how to check the rollout:\n%s", out)
	}

	const name = "echo-websocket-app"
	selector := "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/name=websocket-app"
	hpa, err := client.AutoscalingV2().HorizontalPodAutoscalers(appChartInstallNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the chart's HPA: %v", err)
	}
	minReplicas := int(*hpa.Spec.MinReplicas)
	// Only the HPA sets the replicas: the chart's applied configuration leaves them out.
	deploy, err := client.AppsV1().Deployments(appChartInstallNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range deploy.ManagedFields {
		if f.Manager == "helm" && f.FieldsV1 != nil && bytes.Contains(f.FieldsV1.Raw, []byte(`"f:replicas"`)) {
			t.Errorf("helm manages spec.replicas of the Deployment; a `helm upgrade` would reset the HPA's choice")
		}
	}
	pods := waitForReadyPods(ctx, t, client, appChartInstallNS, selector, minReplicas)
	waitForEndpoints(ctx, t, client, appChartInstallNS, name, minReplicas)

	for _, p := range pods {
		spec := p.Spec
		if grace := spec.TerminationGracePeriodSeconds; grace == nil || *grace < 30+5 {
			t.Errorf("pod %s: terminationGracePeriodSeconds %d does not cover the preStop sleep and the 30s drain", p.Name, ptrValue(grace))
		}
		ctr := spec.Containers[0]
		if ctr.Lifecycle == nil || ctr.Lifecycle.PreStop == nil || ctr.Lifecycle.PreStop.Sleep == nil {
			t.Errorf("pod %s: no preStop sleep action", p.Name)
		}
		env := map[string]string{}
		for _, e := range ctr.Env {
			env[e.Name] = e.Value
		}
		for _, want := range []string{"PORT", "MAX_CONNECTIONS", "PING_INTERVAL", "DRAIN_TIMEOUT", "ALLOWED_ORIGINS", "SHUTDOWN_DELAY", "DRAIN_LABELS_FILE"} {
			if _, ok := env[want]; !ok {
				t.Errorf("pod %s: env %s missing", p.Name, want)
			}
		}
		if p.Labels["wsscale.io/scrape"] != "true" || p.Annotations["prometheus.io/port"] != "9090" {
			t.Errorf("pod %s: not selected for scraping: labels %v annotations %v", p.Name, p.Labels, p.Annotations)
		}
	}

	// helm test opens WebSockets through the Service and passes only when every one echoes; with the
	// Service pointing nowhere it fails, naming what failed.
	// (A passed test pod is deleted, as the chart asks: no --logs here, helm could not read them.)
	if out, err := runHelm(ctx, root, c.Kubeconfig(), "test", release, "--namespace", appChartInstallNS, "--timeout", "2m"); err != nil {
		t.Errorf("helm test on a working release: %v\n%s", err, out)
	} else if !strings.Contains(out, "Phase:          Succeeded") {
		t.Errorf("helm test passed without a Succeeded test pod:\n%s", out)
	}
	svc, err := client.CoreV1().Services(appChartInstallNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	working := svc.Spec.Selector
	broken := svc.DeepCopy()
	broken.Spec.Selector = map[string]string{"app.kubernetes.io/name": "nothing"}
	if _, err := client.CoreV1().Services(appChartInstallNS).Update(ctx, broken, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForEndpoints(ctx, t, client, appChartInstallNS, name, 0)
	out, err = runHelm(ctx, root, c.Kubeconfig(), "test", release, "--namespace", appChartInstallNS, "--timeout", "2m", "--logs")
	if err == nil {
		t.Errorf("helm test passed with a Service that selects no pod:\n%s", out)
	} else if !strings.Contains(out, "0 of 5 connections opened") {
		t.Errorf("helm test failed without saying why:\n%s", out)
	} else {
		t.Logf("helm test with the Service pointing nowhere failed as it should: %v", err)
	}
	svc, err = client.CoreV1().Services(appChartInstallNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Selector = working
	if _, err := client.CoreV1().Services(appChartInstallNS).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A pod deleted with clients on it runs the chart's preStop sleep, then drains over DRAIN_TIMEOUT
	// within the grace period the chart derived: every client gets 1001, none is cut abruptly.
	victim := pods[0]
	const clients = 20
	run := startLoad(c, victim.Status.PodIP, clients)
	defer run.stop()
	waitFor(ctx, t, 30*time.Second, func() (bool, string) {
		got, err := connectionsActive(ctx, c, victim.Status.PodIP)
		return err == nil && got == clients, fmt.Sprintf("pod %s: websocket_connections_active = %v (%v), want %d", victim.Name, got, err, clients)
	})
	if err := client.CoreV1().Pods(appChartInstallNS).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-run.done:
		if res.err != nil {
			t.Fatalf("load against deleted pod %s: %v", victim.Name, res.err)
		}
		if got := res.ClosesByCode["1001"]; got != clients || res.AbnormalDrops != 0 {
			t.Errorf("clients of deleted pod %s: closes %v, abnormal drops %d; want %d × 1001 and no drops",
				victim.Name, res.ClosesByCode, res.AbnormalDrops, clients)
		}
		t.Logf("deleted pod %s: closes %v, abnormal drops %d, after %v", victim.Name, res.ClosesByCode, res.AbnormalDrops, res.Elapsed)
	case <-ctx.Done():
		t.Fatalf("clients of deleted pod %s were never closed", victim.Name)
	}
}

// dryRunner submits objects to the API server as strict server-side apply dry runs.
type dryRunner struct {
	t      *testing.T
	dyn    dynamic.Interface
	disco  discovery.CachedDiscoveryInterface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	// last is the object the API server returned for the last successful apply.
	last *unstructured.Unstructured
}

func newDryRunner(t *testing.T, cfg *rest.Config) *dryRunner {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disco := memory.NewMemCacheClient(dc)
	return &dryRunner{t: t, dyn: dyn, disco: disco, mapper: restmapper.NewDeferredDiscoveryRESTMapper(disco)}
}

// resetMapper forgets the discovered resources, so that newly installed CRDs are found.
func (d *dryRunner) resetMapper() { d.mapper.Reset() }

// resource maps obj to the client for its resource, in ns when it is namespaced.
func (d *dryRunner) resource(obj *unstructured.Unstructured, ns string) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	mapping, err := d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("the API server does not serve %s: %w", gvk, err)
	}
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		obj.SetNamespace(ns)
		return d.dyn.Resource(mapping.Resource).Namespace(ns), nil
	}
	return d.dyn.Resource(mapping.Resource), nil
}

// dryRun applies obj with dryRun=All and fieldValidation=Strict: unknown or duplicate fields are errors,
// as are schema and CEL violations.
func (d *dryRunner) dryRun(ctx context.Context, obj *unstructured.Unstructured, ns string) error {
	res, err := d.resource(obj, ns)
	if err != nil {
		return err
	}
	return d.apply(ctx, res, obj, []string{metav1.DryRunAll})
}

func (d *dryRunner) apply(ctx context.Context, res dynamic.ResourceInterface, obj *unstructured.Unstructured, dryRun []string) error {
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	force := true
	got, err := res.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
		FieldManager: fieldManagerE2E, Force: &force, DryRun: dryRun, FieldValidation: strictFieldValidate,
	})
	if err != nil {
		return err
	}
	d.last = got
	return nil
}

// installCRDs applies every CRD in file for real and waits until each is Established.
func (d *dryRunner) installCRDs(ctx context.Context, file string, data []byte) {
	d.t.Helper()
	objs, err := decodeObjects(data)
	if err != nil {
		d.t.Fatalf("%s: %v", file, err)
	}
	res := d.dyn.Resource(crdResource)
	for _, obj := range objs {
		if obj.GetKind() != "CustomResourceDefinition" {
			d.t.Fatalf("%s: %s %s is not a CRD", file, obj.GetKind(), obj.GetName())
		}
		if err := d.apply(ctx, res, obj, nil); err != nil {
			d.t.Fatalf("%s: install CRD %s: %v", file, obj.GetName(), err)
		}
	}
	for _, obj := range objs {
		waitFor(ctx, d.t, time.Minute, func() (bool, string) {
			crd, err := res.Get(ctx, obj.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("CRD %s is not Established: %v", obj.GetName(), conds)
		})
	}
}

// installThirdPartyCRDs installs the shared third-party CRD schemas (Traefik, Istio, Linkerd, cert-manager,
// Prometheus Operator, Gateway API, HAProxy), found in shared/crds in a directory above the repository.
func installThirdPartyCRDs(ctx context.Context, t *testing.T, d *dryRunner, root string) {
	t.Helper()
	dir := ""
	for p := filepath.Dir(root); ; p = filepath.Dir(p) {
		if fi, err := os.Stat(filepath.Join(p, "shared", "crds")); err == nil && fi.IsDir() {
			dir = filepath.Join(p, "shared", "crds")
			break
		}
		if filepath.Dir(p) == p {
			t.Fatalf("no shared/crds directory above %s: the third-party CRD schemas are needed to validate the chart", root)
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s: %v", dir, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d.installCRDs(ctx, f, data)
	}
}

// dryRunScaleGuardCRD installs the project's ScaleGuard CRD when this tree has it, and reports whether it did.
func dryRunScaleGuardCRD(ctx context.Context, t *testing.T, d *dryRunner, root string) bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, scaleGuardCRDPath))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	d.installCRDs(ctx, scaleGuardCRDPath, data)
	return true
}

// renderChart runs `helm template` on the chart with one values file and returns its objects.
// Extra helm arguments (such as --set) follow the values file.
func renderChart(t *testing.T, root, chart, ns, values string, extra ...string) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"template", "check", filepath.Join(root, chart), "--namespace", ns, "-f", values}, extra...)
	out, err := runHelm(ctx, root, "", args...)
	if err != nil {
		t.Fatalf("helm template -f %s: %v\n%s", filepath.Base(values), err, out)
	}
	objs, err := decodeObjects([]byte(out))
	if err != nil {
		t.Fatalf("helm template -f %s: %v", filepath.Base(values), err)
	}
	return objs
}

// runHelm runs the pinned helm binary with its state kept inside the test's cluster directory.
func runHelm(ctx context.Context, root, kubeconfig string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(root, ".local", "bin", "helm"), args...)
	home := filepath.Join(root, ".local", "helm-e2e")
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	if kubeconfig != "" {
		cmd.Env = append(cmd.Env, "KUBECONFIG="+kubeconfig)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// decodeObjects splits a multi-document YAML stream into its non-empty objects.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

// TestWebSocketAppManifestsAreCurrent renders the chart's scenarios into a temporary directory with
// hack/update-manifests.sh and fails when deploy/manifests differs: the plain YAML that kubectl users
// copy must be what the chart renders today. It needs no cluster.
func TestWebSocketAppManifestsAreCurrent(t *testing.T) {
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The pinned helm binary; building it is a no-op when it is current.
	if err := framework.EnsureBinaries(root); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "update-manifests.sh"), tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/update-manifests.sh: %v\n%s", err, out)
	}
	want := filepath.Join(tmp, "websocket-app")
	have := filepath.Join(root, "deploy", "manifests", "websocket-app")
	seen := map[string]bool{}
	err = filepath.WalkDir(want, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(want, path)
		seen[rel] = true
		fresh, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		committed, err := os.ReadFile(filepath.Join(have, rel))
		if err != nil || !bytes.Equal(fresh, committed) {
			t.Errorf("deploy/manifests/websocket-app/%s is out of date: run hack/update-manifests.sh", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(have, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(have, path)
		if !seen[rel] {
			t.Errorf("deploy/manifests/websocket-app/%s has no scenario any more: run hack/update-manifests.sh", rel)
		}
		return nil
	})
}

// ptrValue is *p, or 0 when p is nil.
func ptrValue(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// TestWebSocketAppValuesSchema checks that values.schema.json turns a wrong type, an unknown key or an
// unknown choice into a message naming the value, before anything is rendered. It needs no cluster.
func TestWebSocketAppValuesSchema(t *testing.T) {
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The pinned helm binary; building it is a no-op when it is current.
	if err := framework.EnsureBinaries(root); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		set  []string
		want string // empty: the values are valid
	}{
		{name: "defaults", set: nil},
		{name: "wrong type", set: []string{"--set", "server.port=http"}, want: "at '/server/port': got string, want integer"},
		{name: "unknown top-level key", set: []string{"--set", "replicas=3"}, want: "additional properties 'replicas' not allowed"},
		{name: "unknown nested key", set: []string{"--set", "autoscaling.targetCPU=80"}, want: "additional properties 'targetCPU' not allowed"},
		{name: "unknown exposure", set: []string{"--set", "exposure.type=nginx"}, want: "at '/exposure/type'"},
		{name: "quantity, not a number", set: []string{"--set-json", "autoscaling.targetConnectionsPerPod=300"}, want: "at '/autoscaling/targetConnectionsPerPod': got number, want string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			args := append([]string{"template", "check", filepath.Join(root, appChart)}, tc.set...)
			out, err := runHelm(ctx, root, "", args...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("helm template %v: %v\n%s", tc.set, err, out)
			case tc.want != "" && err == nil:
				t.Fatalf("helm template %v was accepted; want an error containing %q", tc.set, tc.want)
			case tc.want != "" && !strings.Contains(out, tc.want):
				t.Fatalf("helm template %v: error does not contain %q:\n%s", tc.set, tc.want, out)
			}
		})
	}
}

// TestWebSocketAppChartDashboard renders the chart with the Grafana dashboard on: one ConfigMap with the
// sidecar's label, whose data is the generated dashboard, byte for byte and valid JSON. Off by default.
// It needs no cluster.
func TestWebSocketAppChartDashboard(t *testing.T) {
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := framework.EnsureBinaries(root); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want, err := os.ReadFile(filepath.Join(root, appChart, "files", "dashboards", "websocket-app.json"))
	if err != nil {
		t.Fatal(err)
	}
	render := func(set ...string) []*unstructured.Unstructured {
		t.Helper()
		out, err := runHelm(ctx, root, "", append([]string{"template", "check", filepath.Join(root, appChart), "--namespace", "apps"}, set...)...)
		if err != nil {
			t.Fatalf("helm template %v: %v\n%s", set, err, out)
		}
		objs, err := decodeObjects([]byte(out))
		if err != nil {
			t.Fatal(err)
		}
		var maps []*unstructured.Unstructured
		for _, o := range objs {
			if o.GetKind() == "ConfigMap" {
				maps = append(maps, o)
			}
		}
		return maps
	}
	if maps := render(); len(maps) != 0 {
		t.Errorf("the default values render %d ConfigMaps, want none (the dashboard is optional)", len(maps))
	}
	maps := render("--set", "grafanaDashboard.enabled=true", "--set", "grafanaDashboard.namespace=monitoring")
	if len(maps) != 1 {
		t.Fatalf("%d ConfigMaps with the dashboard on, want 1", len(maps))
	}
	cm := maps[0]
	if cm.GetLabels()["grafana_dashboard"] != "1" || cm.GetNamespace() != "monitoring" {
		t.Errorf("ConfigMap %s/%s labels %v: want grafana_dashboard=1 in monitoring", cm.GetNamespace(), cm.GetName(), cm.GetLabels())
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "websocket-app.json")
	if data != strings.TrimSpace(string(want)) {
		t.Errorf("the ConfigMap's dashboard differs from %s/files/dashboards/websocket-app.json", appChart)
	}
	var board struct {
		UID    string           `json:"uid"`
		Panels []map[string]any `json:"panels"`
	}
	if err := json.Unmarshal([]byte(data), &board); err != nil || board.UID == "" || len(board.Panels) == 0 {
		t.Errorf("the ConfigMap's dashboard is not a dashboard: %v (uid %q, %d panels)", err, board.UID, len(board.Panels))
	}
}
