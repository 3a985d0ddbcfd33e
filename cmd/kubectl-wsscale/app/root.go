// Package app builds the kubectl-wsscale command: status, doctor and record. It only reads the
// cluster; nothing here writes to it.
package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/wsscale/wsscale/pkg/version"
)

// exitError carries a process exit code other than 1 through cobra.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// ExitCode is the process exit code for an error returned by the command: 1 unless the error
// says otherwise (doctor exits 1 on a failed check with its report already printed).
func ExitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

// NewCommand returns the root command with the standard kubectl flags (--kubeconfig, --context,
// -n, --as, ...) shared by every subcommand.
func NewCommand(ctx context.Context, streams genericiooptions.IOStreams) *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	cmd := &cobra.Command{
		Use:   "kubectl-wsscale",
		Short: "See what the WebSocket autoscaler sees and diagnose its setup",
		Long: `kubectl wsscale shows WebSocket workloads as the HPA and the ScaleGuard see them (status),
checks the setup against the live cluster (doctor), and draws connections, replicas and scale
decisions over time (record). It only reads from the cluster.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().String(),
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl wsscale"},
	}
	cmd.SetContext(ctx)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	flags.AddFlags(cmd.PersistentFlags())
	cmd.AddCommand(newStatusCommand(flags, streams), newDoctorCommand(flags, streams), newRecordCommand(flags, streams))
	return cmd
}

// subcommandOptions are a subcommand's options in kubectl's pattern: flags, validation that names
// every problem at once, and the run.
type subcommandOptions interface {
	AddFlags(fs *pflag.FlagSet)
	Validate(args []string) []error
	Run(ctx context.Context, args []string) error
}

// newSubcommand wires options into a cobra command: validate the arguments, then run.
func newSubcommand(use, short, long string, o subcommandOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		RunE: func(cmd *cobra.Command, args []string) error {
			if errs := o.Validate(args); len(errs) > 0 {
				return joinErrors(errs)
			}
			return o.Run(cmd.Context(), args)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// clients are the API clients of one invocation and the namespace it works in.
type clients struct {
	config    *rest.Config
	kube      kubernetes.Interface
	dyn       dynamic.Interface
	namespace string
}

func newClients(flags *genericclioptions.ConfigFlags) (*clients, error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("namespace: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clients{config: cfg, kube: kube, dyn: dyn, namespace: ns}, nil
}
