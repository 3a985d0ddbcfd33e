package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/wsscale/wsscale/pkg/policy"
)

// markerReasons are the Event reasons drawn as markers, and their kind.
var markerReasons = map[string]string{
	"SuccessfulRescale":         "scale", // the HPA
	"ScalingReplicaSet":         "scale", // the Deployment controller
	policy.EventScaledUp:        "scale",
	policy.EventCommitted:       "scale",
	policy.EventStepComplete:    "scale",
	policy.EventVictimsMarked:   "drain",
	policy.EventVictimsReleased: "drain",
	policy.EventVictimLost:      "drain",
	policy.EventWrongPodRemoved: "drain",
}

// RecordOptions are the flags of `kubectl wsscale record`.
type RecordOptions struct {
	Duration       time.Duration
	Interval       time.Duration
	Output         string
	Metric         string
	ScrapeSelector string

	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
}

// NewRecordOptions returns the defaults.
func NewRecordOptions(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *RecordOptions {
	return &RecordOptions{Duration: time.Minute, Interval: time.Second, Output: "timeline.svg", Metric: "websocket_connections",
		ScrapeSelector: "wsscale.io/scrape=true", flags: flags, streams: streams}
}

// AddFlags registers the flags.
func (o *RecordOptions) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.Duration, "duration", o.Duration, "How long to record.")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "Time between samples.")
	fs.StringVarP(&o.Output, "output", "o", o.Output, "File to write: NAME.svg or NAME.html.")
	fs.StringVar(&o.Metric, "metric", o.Metric, "The custom metric the HPAs scale on.")
	fs.StringVar(&o.ScrapeSelector, "scrape-selector", o.ScrapeSelector, "The adapter's pod selection (its --pod-selector).")
}

// Validate returns every problem of the flags.
func (o *RecordOptions) Validate(args []string) []error {
	var errs []error
	if o.Duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %v: must be positive", o.Duration))
	}
	if o.Interval <= 0 {
		errs = append(errs, fmt.Errorf("--interval %v: must be positive", o.Interval))
	} else if o.Duration > 0 && o.Interval > o.Duration {
		errs = append(errs, fmt.Errorf("--interval %v is longer than --duration %v", o.Interval, o.Duration))
	}
	switch strings.ToLower(filepath.Ext(o.Output)) {
	case ".svg", ".html", ".htm":
	default:
		errs = append(errs, fmt.Errorf("--output %q: the file must end in .svg or .html", o.Output))
	}
	if len(args) > 1 {
		errs = append(errs, fmt.Errorf("at most one TARGET (an HPA, ScaleGuard or Deployment name), got %d", len(args)))
	}
	return errs
}

func newRecordCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	return newSubcommand("record [TARGET] --duration D -o timeline.svg|timeline.html", "Sample connections per pod, replicas and scale decisions, and draw them as one picture",
		`record samples a WebSocket workload every --interval for --duration: each pod's connections as
the HPA reads them, the Deployment's replicas, and the scale and drain decisions (Events of the HPA,
the ScaleGuard and the Deployment). It draws a stacked area of connections per pod, the replicas as
a step line and the decisions as markers, into an SVG file or an HTML page. TARGET names the HPA,
ScaleGuard or Deployment when the namespace has more than one workload.`,
		NewRecordOptions(flags, streams))
}

