package nodeagent

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// defaultPath is the PATH of a container whose pod does not set one, as an image would.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// formatMap renders labels or annotations in the kubelet's downward API file format:
// sorted `key="value"` lines (Go %q quoting) without a trailing newline.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%v=%q", k, m[k])
	}
	return b.String()
}

// podFieldValue resolves a downward API field path against pod, whose status must already
// carry the pod and host IPs.
func podFieldValue(pod *v1.Pod, fieldPath string) (string, error) {
	if key, ok := subscript(fieldPath, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(fieldPath, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch fieldPath {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.hostIPs":
		return joinIPs(pod.Status.HostIPs, func(ip v1.HostIP) string { return ip.IP }), nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		return joinIPs(pod.Status.PodIPs, func(ip v1.PodIP) string { return ip.IP }), nil
	}
	return "", fmt.Errorf("unsupported field path %q", fieldPath)
}

func joinIPs[T any](ips []T, ip func(T) string) string {
	s := make([]string, 0, len(ips))
	for _, i := range ips {
		s = append(s, ip(i))
	}
	return strings.Join(s, ",")
}

// subscript parses `prefix['key']` and returns key.
func subscript(fieldPath, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(fieldPath, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

// containerResourceValue resolves a resourceFieldRef. An unset limit falls back to the
// node's allocatable amount, as the kubelet does. Values are rounded up to the divisor.
func containerResourceValue(sel *v1.ResourceFieldSelector, c *v1.Container, allocatable v1.ResourceList) (string, error) {
	divisor := resource.MustParse("1")
	if !sel.Divisor.IsZero() {
		divisor = sel.Divisor
	}
	kind, name, ok := strings.Cut(sel.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("unsupported container resource %q", sel.Resource)
	}
	rn := v1.ResourceName(name)
	var q resource.Quantity
	var found bool
	if kind == "limits" {
		q, found = c.Resources.Limits[rn]
	} else {
		q, found = c.Resources.Requests[rn]
		if !found && rn != v1.ResourceCPU && rn != v1.ResourceMemory && rn != v1.ResourceEphemeralStorage {
			return "", fmt.Errorf("unsupported container resource %q", sel.Resource)
		}
		if !found {
			// An unset request defaults to the limit, then to zero.
			q, found = c.Resources.Limits[rn]
		}
		if !found {
			return "0", nil
		}
	}
	if !found {
		q, found = allocatable[rn]
	}
	if !found {
		return "", fmt.Errorf("unsupported container resource %q", sel.Resource)
	}
	if rn == v1.ResourceCPU {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// expand replaces $(NAME) references that mapping knows; $$ escapes a dollar; unknown
// references are kept literally, as in Kubernetes.
func expand(input string, mapping func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(input); i++ {
		if input[i] != '$' || i+1 >= len(input) {
			b.WriteByte(input[i])
			continue
		}
		switch next := input[i+1]; {
		case next == '$':
			b.WriteByte('$')
			i++
		case next == '(':
			end := strings.IndexByte(input[i+2:], ')')
			if end < 0 {
				b.WriteString(input[i:])
				return b.String()
			}
			name := input[i+2 : i+2+end]
			if v, ok := mapping(name); ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString(input[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// envContext is what env resolution needs besides the pod: the node's view of things.
type envContext struct {
	nodeIP        string
	apiServerPort int
	allocatable   v1.ResourceList
}

// objectCache fetches each configMap and secret at most once per container start, so
// that every reference sees the same version.
type objectCache struct {
	client     kubernetes.Interface
	namespace  string
	configMaps map[string]*v1.ConfigMap
	secrets    map[string]*v1.Secret
}

func newObjectCache(client kubernetes.Interface, namespace string) *objectCache {
	return &objectCache{client: client, namespace: namespace, configMaps: map[string]*v1.ConfigMap{}, secrets: map[string]*v1.Secret{}}
}

// configMap returns nil, nil when the configMap does not exist.
func (c *objectCache) configMap(ctx context.Context, name string) (*v1.ConfigMap, error) {
	if cm, ok := c.configMaps[name]; ok {
		return cm, nil
	}
	cm, err := c.client.CoreV1().ConfigMaps(c.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get configmap %s/%s: %w", c.namespace, name, err)
	}
	c.configMaps[name] = cm
	return cm, nil
}

// secret returns nil, nil when the secret does not exist.
func (c *objectCache) secret(ctx context.Context, name string) (*v1.Secret, error) {
	if s, ok := c.secrets[name]; ok {
		return s, nil
	}
	s, err := c.client.CoreV1().Secrets(c.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %s/%s: %w", c.namespace, name, err)
	}
	c.secrets[name] = s
	return s, nil
}

// envList is an ordered environment in which a later assignment replaces an earlier one.
type envList struct {
	order  []string
	values map[string]string
}

func (e *envList) set(name, value string) {
	if e.values == nil {
		e.values = map[string]string{}
	}
	if _, ok := e.values[name]; !ok {
		e.order = append(e.order, name)
	}
	e.values[name] = value
}

func (e *envList) get(name string) (string, bool) {
	v, ok := e.values[name]
	return v, ok
}

// environ renders NAME=value pairs in assignment order.
func (e *envList) environ() []string {
	out := make([]string, 0, len(e.order))
	for _, n := range e.order {
		out = append(out, n+"="+e.values[n])
	}
	return out
}

// makeEnvironment builds a container's environment the way the kubelet does: envFrom
// sources first, then env entries in order (with $(VAR) expansion against what is already
// defined), then the API server's service variables unless the pod set them. pod must
// carry its pod and host IPs in its status.
func makeEnvironment(ctx context.Context, objs *objectCache, pod *v1.Pod, c *v1.Container, ec envContext) (*envList, error) {
	env := &envList{}
	env.set("PATH", defaultPath)
	env.set("HOSTNAME", pod.Name)

	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			ref := from.ConfigMapRef
			cm, err := objs.configMap(ctx, ref.Name)
			if err != nil {
				return nil, err
			}
			if cm == nil {
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", ref.Name)
			}
			data = cm.Data
		case from.SecretRef != nil:
			ref := from.SecretRef
			s, err := objs.secret(ctx, ref.Name)
			if err != nil {
				return nil, err
			}
			if s == nil {
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", ref.Name)
			}
			data = make(map[string]string, len(s.Data))
			for k, v := range s.Data {
				data[k] = string(v)
			}
		default:
			return nil, fmt.Errorf("envFrom: no source set")
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := from.Prefix + k
			if len(validation.IsRelaxedEnvVarName(name)) > 0 {
				// The kubelet skips invalid names (and records an event).
				continue
			}
			env.set(name, data[k])
		}
	}

	port := strconv.Itoa(ec.apiServerPort)
	serviceEnv := [][2]string{
		{"KUBERNETES_SERVICE_HOST", ec.nodeIP},
		{"KUBERNETES_SERVICE_PORT", port},
		{"KUBERNETES_SERVICE_PORT_HTTPS", port},
		{"KUBERNETES_PORT", "tcp://" + ec.nodeIP + ":" + port},
	}
	// $(VAR) sees what is defined so far, then the service variables.
	mapping := func(name string) (string, bool) {
		if v, ok := env.get(name); ok {
			return v, true
		}
		for _, kv := range serviceEnv {
			if kv[0] == name {
				return kv[1], true
			}
		}
		return "", false
	}

	declared := map[string]bool{}
	for _, e := range c.Env {
		declared[e.Name] = true
		var value string
		switch {
		case e.ValueFrom == nil:
			value = expand(e.Value, mapping)
		case e.ValueFrom.FieldRef != nil:
			v, err := podFieldValue(pod, e.ValueFrom.FieldRef.FieldPath)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			value = v
		case e.ValueFrom.ResourceFieldRef != nil:
			sel := e.ValueFrom.ResourceFieldRef
			target := c
			if sel.ContainerName != "" && sel.ContainerName != c.Name {
				target = findContainer(pod, sel.ContainerName)
				if target == nil {
					return nil, fmt.Errorf("env %s: container %q not found", e.Name, sel.ContainerName)
				}
			}
			v, err := containerResourceValue(sel, target, ec.allocatable)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			value = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			optional := ref.Optional != nil && *ref.Optional
			cm, err := objs.configMap(ctx, ref.Name)
			if err != nil {
				return nil, err
			}
			if cm == nil {
				if optional {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", ref.Name)
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
			}
			value = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			optional := ref.Optional != nil && *ref.Optional
			s, err := objs.secret(ctx, ref.Name)
			if err != nil {
				return nil, err
			}
			if s == nil {
				if optional {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", ref.Name)
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
			}
			value = string(v)
		default:
			return nil, fmt.Errorf("env %s: unsupported valueFrom", e.Name)
		}
		env.set(e.Name, value)
	}

	for _, kv := range serviceEnv {
		if !declared[kv[0]] {
			env.set(kv[0], kv[1])
		}
	}
	return env, nil
}

func findContainer(pod *v1.Pod, name string) *v1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

// containerArgs returns the arguments that follow the binary. The node runs one binary per
// image in place of the image's entrypoint, so command[0] (the entrypoint) is dropped and
// the rest of command comes before args: command [/echo, -v] with args [x] runs `echo -v x`.
// Both are expanded against the container's environment.
func containerArgs(c *v1.Container, env *envList) []string {
	var out []string
	if len(c.Command) > 1 {
		out = append(out, c.Command[1:]...)
	}
	out = append(out, c.Args...)
	for i := range out {
		out[i] = expand(out[i], env.get)
	}
	return out
}
