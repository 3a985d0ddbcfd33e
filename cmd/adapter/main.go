// Command adapter is wsscale's custom metrics API server.
package main

import (
	"fmt"
	"os"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/klog/v2"

	"github.com/wsscale/wsscale/cmd/adapter/app"
)

func main() {
	defer klog.Flush()
	if err := app.NewAdapterCommand(genericapiserver.SetupSignalContext()).Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "adapter: %v\n", err)
		klog.Flush()
		os.Exit(1)
	}
}
