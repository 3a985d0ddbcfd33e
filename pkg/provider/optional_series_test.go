package provider

import (
	"context"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// TestOptionalNumerator: a metric whose series is marked optional (the ScaleGuard's
// websocket_draining) is scraped when a pod exposes it, and a pod that does not expose it keeps
// its other values instead of failing the scrape.
func TestOptionalNumerator(t *testing.T) {
	metrics := append(DefaultMetrics(), Metric{
		Name: "websocket_draining", Series: scrape.Series{Name: "websocket_draining", Rule: scrape.Count, Optional: true}, Aggregation: AggregateMax,
	})
	series := ScrapeSeries(metrics)
	optional := map[string]bool{}
	for _, s := range series {
		optional[s.Name] = s.Optional
	}
	if !optional["websocket_draining"] || optional["websocket_connections_active"] {
		t.Fatalf("scraped series %+v: want websocket_draining optional, websocket_connections_active required", series)
	}

	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := NewStore(metrics, 10*time.Second, testingclock.NewFakeClock(t0), nil)
	a := scrape.PodKey{Namespace: "ns", Name: "a"}
	s.Add(a)
	// The series in the order ScrapeSeries returned them; -1 marks the absent one.
	values := make([]float64, len(series))
	for i, sr := range series {
		switch sr.Name {
		case "websocket_connections_active":
			values[i] = 40
		case "websocket_connections_max":
			values[i] = 100
		default:
			values[i] = -1
		}
	}
	s.Observe(a, sample(t0, values...))
	conns, _ := s.Lookup(context.Background(), 0, "ns", []string{"a"})
	draining, _ := s.Lookup(context.Background(), 2, "ns", []string{"a"})
	if !conns[0].OK || conns[0].Value != 40 || draining[0].OK {
		t.Errorf("connections %+v draining %+v: want 40 and no value", conns[0], draining[0])
	}
}
