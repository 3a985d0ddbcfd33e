package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxExecOutput is how much of a command's output a probe or hook keeps, as the kubelet's
// 10 KiB limit.
const maxExecOutput = 10 * 1024

// execTarget is a running container a command is run in: its process, and the identity
// and environment the command gets.
type execTarget struct {
	pid     int
	env     []string
	uid     *int64
	gid     *int64
	workDir string
}

// errExecTimeout reports a command killed at its deadline.
var errExecTimeout = errors.New("timed out")

// commandRunner runs a command inside a running container.
type commandRunner interface {
	// run returns the command's combined output and exit code; err is set when the command
	// could not run or was killed at the context's deadline (errExecTimeout).
	run(ctx context.Context, target execTarget, argv []string) (output []byte, code int, err error)
}

// nsenterRunner runs commands with util-linux nsenter in the mount, network and UTS
// namespaces of the container's process, with the container's uid, gid, environment and
// working directory. The images have no shell, so the command comes from the node's
// filesystem as the container's mount namespace shows it (a `kubectl exec`-style
// /bin/cat /tmp/healthy reads the pod's /tmp).
type nsenterRunner struct {
	// nsenter is the nsenter binary.
	nsenter string
}

var _ commandRunner = nsenterRunner{}

// nsenterArgs builds nsenter's arguments for argv in target.
func nsenterArgs(target execTarget, argv []string) []string {
	args := []string{"--target", strconv.Itoa(target.pid), "--mount", "--net", "--uts"}
	if target.uid != nil {
		args = append(args, "--setuid", strconv.FormatInt(*target.uid, 10))
	}
	if target.gid != nil {
		args = append(args, "--setgid", strconv.FormatInt(*target.gid, 10))
	}
	wd := target.workDir
	if wd == "" {
		wd = "/"
	}
	args = append(args, "--wd="+wd, "--")
	return append(args, argv...)
}

func (r nsenterRunner) run(ctx context.Context, target execTarget, argv []string) ([]byte, int, error) {
	if len(argv) == 0 {
		return nil, 0, errors.New("empty command")
	}
	cmd := exec.CommandContext(ctx, r.nsenter, nsenterArgs(target, argv)...)
	cmd.Env = target.env
	out := &cappedBuffer{max: maxExecOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// The command leads its own group, so that the timeout kills what it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.Bytes(), -1, errExecTimeout
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.Bytes(), ee.ExitCode(), nil
	}
	if err != nil {
		return out.Bytes(), -1, fmt.Errorf("run %s: %w", strings.Join(argv, " "), err)
	}
	return out.Bytes(), 0, nil
}

// cappedBuffer keeps the first max bytes written to it and drops the rest.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
