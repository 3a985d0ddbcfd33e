package e2e

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/internal/testpki"
	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

const (
	doctorRelease   = "wsscale"
	doctorNamespace = "wsscale-doctor"
	// doctorForeignNS holds a Service of another "product" that the APIService is pointed at.
	doctorForeignNS = "doctor-foreign"
	doctorSecret    = doctorRelease + "-tls"
	doctorAPI       = "v1beta2.custom.metrics.k8s.io"
)

// doctorFixCommand finds the helm upgrade the doctor's fix names.
var doctorFixCommand = regexp.MustCompile(`helm upgrade \S+ deploy/helm/wsscale -n \S+ --reuse-values`)

// TestDoctorAPIServiceTLS installs the adapter chart (one replica, short shutdown: values that the
// repairs must keep) and, through the real kubectl and plugin, breaks what each APIService check of
// `kubectl wsscale doctor` looks at, sees it fail with its fix, runs exactly the helm upgrade the fix
// names, and sees it pass with the APIServices Available again: the caBundle replaced by an
// unrelated CA; the serving certificate in the chart's Secret expired (what the Secret looks like
// once its days have passed), and near its expiry; the APIService taken over by another product's
// Service; the adapter scaled to no pod.
func TestDoctorAPIServiceTLS(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	helm := newHelm(t, c)
	removeForeignAPIServices(ctx, t, dyn)
	adoptScaleGuardCRD(ctx, t, dyn, doctorRelease, doctorNamespace)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		if out, err := helm.run(cctx, "uninstall", doctorRelease, "-n", doctorNamespace, "--wait", "--ignore-not-found"); err != nil {
			t.Errorf("uninstall: %v\n%s", err, out)
		}
		for _, ns := range []string{doctorNamespace, doctorForeignNS} {
			_ = client.CoreV1().Namespaces().Delete(cctx, ns, metav1.DeleteOptions{})
		}
		for _, name := range metricsAPIServices {
			if _, err := dyn.Resource(apiServiceResource).Get(cctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("APIService %s after uninstall: %v, want NotFound", name, err)
			}
		}
	})
	if _, err := helm.run(ctx, "install", doctorRelease, chartDir(t), "-n", doctorNamespace, "--create-namespace",
		"--set", "replicaCount=1,shutdownDelaySeconds=2,terminationGracePeriodSeconds=10", "--wait", "--timeout", "5m"); err != nil {
		t.Fatal(err)
	}
	waitAPIServicesAvailable(ctx, t, dyn)
	secrets := client.CoreV1().Secrets(doctorNamespace)
	installed, err := secrets.Get(ctx, doctorSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caPEM := installed.Data["ca.crt"]
	tlsEvidence := "caBundle verifies the serving certificate in Secret " + doctorNamespace + "/" + doctorSecret + " for " + doctorRelease + "." + doctorNamespace + ".svc"
	d := &doctorRun{t: t, c: c, helm: helm, dyn: dyn, client: client}

	// a. The chart's pair verifies.
	expectFreshCert(t, d.expect(ctx, checkPass, tlsEvidence, "days to expiry"))

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{{"caBundle of an unrelated CA", func(t *testing.T) {
		foreign, err := testpki.NewCA("someone-else", time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0))
		if err != nil {
			t.Fatal(err)
		}
		patch := fmt.Sprintf(`{"spec":{"caBundle":%q}}`, base64.StdEncoding.EncodeToString(foreign.PEM))
		if _, err := dyn.Resource(apiServiceResource).Patch(ctx, doctorAPI, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "other-ca-injector"}); err != nil {
			t.Fatal(err)
		}
		ch := d.expect(ctx, checkFail, "caBundle does not verify the serving certificate in Secret "+doctorNamespace+"/"+doctorSecret, "x509: certificate signed by unknown authority",
			"helm upgrade "+doctorRelease+" deploy/helm/wsscale -n "+doctorNamespace+" --reuse-values")
		d.runHelmFix(ctx, ch)
		// What the doctor promised: caBundle is the Secret's CA again.
		if got := apiServiceCAs(ctx, t, dyn); !sameCerts(got, caPEM) {
			t.Fatalf("after the fix, caBundle of %s holds %q, want the Secret's CA %q", doctorAPI, got, caPEM)
		}
		expectFreshCert(t, d.expect(ctx, checkPass, tlsEvidence, "days to expiry"))
		d.healthy(ctx)
	}}, {"serving certificate expired", func(t *testing.T) {
		now := time.Now()
		notAfter := writeServingCert(ctx, t, secrets, now.Add(-40*24*time.Hour), now.Add(-10*24*time.Hour))
		ch := d.expect(ctx, checkFail, fmt.Sprintf("the serving certificate in Secret %s/%s expired on %s", doctorNamespace, doctorSecret, notAfter.UTC().Format(time.DateOnly)),
			"helm upgrade "+doctorRelease+" deploy/helm/wsscale -n "+doctorNamespace+" --reuse-values renews it")
		// The adapter reloads the certificate from its Secret, and the aggregator checks it at its
		// next TLS handshake: a new adapter pod (as any restart) makes one, and the aggregator
		// refuses it, as the doctor says. Seen before the repair, so that Available afterwards
		// means the new certificate.
		if err := client.CoreV1().Pods(doctorNamespace).DeleteCollection(ctx, metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=wsscale,app.kubernetes.io/instance=" + doctorRelease}); err != nil {
			t.Fatal(err)
		}
		waitAPIServiceRefused(ctx, t, dyn)
		d.runHelmFix(ctx, ch)
		expectFreshCert(t, d.expect(ctx, checkPass, tlsEvidence, "days to expiry"))
		after, err := secrets.Get(ctx, doctorSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(after.Data["ca.crt"]) != string(caPEM) || !sameCerts(apiServiceCAs(ctx, t, dyn), caPEM) {
			t.Errorf("the renewal changed the CA: the Secret's ca.crt or caBundle differ from the installed CA")
		}
		d.healthy(ctx)
	}}, {"serving certificate near its expiry", func(t *testing.T) {
		now := time.Now()
		writeServingCert(ctx, t, secrets, now.Add(-time.Hour), now.Add(10*24*time.Hour+time.Hour))
		ch := d.expect(ctx, checkWarn, tlsEvidence[:strings.Index(tlsEvidence, " for ")]+"; it expires in 10 days",
			"helm upgrade "+doctorRelease+" deploy/helm/wsscale -n "+doctorNamespace+" --reuse-values renews it")
		d.runHelmFix(ctx, ch)
		expectFreshCert(t, d.expect(ctx, checkPass, tlsEvidence, "days to expiry"))
		d.healthy(ctx)
	}}, {"another product owns the API", func(t *testing.T) {
		createNamespace(ctx, t, client, doctorForeignNS)
		foreignMetricsServer(ctx, t, client)
		patch := fmt.Sprintf(`{"spec":{"service":{"namespace":%q,"name":"other-metrics","port":443}}}`, doctorForeignNS)
		if _, err := dyn.Resource(apiServiceResource).Patch(ctx, doctorAPI, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "other-metrics-installer"}); err != nil {
			t.Fatal(err)
		}
		ch := d.expect(ctx, checkFail, "Service "+doctorForeignNS+"/other-metrics runs wsscale/echo:dev, not wsscale's adapter: another product owns custom.metrics.k8s.io",
			"kubectl delete apiservice "+doctorAPI, "then helm upgrade "+doctorRelease+" deploy/helm/wsscale -n "+doctorNamespace+" --reuse-values registers wsscale's again")
		// The fix: the other product's APIService goes (as its uninstall does), then the upgrade.
		d.kubectl(ctx, "delete", "apiservice", doctorAPI)
		d.runHelmFix(ctx, ch)
		d.expect(ctx, checkPass, "points at Service "+doctorNamespace+"/"+doctorRelease+" of wsscale's adapter (1 pods")
		d.healthy(ctx)
	}}, {"Service selects no pod", func(t *testing.T) {
		scale, err := client.AppsV1().Deployments(doctorNamespace).GetScale(ctx, doctorRelease, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		scale.Spec.Replicas = 0
		if _, err := client.AppsV1().Deployments(doctorNamespace).UpdateScale(ctx, doctorRelease, scale, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		ch := d.expect(ctx, checkFail, "Service "+doctorNamespace+"/"+doctorRelease+" selects no pod",
			"helm upgrade "+doctorRelease+" deploy/helm/wsscale -n "+doctorNamespace+" --reuse-values restores the chart's Deployment")
		d.runHelmFix(ctx, ch)
		d.expect(ctx, checkPass, "points at Service "+doctorNamespace+"/"+doctorRelease+" of wsscale's adapter (1 pods")
		d.healthy(ctx)
	}}}
	for _, s := range steps {
		t.Run(s.name, d.step(ctx, s.fn))
	}
}

