package provider

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/wsscale/wsscale/pkg/provider/exposition"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
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

// Metric is one metric served through the custom metrics API and how it is
// computed from the series a pod exposes.
type Metric struct {
	// Name is the metric name in the API.
	Name string
	// Series is the scraped series; its labels, if any, must match exactly.
	Series scrape.Series
	// DivideBy, when set, makes the served value Series / DivideBy, e.g. a
	// utilization. A pod that does not expose it, or exposes 0, has no value
	// for this metric but keeps its values for the others.
	DivideBy *scrape.Series
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
			Series:      scrape.Series{Name: ActiveSeries, Rule: scrape.Count},
			Aggregation: AggregateSum,
		},
		{
			Name:        UtilizationMetric,
			Series:      scrape.Series{Name: ActiveSeries, Rule: scrape.Count},
			DivideBy:    &scrape.Series{Name: MaxSeries, Rule: scrape.Count},
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

// seriesPlan maps served metrics onto the distinct series to scrape.
type seriesPlan struct {
	// series are scraped from every pod; numerators are required, series
	// used only as divisors are optional.
	series []scrape.Series
	// numerator[m] and divisor[m] index series for metric m; divisor is -1
	// without a divisor.
	numerator []int
	divisor   []int
}

// seriesID identifies a series by name and labels, for deduplication.
func seriesID(s scrape.Series) string {
	var b strings.Builder
	b.WriteString(s.Name)
	for _, l := range s.Labels {
		fmt.Fprintf(&b, "\x00%s=%s", l.Name, l.Value)
	}
	return b.String()
}

// newSeriesPlan deduplicates the series of metrics. When two metrics use the
// same series with different rules, the stricter rule wins.
func newSeriesPlan(metrics []Metric) seriesPlan {
	p := seriesPlan{numerator: make([]int, len(metrics)), divisor: make([]int, len(metrics))}
	index := map[string]int{}
	add := func(s scrape.Series, optional bool) int {
		id := seriesID(s)
		if i, ok := index[id]; ok {
			p.series[i].Rule = max(p.series[i].Rule, s.Rule)
			p.series[i].Optional = p.series[i].Optional && optional
			return i
		}
		s.Labels = append([]exposition.Label(nil), s.Labels...)
		s.Optional = optional
		p.series = append(p.series, s)
		index[id] = len(p.series) - 1
		return len(p.series) - 1
	}
	for i, m := range metrics {
		p.numerator[i] = add(m.Series, m.Series.Optional) // optional only when the series says so
		p.divisor[i] = -1
	}
	for i, m := range metrics {
		if m.DivideBy != nil {
			p.divisor[i] = add(*m.DivideBy, true)
		}
	}
	return p
}

// ScrapeSeries returns the distinct series the scraper must read to serve
// metrics, in the order the Store expects in a scrape.Sample.
func ScrapeSeries(metrics []Metric) []scrape.Series {
	return newSeriesPlan(metrics).series
}

// configFile is the shape of a metrics configuration file, for the reader.
//
//	metrics:
//	- name: websocket_connections          # served metric
//	  series: websocket_connections_active # scraped gauge
//	  labels: {listener: public}           # optional: exact label values
//	  rule: count                          # finite (default), non-negative or count
//	  aggregation: sum                     # sum (default), max or avg, for Deployments
//	  divideBy: websocket_connections_max  # optional: serve series / divideBy
var configKeys = map[string]bool{
	"name": true, "series": true, "labels": true, "rule": true, "aggregation": true,
	"divideBy": true, "divideByLabels": true,
}

// ParseMetricsConfig reads a metrics configuration file. Every problem is
// reported, each prefixed with file:line.
func ParseMetricsConfig(file string, data []byte) ([]Metric, error) {
	var errs []error
	fail := func(n *yaml.Node, format string, args ...any) {
		line := 0
		if n != nil {
			line = n.Line
		}
		errs = append(errs, fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...)))
	}

	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty metrics configuration", file)
		}
		// yaml.v3 syntax errors already say "yaml: line N: ...".
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s:%d: more than one YAML document", file, extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping with the key \"metrics\"", file, root.Line)
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value == "metrics" {
			list = v
		} else {
			fail(k, "unknown key %q (want \"metrics\")", k.Value)
		}
	}
	if list == nil {
		fail(root, "no \"metrics\" list")
		return nil, errors.Join(errs...)
	}
	if list.Kind != yaml.SequenceNode {
		fail(list, "\"metrics\" must be a list")
		return nil, errors.Join(errs...)
	}

	var metrics []Metric
	names := map[string]int{}
	for _, item := range list.Content {
		m, ok := parseMetric(item, fail)
		if !ok {
			continue
		}
		if line, dup := names[m.Name]; dup {
			fail(item, "metric %q is already defined at line %d", m.Name, line)
			continue
		}
		names[m.Name] = item.Line
		metrics = append(metrics, m)
	}
	if len(list.Content) == 0 {
		fail(list, "the metrics list is empty")
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return metrics, nil
}

