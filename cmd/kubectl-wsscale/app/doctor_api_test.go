package app

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wsscale/wsscale/internal/testpki"
)

// testCA is a CA that signs serving certificates for the TLS check's tests.
type testCA struct{ *testpki.CA }

func newTestCA(t *testing.T, name string, now time.Time) *testCA {
	t.Helper()
	return newTestCAValid(t, name, now.AddDate(-1, 0, 0), now.AddDate(10, 0, 0))
}

func newTestCAValid(t *testing.T, name string, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	ca, err := testpki.NewCA(name, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca}
}

// leaf signs a serving certificate for dnsName valid from notBefore to notAfter, in PEM.
func (ca *testCA) leaf(t *testing.T, dnsName string, notBefore, notAfter time.Time) []byte {
	t.Helper()
	_, crt, _, err := ca.Serving([]string{dnsName}, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return crt
}

// TestCheckTLS runs the APIService TLS check against an adapter whose pods mount the serving
// certificate from a Secret: the chain is judged apart from the certificate's dates, so an
// expired or not yet valid certificate signed by the caBundle's CA is reported as such, and the
// fixes name the owning release's namespace and keep its values.
func TestCheckTLS(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	const ns, svcName, secretName = "wsscale-system", "wsscale", "wsscale-tls"
	host := svcName + "." + ns + ".svc"
	ca := newTestCA(t, "wsscale-ca", now)
	other := newTestCA(t, "someone-else", now)
	// A CA issued after the certificate below expired (a renewed CA), and one that has expired.
	young := newTestCAValid(t, "wsscale-ca", now.Add(-24*time.Hour), now.AddDate(10, 0, 0))
	old := newTestCAValid(t, "wsscale-ca", now.AddDate(-2, 0, 0), now.AddDate(0, 0, -1))
	day := 24 * time.Hour
	for _, tc := range []struct {
		name     string
		bundle   []byte
		crt      []byte
		status   string
		evidence string
		fix      string
	}{
		{name: "valid", bundle: ca.PEM, crt: ca.leaf(t, host, now.Add(-day), now.Add(365*day)),
			status: Pass, evidence: "caBundle verifies the serving certificate in Secret wsscale-system/wsscale-tls for wsscale.wsscale-system.svc; 365 days to expiry"},
		{name: "expired", bundle: ca.PEM, crt: ca.leaf(t, host, now.Add(-40*day), now.Add(-10*day)),
			status: Fail, evidence: "the serving certificate in Secret wsscale-system/wsscale-tls expired on 2026-05-22",
			fix: "helm upgrade wsscale deploy/helm/wsscale -n wsscale-system --reuse-values renews it"},
		{name: "not yet valid", bundle: ca.PEM, crt: ca.leaf(t, host, now.Add(day), now.Add(365*day)),
			status: Fail, evidence: "is not valid before 2026-06-02T12:00:00Z", fix: "check the clocks"},
		{name: "expires soon", bundle: ca.PEM, crt: ca.leaf(t, host, now.Add(-day), now.Add(10*day+time.Hour)),
			status: Warn, evidence: "it expires in 10 days", fix: "helm upgrade wsscale deploy/helm/wsscale -n wsscale-system --reuse-values renews it"},
		{name: "unrelated CA", bundle: other.PEM, crt: ca.leaf(t, host, now.Add(-day), now.Add(365*day)),
			status: Fail, evidence: "caBundle does not verify the serving certificate in Secret wsscale-system/wsscale-tls",
			fix: "helm upgrade wsscale deploy/helm/wsscale -n wsscale-system --reuse-values (in tls.mode auto it sets caBundle to the Secret's CA again"},
		{name: "unrelated CA and expired", bundle: other.PEM, crt: ca.leaf(t, host, now.Add(-40*day), now.Add(-10*day)),
			status: Fail, evidence: "caBundle does not verify"},
		{name: "expired before its CA was issued", bundle: young.PEM, crt: young.leaf(t, host, now.Add(-40*day), now.Add(-10*day)),
			status: Fail, evidence: "expired on 2026-05-22"},
		{name: "expired CA", bundle: old.PEM, crt: old.leaf(t, host, now.Add(-40*day), now.Add(365*day)),
			status: Fail, evidence: "caBundle does not verify the serving certificate in Secret wsscale-system/wsscale-tls for wsscale.wsscale-system.svc: x509: certificate has expired or is not yet valid"},
		{name: "other name", bundle: ca.PEM, crt: ca.leaf(t, "elsewhere.default.svc", now.Add(-day), now.Add(365*day)),
			status: Fail, evidence: "caBundle does not verify the serving certificate in Secret wsscale-system/wsscale-tls for wsscale.wsscale-system.svc: x509: certificate is valid for elsewhere.default.svc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kube := fake.NewClientset(
				&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: svcName, Namespace: ns}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "adapter"}}},
				&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "adapter-0", Namespace: ns, Labels: map[string]string{"app": "adapter"}},
					Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "serving-cert", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secretName}}}}}},
				&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: ns}, Data: map[string][]byte{corev1.TLSCertKey: tc.crt}},
			)
			d := &doctor{o: &DoctorOptions{CertExpiryWarning: 30 * day}, c: &clients{kube: kube}, now: now}
			u := &unstructured.Unstructured{Object: map[string]any{
				"metadata": map[string]any{"name": "v1beta2.custom.metrics.k8s.io", "annotations": map[string]any{
					"meta.helm.sh/release-name": "wsscale", "meta.helm.sh/release-namespace": ns}},
				"spec": map[string]any{"caBundle": base64.StdEncoding.EncodeToString(tc.bundle)},
			}}
			d.checkTLS(context.Background(), "APIService v1beta2.custom.metrics.k8s.io", u, ns, svcName)
			if len(d.checks) != 1 {
				t.Fatalf("checks: %+v, want one", d.checks)
			}
			got := d.checks[0]
			if got.Status != tc.status || !strings.Contains(got.Evidence, tc.evidence) || !strings.Contains(got.Fix, tc.fix) {
				t.Errorf("got %s: %s (fix: %s)\nwant %s with %q (fix with %q)", got.Status, got.Evidence, got.Fix, tc.status, tc.evidence, tc.fix)
			}
		})
	}
}

