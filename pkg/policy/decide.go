package policy

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

// PollWhileDraining is how often a step in progress is looked at again: connection counts change
// without any API event to wake the controller.
const PollWhileDraining = 2 * time.Second

// PollWhileBlocked is how often a blocked scale-down is looked at again: a missing value comes
// back, or a pod becomes scraped, without any API event.
const PollWhileBlocked = 5 * time.Second

// Event reasons, besides the blocked reasons of the API.
const (
	EventSeeded          = "Seeded"
	EventScaledUp        = "ScaledUp"
	EventVictimsMarked   = "VictimsMarked"
	EventVictimsReleased = "VictimsReleased"
	EventVictimLost      = "VictimLost"
	EventCommitted       = "Committed"
	EventStepComplete    = "StepComplete"
	EventWrongPodRemoved = "WrongPodRemoved"
)

// Selector is the ScaleGuard's status.selector for a target selector: the target's pods without
// the draining victims, so that the HPA's average ignores pods that are emptying.
func Selector(target string) string {
	// notin, not !=: the scale client converts the string with metav1.ParseToLabelSelector,
	// which refuses !=, and the HPA and kubectl scale would fail on the Scale.
	drain := v1alpha1.DrainLabel + " notin (" + v1alpha1.DrainLabelValue + ")"
	if target == "" {
		return drain
	}
	return target + "," + drain
}

// Decide makes one decision of the ScaleGuard controller: one transition of the scale-down state
// machine (Plan → mark → drain → commit → verify), a scale-up, or a reason to wait.
func Decide(in Input) (d Decision) {
	d = Decision{Status: *in.Status.DeepCopy()}
	st := &d.Status
	st.ObservedGeneration = in.Generation
	st.Ledger = Prune(st.Ledger, in.Now, window(in.Spec.ScaleDown.DisconnectBudget))
	defer func() { st.Replicas = serving(in.Pods, st.Step) }()

	switch {
	case in.DuplicateOf != "":
		notReady(in, &d, v1alpha1.ReasonDuplicateGuard, fmt.Sprintf("ScaleGuard %s already guards %s %s", in.DuplicateOf, in.Spec.TargetRef.Kind, in.Spec.TargetRef.Name))
		return d
	case !in.Target.Found:
		notReady(in, &d, v1alpha1.ReasonTargetNotFound, fmt.Sprintf("%s %s not found", in.Spec.TargetRef.Kind, in.Spec.TargetRef.Name))
		return d
	case !in.Target.Supported:
		notReady(in, &d, v1alpha1.ReasonUnsupported, fmt.Sprintf("%s %s is not supported: only apps/v1 Deployments are", in.Spec.TargetRef.APIVersion, in.Spec.TargetRef.Kind))
		return d
	}
	st.Selector = Selector(in.Target.Selector)

	live := in.Target.Replicas
	if in.Spec.Replicas == nil {
		d.SeedReplicas = &live
		st.AppliedReplicas = &live
		ready(in, &d)
		steady(in, &d)
		d.Events = append(d.Events, Event{corev1.EventTypeNormal, EventSeeded, fmt.Sprintf("spec.replicas seeded from %s %s: %d", in.Spec.TargetRef.Kind, in.Spec.TargetRef.Name, live)})
		return d
	}
	desired := *in.Spec.Replicas
	if st.AppliedReplicas == nil {
		st.AppliedReplicas = &live
	}
	landed := false
	if live != *st.AppliedReplicas {
		step := st.Step
		switch {
		case step != nil && step.CommitTime == nil && live == step.To && step.To < step.From && desired <= step.To:
			// The guard's own commit whose status write was lost (a restart between the two): a
			// commit applies exactly the step's target, and only while the spec is not above it.
			landed = true
		case live == desired:
			// Someone set what the guard wanted anyway: nothing to fight over.
			st.AppliedReplicas = &live
		default:
			notReady(in, &d, v1alpha1.ReasonForeignReplicaChange, fmt.Sprintf(
				"%s %s has %d replicas, the guard applied %d: another writer (an HPA or kubectl scale pointed at the %s?) changed them; point it at the ScaleGuard, or set the ScaleGuard's spec.replicas to %d to adopt the change",
				in.Spec.TargetRef.Kind, in.Spec.TargetRef.Name, live, *st.AppliedReplicas, in.Spec.TargetRef.Kind, live))
			return d
		}
	}
	ready(in, &d)
	d.Unmark = strays(in)

	switch {
	case st.Step == nil:
		plan(in, &d)
	case st.Step.CommitTime == nil && !landed:
		drain(in, &d)
	default:
		if st.Step.CommitTime == nil {
			commit(in, &d, false)
		}
		verify(in, &d)
	}
	return d
}

