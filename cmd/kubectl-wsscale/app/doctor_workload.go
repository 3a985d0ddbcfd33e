package app

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
)

// Reasons of the Events the adapter writes on a pod when its scrapes start and stop failing.
const (
	EventScrapeFailing   = "ScrapeFailing"
	EventScrapeRecovered = "ScrapeRecovered"
)

// checkHPAs checks every HPA of the namespace that reads a custom Pods or Object metric: the
// metric is served, ScalingActive is True, and the last Events hold no FailedGetPodsMetric.
func (d *doctor) checkHPAs(ctx context.Context) error {
	list, err := d.c.kube.AutoscalingV2().HorizontalPodAutoscalers(d.namespace()).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list HPAs: %w", err)
	}
	for i := range list.Items {
		h := &list.Items[i]
		var metrics []string
		for _, m := range h.Spec.Metrics {
			switch {
			case m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil:
				metrics = append(metrics, m.Pods.Metric.Name)
			case m.Type == autoscalingv2.ObjectMetricSourceType && m.Object != nil:
				metrics = append(metrics, m.Object.Metric.Name)
			}
		}
		if len(metrics) == 0 {
			continue
		}
		obj := fmt.Sprintf("HPA %s/%s", h.Namespace, h.Name)
		var missing []string
		for _, m := range metrics {
			if d.served != nil && !d.served[m] {
				missing = append(missing, m)
			}
		}
		if len(missing) > 0 {
			var served []string
			for m := range d.served {
				served = append(served, m)
			}
			sort.Strings(served)
			d.add(Check{Area: "hpa", Object: obj, Status: Fail,
				Evidence: fmt.Sprintf("reads %s, which no adapter serves (custom.metrics.k8s.io lists %s)", strings.Join(missing, ", "), orNone(served)),
				Fix:      fmt.Sprintf("name a served metric in spec.metrics (wsscale serves %s for pods)", d.o.Metric)})
			continue
		}
		active := findHPACondition(h, autoscalingv2.ScalingActive)
		var unread []string
		for _, m := range metrics {
			if !hpaReads(h, m) {
				unread = append(unread, m)
			}
		}
		switch {
		case active == nil:
			d.add(Check{Area: "hpa", Object: obj, Status: Warn, Evidence: "no ScalingActive condition yet: the HPA controller has not computed it", Fix: "wait for the controller's next sync (15 s by default) and run the doctor again"})
		case active.Status != corev1.ConditionTrue:
			d.add(Check{Area: "hpa", Object: obj, Status: Fail,
				Evidence: fmt.Sprintf("ScalingActive=%s %s: %s", active.Status, active.Reason, active.Message),
				Fix:      "the HPA cannot read its metric: see the pods and metric checks (kubectl describe hpa " + h.Name + ")"})
		case len(unread) > 0:
			// Active, but the last sync had no value for a metric: FailedGetPodsMetric says why.
			why := "no FailedGetPodsMetric Event left to say why"
			if e := d.lastEvent(ctx, h.Namespace, "HorizontalPodAutoscaler", h.Name, "FailedGetPodsMetric", "FailedGetObjectMetric"); e != nil {
				why = fmt.Sprintf("%s %v ago: %s", e.Reason, d.now.Sub(eventTime(e).Time).Round(time.Second), e.Message)
			}
			d.add(Check{Area: "hpa", Object: obj, Status: Warn,
				Evidence: fmt.Sprintf("ScalingActive=True, but status.currentMetrics has no value of %s; %s", strings.Join(unread, ", "), why),
				Fix:      "a pod the HPA selects has no value: see the pods check"})
		default:
			d.add(Check{Area: "hpa", Object: obj, Status: Pass, Evidence: fmt.Sprintf("ScalingActive=True (%s), reads %s (status.currentMetrics)", active.Reason, strings.Join(metrics, ", "))})
		}
	}
	return nil
}

// hpaReads reports whether the HPA's last sync read a value of the metric.
func hpaReads(h *autoscalingv2.HorizontalPodAutoscaler, name string) bool {
	for _, m := range h.Status.CurrentMetrics {
		switch {
		case m.Pods != nil && m.Pods.Metric.Name == name:
			return m.Pods.Current.AverageValue != nil
		case m.Object != nil && m.Object.Metric.Name == name:
			return m.Object.Current.Value != nil || m.Object.Current.AverageValue != nil
		}
	}
	return false
}

