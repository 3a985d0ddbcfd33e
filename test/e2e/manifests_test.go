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

// TestDemoManifestsAreAccepted submits every object of hack/demo/*.yaml to the real API server with
// a server-side dry run, so that a manifest the demo applies (and users copy) that today's API
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
			var res dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
			if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
				// The namespace need not exist for a dry run of a namespaced object to be
				// validated; use default when it does not.
				ns := obj.GetNamespace()
				if _, err := dyn.Resource(nsResource).Get(ctx, ns, metav1.GetOptions{}); err != nil {
					obj.SetNamespace("default")
				}
				res = dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
			}
			if _, err := res.Create(ctx, &obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
				t.Errorf("%s: rejected: %v", name, err)
			}
		}
	}
}