// doctorRun runs the doctor and its repairs against the chart's release.
type doctorRun struct {
	t      *testing.T
	c      *localcluster.Cluster
	helm   *helmRunner
	dyn    dynamic.Interface
	client kubernetes.Interface
}

// expect runs the doctor until its check of the v1beta2 APIService has status and its evidence and
// fix hold all words (a failure also fails the run), and returns it. Every break here shows in the
// doctor within seconds: a minute is ample.
func (d *doctorRun) expect(ctx context.Context, status string, words ...string) doctorCheck {
	d.t.Helper()
	var found doctorCheck
	poll(ctx, d.t, fmt.Sprintf("doctor: %s APIService %s %q", status, doctorAPI, words), time.Minute, func() (bool, string) {
		checks, code := runDoctor(ctx, d.t, d.c, doctorNamespace)
		var seen []string
		for _, ch := range checks {
			if ch.Area != "apiservice" || ch.Object != "APIService "+doctorAPI {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s: %s (fix: %s)", ch.Status, ch.Evidence, ch.Fix))
			all := ch.Status == status && (status != checkFail || code == 1)
			for _, w := range words {
				all = all && strings.Contains(ch.Evidence+" "+ch.Fix, w)
			}
			if all {
				found = ch
				return true, fmt.Sprintf("%s: %s; fix: %s", ch.Status, ch.Evidence, ch.Fix)
			}
		}
		return false, fmt.Sprintf("exit %d, checks: %s", code, strings.Join(seen, " | "))
	})
	return found
}

// step runs one break-and-repair; when it fails, the release is brought back for the next one: the
// v1beta2 APIService registered again and the upgrade run with the release's values.
func (d *doctorRun) step(ctx context.Context, fn func(t *testing.T)) func(t *testing.T) {
	return func(t *testing.T) {
		d.t = t
		t.Cleanup(func() {
			if !t.Failed() {
				return
			}
			t.Log("restoring the release after the failed step")
			if err := d.dyn.Resource(apiServiceResource).Delete(ctx, doctorAPI, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Error(err)
			}
			if _, err := d.helm.run(ctx, "upgrade", doctorRelease, chartDir(t), "-n", doctorNamespace, "--reuse-values", "--wait", "--timeout", "3m"); err != nil {
				t.Error(err)
			}
			waitAPIServicesAvailable(ctx, t, d.dyn)
		})
		fn(t)
	}
}

// runHelmFix runs the helm upgrade the check's fix names, exactly as written, from the repository's
// root (where deploy/helm/wsscale is).
func (d *doctorRun) runHelmFix(ctx context.Context, ch doctorCheck) {
	d.t.Helper()
	cmd := doctorFixCommand.FindString(ch.Fix)
	if cmd == "" {
		d.t.Fatalf("the fix names no helm upgrade of the chart: %s", ch.Fix)
	}
	args := strings.Fields(cmd)[1:]
	for i, a := range args {
		if a == "deploy/helm/wsscale" {
			args[i] = chartDir(d.t)
		}
	}
	out, err := d.helm.run(ctx, args...)
	if err != nil {
		d.t.Fatalf("the doctor's fix %q: %v", cmd, err)
	}
	d.t.Logf("ran the doctor's fix: %s\n%s", cmd, lastLines(out, 3))
}

// kubectl runs the pinned kubectl against the cluster.
func (d *doctorRun) kubectl(ctx context.Context, args ...string) {
	d.t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		d.t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(root, ".local", "bin", "kubectl"), append([]string{"--kubeconfig", d.c.Kubeconfig()}, args...)...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// healthy waits until both APIServices are Available and the release still runs the one replica
// it was installed with (the repair kept its values).
func (d *doctorRun) healthy(ctx context.Context) {
	d.t.Helper()
	waitAPIServicesAvailable(ctx, d.t, d.dyn)
	deploy, err := d.client.AppsV1().Deployments(doctorNamespace).Get(ctx, doctorRelease, metav1.GetOptions{})
	if err != nil {
		d.t.Fatal(err)
	}
	if r := ptr.Deref(deploy.Spec.Replicas, -1); r != 1 {
		d.t.Errorf("adapter Deployment replicas %d after the repair, want the installed 1 (--reuse-values)", r)
	}
	waitForReadyPods(ctx, d.t, d.client, doctorNamespace, "app.kubernetes.io/name=wsscale,app.kubernetes.io/instance="+doctorRelease, 1)
}

// expectFreshCert checks that a passing TLS check reports a certificate of the chart's full
// validity (365 days, less the seconds since it was issued).
func expectFreshCert(t *testing.T, ch doctorCheck) {
	t.Helper()
	m := regexp.MustCompile(`; (\d+) days to expiry`).FindStringSubmatch(ch.Evidence)
	if m == nil {
		t.Fatalf("no days to expiry in %q", ch.Evidence)
	}
	if days, _ := strconv.Atoi(m[1]); days < 360 {
		t.Errorf("serving certificate: %d days to expiry, want a fresh one (365 days)", days)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// writeServingCert signs a serving certificate valid from notBefore to notAfter with the CA the
// chart keeps in its Secret (ca.crt, ca.key), for the names of the current one, and writes it into
// tls.crt and tls.key with wsscale.io/cert-not-after set to its end: the Secret as time leaves it.
func writeServingCert(ctx context.Context, t *testing.T, secrets interface {
	Get(context.Context, string, metav1.GetOptions) (*corev1.Secret, error)
	Update(context.Context, *corev1.Secret, metav1.UpdateOptions) (*corev1.Secret, error)
}, notBefore, notAfter time.Time) time.Time {
	t.Helper()
	s, err := secrets.Get(ctx, doctorSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testpki.ParseCA(s.Data["ca.crt"], s.Data["ca.key"])
	if err != nil {
		t.Fatalf("the chart's CA in Secret %s: %v", doctorSecret, err)
	}
	block, _ := pem.Decode(s.Data[corev1.TLSCertKey])
	if block == nil {
		t.Fatalf("Secret %s: tls.crt is not PEM", doctorSecret)
	}
	current, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	issued, crt, key, err := ca.Serving(current.DNSNames, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey] = crt, key
	s.Annotations["wsscale.io/cert-not-after"] = strconv.FormatInt(issued.NotAfter.Unix(), 10)
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("Secret %s: serving certificate valid %s to %s, signed by %s", doctorSecret, notBefore.UTC().Format(time.RFC3339), issued.NotAfter.UTC().Format(time.RFC3339), ca.Cert.Subject.CommonName)
	return issued.NotAfter
}

// apiServiceCAs returns the PEM of the v1beta2 APIService's caBundle.
func apiServiceCAs(ctx context.Context, t *testing.T, dyn dynamic.Interface) []byte {
	t.Helper()
	obj, err := dyn.Resource(apiServiceResource).Get(ctx, doctorAPI, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := unstructured.NestedString(obj.Object, "spec", "caBundle")
	raw, err := base64.StdEncoding.DecodeString(b)
	if err != nil {
		t.Fatalf("caBundle: %v", err)
	}
	return raw
}

// sameCerts tells whether two PEM bundles hold the same certificates, whatever text surrounds them.
func sameCerts(a, b []byte) bool {
	ders := func(p []byte) []string {
		var out []string
		for {
			var block *pem.Block
			block, p = pem.Decode(p)
			if block == nil {
				return out
			}
			out = append(out, string(block.Bytes))
		}
	}
	da, db := ders(a), ders(b)
	if len(da) == 0 || len(da) != len(db) {
		return false
	}
	for i := range da {
		if da[i] != db[i] {
			return false
		}
	}
	return true
}

// waitAPIServiceRefused waits until the aggregator reports the v1beta2 APIService not Available
// because the adapter's certificate does not verify (not for a pod that is not there yet).
func waitAPIServiceRefused(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	poll(ctx, t, "APIService "+doctorAPI+" not Available: the adapter's certificate refused", 3*time.Minute, func() (bool, string) {
		obj, err := dyn.Resource(apiServiceResource).Get(ctx, doctorAPI, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Available" {
				msg := fmt.Sprint(m["message"])
				return m["status"] == "False" && strings.Contains(msg, "x509: certificate has expired"), fmt.Sprintf("%v (%v: %v)", m["status"], m["reason"], msg)
			}
		}
		return false, "no Available condition"
	})
}

// foreignMetricsServer runs, in doctorForeignNS, a pod that is not wsscale's adapter (the echo
// server, no wsscale labels) behind the Service other-metrics.
func foreignMetricsServer(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	t.Helper()
	labels := map[string]string{"app": "other-metrics"}
	must[*corev1.Pod](t, "other-metrics pod")(client.CoreV1().Pods(doctorForeignNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "other-metrics", Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers: []corev1.Container{{
				Name: "server", Image: "wsscale/echo:dev",
				Env:   []corev1.EnvVar{{Name: "PORT", Value: "8080"}, {Name: "METRICS_PORT", Value: "9090"}},
				Ports: []corev1.ContainerPort{{Name: "https", ContainerPort: 8080}},
			}},
		},
	}, metav1.CreateOptions{}))
	must[*corev1.Service](t, "other-metrics Service")(client.CoreV1().Services(doctorForeignNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "other-metrics"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromString("https")}}},
	}, metav1.CreateOptions{}))
	waitForReadyPods(ctx, t, client, doctorForeignNS, "app=other-metrics", 1)
}
