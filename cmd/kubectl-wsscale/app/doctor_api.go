package app

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var apiServicesResource = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// installFix is how the adapter and its APIServices are installed.
const installFix = "install the adapter with its chart: helm upgrade --install wsscale deploy/helm/wsscale -n wsscale-system --create-namespace"

// checkAPIServices checks both custom metrics APIServices: they exist, point at a Service that
// exists and runs wsscale's adapter, are Available, and their TLS settings are consistent.
func (d *doctor) checkAPIServices(ctx context.Context) {
	for _, v := range []struct {
		name     string
		required bool
	}{{"v1beta2.custom.metrics.k8s.io", true}, {"v1beta1.custom.metrics.k8s.io", false}} {
		obj := "APIService " + v.name
		u, err := d.c.dyn.Resource(apiServicesResource).Get(ctx, v.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			status := Fail
			evidence := "not registered: kube-apiserver has no custom metrics API, so every HPA on a custom metric fails with FailedGetPodsMetric"
			if !v.required {
				status = Warn
				evidence = "not registered: clients that only speak v1beta1 cannot read the metrics (the HPA uses v1beta2)"
			}
			d.add(Check{Area: "apiservice", Object: obj, Status: status, Evidence: evidence, Fix: installFix})
			continue
		}
		if err != nil {
			d.add(Check{Area: "apiservice", Object: obj, Status: Fail, Evidence: "cannot read it: " + err.Error(), Fix: "run the doctor with credentials that may get apiservices.apiregistration.k8s.io"})
			continue
		}
		svcNS, _, _ := unstructured.NestedString(u.Object, "spec", "service", "namespace")
		svcName, _, _ := unstructured.NestedString(u.Object, "spec", "service", "name")
		if svcName == "" {
			d.add(Check{Area: "apiservice", Object: obj, Status: Fail, Evidence: "spec.service is empty: kube-apiserver serves the group itself, no adapter does", Fix: installFix})
			continue
		}
		svcRef := svcNS + "/" + svcName
		d.checkOwner(ctx, obj, u, svcNS, svcName)
		d.checkAvailable(obj, u, svcRef)
		d.checkTLS(ctx, obj, u, svcNS, svcName)
	}
}

// checkOwner checks that the APIService's Service exists and is wsscale's: its pods run the
// wsscale adapter (image or labels), not another custom metrics product.
func (d *doctor) checkOwner(ctx context.Context, obj string, u *unstructured.Unstructured, ns, name string) {
	ref := ns + "/" + name
	// A chart release restores its own objects; another product's APIService is deleted first,
	// because an upgrade does not take back a field someone else changed on an existing one.
	restore := installFix
	if isHelmManaged(u) {
		restore = helmUpgrade(u, ns)
	}
	svc, err := d.c.kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail,
			Evidence: fmt.Sprintf("points at Service %s, which does not exist: every request to custom.metrics.k8s.io fails", ref),
			Fix:      fmt.Sprintf("point spec.service at the adapter's Service (kubectl -n wsscale-system get svc -l app.kubernetes.io/name=wsscale), or %s", installFix)})
		return
	}
	if err != nil {
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail, Evidence: fmt.Sprintf("cannot read Service %s: %v", ref, err)})
		return
	}
	pods, err := servicePods(ctx, d, svc)
	if err != nil {
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail, Evidence: err.Error()})
		return
	}
	if d.adapter == nil {
		d.adapter = &adapterService{namespace: ns, name: name, selector: labels.SelectorFromSet(svc.Spec.Selector).String()}
		for i := range pods {
			if pods[i].DeletionTimestamp == nil && pods[i].Status.Phase == corev1.PodRunning {
				d.adapter.running++
			}
		}
	}
	var images []string
	ours := isWsscale(svc.Labels)
	for _, p := range pods {
		ours = ours || isWsscale(p.Labels)
		for _, c := range p.Spec.Containers {
			images = append(images, c.Image)
			ours = ours || strings.Contains(c.Image, "wsscale/adapter")
		}
	}
	switch {
	case len(pods) == 0:
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail,
			Evidence: fmt.Sprintf("Service %s selects no pod: nothing answers the metrics requests", ref),
			Fix:      "check the adapter Deployment in " + ns + " (kubectl -n " + ns + " get deploy,pods) and the Service's selector; " + restore + " restores the chart's Deployment and Service"})
	case !ours:
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail,
			Evidence: fmt.Sprintf("Service %s runs %s, not wsscale's adapter: another product owns custom.metrics.k8s.io and the HPA reads its values", ref, strings.Join(unique(images), ", ")),
			Fix:      fmt.Sprintf("one adapter per cluster serves custom.metrics.k8s.io: uninstall the other one's APIServices (kubectl delete apiservice %s), then %s registers wsscale's again; or serve websocket_connections from the other one instead", u.GetName(), restore)})
	default:
		d.add(Check{Area: "apiservice", Object: obj, Status: Pass,
			Evidence: fmt.Sprintf("points at Service %s of wsscale's adapter (%d pods: %s)", ref, len(pods), strings.Join(unique(images), ", "))})
	}
}

