package policy

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

func entry(ago time.Duration, n int64, open bool) v1alpha1.LedgerEntry {
	return v1alpha1.LedgerEntry{Time: metav1.NewTime(t0.Add(-ago)), Disconnects: n, Open: open}
}

func cands(conns ...int64) []Candidate {
	var out []Candidate
	for _, c := range conns {
		out = append(out, Candidate{Connections: c})
	}
	return out
}

func TestFit(t *testing.T) {
	tests := []struct {
		name    string
		cands   []Candidate
		max     int
		budget  *v1alpha1.DisconnectBudget
		ledger  []v1alpha1.LedgerEntry
		want    int
		retryAt time.Time
	}{
		{name: "no budget: up to max", cands: cands(100, 200, 300), max: 2, want: 2},
		{name: "max beyond the candidates", cands: cands(1), max: 3, want: 1},
		{name: "all fit", cands: cands(10, 20), max: 2, budget: budget(30, time.Minute), want: 2},
		{name: "the step is cut to the victims that fit", cands: cands(10, 20, 30), max: 3, budget: budget(35, time.Minute), want: 2},
		{name: "reservations in the window count", cands: cands(10, 20), max: 2, budget: budget(35, time.Minute),
			ledger: []v1alpha1.LedgerEntry{entry(30*time.Second, 20, false)}, want: 1},
		{name: "an open reservation counts whatever its age", cands: cands(10), max: 1, budget: budget(35, time.Minute),
			ledger: []v1alpha1.LedgerEntry{entry(time.Hour, 30, true)}, want: 0},
		{name: "entries older than the window do not count", cands: cands(10, 20), max: 2, budget: budget(35, time.Minute),
			ledger: []v1alpha1.LedgerEntry{entry(61*time.Second, 1000, false)}, want: 2},
		{name: "an entry exactly one window old has left it", cands: cands(30), max: 1, budget: budget(35, time.Minute),
			ledger: []v1alpha1.LedgerEntry{entry(time.Minute, 30, false)}, want: 1},
		{name: "one pod larger than the budget goes when the window is empty", cands: cands(2000, 3000), max: 2, budget: budget(100, time.Minute), want: 1},
		{name: "a zero budget still lets one pod go per empty window", cands: cands(5, 5), max: 2, budget: budget(0, time.Minute), want: 1},
		{name: "a zero-connection pod fits a zero budget", cands: cands(0, 0, 5), max: 3, budget: budget(0, time.Minute), want: 2},
		{name: "one large pod waits while the window holds a reservation", cands: cands(2000), max: 1, budget: budget(100, time.Minute),
			ledger: []v1alpha1.LedgerEntry{entry(50*time.Second, 1, false)}, want: 0, retryAt: t0.Add(10 * time.Second)},
		{name: "retry when enough has left the window", cands: cands(50), max: 1, budget: budget(100, time.Minute),
			ledger: []v1alpha1.LedgerEntry{entry(50*time.Second, 40, false), entry(40*time.Second, 40, false), entry(10*time.Second, 40, false)},
			want:   0, retryAt: t0.Add(20 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, retryAt := Fit(tt.cands, tt.max, tt.budget, tt.ledger, t0)
			if n != tt.want || !retryAt.Equal(tt.retryAt) {
				t.Errorf("Fit = %d, retry at %v; want %d, %v", n, retryAt, tt.want, tt.retryAt)
			}
		})
	}
}

func TestLedger(t *testing.T) {
	l := Reserve(nil, t0.Add(300*time.Millisecond), 70)
	if got := l[0].Time.Time; !got.Equal(t0.Add(time.Second)) {
		t.Errorf("reservation at %v, want rounded up to %v (never leave the window early)", got, t0.Add(time.Second))
	}
	l = append([]v1alpha1.LedgerEntry{entry(2*time.Minute, 5, false)}, l...)
	if used, n := Used(l, t0.Add(time.Second), time.Minute); used != 70 || n != 1 {
		t.Errorf("Used = %d in %d entries, want 70 in 1", used, n)
	}
	l = Close(l, 64)
	if l[1].Open || l[1].Disconnects != 64 || l[0].Disconnects != 5 {
		t.Errorf("Close: %+v", l)
	}
	if p := Prune(l, t0.Add(time.Second), time.Minute); len(p) != 1 || p[0].Disconnects != 64 {
		t.Errorf("Prune: %+v", p)
	}
	if p := Prune(l, t0.Add(62*time.Second), time.Minute); len(p) != 0 {
		t.Errorf("Prune after the window: %+v", p)
	}
}
