package policy

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

// Candidate is a pod that may be chosen as a victim, with the connections it holds now.
type Candidate struct {
	Pod         Pod
	Connections int64
}

// Blocker says why a scale-down cannot go ahead now.
type Blocker struct {
	// Reason is one of the ScaleDownBlocked reasons of the API.
	Reason string
	// Message says which pods or which state.
	Message string
}

// Candidates returns the pods that may be victims, least connections first and, among equals,
// the youngest first: only Running, Ready, non-terminating, unmarked pods of the target's current
// ReplicaSet. It returns a blocker instead when a pod of the target has no fresh value (it could
// hold any number of clients) or is not scraped at all.
func Candidates(pods []Pod, templateHash string) ([]Candidate, *Blocker) {
	var notScraped, noValue []string
	var out []Candidate
	for _, p := range pods {
		if p.Terminating {
			continue
		}
		if !p.Scraped {
			notScraped = append(notScraped, p.Name)
			continue
		}
		if p.Metrics == nil {
			noValue = append(noValue, p.Name)
			continue
		}
		if p.Phase != corev1.PodRunning || !p.Ready || p.Marked || templateHash == "" || p.TemplateHash != templateHash {
			continue
		}
		out = append(out, Candidate{Pod: p, Connections: p.Metrics.Connections})
	}
	if len(notScraped) > 0 {
		return nil, &Blocker{Reason: v1alpha1.ReasonTargetNotScraped, Message: "the adapter does not scrape " + list(notScraped)}
	}
	if len(noValue) > 0 {
		return nil, &Blocker{Reason: v1alpha1.ReasonMetricsUnavailable, Message: "no fresh connection count for " + list(noValue)}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Connections != b.Connections {
			return a.Connections < b.Connections
		}
		if !a.Pod.Created.Equal(b.Pod.Created) {
			return a.Pod.Created.After(b.Pod.Created)
		}
		return a.Pod.Name < b.Pod.Name
	})
	return out, nil
}

// PlanBlocker returns why no new step may start now, or nil: the guard is paused, the target is
// rolling out, or a pod of the target is Pending, terminating or not ready. Missing metrics are
// Candidates' to report.
func PlanBlocker(in Input) *Blocker {
	if in.Spec.Paused {
		return &Blocker{Reason: v1alpha1.ReasonPaused, Message: "spec.paused is set"}
	}
	if msg := rollout(in.Target, in.Pods); msg != "" {
		return &Blocker{Reason: v1alpha1.ReasonRolloutInProgress, Message: msg}
	}
	if msg := unsettled(in.Pods, nil); msg != "" {
		return &Blocker{Reason: v1alpha1.ReasonPodsNotReady, Message: msg}
	}
	return nil
}

// rollout describes a rollout in progress of the target, or returns "".
func rollout(t Target, pods []Pod) string {
	if t.ObservedGeneration < t.Generation {
		return fmt.Sprintf("the Deployment's generation %d is not observed yet (%d)", t.Generation, t.ObservedGeneration)
	}
	if t.TemplateHash == "" {
		return "the Deployment's current ReplicaSet is not known yet"
	}
	if t.UpdatedReplicas < t.StatusReplicas {
		return fmt.Sprintf("%d of %d pods are updated", t.UpdatedReplicas, t.StatusReplicas)
	}
	var old []string
	for _, p := range pods {
		if !p.Terminating && p.TemplateHash != t.TemplateHash {
			old = append(old, p.Name)
		}
	}
	if len(old) > 0 {
		return "pods of an older ReplicaSet: " + list(old)
	}
	return ""
}

// unsettled describes the pods, other than the victims, that are Pending, terminating, not
// Running or not ready, or returns "".
func unsettled(pods []Pod, victims map[string]bool) string {
	var bad []string
	for _, p := range pods {
		if victims[string(p.UID)] {
			continue
		}
		switch {
		case p.Terminating:
			bad = append(bad, p.Name+" (terminating)")
		case p.Phase != corev1.PodRunning:
			bad = append(bad, fmt.Sprintf("%s (%s)", p.Name, p.Phase))
		case !p.Ready:
			bad = append(bad, p.Name+" (not ready)")
		}
	}
	if len(bad) > 0 {
		return "pods not settled: " + list(bad)
	}
	return ""
}

func list(names []string) string {
	const most = 5
	if len(names) > most {
		return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
	}
	return strings.Join(names, ", ")
}
