package nodeagent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

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
	// Every source, and the binary, is opened before the first mount: a volume mounted at a
	// path above the node's state directory (an emptyDir at /tmp, say) would otherwise hide
	// the sources of the mounts after it. Mounting from the open descriptors also makes the
	// order of the volumes in the pod spec irrelevant.
	sources := make([]int, len(spec.Mounts))
	for i, m := range spec.Mounts {
		fd, err := unix.Open(m.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail("open volume %s for %s: %v", m.Source, m.Target, err)
		}
		sources[i] = fd
	}
	binary, err := unix.Open(spec.Binary, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open binary %s: %v", spec.Binary, err)
	}
	for _, i := range mountOrder(spec.Mounts) {
		m := spec.Mounts[i]
		if err := ensureMountPoint(sources[i], m.Target); err != nil {
			return fail("mount %s at %s: %v", m.Source, m.Target, err)
		}
		src := fmt.Sprintf("/proc/self/fd/%d", sources[i])
		if err := unix.Mount(src, m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
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
	// The binary is executed through its descriptor, since a volume may now cover its path.
	err = unix.Exec(fmt.Sprintf("/proc/self/fd/%d", binary), spec.Argv, spec.Env)
	return fail("exec %s: %v", spec.Binary, err)
}

// mountOrder returns the indexes of mounts with every target after the targets that
// contain it, as a container runtime mounts them: /tmp before /tmp/certs, whatever the
// order of the pod's volumeMounts. Mounts of the same depth keep their order.
func mountOrder(mounts []bindMount) []int {
	order := make([]int, len(mounts))
	for i := range order {
		order[i] = i
	}
	depth := func(p string) int { return strings.Count(filepath.Clean(p), "/") }
	sort.SliceStable(order, func(a, b int) bool {
		return depth(mounts[order[a]].Target) < depth(mounts[order[b]].Target)
	})
	return order
}

// ensureMountPoint creates target inside the container's mount namespace when an earlier
// mount (a volume at a parent path) hid the mount point prepared on the node: a directory,
// or an empty file when the source is a file.
func ensureMountPoint(source int, target string) error {
	if _, err := os.Lstat(target); err == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(source, &st); err != nil {
		return fmt.Errorf("stat source: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}
