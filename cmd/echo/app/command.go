// Package app builds the echo command: the reference WebSocket server and its load client.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/version"
	"github.com/wsscale/wsscale/pkg/wsecho"
)

// SignalContext returns a context cancelled by the first SIGTERM or SIGINT; a second one exits
// at once with status 1.
func SignalContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-ch
		klog.InfoS("Received signal, draining", "signal", sig.String())
		cancel()
		sig = <-ch
		klog.InfoS("Received second signal, exiting without waiting for the drain", "signal", sig.String())
		klog.Flush()
		os.Exit(1)
	}()
	return ctx
}

// NewEchoCommand returns the root command, wsecho: it runs the server; `wsecho load` runs the load
// client.
func NewEchoCommand(ctx context.Context) *cobra.Command {
	o := NewServerOptions(OSEnv)
	cmd := &cobra.Command{
		Use:   "wsecho",
		Short: "Reference WebSocket echo server with connection metrics and graceful drain",
		Long: `wsecho serves a WebSocket echo endpoint at /ws, readiness at /health, liveness at /livez and
Prometheus metrics at /metrics on the metrics port. When the pod label wsscale.io/drain="true"
appears in the downward-API file DRAIN_LABELS_FILE, it drains: readiness fails, new upgrades get 503,
and open connections are closed with 1001 spread over DRAIN_TIMEOUT; it then stays up, unready, until
the label is removed (it serves again) or SIGTERM arrives. On SIGTERM readiness fails at once,
upgrades are still accepted for SHUTDOWN_DELAY while endpoints catch up, then it drains the same way
and exits 0.`,
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if errs := o.Validate(); len(errs) > 0 {
				return fmt.Errorf("invalid configuration:\n%w", errors.Join(errs...))
			}
			return runServer(ctx, o)
		},
	}
	o.AddFlags(cmd.Flags())
	addKlogFlags(cmd)
	cmd.AddCommand(NewLoadCommand(ctx))
	return cmd
}

func addKlogFlags(cmd *cobra.Command) {
	gofs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(gofs)
	cmd.PersistentFlags().AddGoFlagSet(gofs)
}

func runServer(ctx context.Context, o *ServerOptions) error {
	cfg, err := o.Config()
	if err != nil {
		return err
	}
	wsLis, err := net.Listen("tcp", net.JoinHostPort(o.BindAddress, strconv.Itoa(o.Port)))
	if err != nil {
		return fmt.Errorf("listen on PORT %d: %w", o.Port, err)
	}
	metricsLis, err := net.Listen("tcp", net.JoinHostPort(o.BindAddress, strconv.Itoa(o.MetricsPort)))
	if err != nil {
		_ = wsLis.Close()
		return fmt.Errorf("listen on METRICS_PORT %d: %w", o.MetricsPort, err)
	}
	srv := wsecho.New(cfg, clock.RealClock{})
	if files := o.DrainFiles(); len(files) > 0 {
		watchCtx, stop := context.WithCancel(ctx)
		defer stop()
		go wsecho.WatchDrainFiles(watchCtx, files, o.DrainPoll, clock.RealClock{}, func(drain bool) {
			if drain {
				srv.Drain()
			} else {
				srv.Undrain()
			}
		})
	}
	if err := srv.Serve(ctx, wsLis, metricsLis); err != nil {
		klog.ErrorS(err, "Server stopped")
		return err
	}
	klog.InfoS("Drained, exiting")
	return nil
}
