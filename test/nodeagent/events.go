package nodeagent

import (
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Event reasons the node reports, the kubelet's own (pkg/kubelet/events), so that
// `kubectl describe pod` and tools that match on them read the same as on a real node.
const (
	eventPulled              = "Pulled"
	eventFailed              = "Failed"
	eventBackOff             = "BackOff"
	eventCreated             = "Created"
	eventStarted             = "Started"
	eventKilling             = "Killing"
	eventUnhealthy           = "Unhealthy"
	eventFailedMount         = "FailedMount"
	eventFailedSandbox       = "FailedCreatePodSandBox"
	eventFailedPostStartHook = "FailedPostStartHook"
	eventFailedPreStopHook   = "FailedPreStopHook"
)

// newEventRecorder returns a broadcaster that writes to the API's Events once started and
// a recorder reporting as the kubelet of node (source component "kubelet", host node).
func newEventRecorder(node string) (record.EventBroadcaster, record.EventRecorder) {
	b := record.NewBroadcaster()
	return b, b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "kubelet", Host: node})
}

// startEventSink sends the broadcaster's events to the API server.
func startEventSink(b record.EventBroadcaster, client kubernetes.Interface) {
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
}

// event records an event about the worker's pod, or about container c of it when c is set
// (with the kubelet's field path, spec.containers{name}).
func (w *podWorker) event(c *containerState, eventType, reason, format string, args ...any) {
	ref := &v1.ObjectReference{
		Kind: "Pod", APIVersion: "v1", Namespace: w.pod.Namespace, Name: w.pod.Name, UID: w.pod.UID,
		ResourceVersion: w.pod.ResourceVersion,
	}
	if c != nil {
		field := "spec.containers"
		if c.init {
			field = "spec.initContainers"
		}
		ref.FieldPath = fmt.Sprintf("%s{%s}", field, c.spec.Name)
	}
	w.agent.recorder.Eventf(ref, eventType, reason, format, args...)
}
