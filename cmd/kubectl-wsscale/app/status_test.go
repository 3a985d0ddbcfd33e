package app

import (
	"bytes"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
)

var now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func facts(conns ...int64) []policy.Pod {
	var out []policy.Pod
	for i, c := range conns {
		p := policy.Pod{Name: string(rune('a' + i)), UID: types.UID(string(rune('a' + i))), Created: now.Add(-time.Hour), Phase: corev1.PodRunning,
			Ready: true, TemplateHash: "h1", Scraped: true}
		if c >= 0 {
			p.Metrics = &policy.Metrics{Connections: c, ScrapeStart: now.Add(-time.Second)}
		}
		out = append(out, p)
	}
	return out
}

func guardWith(budget int64, used int64) *v1alpha1.ScaleGuard {
	g := &v1alpha1.ScaleGuard{ObjectMeta: metav1.ObjectMeta{Name: "echo", Generation: 1}}
	g.Spec.TargetRef = v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"}
	g.Spec.Replicas = ptr.To[int32](3)
	g.Status.AppliedReplicas = ptr.To[int32](3)
	if budget > 0 {
		g.Spec.ScaleDown.DisconnectBudget = &v1alpha1.DisconnectBudget{MaxDisconnects: budget, Window: &metav1.Duration{Duration: time.Minute}}
	}
	if used > 0 {
		g.Status.Ledger = []v1alpha1.LedgerEntry{{Time: metav1.NewTime(now.Add(-10 * time.Second)), Disconnects: used}}
	}
	return g
}

func TestNextScaleDown(t *testing.T) {
	target := policy.Target{Found: true, Supported: true, Replicas: 3, Generation: 1, ObservedGeneration: 1, StatusReplicas: 3, UpdatedReplicas: 3, TemplateHash: "h1"}
	for _, tc := range []struct {
		name        string
		guard       *v1alpha1.ScaleGuard
		pods        []policy.Pod
		target      policy.Target
		victim, why string
		blocked     string
		hpaMin      int32
	}{
		{name: "least connected", guard: guardWith(50, 0), pods: facts(30, 12, 0), target: target, victim: "c (0 connections)", why: "least connected"},
		{name: "tie goes to the youngest", guard: guardWith(0, 0), pods: func() []policy.Pod {
			p := facts(5, 5, 9)
			p[1].Created = now.Add(-time.Minute)
			return p
		}(), target: target, victim: "b (5 connections)"},
		{name: "no value", guard: guardWith(0, 0), pods: facts(30, -1, 0), target: target, blocked: v1alpha1.ReasonMetricsUnavailable, why: "no fresh connection count for b"},
		{name: "budget used up", guard: guardWith(50, 45), pods: facts(30, 12, 8), target: target, blocked: v1alpha1.ReasonBudgetExhausted, why: "45 of 50 disconnects used"},
		{name: "without a guard", pods: facts(30, 12, 0), target: target, victim: "c (0 connections)", why: "the ReplicaSet picks by its own ranking"},
		{name: "at the HPA's minimum", hpaMin: 3, guard: guardWith(0, 0), pods: facts(30, 12, 0), target: target, victim: "c (0 connections)", why: "the HPA's minReplicas 3 allows none now"},
		{name: "one replica", pods: facts(3), target: func() policy.Target { t := target; t.Replicas = 1; return t }(), blocked: "MinimumReached"},
		{name: "step in progress", guard: func() *v1alpha1.ScaleGuard {
			g := guardWith(0, 0)
			g.Status.Step = &v1alpha1.ScaleDownStep{From: 3, To: 2, Deadline: metav1.NewTime(now.Add(time.Minute)), Victims: []v1alpha1.Victim{{Name: "b", UID: "b", ConnectionsAtMark: 12}}}
			return g
		}(), pods: facts(30, 12, 0), target: target, victim: "b (12 connections at mark)", why: "step 3→2 in progress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &Workload{Deployment: "echo", guard: tc.guard}
			if tc.hpaMin > 0 {
				w.hpa = &autoscalingv2.HorizontalPodAutoscaler{Spec: autoscalingv2.HorizontalPodAutoscalerSpec{MinReplicas: ptr.To(tc.hpaMin)}}
			}
			n := nextScaleDown(w, tc.target, tc.pods, now)
			if tc.victim != "" && (len(n.Victims) != 1 || n.Victims[0] != tc.victim) {
				t.Errorf("victims %v (%s), want [%s]", n.Victims, n.Why, tc.victim)
			}
			if tc.blocked != "" && (n.Blocked != tc.blocked || len(n.Victims) != 0) {
				t.Errorf("blocked %q with victims %v (%s), want %s", n.Blocked, n.Victims, n.Why, tc.blocked)
			}
			if !strings.Contains(n.Why, tc.why) {
				t.Errorf("why %q, want it to say %q", n.Why, tc.why)
			}
		})
	}
}

func TestStatusText(t *testing.T) {
	n30, n0 := int64(30), int64(0)
	age := metav1.Duration{Duration: 1500 * time.Millisecond}
	w := &Workload{Namespace: "ns", HPA: "echo", ScaleGuard: "echo", Deployment: "echo", Metric: "websocket_connections average 1k per pod",
		HPADesired: ptr.To[int32](3), GuardDesired: ptr.To[int32](3), Applied: ptr.To[int32](3), Ready: 2, State: "Steady",
		Pods: []PodState{
			{Name: "echo-1", Phase: "Running", Ready: true, Connections: &n30, ValueAge: &age},
			{Name: "echo-2", Phase: "Running", Ready: true, Connections: &n0, ValueAge: &age},
			{Name: "echo-3", Phase: "Pending", Note: "no value: Pending"},
		},
		Next:   &NextScaleDown{Victims: []string{"echo-2 (0 connections)"}, Why: "least connected"},
		Budget: &Budget{Max: 50, Used: 20, Left: 30, Window: metav1.Duration{Duration: time.Minute}},
		Events: []EventLine{{Time: metav1.NewTime(now.Add(-90 * time.Second)), Type: "Normal", Reason: "Seeded", Object: "ScaleGuard/echo", Message: "spec.replicas seeded"}},
	}
	var buf bytes.Buffer
	printWorkload(&buf, w, now)
	out := buf.String()
	for _, want := range []string{
		"ns: HPA echo → ScaleGuard echo → Deployment echo",
		"replicas: HPA wants 3, guard desired 3, applied 3, ready 2; guard Steady",
		"echo-1  30           1.5s       yes      no",
		"echo-3  -            -          Pending  no        no value: Pending",
		"total   30",
		"next victim: echo-2 (0 connections): least connected",
		"30 of 50 disconnects left in the last 1m0s",
		"1m30s ago  Normal  Seeded",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusOptionsValidate(t *testing.T) {
	o := NewStatusOptions(nil, testStreams())
	o.Output, o.Interval, o.Events, o.Metric = "table", 0, -1, ""
	msg := joinErrors(o.Validate([]string{"a", "b"})).Error()
	for _, want := range []string{`--output "table"`, "--interval 0s", "--events -1", "--metric must not be empty", "at most one TARGET"} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors %q lack %q", msg, want)
		}
	}
	if errs := NewStatusOptions(nil, testStreams()).Validate([]string{"echo"}); len(errs) != 0 {
		t.Errorf("defaults: %v", errs)
	}
}
