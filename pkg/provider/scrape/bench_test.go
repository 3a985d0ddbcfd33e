package scrape

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

// The scrape benchmark runs 10,000 fake pods, each on its own loopback
// address (127.2.x.y, all one port) so that, as with real pods, every target
// is a distinct host with its own keep-alive connection. Serving them takes
// a listener and a connection per pod, and the scraper a connection per pod;
// with RLIMIT_NOFILE capped at 20,000 per process that does not fit in one
// process, so the pods are served by child processes of the test binary
// (fakePodsEnv selects that mode in TestMain), 5,000 pods each. Only
// loopback addresses are bound.
const (
	benchPods       = 10000
	podsPerChild    = 5000
	fakePodsEnv     = "WSSCALE_SCRAPE_FAKE_PODS" // "first,count"
	fakePodBodyFile = "../exposition/testdata/typical.prom"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(fakePodsEnv); spec != "" {
		if err := serveFakePods(spec); err != nil {
			fmt.Fprintln(os.Stderr, "fake pods:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// podAddr is the loopback address of fake pod i.
func podAddr(i int) string {
	return fmt.Sprintf("127.2.%d.%d", i/200, i%200+1)
}

// serveFakePods serves pods [first, first+count) until stdin closes, after
// printing "ready PORT".
func serveFakePods(spec string) error {
	var first, count int
	if _, err := fmt.Sscanf(spec, "%d,%d", &first, &count); err != nil {
		return fmt.Errorf("bad spec %q: %w", spec, err)
	}
	body, err := os.ReadFile(fakePodBodyFile)
	if err != nil {
		return err
	}
	length := strconv.Itoa(len(body))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"text/plain; version=0.0.4; charset=utf-8"}
			h["Content-Length"] = []string{length}
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	l, err := net.Listen("tcp", podAddr(first)+":0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	listeners := []net.Listener{l}
	for i := first + 1; i < first+count; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort(podAddr(i), strconv.Itoa(port)))
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
	}
	for _, l := range listeners {
		go func() { _ = srv.Serve(l) }()
	}
	fmt.Printf("ready %d\n", port)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // returns when the parent goes away
	return nil
}

// countingSink counts outcomes and signals when the count of successful
// scrapes reaches goal.
type countingSink struct {
	ok, failed atomic.Int64
	goal       atomic.Int64
	armed      atomic.Bool
	reached    chan struct{}
	lastErr    atomic.Value
}

var _ Sink = (*countingSink)(nil)

func (c *countingSink) Observe(PodKey, Sample) {
	if n := c.ok.Add(1); n >= c.goal.Load() && c.armed.CompareAndSwap(true, false) {
		c.reached <- struct{}{}
	}
}

func (c *countingSink) Fail(_ PodKey, f Failure) {
	c.failed.Add(1)
	c.lastErr.Store(f.Err.Error())
}

// waitFor waits until n more scrapes succeeded.
func (c *countingSink) waitFor(b *testing.B, n int64) {
	c.goal.Store(c.ok.Load() + n)
	c.armed.Store(true)
	if c.ok.Load() >= c.goal.Load() && c.armed.CompareAndSwap(true, false) {
		return
	}
	select {
	case <-c.reached:
	case <-time.After(5 * time.Minute):
		b.Fatalf("stuck at %d successful scrapes, %d failed (last: %v)", c.ok.Load(), c.failed.Load(), c.lastErr.Load())
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// childCPU returns the CPU time of a running process from /proc.
func childCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// BenchmarkScrape10kPods measures scrapes per second of the real scraper
// (default transport, parser and validation) against 10,000 loopback pods
// serving a typical ~200-line exposition. ns/op is per scrape. The interval
// is short enough that targets are always due, so the scraper runs flat out;
// scrapes/cpu-s counts only this process (the fake pods are other
// processes, reported as pods-cores), and B/pod is the scraper's heap and
// stack in use per pod once every pod has been scraped. transport=keepalive
// is the default KeepAliveTransport; transport=net-http is net/http's
// keep-alive transport (two goroutines per idle connection) for comparison;
// transport=no-keepalive opens a connection per scrape.
func BenchmarkScrape10kPods(b *testing.B) {
	// Keep the scraper's start and stop lines out of the results.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	b.Cleanup(func() { klog.LogToStderr(true) })

	children, urls := startFakePods(b, benchPods)

	for _, bc := range []struct {
		concurrency int
		transport   string
	}{
		{concurrency: DefaultConcurrency, transport: "keepalive"},
		{concurrency: DefaultConcurrency, transport: "net-http"},
		{concurrency: DefaultConcurrency, transport: "no-keepalive"},
		{concurrency: 128, transport: "keepalive"},
	} {
		concurrency := bc.concurrency
		b.Run(fmt.Sprintf("concurrency=%d/transport=%s", concurrency, bc.transport), func(b *testing.B) {
			base := memInUse()
			sink := &countingSink{reached: make(chan struct{}, 1)}
			cfg := NewConfig(activeSeries, maxSeries)
			cfg.Interval = 250 * time.Millisecond // 40,000 scrapes/s asked for
			cfg.Timeout = cfg.Interval
			cfg.Concurrency = concurrency
			switch bc.transport {
			case "net-http":
				cfg.Transport = NewTransport(cfg)
			case "no-keepalive":
				cfg.DisableKeepAlives = true
			}
			s, err := New(cfg, sink)
			if err != nil {
				b.Fatal(err)
			}
			for i, u := range urls {
				if err := s.Set(Target{Key: PodKey{Namespace: "bench", Name: strconv.Itoa(i)}, URL: u}); err != nil {
					b.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = s.Run(ctx); close(done) }()
			defer func() {
				cancel()
				<-done
				s.client.CloseIdleConnections()
			}()
			// Warm up: one scrape of every pod opens its connection.
			sink.waitFor(b, benchPods)
			failedBefore := sink.failed.Load()
			perPod := float64(memInUse()-base) / benchPods

			cpu0, pods0 := cpuTime(b), childrenCPU(children)
			b.ResetTimer()
			sink.waitFor(b, int64(b.N))
			b.StopTimer()
			cpu, pods := cpuTime(b)-cpu0, childrenCPU(children)-pods0

			elapsed := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/elapsed, "scrapes/s")
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "scrapes/cpu-s")
			b.ReportMetric(cpu.Seconds()/elapsed, "cores")
			b.ReportMetric(pods.Seconds()/elapsed, "pods-cores")
			b.ReportMetric(float64(sink.failed.Load()-failedBefore), "failed")
			b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "gomaxprocs")
			b.ReportMetric(perPod, "B/pod")
			if n := sink.failed.Load(); n > 0 {
				b.Logf("%d scrapes failed, last: %v", n, sink.lastErr.Load())
			}
		})
	}
}

// startFakePods serves pods 0..n-1 from child processes, podsPerChild each,
// until the benchmark ends, and returns the children and the pods' URLs.
func startFakePods(b *testing.B, n int) ([]*exec.Cmd, []string) {
	b.Helper()
	var children []*exec.Cmd
	var urls []string
	for first := 0; first < n; first += podsPerChild {
		count := min(podsPerChild, n-first)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d", fakePodsEnv, first, count))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			stdin.Close()
			_ = cmd.Wait()
		})
		children = append(children, cmd)
		var port int
		if _, err := fmt.Fscanf(bufio.NewReader(stdout), "ready %d\n", &port); err != nil {
			b.Fatalf("fake pods did not start: %v", err)
		}
		for i := first; i < first+count; i++ {
			urls = append(urls, fmt.Sprintf("http://%s:%d/metrics", podAddr(i), port))
		}
	}
	return children, urls
}

func childrenCPU(children []*exec.Cmd) time.Duration {
	var sum time.Duration
	for _, c := range children {
		sum += childCPU(c.Process.Pid)
	}
	return sum
}

// memInUse returns the heap and stack memory in use after a collection.
func memInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
