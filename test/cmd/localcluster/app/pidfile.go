package app

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// pidFile records the running cluster: the pid of the `up` process on the first
// line and, once the cluster is ready, its state directory on the second.
type pidFile struct {
	Path string
}

type pidRecord struct {
	PID      int
	StateDir string
}

func (p pidFile) write(r pidRecord) error {
	if p.Path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p.Path), 0o755); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	content := fmt.Sprintf("%d\n%s\n", r.PID, r.StateDir)
	tmp := p.Path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if err := os.Rename(tmp, p.Path); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

// read returns the record, or an error wrapping os.ErrNotExist when there is none.
func (p pidFile) read() (pidRecord, error) {
	data, err := os.ReadFile(p.Path)
	if err != nil {
		return pidRecord{}, err
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		return pidRecord{}, fmt.Errorf("pid file %s: bad pid %q", p.Path, lines[0])
	}
	r := pidRecord{PID: pid}
	if len(lines) > 1 {
		r.StateDir = strings.TrimSpace(lines[1])
	}
	return r, nil
}

// removeIfOwned deletes the pid file if it still names pid.
func (p pidFile) removeIfOwned(pid int) {
	if p.Path == "" {
		return
	}
	if r, err := p.read(); err == nil && r.PID == pid {
		os.Remove(p.Path)
	}
}

// isLocalClusterProcess reports whether pid is alive and is a `localcluster up`.
func isLocalClusterProcess(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	if len(args) < 2 || !strings.Contains(filepath.Base(string(args[0])), "localcluster") {
		return false
	}
	for _, a := range args[1:] {
		if string(a) == "up" {
			return true
		}
	}
	return false
}

// processesMentioning lists pids (other than this process) whose command line
// contains s.
func processesMentioning(s string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
