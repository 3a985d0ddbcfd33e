package scrape

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/provider/exposition"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
)

// Defaults of Config.
const (
	DefaultInterval     = 5 * time.Second
	DefaultTimeout      = 3 * time.Second
	DefaultConcurrency  = 32
	DefaultMaxBodyBytes = 2 << 20
	DefaultBackoffMax   = time.Minute
	DefaultSlowAfter    = 100 * time.Millisecond
)

// Config configures a Scraper.
type Config struct {
	// Series are the wanted series of every target.
	Series []metricsconfig.Series
	// Interval is how often each target is scraped. Targets are spread over
	// the interval so that scrapes do not come in bursts.
	Interval time.Duration
	// Timeout bounds one scrape, from connecting to parsing. It may not
	// exceed Interval.
	Timeout time.Duration
	// Concurrency is the number of workers: scrapes that connect, read and
	// parse at once. As many again may wait for a slow pod's answer (see
	// SlowAfter), so memory for bodies is bounded by 2 × Concurrency ×
	// MaxBodyBytes.
	Concurrency int
	// FailingConcurrency is the number of scrapes of failing targets (whose
	// last scrape failed) in flight at most, so that targets that hang, such
	// as the pods of a dead node, never hold more than this many of the
	// Concurrency workers and the healthy ones keep the rest. 0 means a
	// quarter of Concurrency, at least 1.
	FailingConcurrency int
	// SlowAfter is how long a scrape may hold a worker. A pod that has not
	// answered by then goes on waiting in the background, up to Timeout,
	// and a new worker takes its place, so that pods that hang cost each
	// worker SlowAfter rather than Timeout. At most Concurrency scrapes wait
	// so; beyond that, and for a target whose last scrape failed, a scrape
	// is cut at SlowAfter, as timed out. 0 means DefaultSlowAfter, or
	// Timeout if that is shorter.
	SlowAfter time.Duration
	// BackoffMax caps the back-off of a failing target. A target whose
	// last scrape failed keeps its place in the interval; from its second
	// consecutive failure on it is scraped again after 2, 4, 8... intervals,
	// at most BackoffMax, each less up to a fifth at random so that the
	// targets of one dead node do not retry in step. A success ends the
	// back-off. 0 means DefaultBackoffMax, or Interval if that is longer.
	BackoffMax time.Duration
	// MaxBodyBytes is the largest body accepted; a larger one fails with
	// ReasonTooLarge after reading at most MaxBodyBytes+1 bytes.
	MaxBodyBytes int64
	// Clock drives the schedule and the timeouts.
	Clock clock.WithDelayedExecution
	// DisableKeepAlives opens a connection per scrape instead of keeping
	// one idle connection per pod. Keep-alive halves the CPU per scrape but
	// costs about 14 kB of memory per pod for the idle connection
	// (measured by BenchmarkScrape10kPods).
	DisableKeepAlives bool
	// Transport sends the requests; nil means NewKeepAliveTransport(the config), or NewTransport
	// with DisableKeepAlives.
	Transport http.RoundTripper
}

// NewConfig returns a Config with the defaults, scraping series.
func NewConfig(series ...metricsconfig.Series) Config {
	return Config{
		Series:       series,
		Interval:     DefaultInterval,
		Timeout:      DefaultTimeout,
		Concurrency:  DefaultConcurrency,
		MaxBodyBytes: DefaultMaxBodyBytes,
		Clock:        clock.RealClock{},
	}
}

