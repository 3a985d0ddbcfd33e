package localcluster

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func nodePortService(ns, name, typ string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceType(typ), Ports: ports},
	}
}

func TestWantedNodePorts(t *testing.T) {
	tests := []struct {
		name     string
		services []*corev1.Service
		want     map[int32]servicePort
	}{
		{
			name:     "no services",
			services: nil,
			want:     map[int32]servicePort{},
		},
		{
			name: "cluster IP service has no node port",
			services: []*corev1.Service{
				nodePortService("a", "svc", "ClusterIP", corev1.ServicePort{Name: "http", Port: 80}),
			},
			want: map[int32]servicePort{},
		},
		{
			name: "node port and load balancer services, TCP only",
			services: []*corev1.Service{
				nodePortService("a", "web", "NodePort",
					corev1.ServicePort{Name: "http", Port: 80, NodePort: 30080},
					corev1.ServicePort{Name: "dns", Port: 53, NodePort: 30053, Protocol: corev1.ProtocolUDP}),
				nodePortService("b", "lb", "LoadBalancer",
					corev1.ServicePort{Name: "", Port: 443, NodePort: 30443, Protocol: corev1.ProtocolTCP}),
			},
			want: map[int32]servicePort{
				30080: {Namespace: "a", Service: "web", PortName: "http"},
				30443: {Namespace: "b", Service: "lb", PortName: ""},
			},
		},
		{
			name: "node port not yet allocated",
			services: []*corev1.Service{
				nodePortService("a", "web", "NodePort", corev1.ServicePort{Name: "http", Port: 80}),
			},
			want: map[int32]servicePort{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wantedNodePorts(tt.services); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("wantedNodePorts() = %v, want %v", got, tt.want)
			}
		})
	}
}

func endpointSlice(name, service string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns",
			Name:      name,
			Labels:    map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func endpoint(ready *bool, addrs ...string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
}

func TestReadyEndpoints(t *testing.T) {
	httpPort := []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}}
	tests := []struct {
		name     string
		slices   []*discoveryv1.EndpointSlice
		portName string
		want     []string
	}{
		{
			name:     "ready, nil-ready and not-ready endpoints",
			slices:   []*discoveryv1.EndpointSlice{endpointSlice("s1", "echo", httpPort, endpoint(ptr.To(true), "198.18.1.2"), endpoint(nil, "198.18.1.1"), endpoint(ptr.To(false), "198.18.1.3"))},
			portName: "http",
			want:     []string{"198.18.1.1:8080", "198.18.1.2:8080"},
		},
		{
			name: "several slices, duplicates collapse",
			slices: []*discoveryv1.EndpointSlice{
				endpointSlice("s1", "echo", httpPort, endpoint(ptr.To(true), "198.18.1.2")),
				endpointSlice("s2", "echo", httpPort, endpoint(ptr.To(true), "198.18.1.2"), endpoint(ptr.To(true), "198.18.1.4")),
			},
			portName: "http",
			want:     []string{"198.18.1.2:8080", "198.18.1.4:8080"},
		},
		{
			name:     "other port name",
			slices:   []*discoveryv1.EndpointSlice{endpointSlice("s1", "echo", httpPort, endpoint(ptr.To(true), "198.18.1.2"))},
			portName: "metrics",
			want:     nil,
		},
		{
			name: "unnamed port and UDP port",
			slices: []*discoveryv1.EndpointSlice{endpointSlice("s1", "echo", []discoveryv1.EndpointPort{
				{Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)},
				{Port: ptr.To[int32](9000)},
			}, endpoint(nil, "198.18.1.9"))},
			portName: "",
			want:     []string{"198.18.1.9:9000"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readyEndpoints(tt.slices, tt.portName); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("readyEndpoints() = %v, want %v", got, tt.want)
			}
		})
	}
}

// backendRecorder stands in for the node network: every dial reaches one local
// server that answers with the address that was dialed.
type backendRecorder struct {
	ln net.Listener
	mu sync.Mutex
}

func newBackendRecorder(t *testing.T) *backendRecorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := &backendRecorder{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				target, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "reached %s", target)
			}()
		}
	}()
	return b
}

// dial connects to the recorder and tells it which address was asked for.
func (b *backendRecorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, b.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "%s\n", addr)
	return c, nil
}

// portListener maps node ports to free loopback ports and remembers the mapping.
type portListener struct {
	mu    sync.Mutex
	addrs map[int]string
	busy  map[int]bool
}