func isWsscale(l map[string]string) bool {
	return l["app.kubernetes.io/name"] == "wsscale" || l["app.kubernetes.io/part-of"] == "wsscale"
}

// servicePods lists the pods a Service selects.
func servicePods(ctx context.Context, d *doctor, svc *corev1.Service) ([]corev1.Pod, error) {
	if len(svc.Spec.Selector) == 0 {
		return nil, nil
	}
	list, err := d.c.kube.CoreV1().Pods(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
	if err != nil {
		return nil, fmt.Errorf("list the pods of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return list.Items, nil
}

// checkAvailable reports the aggregator's Available condition, with its discovery failure.
func (d *doctor) checkAvailable(obj string, u *unstructured.Unstructured, svcRef string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != "Available" {
			continue
		}
		if m["status"] == "True" {
			d.add(Check{Area: "apiservice", Object: obj, Status: Pass, Evidence: "Available"})
			return
		}
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail,
			Evidence: fmt.Sprintf("not Available: %v: %v", m["reason"], m["message"]),
			Fix:      fmt.Sprintf("the aggregator cannot reach Service %s: check that its pods are Ready and that the Service's port reaches their secure port (kubectl describe apiservice %s)", svcRef, u.GetName())})
		return
	}
	d.add(Check{Area: "apiservice", Object: obj, Status: Warn, Evidence: "no Available condition yet: the aggregator has not checked it"})
}

// checkTLS checks the APIService's TLS settings: never caBundle beside insecureSkipTLSVerify;
// insecure is a warning; a caBundle verifies the serving certificate the adapter's pods mount
// from a Secret, and the certificate's expiry.
func (d *doctor) checkTLS(ctx context.Context, obj string, u *unstructured.Unstructured, svcNS, svcName string) {
	insecure, _, _ := unstructured.NestedBool(u.Object, "spec", "insecureSkipTLSVerify")
	bundle, _, _ := unstructured.NestedString(u.Object, "spec", "caBundle")
	switch {
	case insecure && bundle != "":
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail, Evidence: "both caBundle and insecureSkipTLSVerify are set: kube-apiserver rejects such an update, and the intent is unclear",
			Fix: "keep one: remove insecureSkipTLSVerify (the chart's tls.mode auto, certManager or existingSecret), or remove caBundle for tls.mode insecure"})
		return
	case insecure:
		d.add(Check{Area: "apiservice", Object: obj, Status: Warn, Evidence: "insecureSkipTLSVerify: the aggregator does not verify the adapter's serving certificate",
			Fix: "use the chart's tls.mode auto (default), certManager or existingSecret"})
		return
	case bundle == "":
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail, Evidence: "no caBundle and no insecureSkipTLSVerify: the aggregator cannot verify the adapter and the API is unavailable",
			Fix: "set caBundle to the CA of the adapter's serving certificate (the chart does it in tls.mode auto)"})
		return
	}
	raw, err := base64.StdEncoding.DecodeString(bundle)
	if err != nil {
		// The dynamic client returns []byte fields base64-encoded; anything else is a broken object.
		raw = []byte(bundle)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(raw) {
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail, Evidence: "caBundle holds no PEM certificate", Fix: "set caBundle to the PEM CA of the adapter's serving certificate"})
		return
	}
	cert, secret, err := d.servingCert(ctx, svcNS, svcName)
	if err != nil {
		d.add(Check{Area: "apiservice", Object: obj, Status: Warn, Evidence: "caBundle set; the serving certificate could not be checked: " + err.Error()})
		return
	}
	if cert == nil {
		d.add(Check{Area: "apiservice", Object: obj, Status: Pass, Evidence: "caBundle set; the adapter's pods mount no serving certificate Secret to check it against (self-generated certificates are checked by Available)"})
		return
	}
	host := svcName + "." + svcNS + ".svc"
	upgrade := helmUpgrade(u, svcNS)
	// The chain is judged now with the serving certificate's own dates set aside, so that an
	// expired (or not yet valid) certificate is reported as such below, not as a caBundle that
	// does not verify. Its signature covers the raw certificate, not these fields; the CA's dates
	// still count.
	undated := *cert
	undated.NotBefore, undated.NotAfter = d.now.Add(-time.Hour), d.now.Add(time.Hour)
	if _, err := undated.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, CurrentTime: d.now}); err != nil {
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail,
			Evidence: fmt.Sprintf("caBundle does not verify the serving certificate in Secret %s for %s: %v", secret, host, err),
			Fix:      fmt.Sprintf("%s (in tls.mode auto it sets caBundle to the Secret's CA again and re-issues the pair when it is due), or set caBundle to the CA that signed %s", upgrade, secret)})
		return
	}
	left := cert.NotAfter.Sub(d.now)
	days := int(left.Hours() / 24)
	switch {
	case left < 0:
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail,
			Evidence: fmt.Sprintf("the serving certificate in Secret %s expired on %s: the aggregator refuses the adapter at its next connection", secret, cert.NotAfter.UTC().Format(time.DateOnly)),
			Fix:      upgrade + " renews it (tls.mode auto; cert-manager renews its own)"})
	case d.now.Before(cert.NotBefore):
		d.add(Check{Area: "apiservice", Object: obj, Status: Fail,
			Evidence: fmt.Sprintf("the serving certificate in Secret %s is not valid before %s: the aggregator refuses the adapter at its next connection", secret, cert.NotBefore.UTC().Format(time.RFC3339)),
			Fix:      "check the clocks of the nodes and of the machine that issued it, or " + upgrade + " to issue a new one"})
	case left < d.o.CertExpiryWarning:
		d.add(Check{Area: "apiservice", Object: obj, Status: Warn, Evidence: fmt.Sprintf("caBundle verifies the serving certificate in Secret %s; it expires in %d days", secret, days), Fix: upgrade + " renews it (tls.mode auto; cert-manager renews its own)"})
	default:
		d.add(Check{Area: "apiservice", Object: obj, Status: Pass, Evidence: fmt.Sprintf("caBundle verifies the serving certificate in Secret %s for %s; %d days to expiry", secret, host, days)})
	}
}