// Validate returns every problem of the configuration.
func (c *Config) Validate() []error {
	var errs []error
	if len(c.Series) == 0 {
		errs = append(errs, errors.New("no series to scrape"))
	}
	seen := map[string]bool{}
	for i, s := range c.Series {
		if s.Name == "" {
			errs = append(errs, fmt.Errorf("series %d: empty name", i))
		}
		if s.Rule > metricsconfig.Count {
			errs = append(errs, fmt.Errorf("series %d (%s): unknown value rule %d", i, s.Name, s.Rule))
		}
		labels := map[string]bool{}
		for _, l := range s.Labels {
			if l.Name == "" {
				errs = append(errs, fmt.Errorf("series %d (%s): empty label name", i, s.Name))
			} else if labels[l.Name] {
				errs = append(errs, fmt.Errorf("series %d (%s): label %q given twice", i, s.Name, l.Name))
			}
			labels[l.Name] = true
		}
		id := fmt.Sprint(s.Name, s.Labels)
		if seen[id] {
			errs = append(errs, fmt.Errorf("series %d (%s): given twice", i, s.Name))
		}
		seen[id] = true
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval must be positive, got %v", c.Interval))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout must be positive, got %v", c.Timeout))
	} else if c.Interval > 0 && c.Timeout > c.Interval {
		errs = append(errs, fmt.Errorf("timeout %v exceeds the interval %v", c.Timeout, c.Interval))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency must be at least 1, got %d", c.Concurrency))
	}
	if c.FailingConcurrency < 0 {
		errs = append(errs, fmt.Errorf("failing concurrency must not be negative, got %d", c.FailingConcurrency))
	} else if c.FailingConcurrency > c.Concurrency && c.Concurrency >= 1 {
		errs = append(errs, fmt.Errorf("failing concurrency %d exceeds the concurrency %d", c.FailingConcurrency, c.Concurrency))
	}
	if c.SlowAfter < 0 {
		errs = append(errs, fmt.Errorf("slow-after must not be negative, got %v", c.SlowAfter))
	} else if c.SlowAfter > c.Timeout && c.Timeout > 0 {
		errs = append(errs, fmt.Errorf("slow-after %v exceeds the timeout %v", c.SlowAfter, c.Timeout))
	}
	if c.BackoffMax < 0 {
		errs = append(errs, fmt.Errorf("back-off maximum must not be negative, got %v", c.BackoffMax))
	} else if c.BackoffMax > 0 && c.BackoffMax < c.Interval {
		errs = append(errs, fmt.Errorf("back-off maximum %v is shorter than the interval %v", c.BackoffMax, c.Interval))
	}
	if c.MaxBodyBytes < 1 {
		errs = append(errs, fmt.Errorf("max body bytes must be positive, got %d", c.MaxBodyBytes))
	}
	if c.Clock == nil {
		errs = append(errs, errors.New("no clock"))
	}
	return errs
}

// NewTransport returns the transport the scraper uses by default. Every pod
// is its own host, so unless keep-alive is disabled one idle connection per
// pod is kept across scrapes; idle connections outlive a few intervals.
// Buffers are small because bodies are read straight into the scraper's own
// buffer. Proxies from the environment are ignored: pods are reached
// directly. Compression is off: on a cluster network it costs both sides
// more CPU than it saves.
func NewTransport(cfg Config) *http.Transport {
	timeout, interval := cfg.Timeout, cfg.Interval
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DisableKeepAlives:      cfg.DisableKeepAlives,
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		MaxIdleConns:           0, // no limit: one per pod
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        max(90*time.Second, 3*interval),
		ResponseHeaderTimeout:  timeout,
		TLSHandshakeTimeout:    timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
		ReadBufferSize:         1 << 10,
		WriteBufferSize:        512,
	}
}

// withDefaults resolves the zero values that mean a default.
func (c Config) withDefaults() Config {
	if c.FailingConcurrency == 0 {
		c.FailingConcurrency = max(1, c.Concurrency/4)
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.Interval)
	}
	if c.SlowAfter == 0 {
		c.SlowAfter = min(DefaultSlowAfter, c.Timeout)
	}
	return c
}

// selectors returns what the parser looks for.
func (c *Config) selectors() []exposition.Selector {
	selectors := make([]exposition.Selector, len(c.Series))
	for i, s := range c.Series {
		selectors[i] = exposition.Selector{Name: s.Name, Labels: s.Labels}
	}
	return selectors
}