func findHPACondition(h *autoscalingv2.HorizontalPodAutoscaler, t autoscalingv2.HorizontalPodAutoscalerConditionType) *autoscalingv2.HorizontalPodAutoscalerCondition {
	for i := range h.Status.Conditions {
		if h.Status.Conditions[i].Type == t {
			return &h.Status.Conditions[i]
		}
	}
	return nil
}

// lastEvent returns the latest Event of an object with one of the reasons, or nil.
func (d *doctor) lastEvent(ctx context.Context, ns, kind, name string, reasons ...string) *corev1.Event {
	list, err := d.c.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fmt.Sprintf("involvedObject.kind=%s,involvedObject.name=%s", kind, name),
	})
	if err != nil {
		return nil
	}
	var last *corev1.Event
	for i := range list.Items {
		e := &list.Items[i]
		for _, r := range reasons {
			if e.Reason == r && (last == nil || eventTime(last).Time.Before(eventTime(e).Time)) {
				last = e
			}
		}
	}
	return last
}

// checkValues checks that a per-pod query returns values for the workload.
func (d *doctor) checkValues(w *Workload) {
	if w.deploy == nil {
		return
	}
	obj := fmt.Sprintf("values of %s/%s", w.Namespace, w.Deployment)
	var n, live int
	var oldest time.Duration
	for _, p := range w.Pods {
		if !p.Terminating {
			live++
		}
		if p.Connections != nil && !p.Terminating {
			n++
			oldest = max(oldest, p.ValueAge.Duration)
		}
	}
	switch {
	case len(w.Problems) > 0 && n == 0:
		d.add(Check{Area: "metric", Object: obj, Status: Fail, Evidence: strings.Join(w.Problems, "; "), Fix: "fix the APIService and metric checks above"})
	case n == 0 && live > 0:
		d.add(Check{Area: "metric", Object: obj, Status: Fail, Evidence: fmt.Sprintf("the per-pod query returns no value for any of the %d pods", live), Fix: "see the pods check for why the adapter does not track them"})
	case n == 0:
		d.add(Check{Area: "metric", Object: obj, Status: Warn, Evidence: "the Deployment has no pods"})
	default:
		d.add(Check{Area: "metric", Object: obj, Status: Pass, Evidence: fmt.Sprintf("%d of %d pods have a value; the oldest is %v old", n, live, oldest)})
	}
}

// checkUntracked reports the pods the HPA selects that have no value, each with why: the scrape
// label, the metrics port, failing scrapes (from the adapter's Events on the pod), not running.
func (d *doctor) checkUntracked(ctx context.Context, w *Workload) {
	if w.deploy == nil || w.HPA == "" && w.ScaleGuard == "" {
		return
	}
	scrape, err := labels.Parse(d.o.ScrapeSelector)
	if err != nil {
		d.add(Check{Area: "pods", Object: "--scrape-selector", Status: Fail, Evidence: err.Error()})
		return
	}
	obj := fmt.Sprintf("pods of %s/%s", w.Namespace, w.Deployment)
	var bad []string
	var fixes []string
	live := 0
	status := Pass
	worse := func(s string) {
		if s == Fail || status == Pass {
			status = s
		}
	}
	for i, p := range w.Pods {
		pod := &w.pods[i]
		if !p.Terminating {
			live++
		}
		if p.Connections != nil || p.Terminating {
			continue
		}
		switch {
		case !scrape.Matches(labels.Set(pod.Labels)):
			bad = append(bad, fmt.Sprintf("%s: no %s label, the adapter does not watch it", p.Name, d.o.ScrapeSelector))
			fixes = append(fixes, fmt.Sprintf("add the label %s to the Deployment's pod template (spec.template.metadata.labels; the websocket-app chart sets it)", d.o.ScrapeSelector))
			worse(Fail)
		case p.Phase != string(corev1.PodRunning):
			bad = append(bad, fmt.Sprintf("%s: %s, not scraped until it runs", p.Name, p.Phase))
			worse(Warn)
		case metricsPort(pod) == "":
			bad = append(bad, fmt.Sprintf("%s: no metrics port (no prometheus.io/port annotation, no container port named metrics)", p.Name))
			fixes = append(fixes, "annotate the pod template with prometheus.io/port: \"<metrics port>\"")
			worse(Fail)
		default:
			if e := d.lastEvent(ctx, w.Namespace, "Pod", p.Name, EventScrapeFailing, EventScrapeRecovered); e != nil && e.Reason == EventScrapeFailing {
				bad = append(bad, fmt.Sprintf("%s: scrapes failing since %v ago: %s", p.Name, d.now.Sub(eventTime(e).Time).Round(time.Second), e.Message))
				fixes = append(fixes, fmt.Sprintf("make %s answer on port %s (kubectl logs %s; the adapter's Events: kubectl get events --field-selector involvedObject.name=%s)", metricsPath(pod), metricsPort(pod), p.Name, p.Name))
			} else {
				bad = append(bad, fmt.Sprintf("%s: no fresh value and no failing scrape reported (new pod, or the adapter does not see it yet)", p.Name))
				fixes = append(fixes, "wait one scrape interval; if it stays, check the adapter's logs")
			}
			worse(Fail)
		}
	}
	if len(bad) == 0 {
		d.add(Check{Area: "pods", Object: obj, Status: Pass, Evidence: fmt.Sprintf("the adapter tracks all %d pods the HPA selects", live)})
		return
	}
	d.add(Check{Area: "pods", Object: obj, Status: status,
		Evidence: fmt.Sprintf("%d of %d pods the HPA selects have no value: %s", len(bad), live, strings.Join(bad, "; ")),
		Fix:      strings.Join(unique(fixes), "; ")})
}

