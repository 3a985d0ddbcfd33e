package app

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

func apiService(name string, service map[string]any) *unstructured.Unstructured {
	spec := map[string]any{"group": "custom.metrics.k8s.io"}
	if service != nil {
		spec["service"] = service
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
}

func TestInspectAPIServices(t *testing.T) {
	scheme := runtime.NewScheme()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme,
		map[schema.GroupVersionResource]string{apiServices: "APIServiceList"},
		apiService("v1beta2.custom.metrics.k8s.io", map[string]any{"namespace": "monitoring", "name": "prometheus-adapter"}),
		apiService("v1beta1.custom.metrics.k8s.io", nil),
	)
	got := inspectAPIServices(context.Background(), client)
	want := []apiServiceFinding{
		{name: "v1beta2.custom.metrics.k8s.io", service: "monitoring/prometheus-adapter", found: true},
		{name: "v1beta1.custom.metrics.k8s.io", service: "", found: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("finding %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// The check itself only logs; it must not fail on any finding.
	checkAPIServices(context.Background(), client, "wsscale-system/wsscale-adapter")

	empty := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{apiServices: "APIServiceList"})
	for _, f := range inspectAPIServices(context.Background(), empty) {
		if f.found || f.err != nil {
			t.Errorf("no APIService: finding %+v", f)
		}
	}
}
