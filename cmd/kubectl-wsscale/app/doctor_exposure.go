package app

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	httpRoutes        = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	gateways          = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}
	gatewayClasses    = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gatewayclasses"}
	virtualServices   = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	destinationRules  = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
	linkerdServers    = schema.GroupVersionResource{Group: "policy.linkerd.io", Version: "v1beta3", Resource: "servers"}
	linkerdAuthPolicy = schema.GroupVersionResource{Group: "policy.linkerd.io", Version: "v1alpha1", Resource: "authorizationpolicies"}
	linkerdServerAuth = schema.GroupVersionResource{Group: "policy.linkerd.io", Version: "v1beta1", Resource: "serverauthorizations"}
	traefikRoutes     = schema.GroupVersionResource{Group: "traefik.io", Version: "v1alpha1", Resource: "ingressroutes"}
)

// traefikController is the controllerName of Traefik's Gateway API provider.
const traefikController = "traefik.io/gateway-controller"

// envoyControllers are GatewayClass controllers built on Envoy, whose route timeout applies to
// an upgraded connection's whole life.
var envoyControllers = []string{"istio.io/gateway-controller", "gateway.envoyproxy.io/gatewayclass-controller", "projectcontour.io/", "gateway.kgateway.dev/", "solo.io/gloo-gateway"}

// exposure is what the exposure checks know of one workload.
type exposure struct {
	w        *Workload
	services map[string]*corev1.Service // the Services that select the workload's pods, by name
	cfg      serverConfig
}

// matchesHost: an Istio host names the Service by short name, name.namespace, or FQDN.
func (e *exposure) serviceOfHost(host string) string {
	for name, s := range e.services {
		for _, h := range []string{name, name + "." + s.Namespace, name + "." + s.Namespace + ".svc", name + "." + s.Namespace + ".svc.cluster.local"} {
			if host == h {
				return name
			}
		}
	}
	return ""
}

// checkExposure detects how each workload is exposed, from the objects in its namespace, and
// checks the settings that cut WebSockets.
func (d *doctor) checkExposure(ctx context.Context, ws []*Workload) error {
	for _, w := range ws {
		if w.deploy == nil {
			continue
		}
		svcs, err := d.c.kube.CoreV1().Services(w.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list Services: %w", err)
		}
		e := &exposure{w: w, services: map[string]*corev1.Service{}, cfg: readServerConfig(&w.deploy.Spec.Template.Spec)}
		podLabels := labels.Set(w.deploy.Spec.Template.Labels)
		for i := range svcs.Items {
			s := &svcs.Items[i]
			if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
				e.services[s.Name] = s
			}
		}
		if len(e.services) == 0 {
			continue
		}
		if err := d.checkIngresses(ctx, e); err != nil {
			return err
		}
		steps := []func(context.Context, *exposure) error{d.checkTraefik, d.checkHTTPRoutes, d.checkIstio, d.checkLinkerd}
		for _, step := range steps {
			if err := step(ctx, e); err != nil && !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
				return err
			}
		}
		d.checkLoadBalancers(e)
	}
	return nil
}

// idleNeed is the shortest proxy idle timeout that never cuts a connection kept busy by pings.
func (d *doctor) idleNeed(e *exposure) time.Duration {
	return time.Duration(float64(e.cfg.ping) * d.o.PingMargin)
}