func metricsPort(p *corev1.Pod) string {
	if v := p.Annotations["prometheus.io/port"]; v != "" {
		return v
	}
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "metrics" {
				return strconv.Itoa(int(port.ContainerPort))
			}
		}
	}
	return ""
}

func metricsPath(p *corev1.Pod) string {
	if v := p.Annotations["prometheus.io/path"]; v != "" {
		return v
	}
	return "/metrics"
}

// serverConfig is what the doctor reads of the WebSocket server's container.
type serverConfig struct {
	container     *corev1.Container
	drain         time.Duration
	shutdownDelay time.Duration
	preStop       time.Duration
	ping          time.Duration
	labelsFile    string
}

// closeGrace is the reference server's time for the clients' close frames after a drain.
const closeGrace = 2 * time.Second

// readServerConfig finds the server container (the one with DRAIN_TIMEOUT, else the first) and
// its drain settings, with the reference server's defaults.
func readServerConfig(spec *corev1.PodSpec) serverConfig {
	cfg := serverConfig{drain: 30 * time.Second, shutdownDelay: 5 * time.Second, ping: 30 * time.Second}
	if len(spec.Containers) == 0 {
		return cfg
	}
	cfg.container = &spec.Containers[0]
	for i := range spec.Containers {
		for _, e := range spec.Containers[i].Env {
			if e.Name == "DRAIN_TIMEOUT" || e.Name == "DRAIN_LABELS_FILE" {
				cfg.container = &spec.Containers[i]
			}
		}
	}
	for _, e := range cfg.container.Env {
		switch e.Name {
		case "DRAIN_TIMEOUT":
			if v, err := time.ParseDuration(e.Value); err == nil {
				cfg.drain = v
			}
		case "SHUTDOWN_DELAY":
			if v, err := time.ParseDuration(e.Value); err == nil {
				cfg.shutdownDelay = v
			}
		case "PING_INTERVAL":
			if v, err := strconv.Atoi(e.Value); err == nil {
				cfg.ping = time.Duration(v) * time.Millisecond
			}
		case "DRAIN_LABELS_FILE":
			cfg.labelsFile = e.Value
		}
	}
	if l := cfg.container.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		cfg.preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	return cfg
}

