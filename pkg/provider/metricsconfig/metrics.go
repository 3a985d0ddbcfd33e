// Package metricsconfig says which metrics the adapter serves and how each
// is computed from the series a pod exposes: the typed metrics
// configuration, its file format (decoded strictly, every problem reported
// with file:line), the value rules a series' values must follow, and the
// plan that maps served metrics onto the distinct series to read.
package metricsconfig

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/wsscale/wsscale/pkg/provider/exposition"
)

// Aggregation says how the values of a Deployment's pods combine into the
// value served for the Deployment.
type Aggregation string

// The aggregations.
const (
	AggregateSum Aggregation = "sum"
	AggregateMax Aggregation = "max"
	AggregateAvg Aggregation = "avg"
)

// The metrics served without a configuration file.
const (
	// ConnectionsMetric is the number of open WebSocket connections of a pod,
	// the metric the HPA reads.
	ConnectionsMetric = "websocket_connections"
	// UtilizationMetric is a pod's open connections over its limit.
	UtilizationMetric = "websocket_connections_utilization"
	// ActiveSeries is the reference server's gauge of open connections.
	ActiveSeries = "websocket_connections_active"
	// MaxSeries is the reference server's gauge of its connection limit.
	MaxSeries = "websocket_connections_max"
)

// ValueRule says which values of a series are valid. A series with an
// invalid value has no value, so that a broken
// series gives no value rather than a wrong one.
type ValueRule uint8

const (
	// Finite accepts every value but NaN, +Inf and -Inf.
	Finite ValueRule = iota
	// NonNegative accepts finite values >= 0.
	NonNegative
	// Count accepts integers from 0 to 2^53, such as a number of open
	// connections.
	Count
)

// maxCount is the largest integer a float64 holds exactly.
const maxCount = 1 << 53

// String returns the rule's name.
func (r ValueRule) String() string {
	switch r {
	case Finite:
		return "finite"
	case NonNegative:
		return "non-negative"
	case Count:
		return "count"
	}
	return fmt.Sprintf("ValueRule(%d)", uint8(r))
}

// Check returns why v breaks the rule, or "" when it does not. The scraper
// and the Prometheus source judge values by it alike.
func (r ValueRule) Check(v float64) string {
	if math.IsNaN(v) {
		return "NaN"
	}
	if math.IsInf(v, 0) {
		return "infinite"
	}
	if r == Finite {
		return ""
	}
	if v < 0 {
		return "negative"
	}
	if r == Count && (v != math.Trunc(v) || v > maxCount) {
		return "not an integer count"
	}
	return ""
}

// Series is one wanted series of every target.
type Series struct {
	// Name is the sample name as exposed, e.g. websocket_connections_active.
	Name string
	// Labels, if any, must be present on the sample with exactly these
	// values; other labels are ignored. When more than one sample matches,
	// the series has no value (Problem ReasonDuplicate).
	Labels []exposition.Label
	// Rule is the validation applied to the value.
	Rule ValueRule
}

// Metric is one metric served through the custom metrics API and how it is
// computed from the series a pod exposes.
type Metric struct {
	// Name is the metric name in the API.
	Name string
	// Series is the scraped series; its labels, if any, must match exactly.
	Series Series
	// DivideBy, when set, makes the served value Series / DivideBy, e.g. a
	// utilization. A pod that does not expose it, or exposes 0, has no value
	// for this metric but keeps its values for the others.
	DivideBy *Series
	// Aggregation combines pod values into the value of their Deployment.
	Aggregation Aggregation
}

// DefaultMetrics returns the metrics served without a configuration file:
// websocket_connections from websocket_connections_active, and
// websocket_connections_utilization = active / websocket_connections_max.
func DefaultMetrics() []Metric {
	return []Metric{
		{
			Name:        ConnectionsMetric,
			Series:      Series{Name: ActiveSeries, Rule: Count},
			Aggregation: AggregateSum,
		},
		{
			Name:        UtilizationMetric,
			Series:      Series{Name: ActiveSeries, Rule: Count},
			DivideBy:    &Series{Name: MaxSeries, Rule: Count},
			Aggregation: AggregateAvg,
		},
	}
}

// metricNameRE is what the API accepts as a metric name: a path segment
// that also is a Prometheus metric name, so the same name works in both.
var metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// ValidateMetrics returns every problem of a list of metrics.
func ValidateMetrics(metrics []Metric) []error {
	var errs []error
	if len(metrics) == 0 {
		errs = append(errs, errors.New("no metrics to serve"))
	}
	seen := map[string]bool{}
	for i, m := range metrics {
		if !metricNameRE.MatchString(m.Name) {
			errs = append(errs, fmt.Errorf("metric %d: name %q is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", i, m.Name))
		}
		if seen[m.Name] {
			errs = append(errs, fmt.Errorf("metric %d: %q is given twice", i, m.Name))
		}
		seen[m.Name] = true
		if m.Series.Name == "" {
			errs = append(errs, fmt.Errorf("metric %q: no series", m.Name))
		}
		switch m.Aggregation {
		case AggregateSum, AggregateMax, AggregateAvg:
		default:
			errs = append(errs, fmt.Errorf("metric %q: unknown aggregation %q (want sum, max or avg)", m.Name, m.Aggregation))
		}
		if m.DivideBy != nil && m.DivideBy.Name == "" {
			errs = append(errs, fmt.Errorf("metric %q: divideBy has no series name", m.Name))
		}
	}
	return errs
}

// Plan maps served metrics onto the distinct series to read.
type Plan struct {
	// Series are read from every pod. None is required: a pod that lacks
	// one has no value for the metrics that use it, and keeps the others.
	Series []Series
	// Numerator[m] and Divisor[m] index Series for metric m; Divisor is -1
	// without a divisor.
	Numerator []int
	Divisor   []int
}

// seriesID identifies a series by name and labels, for deduplication.
func seriesID(s Series) string {
	var b strings.Builder
	b.WriteString(s.Name)
	for _, l := range s.Labels {
		fmt.Fprintf(&b, "\x00%s=%s", l.Name, l.Value)
	}
	return b.String()
}

// NewPlan deduplicates the series of metrics. When two metrics use the
// same series with different rules, the stricter rule wins.
func NewPlan(metrics []Metric) Plan {
	p := Plan{Numerator: make([]int, len(metrics)), Divisor: make([]int, len(metrics))}
	index := map[string]int{}
	add := func(s Series) int {
		id := seriesID(s)
		if i, ok := index[id]; ok {
			p.Series[i].Rule = max(p.Series[i].Rule, s.Rule)
			return i
		}
		s.Labels = append([]exposition.Label(nil), s.Labels...)
		p.Series = append(p.Series, s)
		index[id] = len(p.Series) - 1
		return len(p.Series) - 1
	}
	for i, m := range metrics {
		p.Numerator[i] = add(m.Series)
		p.Divisor[i] = -1
	}
	for i, m := range metrics {
		if m.DivideBy != nil {
			p.Divisor[i] = add(*m.DivideBy)
		}
	}
	return p
}

// ScrapeSeries returns the distinct series the scraper must read to serve
// metrics, in the order of NewPlan(metrics).Series, which the Store expects
// in a scrape's values.
func ScrapeSeries(metrics []Metric) []Series {
	return NewPlan(metrics).Series
}
