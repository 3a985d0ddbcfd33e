package localcluster

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// servicePort identifies one port of one Service.
type servicePort struct {
	Namespace string
	Service   string
	PortName  string
}

func (p servicePort) String() string {
	return fmt.Sprintf("%s/%s:%s", p.Namespace, p.Service, p.PortName)
}

// nodePortForwarder does what kube-proxy does for node ports, for the host's
// loopback: it listens on 127.0.0.1:<nodePort> for every TCP node port and forwards
// each connection to a ready endpoint of the Service, in turn.
type nodePortForwarder struct {
	dial    dialFunc
	listen  func(port int) (net.Listener, error)
	factory informers.SharedInformerFactory

	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister

	changed chan struct{}
	stop    chan struct{}
	done    chan struct{}

	// observed, when set, receives a notice after each reconcile and endpoint change.
	observed chan struct{}

	mu        sync.Mutex
	looping   bool
	listeners map[int32]*nodePortListener
}

type nodePortListener struct {
	target servicePort
	fwd    *tcpForwarder
	next   atomic.Uint64
}

// resyncPeriod is also how often a node port whose host port was busy is retried.
const nodePortResyncPeriod = 30 * time.Second

func newNodePortForwarder(client kubernetes.Interface, dial dialFunc, listen func(port int) (net.Listener, error)) *nodePortForwarder {
	factory := informers.NewSharedInformerFactory(client, nodePortResyncPeriod)
	return &nodePortForwarder{
		dial:      dial,
		listen:    listen,
		factory:   factory,
		services:  factory.Core().V1().Services().Lister(),
		slices:    factory.Discovery().V1().EndpointSlices().Lister(),
		changed:   make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		listeners: map[int32]*nodePortListener{},
	}
}

// Start begins watching Services and waits for the first listing.
func (f *nodePortForwarder) Start() error {
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f.trigger() },
		UpdateFunc: func(any, any) { f.trigger() },
		DeleteFunc: func(any) { f.trigger() },
	}
	// Endpoints are read when a connection arrives; only Services change listeners.
	if _, err := f.factory.Core().V1().Services().Informer().AddEventHandler(notify); err != nil {
		return fmt.Errorf("watch services: %w", err)
	}
	observe := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f.notifyObserved() },
		UpdateFunc: func(any, any) { f.notifyObserved() },
		DeleteFunc: func(any) { f.notifyObserved() },
	}
	if _, err := f.factory.Discovery().V1().EndpointSlices().Informer().AddEventHandler(observe); err != nil {
		return fmt.Errorf("watch endpoint slices: %w", err)
	}
	f.factory.Start(f.stop)
	for typ, ok := range f.factory.WaitForCacheSync(f.stop) {
		if !ok {
			return fmt.Errorf("node ports: %v cache did not sync", typ)
		}
	}
	f.mu.Lock()
	f.looping = true
	f.mu.Unlock()
	go f.loop()
	return nil
}

func (f *nodePortForwarder) trigger() { poke(f.changed) }

// poke sends on a notice channel without blocking: a notice already pending covers this one.
func poke(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (f *nodePortForwarder) loop() {
	defer close(f.done)
	for {
		select {
		case <-f.stop:
			return
		case <-f.changed:
			f.reconcile()
			f.notifyObserved()
		}
	}
}

func (f *nodePortForwarder) notifyObserved() {
	if f.observed != nil {
		poke(f.observed)
	}
}

// reconcile opens a listener for each wanted node port and closes the others.
func (f *nodePortForwarder) reconcile() {
	services, err := f.services.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "List services for node ports")
		return
	}
	want := wantedNodePorts(services)

	f.mu.Lock()
	defer f.mu.Unlock()
	for port, l := range f.listeners {
		if target, ok := want[port]; !ok || target != l.target {
			l.fwd.Close()
			delete(f.listeners, port)
			klog.InfoS("Stopped forwarding node port", "nodePort", port, "service", l.target.String())
		}
	}
	for port, target := range want {
		if _, ok := f.listeners[port]; ok {
			continue
		}
		ln, err := f.listen(int(port))
		if err != nil {
			klog.ErrorS(err, "Cannot forward node port; retrying on the next resync", "nodePort", port, "service", target.String())
			continue
		}
		l := &nodePortListener{target: target}
		l.fwd = newTCPForwarder("nodePort "+strconv.Itoa(int(port)), ln, f.dial, func() (string, error) { return f.pick(l) })
		f.listeners[port] = l
		go l.fwd.Serve()
		klog.InfoS("Forwarding node port", "nodePort", port, "service", target.String(), "listen", ln.Addr().String())
	}
}