// checkDrainSafety checks the pod template: a grace period longer than the whole drain, the
// downward-API volume the drain label needs, a readiness probe on the drain-aware /health.
func (d *doctor) checkDrainSafety(w *Workload) {
	if w.deploy == nil {
		return
	}
	spec := &w.deploy.Spec.Template.Spec
	cfg := readServerConfig(spec)
	obj := fmt.Sprintf("Deployment %s/%s", w.Namespace, w.Deployment)
	if cfg.container == nil {
		return
	}
	grace := 30 * time.Second
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	need := cfg.preStop + cfg.shutdownDelay + cfg.drain + closeGrace
	parts := fmt.Sprintf("preStop %v + shutdown delay %v + drain window %v + close grace %v = %v", cfg.preStop, cfg.shutdownDelay, cfg.drain, closeGrace, need)
	if grace <= need {
		d.add(Check{Area: "drain", Object: obj, Status: Fail,
			Evidence: fmt.Sprintf("terminationGracePeriodSeconds %d is not above the drain: %s; the kubelet kills the pod mid-drain and its last clients are cut without a close frame", int(grace.Seconds()), parts),
			Fix:      fmt.Sprintf("set spec.template.spec.terminationGracePeriodSeconds to at least %d (the websocket-app chart derives it), or shorten DRAIN_TIMEOUT", int((need + 5*time.Second).Seconds()))})
	} else {
		d.add(Check{Area: "drain", Object: obj, Status: Pass, Evidence: fmt.Sprintf("terminationGracePeriodSeconds %d > %s", int(grace.Seconds()), parts)})
	}

	// The drain label reaches the server through a downward-API file of the pod's labels.
	guarded := w.ScaleGuard != ""
	missing := Warn
	if guarded {
		missing = Fail
	}
	switch vol := labelsVolume(spec, cfg); {
	case cfg.labelsFile == "":
		d.add(Check{Area: "drain", Object: obj, Status: missing,
			Evidence: fmt.Sprintf("container %s has no DRAIN_LABELS_FILE: the server never sees the ScaleGuard's %s label, so a victim keeps its clients until the deadline", cfg.container.Name, v1alpha1.DrainLabel),
			Fix:      "mount a downwardAPI volume with metadata.labels (e.g. at /etc/podinfo/labels) and set DRAIN_LABELS_FILE to it"})
	case vol == "":
		d.add(Check{Area: "drain", Object: obj, Status: missing,
			Evidence: fmt.Sprintf("DRAIN_LABELS_FILE=%s, but no downwardAPI volume with metadata.labels is mounted there", cfg.labelsFile),
			Fix:      fmt.Sprintf("add a downwardAPI volume with an item path %s, fieldRef metadata.labels, mounted at %s", path.Base(cfg.labelsFile), path.Dir(cfg.labelsFile))})
	default:
		d.add(Check{Area: "drain", Object: obj, Status: Pass, Evidence: fmt.Sprintf("DRAIN_LABELS_FILE=%s comes from downwardAPI volume %s (metadata.labels)", cfg.labelsFile, vol)})
	}

	// Readiness on the drain-aware endpoint: a draining pod leaves the Service's endpoints.
	rp := cfg.container.ReadinessProbe
	switch {
	case rp == nil:
		d.add(Check{Area: "drain", Object: obj, Status: Fail, Evidence: fmt.Sprintf("container %s has no readiness probe: a draining pod stays in the endpoints and new clients keep arriving", cfg.container.Name),
			Fix: "add readinessProbe: httpGet: {path: /health, port: ws}"})
	case rp.HTTPGet == nil || rp.HTTPGet.Path != "/health":
		d.add(Check{Area: "drain", Object: obj, Status: Warn, Evidence: fmt.Sprintf("container %s's readiness probe is not an httpGet of /health, the endpoint that fails while draining", cfg.container.Name),
			Fix: "probe /health (the reference server's drain-aware readiness), or make your probe fail while draining"})
	default:
		d.add(Check{Area: "drain", Object: obj, Status: Pass, Evidence: "readiness probe on /health, which fails while the server drains"})
	}
}

// labelsVolume names the downwardAPI volume with metadata.labels mounted at DRAIN_LABELS_FILE.
func labelsVolume(spec *corev1.PodSpec, cfg serverConfig) string {
	if cfg.labelsFile == "" {
		return ""
	}
	for _, m := range cfg.container.VolumeMounts {
		rel, ok := strings.CutPrefix(cfg.labelsFile, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.DownwardAPI == nil {
				continue
			}
			for _, it := range v.DownwardAPI.Items {
				if it.Path == rel && it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.labels" {
					return v.Name
				}
			}
		}
	}
	return ""
}

