package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

// kedaModule is the pinned KEDA release; hack/build-keda.sh builds its operator and metrics
// API server into .local/bin (only for the scale race, not for make test).
const kedaModule = "github.com/kedacore/keda/v2@v2.21.0"

// kedaManifests are KEDA's own install manifests, as shipped in its module, in apply order.
var kedaManifests = []string{
	"config/general/namespace.yaml",
	"config/service_account/service_account.yaml",
	"config/rbac/role.yaml",
	"config/rbac/role_binding.yaml",
	"config/metrics-server/role.yaml",
	"config/metrics-server/role_binding.yaml",
	"config/manager/service.yaml",
	"config/metrics-server/service.yaml",
	"config/metrics-server/api_service.yaml",
	"config/manager/manager.yaml",
	"config/metrics-server/deployment.yaml",
}

var (
	scaledObjectResource       = schema.GroupVersionResource{Group: "keda.sh", Version: "v1alpha1", Resource: "scaledobjects"}
	externalMetricsAPIService  = "v1beta1.external.metrics.k8s.io"
	kedaNamespace              = "keda"
	kedaOperatorArgsNoWebhooks = "--enable-webhook-patching=false" // the admission webhooks are not installed
)

// kedaModuleDir returns the downloaded KEDA module, failing t when KEDA is not built.
func kedaModuleDir(t *testing.T) string {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"keda-operator", "keda-adapter"} {
		if _, err := os.Stat(filepath.Join(root, ".local", "bin", bin)); err != nil {
			t.Fatalf("KEDA is not built (hack/build-keda.sh builds it for make bench-scale): %v", err)
		}
	}
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), filepath.FromSlash(kedaModule))
	if _, err := os.Stat(filepath.Join(dir, "config", "crd", "bases")); err != nil {
		t.Fatalf("KEDA's module (%s): %v", kedaModule, err)
	}
	return dir
}

// installKEDA installs KEDA from the manifests and CRDs in its module: the operator (with its
// certificate rotation, which issues the certificates of its gRPC service and of the metrics
// API server, and patches the APIService's caBundle) and the metrics API server behind
// external.metrics.k8s.io. It waits until that APIService is Available and removes it all at
// the end of the test.
func installKEDA(ctx context.Context, t *testing.T, c *localcluster.Cluster) {
	t.Helper()
	dir := kedaModuleDir(t)
	d := newDryRunner(t, c.RESTConfig())
	crds, err := filepath.Glob(filepath.Join(dir, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("KEDA's CRDs in %s: %v", dir, err)
	}
	for _, f := range crds {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d.installCRDs(ctx, f, data)
	}
	d.resetMapper()
	var objs []*unstructured.Unstructured
	for _, rel := range kedaManifests {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, decodeYAML(t, rel, data)...)
	}
	t.Cleanup(func() { deleteKEDA(t, c, objs) })
	for _, obj := range objs {
		if obj.GetKind() == "Deployment" && obj.GetName() == "keda-operator" {
			containers, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
			ctr := containers[0].(map[string]any)
			args, _ := ctr["args"].([]any)
			ctr["args"] = append(args, kedaOperatorArgsNoWebhooks)
			if err := unstructured.SetNestedSlice(obj.Object, containers, "spec", "template", "spec", "containers"); err != nil {
				t.Fatal(err)
			}
		}
		res, err := d.resource(obj, obj.GetNamespace())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.apply(ctx, res, obj, nil); err != nil {
			t.Fatalf("apply %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	waitForReadyPods(ctx, t, c.Client(), kedaNamespace, "app=keda-operator", 1)
	waitForReadyPods(ctx, t, c.Client(), kedaNamespace, "app=keda-metrics-apiserver", 1)
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	waitAPIServiceAvailable(ctx, t, dyn, externalMetricsAPIService)
}

// waitAPIServiceAvailable waits until the named APIService reports Available.
func waitAPIServiceAvailable(ctx context.Context, t *testing.T, dyn dynamic.Interface, name string) {
	t.Helper()
	poll(ctx, t, "APIService "+name+" Available", 3*time.Minute, func() (bool, string) {
		ok, state := apiServiceAvailable(ctx, dyn, name)
		return ok, state
	})
}

func apiServiceAvailable(ctx context.Context, dyn dynamic.Interface, name string) (bool, string) {
	obj, err := dyn.Resource(apiServiceResource).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, err.Error()
	}
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Available" {
			return m["status"] == "True", fmt.Sprintf("%v (%v)", m["status"], m["message"])
		}
	}
	return false, "no Available condition"
}

// deleteKEDA removes KEDA's objects (the CRDs stay, as a KEDA uninstall that keeps them).
func deleteKEDA(t *testing.T, c *localcluster.Cluster, objs []*unstructured.Unstructured) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDryRunner(t, c.RESTConfig())
	for i := len(objs) - 1; i >= 0; i-- {
		res, err := d.resource(objs[i], objs[i].GetNamespace())
		if err != nil {
			t.Error(err)
			continue
		}
		if err := res.Delete(ctx, objs[i].GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete %s %s: %v", objs[i].GetKind(), objs[i].GetName(), err)
		}
	}
	waitNamespaceGone(ctx, t, c.Client(), kedaNamespace)
}

// installRaceKEDA is the race's KEDA system: Prometheus scraping the pods, KEDA's Prometheus
// scaler on the sum of the namespace's connections with the same target per pod, next to the
// wsscale adapter's custom.metrics.k8s.io (both APIServices must stay Available).
func installRaceKEDA(interval string) func(context.Context, *testing.T, *localcluster.Cluster) raceSetup {
	return func(ctx context.Context, t *testing.T, c *localcluster.Cluster) raceSetup {
		installPrometheus(ctx, t, c, interval)
		installChartAdapter(ctx, t, c)
		installKEDA(ctx, t, c)
		dyn, err := dynamic.NewForConfig(c.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range append([]string{externalMetricsAPIService}, metricsAPIServices...) {
			if ok, state := apiServiceAvailable(ctx, dyn, name); !ok {
				t.Fatalf("APIService %s next to the other metrics API: %s", name, state)
			}
		}
		return raceSetup{
			path: "", // the race reads it from the HPA KEDA makes
			scale: func(ctx context.Context, t *testing.T, _ kubernetes.Interface) {
				so := &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
					"metadata": map[string]any{"name": "echo", "namespace": raceNamespace},
					"spec": map[string]any{
						"scaleTargetRef":  map[string]any{"name": "echo"},
						"minReplicaCount": int64(2), "maxReplicaCount": int64(raceMaxPods),
						"pollingInterval": int64(15),
						"advanced": map[string]any{"horizontalPodAutoscalerConfig": map[string]any{"behavior": map[string]any{
							"scaleDown": map[string]any{"stabilizationWindowSeconds": int64(raceScaleDownWindow)},
						}}},
						"triggers": []any{map[string]any{
							"type": "prometheus",
							"metadata": map[string]any{
								"serverAddress": "http://prometheus." + promNamespace + ".svc:9090",
								"query":         fmt.Sprintf(`sum(websocket_connections_active{namespace=%q})`, raceNamespace),
								"threshold":     fmt.Sprint(raceTarget),
							},
						}},
					},
				}}
				if _, err := dyn.Resource(scaledObjectResource).Namespace(raceNamespace).Create(ctx, so, metav1.CreateOptions{}); err != nil {
					t.Fatalf("create the ScaledObject: %v", err)
				}
			},
			hpa:        "keda-hpa-echo",
			components: []string{"prometheus", "keda-operator", "keda-adapter"},
		}
	}
}
