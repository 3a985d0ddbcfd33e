package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"
)

// clearScreen moves the cursor home and clears the terminal: -w redraws in place.
const clearScreen = "\033[H\033[2J"

// StatusOptions are the flags of `kubectl wsscale status`.
type StatusOptions struct {
	Output         string
	Watch          bool
	Interval       time.Duration
	Metric         string
	ScrapeSelector string
	Events         int
	AllNamespaces  bool

	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	now     func() time.Time
}

// NewStatusOptions returns the defaults.
func NewStatusOptions(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *StatusOptions {
	return &StatusOptions{Output: "text", Interval: 2 * time.Second, Metric: "websocket_connections",
		ScrapeSelector: "wsscale.io/scrape=true", Events: 5, flags: flags, streams: streams, now: time.Now}
}

// AddFlags registers the flags.
func (o *StatusOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.Output, "output", "o", o.Output, "Output format: text, json or yaml.")
	fs.BoolVarP(&o.Watch, "watch", "w", o.Watch, "Refresh every --interval until interrupted.")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "Refresh period of --watch.")
	fs.StringVar(&o.Metric, "metric", o.Metric, "The custom metric the HPAs scale on.")
	fs.StringVar(&o.ScrapeSelector, "scrape-selector", o.ScrapeSelector, "The adapter's pod selection (its --pod-selector), to tell unscraped pods from pods without a value.")
	fs.IntVar(&o.Events, "events", o.Events, "How many of the last Events of each workload to show.")
	fs.BoolVarP(&o.AllNamespaces, "all-namespaces", "A", o.AllNamespaces, "Show the workloads of every namespace.")
}

// Validate returns every problem of the flags.
func (o *StatusOptions) Validate(args []string) []error {
	var errs []error
	switch o.Output {
	case "text", "json", "yaml":
	default:
		errs = append(errs, fmt.Errorf("--output %q: want text, json or yaml", o.Output))
	}
	if o.Interval <= 0 {
		errs = append(errs, fmt.Errorf("--interval %v: must be positive", o.Interval))
	}
	if o.Events < 0 {
		errs = append(errs, fmt.Errorf("--events %d: must not be negative", o.Events))
	}
	if o.Metric == "" {
		errs = append(errs, fmt.Errorf("--metric must not be empty"))
	}
	if len(args) > 1 {
		errs = append(errs, fmt.Errorf("at most one TARGET (an HPA, ScaleGuard or Deployment name), got %d: %s", len(args), strings.Join(args, " ")))
	}
	return errs
}

func newStatusCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	return newSubcommand("status [TARGET]", "Replicas, connections per pod, the next victim and the last decisions of each WebSocket workload",
		`status shows, for every HPA on the connections metric and every ScaleGuard of the namespace:
the replicas the HPA and the ScaleGuard want and what the Deployment has, each pod's connections as
the HPA reads them from custom.metrics.k8s.io with the value's age, which pods are ready and which
drain, the pod a scale-down would drain next and why (the ScaleGuard's own decision function on the
same facts), the disconnect budget left and the last Events. TARGET narrows it to one HPA,
ScaleGuard or Deployment.`,
		NewStatusOptions(flags, streams))
}

// Run prints the status once, or every interval with --watch.
func (o *StatusOptions) Run(ctx context.Context, args []string) error {
	c, err := newClients(o.flags)
	if err != nil {
		return err
	}
	g := gatherOptions{metric: o.Metric, scrapeLabel: o.ScrapeSelector, events: o.Events, now: o.now, allNamespaces: o.AllNamespaces}
	if len(args) == 1 {
		g.target = args[0]
	}
	for {
		ws, err := gather(ctx, c, g)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := o.print(&buf, c.namespace, ws); err != nil {
			return err
		}
		if o.Watch && o.Output == "text" {
			fmt.Fprint(o.streams.Out, clearScreen)
		}
		if _, err := o.streams.Out.Write(buf.Bytes()); err != nil {
			return err
		}
		if !o.Watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.Interval):
		}
	}
}

// statusList is the document of -o json|yaml.
type statusList struct {
	Time      time.Time   `json:"time"`
	Workloads []*Workload `json:"workloads"`
}