// plan starts a step, applies a scale-up, or says what blocks.
func plan(in Input, d *Decision) {
	st := &d.Status
	desired, live := *in.Spec.Replicas, in.Target.Replicas
	switch {
	case desired > live:
		apply(in, d, desired)
		steady(in, d)
		return
	case desired == live:
		steady(in, d)
		return
	}
	if b := PlanBlocker(in); b != nil {
		block(in, d, *b)
		return
	}
	cands, b := Candidates(in.Pods, in.Target.TemplateHash)
	if b != nil {
		block(in, d, *b)
		return
	}
	if len(cands) == 0 {
		block(in, d, Blocker{v1alpha1.ReasonPodsNotReady, "no Running, Ready pod of the current ReplicaSet can be drained"})
		return
	}
	sd := in.Spec.ScaleDown
	most := int(live - desired)
	perStep := 1 // the API's default
	if sd.MaxVictimsPerStep != nil {
		perStep = int(*sd.MaxVictimsPerStep)
	}
	most = min(most, perStep)
	if most < 1 {
		most = 1
	}
	n, retryAt := Fit(cands, most, sd.DisconnectBudget, st.Ledger, in.Now)
	if n == 0 {
		used, _ := Used(st.Ledger, in.Now, window(sd.DisconnectBudget))
		msg := fmt.Sprintf("%d of %d disconnects used in the last %v; the least-connected pod %s holds %d",
			used, sd.DisconnectBudget.MaxDisconnects, window(sd.DisconnectBudget), cands[0].Pod.Name, cands[0].Connections)
		if !retryAt.IsZero() {
			msg += "; room from " + retryAt.UTC().Format(time.RFC3339)
			d.RequeueAfter = retryAt.Sub(in.Now)
		}
		block(in, d, Blocker{v1alpha1.ReasonBudgetExhausted, msg})
		return
	}

	mark := ceil(in.Now, time.Microsecond)
	step := &v1alpha1.ScaleDownStep{
		From:     live,
		To:       live - int32(n),
		MarkTime: metav1.NewMicroTime(mark),
		Deadline: metav1.NewTime(ceil(mark.Add(drainTimeout(sd)), time.Second)),
	}
	var reserved int64
	var names []string
	for _, c := range cands[:n] {
		step.Victims = append(step.Victims, v1alpha1.Victim{Name: c.Pod.Name, UID: c.Pod.UID, ConnectionsAtMark: c.Connections})
		d.Mark = append(d.Mark, PodRef{c.Pod.Name, c.Pod.UID})
		reserved += c.Connections
		names = append(names, fmt.Sprintf("%s (%d connections)", c.Pod.Name, c.Connections))
	}
	st.Step = step
	st.Ledger = Reserve(st.Ledger, in.Now, reserved)
	d.Deadline = step.Deadline.Time
	draining(in, d)
	d.Events = append(d.Events, Event{corev1.EventTypeNormal, EventVictimsMarked, fmt.Sprintf(
		"scale-down %d→%d: draining %s until %s; %d disconnects reserved",
		step.From, step.To, strings.Join(names, ", "), step.Deadline.UTC().Format(time.RFC3339), reserved)})
	d.RequeueAfter = PollWhileDraining
}

