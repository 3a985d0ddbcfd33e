package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/test/e2e/framework"
)

// scalePodsEnv sets how many echo pods TestNodeHoldsManyEchoPods runs (default 20, the
// README's test command; docs/benchmarks.md records a run with 100).
const scalePodsEnv = "WSSCALE_E2E_SCALE_PODS"

// TestNodeHoldsManyEchoPods runs the demo's echo Deployment (image wsscale/echo, its probes and
// downward API volumes) with many replicas on the one node and waits until every pod is Ready.
// It logs the time to Ready and the memory of the process that runs the node agent (the
// cluster's supervisor), then removes them all.
func TestNodeHoldsManyEchoPods(t *testing.T) {
	n := 20
	if v := os.Getenv(scalePodsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 || n > 105 {
			t.Fatalf("%s=%q: want a pod count in 1..105 (the node holds 110 pods)", scalePodsEnv, v)
		}
	}
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const ns = "node-scale"
	deploy, _ := demoManifests(t, ns)
	deploy.Spec.Replicas = ptr.To(int32(n))
	createNamespace(ctx, t, client, ns)
	before, _ := processMemory(c.SupervisorPID())

	start := time.Now()
	must[*appsv1.Deployment](t, "deployment")(client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}))
	selector := metav1.FormatLabelSelector(deploy.Spec.Selector)
	poll(ctx, t, fmt.Sprintf("%d echo pods Ready", n), 6*time.Minute, func() (bool, string) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		ready, phases := 0, map[string]int{}
		for i := range list.Items {
			p := &list.Items[i]
			if isReady(p) {
				ready++
			}
			phases[podState(p)]++
		}
		return ready == n && len(list.Items) == n, fmt.Sprintf("%d/%d ready after %v: %v", ready, n, time.Since(start).Round(time.Millisecond), phases)
	})
	elapsed := time.Since(start)
	after, err := processMemory(c.SupervisorPID())
	if err != nil {
		t.Errorf("node agent memory: %v", err)
	}
	t.Logf("RESULT pods=%d ready_in=%v supervisor_rss_before=%dMiB supervisor_rss_after=%dMiB supervisor_rss_peak=%dMiB per_pod=%.2fMiB",
		n, elapsed.Round(10*time.Millisecond), before.rss>>20, after.rss>>20, after.peak>>20, float64(after.rss-before.rss)/float64(n)/(1<<20))

	// Leave the node as the other tests expect it.
	must[struct{}](t, "delete deployment")(struct{}{}, client.AppsV1().Deployments(ns).Delete(ctx, deploy.Name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}))
	poll(ctx, t, "echo pods gone", 4*time.Minute, func() (bool, string) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(list.Items) == 0, fmt.Sprintf("%d left", len(list.Items))
	})
}

// procMemory is a process's resident set size and its peak, in bytes.
type procMemory struct{ rss, peak int64 }

// processMemory reads VmRSS and VmHWM of a process from /proc.
func processMemory(pid int) (procMemory, error) {
	var m procMemory
	if pid == 0 {
		return m, fmt.Errorf("no supervisor process")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			m.rss = kb << 10
		case "VmHWM":
			m.peak = kb << 10
		}
	}
	return m, sc.Err()
}
