package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/wsscale/wsscale/test/e2e/framework"
)

var nsResource = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

const checkNamespace = "e2e-manifest-check"

// fixedName says whether the API fixes the object's name (APIService: version.group; CRD:
// plural.group), so that a dry run cannot use a name of its own.
func fixedName(kind string) bool { return kind == "APIService" || kind == "CustomResourceDefinition" }

// isolate renames obj for the dry run, except objects whose names the API fixes.
func isolate(obj *unstructured.Unstructured) {
	switch {
	case fixedName(obj.GetKind()):
		return
	case obj.GetKind() == "Namespace":
		obj.SetName(checkNamespace)
		return
	}
	obj.SetName(obj.GetName() + "-check")
	if ports, ok, _ := unstructured.NestedSlice(obj.Object, "spec", "ports"); ok {
		for _, p := range ports {
			if m, ok := p.(map[string]any); ok {
				delete(m, "nodePort")
			}
		}
		_ = unstructured.SetNestedSlice(obj.Object, ports, "spec", "ports")
	}
}

// TestDemoManifestsAreAccepted submits every object of hack/demo/*.yaml to the real API server with
// a server-side dry run (apply), so that a manifest the demo applies (and users copy) that today's API
// server would reject fails here rather than in front of a user.
func TestDemoManifestsAreAccepted(t *testing.T) {
	c := framework.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := c.RESTConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(nsResource).Apply(ctx, checkNamespace, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": checkNamespace},
	}}, metav1.ApplyOptions{FieldManager: "wsscale-e2e", Force: true}); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "hack", "demo", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in hack/demo: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for i := 0; ; i++ {
			var obj unstructured.Unstructured
			if err := dec.Decode(&obj.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s document %d: %v", filepath.Base(file), i, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			name := filepath.Base(file) + ": " + obj.GetKind() + " " + obj.GetName()
			gvk := obj.GroupVersionKind()
			mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Errorf("%s: the API server does not serve %s: %v", name, gvk, err)
				continue
			}
			// Other tests of this cluster run the same objects under the same names; validate a
			// copy that cannot meet them: its own name, its own namespace, and a node port the
			// server assigns (a fixed one would be taken).
			isolate(&obj)
			var res dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
			if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
				obj.SetNamespace(checkNamespace)
				res = dyn.Resource(mapping.Resource).Namespace(checkNamespace)
			}
			if err := dryRun(ctx, res, &obj); err != nil {
				t.Errorf("%s: rejected: %v", name, err)
			}
		}
	}
}

// dryRun submits obj to the API server as a strict server-side dry run. A server-side apply
// validates strictly (unknown fields are errors) whether or not another test already created an
// object of that name; but an object whose name the API fixes may exist with fields of another
// manager that an apply would merge in (an APIService's insecureSkipTLSVerify next to this one's
// caBundle), so it replaces the existing object instead, as a fresh install would create it.
func dryRun(ctx context.Context, res dynamic.ResourceInterface, obj *unstructured.Unstructured) error {
	if !fixedName(obj.GetKind()) {
		_, err := res.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{
			FieldManager: "wsscale-e2e", Force: true, DryRun: []string{metav1.DryRunAll},
		})
		return err
	}
	existing, err := res.Get(ctx, obj.GetName(), metav1.GetOptions{})
	switch {
	case err == nil:
		obj = obj.DeepCopy()
		obj.SetResourceVersion(existing.GetResourceVersion())
		_, err = res.Update(ctx, obj, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
		return err
	case apierrors.IsNotFound(err):
		_, err = res.Create(ctx, obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
		return err
	default:
		return err
	}
}
