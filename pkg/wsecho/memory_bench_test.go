package wsecho

import (
	"bufio"
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"k8s.io/utils/clock"
)

// BenchmarkIdleConnectionMemory measures what one idle WebSocket connection costs the server: live
// heap and goroutine stack after a garbage collection, per connection, for connections that never
// sent a message and for connections that exchanged one 2 KiB echo and then went idle. Clients are
// raw sockets in the same process that hold no goroutine; their own few hundred bytes are measured
// separately and subtracted.
//
//	go test -run '^$' -bench IdleConnectionMemory -benchtime 1x ./pkg/wsecho
func BenchmarkIdleConnectionMemory(b *testing.B) {
	b.Run("never-sent", func(b *testing.B) { benchmarkIdleMemory(b, 0) })
	b.Run("after-traffic", func(b *testing.B) { benchmarkIdleMemory(b, 2048) })
}

// benchmarkIdleMemory measures idle connections; with messageSize > 0 each one first exchanges one
// message of that size.
func benchmarkIdleMemory(b *testing.B, messageSize int) {
	const conns = 5000
	cfg := testConfig()
	cfg.MaxConnections = conns
	cfg.MaxMessageBytes = 64 << 10
	cfg.PingInterval = 200 * time.Millisecond // several pings and pongs happen while measuring
	cfg.ReadTimeout = time.Hour
	for i := 0; i < b.N; i++ {
		// Both ends of these plain TCP connections are in this process; the client's share is half.
		pair := measure(func() []net.Conn { return holdRawTCP(b, conns) })
		clientCost := memCost{heap: pair.heap / 2, stack: pair.stack / 2}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		mLis, _ := net.Listen("tcp", "127.0.0.1:0")
		srv := New(cfg, clock.RealClock{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = srv.Serve(ctx, lis, mLis); close(done) }()

		var clients []*rawConn
		total := measure(func() []net.Conn {
			var ncs []net.Conn
			for j := 0; j < conns; j++ {
				nc, err := net.Dial("tcp", lis.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				rc := &rawConn{Conn: nc, br: bufio.NewReader(nc)}
				if err := rc.handshake(lis.Addr().String(), ""); err != nil {
					b.Fatal(err)
				}
				if messageSize > 0 {
					echoOnce(b, rc, messageSize)
				}
				rc.br = nil
				clients = append(clients, rc)
				ncs = append(ncs, nc)
			}
			// Answer a round of pings so that idle connections have seen traffic.
			time.Sleep(500 * time.Millisecond)
			for _, rc := range clients {
				_, _ = rc.Write(frame(true, 0, 0xA, true, nil))
			}
			time.Sleep(500 * time.Millisecond)
			return ncs
		})
		b.ReportMetric(float64(total.heap-clientCost.heap)/conns, "heap-B/conn")
		b.ReportMetric(float64(total.stack-clientCost.stack)/conns, "stack-B/conn")
		b.ReportMetric(float64(total.heap-clientCost.heap+total.stack-clientCost.stack)/conns, "B/conn")
		for _, rc := range clients {
			_ = rc.Close()
		}
		cancel()
		<-done
	}
}

type memCost struct{ heap, stack int64 }

// measure returns the live heap and stack that hold() adds and keeps, after collections.
func measure(hold func() []net.Conn) memCost {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	kept := hold()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(kept)
	return memCost{
		heap:  int64(after.HeapAlloc) - int64(before.HeapAlloc),
		stack: int64(after.StackInuse) - int64(before.StackInuse),
	}
}

// holdRawTCP opens n plain TCP connections to a listener that holds them without any goroutine per
// connection, to measure what the client side of the benchmark costs.
func holdRawTCP(b *testing.B, n int) []net.Conn {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	accepted := make(chan net.Conn, n)
	go func() {
		for i := 0; i < n; i++ {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var out []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, c)
	}
	for i := 0; i < n; i++ {
		out = append(out, <-accepted)
	}
	_ = lis.Close()
	return out
}

// echoOnce sends one binary message of size bytes and reads its echo.
func echoOnce(b *testing.B, rc *rawConn, size int) {
	if _, err := rc.Write(frame(true, 0, 0x2, true, make([]byte, size))); err != nil {
		b.Fatal(err)
	}
	// The echo: a 4-byte header (126: 16-bit length) and the payload.
	if _, err := io.CopyN(io.Discard, rc.br, int64(4+size)); err != nil {
		b.Fatal(err)
	}
}
