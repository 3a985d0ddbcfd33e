package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
)

// Step outcomes, the values of the outcome label of wsscale_guard_steps_total.
const (
	OutcomeComplete  = "complete"
	OutcomeReleased  = "released"
	OutcomeLost      = "victim_lost"
	OutcomeWrongPod  = "wrong_pod_removed"
	labelNamespace   = "namespace"
	labelScaleGuard  = "scaleguard"
	labelReason      = "reason"
	labelOutcome     = "outcome"
	defaultBudgetWin = 10 * time.Minute
)

// Instruments are the controller's own metrics, wsscale_guard_*.
type Instruments struct {
	steps       *prometheus.CounterVec
	victims     *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	budgetUsed  *prometheus.GaugeVec
	blocked     *prometheus.GaugeVec
}

// NewInstruments registers the controller's metrics with reg.
func NewInstruments(reg prometheus.Registerer) (*Instruments, error) {
	guard := []string{labelNamespace, labelScaleGuard}
	i := &Instruments{
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsscale_guard_steps_total", Help: "Scale-down steps ended, by outcome.",
		}, append(guard, labelOutcome)),
		victims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsscale_guard_victims_total", Help: "Pods marked as victims of scale-down steps.",
		}, guard),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsscale_guard_connections_disconnected_total", Help: "Client connections that ended scale-down steps disconnected, as recorded in the ledger.",
		}, guard),
		budgetUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wsscale_guard_budget_used", Help: "Disconnects counted against the disconnect budget in its current window.",
		}, guard),
		blocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wsscale_guard_blocked", Help: "1 while a scale-down waits, labelled with the reason (ScaleDownBlocked condition).",
		}, append(guard, labelReason)),
	}
	for _, c := range []prometheus.Collector{i.steps, i.victims, i.disconnects, i.budgetUsed, i.blocked} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return i, nil
}

// observe records one carried-out decision: old is the status before it.
func (i *Instruments) observe(g *v1alpha1.ScaleGuard, old v1alpha1.ScaleGuardStatus, d policy.Decision, now time.Time) {
	if i == nil {
		return
	}
	ns, name := g.Namespace, g.Name
	for _, e := range d.Events {
		switch e.Reason {
		case policy.EventStepComplete:
			i.steps.WithLabelValues(ns, name, OutcomeComplete).Inc()
		case policy.EventVictimLost:
			i.steps.WithLabelValues(ns, name, OutcomeLost).Inc()
		case policy.EventWrongPodRemoved:
			i.steps.WithLabelValues(ns, name, OutcomeWrongPod).Inc()
		case policy.EventVictimsReleased:
			i.steps.WithLabelValues(ns, name, OutcomeReleased).Inc()
		}
	}
	if old.Step == nil && d.Status.Step != nil {
		i.victims.WithLabelValues(ns, name).Add(float64(len(d.Status.Step.Victims)))
	}
	// A ledger entry that closed: what the step really disconnected.
	wasOpen := false
	for _, e := range old.Ledger {
		wasOpen = wasOpen || e.Open
	}
	if wasOpen {
		open := false
		for _, e := range d.Status.Ledger {
			open = open || e.Open
		}
		if !open {
			for _, e := range d.Status.Ledger {
				if isClosedFrom(old.Ledger, e) {
					i.disconnects.WithLabelValues(ns, name).Add(float64(e.Disconnects))
				}
			}
		}
	}
	w := defaultBudgetWin
	if b := g.Spec.ScaleDown.DisconnectBudget; b != nil && b.Window != nil && b.Window.Duration > 0 {
		w = b.Window.Duration
	}
	used, _ := policy.Used(d.Status.Ledger, now, w)
	i.budgetUsed.WithLabelValues(ns, name).Set(float64(used))
	i.blocked.DeletePartialMatch(prometheus.Labels{labelNamespace: ns, labelScaleGuard: name})
	if c := meta.FindStatusCondition(d.Status.Conditions, v1alpha1.ConditionScaleDownBlocked); c != nil && c.Status == metav1.ConditionTrue {
		i.blocked.WithLabelValues(ns, name, c.Reason).Set(1)
	}
}

// isClosedFrom reports whether e is the closed form of an entry open in old.
func isClosedFrom(old []v1alpha1.LedgerEntry, e v1alpha1.LedgerEntry) bool {
	if e.Open {
		return false
	}
	for _, o := range old {
		if o.Open && o.Time.Equal(&e.Time) {
			return true
		}
	}
	return false
}

// forget drops a deleted guard's series.
func (i *Instruments) forget(g *v1alpha1.ScaleGuard) {
	if i == nil {
		return
	}
	l := prometheus.Labels{labelNamespace: g.Namespace, labelScaleGuard: g.Name}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{i.steps, i.victims, i.disconnects, i.budgetUsed, i.blocked} {
		v.DeletePartialMatch(l)
	}
}
