// Package app builds the adapter command: the custom metrics API server
// (custom.metrics.k8s.io) that serves the connection counts of pods.
package app

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"

	"github.com/wsscale/wsscale/pkg/version"
)

// NewAdapterCommand returns the adapter command; it runs until ctx is done.
func NewAdapterCommand(ctx context.Context) *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:   "adapter",
		Short: "Custom metrics API server serving the WebSocket connection counts of pods",
		Long: `adapter serves custom.metrics.k8s.io (v1beta2 and v1beta1) through the Kubernetes API
aggregation layer. By default it tracks the running pods labelled wsscale.io/scrape="true",
scrapes websocket_connections_active from their prometheus.io/port and prometheus.io/path every
5s, and serves it as websocket_connections for pods and, summed, for their Deployments.
A pod without a fresh value is left out of every answer, never reported as 0.`,
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if err := logsapi.ValidateAndApply(o.Logs, nil); err != nil {
				return fmt.Errorf("logging flags: %w", err)
			}
			cfg, err := o.Config()
			if err != nil {
				return err
			}
			adapter, err := cfg.Complete()
			if err != nil {
				return err
			}
			klog.InfoS("Starting the custom metrics adapter", "source", cfg.Source, "interval", cfg.Scrape.Interval,
				"staleAfter", cfg.StaleAfter, "podSelector", cfg.Selection.Selector.String(), "requireScrapeAnnotation", cfg.Selection.RequireAnnotation,
				"metrics", len(cfg.Metrics))
			return adapter.Run(ctx)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
