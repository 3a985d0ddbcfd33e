package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Check outcomes.
const (
	Pass = "pass"
	Warn = "warn"
	Fail = "fail"
)

// Check is one finding of the doctor: what was checked, the outcome, what shows it, and what to do.
type Check struct {
	// Area groups the checks: apiservice, metric, hpa, pods, guard, drain, exposure, probe.
	Area string `json:"area"`
	// Object is what was checked, e.g. "APIService v1beta2.custom.metrics.k8s.io".
	Object   string `json:"object"`
	Status   string `json:"status"`
	Evidence string `json:"evidence"`
	Fix      string `json:"fix,omitempty"`
}

// DoctorOptions are the flags of `kubectl wsscale doctor`.
type DoctorOptions struct {
	Output         string
	Metric         string
	ScrapeSelector string
	AllNamespaces  bool
	// PingMargin: a proxy's idle timeout must be at least the ping interval times this.
	PingMargin float64
	// CertExpiryWarning: a serving certificate that expires sooner is a warning.
	CertExpiryWarning time.Duration
	Probe             string
	ProbeDuration     time.Duration

	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	now     func() time.Time
}

// NewDoctorOptions returns the defaults.
func NewDoctorOptions(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *DoctorOptions {
	return &DoctorOptions{Output: "text", Metric: "websocket_connections", ScrapeSelector: "wsscale.io/scrape=true",
		PingMargin: 2, CertExpiryWarning: 30 * 24 * time.Hour, ProbeDuration: 70 * time.Second,
		flags: flags, streams: streams, now: time.Now}
}

// AddFlags registers the flags.
func (o *DoctorOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.Output, "output", "o", o.Output, "Output format: text or json.")
	fs.StringVar(&o.Metric, "metric", o.Metric, "The custom metric the HPAs scale on.")
	fs.StringVar(&o.ScrapeSelector, "scrape-selector", o.ScrapeSelector, "The adapter's pod selection (its --pod-selector).")
	fs.BoolVarP(&o.AllNamespaces, "all-namespaces", "A", o.AllNamespaces, "Check the workloads of every namespace.")
	fs.Float64Var(&o.PingMargin, "ping-margin", o.PingMargin, "A proxy's idle or read timeout must be at least the server's ping interval times this.")
	fs.DurationVar(&o.CertExpiryWarning, "cert-expiry-warning", o.CertExpiryWarning, "Warn when the adapter's serving certificate expires within this.")
	fs.StringVar(&o.Probe, "probe", o.Probe, "ws:// or wss:// URL: hold an idle WebSocket through the real path for --probe-duration and report who closed it and when.")
	fs.DurationVar(&o.ProbeDuration, "probe-duration", o.ProbeDuration, "How long --probe holds the connection (past 60 s catches the common proxy defaults).")
}

// Validate returns every problem of the flags.
func (o *DoctorOptions) Validate(args []string) []error {
	var errs []error
	switch o.Output {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--output %q: want text or json", o.Output))
	}
	if o.PingMargin < 1 {
		errs = append(errs, fmt.Errorf("--ping-margin %v: must be at least 1", o.PingMargin))
	}
	if o.Probe != "" {
		if err := validateProbeURL(o.Probe); err != nil {
			errs = append(errs, err)
		}
		if o.ProbeDuration <= 0 {
			errs = append(errs, fmt.Errorf("--probe-duration %v: must be positive", o.ProbeDuration))
		}
	}
	if len(args) > 0 {
		errs = append(errs, fmt.Errorf("doctor takes no arguments, got %s", strings.Join(args, " ")))
	}
	return errs
}

func newDoctorCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	return newSubcommand("doctor", "Check the autoscaling setup against the live cluster: pass, warn or fail, with evidence and fix",
		`doctor checks the custom metrics APIServices (owner, availability, TLS), the metric and its
values, every HPA on it, the pods the HPA selects but the adapter does not track (and why), the
ScaleGuards, the drain safety of each workload's pods, and the exposure path found in the namespace
(Ingress NGINX, HAProxy, Traefik, Gateway API, Istio, Linkerd, cloud load balancers). Each check
prints pass, warn or fail with its evidence and the fix. The exit code is 1 when any check fails.`,
		NewDoctorOptions(flags, streams))
}

// Run runs every check, prints them, and returns an error when one failed. It takes no arguments
// (Validate refuses them).
func (o *DoctorOptions) Run(ctx context.Context, _ []string) error {
	c, err := newClients(o.flags)
	if err != nil {
		return err
	}
	checks, err := o.runChecks(ctx, c)
	if err != nil {
		return err
	}
	if err := o.print(o.streams.Out, checks); err != nil {
		return err
	}
	var failed int
	for _, ch := range checks {
		if ch.Status == Fail {
			failed++
		}
	}
	if failed > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of %d checks failed", failed, len(checks))}
	}
	return nil
}

// runChecks runs the checks in order: the API first, then each workload, then the probe.
func (o *DoctorOptions) runChecks(ctx context.Context, c *clients) ([]Check, error) {
	d := &doctor{o: o, c: c, now: o.now()}
	d.checkAPIServices(ctx)
	d.checkMetricListed(ctx)
	ws, err := gather(ctx, c, gatherOptions{metric: o.Metric, scrapeLabel: o.ScrapeSelector, now: o.now, allNamespaces: o.AllNamespaces})
	if err != nil {
		return nil, err
	}
	if err := d.checkHPAs(ctx); err != nil {
		return nil, err
	}
	for _, w := range ws {
		d.checkValues(w)
		d.checkUntracked(ctx, w)
		d.checkDrainSafety(w)
	}
	if err := d.checkGuards(ctx); err != nil {
		return nil, err
	}
	if err := d.checkExposure(ctx, ws); err != nil {
		return nil, err
	}
	if o.Probe != "" {
		d.add(probe(ctx, o.Probe, o.ProbeDuration))
	}
	return d.checks, nil
}

// doctor collects the checks of one run.
type doctor struct {
	o      *DoctorOptions
	c      *clients
	now    time.Time
	checks []Check
	// served are the metric names the custom metrics API lists for pods, nil when it could not
	// be read.
	served map[string]bool
	// adapter is the Service the custom metrics APIService points at, nil when none was found.
	adapter *adapterService
}

// adapterService is the adapter's Service as the APIService names it: the adapter's pods run the
// ScaleGuard controller too.
type adapterService struct {
	namespace, name string
	// selector selects the Service's pods, "" when it has none.
	selector string
	// running counts its pods that run and are not terminating.
	running int
}

func (d *doctor) add(c Check) { d.checks = append(d.checks, c) }

func (d *doctor) namespace() string {
	if d.o.AllNamespaces {
		return ""
	}
	return d.c.namespace
}

func (o *DoctorOptions) print(out io.Writer, checks []Check) error {
	if o.Output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if checks == nil {
			checks = []Check{}
		}
		return enc.Encode(struct {
			Checks []Check `json:"checks"`
		}{checks})
	}
	counts := map[string]int{}
	for _, ch := range checks {
		counts[ch.Status]++
		fmt.Fprintf(out, "%-4s  %-9s %s\n", strings.ToUpper(ch.Status), ch.Area, ch.Object)
		fmt.Fprintf(out, "      %s\n", ch.Evidence)
		if ch.Fix != "" && ch.Status != Pass {
			fmt.Fprintf(out, "      fix: %s\n", ch.Fix)
		}
	}
	fmt.Fprintf(out, "\n%d checks: %d pass, %d warn, %d fail\n", len(checks), counts[Pass], counts[Warn], counts[Fail])
	return nil
}