// drain keeps a step's victims marked and commits once every commit condition holds; a scale-up,
// a pause or a lost victim releases the step instead.
func drain(in Input, d *Decision) {
	st := &d.Status
	step := st.Step
	desired, live := *in.Spec.Replicas, in.Target.Replicas
	if desired > step.To || in.Spec.Paused {
		why := fmt.Sprintf("spec.replicas %d is above the step's target %d", desired, step.To)
		if in.Spec.Paused {
			why = "spec.paused is set"
		}
		release(in, d, why)
		if desired > live {
			apply(in, d, desired)
		}
		steady(in, d)
		return
	}
	pods := byUID(in.Pods)
	var lost []string
	for _, v := range step.Victims {
		if p, ok := pods[string(v.UID)]; !ok || p.Terminating {
			lost = append(lost, v.Name)
		}
	}
	if len(lost) > 0 {
		d.Events = append(d.Events, Event{corev1.EventTypeWarning, EventVictimLost, fmt.Sprintf(
			"%s deleted by someone else during the drain; the step is abandoned and planned again", list(lost))})
		release(in, d, "a victim was deleted by someone else")
		steady(in, d)
		d.RequeueAfter = PollWhileDraining
		return
	}
	for _, v := range step.Victims {
		if p := pods[string(v.UID)]; !p.Marked || !p.CostVisible {
			d.Mark = append(d.Mark, PodRef{v.Name, v.UID})
		}
	}
	d.Deadline = step.Deadline.Time

	waits, b := CommitCheck(in)
	if len(waits) == 0 {
		commit(in, d, true)
		return
	}
	draining(in, d)
	if b != nil {
		block(in, d, *b)
		st.State = v1alpha1.StateDraining
	}
	d.RequeueAfter = PollWhileDraining
	if left := step.Deadline.Sub(in.Now); left > 0 && left < d.RequeueAfter {
		d.RequeueAfter = left
	}
}

// CommitCheck returns what a draining step still waits for (empty when it may commit), and the
// blocker to show when the wait is not just the drain taking its time.
//
// A step commits only when every victim is marked, shows Ready=False and its deletion cost in the
// cache, and was seen draining and empty (at most emptyThreshold connections) by a scrape that
// started after the mark; or, once the deadline passed with onTimeout Proceed, when every victim
// is marked and has a fresh value from a scrape after the mark, ready or not; and every
// other pod of the target is Running and Ready and none is Pending or terminating; and no
// rollout is in progress.
func CommitCheck(in Input) (waits []string, blocker *Blocker) {
	step := in.Status.Step
	sd := in.Spec.ScaleDown
	threshold := int64(0)
	if sd.EmptyThreshold != nil {
		threshold = *sd.EmptyThreshold
	}
	timedOut := !in.Now.Before(step.Deadline.Time)
	proceed := timedOut && sd.OnTimeout != v1alpha1.OnTimeoutHold
	pods := byUID(in.Pods)
	victims := map[string]bool{}
	var noValue, holding []string
	for _, v := range step.Victims {
		victims[string(v.UID)] = true
		p, ok := pods[string(v.UID)]
		if !ok {
			waits = append(waits, v.Name+" is gone")
			continue
		}
		if !p.Marked || !p.CostVisible {
			waits = append(waits, v.Name+" is not marked yet")
		}
		// Past the deadline with Proceed the step goes even if the server ignored the label:
		// that is what Proceed asks for, and its clients are already reserved.
		if p.Ready && !proceed {
			waits = append(waits, v.Name+" is still Ready")
		}
		m := p.Metrics
		fresh := m != nil && m.ScrapeStart.After(step.MarkTime.Time)
		switch {
		case fresh && m.Draining && m.Connections <= threshold:
		case fresh && proceed:
		case m == nil:
			noValue = append(noValue, v.Name)
			waits = append(waits, v.Name+" has no fresh connection count")
		case !fresh:
			waits = append(waits, v.Name+" not scraped since the mark")
		case !m.Draining:
			waits = append(waits, v.Name+" is not draining yet")
			holding = append(holding, v.Name)
		default:
			waits = append(waits, fmt.Sprintf("%s holds %d connections", v.Name, m.Connections))
			holding = append(holding, v.Name)
		}
	}
	others := make([]Pod, 0, len(in.Pods))
	for _, p := range in.Pods {
		if !victims[string(p.UID)] {
			others = append(others, p)
		}
	}
	var roll, unset string
	if roll = rollout(in.Target, others); roll != "" {
		waits = append(waits, roll)
	}
	if unset = unsettled(others, nil); unset != "" {
		waits = append(waits, unset)
	}
	switch {
	case len(noValue) > 0:
		blocker = &Blocker{v1alpha1.ReasonMetricsUnavailable, "no fresh connection count for " + list(noValue)}
	case roll != "":
		blocker = &Blocker{v1alpha1.ReasonRolloutInProgress, roll}
	case unset != "":
		blocker = &Blocker{v1alpha1.ReasonPodsNotReady, unset}
	case timedOut && len(holding) > 0:
		blocker = &Blocker{v1alpha1.ReasonDrainTimeout, "not empty by the deadline (onTimeout: Hold): " + list(holding)}
	}
	return waits, blocker
}

