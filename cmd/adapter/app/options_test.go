package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/wsscale/wsscale/pkg/provider/promsource"
)

func parse(t *testing.T, args ...string) *Options {
	t.Helper()
	o := NewOptions()
	fs := pflag.NewFlagSet("adapter", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return o
}

func TestDefaults(t *testing.T) {
	o := parse(t)
	if errs := o.Validate(); len(errs) > 0 {
		t.Fatalf("defaults invalid: %v", errs)
	}
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scrape.Timeout != 3*time.Second || cfg.Scrape.Interval != 5*time.Second {
		t.Errorf("scrape config %+v", cfg.Scrape)
	}
	if cfg.StaleAfter != 10*time.Second || cfg.Selection.RequireAnnotation || cfg.Selection.Selector.String() != "wsscale.io/scrape=true" {
		t.Errorf("config %+v, selection %+v", cfg, cfg.Selection)
	}
	// websocket_draining is scraped for the ScaleGuard controller (on by default).
	if len(cfg.Metrics) != 3 || cfg.Metrics[0].Name != "websocket_connections" || cfg.Metrics[2].Name != DrainingMetric ||
		cfg.Scrape.Series[0].Name != "websocket_connections_active" {
		t.Errorf("metrics %+v, series %+v", cfg.Metrics, cfg.Scrape.Series)
	}
	if o.MetricsBindAddress != "" {
		t.Errorf("own metrics on plain HTTP at %q by default; they belong on the secure port only", o.MetricsBindAddress)
	}
	if o.Base.SecureServing == nil || o.Base.Authentication == nil || o.Base.Authorization == nil {
		t.Error("serving, authentication and authorization options missing")
	}
}

// TestPrometheusDefaults: with --source=prometheus values are as old as
// Prometheus's scrapes (15-60 s), and pods scraped through ServiceMonitors
// carry no prometheus.io/scrape annotation.
func TestPrometheusDefaults(t *testing.T) {
	o := parse(t, "--source=prometheus", "--prometheus-url=http://prometheus:9090")
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StaleAfter != promsource.DefaultStaleAfter {
		t.Errorf("stale-after %v, want the Prometheus source's default %v", cfg.StaleAfter, promsource.DefaultStaleAfter)
	}
	if cfg.Selection.RequireAnnotation {
		t.Error("the Prometheus source requires the prometheus.io/scrape annotation")
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("metrics:\n- name: x\n  series: y\n  aggregation: median\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("metrics:\n- name: x\n  series: y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "good config file", args: []string{"--metrics-config", good}},
		{name: "prometheus", args: []string{"--source=prometheus", "--prometheus-url=http://prometheus:9090", "--stale-after=1m"}},
		{name: "short interval, default timeout", args: []string{"--scrape-interval=1s"}},
		{name: "selector without annotation", args: []string{"--pod-selector=app in (echo),tier!=db", "--require-scrape-annotation=false"}},
		{
			name: "every problem at once",
			args: []string{"--scrape-interval=1s", "--scrape-timeout=2s", "--scrape-concurrency=0", "--pod-selector=a in (",
				"--metrics-config", bad, "--stale-after=500ms", "--metrics-bind-address=nope", "--apiservice-service=x", "--prometheus-url=http://p"},
			want: []string{
				"--scrape-timeout 2s exceeds --scrape-interval 1s",
				"--scrape-concurrency must be at least 1",
				"--pod-selector",
				"bad.yaml:4: unknown aggregation \"median\"",
				"--stale-after 500ms is shorter than --scrape-interval 1s",
				"--metrics-bind-address",
				"--apiservice-service must be NAMESPACE/NAME",
				"--prometheus-url needs --source=prometheus",
			},
		},
		{name: "missing config file", args: []string{"--metrics-config", filepath.Join(dir, "nope.yaml")}, want: []string{"no such file"}},
		{name: "prometheus without URL", args: []string{"--source=prometheus"}, want: []string{"needs --prometheus-url"}},
		{name: "unknown source", args: []string{"--source=statsd"}, want: []string{"--source must be scrape or prometheus"}},
		{name: "bad log verbosity format", args: []string{"--logging-format=xml"}, want: []string{"format"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := parse(t, tt.args...).Validate()
			var msgs []string
			for _, e := range errs {
				msgs = append(msgs, e.Error())
			}
			all := strings.Join(msgs, "\n")
			if len(tt.want) == 0 && len(errs) > 0 {
				t.Fatalf("unexpected errors:\n%s", all)
			}
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("errors lack %q:\n%s", w, all)
				}
			}
			if len(tt.want) > 0 && len(errs) < len(tt.want) {
				t.Errorf("%d errors for %d problems:\n%s", len(errs), len(tt.want), all)
			}
		})
	}
}
