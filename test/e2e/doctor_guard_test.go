package e2e

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	autoscalingv1alpha1 "github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/test/e2e/framework"
)

// TestPluginDoctorGuard breaks each thing the doctor's guard and drain-safety checks look at on
// a guarded echo workload (HPA → ScaleGuard → Deployment), sees the check fail with the right
// fix, repairs it and sees it pass:
//   - the Deployment is scaled past the guard (kubectl scale on the Deployment): Ready=False
//     ForeignReplicaChange until it is scaled back;
//   - the pod template loses the downwardAPI labels volume behind DRAIN_LABELS_FILE and the
//     readiness probe on /health, then gets them back;
//   - the ScaleGuard controller stops (the adapter scaled to zero) and the guard's spec changes:
//     observedGeneration falls behind; meanwhile a pod of another Deployment carries the drain
//     mark of a ScaleGuard that no longer exists and refuses clients. The controller comes back:
//     the guard catches up and the controller's sweep un-marks the stray, which serves again.
//
// Each part repairs what it broke when it fails, so that the next part starts from a sound
// workload; the adapter is back at one replica when the test ends.
func TestPluginDoctorGuard(t *testing.T) {
	c := framework.Cluster(t)
	client := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dyn := pluginAdapter(ctx, t, c)
	const ns = "doctor-guard"
	pluginEcho(ctx, t, client, ns, 2)
	legacy := legacyEcho(ctx, t, client, ns)

	// An HPA through the guard that keeps two pods.
	guards := pluginGuard(ctx, t, client, dyn, ns, autoscalingv1alpha1.ScaleDownSpec{DrainTimeout: &metav1.Duration{Duration: time.Minute}}, 2, 3)
	// Cleanups run last first: the adapter comes back, then the guard goes (its finalizer needs
	// the controller), then the namespace.
	t.Cleanup(func() { deleteGuard(t, dyn, ns, "echo") })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		setAdapterReplicas(ctx, t, client, dyn, 1)
	})
	guardObj := "ScaleGuard " + ns + "/echo"
	strayObj := "pod " + ns + "/" + legacy

	t.Run("guard acted on", func(t *testing.T) {
		expectCheck(ctx, t, c, ns, "guard", guardObj, checkPass, "Ready, observedGeneration")
		checks, _ := runDoctor(ctx, t, c, ns)
		for _, ch := range checks {
			if ch.Area == "guard" && ch.Object != guardObj {
				t.Errorf("unexpected guard finding before any pod is marked: %s %s: %s", ch.Status, ch.Object, ch.Evidence)
			}
		}
	})

	t.Run("guard not ready", func(t *testing.T) {
		// The Deployment scaled directly, past the guard, as an HPA or kubectl scale aimed at
		// the Deployment would: the guard refuses to fight and says so in Ready.
		scaleEcho := func(n int32) {
			patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
			if _, err := client.AppsV1().Deployments(ns).Patch(ctx, "echo", types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "scale"); err != nil {
				t.Fatal(err)
			}
		}
		scaleEcho(3)
		t.Cleanup(func() { scaleEcho(2) })
		expectCheck(ctx, t, c, ns, "guard", guardObj, checkFail,
			"Ready=False ForeignReplicaChange: Deployment echo has 3 replicas, the guard applied 2", "kubectl -n "+ns+" describe scaleguard echo")
		scaleEcho(2)
		expectCheck(ctx, t, c, ns, "guard", guardObj, checkPass, "Ready, observedGeneration")
		waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=echo", 2)
	})

	// Changing the pod template rolls the pods.
	t.Run("drain safety", func(t *testing.T) {
		deploys := client.AppsV1().Deployments(ns)
		orig, err := deploys.Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := orig.Spec.Template.Spec.DeepCopy()
		setTemplate := func(change func(*corev1.PodSpec)) {
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				d, err := deploys.Get(ctx, "echo", metav1.GetOptions{})
				if err != nil {
					return err
				}
				change(&d.Spec.Template.Spec)
				_, err = deploys.Update(ctx, d, metav1.UpdateOptions{})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		restore := func(s *corev1.PodSpec) {
			s.Volumes = want.Volumes
			s.Containers[0].VolumeMounts = want.Containers[0].VolumeMounts
			s.Containers[0].ReadinessProbe = want.Containers[0].ReadinessProbe
		}
		obj := "Deployment " + ns + "/echo"
		expectCheck(ctx, t, c, ns, "drain", obj, checkPass, "DRAIN_LABELS_FILE=/etc/podinfo/labels comes from downwardAPI volume podinfo")
		expectCheck(ctx, t, c, ns, "drain", obj, checkPass, "readiness probe on /health")
		// One rollout breaks both: the labels volume and its mount go, and the readiness probe.
		setTemplate(func(s *corev1.PodSpec) {
			s.Volumes = nil
			s.Containers[0].VolumeMounts = nil
			s.Containers[0].ReadinessProbe = nil
		})
		t.Cleanup(func() { setTemplate(restore) })
		expectCheck(ctx, t, c, ns, "drain", obj, checkFail,
			"DRAIN_LABELS_FILE=/etc/podinfo/labels, but no downwardAPI volume with metadata.labels is mounted there",
			"add a downwardAPI volume with an item path labels, fieldRef metadata.labels, mounted at /etc/podinfo")
		expectCheck(ctx, t, c, ns, "drain", obj, checkFail,
			"container echo has no readiness probe: a draining pod stays in the endpoints", "add readinessProbe: httpGet: {path: /health, port: ws}")
		setTemplate(restore)
		expectCheck(ctx, t, c, ns, "drain", obj, checkPass, "DRAIN_LABELS_FILE=/etc/podinfo/labels comes from downwardAPI volume podinfo")
		expectCheck(ctx, t, c, ns, "drain", obj, checkPass, "readiness probe on /health")
		var d *appsv1.Deployment
		poll(ctx, t, "rollout back to ready", 3*time.Minute, func() (bool, string) {
			var err error
			d, err = deploys.Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			s := d.Status
			return s.ObservedGeneration == d.Generation && s.UpdatedReplicas == 2 && s.ReadyReplicas == 2 && s.Replicas == 2, fmt.Sprintf("%+v", s)
		})
	})

	t.Run("controller stopped, stray mark", func(t *testing.T) {
		setAdapterReplicas(ctx, t, client, dyn, 0)
		// The guard's spec changes while nothing acts on it.
		patched, err := guards.Patch(ctx, "echo", types.MergePatchType, []byte(`{"spec":{"scaleDown":{"drainTimeout":"2m"}}}`), metav1.PatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		gen := patched.GetGeneration()
		expectCheck(ctx, t, c, ns, "guard", guardObj, checkFail,
			fmt.Sprintf("status.observedGeneration %d < generation %d: no controller is acting on it", gen-1, gen),
			fmt.Sprintf("Service %s/%s selects no running pod: bring the adapter back (kubectl -n %s get deploy,pods -l app=%s)", adapterNamespace, adapterName, adapterNamespace, adapterName))

		// What a victim of ScaleGuard "legacy" carries once the guard is deleted while no
		// controller runs (its finalizer removed by hand): the drain label, the lowest deletion
		// cost, the annotation naming the guard, exactly as the controller writes them.
		markStray(ctx, t, client, ns, legacy, "legacy")
		// The server reads the label through its downwardAPI file and refuses new clients.
		poll(ctx, t, "the marked pod leaves service", 2*time.Minute, func() (bool, string) {
			p, err := client.CoreV1().Pods(ns).Get(ctx, legacy, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return !isReady(p), podState(p)
		})
		expectCheck(ctx, t, c, ns, "guard", strayObj, checkFail,
			"carries wsscale.io/drain=true but it names ScaleGuard legacy, which no longer exists: it refuses new clients for nothing",
			fmt.Sprintf("kubectl -n %s label pod %s wsscale.io/drain- && kubectl -n %s annotate pod %s wsscale.io/scale-guard- controller.kubernetes.io/pod-deletion-cost-", ns, legacy, ns, legacy))

		// The controller comes back: it acts on the new generation, and its sweep un-marks the
		// stray because ScaleGuard legacy does not exist.
		setAdapterReplicas(ctx, t, client, dyn, 1)
		expectCheck(ctx, t, c, ns, "guard", guardObj, checkPass, fmt.Sprintf("Ready, observedGeneration %d", gen))
		poll(ctx, t, "the sweep un-marks the stray, which serves again", 2*time.Minute, func() (bool, string) {
			p, err := client.CoreV1().Pods(ns).Get(ctx, legacy, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			_, label := p.Labels[autoscalingv1alpha1.DrainLabel]
			_, by := p.Annotations[autoscalingv1alpha1.GuardAnnotation]
			_, cost := p.Annotations[autoscalingv1alpha1.DeletionCostAnnotation]
			return !label && !by && !cost && isReady(p), fmt.Sprintf("drain label %v, guard annotation %v, deletion cost %v, %s", label, by, cost, podState(p))
		})
		checks, _ := runDoctor(ctx, t, c, ns)
		for _, ch := range checks {
			if ch.Object == strayObj {
				t.Errorf("the stray is un-marked, yet the doctor reports %s: %s", ch.Status, ch.Evidence)
			}
		}
		if log := adapterLog(ctx, t, client); !containsLine(log, "Un-marking a pod whose ScaleGuard is gone", legacy) {
			t.Errorf("the adapter's log has no sweep of %s:\n%s", legacy, log)
		}
	})

	if t.Failed() {
		return // a part failed: what it left is not a repaired workload
	}
	// With everything repaired, nothing fails and the exit code is 0.
	poll(ctx, t, "doctor: no failed check", 2*time.Minute, func() (bool, string) {
		checks, code := runDoctor(ctx, t, c, ns)
		var failed []string
		for _, ch := range checks {
			if ch.Status == checkFail {
				failed = append(failed, fmt.Sprintf("%s %s: %s", ch.Area, ch.Object, ch.Evidence))
			}
		}
		return len(failed) == 0 && code == 0, fmt.Sprintf("exit %d, failed: %v", code, failed)
	})
	out, _, _ := plugin(ctx, t, c, "-n", ns, "doctor")
	t.Logf("kubectl wsscale doctor:\n%s", out)
}

// legacyEcho runs a second echo Deployment "legacy" with one pod in ns (the demo's shape, with
// its drain labels volume) and returns its pod's name.
func legacyEcho(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) string {
	t.Helper()
	deploy, _ := demoManifests(t, ns)
	deploy.Name = "legacy"
	sel := map[string]string{"app.kubernetes.io/name": "legacy"}
	deploy.Labels = sel
	deploy.Spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
	deploy.Spec.Template.Labels = map[string]string{"app.kubernetes.io/name": "legacy"}
	deploy.Spec.Replicas = ptr.To[int32](1)
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return waitForReadyPods(ctx, t, client, ns, "app.kubernetes.io/name=legacy", 1)[0].Name
}

// markStray marks a pod as ScaleGuard guard's controller marks a victim, in one patch with the
// pod's UID as a precondition.
func markStray(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, pod, guard string) {
	t.Helper()
	p, err := client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339)
	patch := fmt.Sprintf(`{"metadata":{"uid":%q,"labels":{%q:%q},"annotations":{%q:%q,%q:%q}}}`, p.UID,
		autoscalingv1alpha1.DrainLabel, autoscalingv1alpha1.DrainLabelValue,
		autoscalingv1alpha1.DeletionCostAnnotation, strconv.Itoa(math.MinInt32),
		autoscalingv1alpha1.GuardAnnotation, guard+" "+deadline)
	if _, err := client.CoreV1().Pods(ns).Patch(ctx, pod, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setAdapterReplicas scales the adapter Deployment (and with it the ScaleGuard controller it
// runs) to n: at 0 it waits until its pods are gone, at 1 until the pod is ready and the
// custom metrics APIServices are Available.
func setAdapterReplicas(ctx context.Context, t *testing.T, client kubernetes.Interface, dyn dynamic.Interface, n int32) {
	t.Helper()
	deploys := client.AppsV1().Deployments(adapterNamespace)
	d, err := deploys.Get(ctx, adapterName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ptr.Deref(d.Spec.Replicas, 1) != n {
		patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
		if _, err := deploys.Patch(ctx, adapterName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "scale"); err != nil {
			t.Fatal(err)
		}
	}
	poll(ctx, t, fmt.Sprintf("adapter at %d replicas", n), 3*time.Minute, func() (bool, string) {
		pods, err := client.CoreV1().Pods(adapterNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + adapterName})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		ready := int32(0)
		for i := range pods.Items {
			p := &pods.Items[i]
			states = append(states, p.Name+":"+podState(p))
			if isReady(p) && p.DeletionTimestamp == nil {
				ready++
			}
		}
		return len(pods.Items) == int(n) && ready == n, fmt.Sprintf("pods %v", states)
	})
	if n == 0 {
		return
	}
	for _, name := range metricsAPIServices {
		waitAPIServiceAvailable(ctx, t, dyn, name)
	}
}

// deleteGuard deletes a ScaleGuard and waits until its finalizer has run.
func deleteGuard(t *testing.T, dyn dynamic.Interface, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := dyn.Resource(scaleGuardResource).Namespace(ns)
	if err := res.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete ScaleGuard %s/%s: %v", ns, name, err)
		return
	}
	poll(ctx, t, "ScaleGuard "+ns+"/"+name+" gone", time.Minute, func() (bool, string) {
		_, err := res.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// adapterLog returns the log of the adapter's running pod.
func adapterLog(ctx context.Context, t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	pods, err := client.CoreV1().Pods(adapterNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + adapterName})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		data, err := client.CoreV1().Pods(adapterNamespace).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatalf("log of %s: %v", p.Name, err)
		}
		out.Write(data)
	}
	return out.String()
}
