package nodeagent

import (
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// statusInput is what a pod's status is computed from.
type statusInput struct {
	now          time.Time
	hostIP       string
	podIP        string
	startTime    time.Time
	sandboxReady bool
	containers   []v1.ContainerStatus
	// initContainers are the init containers' statuses, in order.
	initContainers []v1.ContainerStatus
	// initialized is set once the pod was initialised: a sidecar that restarts later does
	// not take that back.
	initialized bool
}

// initPending returns the init containers that have not completed, and whether one of
// them failed for good (it stopped and will not restart).
func initPending(pod *v1.Pod, statuses []v1.ContainerStatus) (pending []string, failed bool) {
	for i, s := range statuses {
		if i < len(pod.Spec.InitContainers) && isSidecar(&pod.Spec.InitContainers[i]) {
			// A sidecar is done once it has started.
			if s.Started == nil || !*s.Started {
				pending = append(pending, s.Name)
			}
			continue
		}
		t := s.State.Terminated
		if t != nil && t.ExitCode == 0 {
			continue
		}
		pending = append(pending, s.Name)
		if t != nil && pod.Spec.RestartPolicy == v1.RestartPolicyNever {
			failed = true
		}
	}
	return pending, failed
}

// podPhase follows the kubelet: a container waiting for its first start keeps the pod
// Pending; a running one makes it Running; when all have stopped the restart policy and
// exit codes decide between Running (it will restart), Succeeded and Failed.
func podPhase(restartPolicy v1.RestartPolicy, statuses []v1.ContainerStatus) v1.PodPhase {
	var waiting, running, stopped, succeeded int
	for _, s := range statuses {
		switch {
		case s.State.Running != nil:
			running++
		case s.State.Terminated != nil:
			stopped++
			if s.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case s.LastTerminationState.Terminated != nil:
			// Waiting to restart after an earlier run.
			stopped++
			if s.LastTerminationState.Terminated.ExitCode == 0 {
				succeeded++
			}
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return v1.PodPending
	case running > 0:
		return v1.PodRunning
	case stopped > 0:
		switch restartPolicy {
		case v1.RestartPolicyAlways:
			return v1.PodRunning
		case v1.RestartPolicyOnFailure:
			if stopped == succeeded {
				return v1.PodSucceeded
			}
			return v1.PodRunning
		default:
			if stopped == succeeded {
				return v1.PodSucceeded
			}
			return v1.PodFailed
		}
	}
	return v1.PodPending
}

// condition builds a pod condition, keeping the transition time of an unchanged one.
func condition(old []v1.PodCondition, t v1.PodConditionType, ok bool, reason, message string, now time.Time) v1.PodCondition {
	status := v1.ConditionFalse
	if ok {
		status = v1.ConditionTrue
		reason, message = "", ""
	}
	c := v1.PodCondition{Type: t, Status: status, Reason: reason, Message: message, LastTransitionTime: metav1.NewTime(now)}
	for _, o := range old {
		if o.Type == t && o.Status == status {
			c.LastTransitionTime = o.LastTransitionTime
			c.LastProbeTime = o.LastProbeTime
		}
	}
	return c
}

// buildPodStatus computes a pod's status; pod.Status is the previous one, whose condition
// transition times are kept where nothing changed.
func buildPodStatus(pod *v1.Pod, in statusInput) v1.PodStatus {
	st := v1.PodStatus{
		Phase:                 podPhase(pod.Spec.RestartPolicy, in.containers),
		ContainerStatuses:     in.containers,
		InitContainerStatuses: in.initContainers,
		QOSClass:              pod.Status.QOSClass,
	}
	// Until every init container has completed the pod is Pending, or Failed when one
	// failed and will not run again.
	var initNotDone []string
	var initFailed bool
	if !in.initialized {
		initNotDone, initFailed = initPending(pod, in.initContainers)
	}
	switch {
	case initFailed:
		st.Phase = v1.PodFailed
	case len(initNotDone) > 0:
		st.Phase = v1.PodPending
	}
	if in.hostIP != "" {
		st.HostIP = in.hostIP
		st.HostIPs = []v1.HostIP{{IP: in.hostIP}}
	}
	if in.podIP != "" {
		st.PodIP = in.podIP
		st.PodIPs = []v1.PodIP{{IP: in.podIP}}
	}
	if !in.startTime.IsZero() {
		t := metav1.NewTime(in.startTime)
		st.StartTime = &t
	}

	var notReady []string
	for i, c := range in.initContainers {
		// Sidecars count towards the pod's readiness like its other containers.
		if i < len(pod.Spec.InitContainers) && isSidecar(&pod.Spec.InitContainers[i]) && !c.Ready {
			notReady = append(notReady, c.Name)
		}
	}
	for _, c := range in.containers {
		if !c.Ready {
			notReady = append(notReady, c.Name)
		}
	}
	containersReady := len(notReady) == 0 && len(in.containers) > 0
	reason, msg := "", ""
	if !containersReady {
		reason = "ContainersNotReady"
		msg = "containers with unready status: " + bracketed(notReady)
	}
	if st.Phase == v1.PodSucceeded || st.Phase == v1.PodFailed {
		containersReady = false
		reason, msg = "PodCompleted", ""
	}
	initReason, initMsg := "", ""
	if len(initNotDone) > 0 {
		initReason, initMsg = "ContainersNotInitialized", "containers with incomplete status: "+bracketed(initNotDone)
	}
	old := pod.Status.Conditions
	st.Conditions = []v1.PodCondition{
		condition(old, v1.PodReadyToStartContainers, in.sandboxReady, "", "", in.now),
		condition(old, v1.PodInitialized, len(initNotDone) == 0, initReason, initMsg, in.now),
		condition(old, v1.ContainersReady, containersReady, reason, msg, in.now),
		condition(old, v1.PodReady, containersReady, reason, msg, in.now),
		condition(old, v1.PodScheduled, true, "", "", in.now),
	}
	return st
}

func bracketed(names []string) string {
	s := "["
	for i, n := range names {
		if i > 0 {
			s += " "
		}
		s += n
	}
	return s + "]"
}