func (p *portListener) listen(port int) (net.Listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.busy[port] {
		return nil, fmt.Errorf("port %d already in use on 127.0.0.1", port)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.addrs[port] = ln.Addr().String()
	return ln, nil
}

func (p *portListener) addr(port int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[port]
}

// request opens a connection to addr and returns what the backend answered.
func request(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// eventually checks cond each time the forwarder has observed a change, until it
// holds or the deadline passes; informers deliver changes asynchronously.
func eventually(t *testing.T, f *nodePortForwarder, what string, cond func() error) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-f.observed:
		case <-deadline.C:
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// newObservedForwarder returns a forwarder that reports every change it observes.
func newObservedForwarder(t *testing.T, client *fake.Clientset, dial dialFunc, ports *portListener) *nodePortForwarder {
	f := newNodePortForwarder(client, dial, ports.listen)
	f.observed = make(chan struct{}, 1)
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f
}

func TestNodePortForwarderFollowsServicesAndEndpoints(t *testing.T) {
	ctx := context.Background()
	client := fake.NewSimpleClientset()
	backend := newBackendRecorder(t)
	ports := &portListener{addrs: map[int]string{}, busy: map[int]bool{}}
	f := newObservedForwarder(t, client, backend.dial, ports)

	httpPort := []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}}
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Create(ctx, endpointSlice("echo-1", "echo", httpPort,
		endpoint(ptr.To(true), "198.18.1.1"), endpoint(ptr.To(true), "198.18.1.2"), endpoint(ptr.To(false), "198.18.1.3")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services("ns").Create(ctx, nodePortService("ns", "echo", "NodePort",
		corev1.ServicePort{Name: "http", Port: 80, NodePort: 30080}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The Service and the EndpointSlice reach the forwarder in either order: wait until the port is
	// forwarded and a connection reaches an endpoint.
	eventually(t, f, "node port 30080 forwarded", func() error {
		if !reflect.DeepEqual(f.Ports(), []int32{30080}) {
			return fmt.Errorf("ports = %v", f.Ports())
		}
		_, err := request(ports.addr(30080))
		return err
	})
	// Round robin over the two ready endpoints, never the unready one.
	seen := map[string]int{}
	for range 4 {
		got, err := request(ports.addr(30080))
		if err != nil {
			t.Fatal(err)
		}
		seen[got]++
	}
	want := map[string]int{"reached 198.18.1.1:8080": 2, "reached 198.18.1.2:8080": 2}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("connections reached %v, want %v", seen, want)
	}

	// Endpoint changes are followed without a new listener.
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, endpointSlice("echo-1", "echo", httpPort,
		endpoint(ptr.To(true), "198.18.1.7")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, f, "new endpoint used", func() error {
		got, err := request(ports.addr(30080))
		if err != nil {
			return err
		}
		if got != "reached 198.18.1.7:8080" {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})

	// No ready endpoint: the connection is closed at once.
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, endpointSlice("echo-1", "echo", httpPort,
		endpoint(ptr.To(false), "198.18.1.7")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, f, "connection refused without endpoints", func() error {
		got, err := request(ports.addr(30080))
		if err == nil {
			return fmt.Errorf("got %q, want a closed connection", got)
		}
		return nil
	})

	// Deleting the Service closes the listener.
	addr := ports.addr(30080)
	if err := client.CoreV1().Services("ns").Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, f, "listener closed", func() error {
		if len(f.Ports()) != 0 {
			return fmt.Errorf("ports = %v", f.Ports())
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return fmt.Errorf("%s still accepts", addr)
		}
		return nil
	})
}

func TestNodePortForwarderRetriesBusyPort(t *testing.T) {
	ctx := context.Background()
	client := fake.NewSimpleClientset()
	ports := &portListener{addrs: map[int]string{}, busy: map[int]bool{30080: true}}
	f := newObservedForwarder(t, client, newBackendRecorder(t).dial, ports)
	if _, err := client.CoreV1().Services("ns").Create(ctx, nodePortService("ns", "echo", "NodePort",
		corev1.ServicePort{Name: "http", Port: 80, NodePort: 30080}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The busy port is skipped, another service's port still opens.
	if _, err := client.CoreV1().Services("ns").Create(ctx, nodePortService("ns", "other", "NodePort",
		corev1.ServicePort{Name: "http", Port: 80, NodePort: 30081}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, f, "free port forwarded", func() error {
		if !reflect.DeepEqual(f.Ports(), []int32{30081}) {
			return fmt.Errorf("ports = %v", f.Ports())
		}
		return nil
	})
	// Once the port is free, the next change opens it.
	ports.mu.Lock()
	ports.busy[30080] = false
	ports.mu.Unlock()
	f.trigger()
	eventually(t, f, "freed port forwarded", func() error {
		if !reflect.DeepEqual(f.Ports(), []int32{30080, 30081}) {
			return fmt.Errorf("ports = %v", f.Ports())
		}
		return nil
	})
}
