package localcluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certificate is a key pair with its certificate, kept in memory and on disk.
type certificate struct {
	cert     *x509.Certificate
	key      crypto.Signer
	CertFile string
	KeyFile  string
	CertPEM  []byte
	KeyPEM   []byte
}

// clusterPKI is every credential the control plane uses.
type clusterPKI struct {
	CA               *certificate // signs serving and client certificates
	APIServer        *certificate // kube-apiserver serving certificate
	FrontProxyCA     *certificate // signs the aggregator's client certificate
	FrontProxyClient *certificate // kube-apiserver's identity towards aggregated API servers
	Admin            *certificate // system:masters client
	ControllerMgr    *certificate // system:kube-controller-manager client
	Scheduler        *certificate // system:kube-scheduler client
	KubeletClient    *certificate // kube-apiserver's identity towards the node's kubelet API
	KubeletServing   *certificate // the node agent's kubelet API serving certificate

	ServiceAccountKeyFile    string // PEM private key that signs service account tokens
	ServiceAccountPubKeyFile string // PEM public key that verifies them
}

// kubeletClientName is the user kube-apiserver is when it calls the node's kubelet API
// (logs, exec); RBAC grants it system:kubelet-api-admin.
const kubeletClientName = "kube-apiserver-kubelet-client"

// frontProxyClientName is the common name kube-apiserver presents to aggregated
// API servers; they accept it through --requestheader-allowed-names.
const frontProxyClientName = "front-proxy-client"

// pkiRequest says which names the API server's certificate must carry.
type pkiRequest struct {
	Dir         string
	APIServerIP []net.IP
	DNSNames    []string
	Now         time.Time
	Validity    time.Duration
	// NodeName and NodeIP name the node whose kubelet serving certificate is issued.
	NodeName string
	NodeIP   net.IP
}

// generatePKI writes a fresh certificate authority, front-proxy authority, serving
// and client certificates and the service account key pair into req.Dir.
func generatePKI(req pkiRequest) (*clusterPKI, error) {
	if err := os.MkdirAll(req.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki dir: %w", err)
	}
	g := &pkiGenerator{dir: req.Dir, notBefore: req.Now.Add(-time.Hour), notAfter: req.Now.Add(req.Validity)}
	p := &clusterPKI{}
	var err error
	if p.CA, err = g.authority("ca", "wsscale-local-ca"); err != nil {
		return nil, err
	}
	if p.FrontProxyCA, err = g.authority("front-proxy-ca", "wsscale-local-front-proxy-ca"); err != nil {
		return nil, err
	}
	if p.APIServer, err = g.leaf("apiserver", p.CA, pkix.Name{CommonName: "kube-apiserver"},
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, req.DNSNames, req.APIServerIP); err != nil {
		return nil, err
	}
	if p.FrontProxyClient, err = g.leaf("front-proxy-client", p.FrontProxyCA, pkix.Name{CommonName: frontProxyClientName},
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil); err != nil {
		return nil, err
	}
	clients := []struct {
		file string
		name pkix.Name
		dst  **certificate
	}{
		{"admin", pkix.Name{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}}, &p.Admin},
		{"controller-manager", pkix.Name{CommonName: "system:kube-controller-manager"}, &p.ControllerMgr},
		{"scheduler", pkix.Name{CommonName: "system:kube-scheduler"}, &p.Scheduler},
		{"kubelet-client", pkix.Name{CommonName: kubeletClientName}, &p.KubeletClient},
	}
	for _, c := range clients {
		if *c.dst, err = g.leaf(c.file, p.CA, c.name, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil); err != nil {
			return nil, err
		}
	}
	if req.NodeName != "" {
		if p.KubeletServing, err = g.leaf("kubelet", p.CA, pkix.Name{CommonName: "system:node:" + req.NodeName, Organization: []string{"system:nodes"}},
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []string{req.NodeName}, []net.IP{req.NodeIP}); err != nil {
			return nil, err
		}
	}
	if err := g.serviceAccountKeys(p); err != nil {
		return nil, err
	}
	return p, nil
}

type pkiGenerator struct {
	dir       string
	notBefore time.Time
	notAfter  time.Time
}

// keyAndSerial makes a new P-256 key and a random 127-bit serial for the certificate in file.
func (g *pkiGenerator) keyAndSerial(file string) (*ecdsa.PrivateKey, *big.Int, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", file, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s serial: %w", file, err)
	}
	return key, serial, nil
}

func (g *pkiGenerator) authority(file, commonName string) (*certificate, error) {
	key, serial, err := g.keyAndSerial(file)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             g.notBefore,
		NotAfter:              g.notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return g.sign(file, tmpl, tmpl, key, key)
}

func (g *pkiGenerator) leaf(file string, ca *certificate, subject pkix.Name, usage []x509.ExtKeyUsage, dns []string, ips []net.IP) (*certificate, error) {
	key, serial, err := g.keyAndSerial(file)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    g.notBefore,
		NotAfter:     g.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	return g.sign(file, tmpl, ca.cert, key, ca.key)
}

func (g *pkiGenerator) sign(file string, tmpl, parent *x509.Certificate, key, parentKey crypto.Signer) (*certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("sign %s certificate: %w", file, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse %s certificate: %w", file, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode %s key: %w", file, err)
	}
	c := &certificate{
		cert:     cert,
		key:      key,
		CertFile: filepath.Join(g.dir, file+".crt"),
		KeyFile:  filepath.Join(g.dir, file+".key"),
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	if err := os.WriteFile(c.CertFile, c.CertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write %s certificate: %w", file, err)
	}
	if err := os.WriteFile(c.KeyFile, c.KeyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write %s key: %w", file, err)
	}
	return c, nil
}

// serviceAccountKeys writes an RSA key pair, the kind every consumer of service
// account tokens accepts.
func (g *pkiGenerator) serviceAccountKeys(p *clusterPKI) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate service account key: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode service account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("encode service account public key: %w", err)
	}
	p.ServiceAccountKeyFile = filepath.Join(g.dir, "sa.key")
	p.ServiceAccountPubKeyFile = filepath.Join(g.dir, "sa.pub")
	if err := os.WriteFile(p.ServiceAccountKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("write service account key: %w", err)
	}
	if err := os.WriteFile(p.ServiceAccountPubKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return fmt.Errorf("write service account public key: %w", err)
	}
	return nil
}