// checkGuards checks every ScaleGuard: its status keeps up with its generation, Ready is True,
// and no pod is left marked by a step that no longer exists.
func (d *doctor) checkGuards(ctx context.Context) error {
	list, err := d.c.dyn.Resource(scaleGuards).Namespace(d.namespace()).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list ScaleGuards: %w", err)
	}
	guards := map[string]*v1alpha1.ScaleGuard{}
	for i := range list.Items {
		var g v1alpha1.ScaleGuard
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, &g); err != nil {
			return fmt.Errorf("decode ScaleGuard %s: %w", list.Items[i].GetName(), err)
		}
		guards[g.Namespace+"/"+g.Name] = &g
		obj := fmt.Sprintf("ScaleGuard %s/%s", g.Namespace, g.Name)
		ready := meta.FindStatusCondition(g.Status.Conditions, v1alpha1.ConditionReady)
		switch {
		case g.Status.ObservedGeneration < g.Generation:
			d.add(Check{Area: "guard", Object: obj, Status: Fail,
				Evidence: fmt.Sprintf("status.observedGeneration %d < generation %d: no controller is acting on it, and a guard that does not run holds every scale-down", g.Status.ObservedGeneration, g.Generation),
				Fix:      d.guardControllerFix()})
		case ready == nil || ready.Status != metav1.ConditionTrue:
			why := "no Ready condition"
			if ready != nil {
				why = fmt.Sprintf("Ready=%s %s: %s", ready.Status, ready.Reason, ready.Message)
			}
			d.add(Check{Area: "guard", Object: obj, Status: Fail, Evidence: why, Fix: fmt.Sprintf("the condition says why; its Events: kubectl -n %s describe scaleguard %s", g.Namespace, g.Name)})
		default:
			d.add(Check{Area: "guard", Object: obj, Status: Pass, Evidence: fmt.Sprintf("Ready, observedGeneration %d, state %s", g.Status.ObservedGeneration, g.Status.State)})
		}
	}
	// Pods marked by a guard's step that no longer holds them.
	pods, err := d.c.kube.CoreV1().Pods(d.namespace()).List(ctx, metav1.ListOptions{LabelSelector: v1alpha1.DrainLabel + "=" + v1alpha1.DrainLabelValue})
	if err != nil {
		return fmt.Errorf("list draining pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		by := markedBy(p)
		g := guards[p.Namespace+"/"+by]
		held := false
		if g != nil && g.Status.Step != nil {
			for _, v := range g.Status.Step.Victims {
				held = held || v.UID == p.UID
			}
		}
		if held {
			continue
		}
		label := fmt.Sprintf("kubectl -n %s label pod %s %s-", p.Namespace, p.Name, v1alpha1.DrainLabel)
		// The whole mark, as the controller removes it: a deletion cost left at the lowest
		// makes the ReplicaSet remove this pod first, whatever its connections.
		unmark := fmt.Sprintf("%s && kubectl -n %s annotate pod %s %s- %s-", label, p.Namespace, p.Name, v1alpha1.GuardAnnotation, v1alpha1.DeletionCostAnnotation)
		var why, fix string
		switch {
		case by == "":
			why = "no ScaleGuard's step holds it"
			fix = label + " (no ScaleGuard marked it: it was labelled by hand or by another tool)"
		case g == nil:
			why = fmt.Sprintf("it names ScaleGuard %s, which no longer exists", by)
			fix = unmark + " (the adapter's ScaleGuard controller un-marks the pods of deleted ScaleGuards when it starts leading)"
		default:
			why = fmt.Sprintf("it names ScaleGuard %s, whose status has no step with it", by)
			fix = unmark + fmt.Sprintf(" (ScaleGuard %s un-marks its own strays while its controller runs)", by)
		}
		d.add(Check{Area: "guard", Object: fmt.Sprintf("pod %s/%s", p.Namespace, p.Name), Status: Fail,
			Evidence: fmt.Sprintf("carries %s=%s but %s: it refuses new clients for nothing", v1alpha1.DrainLabel, v1alpha1.DrainLabelValue, why),
			Fix:      fix})
	}
	return nil
}

// guardControllerFix says where the ScaleGuard controller should run: in the pods of the adapter
// the custom metrics APIService points at, named as they are installed.
func (d *doctor) guardControllerFix() string {
	const runs = "it runs with --scale-guard, the default, and needs the guard's ClusterRole"
	a := d.adapter
	switch {
	case a == nil || a.selector == "":
		return "check the adapter's ScaleGuard controller: kubectl -n wsscale-system logs deploy/wsscale (" + runs + ")"
	case a.running == 0:
		return fmt.Sprintf("the adapter runs the ScaleGuard controller, and Service %s/%s selects no running pod: bring the adapter back (kubectl -n %s get deploy,pods -l %s)", a.namespace, a.name, a.namespace, a.selector)
	default:
		return fmt.Sprintf("check the ScaleGuard controller in the adapter's pods: kubectl -n %s logs -l %s (%s)", a.namespace, a.selector, runs)
	}
}