// TestHelmUpgradeFix names the release that owns the APIService, and the chart's default release
// in the Service's namespace when no Helm release owns it.
func TestHelmUpgradeFix(t *testing.T) {
	owned := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"annotations": map[string]any{
		"meta.helm.sh/release-name": "metrics", "meta.helm.sh/release-namespace": "platform"}}}}
	if got, want := helmUpgrade(owned, "elsewhere"), "helm upgrade metrics deploy/helm/wsscale -n platform --reuse-values"; got != want {
		t.Errorf("owned: %q, want %q", got, want)
	}
	if got, want := helmUpgrade(&unstructured.Unstructured{Object: map[string]any{}}, "adapters"), "helm upgrade wsscale deploy/helm/wsscale -n adapters --reuse-values"; got != want {
		t.Errorf("not owned: %q, want %q", got, want)
	}
}

// TestCheckOwner checks who runs behind the APIService's Service, and that each failure's fix
// names the command that repairs it: the owning release's upgrade, after the other product's
// APIService is deleted (an upgrade does not take back a field someone else changed).
func TestCheckOwner(t *testing.T) {
	const ns = "wsscale-system"
	helmOwned := map[string]any{"meta.helm.sh/release-name": "wsscale", "meta.helm.sh/release-namespace": ns}
	pod := func(name, image string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}}}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "metrics", Namespace: ns}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "metrics"}}}
	for _, tc := range []struct {
		name        string
		annotations map[string]any
		pods        []*corev1.Pod
		status      string
		evidence    []string
	}{
		{name: "wsscale's adapter", annotations: helmOwned, pods: []*corev1.Pod{pod("a", "wsscale/adapter:0.1.0", map[string]string{"app": "metrics"})},
			status: Pass, evidence: []string{"points at Service wsscale-system/metrics of wsscale's adapter (1 pods: wsscale/adapter:0.1.0)"}},
		{name: "labelled wsscale", annotations: helmOwned, pods: []*corev1.Pod{pod("a", "registry.example/custom:1", map[string]string{"app": "metrics", "app.kubernetes.io/name": "wsscale"})},
			status: Pass, evidence: []string{"of wsscale's adapter"}},
		{name: "another product", annotations: helmOwned, pods: []*corev1.Pod{pod("a", "registry.k8s.io/prometheus-adapter:v0.12.0", map[string]string{"app": "metrics"})},
			status: Fail, evidence: []string{"runs registry.k8s.io/prometheus-adapter:v0.12.0, not wsscale's adapter: another product owns custom.metrics.k8s.io",
				"kubectl delete apiservice v1beta2.custom.metrics.k8s.io), then helm upgrade wsscale deploy/helm/wsscale -n wsscale-system --reuse-values registers wsscale's again"}},
		{name: "another product, no release", pods: []*corev1.Pod{pod("a", "registry.k8s.io/prometheus-adapter:v0.12.0", map[string]string{"app": "metrics"})},
			status: Fail, evidence: []string{"another product owns", "then " + installFix + " registers wsscale's again"}},
		{name: "no pod", annotations: helmOwned,
			status: Fail, evidence: []string{"Service wsscale-system/metrics selects no pod", "helm upgrade wsscale deploy/helm/wsscale -n wsscale-system --reuse-values restores the chart's Deployment and Service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kube := fake.NewClientset(svc.DeepCopy())
			for _, p := range tc.pods {
				if _, err := kube.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			u := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "v1beta2.custom.metrics.k8s.io"}}}
			if tc.annotations != nil {
				_ = unstructured.SetNestedMap(u.Object, tc.annotations, "metadata", "annotations")
			}
			d := &doctor{o: &DoctorOptions{}, c: &clients{kube: kube}}
			d.checkOwner(context.Background(), "APIService v1beta2.custom.metrics.k8s.io", u, ns, "metrics")
			if len(d.checks) != 1 {
				t.Fatalf("checks: %+v, want one", d.checks)
			}
			got := d.checks[0]
			text := got.Evidence + " " + got.Fix
			for _, w := range tc.evidence {
				if !strings.Contains(text, w) {
					t.Errorf("got %s: %s (fix: %s)\nwant %s with %q", got.Status, got.Evidence, got.Fix, tc.status, w)
				}
			}
			if got.Status != tc.status {
				t.Errorf("status %s, want %s", got.Status, tc.status)
			}
		})
	}
}