func (o *StatusOptions) print(out io.Writer, ns string, ws []*Workload) error {
	if ws == nil {
		ws = []*Workload{}
	}
	doc := statusList{Time: o.now().UTC(), Workloads: ws}
	switch o.Output {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	case "yaml":
		b, err := yaml.Marshal(doc)
		if err != nil {
			return err
		}
		if o.Watch {
			fmt.Fprintln(out, "---")
		}
		_, err = out.Write(b)
		return err
	}
	if len(ws) == 0 {
		where := "namespace " + ns
		if o.AllNamespaces {
			where = "any namespace"
		}
		fmt.Fprintf(out, "No WebSocket workload in %s: no HPA on %s and no ScaleGuard.\n", where, o.Metric)
		return nil
	}
	for i, w := range ws {
		if i > 0 {
			fmt.Fprintln(out)
		}
		printWorkload(out, w, o.now())
	}
	return nil
}

// printWorkload writes one workload as text.
func printWorkload(out io.Writer, w *Workload, now time.Time) {
	var chain []string
	if w.HPA != "" {
		chain = append(chain, "HPA "+w.HPA)
	}
	if w.ScaleGuard != "" {
		chain = append(chain, "ScaleGuard "+w.ScaleGuard)
	}
	if w.Deployment != "" {
		chain = append(chain, "Deployment "+w.Deployment)
	}
	fmt.Fprintf(out, "%s: %s\n", w.Namespace, strings.Join(chain, " → "))
	if w.Metric != "" {
		fmt.Fprintf(out, "  metric:   %s\n", w.Metric)
	}
	var reps []string
	if w.HPADesired != nil {
		reps = append(reps, fmt.Sprintf("HPA wants %d", *w.HPADesired))
	}
	if w.GuardDesired != nil {
		reps = append(reps, fmt.Sprintf("guard desired %d", *w.GuardDesired))
	}
	if w.Applied != nil {
		reps = append(reps, fmt.Sprintf("applied %d", *w.Applied))
	}
	reps = append(reps, fmt.Sprintf("ready %d", w.Ready))
	line := "  replicas: " + strings.Join(reps, ", ")
	if w.State != "" {
		line += "; guard " + w.State
	}
	fmt.Fprintln(out, line)
	if len(w.Pods) > 0 {
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  POD\tCONNECTIONS\tVALUE AGE\tREADY\tDRAINING\tNOTE")
		var sum int64
		for _, p := range w.Pods {
			conns, age := "-", "-"
			if p.Connections != nil {
				conns = fmt.Sprint(*p.Connections)
				sum += *p.Connections
			}
			if p.ValueAge != nil {
				age = p.ValueAge.Duration.String()
			}
			ready := yesNo(p.Ready)
			if p.Phase != "Running" {
				ready = p.Phase
			}
			if p.Terminating {
				ready = "terminating"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", p.Name, conns, age, ready, yesNo(p.Draining), p.Note)
		}
		fmt.Fprintf(tw, "  total\t%d\t\t\t\t\n", sum)
		tw.Flush()
	}
	if n := w.Next; n != nil {
		if len(n.Victims) > 0 {
			fmt.Fprintf(out, "  next victim: %s: %s\n", strings.Join(n.Victims, ", "), n.Why)
		} else {
			fmt.Fprintf(out, "  next victim: none (%s): %s\n", n.Blocked, n.Why)
		}
	}
	if b := w.Budget; b != nil {
		fmt.Fprintf(out, "  budget:   %d of %d disconnects left in the last %v\n", b.Left, b.Max, b.Window.Duration)
	} else if w.ScaleGuard != "" {
		fmt.Fprintln(out, "  budget:   none (scale-downs bounded by maxVictimsPerStep only)")
	}
	for _, p := range w.Problems {
		fmt.Fprintf(out, "  problem:  %s\n", p)
	}
	if len(w.Events) > 0 {
		fmt.Fprintln(out, "  last events:")
		for _, e := range w.Events {
			ago := now.Sub(e.Time.Time).Round(time.Second)
			fmt.Fprintf(out, "    %7s ago  %-7s %-20s %s: %s\n", ago, e.Type, e.Reason, e.Object, e.Message)
		}
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// joinErrors reports every flag problem at once.
func joinErrors(errs []error) error {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return &exitError{code: 2, msg: strings.Join(msgs, "; ")}
}