// Run records and writes the file. An interrupt ends the recording early; what was sampled is
// still drawn.
func (o *RecordOptions) Run(ctx context.Context, args []string) error {
	c, err := newClients(o.flags)
	if err != nil {
		return err
	}
	g := gatherOptions{metric: o.Metric, scrapeLabel: o.ScrapeSelector, events: 0, now: time.Now}
	if len(args) == 1 {
		g.target = args[0]
	}
	ws, err := gather(ctx, c, g)
	if err != nil {
		return err
	}
	switch {
	case len(ws) == 0:
		return fmt.Errorf("no WebSocket workload in namespace %s matches %q", c.namespace, g.target)
	case len(ws) > 1:
		var names []string
		for _, w := range ws {
			names = append(names, w.Deployment)
		}
		return fmt.Errorf("%d WebSocket workloads in namespace %s (%s): name one as TARGET", len(ws), c.namespace, strings.Join(names, ", "))
	}
	w := ws[0]
	if g.target == "" {
		g.target = w.Deployment
	}
	tl := &Timeline{Title: fmt.Sprintf("%s/%s: connections per pod, replicas and scale decisions", w.Namespace, w.Deployment)}
	fmt.Fprintf(o.streams.ErrOut, "recording %s/%s every %v for %v\n", w.Namespace, w.Deployment, o.Interval, o.Duration)
	start := time.Now()
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for {
		s, latest, err := o.sample(ctx, c, g)
		if err != nil && ctx.Err() == nil {
			fmt.Fprintf(o.streams.ErrOut, "sample: %v\n", err)
		} else if err == nil {
			tl.Samples = append(tl.Samples, s)
			w = latest // an HPA created during the recording has its Events drawn too
		}
		if time.Since(start) >= o.Duration || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	if len(tl.Samples) == 0 {
		return fmt.Errorf("no sample was taken")
	}
	// The markers: Events of the workload's objects within the recording.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	tl.Markers, err = markers(mctx, c, w, tl.Samples[0].Time.Add(-o.Interval), tl.Samples[len(tl.Samples)-1].Time)
	if err != nil {
		return err
	}
	if err := writeTimeline(tl, o.Output); err != nil {
		return err
	}
	fmt.Fprintf(o.streams.Out, "wrote %s: %d samples, %d pods, %d decisions\n", o.Output, len(tl.Samples), len(tl.podOrder()), len(tl.Markers))
	return nil
}

// sample reads the workload once.
func (o *RecordOptions) sample(ctx context.Context, c *clients, g gatherOptions) (Sample, *Workload, error) {
	ws, err := gather(ctx, c, g)
	if err != nil {
		return Sample{}, nil, err
	}
	if len(ws) != 1 {
		return Sample{}, nil, fmt.Errorf("workload %s: found %d", g.target, len(ws))
	}
	w := ws[0]
	s := Sample{Time: time.Now(), Connections: map[string]int64{}, Draining: map[string]bool{}, Ready: w.Ready}
	if w.Applied != nil {
		s.Replicas = *w.Applied
	}
	for _, p := range w.Pods {
		if p.Connections != nil {
			s.Connections[p.Name] = *p.Connections
		}
		if p.Draining {
			s.Draining[p.Name] = true
		}
	}
	return s, w, nil
}

// markers lists the scale and drain Events of the workload's HPA, ScaleGuard and Deployment
// between from and to.
func markers(ctx context.Context, c *clients, w *Workload, from, to time.Time) ([]Marker, error) {
	var out []Marker
	for _, obj := range []struct{ kind, name string }{{"HorizontalPodAutoscaler", w.HPA}, {"ScaleGuard", w.ScaleGuard}, {"Deployment", w.Deployment}} {
		if obj.name == "" {
			continue
		}
		list, err := c.kube.CoreV1().Events(w.Namespace).List(ctx, metav1.ListOptions{
			FieldSelector: fmt.Sprintf("involvedObject.kind=%s,involvedObject.name=%s", obj.kind, obj.name),
		})
		if err != nil {
			return nil, fmt.Errorf("list Events of %s %s: %w", obj.kind, obj.name, err)
		}
		for i := range list.Items {
			e := &list.Items[i]
			kind, ok := markerReasons[e.Reason]
			at := eventTime(e).Time
			if !ok || at.Before(from) || at.After(to) {
				continue
			}
			out = append(out, Marker{Time: at, Kind: kind, Label: e.Reason, Detail: obj.kind + "/" + obj.name + ": " + e.Message})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// writeTimeline writes the SVG or HTML file, whole or not at all.
func writeTimeline(tl *Timeline, path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".timeline-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if strings.EqualFold(filepath.Ext(path), ".svg") {
		err = tl.WriteSVG(tmp)
	} else {
		err = tl.WriteHTML(tmp)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
