package nodeagent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// probeKind says what a probe's outcome does to the container.
type probeKind int

const (
	startupProbe probeKind = iota
	livenessProbe
	readinessProbe
)

func (k probeKind) String() string {
	return [...]string{"Startup", "Liveness", "Readiness"}[k]
}

// probeTarget is the container a probe (or a lifecycle hook) is run against.
type probeTarget struct {
	podIP     string
	container *v1.Container
	// exec is where exec probes run: the container's running process.
	exec execTarget
}

// probeRunner executes one probe attempt: httpGet, tcpSocket and grpc against the pod IP
// from the node network namespace, exec in the container's namespaces.
type probeRunner interface {
	probe(ctx context.Context, p *v1.Probe, t probeTarget) (bool, string)
}

// prober runs every kind of probe the API has.
type prober struct {
	transport *http.Transport
	commands  commandRunner
}

var _ probeRunner = (*prober)(nil)

func newProber(commands commandRunner) *prober {
	return &prober{commands: commands, transport: &http.Transport{
		DisableKeepAlives:  true,
		DisableCompression: true,
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, // as the kubelet: probes do not verify.
		Proxy:              nil,
	}}
}

// probeTimeout is timeoutSeconds with the API default of one second.
func probeTimeout(p *v1.Probe) time.Duration {
	if p.TimeoutSeconds <= 0 {
		return time.Second
	}
	return time.Duration(p.TimeoutSeconds) * time.Second
}

// resolvePort turns a probe port (number or container port name) into a number.
func resolvePort(port intstr.IntOrString, c *v1.Container) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal <= 0 || port.IntVal > 65535 {
			return 0, fmt.Errorf("invalid port %d", port.IntVal)
		}
		return int(port.IntVal), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("port %q not found in container %s", port.StrVal, c.Name)
}

func (np *prober) probe(ctx context.Context, p *v1.Probe, t probeTarget) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout(p))
	defer cancel()
	podIP, c := t.podIP, t.container
	switch {
	case p.Exec != nil:
		return execProbe(ctx, np.commands, p.Exec.Command, t.exec)
	case p.GRPC != nil:
		return grpcProbe(ctx, p.GRPC, podIP)
	case p.HTTPGet != nil:
		return np.httpGet(ctx, p.HTTPGet, podIP, c)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return false, err.Error()
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = podIP
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, ""
	}
	return false, "probe has no handler"
}

// execProbe passes when the command exits 0; its output is the failure message, as the
// kubelet reports it.
func execProbe(ctx context.Context, commands commandRunner, argv []string, target execTarget) (bool, string) {
	out, code, err := commands.run(ctx, target, argv)
	switch {
	case errors.Is(err, errExecTimeout):
		return false, fmt.Sprintf("command %q timed out", strings.Join(argv, " "))
	case err != nil:
		return false, err.Error()
	case code != 0:
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = fmt.Sprintf("command %q exited with %d", strings.Join(argv, " "), code)
		}
		return false, msg
	}
	return true, ""
}

// grpcProbe calls grpc.health.v1.Health/Check on the pod IP without TLS, as the kubelet.
func grpcProbe(ctx context.Context, g *v1.GRPCAction, podIP string) (bool, string) {
	addr := net.JoinHostPort(podIP, strconv.Itoa(int(g.Port)))
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithNoProxy(),
		grpc.WithUserAgent("kube-probe/1.37"))
	if err != nil {
		return false, fmt.Sprintf("failed to connect service %q: %v", addr, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: ptr.Deref(g.Service, "")})
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded {
			return false, "timeout: health rpc did not complete within the probe's timeout"
		}
		return false, fmt.Sprintf("error: health rpc probe failed: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return false, fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus().String())
	}
	return true, ""
}

func (np *prober) httpGet(ctx context.Context, h *v1.HTTPGetAction, podIP string, c *v1.Container) (bool, string) {
	port, err := resolvePort(h.Port, c)
	if err != nil {
		return false, err.Error()
	}
	host := h.Host
	if host == "" {
		host = podIP
	}
	scheme := strings.ToLower(string(h.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := h.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u, err := url.Parse(scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port)) + path)
	if err != nil {
		return false, err.Error()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	req.Header.Set("Accept", "*/*")
	for _, hdr := range h.HTTPHeaders {
		if strings.EqualFold(hdr.Name, "Host") {
			req.Host = hdr.Value
			continue
		}
		req.Header.Add(hdr.Name, hdr.Value)
	}
	resp, err := (&http.Client{Transport: np.transport}).Do(req)
	if err != nil {
		return false, err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return true, ""
	}
	return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
}
