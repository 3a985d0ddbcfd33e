package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/test/e2e/framework"
)

// TestPodEvents checks that a failing pod explains itself as on a real node (what
// `kubectl describe pod` shows): the kubelet's Pulled, Created and Started events, Unhealthy
// with the readiness probe's message, and BackOff for a crash-looping container, each from
// the kubelet on this node.
func TestPodEvents(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "node-events"
	createNamespace(ctx, t, client, ns)

	unready := testhostContainer("testhost")
	unready.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/cat?path=/nonexistent", Port: intstr.FromInt32(testhostPort)},
	}}
	crash := corev1.Container{Name: "crash", Image: "wsscale/testhost:dev", Args: []string{"step", "--exit", "1"}}
	for _, pod := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "unready"}, Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{unready}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "crashloop"}, Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{crash}}},
	} {
		must[*corev1.Pod](t, "pod")(client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}))
	}
	node := "local-node-1"
	waitEvent(ctx, t, client, ns, "unready", node, "Started", "Started container testhost")
	waitEvent(ctx, t, client, ns, "unready", node, "Created", "Created container: testhost")
	waitEvent(ctx, t, client, ns, "unready", node, "Pulled", `Container image "wsscale/testhost:dev" already present on machine`)
	waitEvent(ctx, t, client, ns, "unready", node, "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 404")
	waitEvent(ctx, t, client, ns, "crashloop", node, "BackOff", "Back-off restarting failed container crash")
}

// waitEvent waits for an event about pod with the reason and a message containing message,
// reported by the kubelet of node.
func waitEvent(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, pod, node, reason, message string) {
	t.Helper()
	poll(ctx, t, fmt.Sprintf("event %s on %s", reason, pod), 90*time.Second, func() (bool, string) {
		list, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pod).String()})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, ev := range list.Items {
			seen = append(seen, fmt.Sprintf("%s/%s %s: %s", ev.Source.Component, ev.Source.Host, ev.Reason, ev.Message))
			if ev.Reason == reason && strings.Contains(ev.Message, message) && ev.Source.Component == "kubelet" && ev.Source.Host == node {
				return true, seen[len(seen)-1]
			}
		}
		return false, strings.Join(seen, "; ")
	})
}
