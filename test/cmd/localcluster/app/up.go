package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"

	"github.com/wsscale/wsscale/test/localcluster"
)

// upOptions are the flags of `localcluster up`.
type upOptions struct {
	Cluster  *localcluster.Options
	PIDFile  string
	Detach   bool
	LogFile  string
	NotifyFD int // set by a detaching parent; the ready notice goes there
}

func newUpOptions() *upOptions {
	o := &upOptions{Cluster: localcluster.NewOptions(), LogFile: filepath.Join(".local", "cluster.log")}
	o.Cluster.Kubeconfig = filepath.Join(".local", "kubeconfig")
	return o
}

func (o *upOptions) Validate() []error {
	errs := o.Cluster.Validate()
	if o.Detach && o.LogFile == "" {
		errs = append(errs, errors.New("log file: required with --detach"))
	}
	return errs
}

// readyNotice is what a detached `up` tells the command that started it.
type readyNotice struct {
	PID        int    `json:"pid"`
	Kubeconfig string `json:"kubeconfig"`
	APIServer  string `json:"apiServer"`
	StateDir   string `json:"stateDir"`
}

func newUpCommand() *cobra.Command {
	o := newUpOptions()
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the local cluster and run it until SIGINT/SIGTERM (or in the background with --detach)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if errs := o.Validate(); len(errs) > 0 {
				return utilerrors.NewAggregate(errs)
			}
			if o.Detach {
				return runDetached(cmd.Context(), o, cmd.OutOrStdout())
			}
			return runUp(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	o.Cluster.AddFlags(fs)
	fs.StringVar(&o.PIDFile, "pid-file", o.PIDFile, "Record the running cluster here (used by `localcluster down`).")
	fs.BoolVar(&o.Detach, "detach", o.Detach, "Start the cluster in the background, return once it is ready.")
	fs.StringVar(&o.LogFile, "log-file", o.LogFile, "With --detach: where the background process logs.")
	fs.IntVar(&o.NotifyFD, "notify-fd", 0, "Internal: descriptor on which to report readiness.")
	_ = fs.MarkHidden("notify-fd")
	return cmd
}

// runUp starts the cluster and keeps it running until ctx ends or it fails.
func runUp(ctx context.Context, o *upOptions, out io.Writer) error {
	pf := pidFile{Path: o.PIDFile}
	if o.PIDFile != "" {
		if r, err := pf.read(); err == nil && isLocalClusterProcess(r.PID) && r.PID != os.Getpid() {
			return fmt.Errorf("a local cluster is already running (pid %d, %s); stop it with `localcluster down --pid-file %s`", r.PID, o.PIDFile, o.PIDFile)
		}
		if err := pf.write(pidRecord{PID: os.Getpid()}); err != nil {
			return err
		}
		defer pf.removeIfOwned(os.Getpid())
	}

	c, err := localcluster.Start(ctx, o.Cluster)
	if err != nil {
		return err
	}
	if err := pf.write(pidRecord{PID: os.Getpid(), StateDir: c.StateDir()}); err != nil {
		c.Stop()
		return err
	}
	notice := readyNotice{PID: os.Getpid(), Kubeconfig: c.Kubeconfig(), APIServer: c.RESTConfig().Host, StateDir: c.StateDir()}
	if o.NotifyFD > 0 {
		f := os.NewFile(uintptr(o.NotifyFD), "notify")
		b, _ := json.Marshal(notice)
		f.Write(append(b, '\n'))
		f.Close()
	} else {
		printReady(out, notice, o.Cluster.BinDir, "Ctrl-C")
	}

	select {
	case <-ctx.Done():
		return c.Stop()
	case <-c.Done():
		failure := c.Err()
		stopErr := c.Stop()
		if failure == nil {
			failure = errors.New("node supervisor ended unexpectedly")
		}
		return errors.Join(failure, stopErr)
	}
}

// printReady tells how to use the cluster, with the kubectl pinned with the control plane.
func printReady(out io.Writer, n readyNotice, binDir, stopHow string) {
	fmt.Fprintf(out, `Local cluster is ready (pid %d).
  kubeconfig:  %s
  API server:  %s
  try:         %s --kubeconfig %s get nodes
  NodePort Services answer on 127.0.0.1:<nodePort>; pod addresses (198.18.1.0/24) live in the node's network namespace.
  stop:        %s
`, n.PID, n.Kubeconfig, n.APIServer, filepath.Join(binDir, "kubectl"), n.Kubeconfig, stopHow)
}

// runDetached starts `up` again in the background, in its own session, and waits
// until it reports readiness or exits.
func runDetached(ctx context.Context, o *upOptions, out io.Writer) error {
	if o.PIDFile == "" {
		return errors.New("--detach needs --pid-file, so that `localcluster down` can find the cluster")
	}
	if r, err := (pidFile{Path: o.PIDFile}).read(); err == nil && isLocalClusterProcess(r.PID) {
		fmt.Fprintf(out, "A local cluster is already running (pid %d); kubeconfig %s.\n", r.PID, o.Cluster.Kubeconfig)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(o.LogFile), 0o755); err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	logFile, err := os.OpenFile(o.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer logFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	// Later flags win: the background process runs in the foreground of its own session.
	args := append(append([]string{}, os.Args[1:]...), "--detach=false", "--notify-fd=3")
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("start background cluster: %w", err)
	}
	fmt.Fprintf(out, "Starting the local cluster in the background (pid %d, log %s)...\n", cmd.Process.Pid, o.LogFile)

	noticeCh := make(chan *readyNotice, 1)
	go func() {
		sc := bufio.NewScanner(r)
		if sc.Scan() {
			var n readyNotice
			if json.Unmarshal(sc.Bytes(), &n) == nil {
				noticeCh <- &n
				return
			}
		}
		noticeCh <- nil
	}()
	select {
	case n := <-noticeCh:
		if n != nil {
			cmd.Process.Release()
			printReady(out, *n, o.Cluster.BinDir, "make cluster-down (or localcluster down --pid-file "+o.PIDFile+")")
			return nil
		}
	case <-ctx.Done():
		// Interrupted while waiting: the background process is ours to stop.
		cmd.Process.Signal(syscall.SIGTERM)
	}
	waitErr := cmd.Wait()
	return fmt.Errorf("the local cluster did not start (%v); last lines of %s:\n%s", waitErr, o.LogFile, tail(o.LogFile, 40))
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