// helmUpgrade is the command that renders the release owning the APIService again with the values
// it was installed with; without Helm's ownership annotations it names the chart's default release
// in the Service's namespace.
func helmUpgrade(u *unstructured.Unstructured, svcNS string) string {
	release, ns := u.GetAnnotations()["meta.helm.sh/release-name"], u.GetAnnotations()["meta.helm.sh/release-namespace"]
	if !isHelmManaged(u) {
		release, ns = "wsscale", svcNS
	}
	return fmt.Sprintf("helm upgrade %s deploy/helm/wsscale -n %s --reuse-values", release, ns)
}

// isHelmManaged tells whether a Helm release owns the object.
func isHelmManaged(u *unstructured.Unstructured) bool {
	a := u.GetAnnotations()
	return a["meta.helm.sh/release-name"] != "" && a["meta.helm.sh/release-namespace"] != ""
}

// servingCert finds the serving certificate the Service's pods mount from a Secret (tls.crt).
func (d *doctor) servingCert(ctx context.Context, ns, name string) (*x509.Certificate, string, error) {
	svc, err := d.c.kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", err
	}
	pods, err := servicePods(ctx, d, svc)
	if err != nil || len(pods) == 0 {
		return nil, "", err
	}
	for _, v := range pods[0].Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		s, err := d.c.kube.CoreV1().Secrets(ns).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
		if err != nil {
			return nil, "", fmt.Errorf("read Secret %s/%s: %w", ns, v.Secret.SecretName, err)
		}
		crt := s.Data[corev1.TLSCertKey]
		if len(crt) == 0 {
			continue
		}
		block, _ := pem.Decode(crt)
		if block == nil {
			return nil, "", fmt.Errorf("Secret %s/%s: tls.crt is not PEM", ns, s.Name)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("Secret %s/%s: %w", ns, s.Name, err)
		}
		return cert, ns + "/" + s.Name, nil
	}
	return nil, "", nil
}

// checkMetricListed reads the custom metrics API's discovery and checks the metric is listed.
func (d *doctor) checkMetricListed(ctx context.Context) {
	obj := "metric " + d.o.Metric
	body, err := d.c.kube.CoreV1().RESTClient().Get().AbsPath("/apis/custom.metrics.k8s.io/v1beta2").DoRaw(ctx)
	if err != nil {
		d.add(Check{Area: "metric", Object: obj, Status: Fail, Evidence: "discovery of custom.metrics.k8s.io/v1beta2 failed: " + err.Error(), Fix: "fix the APIService checks above first"})
		return
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal(body, &list); err != nil {
		d.add(Check{Area: "metric", Object: obj, Status: Fail, Evidence: "discovery answer is not an APIResourceList: " + err.Error()})
		return
	}
	d.served = map[string]bool{}
	var names []string
	for _, r := range list.APIResources {
		if res, metric, ok := strings.Cut(r.Name, "/"); ok && res == "pods" {
			d.served[metric] = true
			names = append(names, metric)
		}
	}
	sort.Strings(names)
	if !d.served[d.o.Metric] {
		d.add(Check{Area: "metric", Object: obj, Status: Fail, Evidence: fmt.Sprintf("not listed for pods; the API lists: %s", orNone(names)), Fix: "the adapter serving custom.metrics.k8s.io is not wsscale's, or its configuration does not serve " + d.o.Metric})
		return
	}
	d.add(Check{Area: "metric", Object: obj, Status: Pass, Evidence: "listed for pods by custom.metrics.k8s.io/v1beta2"})
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func unique(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
