// Package pods says which pods the adapter tracks and where their metrics
// are: the Selection, the pod and ReplicaSet informers (filtered on the API
// server, stripped to what the adapter reads, indexed by owner), and the
// PodTracker that turns pod events into scrape targets and tracked pods.
package pods

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// The prometheus.io annotations that select pods and say where their
// metrics are, as carried by the reference deployment.
const (
	ScrapeAnnotation = "prometheus.io/scrape"
	PortAnnotation   = "prometheus.io/port"
	PathAnnotation   = "prometheus.io/path"
)

// ScrapeLabel is the pod label that opts a pod in by default: a label, so
// that the API server filters the watch and the adapter never receives the
// cluster's other pods.
const ScrapeLabel = "wsscale.io/scrape"

// DefaultPodSelector selects the pods labelled wsscale.io/scrape=true.
const DefaultPodSelector = ScrapeLabel + "=true"

// DefaultMetricsPortName is the container port scraped when a pod has no
// prometheus.io/port annotation.
const DefaultMetricsPortName = "metrics"

// Selection says which pods are tracked and where their metrics are.
type Selection struct {
	// Selector restricts the pods by label; nil or empty selects all.
	Selector labels.Selector
	// RequireAnnotation tracks only pods annotated prometheus.io/scrape=true.
	RequireAnnotation bool
	// PortName is the container port used when prometheus.io/port is absent.
	PortName string
}

// Selected reports whether a pod is tracked: it matches the selection,
// runs, has an IP and is not terminating.
func (s *Selection) Selected(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
		return false
	}
	if s.RequireAnnotation && pod.Annotations[ScrapeAnnotation] != "true" {
		return false
	}
	if s.Selector != nil && !s.Selector.Empty() && !s.Selector.Matches(labels.Set(pod.Labels)) {
		return false
	}
	return true
}

// Target returns where a selected pod's metrics are: its IP, the port of
// prometheus.io/port or else of the container port named PortName, and the
// path of prometheus.io/path or else /metrics.
func (s *Selection) Target(pod *corev1.Pod) (scrape.Target, error) {
	key := scrape.PodKey{Namespace: pod.Namespace, Name: pod.Name}
	port := 0
	if a, ok := pod.Annotations[PortAnnotation]; ok {
		p, err := strconv.Atoi(a)
		if err != nil || p < 1 || p > 65535 {
			return scrape.Target{}, fmt.Errorf("pod %s: annotation %s=%q is not a port number", key, PortAnnotation, a)
		}
		port = p
	} else {
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == s.PortName && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
					port = int(cp.ContainerPort)
				}
			}
		}
		if port == 0 {
			return scrape.Target{}, fmt.Errorf("pod %s: no %s annotation and no container port named %q", key, PortAnnotation, s.PortName)
		}
	}
	path := "/metrics"
	if a, ok := pod.Annotations[PathAnnotation]; ok && a != "" {
		path = a
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
	}
	return scrape.Target{
		Key: key,
		URL: "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port)) + path,
	}, nil
}

// StripPod is an informer transform: it keeps only what the adapter reads
// (name, namespace, labels, the prometheus.io annotations, the controller
// owner, phase, IP, the Ready condition, the containers' total restart
// count, deletion timestamp and the metrics container port), so that a cached pod
// costs a few hundred bytes instead of several kilobytes.
func (s *Selection) StripPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			Labels:            pod.Labels,
			DeletionTimestamp: pod.DeletionTimestamp,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase, PodIP: pod.Status.PodIP},
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	// One status holding the total restart count, and only when there was
	// a restart: most pods never restart, and a status costs 208 bytes.
	if n := restartCount(pod); n > 0 {
		out.Status.ContainerStatuses = []corev1.ContainerStatus{{RestartCount: n}}
	}
	for _, a := range [...]string{ScrapeAnnotation, PortAnnotation, PathAnnotation} {
		if v, ok := pod.Annotations[a]; ok {
			if out.Annotations == nil {
				out.Annotations = make(map[string]string, 3)
			}
			out.Annotations[a] = v
		}
	}
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil {
		out.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name, UID: ref.UID, Controller: ref.Controller,
		}}
	}
	if _, annotated := pod.Annotations[PortAnnotation]; !annotated {
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == s.PortName {
					out.Spec.Containers = []corev1.Container{{Ports: []corev1.ContainerPort{{
						Name: cp.Name, ContainerPort: cp.ContainerPort, Protocol: cp.Protocol,
					}}}}
				}
			}
		}
	}
	return out, nil
}

