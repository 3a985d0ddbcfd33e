package metricsconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/wsscale/wsscale/pkg/provider/exposition"
)

// File is the metrics configuration file, decoded strictly: a key that is
// not a field here is an error.
//
//	metrics:
//	- name: websocket_connections          # served metric
//	  series: websocket_connections_active # scraped gauge
//	  labels: {listener: public}           # optional: exact label values
//	  rule: count                          # finite (default), non-negative or count
//	  aggregation: sum                     # sum (default), max or avg, for Deployments
//	  divideBy: websocket_connections_max  # optional: serve series / divideBy
type File struct {
	// Metrics are the served metrics, in order.
	Metrics []MetricSpec `yaml:"metrics"`
}

// MetricSpec is one served metric as the file writes it.
type MetricSpec struct {
	// Name is the metric's name in the custom metrics API.
	Name Text `yaml:"name"`
	// Series is the name of the scraped series.
	Series Text `yaml:"series"`
	// Labels are label values the series must carry exactly.
	Labels LabelSet `yaml:"labels"`
	// Rule is the series' value rule: finite (default), non-negative or count.
	Rule Text `yaml:"rule"`
	// Aggregation combines pod values for Deployments: sum (default), max or avg.
	Aggregation Text `yaml:"aggregation"`
	// DivideBy, when set, serves series / divideBy.
	DivideBy Text `yaml:"divideBy"`
	// DivideByLabels are label values the divisor series must carry exactly.
	DivideByLabels LabelSet `yaml:"divideByLabels"`
}

// specKeys are the keys of a MetricSpec, for error messages.
var specKeys = []string{"aggregation", "divideBy", "divideByLabels", "labels", "name", "rule", "series"}

// Text is a non-empty string of the file and the line it is on; Line is 0
// when the key is absent (or null).
type Text struct {
	Value string
	Line  int
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (t *Text) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Value == "" {
		return typeError(n, "want a non-empty string")
	}
	t.Value, t.Line = n.Value, n.Line
	return nil
}

// LabelSet is a mapping of label names to values of the file, sorted by
// name, and the line it starts on; Line is 0 when the key is absent.
type LabelSet struct {
	Labels []exposition.Label
	Line   int
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *LabelSet) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return typeError(n, "labels must be a mapping of label names to values")
	}
	l.Line = n.Line
	var errs []string
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case !labelNameRE.MatchString(k.Value):
			errs = append(errs, lineError(k, "%q is not a label name", k.Value))
		case seen[k.Value]:
			errs = append(errs, lineError(k, "label %q given twice", k.Value))
		case v.Kind != yaml.ScalarNode:
			errs = append(errs, lineError(v, "the value of label %q must be a string", k.Value))
		default:
			seen[k.Value] = true
			l.Labels = append(l.Labels, exposition.Label{Name: k.Value, Value: v.Value})
		}
	}
	sort.Slice(l.Labels, func(i, j int) bool { return l.Labels[i].Name < l.Labels[j].Name })
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

func lineError(n *yaml.Node, format string, args ...any) string {
	return fmt.Sprintf("line %d: %s", n.Line, fmt.Sprintf(format, args...))
}

func typeError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{lineError(n, format, args...)}}
}

// The messages of the strict decoder that are reworded for users.
var (
	yamlLineRE     = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownFieldRE = regexp.MustCompile(`^field (\S+) not found in type \S*\.(\w+)$`)
)

// ParseMetricsConfig reads a metrics configuration file: a File decoded
// strictly, then checked. Every problem is reported, each prefixed with
// file:line.
func ParseMetricsConfig(file string, data []byte) ([]Metric, error) {
	var errs []error
	fail := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...)))
	}

	// The document's shape, with lines, before its fields.
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
		if root.Content[i].Value == "metrics" {
			list = root.Content[i+1]
		}
	}
	switch {
	case list == nil:
		fail(root.Line, "no \"metrics\" list")
	case list.Kind != yaml.SequenceNode:
		fail(list.Line, "\"metrics\" must be a list")
		return nil, errors.Join(errs...)
	case len(list.Content) == 0:
		fail(list.Line, "the metrics list is empty")
	}

	var f File
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&f); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		for _, msg := range te.Errors {
			errs = append(errs, decodeError(file, msg))
		}
	}
	if list == nil {
		return nil, errors.Join(errs...)
	}

	var metrics []Metric
	names := map[string]int{}
	for i, spec := range f.Metrics {
		line := list.Content[min(i, len(list.Content)-1)].Line
		if len(f.Metrics) != len(list.Content) {
			// The decoder left out an item it could not decode at all (a
			// key given twice); the others are found by their lines.
			if line = spec.itemLine(list); line == 0 {
				continue
			}
		}
		m, ok := spec.metric(line, fail)
		if !ok {
			continue
		}
		if _, dup := names[m.Name]; dup {
			fail(line, "metric %q is already defined at line %d", m.Name, names[m.Name])
			continue
		}
		names[m.Name] = line
		metrics = append(metrics, m)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return metrics, nil
}

