// Package app implements the localcluster command: up (foreground or detached) and down.
package app

import (
	goflag "flag"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// NewCommand returns the localcluster root command.
func NewCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "localcluster",
		Short: "Run the local Kubernetes cluster (real control plane, process-based node agent)",
		Long: `localcluster runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a
process-based node agent inside a private network namespace. kube-apiserver is reachable on
the host at https://127.0.0.1:<api-port>, NodePort Services at 127.0.0.1:<nodePort>.
It needs root and the pinned binaries built by hack/build-tools.sh (make tools).`,
		SilenceUsage: true,
	}
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	root.PersistentFlags().AddGoFlagSet(klogFlags)
	root.AddCommand(newUpCommand(), newDownCommand())
	return root
}
