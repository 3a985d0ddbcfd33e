package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
)

// testCA is a CA that signs serving certificates for the TLS check's tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string, now time.Time) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf signs a serving certificate for dnsName valid from notBefore to notAfter, in PEM.
func (ca *testCA) leaf(t *testing.T, dnsName string, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
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
	day := 24 * time.Hour
	for _, tc := range []struct {
		name     string
		bundle   []byte
		crt      []byte
		status   string
		evidence string
		fix      string
	}{
		{name: "valid", bundle: ca.pem, crt: ca.leaf(t, host, now.Add(-day), now.Add(365*day)),
			status: Pass, evidence: "caBundle verifies the serving certificate in Secret wsscale-system/wsscale-tls for wsscale.wsscale-system.svc; 365 days to expiry"},
		{name: "expired", bundle: ca.pem, crt: ca.leaf(t, host, now.Add(-40*day), now.Add(-10*day)),
			status: Fail, evidence: "the serving certificate in Secret wsscale-system/wsscale-tls expired on 2026-05-22",
			fix: "helm upgrade wsscale deploy/helm/wsscale -n wsscale-system --reuse-values renews it"},
		{name: "not yet valid", bundle: ca.pem, crt: ca.leaf(t, host, now.Add(day), now.Add(365*day)),
			status: Fail, evidence: "is not valid before 2026-06-02T12:00:00Z", fix: "check the clocks"},
		{name: "expires soon", bundle: ca.pem, crt: ca.leaf(t, host, now.Add(-day), now.Add(10*day+time.Hour)),
			status: Warn, evidence: "it expires in 10 days", fix: "helm upgrade wsscale deploy/helm/wsscale -n wsscale-system --reuse-values renews it"},
		{name: "unrelated CA", bundle: other.pem, crt: ca.leaf(t, host, now.Add(-day), now.Add(365*day)),
			status: Fail, evidence: "caBundle does not verify the serving certificate in Secret wsscale-system/wsscale-tls",
			fix: "helm upgrade wsscale deploy/helm/wsscale -n wsscale-system --reuse-values (in tls.mode auto it sets caBundle to the Secret's CA again"},
		{name: "unrelated CA and expired", bundle: other.pem, crt: ca.leaf(t, host, now.Add(-40*day), now.Add(-10*day)),
			status: Fail, evidence: "caBundle does not verify"},
		{name: "other name", bundle: ca.pem, crt: ca.leaf(t, "elsewhere.default.svc", now.Add(-day), now.Add(365*day)),
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
