package e2e

import (
	"bytes"
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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	autoscalingv1alpha1 "github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/test/e2e/framework"
)

var (
	crdResource        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	scaleGuardResource = autoscalingv1alpha1.SchemeGroupVersion.WithResource("scaleguards")
)

// installScaleGuardCRD applies the generated CRD of config/crd/bases to the cluster by
// server-side apply and waits until the API server serves it.
func installScaleGuardCRD(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "crd", "bases", "autoscaling.wsscale.io_scaleguards.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd unstructured.Unstructured
	if err := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096).Decode(&crd.Object); err != nil {
		t.Fatalf("decode the generated CRD: %v", err)
	}
	if _, err := dyn.Resource(crdResource).Apply(ctx, crd.GetName(), &crd, metav1.ApplyOptions{FieldManager: "wsscale-e2e", Force: true}); err != nil {
		t.Fatalf("the API server rejected the generated CRD: %v", err)
	}
	waitFor(ctx, t, time.Minute, func() (bool, string) {
		got, err := dyn.Resource(crdResource).Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				// Established can precede the discovery and the storage of the new resource by a moment.
				_, err := dyn.Resource(scaleGuardResource).Namespace("default").List(ctx, metav1.ListOptions{Limit: 1})
				return err == nil, fmt.Sprintf("list scaleguards: %v", err)
			}
		}
		return false, fmt.Sprintf("CRD not established: %v", conds)
	})
}

// TestScaleGuardCRD proves the generated ScaleGuard CRD on the real API server: it is accepted,
// its defaults apply, the scale subresource works (GET /scale, `kubectl scale`) once spec.replicas
// is set and serves status.selector as the scale's selector, the targetRef cannot change, and
// `kubectl get` shows the printer columns.
func TestScaleGuardCRD(t *testing.T) {
	c := framework.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	installScaleGuardCRD(ctx, t, dyn)
	const ns = "scaleguard-crd"
	createNamespace(ctx, t, c.Client(), ns)
	guards := dyn.Resource(scaleGuardResource).Namespace(ns)

	created, err := guards.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": autoscalingv1alpha1.SchemeGroupVersion.String(),
		"kind":       "ScaleGuard",
		"metadata":   map[string]any{"name": "echo"},
		"spec": map[string]any{
			"targetRef": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "echo"},
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create a ScaleGuard: %v", err)
	}
	var guard autoscalingv1alpha1.ScaleGuard
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(created.Object, &guard, true); err != nil {
		t.Fatalf("the served object does not decode strictly into the Go type: %v", err)
	}
	sd := guard.Spec.ScaleDown
	if guard.Spec.Replicas != nil {
		t.Errorf("spec.replicas = %d, want unset (no schema default)", *guard.Spec.Replicas)
	}
	if sd.DrainTimeout == nil || sd.DrainTimeout.Duration != 10*time.Minute || sd.EmptyThreshold == nil || *sd.EmptyThreshold != 0 ||
		sd.OnTimeout != autoscalingv1alpha1.OnTimeoutProceed || sd.MaxVictimsPerStep == nil || *sd.MaxVictimsPerStep != 1 {
		t.Errorf("scaleDown defaults not applied: %+v", sd)
	}

	// Without spec.replicas the scale subresource cannot be read: the reason it has no
	// default and the controller seeds it from the target.
	if _, err := guards.Get(ctx, "echo", metav1.GetOptions{}, "scale"); err == nil {
		t.Errorf("GET /scale succeeded without spec.replicas; the controller's seeding assumes it fails")
	}

	if _, err := guards.Patch(ctx, "echo", types.MergePatchType, []byte(`{"spec":{"replicas":3}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("set spec.replicas: %v", err)
	}
	const selector = "app=echo,wsscale.io/drain notin (true)"
	if _, err := guards.Patch(ctx, "echo", types.MergePatchType,
		[]byte(`{"status":{"replicas":2,"selector":"`+selector+`"}}`), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatalf("write status: %v", err)
	}
	scale, err := guards.Get(ctx, "echo", metav1.GetOptions{}, "scale")
	if err != nil {
		t.Fatalf("GET /scale: %v", err)
	}
	specReplicas, _, _ := unstructured.NestedInt64(scale.Object, "spec", "replicas")
	statusReplicas, _, _ := unstructured.NestedInt64(scale.Object, "status", "replicas")
	gotSelector, _, _ := unstructured.NestedString(scale.Object, "status", "selector")
	if scale.GetKind() != "Scale" || specReplicas != 3 || statusReplicas != 2 || gotSelector != selector {
		t.Errorf("scale = %s %v, want Scale with spec.replicas 3, status.replicas 2, status.selector %q", scale.GetKind(), scale.Object, selector)
	}

	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(root, ".local", "bin", "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig(), "-n", ns}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	kubectl("scale", "scaleguard/echo", "--replicas=5")
	got, err := guards.Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ := unstructured.NestedInt64(got.Object, "spec", "replicas"); r != 5 {
		t.Errorf("after kubectl scale --replicas=5: spec.replicas = %d", r)
	}
	table := kubectl("get", "sg", "echo")
	header := strings.Fields(strings.SplitN(table, "\n", 2)[0])
	if want := []string{"NAME", "TARGET", "DESIRED", "APPLIED", "STATE", "AGE"}; strings.Join(header, " ") != strings.Join(want, " ") {
		t.Errorf("kubectl get sg: columns %v, want %v\n%s", header, want, table)
	}

	// The target cannot change; other fields can.
	_, err = guards.Patch(ctx, "echo", types.MergePatchType, []byte(`{"spec":{"targetRef":{"name":"other"}}}`), metav1.PatchOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "targetRef is immutable") {
		t.Errorf("changing spec.targetRef: err = %v, want Invalid with 'targetRef is immutable'", err)
	}
	if _, err := guards.Patch(ctx, "echo", types.MergePatchType, []byte(`{"spec":{"paused":true}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("setting spec.paused: %v", err)
	}
	// A negative replica count and an unknown onTimeout are refused by the schema.
	for _, patch := range []string{`{"spec":{"replicas":-1}}`, `{"spec":{"scaleDown":{"onTimeout":"Later"}}}`, `{"spec":{"scaleDown":{"maxVictimsPerStep":0}}}`} {
		if _, err := guards.Patch(ctx, "echo", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("patch %s: err = %v, want Invalid", patch, err)
		}
	}
}

// getScaleGuard reads a ScaleGuard through the dynamic client.
func getScaleGuard(ctx context.Context, dyn dynamic.Interface, ns, name string) (*autoscalingv1alpha1.ScaleGuard, error) {
	u, err := dyn.Resource(scaleGuardResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var g autoscalingv1alpha1.ScaleGuard
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &g); err != nil {
		return nil, err
	}
	return &g, nil
}
