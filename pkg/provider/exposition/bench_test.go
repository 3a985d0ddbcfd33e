package exposition

import (
	"bytes"
	"os"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The benchmark bodies are what github.com/prometheus/client_golang serves
// for a registry with the Go and process collectors plus the reference
// server's websocket_* metrics (two of them histograms), in both formats.
const (
	typicalText        = "testdata/typical.prom"
	typicalOpenMetrics = "testdata/typical_openmetrics.txt"
)

var benchSelectors = []Selector{
	{Name: "websocket_connections_active"},
	{Name: "websocket_connections_max"},
}

func readTestdata(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkParse measures this package on a typical ~200-line exposition.
// ns/line is the figure the performance target is stated in.
func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name   string
		path   string
		format Format
	}{
		{name: "text", path: typicalText, format: FormatText},
		{name: "openmetrics", path: typicalOpenMetrics, format: FormatOpenMetrics},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := readTestdata(b, bc.path)
			p, err := NewParser(benchSelectors...)
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Parse(body, bc.format); err != nil {
				b.Fatal(err)
			}
			lines := p.Lines()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := p.Parse(body, bc.format); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(lines), "ns/line")
			b.ReportMetric(float64(lines), "lines")
			if got := p.Samples(0); len(got) != 1 || got[0].Value != 1234 {
				b.Fatalf("websocket_connections_active: got %+v", got)
			}
		})
	}
}

// BenchmarkExpfmt parses the same bodies with github.com/prometheus/common,
// for comparison: it builds every metric family, as Prometheus' own
// client-side decoders do.
func BenchmarkExpfmt(b *testing.B) {
	b.Run("text", func(b *testing.B) {
		body := readTestdata(b, typicalText)
		lines := bytes.Count(body, []byte("\n"))
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			parser := expfmt.NewTextParser(model.UTF8Validation)
			families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			if v := families["websocket_connections_active"].GetMetric()[0].GetGauge().GetValue(); v != 1234 {
				b.Fatalf("websocket_connections_active = %v", v)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(lines), "ns/line")
	})
}
