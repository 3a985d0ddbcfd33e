// Package promsource reads the served metrics from an existing Prometheus
// instead of scraping pods: one instant query per namespace and series, with
// label matchers (never a regular expression of pod names), a timeout, and
// the same staleness rule as the scraper.
package promsource

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/provider"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// Config configures a Source.
type Config struct {
	// URL is the Prometheus base URL, e.g. http://prometheus.monitoring:9090.
	URL string
	// Timeout bounds one query.
	Timeout time.Duration
	// StaleAfter is the age beyond which a sample is not served. The query
	// looks back this far, so older samples are not even returned.
	StaleAfter time.Duration
	// Metrics are the served metrics.
	Metrics []provider.Metric
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
	api     promv1.API
	cfg     Config
	clock   clock.PassiveClock
	queries [][2]string // per metric: query prefixes of the numerator and divisor ("" without)
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
	if cfg.StaleAfter < time.Millisecond {
		errs = append(errs, fmt.Errorf("stale-after must be at least 1ms, got %v", cfg.StaleAfter))
	}
	if cfg.NamespaceLabel == "" || cfg.PodLabel == "" {
		errs = append(errs, errors.New("namespace and pod label names must not be empty"))
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
	for _, m := range cfg.Metrics {
		q := [2]string{seriesMatchers(m.Series)}
		if m.DivideBy != nil {
			q[1] = seriesMatchers(*m.DivideBy)
		}
		s.queries = append(s.queries, q)
	}
	return s, nil
}

// seriesMatchers returns `name{label="value",` to be completed with the
// namespace matcher.
func seriesMatchers(s scrape.Series) string {
	var b strings.Builder
	b.WriteString(s.Name)
	b.WriteByte('{')
	for _, l := range s.Labels {
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.Value))
		b.WriteByte(',')
	}
	return b.String()
}

// Query returns the PromQL for one series of metric m in namespace: the
// samples of the last StaleAfter, so that each sample keeps its own
// timestamp (an instant vector would carry the evaluation time instead).
func (s *Source) Query(m, part int, namespace string) string {
	return fmt.Sprintf("%s%s=%s}[%s]", s.queries[m][part], s.cfg.NamespaceLabel, strconv.Quote(namespace),
		model.Duration(s.cfg.StaleAfter).String())
}

// Lookup implements provider.Source.
func (s *Source) Lookup(ctx context.Context, metric int, namespace string, pods []string) ([]provider.Point, error) {
	out := make([]provider.Point, len(pods))
	if len(pods) == 0 {
		return out, nil
	}
	m := s.cfg.Metrics[metric]
	now := s.clock.Now()
	num, err := s.query(ctx, s.Query(metric, 0, namespace), m.Series.Rule, now)
	if err != nil {
		return nil, err
	}
	var div map[string]provider.Point
	if m.DivideBy != nil {
		if div, err = s.query(ctx, s.Query(metric, 1, namespace), m.DivideBy.Rule, now); err != nil {
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

// query runs one query and returns the latest fresh valid value by pod.
// A pod with more than one matching series has no value, as in a scrape.
func (s *Source) query(ctx context.Context, q string, rule scrape.ValueRule, now time.Time) (map[string]provider.Point, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	v, _, _, err := s.api.Query(ctx, q, now, promv1.WithTimeout(s.cfg.Timeout))
	if err != nil {
		return nil, fmt.Errorf("prometheus query %s: %w", q, err)
	}
	matrix, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("prometheus query %s: got a %s, want a matrix", q, v.Type())
	}
	oldest := now.Add(-s.cfg.StaleAfter)
	series := make(map[string]int, len(matrix))
	for _, stream := range matrix {
		series[string(stream.Metric[model.LabelName(s.cfg.PodLabel)])]++
	}
	out := make(map[string]provider.Point, len(matrix))
	for _, stream := range matrix {
		pod := string(stream.Metric[model.LabelName(s.cfg.PodLabel)])
		if pod == "" || series[pod] > 1 || len(stream.Values) == 0 {
			continue
		}
		last := stream.Values[len(stream.Values)-1]
		t := last.Timestamp.Time()
		val := float64(last.Value)
		if t.Before(oldest) || !valid(rule, val) {
			continue
		}
		out[pod] = provider.Point{Value: val, Time: t, OK: true}
	}
	return out, nil
}

// valid applies a series' value rule, as the scraper does.
func valid(rule scrape.ValueRule, v float64) bool {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return false
	}
	switch rule {
	case scrape.NonNegative:
		return v >= 0
	case scrape.Count:
		return v >= 0 && v == math.Trunc(v) && v <= 1<<53
	}
	return true
}
