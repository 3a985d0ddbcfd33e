package provider

import (
	"context"
	"testing"
	"time"

	"github.com/wsscale/wsscale/pkg/provider/scrape"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	podsel "github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

func podIndexer(t testing.TB, list ...*corev1.Pod) cache.Indexer {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, podsel.PodIndexers())
	for _, p := range list {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return idx
}

func rsIndexer(t testing.TB, sets ...*appsv1.ReplicaSet) cache.Indexer {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, podsel.ReplicaSetIndexers())
	for _, rs := range sets {
		if err := idx.Add(rs); err != nil {
			t.Fatal(err)
		}
	}
	return idx
}

// fakeSource serves fixed points by "namespace/pod", per metric.
type fakeSource struct {
	points map[int]map[string]store.Point
	err    error
	calls  int
}

var _ Source = (*fakeSource)(nil)

func (f *fakeSource) Lookup(_ context.Context, metric int, namespace string, pods []string) ([]store.Point, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	out := make([]store.Point, len(pods))
	for i, p := range pods {
		out[i] = f.points[metric][namespace+"/"+p]
	}
	return out, nil
}

// sample is a successful scrape at at with the values of the default
// metrics' series; -1 marks an absent series.
func sample(at time.Time, values ...float64) scrape.Sample {
	s := scrape.Sample{Time: at}
	for _, v := range values {
		if v < 0 {
			s.Values = append(s.Values, scrape.Value{})
			continue
		}
		s.Values = append(s.Values, scrape.Value{Value: v, Present: true})
	}
	return s
}
