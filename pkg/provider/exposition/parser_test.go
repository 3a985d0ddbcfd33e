package exposition

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// got is one reported sample, flattened for comparison.
type got struct {
	sel   int
	value float64
	ts    int64
	hasTS bool
	line  int
}

func collect(p *Parser, n int) []got {
	var out []got
	for i := 0; i < n; i++ {
		for _, s := range p.Samples(i) {
			out = append(out, got{sel: i, value: s.Value, ts: s.TimestampMillis, hasTS: s.HasTimestamp, line: s.Line})
		}
	}
	return out
}

func sameFloat(a, b float64) bool {
	return a == b && math.Signbit(a) == math.Signbit(b) || math.IsNaN(a) && math.IsNaN(b)
}

func TestParse(t *testing.T) {
	active := Selector{Name: "websocket_connections_active"}
	max := Selector{Name: "websocket_connections_max"}
	tests := []struct {
		name      string
		body      string
		format    Format
		selectors []Selector
		want      []got
		wantErr   error  // nil: no error
		errLine   string // "line N" expected in the message
	}{
		{
			name: "text with help, type and unrelated series",
			body: `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 9
# HELP websocket_connections_active Open WebSocket connections.
# TYPE websocket_connections_active gauge
websocket_connections_active 1234
websocket_connections_max 10000
`,
			selectors: []Selector{active, max},
			want:      []got{{sel: 0, value: 1234, line: 6}, {sel: 1, value: 10000, line: 7}},
		},
		{
			name:      "missing series is no error",
			body:      "go_goroutines 9\n",
			selectors: []Selector{active},
		},
		{
			name:      "empty text body",
			body:      "",
			selectors: []Selector{active},
		},
		{
			name:      "last line without newline, CRLF and blank lines",
			body:      "# TYPE a gauge\r\n\r\n   \r\nwebsocket_connections_max 3\r\n\nwebsocket_connections_active 7",
			selectors: []Selector{active, max},
			want:      []got{{sel: 0, value: 7, line: 6}, {sel: 1, value: 3, line: 4}},
		},
		{
			name:      "text timestamp in milliseconds, tabs and float forms",
			body:      "websocket_connections_active\t12\t1700000000123\nwebsocket_connections_max{a=\"b\"} 1e4\n",
			selectors: []Selector{active, max},
			want:      []got{{sel: 0, value: 12, ts: 1700000000123, hasTS: true, line: 1}, {sel: 1, value: 10000, line: 2}},
		},
		{
			name: "openmetrics with counter, exemplar, timestamp and EOF",
			body: `# TYPE websocket_connections counter
# HELP websocket_connections Connections accepted.
# UNIT websocket_connections connections
websocket_connections_total 17 1700000000.5 # {trace_id="abc"} 1 1700000000.25
websocket_connections_created 1.7e9
# TYPE websocket_connections_active gauge
websocket_connections_active 5
# EOF
`,
			format:    FormatOpenMetrics,
			selectors: []Selector{active, {Name: "websocket_connections_total"}},
			want:      []got{{sel: 0, value: 5, line: 7}, {sel: 1, value: 17, ts: 1700000000500, hasTS: true, line: 4}},
		},
		{
			name:      "special values are reported",
			body:      "a NaN\nb +Inf\nc -Inf\nd -0\ne -3.5\n",
			selectors: []Selector{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}, {Name: "e"}},
			want: []got{
				{sel: 0, value: math.NaN(), line: 1}, {sel: 1, value: math.Inf(1), line: 2},
				{sel: 2, value: math.Inf(-1), line: 3}, {sel: 3, value: math.Copysign(0, -1), line: 4},
				{sel: 4, value: -3.5, line: 5},
			},
		},
		{
			name: "label filters with escaped values",
			body: `websocket_connections_active{path="/a\\b\"c\nd",shard="1"} 1
websocket_connections_active{shard="2",path="/a\\b\"c\nd"} 2
websocket_connections_active{path="/other",shard="2"} 3
`,
			selectors: []Selector{
				{Name: "websocket_connections_active", Labels: []Label{{Name: "path", Value: "/a\\b\"c\nd"}}},
				{Name: "websocket_connections_active", Labels: []Label{{Name: "shard", Value: "2"}, {Name: "path", Value: "/other"}}},
				{Name: "websocket_connections_active", Labels: []Label{{Name: "missing", Value: ""}}},
			},
			want: []got{{sel: 0, value: 1, line: 1}, {sel: 0, value: 2, line: 2}, {sel: 1, value: 3, line: 3}},
		},
		{
			name:      "quoted metric and label names",
			body:      "{\"websocket.connections\", \"my.label\"=\"x\"} 4\n# TYPE \"websocket.connections\" gauge\n",
			selectors: []Selector{{Name: "websocket.connections", Labels: []Label{{Name: "my.label", Value: "x"}}}},
			want:      []got{{sel: 0, value: 4, line: 1}},
		},
		{
			name:      "unquoted metric name in braces",
			body:      "{websocket_connections_active,a=\"1\"} 8\n",
			selectors: []Selector{active},
			want:      []got{{sel: 0, value: 8, line: 1}},
		},
		{
			name:      "spaces in label sets and a trailing comma",
			body:      "websocket_connections_active { a = \"1\" , b=\"2\", } 6\n",
			selectors: []Selector{active},
			want:      []got{{sel: 0, value: 6, line: 1}},
		},
		{
			name:      "different label sets of one name are separate samples",
			body:      "websocket_connections_active{pod=\"a\"} 1\nwebsocket_connections_active{pod=\"b\"} 2\n",
			selectors: []Selector{active},
			want:      []got{{sel: 0, value: 1, line: 1}, {sel: 0, value: 2, line: 2}},
		},
		{
			name:      "duplicate series",
			body:      "# TYPE websocket_connections_active gauge\nwebsocket_connections_active 1\nwebsocket_connections_active 2\n",
			selectors: []Selector{active},
			wantErr:   ErrDuplicateSeries,
			errLine:   "line 3:",
		},
		{
			name:      "duplicate series with labels in another order",
			body:      "websocket_connections_active{a=\"1\",b=\"2\"} 1\nwebsocket_connections_active{b=\"2\",a=\"1\"} 2\n",
			selectors: []Selector{active},
			wantErr:   ErrDuplicateSeries,
			errLine:   "line 2:",
		},
		{
			name:      "duplicates of unwanted series are not checked",
			body:      "other 1\nother 2\nwebsocket_connections_active 3\n",
			selectors: []Selector{active},
			want:      []got{{sel: 0, value: 3, line: 3}},
		},
		{
			name:      "html error page",
			body:      "<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1:",
		},
		{
			name:      "json document",
			body:      "{\"websocket_connections_active\": 3}\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1:",
		},
		{
			name:      "binary garbage",
			body:      "\x00\x01\xff\xfe garbage",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1:",
		},
		{
			name:      "garbage on an unwanted line is still an error",
			body:      "websocket_connections_active 1\nsome words here\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 2:",
		},
		{
			name:      "missing value",
			body:      "websocket_connections_active\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: missing value",
		},
		{
			name:      "invalid value",
			body:      "\n\nwebsocket_connections_active 12abc\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 3: invalid value",
		},
		{
			name:      "value out of range",
			body:      "websocket_connections_active 1e999\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: invalid value",
		},
		{
			name:      "invalid timestamp",
			body:      "websocket_connections_active 1 12.5\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: invalid timestamp",
		},
		{
			name:      "text after the timestamp",
			body:      "websocket_connections_active 1 2 3\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: unexpected text",
		},
		{
			name:      "unterminated label set",
			body:      "websocket_connections_active{a=\"1\" 3\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1:",
		},
		{
			name:      "unterminated label value",
			body:      "websocket_connections_active{a=\"1} 3\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: unterminated quoted string",
		},
		{
			name:      "invalid escape",
			body:      "websocket_connections_active{a=\"\\t\"} 3\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: invalid escape sequence",
		},
		{
			name:      "invalid utf-8 in a label value",
			body:      "websocket_connections_active{a=\"\xff\"} 3\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: invalid UTF-8",
		},
		{
			name:      "label given twice on a wanted series",
			body:      "websocket_connections_active{a=\"1\",a=\"2\"} 3\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: label \"a\" given twice",
		},
		{
			name:      "unknown metric type",
			body:      "# TYPE websocket_connections_active number\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: unknown metric type",
		},
		{
			name:      "incomplete help and type lines are ignored, as by Prometheus",
			body:      "# TYPE websocket_connections_active\n# TYPE\n# HELP \t\n# HELP websocket_connections_active\nwebsocket_connections_active 1\n",
			selectors: []Selector{active},
			want:      []got{{sel: 0, value: 1, line: 5}},
		},
		{
			name:      "invalid name in a type line",
			body:      "# TYPE websocket{connections} gauge\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: invalid character in metric name",
		},
		{
			name:      "EOF is a comment in the text format",
			body:      "# EOF\nwebsocket_connections_active 4\n",
			selectors: []Selector{active},
			want:      []got{{sel: 0, value: 4, line: 2}},
		},
		{
			name:      "plain comments are ignored",
			body:      "# this is a comment\n#another\n# HELPER text\nwebsocket_connections_active 2\n",
			selectors: []Selector{active},
			want:      []got{{sel: 0, value: 2, line: 4}},
		},
		{
			name:      "openmetrics without EOF",
			body:      "websocket_connections_active 2\n",
			format:    FormatOpenMetrics,
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 2: missing # EOF",
		},
		{
			name:      "content after EOF",
			body:      "websocket_connections_active 2\n# EOF\nwebsocket_connections_active 3\n",
			format:    FormatOpenMetrics,
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 3: content after # EOF",
		},
		{
			name:      "malformed exemplar",
			body:      "websocket_connections_total 2 # trace 1\n# EOF\n",
			format:    FormatOpenMetrics,
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1: expected '{'",
		},
		{
			name:      "metric name twice",
			body:      "websocket_connections_active{\"websocket_connections_active\"} 2\n",
			selectors: []Selector{active},
			wantErr:   ErrSyntax,
			errLine:   "line 1:",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewParser(tc.selectors...)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Parse([]byte(tc.body), tc.format)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error = %v, want %v", err, tc.wantErr)
				}
				if !strings.HasPrefix(err.Error(), tc.errLine) {
					t.Errorf("error %q does not start with %q", err, tc.errLine)
				}
				if got := collect(p, len(tc.selectors)); len(got) != 0 {
					t.Errorf("samples reported after an error: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			gotSamples := collect(p, len(tc.selectors))
			if len(gotSamples) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", gotSamples, tc.want)
			}
			for i, w := range tc.want {
				g := gotSamples[i]
				if g.sel != w.sel || !sameFloat(g.value, w.value) || g.ts != w.ts || g.hasTS != w.hasTS || g.line != w.line {
					t.Errorf("sample %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestNewParserRejectsBadSelectors(t *testing.T) {
	_, err := NewParser(
		Selector{Name: ""},
		Selector{Name: "a", Labels: []Label{{Name: "x", Value: "1"}, {Name: "x", Value: "2"}}},
		Selector{Name: "b", Labels: []Label{{Name: "", Value: "1"}}},
	)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"selector 0: empty metric name", `label "x" given twice`, "selector 2 (b): invalid label"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestParserReuse(t *testing.T) {
	p, err := NewParser(Selector{Name: "websocket_connections_active"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Parse([]byte("websocket_connections_active{a=\"1\"} 1\nwebsocket_connections_active{a=\"2\"} 2\n"), FormatText); err != nil {
		t.Fatal(err)
	}
	if err := p.Parse([]byte("websocket_connections_active{a=\"3\"} 3\n"), FormatText); err != nil {
		t.Fatal(err)
	}
	s := p.Samples(0)
	if len(s) != 1 || s[0].Value != 3 {
		t.Fatalf("samples after reuse = %+v", s)
	}
	if v, ok := p.LabelValue(s[0], "a"); !ok || string(v) != "3" {
		t.Errorf("LabelValue(a) = %q, %v", v, ok)
	}
	if _, ok := p.LabelValue(s[0], "b"); ok {
		t.Error("LabelValue(b) found a label that does not exist")
	}
	if err := p.Parse([]byte("<html>"), FormatText); err == nil {
		t.Fatal("no error for html")
	}
	if len(p.Samples(0)) != 0 {
		t.Error("samples kept after a failed parse")
	}
	p.Reset()
	if len(p.Samples(0)) != 0 || p.Lines() != 0 {
		t.Error("Reset kept results")
	}
}

func TestFormatFromContentType(t *testing.T) {
	tests := []struct {
		name string
		ct   string
		want Format
	}{
		{name: "text 0.0.4", ct: "text/plain; version=0.0.4; charset=utf-8; escaping=underscores", want: FormatText},
		{name: "openmetrics", ct: "application/openmetrics-text; version=1.0.0; charset=utf-8", want: FormatOpenMetrics},
		{name: "openmetrics upper case", ct: "Application/OpenMetrics-Text", want: FormatOpenMetrics},
		{name: "missing", ct: "", want: FormatText},
		{name: "html", ct: "text/html", want: FormatText},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := FormatFromContentType(tc.ct); got != tc.want {
				t.Errorf("FormatFromContentType(%q) = %v, want %v", tc.ct, got, tc.want)
			}
		})
	}
}

// TestTypicalBodies checks the benchmark bodies, which client_golang
// produced, and that the parse does not allocate once warmed up.
func TestTypicalBodies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		path   string
		format Format
	}{
		{name: "text", path: typicalText, format: FormatText},
		{name: "openmetrics", path: typicalOpenMetrics, format: FormatOpenMetrics},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := readTestdata(t, tc.path)
			p, err := NewParser(append(benchSelectors, Selector{
				Name:   "websocket_upgrade_duration_seconds_bucket",
				Labels: []Label{{Name: "path", Value: "/chat"}, {Name: "le", Value: "+Inf"}},
			})...)
			if err != nil {
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(20, func() {
				if err := p.Parse(body, tc.format); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("Parse allocated %v times per run, want 0", allocs)
			}
			want := []float64{1234, 10000, 300}
			for i, w := range want {
				if s := p.Samples(i); len(s) != 1 || s[0].Value != w {
					t.Errorf("selector %d: got %+v, want one sample of %v", i, s, w)
				}
			}
		})
	}
}

// TestAgreesWithExpfmt compares every gauge, counter and untyped sample of
// the typical body with what prometheus/common reads from it.
func TestAgreesWithExpfmt(t *testing.T) {
	body := readTestdata(t, typicalText)
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var selectors []Selector
	var want []float64
	names := make([]string, 0, len(families))
	for name := range families {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, m := range families[name].GetMetric() {
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			case m.Untyped != nil:
				v = m.GetUntyped().GetValue()
			default:
				continue
			}
			sel := Selector{Name: name}
			for _, l := range m.GetLabel() {
				sel.Labels = append(sel.Labels, Label{Name: l.GetName(), Value: l.GetValue()})
			}
			selectors = append(selectors, sel)
			want = append(want, v)
		}
	}
	if len(selectors) < 40 {
		t.Fatalf("only %d samples to compare", len(selectors))
	}
	p, err := NewParser(selectors...)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Parse(body, FormatText); err != nil {
		t.Fatal(err)
	}
	for i, sel := range selectors {
		s := p.Samples(i)
		if len(s) != 1 || !sameFloat(s[0].Value, want[i]) {
			t.Errorf("%s%v: got %+v, want one sample of %v", sel.Name, sel.Labels, s, want[i])
		}
	}
}

// TestManyMatchingSeries covers the indexed duplicate search.
func TestManyMatchingSeries(t *testing.T) {
	var body strings.Builder
	const n = 1000
	for i := range n {
		fmt.Fprintf(&body, "websocket_connections_active{pod=\"p%d\",zone=\"z\"} %d\n", i, i)
	}
	p, err := NewParser(Selector{Name: "websocket_connections_active"})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 { // the second round reuses the index
		if err := p.Parse([]byte(body.String()), FormatText); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if got := len(p.Samples(0)); got != n {
			t.Fatalf("round %d: %d samples, want %d", round, got, n)
		}
	}
	dup := body.String() + "websocket_connections_active{zone=\"z\",pod=\"p500\"} 1\n"
	err = p.Parse([]byte(dup), FormatText)
	if !errors.Is(err, ErrDuplicateSeries) || !strings.Contains(err.Error(), fmt.Sprintf("line %d:", n+1)) ||
		!strings.Contains(err.Error(), "also exposed at line 501") {
		t.Errorf("error = %v, want a duplicate of line 501 at line %d", err, n+1)
	}
}
