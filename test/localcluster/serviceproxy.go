package localcluster

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// clusterIPKey is one port of one ClusterIP.
type clusterIPKey struct {
	IP       string
	Port     int32
	Protocol corev1.Protocol
}

func (k clusterIPKey) String() string {
	return fmt.Sprintf("%s/%s", net.JoinHostPort(k.IP, strconv.Itoa(int(k.Port))), k.Protocol)
}

// serviceProxy does for pods what kube-proxy does on a node, in its simplest (userspace)
// form: the whole Service range is local to the node network, and for every port of
// every ClusterIP it listens on ClusterIP:port (TCP or UDP) and forwards each connection,
// or each client's datagrams, to a ready endpoint of the Service, in turn. Pods reach
// it through their default route to the node.
type serviceProxy struct {
	factory  informers.SharedInformerFactory
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	dial     dialFunc
	// fallback names where a Service without endpoint slices goes (default/kubernetes,
	// whose endpoints nothing here maintains).
	fallback func(servicePort) string

	changed chan struct{}
	stop    chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	proxies map[clusterIPKey]*clusterIPProxy
}

type clusterIPProxy struct {
	target servicePort
	next   atomic.Uint64
	tcp    *tcpForwarder
	udp    *udpForwarder
}

func (p *clusterIPProxy) close() {
	if p.tcp != nil {
		p.tcp.Close()
	}
	if p.udp != nil {
		p.udp.Close()
	}
}

// routeServiceRange makes every address of cidr local to the node network (a local route
// on lo), so that listeners can bind ClusterIPs without adding each one.
func routeServiceRange(cidr string) error {
	out, err := exec.Command("ip", "route", "replace", "local", cidr, "dev", "lo").CombinedOutput()
	if err != nil {
		return fmt.Errorf("route the Service range %s to the node: %w: %s", cidr, err, out)
	}
	return nil
}

func newServiceProxy(client kubernetes.Interface, fallback func(servicePort) string) *serviceProxy {
	factory := informers.NewSharedInformerFactory(client, 0)
	d := &net.Dialer{}
	return &serviceProxy{
		factory:  factory,
		services: factory.Core().V1().Services().Lister(),
		slices:   factory.Discovery().V1().EndpointSlices().Lister(),
		dial:     d.DialContext,
		fallback: fallback,
		changed:  make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		proxies:  map[clusterIPKey]*clusterIPProxy{},
	}
}

// Start watches Services and EndpointSlices and serves until Stop.
func (p *serviceProxy) Start() error {
	trigger := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.trigger() },
		UpdateFunc: func(any, any) { p.trigger() },
		DeleteFunc: func(any) { p.trigger() },
	}
	if _, err := p.factory.Core().V1().Services().Informer().AddEventHandler(trigger); err != nil {
		return fmt.Errorf("watch services: %w", err)
	}
	// Endpoints are read per connection; the informer only has to be running.
	p.factory.Discovery().V1().EndpointSlices().Informer()
	p.factory.Start(p.stop)
	for typ, ok := range p.factory.WaitForCacheSync(p.stop) {
		if !ok {
			return fmt.Errorf("service proxy: %v cache did not sync", typ)
		}
	}
	go p.loop()
	return nil
}

func (p *serviceProxy) trigger() { poke(p.changed) }

func (p *serviceProxy) loop() {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-p.changed:
			p.reconcile()
		}
	}
}

// wantedClusterIPs maps every port of every Service with a ClusterIP to that Service port.
func wantedClusterIPs(services []*corev1.Service) map[clusterIPKey]servicePort {
	want := map[clusterIPKey]servicePort{}
	for _, svc := range services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			if ip == corev1.ClusterIPNone || net.ParseIP(ip).To4() == nil {
				continue
			}
			for _, port := range svc.Spec.Ports {
				proto := port.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				if proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP {
					continue
				}
				want[clusterIPKey{IP: ip, Port: port.Port, Protocol: proto}] = servicePort{Namespace: svc.Namespace, Service: svc.Name, PortName: port.Name}
			}
		}
	}
	return want
}

