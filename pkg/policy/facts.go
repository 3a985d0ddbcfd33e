package policy

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

// Metrics is a pod's fresh connection count as the adapter scraped it. A pod without a fresh
// value has no Metrics at all: missing data is never taken for 0.
type Metrics struct {
	// Connections is the pod's websocket_connections_active.
	Connections int64
	// Draining is the pod's websocket_draining (the server has seen the drain label).
	Draining bool
	// ScrapeStart is when the scrape that produced the value started; only a scrape that
	// started after a victim was marked proves that the server drained.
	ScrapeStart time.Time
}

// Pod is what the policy knows about one pod of the target.
type Pod struct {
	Name string
	UID  types.UID
	// Created is the pod's creation time (ties between victims go to the youngest).
	Created time.Time
	Phase   corev1.PodPhase
	// Ready is the pod's Ready condition.
	Ready bool
	// Terminating: the pod has a deletionTimestamp.
	Terminating bool
	// TemplateHash is the pod's pod-template-hash label (its ReplicaSet).
	TemplateHash string
	// Marked: the pod carries the drain label.
	Marked bool
	// MarkedBy names the ScaleGuard in the pod's guard annotation, if any.
	MarkedBy string
	// CostVisible: the pod carries the victim's negative pod-deletion-cost.
	CostVisible bool
	// Scraped: the adapter's scrape selection includes the pod.
	Scraped bool
	// Metrics is the pod's fresh value, nil when there is none.
	Metrics *Metrics
}

// Target is what the policy knows about the workload named by spec.targetRef.
type Target struct {
	// Found: the target exists.
	Found bool
	// Supported: the target's kind is one the guard can scale (apps/v1 Deployment).
	Supported bool
	// Replicas is the target's live spec.replicas.
	Replicas int32
	// Generation and ObservedGeneration are the target's metadata.generation and
	// status.observedGeneration.
	Generation, ObservedGeneration int64
	// StatusReplicas and UpdatedReplicas are the target's status.replicas and
	// status.updatedReplicas.
	StatusReplicas, UpdatedReplicas int32
	// TemplateHash is the pod-template-hash of the target's current ReplicaSet; empty when it
	// is not known yet.
	TemplateHash string
	// Selector is the target's label selector in string form.
	Selector string
}

// Input is everything one decision is made from.
type Input struct {
	Now time.Time
	// Name is the ScaleGuard's name (victims' annotations carry it).
	Name string
	// Generation is the ScaleGuard's metadata.generation.
	Generation int64
	Spec       v1alpha1.ScaleGuardSpec
	Status     v1alpha1.ScaleGuardStatus
	Target     Target
	// Pods are the target's pods, by the target's selector, terminating ones included.
	Pods []Pod
	// DuplicateOf names an older ScaleGuard that already guards the same target, if any.
	DuplicateOf string
}

// Event is a transition worth telling the user about, as a Kubernetes Event.
type Event struct {
	// Type is corev1.EventTypeNormal or corev1.EventTypeWarning.
	Type    string
	Reason  string
	Message string
}

// PodRef names a pod to mark or un-mark.
type PodRef struct {
	Name string
	UID  types.UID
}

// Decision is what the controller does next. The controller carries it out in this order:
// seed spec.replicas; write the status when it differs from the old one (so that a step and its
// reservation are recorded before any victim is marked); un-mark, then mark pods; apply the
// target's replicas; emit the events; come back after RequeueAfter (0: on the next change only).
// When Apply is set together with a committed step, the controller applies first and writes the
// status after, and the policy recognises its own commit on the next pass if the status write
// was lost.
type Decision struct {
	// SeedReplicas, when set, is written to the ScaleGuard's empty spec.replicas.
	SeedReplicas *int32
	// Status is the ScaleGuard's status after this decision.
	Status v1alpha1.ScaleGuardStatus
	// Mark are the pods to mark as victims (drain label, negative deletion cost, annotation).
	Mark []PodRef
	// Deadline is the step's deadline, for the annotation on marked pods.
	Deadline time.Time
	// Unmark are the pods whose drain label and deletion cost are to be removed.
	Unmark []PodRef
	// Apply, when set, is the replica count to apply to the target.
	Apply *int32
	// Events are the transitions of this decision.
	Events []Event
	// RequeueAfter asks for another decision after this long even if nothing changes.
	RequeueAfter time.Duration
}
