package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// downOptions are the flags of `localcluster down`.
type downOptions struct {
	PIDFile    string
	Kubeconfig string
	Timeout    time.Duration
}

func newDownCommand() *cobra.Command {
	o := &downOptions{PIDFile: filepath.Join(".local", "cluster.pid"), Timeout: 3 * time.Minute}
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the cluster started with `up --detach` and wait until nothing of it is left",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.PIDFile == "" || o.Timeout <= 0 {
				return errors.New("--pid-file and a positive --timeout are required")
			}
			return runDown(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.PIDFile, "pid-file", o.PIDFile, "The pid file given to `up`.")
	cmd.Flags().StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "The kubeconfig given to `up`; removed if a killed cluster left it behind.")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", o.Timeout, "How long to wait for an orderly stop before killing the cluster.")
	return cmd
}

func runDown(ctx context.Context, o *downOptions, out io.Writer) error {
	pf := pidFile{Path: o.PIDFile}
	r, err := pf.read()
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(out, "No local cluster is running (no %s).\n", o.PIDFile)
		return nil
	}
	if err != nil {
		return err
	}
	if isLocalClusterProcess(r.PID) {
		fmt.Fprintf(out, "Stopping the local cluster (pid %d)...\n", r.PID)
		if err := syscall.Kill(r.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal pid %d: %w", r.PID, err)
		}
		if !waitGone(ctx, r.PID, o.Timeout) {
			fmt.Fprintf(out, "Still running after %s; killing pid %d.\n", o.Timeout, r.PID)
			syscall.Kill(r.PID, syscall.SIGKILL)
			if !waitGone(ctx, r.PID, 10*time.Second) {
				return fmt.Errorf("pid %d survived SIGKILL", r.PID)
			}
		}
	} else {
		fmt.Fprintf(out, "The cluster in %s (pid %d) is not running any more.\n", o.PIDFile, r.PID)
	}
	os.Remove(o.PIDFile)

	var errs []error
	if r.StateDir != "" {
		if pids := processesMentioning(r.StateDir); len(pids) > 0 {
			errs = append(errs, fmt.Errorf("processes of the cluster are still running: %v", pids))
		} else if _, err := os.Stat(r.StateDir); err == nil {
			// Its owner was killed before it could clean up (the node's processes died
			// with it); nothing uses the directory any more.
			fmt.Fprintf(out, "Removing the state directory %s left by a killed cluster.\n", r.StateDir)
			if err := os.RemoveAll(r.StateDir); err != nil {
				errs = append(errs, fmt.Errorf("remove state directory: %w", err))
			}
		}
	}
	if o.Kubeconfig != "" {
		if err := os.Remove(o.Kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove kubeconfig: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintln(out, "Local cluster stopped; no process or state directory left.")
	return nil
}

// waitGone polls until pid has exited or timeout passes.
func waitGone(ctx context.Context, pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
	return false
}
