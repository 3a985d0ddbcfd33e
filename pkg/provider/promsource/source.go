// Package promsource reads the served metrics from an existing Prometheus
// instead of scraping pods: one query per namespace and series, with
// equality label matchers (never a regular expression of pod names), a
// timeout, and a staleness bound that follows Prometheus's own scrape
// interval rather than the adapter's.
package promsource

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/provider"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

// DefaultStaleAfter is the default age beyond which a sample is not served:
// two scrapes of a Prometheus that scrapes every
// minute, the slowest common setting (15 s to 60 s), so that one missed
// scrape does not blank a pod.
const DefaultStaleAfter = 2 * time.Minute

// Config configures a Source.
type Config struct {
	// URL is the Prometheus base URL, e.g. http://prometheus.monitoring:9090.
	URL string
	// Timeout bounds one query.
	Timeout time.Duration
	// StaleAfter is the age beyond which a sample is not served. It must
	// exceed Prometheus's scrape interval; 0 means DefaultStaleAfter. A series
	// that Prometheus itself ended (a staleness marker: its target went or a
	// scrape failed) is not served, however young its last sample.
	StaleAfter time.Duration
	// Metrics are the served metrics.
	Metrics []metricsconfig.Metric
	// NamespaceLabel and PodLabel are the series labels that name a pod's
	// namespace and name (as the usual kubernetes_sd relabelling sets them).
	NamespaceLabel, PodLabel string
	// Clock judges staleness; nil means the real clock.
	Clock clock.PassiveClock
	// RoundTripper sends the requests; nil means the client's default.
	RoundTripper http.RoundTripper
}

// Source is a provider.Source backed by Prometheus.
type Source struct {
	api   promv1.API
	cfg   Config
	clock clock.PassiveClock
}

// Matcher is an equality label matcher, label="value".
type Matcher struct {
	Label, Value string
}

// Selector is the series selector of one query, metric{label="value",...}.
// Only equality matchers are built, so a value is never read as a regular
// expression.
type Selector struct {
	// Metric is the series name.
	Metric string
	// Matchers are the series' own labels, then the namespace.
	Matchers []Matcher
}

// SampleTimeLabel marks the series of a query's answer that carry the
// sample times (the other series carry the values).
const SampleTimeLabel = "wsscale_sample_time"

// String renders the instant query of the selector: each series' current
// value and, marked with SampleTimeLabel, the time of that sample.
//
//	m{l="v"} or label_replace(timestamp(m{l="v"}), "wsscale_sample_time", "true", "", "")
//
// An instant selector follows Prometheus's staleness handling: a series
// ended by a staleness marker has no value (a range selector would skip the
// marker and return the sample before it). timestamp() of a selector is the
// sample's own time, not the evaluation time; the label keeps the time
// series apart from the value series in the union (or ignores metric names).
func (q Selector) String() string {
	var b strings.Builder
	b.WriteString(q.Metric)
	b.WriteByte('{')
	for i, m := range q.Matchers {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(m.Label)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(m.Value))
	}
	b.WriteByte('}')
	sel := b.String()
	return sel + " or label_replace(timestamp(" + sel + "), " + strconv.Quote(SampleTimeLabel) + `, "true", "", "")`
}

var _ provider.Source = (*Source)(nil)

// New returns a Source for a valid configuration.
func New(cfg Config) (*Source, error) {
	var errs []error
	if cfg.URL == "" {
		errs = append(errs, errors.New("no Prometheus URL"))
	}
	if cfg.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("query timeout must be positive, got %v", cfg.Timeout))
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.StaleAfter < time.Millisecond {
		errs = append(errs, fmt.Errorf("stale-after must be at least 1ms, got %v", cfg.StaleAfter))
	}
	if cfg.NamespaceLabel == "" || cfg.PodLabel == "" {
		errs = append(errs, errors.New("namespace and pod label names must not be empty"))
	}
	for _, l := range []string{cfg.NamespaceLabel, cfg.PodLabel} {
		if l != "" && !labelNameRE.MatchString(l) {
			errs = append(errs, fmt.Errorf("%q is not a label name", l))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid Prometheus source: %w", errors.Join(errs...))
	}
	client, err := promapi.NewClient(promapi.Config{Address: cfg.URL, RoundTripper: cfg.RoundTripper})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", cfg.URL, err)
	}
	s := &Source{api: promv1.NewAPI(client), cfg: cfg, clock: cfg.Clock}
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	return s, nil
}

var labelNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// StaleAfter returns the effective staleness bound.
func (s *Source) StaleAfter() time.Duration { return s.cfg.StaleAfter }

// Selector returns the query of one series in namespace: the series with
// its labels in namespace.
func (s *Source) Selector(series metricsconfig.Series, namespace string) Selector {
	q := Selector{Metric: series.Name}
	for _, l := range series.Labels {
		q.Matchers = append(q.Matchers, Matcher{Label: l.Name, Value: l.Value})
	}
	q.Matchers = append(q.Matchers, Matcher{Label: s.cfg.NamespaceLabel, Value: namespace})
	return q
}

// Lookup implements provider.Source.
func (s *Source) Lookup(ctx context.Context, metric int, namespace string, pods []string) ([]store.Point, error) {
	out := make([]store.Point, len(pods))
	if len(pods) == 0 {
		return out, nil
	}
	m := s.cfg.Metrics[metric]
	now := s.clock.Now()
	num, err := s.query(ctx, s.Selector(m.Series, namespace).String(), m.Series.Rule, now)
	if err != nil {
		return nil, err
	}
	var div map[string]store.Point
	if m.DivideBy != nil {
		if div, err = s.query(ctx, s.Selector(*m.DivideBy, namespace).String(), m.DivideBy.Rule, now); err != nil {
			return nil, err
		}
	}
	for i, pod := range pods {
		p, ok := num[pod]
		if !ok {
			continue
		}
		if div != nil {
			d, ok := div[pod]
			if !ok || d.Value == 0 {
				continue
			}
			p.Value /= d.Value
			if d.Time.Before(p.Time) {
				p.Time = d.Time
			}
		}
		out[i] = p
	}
	return out, nil
}

// query runs one query and returns the current fresh valid value by pod.
// A pod with more than one matching series has no value, as in a scrape.
func (s *Source) query(ctx context.Context, q string, rule metricsconfig.ValueRule, now time.Time) (map[string]store.Point, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	v, _, _, err := s.api.Query(ctx, q, now, promv1.WithTimeout(s.cfg.Timeout))
	if err != nil {
		return nil, fmt.Errorf("prometheus query %s: %w", q, err)
	}
	vector, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("prometheus query %s: got a %s, want a vector", q, v.Type())
	}
	podLabel, timeLabel := model.LabelName(s.cfg.PodLabel), model.LabelName(SampleTimeLabel)
	series := make(map[string]int, len(vector))
	values := make(map[string]float64, len(vector))
	times := make(map[string]time.Time, len(vector))
	for _, smp := range vector {
		pod := string(smp.Metric[podLabel])
		if _, isTime := smp.Metric[timeLabel]; isTime {
			times[pod] = time.UnixMilli(int64(math.Round(float64(smp.Value) * 1000)))
			continue
		}
		series[pod]++
		values[pod] = float64(smp.Value)
	}
	oldest := now.Add(-s.cfg.StaleAfter)
	out := make(map[string]store.Point, len(values))
	for pod, val := range values {
		t, ok := times[pod]
		if pod == "" || series[pod] > 1 || !ok || t.Before(oldest) || rule.Check(val) != "" {
			continue
		}
		out[pod] = store.Point{Value: val, Time: t, OK: true}
	}
	return out, nil
}
