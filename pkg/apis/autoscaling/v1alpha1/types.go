package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// DrainLabel marks a pod that a ScaleGuard is draining before it removes it. A server that sees
// it (through the downward API) fails readiness and closes its clients; the ScaleGuard's selector
// leaves such pods out of the HPA's average.
const DrainLabel = "wsscale.io/drain"

// DrainLabelValue is the value of DrainLabel on a victim.
const DrainLabelValue = "true"

// GuardAnnotation names, on a victim, the ScaleGuard that marked it and its step's deadline
// ("NAME DEADLINE", the deadline in RFC 3339), so that a sweep can find victims left behind.
const GuardAnnotation = "wsscale.io/scale-guard"

// DeletionCostAnnotation is the ReplicaSet's pod-deletion-cost annotation: a victim carries a
// negative cost so that the ReplicaSet deletes it, not another pod, when its replicas drop.
const DeletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// Finalizer is set on every ScaleGuard so that its victims are un-marked when it is deleted.
const Finalizer = "autoscaling.wsscale.io/release-victims"

// OnTimeout says what a scale-down step does when its victims are not empty by the deadline.
// +kubebuilder:validation:Enum=Proceed;Hold
type OnTimeout string

const (
	// OnTimeoutProceed removes the victims at the deadline; their connections are already
	// reserved against the disconnect budget.
	OnTimeoutProceed OnTimeout = "Proceed"
	// OnTimeoutHold keeps the victims (still draining) until they are empty or released.
	OnTimeoutHold OnTimeout = "Hold"
)

// ScaleGuard sits between a HorizontalPodAutoscaler and a Deployment: the HPA writes the
// ScaleGuard's spec.replicas through its scale subresource, and the ScaleGuard controller alone
// changes the Deployment's replicas, draining the least-connected pods before it removes them.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=sg,categories=wsscale
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Applied",type=integer,JSONPath=`.status.appliedReplicas`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ScaleGuard struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the user and the HPA ask for.
	// +required
	Spec ScaleGuardSpec `json:"spec"`
	// status is what the controller observed and is doing.
	// +optional
	Status ScaleGuardStatus `json:"status,omitempty"`
}

// ScaleGuardList is a list of ScaleGuards.
//
// +kubebuilder:object:root=true
type ScaleGuardList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the ScaleGuards.
	Items []ScaleGuard `json:"items"`
}

// ScaleGuardSpec is the desired size of the target and how it may shrink.
type ScaleGuardSpec struct {
	// targetRef names the workload whose replicas the guard sets. Only apps/v1 Deployments are
	// supported in v1alpha1; other kinds get the condition ScaleDownBlocked=Unsupported.
	// It cannot be changed: create another ScaleGuard instead.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="targetRef is immutable"
	TargetRef TargetRef `json:"targetRef"`

	// replicas is the desired number of pods, written by the HPA (through /scale) or by
	// `kubectl scale`. It has no default: the controller seeds it once from the target, because
	// the scale subresource cannot be read while it is unset.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Replicas *int32 `json:"replicas,omitempty"`

	// paused stops scale-downs (scale-ups are still applied): a step that has not lowered the
	// target's replicas yet releases its victims, which serve again.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// scaleDown says how pods are drained and how many clients scale-downs may disconnect.
	// +optional
	// +kubebuilder:default={}
	ScaleDown ScaleDownSpec `json:"scaleDown,omitempty"`
}

