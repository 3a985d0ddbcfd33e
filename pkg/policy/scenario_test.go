package policy

import (
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

// world is a toy cluster for the scenario: a Deployment whose ReplicaSet removes the cheapest
// pods first, servers that drain within a second of being marked, and a scrape every second.
type world struct {
	now      time.Time
	replicas int32
	pods     []Pod
	status   v1alpha1.ScaleGuardStatus
	// cut records every client disconnected by a drain or a removal, with its time.
	cut []disconnect
	// removed lists the pods deleted, in order.
	removed []string
}

type disconnect struct {
	at time.Time
	n  int64
}

func (w *world) input(spec v1alpha1.ScaleGuardSpec) Input {
	in := input(0, w.replicas, w.pods...)
	in.Now = w.now
	in.Spec = spec
	in.Status = w.status
	return in
}

// apply carries out a decision the way the controller does.
func (w *world) apply(d Decision) {
	w.status = d.Status
	for _, r := range d.Unmark {
		for i := range w.pods {
			if w.pods[i].UID == r.UID {
				w.pods[i].Marked, w.pods[i].CostVisible, w.pods[i].MarkedBy = false, false, ""
			}
		}
	}
	for _, r := range d.Mark {
		for i := range w.pods {
			if w.pods[i].UID == r.UID && !w.pods[i].Marked {
				w.pods[i].Marked, w.pods[i].CostVisible, w.pods[i].MarkedBy = true, true, "g"
			}
		}
	}
	if d.Apply != nil {
		w.replicas = *d.Apply
	}
	// The ReplicaSet deletes marked (negative cost) pods first.
	sort.SliceStable(w.pods, func(i, j int) bool { return w.pods[i].Marked && !w.pods[j].Marked })
	for int32(len(w.pods)) > w.replicas {
		p := w.pods[0]
		w.pods = w.pods[1:]
		w.removed = append(w.removed, p.Name)
		if p.Metrics.Connections > 0 {
			w.cut = append(w.cut, disconnect{w.now, p.Metrics.Connections})
		}
	}
}

// tick advances a second: marked servers close their clients and fail readiness, unmarked ones
// serve again, and every pod is scraped.
func (w *world) tick() {
	w.now = w.now.Add(time.Second)
	for i := range w.pods {
		p := &w.pods[i]
		m := *p.Metrics
		m.ScrapeStart = w.now.Add(-500 * time.Millisecond)
		m.Draining = p.Marked
		if p.Marked && m.Connections > 0 {
			w.cut = append(w.cut, disconnect{w.now, m.Connections})
			m.Connections = 0
		}
		p.Ready = !p.Marked
		p.Metrics = &m
	}
}

// TestScenarioUnevenPods drives the policy through a whole scale-down of six pods with uneven
// connections (2,000 / 1,500 / 40 / 30 / 0 / 0) to two, under a disconnect budget: the least
// connected pods go, the budget holds in every window, and the Deployment ends at the target.
func TestScenarioUnevenPods(t *testing.T) {
	const maxDisconnects, window = 50, 5 * time.Minute
	w := &world{now: t0, replicas: 6, pods: six()}
	spec := input(2, 6).Spec
	spec.ScaleDown.MaxVictimsPerStep = ptr.To[int32](2)
	spec.ScaleDown.DisconnectBudget = budget(maxDisconnects, window)
	spec.ScaleDown.DrainTimeout.Duration = time.Minute
	w.status.AppliedReplicas = ptr.To[int32](6)

	steps := 0
	for i := 0; i < 3600 && (w.replicas != 2 || w.status.Step != nil); i++ {
		d := Decide(w.input(spec))
		for _, e := range d.Events {
			if e.Type == corev1.EventTypeWarning {
				t.Errorf("%v: warning %s: %s", w.now, e.Reason, e.Message)
			}
			if e.Reason == EventVictimsMarked {
				steps++
			}
		}
		w.apply(d)
		w.tick()
	}
	if w.replicas != 2 || len(w.pods) != 2 {
		t.Fatalf("replicas %d, pods %d after %v; status %+v", w.replicas, len(w.pods), w.now.Sub(t0), w.status)
	}
	want := map[string]bool{"p0-young": true, "p0-old": true, "p30": true, "p40": true}
	for _, name := range w.removed {
		if !want[name] {
			t.Errorf("removed %s; want only the least connected: %v", name, w.removed)
		}
	}
	// The disconnects within any window never exceed the budget.
	for i, a := range w.cut {
		var sum int64
		for _, b := range w.cut[i:] {
			if b.at.Sub(a.at) < window {
				sum += b.n
			}
		}
		if sum > maxDisconnects {
			t.Errorf("%d disconnects in the window from %v, budget %d: %+v", sum, a.at, maxDisconnects, w.cut)
		}
	}
	// 0+0 in one step, then 30 alone (30+40 exceeds 50), then 40 once 30 has left the window.
	if steps != 3 {
		t.Errorf("%d steps, want 3", steps)
	}
	if took := w.now.Sub(t0); took < window || took > window+time.Minute {
		t.Errorf("took %v, want just over one window (%v)", took, window)
	}
	if l := w.status.Ledger; len(l) == 0 || l[len(l)-1].Open {
		t.Errorf("ledger %+v", l)
	}
}
