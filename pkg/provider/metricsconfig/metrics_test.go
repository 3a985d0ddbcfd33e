package metricsconfig

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/wsscale/wsscale/pkg/provider/exposition"
)

func TestDefaultMetricsAreValid(t *testing.T) {
	if errs := ValidateMetrics(DefaultMetrics()); len(errs) > 0 {
		t.Fatalf("default metrics invalid: %v", errs)
	}
	series := ScrapeSeries(DefaultMetrics())
	want := []Series{
		{Name: ActiveSeries, Rule: Count},
		{Name: MaxSeries, Rule: Count},
	}
	if !reflect.DeepEqual(series, want) {
		t.Errorf("ScrapeSeries = %+v, want %+v", series, want)
	}
}

func TestParseMetricsConfig(t *testing.T) {
	const good = `# served metrics
metrics:
- name: websocket_connections
  series: websocket_connections_active
  rule: count
- name: sessions
  series: app_sessions
  labels: {kind: "player", region: eu}
  aggregation: max
- name: load
  series: app_sessions
  labels: {region: eu, kind: player}
  rule: non-negative
  divideBy: app_capacity
  divideByLabels: {region: eu}
  aggregation: avg
`
	metrics, err := ParseMetricsConfig("m.yaml", []byte(good))
	if err != nil {
		t.Fatalf("ParseMetricsConfig: %v", err)
	}
	want := []Metric{
		{Name: "websocket_connections", Series: Series{Name: "websocket_connections_active", Rule: Count}, Aggregation: AggregateSum},
		{Name: "sessions", Series: Series{Name: "app_sessions", Labels: []exposition.Label{{Name: "kind", Value: "player"}, {Name: "region", Value: "eu"}}}, Aggregation: AggregateMax},
		{Name: "load", Series: Series{Name: "app_sessions", Rule: NonNegative, Labels: []exposition.Label{{Name: "kind", Value: "player"}, {Name: "region", Value: "eu"}}},
			DivideBy: &Series{Name: "app_capacity", Labels: []exposition.Label{{Name: "region", Value: "eu"}}}, Aggregation: AggregateAvg},
	}
	if !reflect.DeepEqual(metrics, want) {
		t.Errorf("metrics =\n%+v\nwant\n%+v", metrics, want)
	}
	// The same labelled series in two metrics is scraped once, with the
	// stricter rule.
	series := ScrapeSeries(metrics)
	if len(series) != 3 || series[1].Rule != NonNegative {
		t.Errorf("ScrapeSeries = %+v", series)
	}
}

func TestParseMetricsConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error, each with its line
	}{
		{name: "empty", in: "", want: []string{"c.yaml: empty metrics configuration"}},
		{name: "syntax", in: "metrics:\n- name: [a\n", want: []string{"c.yaml: yaml: line "}},
		{name: "not a mapping", in: "- a\n", want: []string{"c.yaml:1: want a mapping"}},
		{name: "no metrics key", in: "other: 1\n", want: []string{`c.yaml:1: unknown key "other"`, `no "metrics" list`}},
		{name: "metrics not a list", in: "metrics: {}\n", want: []string{`c.yaml:1: "metrics" must be a list`}},
		{name: "empty list", in: "metrics: []\n", want: []string{"c.yaml:1: the metrics list is empty"}},
		{
			name: "bad fields",
			in: `metrics:
- name: ok_metric
  series: ok_series
- name: "bad name"
  series: s
  aggregation: median
  rule: exact
  colour: blue
- series: lonely
- name: x
  labels: {"0bad": v}
- name: ok_metric
  series: again
- name: y
  series: s
  divideByLabels: {a: b}
`,
			want: []string{
				`c.yaml:4: name "bad name" is not a metric name`,
				`c.yaml:6: unknown aggregation "median" (want sum, max or avg)`,
				`c.yaml:7: unknown rule "exact" (want finite, non-negative or count)`,
				`c.yaml:8: unknown key "colour"`,
				`c.yaml:9: metric has no name`,
				`c.yaml:11: "0bad" is not a label name`,
				`c.yaml:10: metric "x" has no series`,
				`c.yaml:12: metric "ok_metric" is already defined at line 2`,
				`c.yaml:16: divideByLabels without divideBy`,
			},
		},
		{
			name: "keys given twice and values of the wrong type",
			in: `metrics:
- name: a
  series: s
  name: b
- name: [x]
  series: s
  labels: [a, b]
- name: "bad name"
  series: s
  labels: {a: x, a: y}
`,
			want: []string{
				`c.yaml:4: mapping key "name" already defined at line 2`,
				`c.yaml:5: want a non-empty string`,
				`c.yaml:7: labels must be a mapping of label names to values`,
				`c.yaml:8: name "bad name" is not a metric name`,
				`c.yaml:10: label "a" given twice`,
			},
		},
		{name: "two documents", in: "metrics: []\n---\nmetrics: []\n", want: []string{"c.yaml:2: more than one YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMetricsConfig("c.yaml", []byte(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateMetrics(t *testing.T) {
	errs := ValidateMetrics([]Metric{
		{Name: "a", Series: Series{Name: "s"}, Aggregation: "sum"},
		{Name: "a", Series: Series{}, Aggregation: "median"},
		{Name: "b/c", Series: Series{Name: "s"}, Aggregation: "avg", DivideBy: &Series{}},
	})
	want := []string{`"a" is given twice`, `metric "a": no series`, `unknown aggregation "median"`, `name "b/c" is not a metric name`, `divideBy has no series name`}
	joined := ""
	for _, e := range errs {
		joined += e.Error() + "\n"
	}
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("errors %q do not contain %q", joined, w)
		}
	}
	if errs := ValidateMetrics(nil); len(errs) != 1 {
		t.Errorf("ValidateMetrics(nil) = %v, want one error", errs)
	}
}

func TestValueRules(t *testing.T) {
	tests := []struct {
		name  string
		rule  ValueRule
		value float64
		want  string
	}{
		{name: "finite accepts negative", rule: Finite, value: -1.5},
		{name: "finite rejects NaN", rule: Finite, value: math.NaN(), want: "NaN"},
		{name: "finite rejects -Inf", rule: Finite, value: math.Inf(-1), want: "infinite"},
		{name: "non-negative accepts fraction", rule: NonNegative, value: 0.25},
		{name: "non-negative rejects negative", rule: NonNegative, value: -0.25, want: "negative"},
		{name: "count accepts zero", rule: Count, value: 0},
		{name: "count accepts negative zero", rule: Count, value: math.Copysign(0, -1)},
		{name: "count accepts 2^53", rule: Count, value: 1 << 53},
		{name: "count rejects beyond 2^53", rule: Count, value: 1 << 54, want: "not an integer count"},
		{name: "count rejects fraction", rule: Count, value: 3.5, want: "not an integer count"},
		{name: "count rejects +Inf", rule: Count, value: math.Inf(1), want: "infinite"},
		{name: "count rejects negative", rule: Count, value: -1, want: "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.rule.Check(tc.value); got != tc.want {
				t.Errorf("%v.Check(%v) = %q, want %q", tc.rule, tc.value, got, tc.want)
			}
		})
	}
}
