package nodeagent

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodPhase(t *testing.T) {
	running := v1.ContainerStatus{State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}}
	waitingFirst := v1.ContainerStatus{State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
	crashLoop := v1.ContainerStatus{
		State:                v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1}},
	}
	exited := func(code int32) v1.ContainerStatus {
		return v1.ContainerStatus{State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: code}}}
	}
	tests := []struct {
		name     string
		policy   v1.RestartPolicy
		statuses []v1.ContainerStatus
		want     v1.PodPhase
	}{
		{name: "no status yet", policy: v1.RestartPolicyAlways, want: v1.PodPending},
		{name: "creating", policy: v1.RestartPolicyAlways, statuses: []v1.ContainerStatus{waitingFirst}, want: v1.PodPending},
		{name: "one running one creating", policy: v1.RestartPolicyAlways, statuses: []v1.ContainerStatus{running, waitingFirst}, want: v1.PodPending},
		{name: "running", policy: v1.RestartPolicyAlways, statuses: []v1.ContainerStatus{running}, want: v1.PodRunning},
		{name: "crash loop is running", policy: v1.RestartPolicyAlways, statuses: []v1.ContainerStatus{crashLoop}, want: v1.PodRunning},
		{name: "never, success", policy: v1.RestartPolicyNever, statuses: []v1.ContainerStatus{exited(0)}, want: v1.PodSucceeded},
		{name: "never, failure", policy: v1.RestartPolicyNever, statuses: []v1.ContainerStatus{exited(0), exited(2)}, want: v1.PodFailed},
		{name: "on failure, success", policy: v1.RestartPolicyOnFailure, statuses: []v1.ContainerStatus{exited(0)}, want: v1.PodSucceeded},
		{name: "on failure, restarting", policy: v1.RestartPolicyOnFailure, statuses: []v1.ContainerStatus{crashLoop}, want: v1.PodRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := podPhase(tt.policy, tt.statuses); got != tt.want {
				t.Errorf("phase %s, want %s", got, tt.want)
			}
		})
	}
}

func TestBuildPodStatus(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC)
	pod := &v1.Pod{Spec: v1.PodSpec{RestartPolicy: v1.RestartPolicyAlways}}
	in := statusInput{
		now: t0, hostIP: "198.18.0.1", podIP: "198.18.1.2", startTime: t0, sandboxReady: true,
		containers: []v1.ContainerStatus{
			{Name: "a", Ready: true, State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}},
			{Name: "b", Ready: false, State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}},
		},
	}
	st := buildPodStatus(pod, in)
	if st.Phase != v1.PodRunning || st.PodIP != "198.18.1.2" || len(st.PodIPs) != 1 || st.HostIP != "198.18.0.1" || st.StartTime == nil {
		t.Fatalf("status %+v", st)
	}
	cond := func(st v1.PodStatus, ct v1.PodConditionType) v1.PodCondition {
		for _, c := range st.Conditions {
			if c.Type == ct {
				return c
			}
		}
		t.Fatalf("no %s condition", ct)
		return v1.PodCondition{}
	}
	if c := cond(st, v1.PodReady); c.Status != v1.ConditionFalse || c.Reason != "ContainersNotReady" || c.Message != "containers with unready status: [b]" {
		t.Errorf("Ready = %+v", c)
	}
	for _, ct := range []v1.PodConditionType{v1.PodScheduled, v1.PodInitialized, v1.PodReadyToStartContainers} {
		if c := cond(st, ct); c.Status != v1.ConditionTrue {
			t.Errorf("%s = %+v", ct, c)
		}
	}

	// Later: b becomes ready; Ready flips with a new transition time, the rest keep theirs.
	pod.Status = st
	in.now = t0.Add(time.Minute)
	in.containers[1].Ready = true
	st2 := buildPodStatus(pod, in)
	if c := cond(st2, v1.PodReady); c.Status != v1.ConditionTrue || !c.LastTransitionTime.Equal(&metav1.Time{Time: in.now}) {
		t.Errorf("Ready after change = %+v", c)
	}
	if c := cond(st2, v1.PodScheduled); !c.LastTransitionTime.Equal(&metav1.Time{Time: t0}) {
		t.Errorf("PodScheduled transition time moved: %+v", c)
	}
}
