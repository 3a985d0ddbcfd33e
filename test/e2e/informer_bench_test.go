package e2e

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/test/e2e/framework"
)

const (
	benchNamespace = "informer-bench"
	benchPods      = 10000
	benchSelected  = 100
)

// BenchmarkInformerMemory measures what the adapter's pod and ReplicaSet
// informers hold after their initial sync against the real kube-apiserver,
// with 10,000 running pods of which 100 carry the wsscale.io/scrape label,
// all annotated prometheus.io/scrape=true (as in a cluster where every
// application is scraped by Prometheus). The pods are bound to no node, so
// nothing runs them; their status is set to Running by hand.
//
//	flock /tmp/wsscale-e2e.lock go test -run '^$' -bench BenchmarkInformerMemory -benchtime 1x ./test/e2e/
//
// Without -race: the race detector multiplies heap figures.
func BenchmarkInformerMemory(b *testing.B) {
	c := framework.Cluster(b)
	cfg := c.RESTConfig()
	cfg.QPS, cfg.Burst = 2000, 2000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	createBenchPods(ctx, b, client)

	scenarios := []struct {
		name      string
		selector  string
		annotated bool
		json      bool
		old       bool // the former watch: no field selector
	}{
		{name: "every-pod-annotation-filtered-protobuf", annotated: true, old: true},
		{name: "every-pod-annotation-filtered-json", annotated: true, old: true, json: true},
		{name: "label-selected-running-protobuf", selector: pods.DefaultPodSelector},
	}
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			sel, err := labels.Parse(sc.selector)
			if err != nil {
				b.Fatal(err)
			}
			selection := &pods.Selection{Selector: sel, RequireAnnotation: sc.annotated, PortName: pods.DefaultMetricsPortName}
			for range b.N {
				icfg := rest.CopyConfig(cfg)
				if sc.json {
					icfg.ContentType, icfg.AcceptContentTypes = "application/json", "application/json"
				}
				retained, allocated, cached, tracked := measureInformers(ctx, b, icfg, selection, sc.old)
				b.ReportMetric(float64(retained), "retained-B")
				b.ReportMetric(float64(allocated), "alloc-B")
				b.ReportMetric(float64(cached), "cached-pods")
				b.ReportMetric(float64(tracked), "tracked-pods")
			}
		})
	}
}

// measureInformers starts the informers, waits for their sync, and returns
// the heap they retain and the bytes allocated meanwhile.
func measureInformers(ctx context.Context, b *testing.B, cfg *rest.Config, selection *pods.Selection, old bool) (retained, allocated uint64, cached, tracked int) {
	b.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)

	tracker := pods.NewPodTracker(selection, nil, nil)
	ictx, stop := context.WithCancel(ctx)
	var podCache cache.Indexer
	var shutdown func()
	if old {
		// The former watch: every pod of the cluster, the client's
		// encoding, no label or field selector; the adapter filters.
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			b.Fatal(err)
		}
		podFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(selection.StripPod))
		rsFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(pods.StripReplicaSet))
		podInf, rsInf := podFactory.Core().V1().Pods().Informer(), rsFactory.Apps().V1().ReplicaSets().Informer()
		if _, err := podInf.AddEventHandler(tracker); err != nil {
			b.Fatal(err)
		}
		podFactory.Start(ictx.Done())
		rsFactory.Start(ictx.Done())
		if !cache.WaitForCacheSync(ictx.Done(), podInf.HasSynced, rsInf.HasSynced) {
			b.Fatal("caches not synced")
		}
		podCache, shutdown = podInf.GetIndexer(), func() { podFactory.Shutdown(); rsFactory.Shutdown() }
	} else {
		inf, err := pods.NewInformersForConfig(cfg, "", selection)
		if err != nil {
			b.Fatal(err)
		}
		if err := inf.AddPodHandler(tracker); err != nil {
			b.Fatal(err)
		}
		inf.Start(ictx)
		if err := inf.WaitForSync(ictx); err != nil {
			b.Fatal(err)
		}
		podCache, shutdown = inf.Pods(), inf.Shutdown
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	cached, tracked = len(podCache.ListKeys()), tracker.Tracked()
	stop()
	shutdown()
	b.Logf("cached pods %d, tracked %d, heap retained %d B (%.0f B per cached pod), allocated during sync %d B",
		cached, tracked, after.HeapInuse-before.HeapInuse, float64(after.HeapInuse-before.HeapInuse)/float64(max(cached, 1)),
		after.TotalAlloc-before.TotalAlloc)
	return after.HeapInuse - before.HeapInuse, after.TotalAlloc - before.TotalAlloc, cached, tracked
}

// createBenchPods creates the namespace's pods unless they are there, and
// marks them Running.
func createBenchPods(ctx context.Context, b *testing.B, client kubernetes.Interface) {
	b.Helper()
	must[*corev1.Namespace](b, "namespace")(client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{}))
	existing, err := client.CoreV1().Pods(benchNamespace).List(ctx, metav1.ListOptions{FieldSelector: "status.phase=Running", ResourceVersion: "0"})
	if err != nil {
		b.Fatal(err)
	}
	if len(existing.Items) >= benchPods {
		return
	}
	start := time.Now()
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if err := createRunningPod(ctx, client, i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range benchPods {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.Logf("created %d running pods in %v", benchPods, time.Since(start).Round(time.Second))
}

func createRunningPod(ctx context.Context, client kubernetes.Interface, i int) error {
	podClient := client.CoreV1().Pods(benchNamespace)
	name := fmt.Sprintf("app-%05d", i)
	lbls := map[string]string{"app.kubernetes.io/name": fmt.Sprintf("app-%d", i%50), "app.kubernetes.io/instance": "bench", "pod-template-hash": "7d9c6b5f4"}
	if i%(benchPods/benchSelected) == 0 {
		lbls["wsscale.io/scrape"] = "true"
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls, Annotations: map[string]string{
			"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics",
			"kubectl.kubernetes.io/restartedAt": "2026-11-25T16:59:00Z",
		}},
		Spec: corev1.PodSpec{
			// No scheduler has this name and no node is set: nothing runs the pod.
			SchedulerName:                 "wsscale-bench-unscheduled",
			TerminationGracePeriodSeconds: ptr.To[int64](45),
			Containers: []corev1.Container{{
				Name: "app", Image: "example.com/app:1.2.3", Args: []string{"--listen=:8080", "--metrics=:9090"},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
				Env: []corev1.EnvVar{{Name: "MAX_CONNECTIONS", Value: "10000"}, {Name: "LOG_LEVEL", Value: "info"},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
				},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}, PeriodSeconds: 5},
				LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromString("http")}}, PeriodSeconds: 10},
			}},
		},
	}
	created, err := podClient.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s: %w", name, err)
	}
	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", i/65536%256, i/256%256, i%256),
		HostIP: "10.255.0.1", StartTime: &now, QOSClass: corev1.PodQOSBurstable,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, Image: "example.com/app:1.2.3",
			ImageID:     "example.com/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			ContainerID: "containerd://" + name, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
	}
	created.Status.PodIPs = []corev1.PodIP{{IP: created.Status.PodIP}}
	if _, err := podClient.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("mark pod %s running: %w", name, err)
	}
	return nil
}