// commit lowers the target's replicas to the step's target (or the live spec, if higher) and
// records the victims' connections at that moment. apply is false when the replicas already
// landed and only the status write was lost.
func commit(in Input, d *Decision, doApply bool) {
	st := &d.Status
	step := st.Step
	value := max(step.To, *in.Spec.Replicas)
	if doApply {
		d.Apply = &value
	} else {
		value = in.Target.Replicas
	}
	st.AppliedReplicas = &value
	now := metav1.NewTime(in.Now)
	step.CommitTime = &now
	pods := byUID(in.Pods)
	var names []string
	for i := range step.Victims {
		v := &step.Victims[i]
		if p, ok := pods[string(v.UID)]; ok && p.Metrics != nil && p.Metrics.ScrapeStart.After(step.MarkTime.Time) {
			c := p.Metrics.Connections
			v.ConnectionsAtCommit = &c
		}
		at := "unknown"
		if v.ConnectionsAtCommit != nil {
			at = fmt.Sprint(*v.ConnectionsAtCommit)
		}
		names = append(names, fmt.Sprintf("%s (%s connections)", v.Name, at))
	}
	st.State = v1alpha1.StateVerifying
	setCond(in, st, v1alpha1.ConditionDraining, metav1.ConditionTrue, v1alpha1.ReasonStepInProgress, "waiting for the victims to be deleted")
	setCond(in, st, v1alpha1.ConditionScaleDownBlocked, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	d.Events = append(d.Events, Event{corev1.EventTypeNormal, EventCommitted, fmt.Sprintf(
		"%s %s replicas %d→%d: removing %s", in.Spec.TargetRef.Kind, in.Spec.TargetRef.Name, step.From, value, strings.Join(names, ", "))})
	d.RequeueAfter = PollWhileDraining
}

// verify waits until exactly the victims are deleted and closes the step with what it really
// disconnected; a scale-up meanwhile releases the victims that are still there.
func verify(in Input, d *Decision) {
	st := &d.Status
	step := st.Step
	desired, live := *in.Spec.Replicas, in.Target.Replicas
	pods := byUID(in.Pods)
	victims := map[string]bool{}
	var survivors []v1alpha1.Victim
	var actual int64
	for _, v := range step.Victims {
		victims[string(v.UID)] = true
		at := v.ConnectionsAtMark
		if v.ConnectionsAtCommit != nil && *v.ConnectionsAtCommit > at {
			at = *v.ConnectionsAtCommit
		}
		if p, ok := pods[string(v.UID)]; ok && !p.Terminating {
			survivors = append(survivors, v)
			continue
		}
		actual += at
	}
	// Pods that are going although they are not victims: the ReplicaSet chose another pod.
	var wrong []string
	var alive int32
	for _, p := range in.Pods {
		if !p.Terminating {
			alive++
			continue
		}
		if !victims[string(p.UID)] && step.CommitTime != nil && p.Created.Before(step.CommitTime.Time) {
			wrong = append(wrong, p.Name)
			if p.Metrics != nil {
				actual += p.Metrics.Connections
			}
		}
	}
	done := len(survivors) == 0
	switch {
	case done:
		d.Events = append(d.Events, Event{corev1.EventTypeNormal, EventStepComplete, fmt.Sprintf(
			"scale-down %d→%d complete: %d connections disconnected", step.From, step.To, actual)})
	case desired > live:
		// A scale-up while the ReplicaSet had not removed every victim: keep them.
	case alive <= live && len(wrong) > 0:
		d.Events = append(d.Events, Event{corev1.EventTypeWarning, EventWrongPodRemoved, fmt.Sprintf(
			"the ReplicaSet removed %s instead of %s", list(wrong), list(victimNames(survivors)))})
	default:
		d.RequeueAfter = PollWhileDraining
		return
	}
	if len(wrong) > 0 && done {
		d.Events = append(d.Events, Event{corev1.EventTypeWarning, EventWrongPodRemoved, "pods removed besides the victims: " + list(wrong)})
	}
	for _, v := range survivors {
		d.Unmark = append(d.Unmark, PodRef{v.Name, v.UID})
		if p := pods[string(v.UID)]; p.Metrics != nil && p.Metrics.ScrapeStart.After(step.MarkTime.Time) {
			actual += max(0, v.ConnectionsAtMark-p.Metrics.Connections)
		} else {
			actual += v.ConnectionsAtMark
		}
	}
	st.Ledger = Close(st.Ledger, actual)
	st.Step = nil
	if desired > live {
		apply(in, d, desired)
	}
	steady(in, d)
	if desired < live || (done && desired < step.To) {
		d.RequeueAfter = time.Millisecond // plan the next step without waiting for an event
	}
}

// release un-marks the victims of an uncommitted step and closes its ledger entry with what the
// drain really disconnected: the connections that left since the mark (all of them when the
// pod's count is unknown or the pod is gone).
func release(in Input, d *Decision, why string) {
	st := &d.Status
	step := st.Step
	pods := byUID(in.Pods)
	var actual int64
	for _, v := range step.Victims {
		p, ok := pods[string(v.UID)]
		switch {
		case !ok || p.Terminating:
			actual += v.ConnectionsAtMark
			continue
		case p.Metrics != nil && p.Metrics.ScrapeStart.After(step.MarkTime.Time):
			actual += max(0, v.ConnectionsAtMark-p.Metrics.Connections)
		default:
			actual += v.ConnectionsAtMark
		}
		d.Unmark = append(d.Unmark, PodRef{v.Name, v.UID})
	}
	st.Ledger = Close(st.Ledger, actual)
	st.Step = nil
	d.Events = append(d.Events, Event{corev1.EventTypeNormal, EventVictimsReleased, fmt.Sprintf(
		"scale-down %d→%d stopped (%s): %s serve again; %d disconnects counted", step.From, step.To, why,
		list(victimNames(step.Victims)), actual)})
}

// apply sets the target's replicas (a scale-up is applied at once).
func apply(in Input, d *Decision, value int32) {
	d.Apply = &value
	d.Status.AppliedReplicas = &value
	d.Events = append(d.Events, Event{corev1.EventTypeNormal, EventScaledUp, fmt.Sprintf(
		"%s %s replicas %d→%d", in.Spec.TargetRef.Kind, in.Spec.TargetRef.Name, in.Target.Replicas, value)})
}

func ready(in Input, d *Decision) {
	setCond(in, &d.Status, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonAsExpected,
		fmt.Sprintf("guarding %s %s", in.Spec.TargetRef.Kind, in.Spec.TargetRef.Name))
}

func steady(in Input, d *Decision) {
	st := &d.Status
	st.State = v1alpha1.StateSteady
	if st.Step == nil {
		setCond(in, st, v1alpha1.ConditionDraining, metav1.ConditionFalse, v1alpha1.ReasonNoStep, "")
	}
	setCond(in, st, v1alpha1.ConditionScaleDownBlocked, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
}

func draining(in Input, d *Decision) {
	st := &d.Status
	st.State = v1alpha1.StateDraining
	setCond(in, st, v1alpha1.ConditionDraining, metav1.ConditionTrue, v1alpha1.ReasonStepInProgress, fmt.Sprintf(
		"draining %s until %s", list(victimNames(st.Step.Victims)), st.Step.Deadline.UTC().Format(time.RFC3339)))
	setCond(in, st, v1alpha1.ConditionScaleDownBlocked, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
}

// block records why a scale-down waits; the event is emitted only when the reason changes.
func block(in Input, d *Decision, b Blocker) {
	st := &d.Status
	st.State = v1alpha1.StateBlocked
	if st.Step == nil {
		setCond(in, st, v1alpha1.ConditionDraining, metav1.ConditionFalse, v1alpha1.ReasonNoStep, "")
	}
	old := meta.FindStatusCondition(in.Status.Conditions, v1alpha1.ConditionScaleDownBlocked)
	if old == nil || old.Status != metav1.ConditionTrue || old.Reason != b.Reason {
		d.Events = append(d.Events, Event{corev1.EventTypeNormal, b.Reason, "scale-down waits: " + b.Message})
	}
	setCond(in, st, v1alpha1.ConditionScaleDownBlocked, metav1.ConditionTrue, b.Reason, b.Message)
	if d.RequeueAfter == 0 {
		d.RequeueAfter = PollWhileBlocked
	}
}

// notReady records that the guard cannot control its target at all; nothing is written to the
// target or its pods.
func notReady(in Input, d *Decision, reason, msg string) {
	st := &d.Status
	old := meta.FindStatusCondition(in.Status.Conditions, v1alpha1.ConditionReady)
	if old == nil || old.Status != metav1.ConditionFalse || old.Reason != reason {
		d.Events = append(d.Events, Event{corev1.EventTypeWarning, reason, msg})
	}
	st.State = v1alpha1.StateBlocked
	setCond(in, st, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
	setCond(in, st, v1alpha1.ConditionScaleDownBlocked, metav1.ConditionTrue, reason, msg)
	if st.Step == nil {
		setCond(in, st, v1alpha1.ConditionDraining, metav1.ConditionFalse, v1alpha1.ReasonNoStep, "")
	}
}

func setCond(in Input, st *v1alpha1.ScaleGuardStatus, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: in.Generation, LastTransitionTime: metav1.NewTime(in.Now),
	})
}

// strays are pods this guard marked that its status no longer holds as victims (a status write
// lost after marking, or a step closed before the pods were un-marked): they serve again.
func strays(in Input) []PodRef {
	victims := map[string]bool{}
	if in.Status.Step != nil {
		for _, v := range in.Status.Step.Victims {
			victims[string(v.UID)] = true
		}
	}
	var out []PodRef
	for _, p := range in.Pods {
		if p.MarkedBy == in.Name && p.MarkedBy != "" && !p.Terminating && !victims[string(p.UID)] {
			out = append(out, PodRef{p.Name, p.UID})
		}
	}
	return out
}

// serving counts the target's pods that serve: not terminating, not marked, not a victim.
func serving(pods []Pod, step *v1alpha1.ScaleDownStep) int32 {
	victims := map[string]bool{}
	if step != nil {
		for _, v := range step.Victims {
			victims[string(v.UID)] = true
		}
	}
	var n int32
	for _, p := range pods {
		if !p.Terminating && !p.Marked && !victims[string(p.UID)] {
			n++
		}
	}
	return n
}

func drainTimeout(sd v1alpha1.ScaleDownSpec) time.Duration {
	if sd.DrainTimeout == nil {
		return 10 * time.Minute
	}
	return sd.DrainTimeout.Duration
}

func byUID(pods []Pod) map[string]Pod {
	m := make(map[string]Pod, len(pods))
	for _, p := range pods {
		m[string(p.UID)] = p
	}
	return m
}

func victimNames(vs []v1alpha1.Victim) []string {
	names := make([]string, 0, len(vs))
	for _, v := range vs {
		names = append(names, v.Name)
	}
	return names
}
