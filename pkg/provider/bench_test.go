package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/provider/internal/podtest"
	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	podsel "github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
	"github.com/wsscale/wsscale/pkg/provider/store"
)

// realisticPodJSON is a pod of the reference Deployment as the API server
// sends it: managed fields, probes, env, volumes, conditions and all.
const realisticPodJSON = `{
 "metadata": {"name": "%[1]s", "generateName": "echo-7d9c6b5f4-", "namespace": "ws",
  "uid": "6a1f0d0e-%[2]04d-4b7e-9d1c-2f3e4a5b6c7d", "resourceVersion": "18%[2]d", "creationTimestamp": "2026-11-25T17:00:00Z",
  "labels": {"app.kubernetes.io/name": "echo", "app.kubernetes.io/instance": "demo", "pod-template-hash": "7d9c6b5f4"},
  "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics",
   "kubectl.kubernetes.io/restartedAt": "2026-11-25T16:59:00Z"},
  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "echo-7d9c6b5f4", "uid": "0b1c2d3e-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true}],
  "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": "2026-11-25T17:00:00Z", "fieldsType": "FieldsV1",
   "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:pod-template-hash": {}}, "f:ownerReferences": {}},
    "f:spec": {"f:containers": {"k:{\"name\":\"echo\"}": {".": {}, "f:env": {}, "f:image": {}, "f:ports": {}, "f:readinessProbe": {}, "f:resources": {}}}}}},
   {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-11-25T17:00:05Z", "fieldsType": "FieldsV1", "subresource": "status",
    "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:hostIP": {}, "f:phase": {}, "f:podIP": {}, "f:podIPs": {}, "f:startTime": {}}}}]},
 "spec": {"containers": [{"name": "echo", "image": "wsscale/echo:0.1.0", "args": ["--drain-annotations-file=/etc/podinfo/annotations"],
   "ports": [{"name": "ws", "containerPort": 8080, "protocol": "TCP"}, {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
   "env": [{"name": "MAX_CONNECTIONS", "value": "10000"}, {"name": "DRAIN_TIMEOUT", "value": "30s"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
   "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
   "readinessProbe": {"httpGet": {"path": "/health", "port": "ws"}, "periodSeconds": 5},
   "livenessProbe": {"httpGet": {"path": "/livez", "port": "ws"}, "periodSeconds": 10},
   "volumeMounts": [{"name": "podinfo", "mountPath": "/etc/podinfo"}, {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}],
  "volumes": [{"name": "podinfo", "downwardAPI": {"items": [{"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
   {"name": "kube-api-access-x7k2p", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
  "terminationGracePeriodSeconds": 45, "serviceAccountName": "default", "nodeName": "node-1", "schedulerName": "default-scheduler",
  "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
 "status": {"phase": "Running", "hostIP": "198.18.0.1", "podIP": "198.19.%[3]d.%[4]d", "podIPs": [{"ip": "198.19.%[3]d.%[4]d"}], "startTime": "2026-11-25T17:00:01Z", "qosClass": "Burstable",
  "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-25T17:00:05Z"}, {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-11-25T17:00:05Z"},
   {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-25T17:00:01Z"}, {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-25T17:00:00Z"}],
  "containerStatuses": [{"name": "echo", "ready": true, "restartCount": 0, "image": "wsscale/echo:0.1.0", "imageID": "wsscale/echo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
   "containerID": "process://echo-%[2]d", "started": true, "state": {"running": {"startedAt": "2026-11-25T17:00:02Z"}}}]}
}`

// decodePod decodes a fresh pod, as the informer's reflector would.
func decodePod(tb testing.TB, i int) *corev1.Pod {
	var p corev1.Pod
	data := fmt.Sprintf(realisticPodJSON, fmt.Sprintf("echo-7d9c6b5f4-%05d", i), i, i/250, i%250+1)
	if err := json.Unmarshal([]byte(data), &p); err != nil {
		tb.Fatal(err)
	}
	return &p
}

// benchCluster is n tracked pods in the informer cache and the value store, all
// with a fresh value.
func benchCluster(tb testing.TB, n int) (*Provider, *store.Store) {
	sel := &podsel.Selection{RequireAnnotation: true, PortName: podsel.DefaultMetricsPortName}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, podsel.PodIndexers())
	values := store.New(metricsconfig.DefaultMetrics(), time.Hour, clock.RealClock{}, nil)
	tracker := podsel.NewPodTracker(sel, nil, values)
	now := time.Now()
	for i := range n {
		obj, _ := sel.StripPod(decodePod(tb, i))
		if err := idx.Add(obj); err != nil {
			tb.Fatal(err)
		}
		tracker.OnAdd(obj, true)
		values.Observe(scrape.PodKey{Namespace: "ws", Name: obj.(*corev1.Pod).Name}, scrape.Sample{
			Time: now, Values: []scrape.Value{{Value: float64(i), Present: true}, {Value: 10000, Present: true}},
		})
	}
	p, err := New(Config{Metrics: metricsconfig.DefaultMetrics(), Pods: idx, ReplicaSets: rsIndexer(tb), Selection: sel, Source: values})
	if err != nil {
		tb.Fatal(err)
	}
	return p, values
}

