package localcluster

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// setUpNodeNamespace prepares the mount and network namespaces the supervisor was
// started in: mounts stay private to them, /proc shows the private PID namespace,
// loopback is up, the node address is local and the node forwards between pods.
func setUpNodeNamespace() error {
	// Nothing mounted from here on (pod volumes) may propagate to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc for the node's PID namespace: %w", err)
	}
	if err := setLinkUp("lo"); err != nil {
		return err
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	if err := addIPv4Address(lo.Index, net.ParseIP(NodeIP), 32); err != nil {
		return fmt.Errorf("add node address %s to lo: %w", NodeIP, err)
	}
	// Pod to pod traffic crosses the node namespace between veth pairs.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable forwarding in the node network: %w", err)
	}
	return nil
}

// setLinkUp sets IFF_UP on the named interface.
func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: read flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return nil
}

// addIPv4Address adds ip/prefixLen to the interface with index ifIndex through an
// rtnetlink RTM_NEWADDR request, and waits for the kernel's acknowledgement.
func addIPv4Address(ifIndex int, ip net.IP, prefixLen int) error {
	ip4 := ip.To4()
	if ip4 == nil {
		return fmt.Errorf("%s is not an IPv4 address", ip)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind netlink: %w", err)
	}

	const seq = 1
	attr := func(typ uint16, data []byte) []byte {
		b := make([]byte, unix.SizeofRtAttr+len(data))
		binary.NativeEndian.PutUint16(b[0:2], uint16(len(b)))
		binary.NativeEndian.PutUint16(b[2:4], typ)
		copy(b[unix.SizeofRtAttr:], data)
		return b
	}
	body := make([]byte, unix.SizeofIfAddrmsg)
	body[0] = unix.AF_INET
	body[1] = byte(prefixLen)
	body[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(body[4:8], uint32(ifIndex))
	body = append(body, attr(unix.IFA_LOCAL, ip4)...)
	body = append(body, attr(unix.IFA_ADDRESS, ip4)...)

	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:6], unix.RTM_NEWADDR)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	binary.NativeEndian.PutUint32(msg[8:12], seq)
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send netlink request: %w", err)
	}

	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("read netlink reply: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			msgLen := int(binary.NativeEndian.Uint32(b[0:4]))
			if msgLen < unix.SizeofNlMsghdr || msgLen > len(b) {
				return fmt.Errorf("malformed netlink reply")
			}
			typ := binary.NativeEndian.Uint16(b[4:6])
			msgSeq := binary.NativeEndian.Uint32(b[8:12])
			data := b[unix.SizeofNlMsghdr:msgLen]
			if msgSeq == seq && typ == unix.NLMSG_ERROR {
				if len(data) < 4 {
					return fmt.Errorf("short netlink acknowledgement")
				}
				if errno := int32(binary.NativeEndian.Uint32(data[0:4])); errno != 0 {
					return unix.Errno(-errno)
				}
				return nil
			}
			// Messages are aligned to four bytes.
			next := (msgLen + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
			if next >= len(b) {
				break
			}
			b = b[next:]
		}
	}
}