// StripReplicaSet is an informer transform that keeps a ReplicaSet's name,
// namespace and controller owner: all the adapter needs to map a pod to its
// Deployment.
func StripReplicaSet(obj any) (any, error) {
	rs, ok := obj.(*appsv1.ReplicaSet)
	if !ok {
		return obj, nil
	}
	out := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Name: rs.Name, Namespace: rs.Namespace, UID: rs.UID, ResourceVersion: rs.ResourceVersion,
	}}
	if ref := metav1.GetControllerOfNoCopy(rs); ref != nil {
		out.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name, UID: ref.UID, Controller: ref.Controller,
		}}
	}
	return out, nil
}

// Targets is the part of the scraper the PodTracker drives.
type Targets interface {
	// Set adds or updates a target.
	Set(t scrape.Target) error
	// Remove stops scraping a pod.
	Remove(key scrape.PodKey)
}

// Tracker is told which pods are tracked, e.g. the value store.
type Tracker interface {
	// Add starts tracking a pod.
	Add(key scrape.PodKey)
	// Delete stops tracking a pod.
	Delete(key scrape.PodKey)
	// Restarted says that a container of a tracked pod restarted.
	Restarted(key scrape.PodKey)
}

var _ Targets = (*scrape.Scraper)(nil)

// PodTracker turns pod informer events into scrape targets: a pod is
// scraped while it is selected, and dropped as soon as it stops running,
// starts terminating or leaves the selection.
type PodTracker struct {
	selection *Selection
	targets   Targets // nil when values come from elsewhere (Prometheus)
	tracker   Tracker // nil when values come from elsewhere

	mu sync.Mutex
	// tracked holds the total restart count of each tracked pod's
	// containers, to tell the tracker when one restarts.
	tracked map[scrape.PodKey]int32
	count   atomic.Int64
}

var _ cache.ResourceEventHandler = (*PodTracker)(nil)

// NewPodTracker returns a PodTracker; targets and tracker may be nil, then
// it only counts the selected pods.
func NewPodTracker(selection *Selection, targets Targets, tracker Tracker) *PodTracker {
	return &PodTracker{selection: selection, targets: targets, tracker: tracker, tracked: map[scrape.PodKey]int32{}}
}

// Tracked returns the number of tracked pods.
func (t *PodTracker) Tracked() int { return int(t.count.Load()) }

// OnAdd implements cache.ResourceEventHandler.
func (t *PodTracker) OnAdd(obj any, _ bool) { t.sync(obj) }

// OnUpdate implements cache.ResourceEventHandler.
func (t *PodTracker) OnUpdate(_, obj any) { t.sync(obj) }

// OnDelete implements cache.ResourceEventHandler.
func (t *PodTracker) OnDelete(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		t.untrack(scrape.PodKey{Namespace: pod.Namespace, Name: pod.Name})
	}
}

func (t *PodTracker) sync(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := scrape.PodKey{Namespace: pod.Namespace, Name: pod.Name}
	if !t.selection.Selected(pod) {
		t.untrack(key)
		return
	}
	var target scrape.Target
	var err error
	if t.targets != nil {
		if target, err = t.selection.Target(pod); err != nil {
			klog.V(2).InfoS("Not scraping pod", "pod", klog.KObj(pod), "err", err)
			t.untrack(key)
			return
		}
	}
	// The store learns of the pod before the scraper, so that the first
	// scrape is not dropped.
	restarts := restartCount(pod)
	t.mu.Lock()
	if before, ok := t.tracked[key]; !ok {
		t.tracked[key] = restarts
		t.count.Add(1)
		if t.tracker != nil {
			t.tracker.Add(key)
		}
	} else if restarts != before {
		t.tracked[key] = restarts
		if t.tracker != nil && restarts > before {
			t.tracker.Restarted(key)
		}
	}
	t.mu.Unlock()
	if t.targets != nil {
		if err := t.targets.Set(target); err != nil {
			klog.V(2).InfoS("Not scraping pod", "pod", klog.KObj(pod), "err", err)
			t.untrack(key)
		}
	}
}

// Ready reports whether a pod's Ready condition is true.
func Ready(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// restartCount is the total restart count of a pod's containers.
func restartCount(pod *corev1.Pod) int32 {
	var n int32
	for _, c := range pod.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

func (t *PodTracker) untrack(key scrape.PodKey) {
	t.mu.Lock()
	_, ok := t.tracked[key]
	if ok {
		delete(t.tracked, key)
		t.count.Add(-1)
	}
	t.mu.Unlock()
	if !ok {
		return
	}
	if t.targets != nil {
		t.targets.Remove(key) // no sink call for key after this
	}
	if t.tracker != nil {
		t.tracker.Delete(key)
	}
}
