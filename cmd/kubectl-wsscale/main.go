// Command kubectl-wsscale is the kubectl plugin of wsscale (`kubectl wsscale`): what the
// autoscaler sees (status), a diagnosis of the setup (doctor) and a timeline picture (record).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/wsscale/wsscale/cmd/kubectl-wsscale/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := app.NewCommand(ctx, genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "kubectl-wsscale: %v\n", err)
		os.Exit(app.ExitCode(err))
	}
}
