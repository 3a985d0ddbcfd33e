package policy

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

func TestCandidates(t *testing.T) {
	tests := []struct {
		name    string
		pods    []Pod
		want    []string
		blocker string
	}{
		{
			name: "least connections first",
			pods: []Pod{pod("a", 2000, time.Hour), pod("b", 40, time.Hour), pod("c", 0, time.Hour), pod("d", 1500, time.Hour)},
			want: []string{"c", "b", "d", "a"},
		},
		{
			name: "ties go to the youngest, then by name",
			pods: []Pod{pod("old", 5, 3*time.Hour), pod("young", 5, time.Minute), pod("mid", 5, time.Hour), pod("mid2", 5, time.Hour)},
			want: []string{"young", "mid", "mid2", "old"},
		},
		{
			name: "only Running, Ready, non-terminating, unmarked pods of the current ReplicaSet",
			pods: []Pod{
				pod("ok", 9, time.Hour),
				with(pod("unready", 0, time.Hour), func(p *Pod) { p.Ready = false }),
				with(pod("terminating", 0, time.Hour), func(p *Pod) { p.Terminating = true }),
				with(pod("old-rs", 0, time.Hour), func(p *Pod) { p.TemplateHash = "old" }),
				with(pod("marked", 0, time.Hour), func(p *Pod) { p.Marked = true }),
				with(pod("succeeded", 0, time.Hour), func(p *Pod) { p.Phase = corev1.PodSucceeded }),
			},
			want: []string{"ok"},
		},
		{
			name:    "a pod without a fresh value blocks: it could hold any number of clients",
			pods:    []Pod{pod("a", 0, time.Hour), with(pod("stale", 0, time.Hour), func(p *Pod) { p.Metrics = nil })},
			blocker: v1alpha1.ReasonMetricsUnavailable,
		},
		{
			name:    "a pod the adapter does not scrape blocks",
			pods:    []Pod{pod("a", 0, time.Hour), with(pod("unscraped", 0, time.Hour), func(p *Pod) { p.Scraped = false })},
			blocker: v1alpha1.ReasonTargetNotScraped,
		},
		{
			name: "a terminating pod without a value does not block",
			pods: []Pod{pod("a", 3, time.Hour), with(pod("going", 0, time.Hour), func(p *Pod) { p.Terminating, p.Metrics = true, nil })},
			want: []string{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, b := Candidates(tt.pods, hash)
			if tt.blocker != "" {
				if b == nil || b.Reason != tt.blocker {
					t.Fatalf("blocker = %+v, want %s", b, tt.blocker)
				}
				return
			}
			if b != nil {
				t.Fatalf("unexpected blocker %+v", b)
			}
			var names []string
			for _, c := range got {
				names = append(names, c.Pod.Name)
			}
			if !reflect.DeepEqual(names, tt.want) {
				t.Errorf("candidates = %v, want %v", names, tt.want)
			}
		})
	}
}

func TestPlanBlocker(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Input)
		want string
	}{
		{name: "nothing blocks", mod: func(*Input) {}},
		{name: "paused", mod: func(in *Input) { in.Spec.Paused = true }, want: v1alpha1.ReasonPaused},
		{name: "generation not observed", mod: func(in *Input) { in.Target.Generation++ }, want: v1alpha1.ReasonRolloutInProgress},
		{name: "not every pod updated", mod: func(in *Input) { in.Target.UpdatedReplicas-- }, want: v1alpha1.ReasonRolloutInProgress},
		{name: "current ReplicaSet unknown", mod: func(in *Input) { in.Target.TemplateHash = "" }, want: v1alpha1.ReasonRolloutInProgress},
		{name: "a pod of an older ReplicaSet", mod: func(in *Input) { in.Pods[1].TemplateHash = "old" }, want: v1alpha1.ReasonRolloutInProgress},
		{name: "a Pending pod", mod: func(in *Input) { in.Pods[1].Phase = corev1.PodPending; in.Pods[1].Ready = false }, want: v1alpha1.ReasonPodsNotReady},
		{name: "a terminating pod", mod: func(in *Input) { in.Pods[1].Terminating = true }, want: v1alpha1.ReasonPodsNotReady},
		{name: "an unready pod", mod: func(in *Input) { in.Pods[1].Ready = false }, want: v1alpha1.ReasonPodsNotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := input(2, 3, pod("a", 1, time.Hour), pod("b", 2, time.Hour), pod("c", 3, time.Hour))
			tt.mod(&in)
			b := PlanBlocker(in)
			got := ""
			if b != nil {
				got = b.Reason
			}
			if got != tt.want {
				t.Errorf("blocker = %+v, want %q", b, tt.want)
			}
		})
	}
}