// checkIngresses checks the Ingresses routing to the workload, by controller.
func (d *doctor) checkIngresses(ctx context.Context, e *exposure) error {
	list, err := d.c.kube.NetworkingV1().Ingresses(e.w.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list Ingresses: %w", err)
	}
	for i := range list.Items {
		ing := &list.Items[i]
		if !ingressRoutesTo(ing, e.services) {
			continue
		}
		class := ing.Annotations["kubernetes.io/ingress.class"]
		if ing.Spec.IngressClassName != nil {
			class = *ing.Spec.IngressClassName
		}
		obj := fmt.Sprintf("Ingress %s/%s (class %s)", ing.Namespace, ing.Name, class)
		need := d.idleNeed(e)
		switch {
		case strings.Contains(class, "nginx") || hasPrefixKey(ing.Annotations, "nginx.ingress.kubernetes.io/"):
			d.add(Check{Area: "exposure", Object: obj, Status: Warn, Evidence: "Ingress NGINX was retired in March 2026: no more fixes, security ones included",
				Fix: "move to Gateway API (the websocket-app chart's exposure.type httpRoute) or Traefik (exposure.type traefik)"})
			for _, key := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
				v, set := ing.Annotations[key]
				secs := 60 // the controller's default
				if set {
					n, err := strconv.Atoi(strings.TrimSpace(v))
					if err != nil {
						d.add(Check{Area: "exposure", Object: obj, Status: Fail, Evidence: fmt.Sprintf("%s=%q is not a number of seconds", key, v), Fix: fmt.Sprintf("set %s to a number of seconds ≥ %d", key, int(need.Seconds()))})
						continue
					}
					secs = n
				}
				got := time.Duration(secs) * time.Second
				src := fmt.Sprintf("%s=%d", key, secs)
				if !set {
					src = fmt.Sprintf("%s unset (default 60)", key)
				}
				if got < need {
					d.add(Check{Area: "exposure", Object: obj, Status: Fail,
						Evidence: fmt.Sprintf("%s: NGINX closes a WebSocket quiet for %v, below the ping interval %v × %g", src, got, e.cfg.ping, d.o.PingMargin),
						Fix:      fmt.Sprintf("annotate %s: \"%d\" (or ping more often: PING_INTERVAL)", key, int(max(need, time.Hour).Seconds()))})
				} else {
					d.add(Check{Area: "exposure", Object: obj, Status: Pass, Evidence: fmt.Sprintf("%s ≥ ping interval %v × %g", src, e.cfg.ping, d.o.PingMargin)})
				}
			}
		case strings.Contains(class, "haproxy") || hasPrefixKey(ing.Annotations, "haproxy.org/"):
			v := ing.Annotations["haproxy.org/timeout-tunnel"]
			if v == "" {
				d.add(Check{Area: "exposure", Object: obj, Status: Pass, Evidence: "no haproxy.org/timeout-tunnel on the Ingress: the controller's ConfigMap timeout-tunnel governs upgraded connections (1h by default)"})
				break
			}
			got, err := haproxyDuration(v)
			switch {
			case err != nil:
				d.add(Check{Area: "exposure", Object: obj, Status: Fail, Evidence: fmt.Sprintf("haproxy.org/timeout-tunnel=%q: %v", v, err), Fix: "use an HAProxy time such as 1h"})
			case got < need:
				d.add(Check{Area: "exposure", Object: obj, Status: Fail,
					Evidence: fmt.Sprintf("haproxy.org/timeout-tunnel=%s: HAProxy closes a WebSocket quiet for %v, below the ping interval %v × %g", v, got, e.cfg.ping, d.o.PingMargin),
					Fix:      "set haproxy.org/timeout-tunnel to 1h (it governs upgraded connections; timeout-client/server do not once the tunnel is up)"})
			default:
				d.add(Check{Area: "exposure", Object: obj, Status: Pass, Evidence: fmt.Sprintf("haproxy.org/timeout-tunnel=%s ≥ ping interval %v × %g", v, e.cfg.ping, d.o.PingMargin)})
			}
		case strings.Contains(class, "traefik") || hasPrefixKey(ing.Annotations, "traefik.ingress.kubernetes.io/"):
			d.add(traefikPass(obj))
		}
	}
	return nil
}

// traefikPass: entry point readTimeout and idleTimeout apply to requests, not to an upgraded
// connection, so they are never flagged; nothing in a route cuts a WebSocket by age.
func traefikPass(obj string) Check {
	return Check{Area: "exposure", Object: obj, Status: Pass,
		Evidence: "Traefik: no setting of the route cuts an upgraded connection (entry point respondingTimeouts readTimeout/idleTimeout end requests, not WebSockets after the upgrade)"}
}

