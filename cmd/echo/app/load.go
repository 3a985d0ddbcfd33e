package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/wsscale/wsscale/pkg/wsload"
)

// LoadOptions are the load client's settings.
type LoadOptions struct {
	cfg          wsload.Config
	sourceRange  string
	output       string
	quiet        bool
	maxDropRatio float64
	// minConnected is how many connections must open for the run to pass (0: no check).
	minConnected int
	// expectEcho makes the run fail unless every connection that opened got its messages echoed.
	expectEcho bool
}

// NewLoadOptions returns the defaults.
func NewLoadOptions() *LoadOptions {
	return &LoadOptions{cfg: wsload.DefaultConfig(), sourceRange: "auto", output: "text", maxDropRatio: -1}
}

// AddFlags registers the load client's flags.
func (o *LoadOptions) AddFlags(fs *pflag.FlagSet) {
	c := &o.cfg
	fs.StringVar(&c.URL, "url", c.URL, "WebSocket URL to load.")
	fs.IntVarP(&c.Connections, "connections", "c", c.Connections, "Connections to open and hold.")
	fs.Float64Var(&c.ConnectRate, "rate", c.ConnectRate, "New connections per second; 0 opens them as fast as possible.")
	fs.DurationVarP(&c.Duration, "duration", "d", 60*time.Second, "How long to hold the connections once all are open; 0 holds until interrupted.")
	fs.DurationVar(&c.MessageInterval, "message-interval", c.MessageInterval, "Each connection sends a message this often; 0 sends none.")
	fs.BoolVar(&c.Flood, "flood", c.Flood, "Each connection sends its next message as soon as the echo of the previous one arrives (throughput test).")
	fs.IntVar(&c.MessagesPerConnection, "messages", c.MessagesPerConnection, "Stop sending after this many messages per connection and keep it open, idle; 0: no limit.")
	fs.IntVar(&c.MessageSize, "message-size", c.MessageSize, "Message size in bytes (at least 8).")
	fs.BoolVar(&c.Binary, "binary", c.Binary, "Send binary messages instead of text.")
	fs.BoolVar(&c.Reconnect, "reconnect", c.Reconnect, "Reopen connections that end, after a jittered exponential back-off.")
	fs.DurationVar(&c.ReconnectMin, "reconnect-min", c.ReconnectMin, "Smallest reconnect back-off bound.")
	fs.DurationVar(&c.ReconnectMax, "reconnect-max", c.ReconnectMax, "Largest reconnect back-off bound.")
	fs.StringVar(&c.Origin, "origin", c.Origin, "Origin header to send.")
	fs.StringVar(&o.sourceRange, "source-range", o.sourceRange, "Spread connections over the source addresses of this IPv4 prefix; \"auto\" uses 127.0.0.0/8 for loopback targets, \"none\" lets the system choose.")
	fs.DurationVar(&c.ProgressInterval, "progress-interval", c.ProgressInterval, "How often to print progress to stderr.")
	fs.BoolVarP(&o.quiet, "quiet", "q", o.quiet, "Print no progress lines.")
	fs.StringVarP(&o.output, "output", "o", o.output, "Summary format: text or json.")
	fs.Float64Var(&o.maxDropRatio, "max-drop-ratio", o.maxDropRatio, "Exit non-zero if abnormal drops exceed this fraction of opened connections (negative: never).")
	fs.IntVar(&o.minConnected, "min-connected", o.minConnected, "Exit non-zero if fewer connections than this opened (0: no check).")
	fs.BoolVar(&o.expectEcho, "expect-echo", o.expectEcho, "Exit non-zero unless at least one connection opened and every opened connection got a correct echo (needs --message-interval or --flood).")
}

// Config returns the load configuration, or every problem with the options.
func (o *LoadOptions) Config() (wsload.Config, error) {
	cfg := o.cfg
	var errs []error
	if o.output != "text" && o.output != "json" {
		errs = append(errs, fmt.Errorf("--output: want text or json, got %q", o.output))
	}
	switch o.sourceRange {
	case "none", "":
	case "auto":
		if u, err := url.Parse(cfg.URL); err == nil && isLoopbackHost(u.Hostname()) {
			cfg.SourcePrefix = netip.MustParsePrefix("127.0.0.0/8")
		}
	default:
		p, err := netip.ParsePrefix(o.sourceRange)
		if err != nil {
			errs = append(errs, fmt.Errorf("--source-range %q: %w", o.sourceRange, err))
		}
		cfg.SourcePrefix = p
	}
	if o.minConnected < 0 || o.minConnected > cfg.Connections {
		errs = append(errs, fmt.Errorf("--min-connected: want 0 to --connections (%d), got %d", cfg.Connections, o.minConnected))
	}
	if o.expectEcho && cfg.MessageInterval == 0 && !cfg.Flood {
		errs = append(errs, errors.New("--expect-echo: no message would be sent; set --message-interval or --flood"))
	}
	errs = append(errs, cfg.Validate()...)
	return cfg, errors.Join(errs...)
}