// parseMetric reads one list item; it reports problems through fail and
// returns ok false when there were any.
func parseMetric(item *yaml.Node, fail func(*yaml.Node, string, ...any)) (Metric, bool) {
	ok := true
	bad := func(n *yaml.Node, format string, args ...any) {
		ok = false
		fail(n, format, args...)
	}
	if item.Kind != yaml.MappingNode {
		bad(item, "a metric must be a mapping with name and series")
		return Metric{}, false
	}
	m := Metric{Aggregation: AggregateSum, Series: scrape.Series{Rule: scrape.Finite}}
	var nameNode, divLabelsNode *yaml.Node
	var divLabels []exposition.Label
	seen := map[string]bool{}
	for i := 0; i+1 < len(item.Content); i += 2 {
		k, v := item.Content[i], item.Content[i+1]
		if !configKeys[k.Value] {
			bad(k, "unknown key %q (want one of %s)", k.Value, strings.Join(sortedKeys(configKeys), ", "))
			continue
		}
		if seen[k.Value] {
			bad(k, "key %q given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		switch k.Value {
		case "name":
			if s, good := scalar(v, bad); good {
				m.Name, nameNode = s, v
				if !metricNameRE.MatchString(s) {
					bad(v, "name %q is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", s)
				}
			}
		case "series":
			if s, good := scalar(v, bad); good {
				m.Series.Name = s
				if !metricNameRE.MatchString(s) {
					bad(v, "series %q is not a metric name", s)
				}
			}
		case "labels":
			m.Series.Labels = parseLabels(v, bad)
		case "rule":
			if s, good := scalar(v, bad); good {
				switch s {
				case "finite":
					m.Series.Rule = scrape.Finite
				case "non-negative":
					m.Series.Rule = scrape.NonNegative
				case "count":
					m.Series.Rule = scrape.Count
				default:
					bad(v, "unknown rule %q (want finite, non-negative or count)", s)
				}
			}
		case "aggregation":
			if s, good := scalar(v, bad); good {
				switch a := Aggregation(s); a {
				case AggregateSum, AggregateMax, AggregateAvg:
					m.Aggregation = a
				default:
					bad(v, "unknown aggregation %q (want sum, max or avg)", s)
				}
			}
		case "divideBy":
			if s, good := scalar(v, bad); good {
				if !metricNameRE.MatchString(s) {
					bad(v, "divideBy %q is not a metric name", s)
				}
				m.DivideBy = &scrape.Series{Name: s, Rule: scrape.Finite}
			}
		case "divideByLabels":
			divLabelsNode = v
			divLabels = parseLabels(v, bad)
		}
	}
	if nameNode == nil && !seen["name"] {
		bad(item, "metric has no name")
	}
	if !seen["series"] {
		bad(item, "metric %q has no series", m.Name)
	}
	if divLabelsNode != nil {
		if m.DivideBy == nil {
			bad(divLabelsNode, "divideByLabels without divideBy")
		} else {
			m.DivideBy.Labels = divLabels
		}
	}
	return m, ok
}

// scalar returns the value of a scalar node.
func scalar(n *yaml.Node, bad func(*yaml.Node, string, ...any)) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Value == "" {
		bad(n, "want a non-empty string")
		return "", false
	}
	return n.Value, true
}

// parseLabels reads a mapping of label names to values, sorted by name.
func parseLabels(n *yaml.Node, bad func(*yaml.Node, string, ...any)) []exposition.Label {
	if n.Kind != yaml.MappingNode {
		bad(n, "labels must be a mapping of label names to values")
		return nil
	}
	var out []exposition.Label
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !labelNameRE.MatchString(k.Value) {
			bad(k, "%q is not a label name", k.Value)
			continue
		}
		if seen[k.Value] {
			bad(k, "label %q given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		if v.Kind != yaml.ScalarNode {
			bad(v, "the value of label %q must be a string", k.Value)
			continue
		}
		out = append(out, exposition.Label{Name: k.Value, Value: v.Value})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

var labelNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
