// Package framework gives end-to-end tests a running local cluster: one per test
// binary, started on first use and shared by every test of the package.
//
// A package that uses it calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { framework.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		c := framework.Cluster(t)
//		client := c.Client()
//		...
//	}
//
// The cluster needs root. The pinned control plane is built with hack/build-tools.sh
// (a no-op when it is current) and the project's binaries with `go build ./cmd/...`,
// both into <repo>/.local/bin, before the cluster starts; a failure fails the test
// with the reason, it never skips.
package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/wsscale/wsscale/test/localcluster"
)

// modulePath identifies the repository root's go.mod.
const modulePath = "github.com/wsscale/wsscale"

var (
	mainCalled bool
	configure  []func(*localcluster.Options)

	startOnce sync.Once
	shared    *localcluster.Cluster
	startErr  error
)

// Main runs the package's tests and then stops the shared cluster, if one was
// started, so that nothing of it is left behind. Options functions adjust the
// cluster's options (for example the HPA periods) before it starts.
func Main(m *testing.M, opts ...func(*localcluster.Options)) {
	mainCalled = true
	configure = opts
	code := m.Run()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "framework: stop local cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// Cluster returns the shared cluster, starting it on first use. It fails t when
// the cluster cannot start.
func Cluster(t testing.TB) *localcluster.Cluster {
	t.Helper()
	if !mainCalled {
		t.Fatal("framework.Cluster needs `func TestMain(m *testing.M) { framework.Main(m) }` in the test package; Main stops the cluster after the tests")
	}
	startOnce.Do(func() { shared, startErr = start() })
	if startErr != nil {
		t.Fatalf("local cluster: %v", startErr)
	}
	select {
	case <-shared.Done():
		t.Fatalf("local cluster is not running any more: %v", shared.Err())
	default:
	}
	return shared
}

func start() (*localcluster.Cluster, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	if err := EnsureBinaries(root); err != nil {
		return nil, err
	}
	o := localcluster.NewOptions()
	o.BinDir = filepath.Join(root, ".local", "bin")
	o.APIPort = 0 // never collide with a cluster started by `make cluster-up`
	for _, f := range configure {
		f(o)
	}
	return localcluster.Start(context.Background(), o)
}

// RepoRoot finds the repository root: the nearest directory upwards from the working
// directory whose go.mod declares the project's module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod of " + modulePath + ") not found above the working directory")
		}
		dir = parent
	}
}

// EnsureBinaries builds what the cluster runs into <root>/.local/bin: the pinned
// components through hack/build-tools.sh, which does nothing when they are current
// (a cold build takes minutes), and the project's commands. Test binaries of several
// packages run at once; a file lock makes them build one after the other, so that a
// cold machine builds the pinned components once, not once per package.
func EnsureBinaries(root string) error {
	unlock, err := lockFile(filepath.Join(root, ".local", "binaries.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	var out bytes.Buffer
	tools := exec.Command(filepath.Join(root, "hack", "build-tools.sh"))
	tools.Dir = root
	tools.Stdout, tools.Stderr = &out, &out
	if err := tools.Run(); err != nil {
		return fmt.Errorf("build pinned components (hack/build-tools.sh): %w\n%s", err, out.String())
	}
	out.Reset()
	list := exec.Command("go", "list", "./cmd/...")
	list.Dir = root
	list.Stderr = &out
	pkgs, err := list.Output()
	if err != nil {
		return fmt.Errorf("go list ./cmd/...: %w\n%s", err, out.String())
	}
	if strings.TrimSpace(string(pkgs)) == "" {
		return nil
	}
	// testhost is the tests' own image (wsscale/testhost): it shows what a pod sees.
	build := exec.Command("go", "build", "-o", filepath.Join(root, ".local", "bin")+string(filepath.Separator), "./cmd/...", "./test/cmd/testhost")
	build.Dir = root
	build.Stdout, build.Stderr = &out, &out
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/... ./test/cmd/testhost: %w\n%s", err, out.String())
	}
	// go build names cmd/echo's binary echo; it is installed as wsecho (as `make build` does), so
	// that `wsecho load` is not the shell's builtin echo.
	bin := filepath.Join(root, ".local", "bin")
	if err := os.Rename(filepath.Join(bin, "echo"), filepath.Join(bin, "wsecho")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("install cmd/echo as wsecho: %w", err)
	}
	return nil
}

// lockFile takes an exclusive lock on path, creating it, and returns the function that
// releases it.
func lockFile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open build lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("take build lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}
