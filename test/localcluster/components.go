package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// logTailLines is how much of a failed component's log an error carries.
const logTailLines = 30

// component is one control plane process with its log file.
type component struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	clock   clock.WithTicker

	exited  chan struct{} // closed when the process has been reaped
	exitErr error         // valid once exited is closed
}

// startComponent starts bin with args, its stdout and stderr appended to
// <logDir>/<name>.log. The process dies with the starting process.
func startComponent(name, bin string, args []string, logDir string, clk clock.WithTicker) (*component, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := spawner().Start(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &component{name: name, cmd: cmd, logPath: logPath, clock: clk, exited: make(chan struct{})}
	go func() {
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	klog.InfoS("Started component", "component", name, "pid", cmd.Process.Pid, "log", logPath)
	return c, nil
}

// Exited is closed once the process has ended.
func (c *component) Exited() <-chan struct{} { return c.exited }

// exitError describes how the process ended, with the tail of its log.
func (c *component) exitError(during string) error {
	status := "exited"
	if c.exitErr != nil {
		status = c.exitErr.Error()
	}
	return fmt.Errorf("%s %s (%s); last lines of %s:\n%s", c.name, during, status, c.logPath, c.LogTail(logTailLines))
}

// Stop sends SIGTERM, waits up to grace, then sends SIGKILL and waits for the exit.
func (c *component) Stop(grace time.Duration) {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := c.clock.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exited:
		klog.InfoS("Stopped component", "component", c.name)
		return
	case <-t.C():
	}
	klog.InfoS("Component ignored SIGTERM, killing it", "component", c.name, "grace", grace)
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// LogTail returns the last n lines of the component's log.
func (c *component) LogTail(n int) string {
	return fileTail(c.logPath, n)
}

// fileTail returns the last n lines of the file at path, or why it cannot.
func fileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const window = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > window {
		if _, err := f.Seek(st.Size()-window, io.SeekStart); err != nil {
			return fmt.Sprintf("(read log: %v)", err)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(bytes.ToValidUTF8(data, []byte("?"))), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// healthCheck reports nil once a component serves.
type healthCheck func(ctx context.Context) error

// waitHealthy polls check until it passes, the component exits (an error with the
// tail of its log) or ctx ends.
func (c *component) waitHealthy(ctx context.Context, check healthCheck) error {
	last, err := pollCheck(ctx, c.clock, check, c.exited, nil)
	switch {
	case err == nil:
		klog.InfoS("Component is healthy", "component", c.name)
		return nil
	case errors.Is(err, errExited):
		return c.exitError("exited during start-up")
	default:
		return fmt.Errorf("%s not healthy before the start-up deadline (last check: %v); last lines of %s:\n%s",
			c.name, last, c.logPath, c.LogTail(logTailLines))
	}
}

// errExited is pollCheck's answer when the watched process exited.
var errExited = errors.New("exited")

// pollCheck runs check every 250 ms, each try bounded by 5 s, until it passes. It gives
// up when stop (if set) returns an error for a failed try, when exited is closed
// (errExited), or when ctx ends (ctx's error); it then returns check's last failure and
// why it gave up.
func pollCheck(ctx context.Context, clk clock.WithTicker, check healthCheck, exited <-chan struct{}, stop func(last error) error) (last, err error) {
	tick := clk.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(checkCtx)
		cancel()
		if last == nil {
			return nil, nil
		}
		if stop != nil {
			if err := stop(last); err != nil {
				return last, err
			}
		}
		select {
		case <-exited:
			return last, errExited
		case <-ctx.Done():
			return last, ctx.Err()
		case <-tick.C():
		}
	}
}

// checkPortsFree fails with "port N already in use" for the first port on ip that
// something already listens on.
func checkPortsFree(ip string, ports ...int) error {
	var errs []error
	for _, p := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(p)))
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				errs = append(errs, fmt.Errorf("port %d already in use on %s", p, ip))
			} else {
				errs = append(errs, fmt.Errorf("check port %d on %s: %w", p, ip, err))
			}
			continue
		}
		ln.Close()
	}
	return errors.Join(errs...)
}
