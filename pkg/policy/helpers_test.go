package policy

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

// t0 is the tests' "now"; pods are scraped one second before it unless a test says otherwise.
var t0 = time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)

const hash = "cur"

// pod is a serving pod of the current ReplicaSet holding conns, created age before t0.
func pod(name string, conns int64, age time.Duration) Pod {
	return Pod{
		Name: name, UID: types.UID("uid-" + name), Created: t0.Add(-age),
		Phase: corev1.PodRunning, Ready: true, TemplateHash: hash, Scraped: true,
		Metrics: &Metrics{Connections: conns, ScrapeStart: t0.Add(-time.Second)},
	}
}

func with(p Pod, f func(*Pod)) Pod { f(&p); return p }

// victim is p as the guard sees it while draining: marked, unready, seen draining with conns by
// a scrape after the mark.
func victim(p Pod, conns int64) Pod {
	p.Marked, p.CostVisible, p.Ready, p.MarkedBy = true, true, false, "g"
	p.Metrics = &Metrics{Connections: conns, Draining: true, ScrapeStart: t0.Add(-time.Second)}
	return p
}

// input is a guard asking for desired replicas of a Deployment that has live, with default
// scale-down settings.
func input(desired, live int32, pods ...Pod) Input {
	return Input{
		Now: t0, Name: "g", Generation: 1,
		Spec: v1alpha1.ScaleGuardSpec{
			TargetRef: v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "echo"},
			Replicas:  ptr.To(desired),
			ScaleDown: v1alpha1.ScaleDownSpec{
				DrainTimeout:      &metav1.Duration{Duration: 10 * time.Minute},
				EmptyThreshold:    ptr.To[int64](0),
				OnTimeout:         v1alpha1.OnTimeoutProceed,
				MaxVictimsPerStep: ptr.To[int32](1),
			},
		},
		Status: v1alpha1.ScaleGuardStatus{AppliedReplicas: ptr.To(live)},
		Target: Target{
			Found: true, Supported: true, Replicas: live, Generation: 3, ObservedGeneration: 3,
			StatusReplicas: live, UpdatedReplicas: live, TemplateHash: hash, Selector: "app=echo",
		},
		Pods: pods,
	}
}

func budget(maxDisconnects int64, window time.Duration) *v1alpha1.DisconnectBudget {
	return &v1alpha1.DisconnectBudget{MaxDisconnects: maxDisconnects, Window: &metav1.Duration{Duration: window}}
}

// draining returns in with a step From→To in progress over the given victims (their connections
// at mark), marked markAgo before t0, and its reservation in the ledger.
func drainingStep(in Input, from, to int32, markAgo time.Duration, victims ...v1alpha1.Victim) Input {
	mark := t0.Add(-markAgo)
	var reserved int64
	for _, v := range victims {
		reserved += v.ConnectionsAtMark
	}
	in.Status.Step = &v1alpha1.ScaleDownStep{
		From: from, To: to, MarkTime: metav1.NewMicroTime(mark),
		Deadline: metav1.NewTime(mark.Add(10 * time.Minute)), Victims: victims,
	}
	in.Status.Ledger = []v1alpha1.LedgerEntry{{Time: metav1.NewTime(mark), Disconnects: reserved, Open: true}}
	return in
}

func vic(name string, atMark int64) v1alpha1.Victim {
	return v1alpha1.Victim{Name: name, UID: types.UID("uid-" + name), ConnectionsAtMark: atMark}
}

func names(refs []PodRef) []string {
	out := []string{}
	for _, r := range refs {
		out = append(out, r.Name)
	}
	return out
}

func reasons(evs []Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.Reason)
	}
	return out
}

func cond(st v1alpha1.ScaleGuardStatus, typ string) string {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return fmt.Sprintf("%s/%s", c.Status, c.Reason)
		}
	}
	return "absent"
}