// TargetRef names the scaled workload in the ScaleGuard's namespace.
// +structType=atomic
type TargetRef struct {
	// apiVersion of the target, e.g. apps/v1.
	// +required
	// +kubebuilder:validation:MinLength=1
	APIVersion string `json:"apiVersion"`
	// kind of the target, e.g. Deployment.
	// +required
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// name of the target.
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// ScaleDownSpec tunes one scale-down step and bounds the disconnects of all of them.
type ScaleDownSpec struct {
	// drainTimeout is how long a step waits for its victims to empty before onTimeout applies.
	// +optional
	// +kubebuilder:default="10m"
	DrainTimeout *metav1.Duration `json:"drainTimeout,omitempty"`

	// emptyThreshold: a victim counts as empty at this many connections or fewer.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	EmptyThreshold *int64 `json:"emptyThreshold,omitempty"`

	// onTimeout is what happens when a victim is not empty by the deadline: Proceed removes it
	// (its connections are already counted against the budget), Hold keeps it draining.
	// +optional
	// +kubebuilder:default=Proceed
	OnTimeout OnTimeout `json:"onTimeout,omitempty"`

	// maxVictimsPerStep is how many pods one step drains and removes at most.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	MaxVictimsPerStep *int32 `json:"maxVictimsPerStep,omitempty"`

	// disconnectBudget bounds how many clients scale-downs may disconnect, gracefully or not,
	// in any rolling window. Without it scale-downs are bounded only by maxVictimsPerStep.
	// +optional
	DisconnectBudget *DisconnectBudget `json:"disconnectBudget,omitempty"`
}

// DisconnectBudget is a number of client disconnects allowed in a rolling window.
type DisconnectBudget struct {
	// maxDisconnects is how many connections the victims of all steps may hold, summed over
	// the window. When the window holds no reservation, one victim may go even if it alone
	// holds more, so that one large pod never blocks scale-down forever.
	// +required
	// +kubebuilder:validation:Minimum=0
	MaxDisconnects int64 `json:"maxDisconnects"`
	// window is the length of the rolling window.
	// +optional
	// +kubebuilder:default="10m"
	Window *metav1.Duration `json:"window,omitempty"`
}

// GuardState is the one-word state shown by `kubectl get scaleguards`.
type GuardState string

const (
	// StateSteady: the target has the desired replicas, or is being scaled up.
	StateSteady GuardState = "Steady"
	// StateDraining: a step's victims are marked and draining.
	StateDraining GuardState = "Draining"
	// StateVerifying: the target's replicas were lowered; the guard waits for the victims to go.
	StateVerifying GuardState = "Verifying"
	// StateBlocked: a scale-down is wanted but something blocks it (see the conditions).
	StateBlocked GuardState = "Blocked"
)

// ScaleGuardStatus is the controller's record. Every state of a step lives here and on the pods,
// so that a restarted or newly elected controller resumes mid-step and never resets the budget.
type ScaleGuardStatus struct {
	// replicas is the number of the target's pods that are not draining (the scale
	// subresource's status replicas).
	// +optional
	Replicas int32 `json:"replicas"`

	// selector is the target's label selector, in string form, excluding draining victims
	// (`wsscale.io/drain notin (true)`), so that the HPA's average is not pulled down by pods
	// that are emptying.
	// +optional
	Selector string `json:"selector,omitempty"`

	// observedGeneration is the ScaleGuard generation this status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// appliedReplicas is the replica count the guard last applied to the target; a different
	// live value means someone else changed it (ForeignReplicaChange).
	// +optional
	AppliedReplicas *int32 `json:"appliedReplicas,omitempty"`

	// state is a one-word summary for the printer columns.
	// +optional
	State GuardState `json:"state,omitempty"`

	// step is the scale-down step in progress, if any.
	// +optional
	Step *ScaleDownStep `json:"step,omitempty"`

	// ledger holds the disconnects of recent steps, for the rolling disconnect budget. Entries
	// older than the window are dropped.
	// +optional
	// +listType=atomic
	Ledger []LedgerEntry `json:"ledger,omitempty"`

	// conditions: Ready, Draining and ScaleDownBlocked.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ScaleDownStep is one scale-down: its victims are marked, drained, then removed together.
type ScaleDownStep struct {
	// from is the target's replicas when the step was planned.
	From int32 `json:"from"`
	// to is the target's replicas once the victims are removed.
	To int32 `json:"to"`
	// markTime is when the victims were marked; only scrapes that started later count for them.
	MarkTime metav1.MicroTime `json:"markTime"`
	// deadline is markTime plus the drain timeout.
	Deadline metav1.Time `json:"deadline"`
	// commitTime is when the target's replicas were lowered; the step then waits for the
	// victims (and only them) to be deleted.
	// +optional
	CommitTime *metav1.Time `json:"commitTime,omitempty"`
	// victims are the pods this step drains.
	// +listType=atomic
	Victims []Victim `json:"victims"`
}

// Victim is a pod chosen to be removed by a step.
type Victim struct {
	// name of the pod.
	Name string `json:"name"`
	// uid of the pod, so that a new pod of the same name is never taken for it.
	UID types.UID `json:"uid"`
	// connectionsAtMark is how many connections the pod held when it was marked (what the step
	// reserved against the budget for it).
	ConnectionsAtMark int64 `json:"connectionsAtMark"`
	// connectionsAtCommit is how many it still held when the target's replicas were lowered.
	// +optional
	ConnectionsAtCommit *int64 `json:"connectionsAtCommit,omitempty"`
}

// LedgerEntry records the disconnects of one step at the time its victims were marked.
type LedgerEntry struct {
	// time is when the step's victims were marked.
	Time metav1.Time `json:"time"`
	// disconnects is the reservation while the step is open, and what the step really
	// disconnected once it is closed.
	Disconnects int64 `json:"disconnects"`
	// open is true while the step is in progress (the value is a reservation).
	// +optional
	Open bool `json:"open,omitempty"`
}

// Condition types of a ScaleGuard.
const (
	// ConditionReady: the guard found its target and controls its replicas.
	ConditionReady = "Ready"
	// ConditionDraining: a step's victims are draining.
	ConditionDraining = "Draining"
	// ConditionScaleDownBlocked: a scale-down is wanted but waits; the reason says why.
	ConditionScaleDownBlocked = "ScaleDownBlocked"
)

// Reasons of the conditions.
const (
	// ReasonBudgetExhausted: the disconnect budget's window has no room for the next victim.
	ReasonBudgetExhausted = "BudgetExhausted"
	// ReasonMetricsUnavailable: a pod of the target has no fresh connection count.
	ReasonMetricsUnavailable = "MetricsUnavailable"
	// ReasonRolloutInProgress: the target is rolling out a new template.
	ReasonRolloutInProgress = "RolloutInProgress"
	// ReasonForeignReplicaChange: someone else changed the target's replicas.
	ReasonForeignReplicaChange = "ForeignReplicaChange"
	// ReasonTargetNotFound: the target does not exist.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonTargetNotScraped: a pod of the target is not scraped by the adapter.
	ReasonTargetNotScraped = "TargetNotScraped"
	// ReasonUnsupported: the target's kind is not supported.
	ReasonUnsupported = "Unsupported"
	// ReasonPaused: spec.paused is set.
	ReasonPaused = "Paused"
	// ReasonPodsNotReady: a pod of the target is Pending, terminating or not ready.
	ReasonPodsNotReady = "PodsNotReady"
	// ReasonDuplicateGuard: another ScaleGuard already guards the same target.
	ReasonDuplicateGuard = "DuplicateGuard"
	// ReasonAsExpected: nothing is wrong.
	ReasonAsExpected = "AsExpected"
	// ReasonStepInProgress: a step's victims are draining.
	ReasonStepInProgress = "StepInProgress"
	// ReasonNoStep: no step is in progress.
	ReasonNoStep = "NoStep"
	// ReasonDrainTimeout: a victim was not empty by the deadline and onTimeout is Hold.
	ReasonDrainTimeout = "DrainTimeout"
)