func (p *serviceProxy) reconcile() {
	services, err := p.services.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "List services for the service proxy")
		return
	}
	want := wantedClusterIPs(services)
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, proxy := range p.proxies {
		if target, ok := want[key]; !ok || target != proxy.target {
			proxy.close()
			delete(p.proxies, key)
			klog.V(2).InfoS("Stopped proxying ClusterIP", "clusterIP", key.String(), "service", proxy.target.String())
		}
	}
	for key, target := range want {
		if _, ok := p.proxies[key]; ok {
			continue
		}
		proxy := &clusterIPProxy{target: target}
		pick := func() (string, error) { return p.pick(proxy, key.Protocol) }
		addr := net.JoinHostPort(key.IP, strconv.Itoa(int(key.Port)))
		switch key.Protocol {
		case corev1.ProtocolTCP:
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				klog.ErrorS(err, "Cannot proxy ClusterIP", "clusterIP", key.String(), "service", target.String())
				continue
			}
			proxy.tcp = newTCPForwarder("clusterIP "+key.String(), ln, p.dial, pick)
			go proxy.tcp.Serve()
		case corev1.ProtocolUDP:
			conn, err := net.ListenPacket("udp", addr)
			if err != nil {
				klog.ErrorS(err, "Cannot proxy ClusterIP", "clusterIP", key.String(), "service", target.String())
				continue
			}
			proxy.udp = newUDPForwarder("clusterIP "+key.String(), conn, pick)
			go proxy.udp.Serve()
		}
		p.proxies[key] = proxy
		klog.V(2).InfoS("Proxying ClusterIP", "clusterIP", key.String(), "service", target.String())
	}
}

// pick chooses the next ready endpoint of the proxy's Service port.
func (p *serviceProxy) pick(proxy *clusterIPProxy, protocol corev1.Protocol) (string, error) {
	eps, slices, err := serviceEndpoints(p.slices, proxy.target, protocol)
	if err != nil {
		return "", err
	}
	if len(eps) == 0 && slices == 0 && p.fallback != nil {
		if addr := p.fallback(proxy.target); addr != "" {
			return addr, nil
		}
	}
	return nextEndpoint(eps, &proxy.next, proxy.target)
}

// Stop closes every listener and forwarded connection.
func (p *serviceProxy) Stop() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.factory.Shutdown()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, proxy := range p.proxies {
		proxy.close()
		delete(p.proxies, key)
	}
}

// udpSessionIdle is how long a client's UDP session lives without traffic.
const udpSessionIdle = 30 * time.Second

// maxUDPSessions bounds the sessions of one UDP forwarder; beyond it datagrams from new
// clients are dropped.
const maxUDPSessions = 1024

// udpForwarder relays datagrams between clients of a listening socket and a target
// picked per client: each client gets a connected socket to its target, whose replies
// go back to the client from the listening address.
type udpForwarder struct {
	name string
	conn net.PacketConn
	pick targetPicker

	mu       sync.Mutex
	sessions map[string]*net.UDPConn
	closed   bool
	wg       sync.WaitGroup
}

func newUDPForwarder(name string, conn net.PacketConn, pick targetPicker) *udpForwarder {
	return &udpForwarder{name: name, conn: conn, pick: pick, sessions: map[string]*net.UDPConn{}}
}

// Serve relays until Close.
func (f *udpForwarder) Serve() {
	buf := make([]byte, 64<<10)
	for {
		n, client, err := f.conn.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				klog.ErrorS(err, "UDP forwarder stopped", "forwarder", f.name)
			}
			return
		}
		backend, err := f.session(client)
		if err != nil {
			klog.V(2).InfoS("Dropping datagram", "forwarder", f.name, "client", client, "reason", err)
			continue
		}
		if _, err := backend.Write(buf[:n]); err != nil {
			klog.V(2).InfoS("Dropping datagram", "forwarder", f.name, "client", client, "err", err)
		}
	}
}

// session returns the client's connected socket to its target, creating it and its reply
// relay on the first datagram.
func (f *udpForwarder) session(client net.Addr) (*net.UDPConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, net.ErrClosed
	}
	if c, ok := f.sessions[client.String()]; ok {
		return c, nil
	}
	if len(f.sessions) >= maxUDPSessions {
		return nil, fmt.Errorf("%d sessions open", maxUDPSessions)
	}
	target, err := f.pick()
	if err != nil {
		return nil, err
	}
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	backend, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, err
	}
	f.sessions[client.String()] = backend
	f.wg.Add(1)
	go f.relayReplies(client, backend)
	return backend, nil
}

// relayReplies sends the target's datagrams back to the client until the session idles.
func (f *udpForwarder) relayReplies(client net.Addr, backend *net.UDPConn) {
	defer f.wg.Done()
	defer func() {
		f.mu.Lock()
		delete(f.sessions, client.String())
		f.mu.Unlock()
		backend.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		_ = backend.SetReadDeadline(time.Now().Add(udpSessionIdle))
		n, err := backend.Read(buf)
		if err != nil {
			return
		}
		if _, err := f.conn.WriteTo(buf[:n], client); err != nil {
			return
		}
	}
}

// Close stops the listener and every session.
func (f *udpForwarder) Close() {
	f.mu.Lock()
	f.closed = true
	f.conn.Close()
	for _, c := range f.sessions {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
