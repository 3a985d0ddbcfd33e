package nodeagent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"
)

// recordedEvent is one event a fakeRecorder saw.
type recordedEvent struct {
	fieldPath, eventType, reason, message string
}

func (e recordedEvent) String() string {
	return fmt.Sprintf("%s %s %s: %s", e.fieldPath, e.eventType, e.reason, e.message)
}

// fakeRecorder keeps every event; unlike record.FakeRecorder it never blocks.
type fakeRecorder struct {
	mu     sync.Mutex
	events []recordedEvent
}

var _ record.EventRecorder = (*fakeRecorder)(nil)

func (f *fakeRecorder) Event(obj runtime.Object, eventType, reason, message string) {
	ref, _ := obj.(*v1.ObjectReference)
	f.mu.Lock()
	defer f.mu.Unlock()
	ev := recordedEvent{eventType: eventType, reason: reason, message: message}
	if ref != nil {
		ev.fieldPath = ref.FieldPath
	}
	f.events = append(f.events, ev)
}

func (f *fakeRecorder) Eventf(obj runtime.Object, eventType, reason, format string, args ...any) {
	f.Event(obj, eventType, reason, fmt.Sprintf(format, args...))
}

func (f *fakeRecorder) AnnotatedEventf(obj runtime.Object, _ map[string]string, eventType, reason, format string, args ...any) {
	f.Eventf(obj, eventType, reason, format, args...)
}

func (f *fakeRecorder) all() []recordedEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

// waitEvent waits until an event equal to want has been recorded.
func (f *fakeRecorder) waitEvent(t *testing.T, want recordedEvent) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return slices.Contains(f.all(), want), nil
	}); err != nil {
		var seen []string
		for _, e := range f.all() {
			seen = append(seen, e.String())
		}
		t.Fatalf("no event %s; seen:\n%s", want, strings.Join(seen, "\n"))
	}
}

func TestWorkerEvents(t *testing.T) {
	const field = "spec.containers{echo}"
	tests := []struct {
		name string
		pod  func() *v1.Pod
		act  func(t *testing.T, e *testEnv, p *fakeProcess)
		want []recordedEvent
	}{
		{
			name: "a started container",
			pod:  func() *v1.Pod { return echoPod("ok") },
			want: []recordedEvent{
				{field, v1.EventTypeNormal, "Pulled", `Container image "wsscale/echo:dev" already present on machine`},
				{field, v1.EventTypeNormal, "Created", "Created container: echo"},
				{field, v1.EventTypeNormal, "Started", "Started container echo"},
			},
		},
		{
			name: "a failing readiness probe",
			pod: func() *v1.Pod {
				p := echoPod("unready")
				p.Spec.Containers[0].ReadinessProbe = &v1.Probe{ProbeHandler: v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Port: intstr.FromInt32(8080)}}}
				return p
			},
			want: []recordedEvent{{field, v1.EventTypeWarning, "Unhealthy", "Readiness probe failed: probe says no"}},
		},
		{
			name: "a failing liveness probe",
			pod: func() *v1.Pod {
				p := echoPod("dead")
				p.Spec.Containers[0].LivenessProbe = &v1.Probe{FailureThreshold: 1, ProbeHandler: v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Port: intstr.FromInt32(8080)}}}
				return p
			},
			want: []recordedEvent{
				{field, v1.EventTypeWarning, "Unhealthy", "Liveness probe failed: probe says no"},
				{field, v1.EventTypeNormal, "Killing", "Container echo failed liveness probe, will be restarted"},
			},
		},
		{
			name: "a crash loop",
			pod:  func() *v1.Pod { return echoPod("crash") },
			act: func(t *testing.T, e *testEnv, p *fakeProcess) {
				p.exit(1)
				e.nextProcess(t).exit(1) // the first restart is immediate, the second backs off
			},
			want: []recordedEvent{{field, v1.EventTypeWarning, "BackOff", "Back-off restarting failed container echo in pod crash_ns(uid-crash)"}},
		},
		{
			name: "an unknown image",
			pod: func() *v1.Pod {
				p := echoPod("nginx")
				p.Spec.Containers[0].Image = "nginx:1.27"
				return p
			},
			want: []recordedEvent{{field, v1.EventTypeWarning, "Failed", `Failed to pull image "nginx:1.27": image "nginx:1.27" is not available on this node (process-based node agent); known image repositories: [wsscale/echo]`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t, false)
			rec := &fakeRecorder{}
			e.agent.recorder = rec
			pod := tt.pod()
			e.add(t, pod)
			if pod.Spec.Containers[0].Image == "wsscale/echo:dev" {
				p := e.nextProcess(t)
				if tt.act != nil {
					tt.act(t, e, p)
				}
			}
			for _, want := range tt.want {
				rec.waitEvent(t, want)
			}
		})
	}
}