// BenchmarkGetMetricBySelector answers the HPA's query for every pod of a
// Deployment (label selector app.kubernetes.io/name=echo), in process, and
// reports the p99 latency.
func BenchmarkGetMetricBySelector(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			p, _ := benchCluster(b, n)
			sel, err := labels.Parse("app.kubernetes.io/name=echo,app.kubernetes.io/instance in (demo)")
			if err != nil {
				b.Fatal(err)
			}
			info := podInfo(metricsconfig.ConnectionsMetric)
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				list, err := p.GetMetricBySelector(context.Background(), "ws", sel, info, labels.Everything())
				lat = append(lat, time.Since(start))
				if err != nil || len(list.Items) != n {
					b.Fatalf("got %d items, %v", len(list.Items), err)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkMemoryPerPod measures the heap held per tracked pod at 10,000
// pods: the stripped informer cache, the tracker and the value store, and
// separately the scraper's schedule (without idle connections, whose cost
// BenchmarkScrape10kPods in pkg/provider/scrape measures).
func BenchmarkMemoryPerPod(b *testing.B) {
	const n = 10000
	for b.Loop() {
		before := heapInUse()
		p, values := benchCluster(b, n)
		cacheAndStore := heapInUse() - before
		runtime.KeepAlive(p)

		cfg := scrape.NewConfig(metricsconfig.ScrapeSeries(metricsconfig.DefaultMetrics())...)
		scraper, err := scrape.New(cfg, values)
		if err != nil {
			b.Fatal(err)
		}
		before = heapInUse()
		for i := range n {
			if err := scraper.Set(scrape.Target{
				Key: scrape.PodKey{Namespace: "ws", Name: fmt.Sprintf("echo-7d9c6b5f4-%05d", i)},
				URL: fmt.Sprintf("http://198.19.%d.%d:9090/metrics", i/250, i%250+1),
			}); err != nil {
				b.Fatal(err)
			}
		}
		scraperHeap := heapInUse() - before
		runtime.KeepAlive(scraper)
		runtime.KeepAlive(values)
		b.ReportMetric(float64(cacheAndStore)/n, "cache+values-B/pod")
		b.ReportMetric(float64(scraperHeap)/n, "scraper-B/pod")
	}
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// BenchmarkFreshness changes one pod's connection count among 1,000 pods
// scraped every second on loopback, and measures how long the new value
// takes to appear in the API's answer; the bound is one interval plus 1s.
func BenchmarkFreshness(b *testing.B) {
	const n = 1000
	const interval = time.Second
	values := make([]atomic.Int64, n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/pod/"))
		if err != nil || i < 0 || i >= n {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "# TYPE websocket_connections_active gauge\nwebsocket_connections_active %d\nwebsocket_connections_max 10000\n", values[i].Load())
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	metrics := metricsconfig.DefaultMetrics()
	vs := store.New(metrics, 2*interval, clock.RealClock{}, nil)
	cfg := scrape.NewConfig(metricsconfig.ScrapeSeries(metrics)...)
	cfg.Interval, cfg.Timeout = interval, interval/2
	scraper, err := scrape.New(cfg, vs)
	if err != nil {
		b.Fatal(err)
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, podsel.PodIndexers())
	sel := &podsel.Selection{PortName: podsel.DefaultMetricsPortName}
	for i := range n {
		pod := podtest.NewPod("ws", fmt.Sprintf("pod-%d", i))
		if err := idx.Add(pod); err != nil {
			b.Fatal(err)
		}
		vs.Add(scrape.PodKey{Namespace: "ws", Name: pod.Name})
		if err := scraper.Set(scrape.Target{Key: scrape.PodKey{Namespace: "ws", Name: pod.Name}, URL: fmt.Sprintf("http://%s/pod/%d", host, i)}); err != nil {
			b.Fatal(err)
		}
	}
	p, err := New(Config{Metrics: metrics, Pods: idx, ReplicaSets: rsIndexer(b), Selection: sel, Source: vs})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = scraper.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	info := podInfo(metricsconfig.ConnectionsMetric)
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		pod := (i * 7919) % n
		want := int64(1000 + i)
		values[pod].Store(want)
		start := time.Now()
		name := fmt.Sprintf("pod-%d", pod)
		for {
			v, err := p.GetMetricByName(ctx, types.NamespacedName{Namespace: "ws", Name: name}, info, labels.Everything())
			if err == nil && v.Value.Value() == want {
				break
			}
			if time.Since(start) > 3*interval {
				b.Fatalf("pod %s: value %d not visible after %v (last %v, %v)", name, want, 3*interval, v, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
	b.ReportMetric(float64((interval + time.Second).Milliseconds()), "bound-ms")
}
