package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to enter network namespaces; the local cluster needs it too")
	}
}

// newPrivateNetns creates a network namespace with loopback up and returns the path
// of a thread that stays in it until the test ends.
func newPrivateNetns(t *testing.T) string {
	t.Helper()
	path := make(chan string)
	errc := make(chan error, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends with this goroutine, taking the namespace along.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		if err := setLinkUp("lo"); err != nil {
			errc <- err
			return
		}
		path <- fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		<-release
	}()
	select {
	case p := <-path:
		return p
	case err := <-errc:
		t.Fatalf("create network namespace: %v", err)
		return ""
	}
}

// inNetns runs f on a thread inside the namespace at path.
func inNetns(t *testing.T, path string, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNetnsDialerReachesOnlyTheNamespace(t *testing.T) {
	requireRoot(t)
	nsPath := newPrivateNetns(t)

	// A server inside the namespace; the same port on the host stays unused.
	var ln net.Listener
	inNetns(t, nsPath, func() {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Error(err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "inside\n")
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Skipf("port %d is also open on the host; cannot tell the namespaces apart", port)
	}

	d, err := newNetnsDialer(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name    string
		addr    string
		want    string
		wantErr string
	}{
		{name: "numeric address", addr: ln.Addr().String(), want: "inside\n"},
		{name: "localhost", addr: fmt.Sprintf("localhost:%d", port), want: "inside\n"},
		{name: "refused", addr: "127.0.0.1:1", wantErr: "connection refused"},
		{name: "host names are not resolved", addr: "example.com:80", wantErr: "numeric address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := d.DialContext(ctx, "tcp", tt.addr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DialContext(%s) = %v, want an error containing %q", tt.addr, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DialContext(%s): %v", tt.addr, err)
			}
			defer c.Close()
			if _, ok := c.(*net.TCPConn); !ok {
				t.Errorf("connection is a %T, want *net.TCPConn", c)
			}
			if c.RemoteAddr() == nil || c.RemoteAddr().(*net.TCPAddr).Port != port {
				t.Errorf("RemoteAddr() = %v, want port %d", c.RemoteAddr(), port)
			}
			got, _ := io.ReadAll(c)
			if string(got) != tt.want {
				t.Errorf("read %q, want %q", got, tt.want)
			}
		})
	}

	d.Close()
	if _, err := d.DialContext(ctx, "tcp", ln.Addr().String()); !errors.Is(err, errDialerClosed) {
		t.Errorf("DialContext after Close = %v, want %v", err, errDialerClosed)
	}
}

func TestNetnsDialerHonoursContext(t *testing.T) {
	requireRoot(t)
	d, err := newNetnsDialer(newPrivateNetns(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.DialContext(ctx, "tcp", "127.0.0.1:1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("DialContext with a cancelled context = %v, want %v", err, context.Canceled)
	}
}

func TestAddIPv4Address(t *testing.T) {
	requireRoot(t)
	nsPath := newPrivateNetns(t)
	inNetns(t, nsPath, func() {
		if err := addIPv4Address(1, net.ParseIP(NodeIP), 32); err != nil {
			t.Fatalf("add %s: %v", NodeIP, err)
		}
		// Adding it twice is refused by the kernel (NLM_F_EXCL), and the error says so.
		if err := addIPv4Address(1, net.ParseIP(NodeIP), 32); !errors.Is(err, syscall.EEXIST) {
			t.Errorf("second add = %v, want EEXIST", err)
		}
		lo, err := net.InterfaceByIndex(1)
		if err != nil {
			t.Fatal(err)
		}
		addrs, err := lo.Addrs()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, a := range addrs {
			found = found || a.String() == NodeIP+"/32"
		}
		if !found {
			t.Errorf("lo addresses = %v, want %s/32", addrs, NodeIP)
		}
		// The node address is local: something can listen on it.
		ln, err := net.Listen("tcp", NodeIP+":0")
		if err != nil {
			t.Errorf("listen on the node address: %v", err)
		} else {
			ln.Close()
		}
	})
}
