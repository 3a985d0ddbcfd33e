package app

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"
)

// apiServices is the resource of the APIService registrations.
var apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// customMetricsAPIServices are the registrations this adapter serves.
var customMetricsAPIServices = []string{"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"}

// apiServiceFinding is what the check found about one APIService.
type apiServiceFinding struct {
	name    string
	service string // NAMESPACE/NAME it points at; "" when served locally
	found   bool
	err     error
}

// inspectAPIServices reads the custom metrics APIService registrations.
func inspectAPIServices(ctx context.Context, client dynamic.Interface) []apiServiceFinding {
	out := make([]apiServiceFinding, 0, len(customMetricsAPIServices))
	for _, name := range customMetricsAPIServices {
		f := apiServiceFinding{name: name}
		obj, err := client.Resource(apiServices).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			f.err = err
		default:
			f.found = true
			ns, _, _ := unstructured.NestedString(obj.Object, "spec", "service", "namespace")
			svc, _, _ := unstructured.NestedString(obj.Object, "spec", "service", "name")
			if svc != "" {
				f.service = ns + "/" + svc
			}
		}
		out = append(out, f)
	}
	return out
}

// checkAPIServices warns when the custom.metrics.k8s.io APIService is
// registered for another Service: only one adapter can own that API group
// in a cluster, and requests then never reach this one.
func checkAPIServices(ctx context.Context, client dynamic.Interface, owner string) {
	for _, f := range inspectAPIServices(ctx, client) {
		switch {
		case f.err != nil:
			klog.InfoS("Cannot read the APIService registration; skipping the ownership check", "apiService", f.name, "err", f.err)
		case !f.found:
			klog.InfoS("APIService not registered yet: the HPA cannot reach this adapter until it is", "apiService", f.name)
		case f.service == "":
			klog.InfoS("WARNING: APIService is served locally by kube-apiserver, not by this adapter", "apiService", f.name)
		case owner == "":
			klog.InfoS("APIService registered; own Service unknown (set --apiservice-service to check it)", "apiService", f.name, "service", f.service)
		case f.service != owner:
			klog.InfoS(fmt.Sprintf("WARNING: APIService %s points at Service %s, not at this adapter's Service %s: another custom metrics adapter owns the API, and the HPA will read its metrics, not ours", f.name, f.service, owner),
				"apiService", f.name, "service", f.service, "expected", owner)
		default:
			klog.V(2).InfoS("APIService points at this adapter", "apiService", f.name, "service", f.service)
		}
	}
}
