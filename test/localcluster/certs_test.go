package localcluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"testing"
	"time"
)

func TestGeneratePKI(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	p, err := generatePKI(pkiRequest{
		Dir:         t.TempDir(),
		APIServerIP: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(NodeIP), net.ParseIP(firstServiceIP)},
		DNSNames:    []string{"localhost", "kubernetes.default.svc"},
		Now:         now,
		Validity:    24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.CA.cert)
	frontProxyRoots := x509.NewCertPool()
	frontProxyRoots.AddCert(p.FrontProxyCA.cert)

	serving := []struct{ name, host string }{
		{"loopback", "127.0.0.1"},
		{"node address", NodeIP},
		{"kubernetes service IP", firstServiceIP},
		{"localhost", "localhost"},
		{"service name", "kubernetes.default.svc"},
	}
	for _, s := range serving {
		t.Run("apiserver serves "+s.name, func(t *testing.T) {
			_, err := p.APIServer.cert.Verify(x509.VerifyOptions{
				DNSName: s.host, Roots: roots, CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				t.Errorf("verify for %s: %v", s.host, err)
			}
		})
	}

	clients := []struct {
		name   string
		cert   *certificate
		roots  *x509.CertPool
		cn     string
		groups []string
	}{
		{"admin", p.Admin, roots, "kubernetes-admin", []string{"system:masters"}},
		{"controller manager", p.ControllerMgr, roots, "system:kube-controller-manager", nil},
		{"scheduler", p.Scheduler, roots, "system:kube-scheduler", nil},
		{"front proxy", p.FrontProxyClient, frontProxyRoots, frontProxyClientName, nil},
	}
	for _, c := range clients {
		t.Run("client "+c.name, func(t *testing.T) {
			if _, err := c.cert.cert.Verify(x509.VerifyOptions{
				Roots: c.roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}); err != nil {
				t.Errorf("verify: %v", err)
			}
			if c.cert.cert.Subject.CommonName != c.cn {
				t.Errorf("CN = %q, want %q", c.cert.cert.Subject.CommonName, c.cn)
			}
			if got := c.cert.cert.Subject.Organization; len(got) != len(c.groups) || (len(got) > 0 && got[0] != c.groups[0]) {
				t.Errorf("O = %v, want %v", got, c.groups)
			}
			// The files on disk are what the components load.
			if _, err := tls.LoadX509KeyPair(c.cert.CertFile, c.cert.KeyFile); err != nil {
				t.Errorf("load key pair from disk: %v", err)
			}
		})
	}

	t.Run("front proxy client is not trusted by the cluster CA", func(t *testing.T) {
		if _, err := p.FrontProxyClient.cert.Verify(x509.VerifyOptions{
			Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}); err == nil {
			t.Error("front-proxy client verified against the cluster CA; the authorities must be separate")
		}
	})

	t.Run("service account keys", func(t *testing.T) {
		for file, typ := range map[string]string{p.ServiceAccountKeyFile: "PRIVATE KEY", p.ServiceAccountPubKeyFile: "PUBLIC KEY"} {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(data)
			if block == nil || block.Type != typ {
				t.Errorf("%s: want a %s PEM block", file, typ)
			}
		}
		if st, err := os.Stat(p.ServiceAccountKeyFile); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("service account key mode = %v, %v; want 0600", st.Mode().Perm(), err)
		}
	})
}
