package exposition

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// FuzzParse feeds arbitrary bodies to the parser in both formats. The seed
// corpus is in testdata/fuzz/FuzzParse; run with
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 60s ./pkg/provider/exposition
func FuzzParse(f *testing.F) {
	selectors := []Selector{
		{Name: "websocket_connections_active"},
		{Name: "websocket_connections_max", Labels: []Label{{Name: "pool", Value: "a\"b"}}},
		{Name: "websocket.connections"},
	}
	reused, err := NewParser(selectors...)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, format := range []Format{FormatText, FormatOpenMetrics} {
			err := reused.Parse(body, format)
			fresh, _ := NewParser(selectors...)
			freshErr := fresh.Parse(body, format)
			if (err == nil) != (freshErr == nil) {
				t.Fatalf("%v: reused parser error %v, fresh parser error %v", format, err, freshErr)
			}
			if err != nil {
				var pe *Error
				if !errors.As(err, &pe) {
					t.Fatalf("%v: error %v is not an *Error", format, err)
				}
				if pe.Line < 1 || pe.Line > reused.Lines() {
					t.Fatalf("%v: error line %d outside 1..%d", format, pe.Line, reused.Lines())
				}
				if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrDuplicateSeries) {
					t.Fatalf("%v: error %v has no kind", format, err)
				}
				for i := range selectors {
					if len(reused.Samples(i)) != 0 {
						t.Fatalf("%v: samples reported with error %v", format, err)
					}
				}
				continue
			}
			for i := range selectors {
				a, b := reused.Samples(i), fresh.Samples(i)
				if len(a) != len(b) {
					t.Fatalf("%v: selector %d: reused parser found %d samples, fresh %d", format, i, len(a), len(b))
				}
				for j := range a {
					if a[j].Line != b[j].Line || a[j].TimestampMillis != b[j].TimestampMillis ||
						math.Float64bits(a[j].Value) != math.Float64bits(b[j].Value) {
						t.Fatalf("%v: selector %d sample %d: reused %+v, fresh %+v", format, i, j, a[j], b[j])
					}
					if a[j].Line < 1 || a[j].Line > reused.Lines() {
						t.Fatalf("%v: sample line %d outside 1..%d", format, a[j].Line, reused.Lines())
					}
				}
			}
			if v := reused.Samples(1); len(v) > 0 {
				if raw, ok := reused.LabelValue(v[0], "pool"); !ok || string(raw) != `a\"b` {
					t.Fatalf("%v: filtered sample has pool=%q (found %v)", format, raw, ok)
				}
			}
		}
	})
}

// FuzzAgainstExpfmt checks that a text body prometheus/common accepts is
// accepted here too, with the same value for a gauge. Known, intended
// differences: a value must be separated from the metric name by a blank
// (expfmt reads "name+1" as "name +1"), and a wanted series exposed twice is
// an error here.
//
//	go test -run '^$' -fuzz FuzzAgainstExpfmt -fuzztime 60s ./pkg/provider/exposition
func FuzzAgainstExpfmt(f *testing.F) {
	const name = "websocket_connections_active"
	p, err := NewParser(Selector{Name: name})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		theirs := expfmt.NewTextParser(model.UTF8Validation)
		families, theirErr := theirs.TextToMetricFamilies(bytes.NewReader(body))
		if theirErr != nil {
			return
		}
		if err := p.Parse(body, FormatText); err != nil {
			if errors.Is(err, ErrDuplicateSeries) || strings.Contains(err.Error(), "after metric name") {
				return
			}
			t.Fatalf("expfmt accepts the body, Parse fails: %v", err)
		}
		family, ok := families[name]
		if !ok || family.GetType().String() != "GAUGE" || len(family.GetMetric()) != 1 || len(p.Samples(0)) != 1 {
			return
		}
		want, got := family.GetMetric()[0].GetGauge().GetValue(), p.Samples(0)[0].Value
		if math.Float64bits(want) != math.Float64bits(got) && !(math.IsNaN(want) && math.IsNaN(got)) {
			t.Fatalf("%s = %v, expfmt reads %v", name, got, want)
		}
	})
}
