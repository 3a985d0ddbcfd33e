// Command echo is the reference WebSocket server of wsscale, and its load client (echo load).
package main

import (
	"fmt"
	"os"

	"k8s.io/klog/v2"

	"github.com/wsscale/wsscale/cmd/echo/app"
)

func main() {
	defer klog.Flush()
	if err := app.NewEchoCommand(app.SignalContext()).Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "echo: %v\n", err)
		klog.Flush()
		os.Exit(1)
	}
}
