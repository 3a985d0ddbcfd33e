package provider

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	podsel "github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

// Instruments are the adapter's own metrics about scraping and serving.
type Instruments struct {
	scrapeDuration prometheus.Histogram
	scrapeErrors   *prometheus.CounterVec
	requests       *prometheus.HistogramVec
}

var (
	_ store.ScrapeObserver = (*Instruments)(nil)
	_ RequestObserver      = (*Instruments)(nil)
)

// NewInstruments registers the scrape and request metrics with reg.
func NewInstruments(reg prometheus.Registerer) (*Instruments, error) {
	in := &Instruments{
		scrapeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "wsscale_adapter", Name: "scrape_duration_seconds",
			Help:    "Time taken by one scrape of a pod's metrics endpoint, successful or not.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		scrapeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "wsscale_adapter", Name: "scrape_errors_total",
			Help: "Failed scrapes by reason; a failed scrape leaves the pod without a value.",
		}, []string{"reason"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "wsscale_adapter", Name: "api_request_duration_seconds",
			Help:    "Time taken to answer a custom metrics API request, by method, resource and HTTP status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"method", "resource", "code"}),
	}
	for _, r := range scrape.Reasons() {
		in.scrapeErrors.WithLabelValues(string(r))
	}
	for _, c := range []prometheus.Collector{in.scrapeDuration, in.scrapeErrors, in.requests} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// ObserveScrape implements ScrapeObserver.
func (in *Instruments) ObserveScrape(d time.Duration, reason scrape.Reason) {
	in.scrapeDuration.Observe(d.Seconds())
	if reason != "" {
		in.scrapeErrors.WithLabelValues(string(reason)).Inc()
	}
}

// ObserveRequest implements RequestObserver.
func (in *Instruments) ObserveRequest(method, resource string, code int, d time.Duration) {
	in.requests.WithLabelValues(method, resource, strconv.Itoa(code)).Observe(d.Seconds())
}

// RegisterPodGauges registers the gauges of tracked pods and of their values'
// states: pods_tracked, and, when the values come from the value store (store may
// be nil), pod_values{state=fresh|stale|failed|pending} by the outcome of
// each pod's last scrape and
// metric_values{metric,state=fresh|stale|failed|pending|missing|invalid} by
// the state of each metric's value.
func RegisterPodGauges(reg prometheus.Registerer, tracker *podsel.PodTracker, store *store.Store) error {
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "wsscale_adapter", Name: "pods_tracked",
		Help: "Pods selected for metrics: running, with an IP, not terminating and matching the selection.",
	}, func() float64 { return float64(tracker.Tracked()) })); err != nil {
		return err
	}
	if store == nil {
		return nil
	}
	return reg.Register(&storeCollector{
		store: store,
		pods: prometheus.NewDesc(
			"wsscale_adapter_pod_values",
			"Tracked pods by the outcome of their last scrape: fresh (scraped successfully within --stale-after), stale (older than --stale-after, not served), failed (last scrape failed) or pending (not scraped yet).",
			[]string{"state"}, nil),
		metrics: prometheus.NewDesc(
			"wsscale_adapter_metric_values",
			"Tracked pods by the state of one served metric's value: fresh (served), stale, failed, pending, missing (a series of the metric is not exposed) or invalid (a series of the metric broke its rule, was exposed twice, or a divisor was 0).",
			[]string{"metric", "state"}, nil),
	})
}

// storeCollector reads the value store's states at collection time.
type storeCollector struct {
	store         *store.Store
	pods, metrics *prometheus.Desc
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.pods; ch <- c.metrics }

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.store.Stats()
	for _, s := range []struct {
		state string
		n     int
	}{{"fresh", st.Fresh}, {"stale", st.Stale}, {"failed", st.Failed}, {"pending", st.Pending}} {
		ch <- prometheus.MustNewConstMetric(c.pods, prometheus.GaugeValue, float64(s.n), s.state)
	}
	for _, m := range c.store.MetricStats() {
		for _, s := range []struct {
			state string
			n     int
		}{
			{"fresh", m.Fresh}, {"stale", m.Stale}, {"failed", m.Failed}, {"pending", m.Pending},
			{"missing", m.Missing}, {"invalid", m.Invalid},
		} {
			ch <- prometheus.MustNewConstMetric(c.metrics, prometheus.GaugeValue, float64(s.n), m.Metric, s.state)
		}
	}
}
