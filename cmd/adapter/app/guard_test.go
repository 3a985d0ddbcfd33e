package app

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

func TestGuardOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*GuardOptions)
		want string
	}{
		{name: "defaults", mod: func(*GuardOptions) {}},
		{name: "no lease name", mod: func(o *GuardOptions) { o.LeaseName = "" }, want: "--leader-election-lease"},
		{name: "renew deadline beyond the lease", mod: func(o *GuardOptions) { o.RenewDeadline = time.Minute }, want: "leader election needs"},
		{name: "no retry period", mod: func(o *GuardOptions) { o.RetryPeriod = 0 }, want: "leader election needs"},
		{name: "no election, nothing to check", mod: func(o *GuardOptions) { o.LeaderElect, o.LeaseName = false, "" }},
		{name: "guard off, nothing to check", mod: func(o *GuardOptions) { o.Enabled, o.RetryPeriod = false, 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewGuardOptions()
			tt.mod(o)
			errs := o.Validate()
			if tt.want == "" && len(errs) > 0 || tt.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.want)) {
				t.Errorf("Validate() = %v, want %q", errs, tt.want)
			}
		})
	}
}

func TestGuardFlagsDisable(t *testing.T) {
	o := parse(t, "--scale-guard=false")
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range cfg.Metrics {
		if m.Name == DrainingMetric {
			t.Errorf("websocket_draining scraped with --scale-guard=false")
		}
	}
}

// fakeSource serves fixed points per metric index.
type fakeSource map[int][]store.Point

func (f fakeSource) Lookup(_ context.Context, metric int, _ string, pods []string) ([]store.Point, error) {
	return f[metric][:len(pods)], nil
}

func TestSourceMetrics(t *testing.T) {
	metrics := withGuardMetrics(NewGuardOptions(), metricsconfig.DefaultMetrics())
	at := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	src := fakeSource{
		0: {{Value: 12, Time: at, OK: true}, {Value: 3, Time: at, OK: true}, {}},
		2: {{Value: 1, Time: at, OK: true}, {}, {}},
	}
	sm, err := newSourceMetrics(src, &pods.Selection{Selector: labels.Everything()}, metrics)
	if err != nil {
		t.Fatal(err)
	}
	got, err := sm.Lookup(context.Background(), "ns", []string{"draining", "no-gauge", "stale"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] == nil || got[0].Connections != 12 || !got[0].Draining || !got[0].ScrapeStart.Equal(at) {
		t.Errorf("draining pod: %+v", got[0])
	}
	if got[1] == nil || got[1].Connections != 3 || got[1].Draining {
		t.Errorf("pod without the draining gauge: %+v", got[1])
	}
	if got[2] != nil {
		t.Errorf("a pod without a fresh value got %+v, want none (never 0)", got[2])
	}

	pending := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}
	unannotated := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.18.1.9"}}
	sm.selection.RequireAnnotation = true
	if !sm.Scraped(pending) || sm.Scraped(unannotated) {
		t.Errorf("Scraped(pending) = %v, Scraped(unannotated running) = %v; want true, false", sm.Scraped(pending), sm.Scraped(unannotated))
	}

	if _, err := newSourceMetrics(src, nil, metricsconfig.DefaultMetrics()); err == nil {
		t.Errorf("newSourceMetrics without websocket_draining: no error")
	}
}

// TestGuardCacheSeesWhatTheProviderLeavesOut checks why the ScaleGuard controller keeps a pod
// watch of its own (see guardCacheOptions): a Pending pod of a guarded Deployment and a running
// pod outside the scrape selection are both left out of the provider's watch by the API server,
// and the controller must see both.
func TestGuardCacheSeesWhatTheProviderLeavesOut(t *testing.T) {
	cfg, err := parse(t).Config()
	if err != nil {
		t.Fatal(err)
	}
	pending := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{"app": "web", pods.ScrapeLabel: "true"}},
		Status: corev1.PodStatus{Phase: corev1.PodPending}}
	unlabelled := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-2", Labels: map[string]string{"app": "web"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.18.0.9"}}
	watchedByProvider := func(p *corev1.Pod) bool {
		return pods.RunningPods.Matches(fields.Set{"status.phase": string(p.Status.Phase)}) && cfg.Selection.Selector.Matches(labels.Set(p.Labels))
	}
	for _, p := range []*corev1.Pod{pending, unlabelled} {
		if watchedByProvider(p) {
			t.Errorf("pod %s is in the provider's watch; the guard could share it", p.Name)
		}
	}

	// The controller's cache has no selector: it receives both.
	opts := guardCacheOptions("")
	if opts.DefaultLabelSelector != nil || opts.DefaultFieldSelector != nil {
		t.Errorf("guard cache selects %v / %v: it would miss pods of a guarded Deployment", opts.DefaultLabelSelector, opts.DefaultFieldSelector)
	}
	for obj, byObject := range opts.ByObject {
		if _, isPod := obj.(*corev1.Pod); isPod && (byObject.Label != nil || byObject.Field != nil) {
			t.Errorf("guard cache selects pods by %v / %v: it would miss pods of a guarded Deployment", byObject.Label, byObject.Field)
		}
	}
	if got := guardCacheOptions("ws").DefaultNamespaces; len(got) != 1 {
		t.Errorf("guard cache namespaces %v, want only ws", got)
	}
	// What the controller makes of them: the Pending pod holds as Pending (it cannot be scraped
	// by anyone yet), the unlabelled one is reported as not scraped.
	sm, err := newSourceMetrics(fakeSource{}, cfg.Selection, cfg.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	if !sm.Scraped(pending) || sm.Scraped(unlabelled) {
		t.Errorf("Scraped(pending) = %v, Scraped(unlabelled) = %v; want true, false", sm.Scraped(pending), sm.Scraped(unlabelled))
	}
}
