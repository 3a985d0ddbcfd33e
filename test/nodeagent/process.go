package nodeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// launchEnv names the variable that turns this binary into a container launcher; see
// podinit.go.
const launchEnv = "WSSCALE_NODEAGENT_LAUNCH"

// launchSpec is everything the launcher needs to turn itself into a container.
type launchSpec struct {
	NetNS    string      `json:"netns"`
	Hostname string      `json:"hostname"`
	Binary   string      `json:"binary"`
	Argv     []string    `json:"argv"`
	Env      []string    `json:"env"`
	Mounts   []bindMount `json:"mounts"`
	WorkDir  string      `json:"workDir"`
	UID      *int64      `json:"uid,omitempty"`
	GID      *int64      `json:"gid,omitempty"`
	Groups   []int64     `json:"groups,omitempty"`
}

// bindMount is one volume mount of a container.
type bindMount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly"`
}

// exitStatus is how a container process ended.
type exitStatus struct {
	code   int32
	signal syscall.Signal
	at     time.Time
}

// startError is returned when the process could not become the container (bad mount,
// missing binary, ...): it never ran the container's code.
type startError struct{ msg string }

func (e *startError) Error() string { return e.msg }

// containerProcess is a running container.
type containerProcess interface {
	// signal sends sig to the container's process group.
	signal(sig syscall.Signal) error
	// pid identifies the process.
	pid() int
}

// containerRuntime starts containers. onExit is called once, from another goroutine, when
// a started process ends.
type containerRuntime interface {
	start(spec *launchSpec, specPath, logPath string, onExit func(exitStatus)) (containerProcess, error)
}

// processRuntime runs each container as a process of this binary that enters the pod's
// network namespace, a private mount and UTS namespace, mounts the volumes and executes
// the container's binary.
type processRuntime struct {
	clock clock.PassiveClock
}

var _ containerRuntime = (*processRuntime)(nil)

type osProcess struct{ p *os.Process }

var _ containerProcess = osProcess{}

func (o osProcess) pid() int { return o.p.Pid }

func (o osProcess) signal(sig syscall.Signal) error {
	// The container leads its own process group; signal the group so that children go too.
	err := syscall.Kill(-o.p.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		err = syscall.Kill(o.p.Pid, sig)
	}
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

func (r *processRuntime) start(spec *launchSpec, specPath, logPath string, onExit func(exitStatus)) (containerProcess, error) {
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode launch spec: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(specPath), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(specPath, data, 0o600); err != nil {
		return nil, fmt.Errorf("write launch spec: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	defer logFile.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("status pipe: %w", err)
	}
	defer statusR.Close()

	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"nodeagent-container"},
		Env:        []string{launchEnv + "=" + specPath},
		Stdout:     logFile,
		Stderr:     logFile,
		ExtraFiles: []*os.File{statusW},
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
			// Go makes / recursively private in the new mount namespace before exec, so
			// the container's mounts never propagate back.
			Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		},
	}
	err = containerSpawner().start(cmd)
	statusW.Close()
	if err != nil {
		return nil, fmt.Errorf("start container launcher: %w", err)
	}
	// The launcher closes the pipe by executing the container (close-on-exec) or writes why
	// it could not and exits.
	msg, _ := io.ReadAll(statusR)
	if len(msg) > 0 {
		_ = cmd.Wait()
		return nil, &startError{msg: string(msg)}
	}
	go func() {
		err := cmd.Wait()
		st := exitStatus{at: r.clock.Now()}
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				st.signal = ws.Signal()
				st.code = 128 + int32(ws.Signal())
			} else {
				st.code = int32(ee.ExitCode())
			}
		default:
			st.code = 255
		}
		onExit(st)
	}()
	return osProcess{p: cmd.Process}, nil
}

// spawner forks container processes from one OS thread that never exits. The kernel sends
// the parent-death signal (Pdeathsig) when the forking thread ends, and the Go runtime ends
// a thread whose goroutine exits while locked to it (as namespace-entering code does), so
// forking from an arbitrary goroutine could kill a container while the agent is alive.
type spawner struct {
	requests chan spawnRequest
}

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

var containerSpawner = sync.OnceValue(func() *spawner {
	s := &spawner{requests: make(chan spawnRequest)}
	go func() {
		// Never unlocked: the thread lives as long as the process.
		runtime.LockOSThread()
		for req := range s.requests {
			req.done <- req.cmd.Start()
		}
	}()
	return s
})

func (s *spawner) start(cmd *exec.Cmd) error {
	req := spawnRequest{cmd: cmd, done: make(chan error, 1)}
	s.requests <- req
	return <-req.done
}
