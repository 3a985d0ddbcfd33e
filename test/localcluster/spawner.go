package localcluster

import (
	"os/exec"
	"runtime"
	"sync"
)

// processSpawner starts processes from one OS thread that never exits.
//
// Linux delivers a parent-death signal (SysProcAttr.Pdeathsig) when the thread
// that forked a process exits, not when the process does. The Go runtime ends
// threads whose goroutine exits while locked to them (as code that enters network
// namespaces does), so a process forked from an arbitrary goroutine could be
// killed while its parent is alive. Forking from a dedicated locked thread ties
// the signal to the lifetime of the whole process.
type processSpawner struct {
	requests chan spawnRequest
}

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

func newProcessSpawner() *processSpawner {
	s := &processSpawner{requests: make(chan spawnRequest)}
	go s.loop()
	return s
}

func (s *processSpawner) loop() {
	// Never unlocked: this thread lives as long as the process.
	runtime.LockOSThread()
	for req := range s.requests {
		req.done <- req.cmd.Start()
	}
}

// Start starts cmd from the spawner's thread.
func (s *processSpawner) Start(cmd *exec.Cmd) error {
	req := spawnRequest{cmd: cmd, done: make(chan error, 1)}
	s.requests <- req
	return <-req.done
}

// spawner is shared by every process this package starts; it is created on first use.
var spawner = sync.OnceValue(newProcessSpawner)