// decodeError turns a message of the strict decoder, "line N: ...", into
// "file:N: ...", with unknown keys said plainly.
func decodeError(file, msg string) error {
	sub := yamlLineRE.FindStringSubmatch(msg)
	if sub == nil {
		return fmt.Errorf("%s: %s", file, msg)
	}
	line, _ := strconv.Atoi(sub[1])
	text := sub[2]
	if u := unknownFieldRE.FindStringSubmatch(text); u != nil {
		want := `"metrics"`
		if u[2] == "MetricSpec" {
			want = "one of " + strings.Join(specKeys, ", ")
		}
		text = fmt.Sprintf("unknown key %q (want %s)", u[1], want)
	}
	return fmt.Errorf("%s:%d: %s", file, line, text)
}

// itemLine returns the line of the list item the spec was decoded from:
// the last item that starts at or before its first key; 0 when the spec has
// no key to tell.
func (s MetricSpec) itemLine(list *yaml.Node) int {
	first := 0
	for _, l := range []int{s.Name.Line, s.Series.Line, s.Labels.Line, s.Rule.Line, s.Aggregation.Line, s.DivideBy.Line, s.DivideByLabels.Line} {
		if l > 0 && (first == 0 || l < first) {
			first = l
		}
	}
	line := 0
	for _, item := range list.Content {
		if first > 0 && item.Line <= first {
			line = item.Line
		}
	}
	return line
}

// metric checks one decoded item, written at line, and returns the Metric;
// it reports problems through fail and returns ok false when there were any.
func (s MetricSpec) metric(line int, fail func(int, string, ...any)) (Metric, bool) {
	ok := true
	bad := func(line int, format string, args ...any) {
		ok = false
		fail(line, format, args...)
	}
	m := Metric{
		Name:        s.Name.Value,
		Series:      Series{Name: s.Series.Value, Labels: s.Labels.Labels, Rule: Finite},
		Aggregation: AggregateSum,
	}
	if s.Name.Line == 0 {
		bad(line, "metric has no name")
	} else if !metricNameRE.MatchString(s.Name.Value) {
		bad(s.Name.Line, "name %q is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", s.Name.Value)
	}
	if s.Series.Line == 0 {
		bad(line, "metric %q has no series", m.Name)
	} else if !metricNameRE.MatchString(s.Series.Value) {
		bad(s.Series.Line, "series %q is not a metric name", s.Series.Value)
	}
	if s.Rule.Line != 0 {
		switch s.Rule.Value {
		case "finite":
			m.Series.Rule = Finite
		case "non-negative":
			m.Series.Rule = NonNegative
		case "count":
			m.Series.Rule = Count
		default:
			bad(s.Rule.Line, "unknown rule %q (want finite, non-negative or count)", s.Rule.Value)
		}
	}
	if s.Aggregation.Line != 0 {
		switch a := Aggregation(s.Aggregation.Value); a {
		case AggregateSum, AggregateMax, AggregateAvg:
			m.Aggregation = a
		default:
			bad(s.Aggregation.Line, "unknown aggregation %q (want sum, max or avg)", s.Aggregation.Value)
		}
	}
	if s.DivideBy.Line != 0 {
		if !metricNameRE.MatchString(s.DivideBy.Value) {
			bad(s.DivideBy.Line, "divideBy %q is not a metric name", s.DivideBy.Value)
		}
		m.DivideBy = &Series{Name: s.DivideBy.Value, Labels: s.DivideByLabels.Labels, Rule: Finite}
	} else if s.DivideByLabels.Line != 0 {
		bad(s.DivideByLabels.Line, "divideByLabels without divideBy")
	}
	return m, ok
}

var labelNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
