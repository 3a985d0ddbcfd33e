package nodeagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// podGateway is the link-local next hop every pod routes through. Each node-side veth
// carries it as a /32 so that it answers the pod's ARP request, like the CNI ptp plugin.
const podGateway = "169.254.1.1"

// ipAllocator hands out pod addresses from the node's pod CIDR. It walks the range
// round-robin so that an address just released is not handed out again at once.
type ipAllocator struct {
	mu       sync.Mutex
	prefix   netip.Prefix
	reserved map[netip.Addr]bool
	used     map[netip.Addr]bool
	next     netip.Addr
}

func newIPAllocator(prefix netip.Prefix, reserved ...netip.Addr) *ipAllocator {
	a := &ipAllocator{prefix: prefix.Masked(), reserved: map[netip.Addr]bool{}, used: map[netip.Addr]bool{}}
	a.reserved[a.prefix.Addr()] = true // network address
	last := a.prefix.Addr()
	for p := a.prefix.Addr(); a.prefix.Contains(p); p = p.Next() {
		last = p
	}
	a.reserved[last] = true // broadcast address
	for _, r := range reserved {
		a.reserved[r] = true
	}
	a.next = a.prefix.Addr()
	return a
}

// allocate returns a free address or an error when the range is exhausted.
func (a *ipAllocator) allocate() (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.next
	for {
		p = p.Next()
		if !a.prefix.Contains(p) {
			p = a.prefix.Addr()
		}
		if !a.reserved[p] && !a.used[p] {
			a.used[p] = true
			a.next = p
			return p, nil
		}
		if p == a.next {
			return netip.Addr{}, fmt.Errorf("pod CIDR %s: no free address", a.prefix)
		}
	}
}

func (a *ipAllocator) release(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.used, ip)
}

// podNetwork gives a pod its own network namespace connected to the node's.
type podNetwork interface {
	// setup creates the namespace for the pod with id and returns its path.
	setup(ctx context.Context, id string, ip netip.Addr) (string, error)
	// teardown removes what setup created; it is idempotent.
	teardown(ctx context.Context, id string) error
}

// vethNetwork is a podNetwork built from a persistent network namespace (a bind-mounted
// nsfs file under dir, so it outlives container restarts) and a veth pair with /32 routes
// on both sides. It uses iproute2 and util-linux, which keeps it short and debuggable.
type vethNetwork struct {
	dir    string
	nodeIP string
}

var _ podNetwork = (*vethNetwork)(nil)

func (n *vethNetwork) nsPath(id string) string { return filepath.Join(n.dir, id) }

// hostVethName is unique per pod across all agents of a process (interface names are
// limited to 15 bytes).
func hostVethName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "wsp" + hex.EncodeToString(sum[:])[:11]
}

func (n *vethNetwork) setup(ctx context.Context, id string, ip netip.Addr) (string, error) {
	ns := n.nsPath(id)
	if err := n.teardown(ctx, id); err != nil {
		return "", fmt.Errorf("clean previous network of %s: %w", id, err)
	}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return "", fmt.Errorf("create netns dir: %w", err)
	}
	if err := os.WriteFile(ns, nil, 0o444); err != nil {
		return "", fmt.Errorf("create netns file: %w", err)
	}
	host := hostVethName(id)
	steps := []struct {
		args  []string
		batch string
	}{
		{args: []string{"unshare", "--net=" + ns, "true"}},
		{args: []string{"ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns}},
		{args: []string{"ip", "-batch", "-"}, batch: strings.Join([]string{
			"addr add " + podGateway + "/32 dev " + host + " scope link",
			"link set " + host + " up",
			"route add " + ip.String() + "/32 dev " + host + " src " + n.nodeIP,
		}, "\n")},
		{args: []string{"nsenter", "--net=" + ns, "ip", "-batch", "-"}, batch: strings.Join([]string{
			"link set lo up",
			"addr add " + ip.String() + "/32 dev eth0",
			"link set eth0 up",
			"route add " + podGateway + " dev eth0 scope link",
			"route add default via " + podGateway + " dev eth0 src " + ip.String(),
		}, "\n")},
	}
	for _, s := range steps {
		if err := run(ctx, s.batch, s.args...); err != nil {
			terr := n.teardown(context.WithoutCancel(ctx), id)
			return "", errors.Join(fmt.Errorf("set up network of %s: %w", id, err), terr)
		}
	}
	return ns, nil
}

func (n *vethNetwork) teardown(ctx context.Context, id string) error {
	var errs []error
	host := hostVethName(id)
	// /sys may show another namespace's devices, so ask ip itself.
	if err := run(ctx, "", "ip", "link", "del", host); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		errs = append(errs, err)
	}
	errs = append(errs, removeNetnsFile(n.nsPath(id)))
	return errors.Join(errs...)
}

// removeNetnsFile unmounts and removes a namespace file; the namespace, and with it the
// pod's end of the veth pair, goes away when no process uses it any more.
func removeNetnsFile(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// run runs a command with stdin and returns its output in the error when it fails.
func run(ctx context.Context, stdin string, args ...string) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin + "\n")
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// enableForwarding turns on IPv4 forwarding in the node network namespace, which pod-to-pod
// traffic needs (it passes through the node namespace).
func enableForwarding() error {
	const knob = "/proc/sys/net/ipv4/ip_forward"
	cur, err := os.ReadFile(knob)
	if err != nil {
		return fmt.Errorf("read %s: %w", knob, err)
	}
	if strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(knob, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	return nil
}
