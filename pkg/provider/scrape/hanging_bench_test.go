package scrape

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

// The hanging-targets benchmark: 10,000 pods of which 1,000 stop answering
// (their node died: connections are accepted, requests never answered), with
// the default interval, timeout and concurrency, on the real clock. It
// reports how fresh the 9,000 healthy pods' values stay.
const (
	hangingPods  = 1000
	hangingHosts = 4 // the hanging pods share a few listeners
	// hangingMeasureEnv and hangingWarmupEnv override how long the
	// benchmark watches after the node dies, and before (Go durations).
	hangingMeasureEnv = "WSSCALE_HANGING_MEASURE"
	hangingWarmupEnv  = "WSSCALE_HANGING_WARMUP"
)

// freshnessSink records the time of each healthy pod's last successful
// scrape; pods are named by their index.
type freshnessSink struct {
	last []atomic.Int64 // unix nanoseconds; 0: never
	ok   atomic.Int64
	fail atomic.Int64
}

func (f *freshnessSink) Observe(k PodKey, s Sample) {
	f.ok.Add(1)
	if i, err := strconv.Atoi(k.Name); err == nil && i < len(f.last) {
		f.last[i].Store(s.Time.UnixNano())
	}
}

func (f *freshnessSink) Fail(PodKey, Failure) { f.fail.Add(1) }

// oldest returns the age of the oldest healthy value, and how many healthy
// pods have no value or one older than bound.
func (f *freshnessSink) oldest(now time.Time, bound time.Duration) (time.Duration, int) {
	var worst time.Duration
	over := 0
	for i := range f.last {
		ns := f.last[i].Load()
		if ns == 0 {
			over++
			continue
		}
		age := now.Sub(time.Unix(0, ns))
		worst = max(worst, age)
		if age > bound {
			over++
		}
	}
	return worst, over
}

// hangingServer answers like a pod until dead is set, then accepts
// connections and never answers on them.
func hangingServer(b *testing.B, body []byte, dead *atomic.Bool) []string {
	b.Helper()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if dead.Load() {
				<-r.Context().Done() // until the scraper gives up and closes
				return
			}
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	var addrs []string
	for h := range hangingHosts {
		l, err := net.Listen("tcp", fmt.Sprintf("127.3.0.%d:0", h+1))
		if err != nil {
			b.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		go func() { _ = srv.Serve(l) }()
	}
	b.Cleanup(func() { _ = srv.Close() })
	return addrs
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return d
}

// BenchmarkHangingTargets runs the default scraper against 9,000 healthy
// pods and 1,000 pods that hang, on the real clock, in two scenarios:
// node-dies (every pod answers during the warm-up, then the 1,000 hang) and
// start-with-dead (they hang from the start). It samples every 250 ms the
// age of the oldest healthy value and the healthy pods whose value is older
// than interval + 1 s (or missing), and reports: max-age-s, the oldest over
// the measurement; over-bound-s, the time with at least one healthy pod over
// the bound; over-bound-max, the most healthy pods over it at once; and
// all-fresh-s, when every healthy pod was last seen over the bound (0: never
// over). -benchtime 1x; each scenario takes the warm-up plus the
// measurement (default 20 s + 150 s).
func BenchmarkHangingTargets(b *testing.B) {
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	b.Cleanup(func() { klog.LogToStderr(true) })
	warmup := envDuration(b, hangingWarmupEnv, 20*time.Second)
	measure := envDuration(b, hangingMeasureEnv, 150*time.Second)

	healthy := benchPods - hangingPods
	_, urls := startFakePods(b, healthy)
	body, err := os.ReadFile(fakePodBodyFile)
	if err != nil {
		b.Fatal(err)
	}
	for _, scenario := range []string{"node-dies", "start-with-dead"} {
		b.Run(scenario, func(b *testing.B) {
			var dead atomic.Bool
			dead.Store(scenario == "start-with-dead")
			hangAddrs := hangingServer(b, body, &dead)
			sink := &freshnessSink{last: make([]atomic.Int64, healthy)}
			cfg := NewConfig(activeSeries, maxSeries)
			s, err := New(cfg, sink)
			if err != nil {
				b.Fatal(err)
			}
			for i, u := range urls {
				if err := s.Set(Target{Key: PodKey{Namespace: "bench", Name: strconv.Itoa(i)}, URL: u}); err != nil {
					b.Fatal(err)
				}
			}
			for i := range hangingPods {
				u := fmt.Sprintf("http://%s/metrics?pod=%d", hangAddrs[i%len(hangAddrs)], i)
				if err := s.Set(Target{Key: PodKey{Namespace: "bench", Name: fmt.Sprint("hanging-", i)}, URL: u}); err != nil {
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

			bound := cfg.Interval + time.Second
			if scenario == "node-dies" {
				time.Sleep(warmup)
				if _, over := sink.oldest(time.Now(), bound); over > 0 {
					b.Logf("%d healthy pods over the bound before the node died", over)
				}
				dead.Store(true)
			}
			b.ResetTimer()
			start := time.Now()
			var worst time.Duration
			var overTime time.Duration
			overMax := 0
			var lastOver time.Time
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			nextLog := start.Add(15 * time.Second)
			windowWorst, windowOver := time.Duration(0), 0
			for now := range tick.C {
				if now.Sub(start) > measure {
					break
				}
				age, over := sink.oldest(now, bound)
				// A pod never scraped yet has no age; count it over.
				worst = max(worst, age)
				windowWorst, windowOver = max(windowWorst, age), max(windowOver, over)
				if over > 0 {
					overTime += 250 * time.Millisecond
					overMax = max(overMax, over)
					lastOver = now
				}
				if now.After(nextLog) {
					b.Logf("t=%3.0fs oldest healthy value %5.1fs, healthy pods over %v: %d (scrapes ok %d, failed %d)",
						now.Sub(start).Seconds(), windowWorst.Seconds(), bound, windowOver, sink.ok.Load(), sink.fail.Load())
					nextLog = nextLog.Add(15 * time.Second)
					windowWorst, windowOver = 0, 0
				}
			}
			b.StopTimer()
			allFresh := 0.0
			if !lastOver.IsZero() {
				allFresh = lastOver.Sub(start).Seconds()
			}
			b.ReportMetric(worst.Seconds(), "max-age-s")
			b.ReportMetric(overTime.Seconds(), "over-bound-s")
			b.ReportMetric(float64(overMax), "over-bound-max")
			b.ReportMetric(allFresh, "all-fresh-s")
			b.ReportMetric(float64(sink.fail.Load()), "failed")
		})
	}
}
