package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func TestFileTail(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var long strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&long, "line %d\n", i)
	}
	tests := []struct {
		name string
		path string
		n    int
		want string
	}{
		{name: "short file", path: write("short", "a\nb\n"), n: 30, want: "a\nb"},
		{name: "last lines of a long file", path: write("long", long.String()), n: 3, want: "line 98\nline 99\nline 100"},
		{name: "no trailing newline", path: write("partial", "a\nb"), n: 1, want: "b"},
		{name: "missing file", path: filepath.Join(dir, "missing"), n: 3, want: "(no log: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fileTail(tt.path, tt.n); !strings.HasPrefix(got, tt.want) {
				t.Errorf("fileTail() = %q, want %q", got, tt.want)
			}
		})
	}
}

// A component that dies during start-up is reported with its exit status and the
// tail of its log, without waiting for the start-up deadline.
func TestWaitHealthyReportsExitWithLogTail(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	c, err := startComponent("broken", "/bin/sh", []string{"-c", "echo starting; echo 'error: unknown flag --nope' >&2; exit 3"}, t.TempDir(), clk)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = c.waitHealthy(ctx, func(context.Context) error { return errors.New("not serving") })
	if err == nil {
		t.Fatal("waitHealthy() = nil, want an error")
	}
	for _, want := range []string{"broken exited during start-up", "exit status 3", "starting", "error: unknown flag --nope"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestWaitHealthyPassesOnceHealthy(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	c, err := startComponent("sleeper", "/bin/sh", []string{"-c", "exec sleep 600"}, t.TempDir(), clk)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(time.Second)
	if err := c.waitHealthy(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Fatalf("waitHealthy() = %v", err)
	}
}

// Stop escalates to SIGKILL when the grace period passes.
func TestStopKillsAfterGrace(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	if err := syscall.Mkfifo(ready, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := startComponent("stubborn", "/bin/sh", []string{"-c", "trap '' TERM; echo ok > " + ready + "; while :; do sleep 1; done"}, dir, clk)
	if err != nil {
		t.Fatal(err)
	}
	// Opening the FIFO blocks until the shell, with its trap installed, writes to it.
	if _, err := os.ReadFile(ready); err != nil {
		t.Fatal(err)
	}
	// A fresh clock, so that the only waiter on it is Stop's grace timer.
	clk = testingclock.NewFakeClock(time.Now())
	c.clock = clk
	stopped := make(chan struct{})
	go func() {
		c.Stop(30 * time.Second)
		close(stopped)
	}()
	// Stop is waiting for the grace period; let it pass on the fake clock.
	for !clk.HasWaiters() {
		select {
		case <-stopped:
			t.Fatal("Stop returned before the grace period")
		case <-time.After(10 * time.Millisecond):
		}
	}
	clk.Step(31 * time.Second)
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Stop did not return after SIGKILL")
	}
}
