package localcluster_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/test/e2e/framework"
	"github.com/wsscale/wsscale/test/localcluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if cliPath != "" {
		os.RemoveAll(filepath.Dir(cliPath))
	}
	os.Exit(code)
}

var (
	prepareOnce sync.Once
	repoRoot    string
	cliPath     string
	prepareErr  error
)

// prepare builds the pinned components (if they are not current), the project's
// binaries and the localcluster command, once per test binary.
func prepare(t *testing.T) (root, cli string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the local cluster needs root (it creates network, mount and PID namespaces)")
	}
	prepareOnce.Do(func() {
		repoRoot, prepareErr = framework.RepoRoot()
		if prepareErr != nil {
			return
		}
		if prepareErr = framework.EnsureBinaries(repoRoot); prepareErr != nil {
			return
		}
		dir, err := os.MkdirTemp("", "localcluster-cli-")
		if err != nil {
			prepareErr = err
			return
		}
		cliPath = filepath.Join(dir, "localcluster")
		build := exec.Command("go", "build", "-o", cliPath, "./test/cmd/localcluster")
		build.Dir = repoRoot
		if out, err := build.CombinedOutput(); err != nil {
			prepareErr = fmt.Errorf("build localcluster: %v\n%s", err, out)
		}
	})
	if prepareErr != nil {
		t.Fatal(prepareErr)
	}
	return repoRoot, cliPath
}

// nodeNamespaces identifies a running node by the inodes of its PID and network
// namespaces, read from a component whose command line names the state directory.
type nodeNamespaces struct {
	pid, net string
}

func nodeNamespacesOf(t *testing.T, stateParent string) nodeNamespaces {
	t.Helper()
	for _, pid := range processesMentioning(stateParent) {
		pidNS, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		netNS, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		self, _ := os.Readlink("/proc/self/ns/pid")
		if err1 == nil && err2 == nil && pidNS != self {
			return nodeNamespaces{pid: pidNS, net: netNS}
		}
	}
	t.Fatalf("no process of the node found under %s", stateParent)
	return nodeNamespaces{}
}

// processesMentioning lists pids whose command line contains s.
func processesMentioning(s string) []int {
	return scanProc(func(pid string) bool {
		cmdline, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		return err == nil && bytes.Contains(cmdline, []byte(s))
	})
}

// processesIn lists pids any of whose threads are in the namespace ns ("pid" or "net").
func processesIn(kind, ns string) []int {
	return scanProc(func(pid string) bool {
		tasks, _ := os.ReadDir(filepath.Join("/proc", pid, "task"))
		for _, task := range tasks {
			if link, err := os.Readlink(filepath.Join("/proc", pid, "task", task.Name(), "ns", kind)); err == nil && link == ns {
				return true
			}
		}
		return false
	})
}

func scanProc(match func(pid string) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		if match(e.Name()) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestSignalLeavesNothingBehind runs `localcluster up` with a pod, stops it with a
// signal and checks that no process, namespace, state directory or kubeconfig is left.
func TestSignalLeavesNothingBehind(t *testing.T) {
	root, cli := prepare(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			base := t.TempDir()
			stateParent := filepath.Join(base, "state")
			kubeconfig := filepath.Join(base, "kubeconfig")
			cmd := exec.Command(cli, "up", "--api-port=0", "--bin-dir="+filepath.Join(root, ".local", "bin"),
				"--state-dir-parent="+stateParent, "--kubeconfig="+kubeconfig)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			cmd.Stderr = &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			ready := make(chan struct{})
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "Local cluster is ready") {
						close(ready)
					}
				}
				exited <- cmd.Wait()
			}()
			select {
			case <-ready:
			case err := <-exited:
				t.Fatalf("localcluster up exited before it was ready: %v\n%s", err, logs.String())
			case <-time.After(4 * time.Minute):
				cmd.Process.Kill()
				t.Fatalf("localcluster up not ready after 4m\n%s", logs.String())
			}

			runPod(t, kubeconfig)
			node := nodeNamespacesOf(t, stateParent)
			// The scans must see the node before the signal, or their silence after it proves nothing.
			if n := len(processesIn("pid", node.pid)); n < 6 {
				t.Fatalf("found %d processes in the node's PID namespace, want the supervisor, 4 components and a pod", n)
			}

			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("localcluster up exited with %v after %v\n%s", err, sig, logs.String())
				}
			case <-time.After(3 * time.Minute):
				cmd.Process.Kill()
				t.Fatalf("localcluster up still running 3m after %v", sig)
			}

			if pids := processesMentioning(stateParent); len(pids) > 0 {
				t.Errorf("processes naming the state directory survived: %v", pids)
			}
			if pids := processesIn("pid", node.pid); len(pids) > 0 {
				t.Errorf("processes of the node's PID namespace survived: %v", pids)
			}
			if pids := processesIn("net", node.net); len(pids) > 0 {
				t.Errorf("processes in the node's network namespace survived: %v", pids)
			}
			if entries, err := os.ReadDir(stateParent); err != nil || len(entries) > 0 {
				t.Errorf("state directory parent holds %v (%v), want it empty", entries, err)
			}
			if _, err := os.Stat(kubeconfig); !os.IsNotExist(err) {
				t.Errorf("kubeconfig %s still exists (%v)", kubeconfig, err)
			}
		})
	}
}

// runPod starts one echo pod and waits until it runs, so that teardown has a pod to stop.
func runPod(t *testing.T, kubeconfig string) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	labels := map[string]string{"app": "teardown"}
	_, err = client.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "teardown"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "echo", Image: "wsscale/echo:test"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=teardown"})
		if err != nil {
			return false, nil
		}
		return len(pods.Items) == 1 && pods.Items[0].Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		t.Fatalf("echo pod never ran: %v", err)
	}
}

// TestStartFailuresAreReported checks that a start-up failure comes back as an
// error that names the cause, and that nothing is left behind.
func TestStartFailuresAreReported(t *testing.T) {
	root, _ := prepare(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name   string
		modify func(o *localcluster.Options)
		want   []string
	}{
		{
			name:   "API port in use",
			modify: func(o *localcluster.Options) { o.APIPort = busyPort },
			want:   []string{fmt.Sprintf("port %d already in use", busyPort)},
		},
		{
			name:   "binaries missing",
			modify: func(o *localcluster.Options) { o.BinDir = t.TempDir() },
			want:   []string{"missing etcd, kube-apiserver", "hack/build-tools.sh"},
		},
		{
			name: "component exits during start-up",
			modify: func(o *localcluster.Options) {
				o.ExtraArgs = map[string][]string{"kube-apiserver": {"--no-such-flag"}}
			},
			want: []string{"kube-apiserver exited during start-up", "unknown flag: --no-such-flag"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stateParent := t.TempDir()
			o := localcluster.NewOptions()
			o.BinDir = filepath.Join(root, ".local", "bin")
			o.APIPort = 0
			o.StateDirParent = stateParent
			o.StartTimeout = 2 * time.Minute
			tt.modify(o)
			c, err := localcluster.Start(context.Background(), o)
			if err == nil {
				c.Stop()
				t.Fatal("Start succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if pids := processesMentioning(stateParent); len(pids) > 0 {
				t.Errorf("processes survived the failed start: %v", pids)
			}
			if entries, _ := os.ReadDir(stateParent); len(entries) > 0 {
				t.Errorf("state directory left behind: %v", entries)
			}
		})
	}
}
