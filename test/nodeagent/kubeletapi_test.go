package nodeagent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

func TestTailOffset(t *testing.T) {
	tests := []struct {
		name    string
		content string
		n       int64
		want    string
	}{
		{name: "last two", content: "a\nb\nc\n", n: 2, want: "b\nc\n"},
		{name: "more than there are", content: "a\nb\n", n: 10, want: "a\nb\n"},
		{name: "no final newline", content: "a\nb\nc", n: 1, want: "c"},
		{name: "zero", content: "a\nb\n", n: 0, want: ""},
		{name: "empty file", content: "", n: 3, want: ""},
		{name: "empty lines count", content: "a\n\n\n", n: 2, want: "\n\n"},
		{name: "longer than a read chunk", content: strings.Repeat("x", 40<<10) + "\nlast\n", n: 1, want: "last\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "0.log")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := tt.content[tailOffset(f, tt.n):]; got != tt.want {
				t.Errorf("tail %d of %q: got %q, want %q", tt.n, tt.content, got, tt.want)
			}
		})
	}
}

func TestParseLogRequest(t *testing.T) {
	tests := []struct {
		name    string
		query   string
		want    logRequest
		wantErr string
	}{
		{name: "none", query: "", want: logRequest{}},
		{name: "all", query: "follow=true&previous=1&tailLines=5&limitBytes=100",
			want: logRequest{follow: true, previous: true, tailLines: ptr.To[int64](5), limitBytes: ptr.To[int64](100)}},
		{name: "every bad value named", query: "follow=maybe&tailLines=-1&limitBytes=x",
			wantErr: `follow="maybe": not a boolean` + "\n" + `limitBytes="x": not a non-negative integer` + "\n" + `tailLines="-1": not a non-negative integer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, _ := urlQuery(tt.query)
			got, err := parseLogRequest(q)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error: got %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.follow != tt.want.follow || got.previous != tt.want.previous ||
				ptr.Deref(got.tailLines, -1) != ptr.Deref(tt.want.tailLines, -1) || ptr.Deref(got.limitBytes, -1) != ptr.Deref(tt.want.limitBytes, -1) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func urlQuery(q string) (map[string][]string, error) {
	r, err := http.NewRequest(http.MethodGet, "/?"+q, nil)
	if err != nil {
		return nil, err
	}
	return r.URL.Query(), nil
}

// TestContainerLogs serves a pod's logs from the layout the worker writes, through the
// authorisation a kubelet applies.
func TestContainerLogs(t *testing.T) {
	logDir := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(logDir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ns_web_uid-1/app/0.log", "first run\n")
	write("ns_web_uid-1/app/1.log", "second run\nmore\n")
	write("ns_web_uid-1/side/0.log", "sidecar\n")
	write("ns_old_uid-9/app/0.log", "gone pod\n")

	client := fake.NewClientset()
	var reviews []authorizationv1.SubjectAccessReviewSpec
	client.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		reviews = append(reviews, sar.Spec)
		sar.Status.Allowed = sar.Spec.User == "kube-apiserver-kubelet-client" && len(sar.Spec.Groups) == 1 && sar.Spec.Groups[0] == "apiservers"
		return true, sar, nil
	})
	api := &kubeletAPI{
		nodeName: "node-1", logDir: logDir, client: client, clock: clock.RealClock{},
		podUID:  func(ns, name string) (string, bool) { return "uid-1", ns == "ns" && name == "web" },
		running: func(string) bool { return false },
	}
	srv := httptest.NewUnstartedServer(api.handler())
	ca, certs := clientCertificates(t, pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"apiservers"}}, pkix.Name{CommonName: "someone"})
	allowed, other := certs[0], certs[1]
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: x509.NewCertPool()}
	srv.TLS.ClientCAs.AddCert(ca)
	srv.StartTLS()
	defer srv.Close()

	tests := []struct {
		name     string
		path     string
		as       *tls.Certificate
		wantCode int
		wantBody string
	}{
		{name: "no client certificate", path: "/containerLogs/ns/web/app", wantCode: http.StatusUnauthorized},
		{name: "a user not allowed", path: "/containerLogs/ns/web/app", as: &other, wantCode: http.StatusForbidden},
		{name: "current run", path: "/containerLogs/ns/web/app", as: &allowed, wantCode: http.StatusOK, wantBody: "second run\nmore\n"},
		{name: "previous run", path: "/containerLogs/ns/web/app?previous=true", as: &allowed, wantCode: http.StatusOK, wantBody: "first run\n"},
		{name: "no previous run", path: "/containerLogs/ns/web/side?previous=true", as: &allowed, wantCode: http.StatusBadRequest, wantBody: "previous terminated container \"side\" in pod \"web\" not found\n"},
		{name: "tail", path: "/containerLogs/ns/web/app?tailLines=1", as: &allowed, wantCode: http.StatusOK, wantBody: "more\n"},
		{name: "limit", path: "/containerLogs/ns/web/app?limitBytes=6", as: &allowed, wantCode: http.StatusOK, wantBody: "second"},
		{name: "follow of a stopped container ends", path: "/containerLogs/ns/web/app?follow=true", as: &allowed, wantCode: http.StatusOK, wantBody: "second run\nmore\n"},
		{name: "pod no longer on the node", path: "/containerLogs/ns/old/app", as: &allowed, wantCode: http.StatusOK, wantBody: "gone pod\n"},
		{name: "unknown container", path: "/containerLogs/ns/web/nope", as: &allowed, wantCode: http.StatusBadRequest},
		{name: "unknown pod", path: "/containerLogs/ns/nope/app", as: &allowed, wantCode: http.StatusNotFound},
		{name: "bad option", path: "/containerLogs/ns/web/app?tailLines=x", as: &allowed, wantCode: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc := srv.Client()
			if tt.as != nil {
				tr := hc.Transport.(*http.Transport).Clone()
				tr.TLSClientConfig.Certificates = []tls.Certificate{*tt.as}
				hc = &http.Client{Transport: tr}
			}
			resp, err := hc.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || (tt.wantBody != "" && string(body) != tt.wantBody) {
				t.Errorf("GET %s: %d %q, want %d %q", tt.path, resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
		})
	}
	if len(reviews) == 0 {
		t.Fatal("no SubjectAccessReview was made")
	}
	if ra := reviews[0].ResourceAttributes; ra.Verb != "get" || ra.Resource != "nodes" || ra.Subresource != "proxy" || ra.Name != "node-1" {
		t.Errorf("SubjectAccessReview attributes: %+v, want get nodes/proxy on node-1", ra)
	}
}

// clientCertificates returns a new CA and a client certificate it signed for each subject.
func clientCertificates(t *testing.T, subjects ...pkix.Name) (*x509.Certificate, []tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	var certs []tls.Certificate
	for i, subject := range subjects {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: subject, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
	}
	return ca, certs
}