// checkTraefik notes the IngressRoutes to the workload.
func (d *doctor) checkTraefik(ctx context.Context, e *exposure) error {
	list, err := d.c.dyn.Resource(traefikRoutes).Namespace(e.w.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, r := range list.Items {
		routes, _, _ := unstructured.NestedSlice(r.Object, "spec", "routes")
		for _, rt := range routes {
			m, _ := rt.(map[string]any)
			svcs, _ := m["services"].([]any)
			for _, s := range svcs {
				sm, _ := s.(map[string]any)
				if name, _ := sm["name"].(string); e.services[name] != nil {
					d.add(traefikPass(fmt.Sprintf("IngressRoute %s/%s", r.GetNamespace(), r.GetName())))
					goto next
				}
			}
		}
	next:
	}
	return nil
}

// checkHTTPRoutes checks the Gateway API routes to the workload: Accepted by their parents, and
// request timeouts judged by the GatewayClass's controller.
func (d *doctor) checkHTTPRoutes(ctx context.Context, e *exposure) error {
	list, err := d.c.dyn.Resource(httpRoutes).Namespace(e.w.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, r := range list.Items {
		rules, _, _ := unstructured.NestedSlice(r.Object, "spec", "rules")
		routes := false
		var timeouts []string
		for _, rule := range rules {
			m, _ := rule.(map[string]any)
			refs, _ := m["backendRefs"].([]any)
			for _, ref := range refs {
				rm, _ := ref.(map[string]any)
				kind, _ := rm["kind"].(string)
				if name, _ := rm["name"].(string); e.services[name] != nil && (kind == "" || kind == "Service") {
					routes = true
				}
			}
			if t, ok := m["timeouts"].(map[string]any); ok {
				for _, k := range []string{"request", "backendRequest"} {
					if v, _ := t[k].(string); v != "" && v != "0s" {
						timeouts = append(timeouts, k+"="+v)
					}
				}
			}
		}
		if !routes {
			continue
		}
		obj := fmt.Sprintf("HTTPRoute %s/%s", r.GetNamespace(), r.GetName())
		parents, _, _ := unstructured.NestedSlice(r.Object, "status", "parents")
		var accepted, refused, fixes []string
		for _, p := range parents {
			pm, _ := p.(map[string]any)
			ref, _ := pm["parentRef"].(map[string]any)
			name, _ := ref["name"].(string)
			conds, _ := pm["conditions"].([]any)
			ok := false
			why := "no Accepted condition"
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				if cm["type"] == "Accepted" {
					ok = cm["status"] == "True"
					reason, _ := cm["reason"].(string)
					why = fmt.Sprintf("Accepted=%v %s", cm["status"], reason)
					if msg, _ := cm["message"].(string); msg != "" {
						why += ": " + msg
					}
					if !ok {
						fixes = append(fixes, routeRefusedFix(reason))
					}
				}
			}
			if ok {
				accepted = append(accepted, name)
			} else {
				refused = append(refused, fmt.Sprintf("Gateway %s: %s", name, why))
			}
		}
		switch {
		case len(parents) == 0:
			d.add(Check{Area: "exposure", Object: obj, Status: Fail,
				Evidence: "no parent has accepted it: status.parents is empty (no Gateway controller has seen the route, or its parentRefs name no Gateway)",
				Fix:      "check spec.parentRefs against kubectl get gateways -A, and that the Gateway's class has a running controller"})
		case len(refused) > 0:
			d.add(Check{Area: "exposure", Object: obj, Status: Fail,
				Evidence: "not Accepted: " + strings.Join(refused, "; "),
				Fix:      strings.Join(unique(fixes), "; ")})
		default:
			d.add(Check{Area: "exposure", Object: obj, Status: Pass, Evidence: "Accepted by Gateway " + strings.Join(accepted, ", ")})
		}
		if len(timeouts) > 0 {
			controller := d.routeController(ctx, &r)
			envoy := false
			for _, c := range envoyControllers {
				envoy = envoy || strings.HasPrefix(controller, c)
			}
			switch {
			case envoy:
				d.add(Check{Area: "exposure", Object: obj, Status: Fail,
					Evidence: fmt.Sprintf("timeouts %s with controller %s, which applies the route timeout to the whole upgraded connection: every WebSocket ends at that age", strings.Join(timeouts, ", "), controller),
					Fix:      "remove rules[].timeouts (or set 0s) on the WebSocket route"})
			case strings.HasPrefix(controller, traefikController):
				// Seen on Traefik v3.6: an idle WebSocket outlives timeouts.request several times over.
				d.add(Check{Area: "exposure", Object: obj, Status: Pass,
					Evidence: fmt.Sprintf("timeouts %s with controller %s: Traefik does not end an upgraded connection at the route timeout", strings.Join(timeouts, ", "), controller)})
			default:
				d.add(Check{Area: "exposure", Object: obj, Status: Warn,
					Evidence: fmt.Sprintf("timeouts %s with controller %s: whether it applies them to upgraded connections depends on the implementation (some ignore timeouts, Envoy-based ones cut the WebSocket at that age)", strings.Join(timeouts, ", "), orUnknown(controller)),
					Fix:      "remove rules[].timeouts on the WebSocket route, or prove the controller leaves upgraded connections alone (kubectl wsscale doctor --probe URL)"})
			}
		}
	}
	return nil
}

// routeRefusedFix is what to do about a route a Gateway did not accept, by the condition's reason
// (the Gateway API's reasons for Accepted=False).
func routeRefusedFix(reason string) string {
	switch reason {
	case "NotAllowedByListeners":
		return "the Gateway's listeners[].allowedRoutes must admit this namespace (namespaces.from: All or Selector) and the kind HTTPRoute"
	case "NoMatchingListenerHostname":
		return "spec.hostnames must match a hostname of one of the Gateway's listeners"
	case "NoMatchingParent":
		return "spec.parentRefs[].sectionName and port must name a listener the Gateway has (kubectl get gateway -o yaml: spec.listeners[].name)"
	case "UnsupportedValue":
		return "a value of the route is not supported by this Gateway's implementation: the condition's message names it"
	case "Pending":
		return "the Gateway controller has not reconciled the route yet: check that it runs"
	default:
		return "fix what the condition's reason and message say (kubectl describe httproute)"
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// routeController returns the controllerName of the GatewayClass of the route's first Gateway.
func (d *doctor) routeController(ctx context.Context, r *unstructured.Unstructured) string {
	refs, _, _ := unstructured.NestedSlice(r.Object, "spec", "parentRefs")
	for _, ref := range refs {
		m, _ := ref.(map[string]any)
		name, _ := m["name"].(string)
		ns, _ := m["namespace"].(string)
		if ns == "" {
			ns = r.GetNamespace()
		}
		gw, err := d.c.dyn.Resource(gateways).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
		gc, err := d.c.dyn.Resource(gatewayClasses).Get(ctx, class, metav1.GetOptions{})
		if err != nil {
			continue
		}
		c, _, _ := unstructured.NestedString(gc.Object, "spec", "controllerName")
		return c
	}
	return ""
}

// checkIstio checks VirtualService route timeouts and DestinationRule h2UpgradePolicy for the
// workload's Services.
func (d *doctor) checkIstio(ctx context.Context, e *exposure) error {
	vss, err := d.c.dyn.Resource(virtualServices).Namespace(e.w.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, vs := range vss.Items {
		http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
		obj := fmt.Sprintf("VirtualService %s/%s", vs.GetNamespace(), vs.GetName())
		var cut []string
		routes := false
		for i, h := range http {
			hm, _ := h.(map[string]any)
			to := false
			dests, _ := hm["route"].([]any)
			for _, dst := range dests {
				dm, _ := dst.(map[string]any)
				dd, _ := dm["destination"].(map[string]any)
				if host, _ := dd["host"].(string); e.serviceOfHost(host) != "" {
					to = true
				}
			}
			if !to {
				continue
			}
			routes = true
			if t, _ := hm["timeout"].(string); t != "" && t != "0s" {
				name, _ := hm["name"].(string)
				if name == "" {
					name = fmt.Sprintf("http[%d]", i)
				}
				cut = append(cut, fmt.Sprintf("route %s timeout %s", name, t))
			}
		}
		switch {
		case !routes:
		case len(cut) > 0:
			d.add(Check{Area: "exposure", Object: obj, Status: Fail,
				Evidence: strings.Join(cut, ", ") + ": Envoy applies the route timeout to the whole upgraded connection, so every WebSocket ends at that age",
				Fix:      "remove timeout from the WebSocket route (Istio's route timeout is off unless set) or set it to 0s"})
		default:
			d.add(Check{Area: "exposure", Object: obj, Status: Pass, Evidence: "no route timeout on the routes to the WebSocket Service"})
		}
	}
	drs, err := d.c.dyn.Resource(destinationRules).Namespace(e.w.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, dr := range drs.Items {
		host, _, _ := unstructured.NestedString(dr.Object, "spec", "host")
		if e.serviceOfHost(host) == "" {
			continue
		}
		obj := fmt.Sprintf("DestinationRule %s/%s", dr.GetNamespace(), dr.GetName())
		policy, _, _ := unstructured.NestedString(dr.Object, "spec", "trafficPolicy", "connectionPool", "http", "h2UpgradePolicy")
		if policy == "UPGRADE" {
			d.add(Check{Area: "exposure", Object: obj, Status: Fail,
				Evidence: "h2UpgradePolicy UPGRADE: the hop to the pods becomes HTTP/2 and the HTTP/1.1 Upgrade handshake of a WebSocket fails",
				Fix:      "set trafficPolicy.connectionPool.http.h2UpgradePolicy: DO_NOT_UPGRADE"})
		} else {
			d.add(Check{Area: "exposure", Object: obj, Status: Pass, Evidence: fmt.Sprintf("h2UpgradePolicy %s: the pods are reached over HTTP/1.1", orDefault(policy, "DEFAULT"))})
		}
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// checkLinkerd checks the Linkerd Servers that select the workload's pods: a protocol that
// carries an HTTP/1.1 upgrade, and an authorization that admits clients.
func (d *doctor) checkLinkerd(ctx context.Context, e *exposure) error {
	servers, err := d.c.dyn.Resource(linkerdServers).Namespace(e.w.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	podLabels := labels.Set(e.w.deploy.Spec.Template.Labels)
	for _, s := range servers.Items {
		sel, _, _ := unstructured.NestedMap(s.Object, "spec", "podSelector")
		var ls metav1.LabelSelector
		if err := fromUnstructured(sel, &ls); err != nil {
			continue
		}
		selector, err := metav1.LabelSelectorAsSelector(&ls)
		if err != nil || !selector.Matches(podLabels) {
			continue
		}
		obj := fmt.Sprintf("Linkerd Server %s/%s", s.GetNamespace(), s.GetName())
		proto, _, _ := unstructured.NestedString(s.Object, "spec", "proxyProtocol")
		switch proto {
		case "HTTP/2", "gRPC":
			d.add(Check{Area: "exposure", Object: obj, Status: Fail,
				Evidence: fmt.Sprintf("proxyProtocol %s: the proxy expects HTTP/2, and a WebSocket's HTTP/1.1 Upgrade fails", proto),
				Fix:      "set spec.proxyProtocol to HTTP/1 (or unknown: detected)"})
		default:
			d.add(Check{Area: "exposure", Object: obj, Status: Pass, Evidence: fmt.Sprintf("proxyProtocol %s carries the HTTP/1.1 Upgrade", orDefault(proto, "unknown (detected)"))})
		}
		if !d.linkerdAuthorized(ctx, s.GetNamespace(), s.GetName()) {
			d.add(Check{Area: "exposure", Object: obj, Status: Fail,
				Evidence: "no AuthorizationPolicy or ServerAuthorization targets this Server: Linkerd denies every connection to its port",
				Fix:      "add an AuthorizationPolicy with targetRef kind Server name " + s.GetName() + " (the websocket-app chart's mesh.type linkerd does)"})
		} else {
			d.add(Check{Area: "exposure", Object: obj, Status: Pass, Evidence: "an authorization admits clients"})
		}
	}
	return nil
}

func (d *doctor) linkerdAuthorized(ctx context.Context, ns, server string) bool {
	if list, err := d.c.dyn.Resource(linkerdAuthPolicy).Namespace(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range list.Items {
			kind, _, _ := unstructured.NestedString(p.Object, "spec", "targetRef", "kind")
			name, _, _ := unstructured.NestedString(p.Object, "spec", "targetRef", "name")
			if kind == "Server" && name == server {
				return true
			}
		}
	}
	if list, err := d.c.dyn.Resource(linkerdServerAuth).Namespace(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range list.Items {
			if name, _, _ := unstructured.NestedString(p.Object, "spec", "server", "name"); name == server {
				return true
			}
		}
	}
	return false
}

// checkLoadBalancers checks cloud load balancer idle-timeout annotations on the workload's
// LoadBalancer Services.
func (d *doctor) checkLoadBalancers(e *exposure) {
	need := d.idleNeed(e)
	for _, s := range e.services {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		obj := fmt.Sprintf("Service %s/%s (LoadBalancer)", s.Namespace, s.Name)
		for _, a := range []struct {
			key  string
			unit time.Duration
		}{
			{"service.beta.kubernetes.io/aws-load-balancer-connection-idle-timeout", time.Second},
			{"service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout", time.Minute},
			{"service.beta.kubernetes.io/oci-load-balancer-connection-idle-timeout", time.Second},
		} {
			v, ok := s.Annotations[a.key]
			if !ok {
				continue
			}
			n, err := strconv.Atoi(strings.TrimSpace(v))
			// The least value of the annotation, in its own unit, that keeps pinged connections.
			least := fmt.Sprintf("%d (%s)", int64((need+a.unit-1)/a.unit), map[time.Duration]string{time.Second: "seconds", time.Minute: "minutes"}[a.unit])
			switch {
			case err != nil:
				d.add(Check{Area: "exposure", Object: obj, Status: Fail, Evidence: fmt.Sprintf("%s=%q is not a number", a.key, v),
					Fix: fmt.Sprintf("set %s to a whole number of at least %s", a.key, least)})
			case time.Duration(n)*a.unit < need:
				d.add(Check{Area: "exposure", Object: obj, Status: Fail,
					Evidence: fmt.Sprintf("%s=%s: the load balancer drops connections idle %v, below the ping interval %v × %g", a.key, v, time.Duration(n)*a.unit, e.cfg.ping, d.o.PingMargin),
					Fix:      fmt.Sprintf("raise %s to at least %s, or ping more often", a.key, least)})
			default:
				d.add(Check{Area: "exposure", Object: obj, Status: Pass, Evidence: fmt.Sprintf("%s=%s ≥ ping interval %v × %g", a.key, v, e.cfg.ping, d.o.PingMargin)})
			}
		}
	}
}

func ingressRoutesTo(ing *networkingv1.Ingress, svcs map[string]*corev1.Service) bool {
	if b := ing.Spec.DefaultBackend; b != nil && b.Service != nil && svcs[b.Service.Name] != nil {
		return true
	}
	for _, r := range ing.Spec.Rules {
		if r.HTTP == nil {
			continue
		}
		for _, p := range r.HTTP.Paths {
			if p.Backend.Service != nil && svcs[p.Backend.Service.Name] != nil {
				return true
			}
		}
	}
	return false
}

func hasPrefixKey(m map[string]string, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// haproxyDuration parses an HAProxy time: a number with an optional unit (us, ms, s, m, h, d;
// milliseconds without one).
func haproxyDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := v, "ms"
	if i >= 0 {
		num, unit = v[:i], v[i:]
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return 0, fmt.Errorf("not an HAProxy time")
	}
	units := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}
	u, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	return time.Duration(n) * u, nil
}