// pick chooses the next ready endpoint of the listener's Service port.
func (f *nodePortForwarder) pick(l *nodePortListener) (string, error) {
	eps, _, err := serviceEndpoints(f.slices, l.target, corev1.ProtocolTCP)
	if err != nil {
		return "", err
	}
	return nextEndpoint(eps, &l.next, l.target)
}

// serviceEndpoints lists the ready endpoints of one port of a Service, and how many
// EndpointSlices the Service has.
func serviceEndpoints(lister discoverylisters.EndpointSliceLister, target servicePort, protocol corev1.Protocol) ([]string, int, error) {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: target.Service})
	slices, err := lister.EndpointSlices(target.Namespace).List(sel)
	if err != nil {
		return nil, 0, err
	}
	return readyEndpointsFor(slices, target.PortName, protocol), len(slices), nil
}

// nextEndpoint takes the endpoints in turn, one per call.
func nextEndpoint(eps []string, next *atomic.Uint64, target servicePort) (string, error) {
	if len(eps) == 0 {
		return "", fmt.Errorf("service %s has no ready endpoints", target)
	}
	n := next.Add(1) - 1
	return eps[n%uint64(len(eps))], nil
}

// Ports lists the node ports currently forwarded.
func (f *nodePortForwarder) Ports() []int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	ports := make([]int32, 0, len(f.listeners))
	for p := range f.listeners {
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports
}

// Stop closes every listener and forwarded connection.
func (f *nodePortForwarder) Stop() {
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	f.factory.Shutdown()
	f.mu.Lock()
	looping := f.looping
	f.mu.Unlock()
	if looping {
		<-f.done
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for port, l := range f.listeners {
		l.fwd.Close()
		delete(f.listeners, port)
	}
}

// wantedNodePorts maps each TCP node port of the Services to its Service port.
func wantedNodePorts(services []*corev1.Service) map[int32]servicePort {
	want := map[int32]servicePort{}
	for _, svc := range services {
		if svc.Spec.Type != corev1.ServiceTypeNodePort && svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.NodePort == 0 || (p.Protocol != "" && p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			want[p.NodePort] = servicePort{Namespace: svc.Namespace, Service: svc.Name, PortName: p.Name}
		}
	}
	return want
}

// readyEndpoints lists "ip:port" for every ready endpoint of the named TCP port, in a
// stable order.
func readyEndpoints(slices []*discoveryv1.EndpointSlice, portName string) []string {
	return readyEndpointsFor(slices, portName, corev1.ProtocolTCP)
}

// readyEndpointsFor lists "ip:port" for every ready endpoint of the named port and
// protocol, in a stable order.
func readyEndpointsFor(slices []*discoveryv1.EndpointSlice, portName string, protocol corev1.Protocol) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var port int32
		for _, p := range s.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if name == portName && proto == protocol && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range s.Endpoints {
			// A nil Ready means ready, as kube-proxy reads it.
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, addr := range ep.Addresses {
				hp := net.JoinHostPort(addr, strconv.Itoa(int(port)))
				if !seen[hp] {
					seen[hp] = true
					out = append(out, hp)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}
