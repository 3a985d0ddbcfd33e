// Command echo is the reference WebSocket server of wsscale, and its load client (wsecho load). It is
// installed as wsecho, so that `wsecho load` is not the shell's builtin echo.
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
		fmt.Fprintf(os.Stderr, "wsecho: %v\n", err)
		klog.Flush()
		os.Exit(1)
	}
}