// Check returns every expectation of the options that res does not meet, joined, or nil: the
// reason the command exits non-zero.
func (o *LoadOptions) Check(res *wsload.Result) error {
	var errs []error
	if o.minConnected > 0 && res.Opened < int64(o.minConnected) {
		errs = append(errs, fmt.Errorf("%d of %d connections opened, want at least %d (dial errors %s)",
			res.Opened, res.Target, o.minConnected, formatCodes(res.DialErrors)))
	}
	if o.expectEcho {
		switch {
		case res.Opened == 0:
			errs = append(errs, fmt.Errorf("no connection opened, so nothing was echoed (dial errors %s)", formatCodes(res.DialErrors)))
		case res.Echoed < res.Opened || res.Mismatched > 0:
			errs = append(errs, fmt.Errorf("%d of %d opened connections got a correct echo, %d messages came back different; want every connection echoed",
				res.Echoed, res.Opened, res.Mismatched))
		}
	}
	if o.maxDropRatio >= 0 && res.Opened > 0 && float64(res.AbnormalDrops)/float64(res.Opened) > o.maxDropRatio {
		errs = append(errs, fmt.Errorf("%d of %d connections dropped abnormally", res.AbnormalDrops, res.Opened))
	}
	return errors.Join(errs...)
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Is4() && a.IsLoopback()
}

// NewLoadCommand returns `wsecho load`.
func NewLoadCommand(ctx context.Context) *cobra.Command {
	o := NewLoadOptions()
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Open many WebSocket connections, send timestamped messages and report round trips and closes",
		Example: `  wsecho load --url ws://127.0.0.1:8080/ws -c 10000 --rate 2000 --duration 60s
  wsecho load --url ws://127.0.0.1:8080/ws -c 1000 --flood --message-size 1024 -d 20s -o json
  wsecho load --url ws://echo.default.svc/ws -c 5 --message-interval 500ms --messages 1 -d 3s --min-connected 5 --expect-echo`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.Config()
			if err != nil {
				return fmt.Errorf("invalid load options:\n%w", err)
			}
			if !o.quiet {
				cfg.Progress = func(s wsload.Snapshot) { printProgress(cmd.ErrOrStderr(), cfg.Connections, s) }
			}
			res, err := wsload.Run(ctx, cfg)
			if err != nil {
				return err
			}
			if o.output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printSummary(cmd.OutOrStdout(), res)
			}
			if err := o.Check(res); err != nil {
				return fmt.Errorf("load run failed:\n%w", err)
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func printProgress(w io.Writer, target int, s wsload.Snapshot) {
	fmt.Fprintf(w, "%6.1fs open=%d/%d opened=%d dial_errors=%d sent=%d received=%d drops=%d closes=%s\n",
		s.Elapsed.Seconds(), s.Open, target, s.Opened, s.DialErrors, s.Sent, s.Received, s.AbnormalDrops, formatCodes(s.Closes))
}

func formatCodes[K int | string](m map[K]int64) string {
	if len(m) == 0 {
		return "{}"
	}
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%v:%d", k, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func printSummary(w io.Writer, r *wsload.Result) {
	fmt.Fprintf(w, "url                  %s\n", r.URL)
	fmt.Fprintf(w, "connections          target %d, opened %d, peak open %d, ramp-up %s\n", r.Target, r.Opened, r.PeakOpen, r.RampUp)
	fmt.Fprintf(w, "dial errors          %s\n", formatCodes(r.DialErrors))
	fmt.Fprintf(w, "messages             sent %d, echoed %d, mismatched %d, %.0f/s\n", r.Sent, r.Received, r.Mismatched, r.MessagesPerSec)
	fmt.Fprintf(w, "echoed connections   %d of %d opened\n", r.Echoed, r.Opened)
	fmt.Fprintf(w, "round trip           p50 %s, p90 %s, p99 %s, max %s (%d samples)\n", r.RTT.P50, r.RTT.P90, r.RTT.P99, r.RTT.Max, r.RTT.Count)
	fmt.Fprintf(w, "closed by server     %s (by close code)\n", formatCodes(r.ClosesByCode))
	fmt.Fprintf(w, "abnormal drops       %d (no close frame)\n", r.AbnormalDrops)
	fmt.Fprintf(w, "closed by client     %d\n", r.ClosedByClient)
	fmt.Fprintf(w, "elapsed              %s\n", r.Elapsed)
}
