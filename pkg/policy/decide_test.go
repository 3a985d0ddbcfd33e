package policy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

// six pods with deliberately uneven connections.
func six() []Pod {
	return []Pod{
		pod("p2000", 2000, 5*time.Hour), pod("p1500", 1500, 4*time.Hour), pod("p40", 40, 3*time.Hour),
		pod("p30", 30, 2*time.Hour), pod("p0-old", 0, 2*time.Hour), pod("p0-young", 0, time.Hour),
	}
}

// readyToCommit is a step 3→2 whose victim p0 has drained, and two other serving pods.
func readyToCommit() Input {
	in := input(2, 3, victim(pod("p0", 7, time.Hour), 0), pod("a", 10, time.Hour), pod("b", 20, time.Hour))
	return drainingStep(in, 3, 2, time.Minute, vic("p0", 7))
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name  string
		in    Input
		check func(t *testing.T, d Decision)
	}{
		{
			name: "spec.replicas is seeded once from the Deployment",
			in: func() Input {
				in := input(0, 4, six()[:4]...)
				in.Spec.Replicas = nil
				in.Status.AppliedReplicas = nil
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.SeedReplicas == nil || *d.SeedReplicas != 4 || *d.Status.AppliedReplicas != 4 || d.Apply != nil {
					t.Errorf("seed %v applied %v apply %v", d.SeedReplicas, d.Status.AppliedReplicas, d.Apply)
				}
			},
		},
		{
			name: "steady: nothing to do",
			in:   input(3, 3, six()[:3]...),
			check: func(t *testing.T, d Decision) {
				if d.Apply != nil || d.Status.Step != nil || len(d.Mark) > 0 || d.Status.State != v1alpha1.StateSteady || d.RequeueAfter != 0 {
					t.Errorf("decision %+v", d)
				}
				if cond(d.Status, v1alpha1.ConditionReady) != "True/AsExpected" || d.Status.Replicas != 3 ||
					d.Status.Selector != "app=echo,wsscale.io/drain notin (true)" || d.Status.ObservedGeneration != 1 {
					t.Errorf("status %+v", d.Status)
				}
			},
		},
		{
			name: "a scale-up is applied at once, even while paused or rolling out",
			in: func() Input {
				in := input(5, 3, six()[:3]...)
				in.Spec.Paused = true
				in.Target.Generation++
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Apply == nil || *d.Apply != 5 || *d.Status.AppliedReplicas != 5 || !reflect.DeepEqual(reasons(d.Events), []string{EventScaledUp}) {
					t.Errorf("apply %v events %v", d.Apply, reasons(d.Events))
				}
			},
		},
		{
			name: "plan: the least-connected, youngest pod is marked after the step is recorded",
			in:   input(2, 6, six()...),
			check: func(t *testing.T, d Decision) {
				s := d.Status.Step
				if s == nil || s.From != 6 || s.To != 5 || len(s.Victims) != 1 || s.Victims[0].Name != "p0-young" {
					t.Fatalf("step %+v", s)
				}
				if !s.MarkTime.Time.Equal(t0) || !s.Deadline.Time.Equal(t0.Add(10*time.Minute)) || !d.Deadline.Equal(s.Deadline.Time) {
					t.Errorf("mark %v deadline %v", s.MarkTime, s.Deadline)
				}
				if !reflect.DeepEqual(names(d.Mark), []string{"p0-young"}) || d.Apply != nil {
					t.Errorf("mark %v apply %v", names(d.Mark), d.Apply)
				}
				if len(d.Status.Ledger) != 1 || !d.Status.Ledger[0].Open || d.Status.Ledger[0].Disconnects != 0 {
					t.Errorf("ledger %+v", d.Status.Ledger)
				}
				if d.Status.State != v1alpha1.StateDraining || cond(d.Status, v1alpha1.ConditionDraining) != "True/StepInProgress" || d.Status.Replicas != 5 {
					t.Errorf("state %s draining %s replicas %d", d.Status.State, cond(d.Status, v1alpha1.ConditionDraining), d.Status.Replicas)
				}
				if !reflect.DeepEqual(reasons(d.Events), []string{EventVictimsMarked}) || d.RequeueAfter != PollWhileDraining {
					t.Errorf("events %v requeue %v", reasons(d.Events), d.RequeueAfter)
				}
			},
		},
		{
			name: "plan: a step takes at most maxVictimsPerStep and never more than the scale-down",
			in: func() Input {
				in := input(4, 6, six()...)
				in.Spec.ScaleDown.MaxVictimsPerStep = ptr.To[int32](5)
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if !reflect.DeepEqual(names(d.Mark), []string{"p0-young", "p0-old"}) || d.Status.Step.To != 4 {
					t.Errorf("mark %v step %+v", names(d.Mark), d.Status.Step)
				}
			},
		},
		{
			name: "plan: a spec decoded without the API's defaults takes one victim per step",
			in:   func() Input { in := input(2, 6, six()...); in.Spec.ScaleDown = v1alpha1.ScaleDownSpec{}; return in }(),
			check: func(t *testing.T, d Decision) {
				if !reflect.DeepEqual(names(d.Mark), []string{"p0-young"}) || !d.Status.Step.Deadline.Time.Equal(t0.Add(10*time.Minute)) {
					t.Errorf("mark %v step %+v", names(d.Mark), d.Status.Step)
				}
			},
		},
		{
			name: "plan: the step is cut to the victims that fit the budget, and reserves their connections",
			in: func() Input {
				in := input(2, 6, six()...)
				in.Spec.ScaleDown.MaxVictimsPerStep = ptr.To[int32](4)
				in.Spec.ScaleDown.DisconnectBudget = budget(50, 10*time.Minute)
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if !reflect.DeepEqual(names(d.Mark), []string{"p0-young", "p0-old", "p30"}) || d.Status.Step.To != 3 {
					t.Errorf("mark %v step %+v", names(d.Mark), d.Status.Step)
				}
				if d.Status.Ledger[0].Disconnects != 30 {
					t.Errorf("ledger %+v", d.Status.Ledger)
				}
			},
		},
		{
			name: "plan: the budget exhausted blocks until room is back",
			in: func() Input {
				in := input(2, 4, six()[:4]...)
				in.Spec.ScaleDown.DisconnectBudget = budget(50, 10*time.Minute)
				in.Status.Ledger = []v1alpha1.LedgerEntry{entry(9*time.Minute, 40, false)}
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || len(d.Mark) > 0 || cond(d.Status, v1alpha1.ConditionScaleDownBlocked) != "True/BudgetExhausted" ||
					d.Status.State != v1alpha1.StateBlocked || d.RequeueAfter != time.Minute {
					t.Errorf("step %+v blocked %s requeue %v", d.Status.Step, cond(d.Status, v1alpha1.ConditionScaleDownBlocked), d.RequeueAfter)
				}
				if !reflect.DeepEqual(reasons(d.Events), []string{v1alpha1.ReasonBudgetExhausted}) {
					t.Errorf("events %v", reasons(d.Events))
				}
			},
		},
		{
			name: "the same block does not emit its event again",
			in: func() Input {
				in := input(2, 3, six()[:3]...)
				in.Spec.Paused = true
				in.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionScaleDownBlocked, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonPaused}}
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if len(d.Events) != 0 || cond(d.Status, v1alpha1.ConditionScaleDownBlocked) != "True/Paused" {
					t.Errorf("events %v", reasons(d.Events))
				}
			},
		},
		{
			name: "missing metrics block a scale-down",
			in:   input(2, 3, pod("a", 1, time.Hour), pod("b", 2, time.Hour), with(pod("c", 0, time.Hour), func(p *Pod) { p.Metrics = nil })),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || cond(d.Status, v1alpha1.ConditionScaleDownBlocked) != "True/MetricsUnavailable" {
					t.Errorf("step %+v blocked %s", d.Status.Step, cond(d.Status, v1alpha1.ConditionScaleDownBlocked))
				}
				// Values change without any API event: the block is looked at again.
				if d.RequeueAfter != PollWhileBlocked {
					t.Errorf("requeue after %v, want %v", d.RequeueAfter, PollWhileBlocked)
				}
			},
		},
		{
			name: "a Pending pod blocks a scale-down",
			in:   input(2, 3, pod("a", 1, time.Hour), pod("b", 2, time.Hour), with(pod("c", 0, time.Hour), func(p *Pod) { p.Phase, p.Ready = corev1.PodPending, false })),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || cond(d.Status, v1alpha1.ConditionScaleDownBlocked) != "True/PodsNotReady" {
					t.Errorf("step %+v blocked %s", d.Status.Step, cond(d.Status, v1alpha1.ConditionScaleDownBlocked))
				}
			},
		},
		{
			name: "the target missing",
			in:   func() Input { in := input(2, 3); in.Target = Target{}; return in }(),
			check: func(t *testing.T, d Decision) {
				if cond(d.Status, v1alpha1.ConditionReady) != "False/TargetNotFound" || d.Apply != nil || d.SeedReplicas != nil {
					t.Errorf("ready %s", cond(d.Status, v1alpha1.ConditionReady))
				}
				if !reflect.DeepEqual(reasons(d.Events), []string{v1alpha1.ReasonTargetNotFound}) || d.Events[0].Type != corev1.EventTypeWarning {
					t.Errorf("events %+v", d.Events)
				}
			},
		},
		{
			name: "a kind other than Deployment is refused",
			in: func() Input {
				in := input(2, 3)
				in.Target.Supported = false
				in.Spec.TargetRef.Kind = "StatefulSet"
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if cond(d.Status, v1alpha1.ConditionReady) != "False/Unsupported" || d.Apply != nil {
					t.Errorf("ready %s", cond(d.Status, v1alpha1.ConditionReady))
				}
			},
		},
		{
			name: "a second guard for the same Deployment is refused",
			in:   func() Input { in := input(2, 3, six()[:3]...); in.DuplicateOf = "first"; return in }(),
			check: func(t *testing.T, d Decision) {
				if cond(d.Status, v1alpha1.ConditionReady) != "False/DuplicateGuard" || d.Apply != nil || len(d.Mark) > 0 {
					t.Errorf("ready %s", cond(d.Status, v1alpha1.ConditionReady))
				}
			},
		},
		{
			name: "replicas changed behind the guard's back: a condition, no fight",
			in:   func() Input { in := input(2, 4, six()[:4]...); in.Status.AppliedReplicas = ptr.To[int32](3); return in }(),
			check: func(t *testing.T, d Decision) {
				if cond(d.Status, v1alpha1.ConditionReady) != "False/ForeignReplicaChange" || d.Apply != nil || len(d.Mark) > 0 || d.Status.Step != nil {
					t.Errorf("ready %s apply %v", cond(d.Status, v1alpha1.ConditionReady), d.Apply)
				}
			},
		},
		{
			name: "a foreign change to what the guard wants anyway is adopted",
			in:   func() Input { in := input(4, 4, six()[:4]...); in.Status.AppliedReplicas = ptr.To[int32](3); return in }(),
			check: func(t *testing.T, d Decision) {
				if cond(d.Status, v1alpha1.ConditionReady) != "True/AsExpected" || *d.Status.AppliedReplicas != 4 || d.Apply != nil {
					t.Errorf("ready %s applied %v", cond(d.Status, v1alpha1.ConditionReady), d.Status.AppliedReplicas)
				}
			},
		},
		{
			name: "drain: every commit condition holds, the Deployment is lowered to the step's target",
			in:   readyToCommit(),
			check: func(t *testing.T, d Decision) {
				s := d.Status.Step
				if d.Apply == nil || *d.Apply != 2 || *d.Status.AppliedReplicas != 2 || s == nil || s.CommitTime == nil || !s.CommitTime.Time.Equal(t0) {
					t.Fatalf("apply %v step %+v", d.Apply, s)
				}
				if s.Victims[0].ConnectionsAtCommit == nil || *s.Victims[0].ConnectionsAtCommit != 0 {
					t.Errorf("victims %+v", s.Victims)
				}
				if d.Status.State != v1alpha1.StateVerifying || !reflect.DeepEqual(reasons(d.Events), []string{EventCommitted}) || d.Status.Replicas != 2 {
					t.Errorf("state %s events %v replicas %d", d.Status.State, reasons(d.Events), d.Status.Replicas)
				}
			},
		},
		{
			name: "drain: the HPA asking for even fewer still commits only the step's target",
			in:   func() Input { in := readyToCommit(); in.Spec.Replicas = ptr.To[int32](1); return in }(),
			check: func(t *testing.T, d Decision) {
				if d.Apply == nil || *d.Apply != 2 {
					t.Errorf("apply %v", d.Apply)
				}
			},
		},
		{
			name: "a restart in the middle of a drain: the victim is marked again, nothing reserved twice",
			in: func() Input {
				in := readyToCommit()
				in.Pods[0] = with(in.Pods[0], func(p *Pod) { p.Marked, p.CostVisible, p.Ready, p.Metrics.Connections = false, false, true, 7 })
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if !reflect.DeepEqual(names(d.Mark), []string{"p0"}) || d.Apply != nil || len(d.Status.Ledger) != 1 || d.Status.Ledger[0].Disconnects != 7 {
					t.Errorf("mark %v apply %v ledger %+v", names(d.Mark), d.Apply, d.Status.Ledger)
				}
				if d.Status.State != v1alpha1.StateDraining || d.RequeueAfter != PollWhileDraining || len(d.Events) != 0 {
					t.Errorf("state %s requeue %v events %v", d.Status.State, d.RequeueAfter, reasons(d.Events))
				}
			},
		},
		{
			name: "drain: the deadline passed with onTimeout Proceed commits a victim that still holds clients",
			in: func() Input {
				in := readyToCommit()
				in.Now = t0.Add(10 * time.Minute)
				in.Pods[0].Metrics = &Metrics{Connections: 3, Draining: true, ScrapeStart: in.Now.Add(-time.Second)}
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Apply == nil || *d.Status.Step.Victims[0].ConnectionsAtCommit != 3 {
					t.Errorf("apply %v step %+v", d.Apply, d.Status.Step)
				}
			},
		},
		{
			name: "drain: past the deadline with Proceed, a server that ignores the label (still Ready, not draining) goes",
			in: func() Input {
				in := readyToCommit()
				in.Now = t0.Add(10 * time.Minute)
				in.Pods[0].Ready = true
				in.Pods[0].Metrics = &Metrics{Connections: 4, ScrapeStart: in.Now.Add(-time.Second)}
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Apply == nil || *d.Apply != 2 {
					t.Errorf("apply %v, want the step committed at the deadline", d.Apply)
				}
			},
		},
		{
			name: "drain: the deadline passed with onTimeout Hold keeps the victim draining",
			in: func() Input {
				in := readyToCommit()
				in.Now = t0.Add(10 * time.Minute)
				in.Spec.ScaleDown.OnTimeout = v1alpha1.OnTimeoutHold
				in.Pods[0].Metrics = &Metrics{Connections: 3, Draining: true, ScrapeStart: in.Now.Add(-time.Second)}
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Apply != nil || d.Status.Step == nil || cond(d.Status, v1alpha1.ConditionScaleDownBlocked) != "True/DrainTimeout" || d.Status.State != v1alpha1.StateDraining {
					t.Errorf("apply %v blocked %s state %s", d.Apply, cond(d.Status, v1alpha1.ConditionScaleDownBlocked), d.Status.State)
				}
			},
		},
		{
			name: "drain: metrics gone stale hold the step even past the deadline with Proceed",
			in: func() Input {
				in := readyToCommit()
				in.Now = t0.Add(11 * time.Minute)
				in.Pods[0].Metrics = nil
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Apply != nil || cond(d.Status, v1alpha1.ConditionScaleDownBlocked) != "True/MetricsUnavailable" {
					t.Errorf("apply %v blocked %s", d.Apply, cond(d.Status, v1alpha1.ConditionScaleDownBlocked))
				}
			},
		},
		{
			name: "a scale-up during a drain releases the victims and is applied",
			in: func() Input {
				in := readyToCommit()
				in.Spec.Replicas = ptr.To[int32](4)
				in.Pods[0].Metrics.Connections = 2 // 5 of its 7 clients left during the drain
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || !reflect.DeepEqual(names(d.Unmark), []string{"p0"}) || d.Apply == nil || *d.Apply != 4 {
					t.Fatalf("step %+v unmark %v apply %v", d.Status.Step, names(d.Unmark), d.Apply)
				}
				if l := d.Status.Ledger; len(l) != 1 || l[0].Open || l[0].Disconnects != 5 {
					t.Errorf("ledger %+v, want closed with the 5 that left", l)
				}
				if !reflect.DeepEqual(reasons(d.Events), []string{EventVictimsReleased, EventScaledUp}) || d.Status.State != v1alpha1.StateSteady ||
					cond(d.Status, v1alpha1.ConditionDraining) != "False/NoStep" {
					t.Errorf("events %v state %s", reasons(d.Events), d.Status.State)
				}
			},
		},
		{
			name: "a surge while the Deployment is still above the new spec releases the victims without a write",
			in: func() Input {
				in := input(3, 4, victim(pod("v1", 0, time.Hour), 0), victim(pod("v2", 1, time.Hour), 0), pod("a", 10, time.Hour), pod("b", 20, time.Hour))
				in = drainingStep(in, 4, 2, time.Minute, vic("v1", 0), vic("v2", 1))
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || !reflect.DeepEqual(names(d.Unmark), []string{"v1", "v2"}) || d.Apply != nil {
					t.Errorf("step %+v unmark %v apply %v", d.Status.Step, names(d.Unmark), d.Apply)
				}
			},
		},
		{
			name: "pausing during a drain releases the victims",
			in:   func() Input { in := readyToCommit(); in.Spec.Paused = true; return in }(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || !reflect.DeepEqual(names(d.Unmark), []string{"p0"}) || d.Apply != nil {
					t.Errorf("step %+v unmark %v apply %v", d.Status.Step, names(d.Unmark), d.Apply)
				}
			},
		},
		{
			name: "a victim deleted by someone else abandons the step with a warning",
			in: func() Input {
				in := input(2, 4, victim(pod("v1", 0, time.Hour), 0), pod("a", 10, time.Hour), pod("b", 20, time.Hour))
				return drainingStep(in, 4, 2, time.Minute, vic("v1", 0), vic("gone", 50))
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || !reflect.DeepEqual(names(d.Unmark), []string{"v1"}) || d.Apply != nil {
					t.Errorf("step %+v unmark %v apply %v", d.Status.Step, names(d.Unmark), d.Apply)
				}
				if !reflect.DeepEqual(reasons(d.Events), []string{EventVictimLost, EventVictimsReleased}) || d.Events[0].Type != corev1.EventTypeWarning {
					t.Errorf("events %+v", d.Events)
				}
				if l := d.Status.Ledger; l[0].Open || l[0].Disconnects != 50 {
					t.Errorf("ledger %+v, want the lost victim's 50 counted", l)
				}
			},
		},
		{
			name: "a restart after the commit landed but before its status: no second write, verify",
			in:   func() Input { in := readyToCommit(); in.Target.Replicas = 2; return in }(),
			check: func(t *testing.T, d Decision) {
				if d.Apply != nil || d.Status.Step == nil || d.Status.Step.CommitTime == nil || *d.Status.AppliedReplicas != 2 ||
					cond(d.Status, v1alpha1.ConditionReady) != "True/AsExpected" {
					t.Errorf("apply %v step %+v ready %s", d.Apply, d.Status.Step, cond(d.Status, v1alpha1.ConditionReady))
				}
			},
		},
		{
			name: "a foreign scale-up adopted during a drain releases the victims; it is not the guard's own commit",
			in: func() Input {
				in := readyToCommit()
				in.Pods[0].Metrics.Draining, in.Pods[0].Metrics.Connections = false, 5
				in.Pods = append(in.Pods, pod("new", 0, time.Minute))
				in.Target.Replicas, in.Target.StatusReplicas, in.Target.UpdatedReplicas = 4, 4, 4
				in.Spec.Replicas = ptr.To[int32](4)
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || !reflect.DeepEqual(names(d.Unmark), []string{"p0"}) || d.Apply != nil || *d.Status.AppliedReplicas != 4 {
					t.Errorf("step %+v unmark %v apply %v applied %v", d.Status.Step, names(d.Unmark), d.Apply, *d.Status.AppliedReplicas)
				}
			},
		},
		{
			name: "verify: the victim is going, the step closes with what it disconnected",
			in: func() Input {
				in := committed(readyToCommit())
				in.Pods[0].Terminating = true
				in.Status.Step.Victims[0].ConnectionsAtCommit = ptr.To[int64](9) // clients that got in before the drain
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || len(d.Unmark) != 0 || d.Apply != nil {
					t.Fatalf("step %+v unmark %v", d.Status.Step, names(d.Unmark))
				}
				if l := d.Status.Ledger; l[0].Open || l[0].Disconnects != 9 {
					t.Errorf("ledger %+v", l)
				}
				if !reflect.DeepEqual(reasons(d.Events), []string{EventStepComplete}) || d.Status.State != v1alpha1.StateSteady || d.Status.Replicas != 2 {
					t.Errorf("events %v state %s replicas %d", reasons(d.Events), d.Status.State, d.Status.Replicas)
				}
			},
		},
		{
			name: "verify: the next step is planned at once when the spec is lower still",
			in: func() Input {
				in := committed(readyToCommit())
				in.Spec.Replicas = ptr.To[int32](1)
				in.Pods = in.Pods[1:]
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || d.RequeueAfter == 0 || d.RequeueAfter > time.Second {
					t.Errorf("step %+v requeue %v", d.Status.Step, d.RequeueAfter)
				}
			},
		},
		{
			name: "verify: waits while the ReplicaSet has not removed the victim",
			in: func() Input {
				in := committed(readyToCommit())
				in.Pods = append(in.Pods, pod("extra", 0, time.Hour))
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step == nil || d.RequeueAfter != PollWhileDraining || len(d.Events) != 0 {
					t.Errorf("step %+v requeue %v events %v", d.Status.Step, d.RequeueAfter, reasons(d.Events))
				}
			},
		},
		{
			name: "verify: the ReplicaSet removed another pod: a warning, the victim serves again",
			in: func() Input {
				in := committed(readyToCommit())
				in.Pods[2].Terminating = true
				return in
			}(),
			check: func(t *testing.T, d Decision) {
				if d.Status.Step != nil || !reflect.DeepEqual(names(d.Unmark), []string{"p0"}) {
					t.Errorf("step %+v unmark %v", d.Status.Step, names(d.Unmark))
				}
				if !reflect.DeepEqual(reasons(d.Events), []string{EventWrongPodRemoved}) || d.Events[0].Type != corev1.EventTypeWarning {
					t.Errorf("events %+v", d.Events)
				}
				if l := d.Status.Ledger; l[0].Disconnects != 20+7 {
					t.Errorf("ledger %+v, want the cut pod's 20 and the released victim's 7", l)
				}
			},
		},
		{
			name: "a pod this guard marked that is no victim any more serves again",
			in:   input(3, 3, pod("a", 1, time.Hour), pod("b", 2, time.Hour), victim(pod("stray", 0, time.Hour), 0)),
			check: func(t *testing.T, d Decision) {
				if !reflect.DeepEqual(names(d.Unmark), []string{"stray"}) || d.Status.Replicas != 2 {
					t.Errorf("unmark %v replicas %d", names(d.Unmark), d.Status.Replicas)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.in.Status.DeepCopy()
			d := Decide(tt.in)
			tt.check(t, d)
			if !equality.Semantic.DeepEqual(before, &tt.in.Status) {
				t.Errorf("Decide changed its input's status")
			}
		})
	}
}

