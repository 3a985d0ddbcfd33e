package policy

import (
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

// defaultWindow keeps ledger entries for display when no budget is set, and is the budget's
// window when the API's default did not apply (an object decoded without defaulting).
const defaultWindow = 10 * time.Minute

// Window returns the budget's rolling window (the API's default when it is unset).
func Window(b *v1alpha1.DisconnectBudget) time.Duration { return window(b) }

// window returns the budget's rolling window.
func window(b *v1alpha1.DisconnectBudget) time.Duration {
	if b == nil || b.Window == nil || b.Window.Duration <= 0 {
		return defaultWindow
	}
	return b.Window.Duration
}

// inWindow reports whether an entry still counts at now: open entries always do, closed ones
// until their time is a whole window ago.
func inWindow(e v1alpha1.LedgerEntry, now time.Time, w time.Duration) bool {
	return e.Open || e.Time.Add(w).After(now)
}

// Used returns the disconnects that count against the budget at now, and how many entries
// hold them.
func Used(ledger []v1alpha1.LedgerEntry, now time.Time, w time.Duration) (used int64, entries int) {
	for _, e := range ledger {
		if inWindow(e, now, w) {
			used += e.Disconnects
			entries++
		}
	}
	return used, entries
}

// Prune drops the entries that no longer count, so that the status stays small.
func Prune(ledger []v1alpha1.LedgerEntry, now time.Time, w time.Duration) []v1alpha1.LedgerEntry {
	var out []v1alpha1.LedgerEntry
	for _, e := range ledger {
		if inWindow(e, now, w) {
			out = append(out, e)
		}
	}
	return out
}

// Fit cuts a step to what the budget allows: it returns how many of the candidates (least
// connected first) may be victims, at most max. When none fits and the window holds no
// reservation, one may go even if it alone exceeds the budget, or one large pod would block
// scale-down forever. When none fits otherwise, retryAt is the earliest time at which the first
// candidate fits as entries leave the window.
func Fit(cands []Candidate, max int, b *v1alpha1.DisconnectBudget, ledger []v1alpha1.LedgerEntry, now time.Time) (n int, retryAt time.Time) {
	if max > len(cands) {
		max = len(cands)
	}
	if max <= 0 {
		return 0, time.Time{}
	}
	if b == nil {
		return max, time.Time{}
	}
	w := window(b)
	used, entries := Used(ledger, now, w)
	var sum int64
	for n < max && sum+cands[n].Connections+used <= b.MaxDisconnects {
		sum += cands[n].Connections
		n++
	}
	if n > 0 {
		return n, time.Time{}
	}
	if entries == 0 {
		return 1, time.Time{}
	}
	// Replay the window's closed entries leaving it, oldest first.
	var closed []v1alpha1.LedgerEntry
	for _, e := range ledger {
		if inWindow(e, now, w) && !e.Open {
			closed = append(closed, e)
		}
	}
	sort.SliceStable(closed, func(i, j int) bool { return closed[i].Time.Before(&closed[j].Time) })
	left := used
	for i, e := range closed {
		left -= e.Disconnects
		if left+cands[0].Connections <= b.MaxDisconnects || i == len(closed)-1 {
			return 0, e.Time.Add(w)
		}
	}
	return 0, time.Time{} // only open entries: the step in progress frees the budget when it ends
}

// Reserve records a new step's reservation at now. The status keeps whole seconds; the time is
// rounded up so that an entry never leaves the window early.
func Reserve(ledger []v1alpha1.LedgerEntry, now time.Time, disconnects int64) []v1alpha1.LedgerEntry {
	return append(ledger, v1alpha1.LedgerEntry{Time: metav1.NewTime(ceil(now, time.Second)), Disconnects: disconnects, Open: true})
}

// ceil rounds t up to a multiple of d.
func ceil(t time.Time, d time.Duration) time.Time {
	if r := t.Truncate(d); !r.Equal(t) {
		return r.Add(d)
	}
	return t
}

// Close corrects the open entry to what the step really disconnected and closes it.
func Close(ledger []v1alpha1.LedgerEntry, disconnects int64) []v1alpha1.LedgerEntry {
	out := append([]v1alpha1.LedgerEntry(nil), ledger...)
	for i := range out {
		if out[i].Open {
			out[i].Open = false
			out[i].Disconnects = disconnects
		}
	}
	return out
}
