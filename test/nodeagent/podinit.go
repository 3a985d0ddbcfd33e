package nodeagent

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// A container is started by re-executing the current binary (/proc/self/exe) with
// WSSCALE_NODEAGENT_LAUNCH naming a launch spec. The kernel gives that process a fresh mount
// and UTS namespace (clone flags set by processRuntime); this package's init then, still
// single-goroutine and on the main thread, joins the pod's network namespace, bind-mounts
// the prepared volume directories at the container's mount paths, sets the hostname,
// drops privileges and executes the container's binary in place. Any binary that imports
// this package can therefore run pods, and the mounts are visible to that container only.
func init() {
	if specPath := os.Getenv(launchEnv); specPath != "" {
		os.Exit(launchContainer(specPath))
	}
}

// statusFD is the pipe on which the launcher reports why it could not start the container.
const statusFD = 3

func launchContainer(specPath string) int {
	// setns(CLONE_NEWNET) affects the calling thread only; exec from the same thread
	// carries the namespace into the container.
	runtime.LockOSThread()
	status := os.NewFile(statusFD, "status")
	unix.CloseOnExec(statusFD)
	fail := func(format string, args ...any) int {
		msg := fmt.Sprintf(format, args...)
		fmt.Fprintln(os.Stderr, "container start failed: "+msg)
		if status != nil {
			fmt.Fprint(status, msg)
		}
		return 128
	}
	data, err := os.ReadFile(specPath)
	if err != nil {
		return fail("read launch spec: %v", err)
	}
	var spec launchSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return fail("decode launch spec %s: %v", specPath, err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("make / private: %v", err)
	}
	if spec.NetNS != "" {
		fd, err := unix.Open(spec.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail("open network namespace %s: %v", spec.NetNS, err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fail("enter network namespace %s: %v", spec.NetNS, err)
		}
		unix.Close(fd)
	}
	for _, m := range spec.Mounts {
		if err := unix.Mount(m.Source, m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fail("mount %s at %s: %v", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fail("make %s read-only: %v", m.Target, err)
			}
		}
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fail("set hostname: %v", err)
		}
	}
	if spec.GID != nil || spec.UID != nil {
		groups := make([]int, 0, len(spec.Groups))
		for _, g := range spec.Groups {
			groups = append(groups, int(g))
		}
		if err := unix.Setgroups(groups); err != nil {
			return fail("set groups: %v", err)
		}
	}
	if spec.GID != nil {
		if err := unix.Setgid(int(*spec.GID)); err != nil {
			return fail("set gid %d: %v", *spec.GID, err)
		}
	}
	if spec.UID != nil {
		if err := unix.Setuid(int(*spec.UID)); err != nil {
			return fail("set uid %d: %v", *spec.UID, err)
		}
	}
	workDir := spec.WorkDir
	if workDir == "" {
		workDir = "/"
	}
	if err := os.Chdir(workDir); err != nil {
		return fail("change to working directory %s: %v", workDir, err)
	}
	err = unix.Exec(spec.Binary, spec.Argv, spec.Env)
	return fail("exec %s: %v", spec.Binary, err)
}
