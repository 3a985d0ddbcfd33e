package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDialer opens TCP connections inside another network namespace from a
// process that stays in its own.
//
// A socket belongs to the namespace of the thread that creates it, for its whole
// life. One goroutine, locked to a thread that has entered the namespace, creates
// sockets on request; the caller connects them, so a slow connect never blocks
// other dials. The thread is never unlocked: when the dialer closes, its goroutine
// returns while still locked and the runtime ends the thread, which releases the
// namespace.
type netnsDialer struct {
	requests chan socketRequest
	stop     chan struct{}
	done     chan struct{}
}

type socketRequest struct {
	family int
	reply  chan socketReply
}

type socketReply struct {
	fd  int
	err error
}

// newNetnsDialer enters the network namespace at nsPath (for example
// /proc/<pid>/ns/net) on a dedicated thread.
func newNetnsDialer(nsPath string) (*netnsDialer, error) {
	ns, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	d := &netnsDialer{
		requests: make(chan socketRequest),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	entered := make(chan error, 1)
	go func() {
		defer close(d.done)
		runtime.LockOSThread()
		// Deliberately no UnlockOSThread: see the type comment.
		err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
		ns.Close()
		entered <- err
		if err != nil {
			return
		}
		for {
			select {
			case <-d.stop:
				return
			case req := <-d.requests:
				fd, err := unix.Socket(req.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
				req.reply <- socketReply{fd: fd, err: err}
			}
		}
	}()
	if err := <-entered; err != nil {
		<-d.done
		return nil, fmt.Errorf("enter network namespace %s: %w", nsPath, err)
	}
	return d, nil
}

var errDialerClosed = errors.New("network namespace dialer closed")

// DialContext connects to addr ("ip:port"; "localhost" means 127.0.0.1) over TCP
// inside the namespace.
func (d *netnsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("dial %s %s: only tcp is supported in the node network", network, addr)
	}
	target, err := parseNodeAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	family := unix.AF_INET
	if target.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := d.socket(ctx, family)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn, err := connectSocket(ctx, fd, target)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(target), Err: err}
	}
	return conn, nil
}

func (d *netnsDialer) socket(ctx context.Context, family int) (int, error) {
	req := socketRequest{family: family, reply: make(chan socketReply, 1)}
	select {
	case d.requests <- req:
	case <-d.done:
		return -1, errDialerClosed
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	r := <-req.reply
	if r.err != nil {
		return -1, fmt.Errorf("create socket in node network: %w", r.err)
	}
	return r.fd, nil
}

// Close ends the namespace thread. Connections already open stay usable.
func (d *netnsDialer) Close() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
}

func parseNodeAddr(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want a numeric address in the node network: %w", err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// connectSocket connects the non-blocking socket fd to target and returns it as a
// *net.TCPConn. It takes ownership of fd.
func connectSocket(ctx context.Context, fd int, target netip.AddrPort) (net.Conn, error) {
	var sa unix.Sockaddr
	if target.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(target.Port()), Addr: target.Addr().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(target.Port()), Addr: target.Addr().As16()}
	}
	err := unix.Connect(fd, sa)
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	// Hand the socket to the runtime poller and wait until it is writable, which is
	// when a non-blocking connect has finished.
	f := os.NewFile(uintptr(fd), "netns-socket")
	pending, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("wrap socket: %w", err)
	}
	defer pending.Close()
	if deadline, ok := ctx.Deadline(); ok {
		pending.SetWriteDeadline(deadline)
	}
	stopCancel := context.AfterFunc(ctx, func() { pending.SetWriteDeadline(time.Unix(1, 0)) })
	defer stopCancel()
	raw, err := pending.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var connectErr error
	waitErr := raw.Write(func(s uintptr) bool {
		soErr, err := unix.GetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			connectErr = os.NewSyscallError("getsockopt", err)
			return true
		}
		switch e := unix.Errno(soErr); e {
		case 0:
			return true
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		default:
			connectErr = os.NewSyscallError("connect", e)
			return true
		}
	})
	if waitErr != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, waitErr
	}
	if connectErr != nil {
		return nil, connectErr
	}
	// Wrap the connected socket again so that the returned connection knows its
	// peer address and carries no deadline.
	var conn net.Conn
	ctrlErr := raw.Control(func(s uintptr) {
		dup, err := unix.Dup(int(s))
		if err != nil {
			connectErr = os.NewSyscallError("dup", err)
			return
		}
		unix.CloseOnExec(dup)
		f := os.NewFile(uintptr(dup), "netns-conn")
		conn, connectErr = net.FileConn(f)
		f.Close()
	})
	if ctrlErr != nil {
		return nil, ctrlErr
	}
	if connectErr != nil {
		return nil, connectErr
	}
	return conn, nil
}