// committed returns in after its step's commit at t0−1s: the Deployment at the step's target.
func committed(in Input) Input {
	at := metav1.NewTime(t0.Add(-time.Second))
	in.Status.Step.CommitTime = &at
	in.Status.Step.Victims[0].ConnectionsAtCommit = ptr.To[int64](0)
	in.Status.AppliedReplicas = ptr.To(in.Status.Step.To)
	in.Target.Replicas = in.Status.Step.To
	return in
}

// TestCommitConditions breaks one commit condition at a time on a step that may otherwise commit.
func TestCommitConditions(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Input)
		wait    string
		blocker string
	}{
		{name: "the victim is still Ready", mod: func(in *Input) { in.Pods[0].Ready = true }, wait: "still Ready"},
		{name: "the victim is not marked in the cache", mod: func(in *Input) { in.Pods[0].Marked = false }, wait: "not marked"},
		{name: "the victim's deletion cost is not visible", mod: func(in *Input) { in.Pods[0].CostVisible = false }, wait: "not marked"},
		{name: "the last scrape started before the mark", mod: func(in *Input) { in.Pods[0].Metrics.ScrapeStart = t0.Add(-2 * time.Minute) }, wait: "not scraped since the mark"},
		{name: "a scrape that started at the mark itself does not count", mod: func(in *Input) {
			in.Pods[0].Metrics.ScrapeStart = in.Status.Step.MarkTime.Time
		}, wait: "not scraped since the mark"},
		{name: "the server has not seen the label", mod: func(in *Input) { in.Pods[0].Metrics.Draining = false }, wait: "not draining"},
		{name: "the victim still holds clients", mod: func(in *Input) { in.Pods[0].Metrics.Connections = 1 }, wait: "holds 1 connections"},
		{name: "no fresh value for the victim", mod: func(in *Input) { in.Pods[0].Metrics = nil }, wait: "no fresh", blocker: v1alpha1.ReasonMetricsUnavailable},
		{name: "another pod is not ready", mod: func(in *Input) { in.Pods[1].Ready = false }, wait: "not ready", blocker: v1alpha1.ReasonPodsNotReady},
		{name: "another pod is Pending", mod: func(in *Input) {
			in.Pods = append(in.Pods, with(pod("new", 0, 0), func(p *Pod) { p.Phase, p.Ready = corev1.PodPending, false }))
		}, wait: "Pending", blocker: v1alpha1.ReasonPodsNotReady},
		{name: "another pod is terminating", mod: func(in *Input) { in.Pods[2].Terminating = true }, wait: "terminating", blocker: v1alpha1.ReasonPodsNotReady},
		{name: "a rollout is in progress", mod: func(in *Input) { in.Target.Generation++ }, wait: "generation", blocker: v1alpha1.ReasonRolloutInProgress},
		{name: "a pod of an older ReplicaSet", mod: func(in *Input) { in.Pods[1].TemplateHash = "old" }, wait: "older ReplicaSet", blocker: v1alpha1.ReasonRolloutInProgress},
		{name: "within emptyThreshold counts as empty", mod: func(in *Input) {
			in.Spec.ScaleDown.EmptyThreshold = ptr.To[int64](2)
			in.Pods[0].Metrics.Connections = 2
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := readyToCommit()
			tt.mod(&in)
			waits, b := CommitCheck(in)
			d := Decide(in)
			if tt.wait == "" {
				if len(waits) != 0 || d.Apply == nil {
					t.Errorf("waits %v apply %v, want a commit", waits, d.Apply)
				}
				return
			}
			if d.Apply != nil || d.Status.Step.CommitTime != nil {
				t.Errorf("committed despite: %s", tt.name)
			}
			if !strings.Contains(strings.Join(waits, "; "), tt.wait) {
				t.Errorf("waits %q, want one containing %q", waits, tt.wait)
			}
			got := ""
			if b != nil {
				got = b.Reason
			}
			if got != tt.blocker {
				t.Errorf("blocker %q, want %q", got, tt.blocker)
			}
		})
	}
}

// TestStatusIsStableWhileDraining: the status is written on state changes only, never per
// scrape, so two decisions that differ only in connection counts give the same status.
func TestStatusIsStableWhileDraining(t *testing.T) {
	in := readyToCommit()
	in.Pods[0].Metrics.Connections = 5
	first := Decide(in)
	in.Status = first.Status
	in.Now = in.Now.Add(2 * time.Second)
	in.Pods[0].Metrics = &Metrics{Connections: 3, Draining: true, ScrapeStart: in.Now.Add(-time.Second)}
	in.Pods[1].Metrics.Connections++
	second := Decide(in)
	if !equality.Semantic.DeepEqual(first.Status, second.Status) {
		t.Errorf("status changed with the connection counts alone:\n%+v\n%+v", first.Status, second.Status)
	}
}
