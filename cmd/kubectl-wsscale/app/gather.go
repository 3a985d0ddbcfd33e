package app

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	"k8s.io/utils/ptr"

	"github.com/wsscale/wsscale/pkg/apis/autoscaling/v1alpha1"
	"github.com/wsscale/wsscale/pkg/policy"
	podutil "github.com/wsscale/wsscale/pkg/provider/pods"
)

// scaleGuards is the ScaleGuard resource.
var scaleGuards = schema.GroupVersionResource{Group: v1alpha1.SchemeGroupVersion.Group, Version: v1alpha1.SchemeGroupVersion.Version, Resource: "scaleguards"}

// revisionAnnotation is the Deployment controller's revision; the current ReplicaSet carries the
// Deployment's.
const revisionAnnotation = "deployment.kubernetes.io/revision"

// Workload is one WebSocket workload as the autoscaler sees it: an HPA on the connections metric,
// the ScaleGuard between it and the Deployment if there is one, and the Deployment's pods.
type Workload struct {
	Namespace  string `json:"namespace"`
	HPA        string `json:"hpa,omitempty"`
	ScaleGuard string `json:"scaleGuard,omitempty"`
	Deployment string `json:"deployment,omitempty"`
	// Metric is the HPA's metric and target, e.g. "websocket_connections average 10 per pod".
	Metric string `json:"metric,omitempty"`
	// HPADesired is the HPA's status.desiredReplicas.
	HPADesired *int32 `json:"hpaDesiredReplicas,omitempty"`
	// GuardDesired is the ScaleGuard's spec.replicas (what the HPA wrote through /scale).
	GuardDesired *int32 `json:"guardDesiredReplicas,omitempty"`
	// Applied is the Deployment's spec.replicas.
	Applied *int32 `json:"appliedReplicas,omitempty"`
	// Ready is the Deployment's ready pods.
	Ready int32 `json:"readyReplicas"`
	// State is the ScaleGuard's state.
	State string `json:"state,omitempty"`
	// Pods are the Deployment's pods with their connections as the HPA reads them.
	Pods []PodState `json:"pods"`
	// Next is the next scale-down, if one came now.
	Next *NextScaleDown `json:"nextScaleDown,omitempty"`
	// Budget is the ScaleGuard's disconnect budget, if it has one.
	Budget *Budget `json:"budget,omitempty"`
	// Events are the last decisions (Events of the HPA and the ScaleGuard), oldest first.
	Events []EventLine `json:"events,omitempty"`
	// Problems are what could not be read.
	Problems []string `json:"problems,omitempty"`

	// The objects, for the doctor and the recorder.
	hpa    *autoscalingv2.HorizontalPodAutoscaler
	guard  *v1alpha1.ScaleGuard
	deploy *appsv1.Deployment
	pods   []corev1.Pod
}

// PodState is one pod of a workload.
type PodState struct {
	Name  string `json:"name"`
	Phase string `json:"phase"`
	Ready bool   `json:"ready"`
	// Draining: the pod carries the drain label.
	Draining    bool `json:"draining"`
	Terminating bool `json:"terminating,omitempty"`
	// Connections is the pod's value in the custom metrics API; absent when it has none.
	Connections *int64 `json:"connections,omitempty"`
	// ValueAge is how old the value is (now minus its timestamp).
	ValueAge *metav1.Duration `json:"valueAge,omitempty"`
	// Note says why a pod has no value, or that it is a victim.
	Note string `json:"note,omitempty"`
}

// NextScaleDown is what a scale-down by one step would do now, by the ScaleGuard's own policy.
type NextScaleDown struct {
	// Victims are the pods that would go (or are going, when a step is in progress).
	Victims []string `json:"victims,omitempty"`
	// Why explains the choice.
	Why string `json:"why"`
	// Blocked is the reason no pod would go, when one would not.
	Blocked string `json:"blocked,omitempty"`
}

// Budget is a ScaleGuard's disconnect budget now.
type Budget struct {
	Max    int64           `json:"maxDisconnects"`
	Used   int64           `json:"used"`
	Left   int64           `json:"left"`
	Window metav1.Duration `json:"window"`
}

// EventLine is one Event of a workload's objects.
type EventLine struct {
	Time    metav1.Time `json:"time"`
	Type    string      `json:"type"`
	Reason  string      `json:"reason"`
	Object  string      `json:"object"`
	Message string      `json:"message"`
	Count   int32       `json:"count,omitempty"`
}

// gatherOptions tune what gather reads.
type gatherOptions struct {
	metric        string
	scrapeLabel   string // the adapter's scrape selection, KEY=VALUE
	events        int
	target        string
	now           func() time.Time
	allNamespaces bool
}

// gather reads every WebSocket workload of the namespace: HPAs on the metric, ScaleGuards, their
// Deployments and pods, the pods' values from the custom metrics API.
func gather(ctx context.Context, c *clients, o gatherOptions) ([]*Workload, error) {
	ns := c.namespace
	if o.allNamespaces {
		ns = metav1.NamespaceAll
	}
	hpas, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list HPAs: %w", err)
	}
	guards := map[string]*v1alpha1.ScaleGuard{} // namespace/name
	list, err := c.dyn.Resource(scaleGuards).Namespace(ns).List(ctx, metav1.ListOptions{})
	switch {
	case err == nil:
		for i := range list.Items {
			var g v1alpha1.ScaleGuard
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, &g); err != nil {
				return nil, fmt.Errorf("decode ScaleGuard %s: %w", list.Items[i].GetName(), err)
			}
			guards[g.Namespace+"/"+g.Name] = &g
		}
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		// No ScaleGuard CRD: HPAs only.
	default:
		return nil, fmt.Errorf("list ScaleGuards: %w", err)
	}

	var out []*Workload
	used := map[string]bool{}
	for i := range hpas.Items {
		h := &hpas.Items[i]
		metric := hpaMetric(h, o.metric)
		if metric == "" {
			continue
		}
		w := &Workload{Namespace: h.Namespace, HPA: h.Name, Metric: metric, hpa: h}
		if h.Status.DesiredReplicas > 0 || h.Status.LastScaleTime != nil {
			w.HPADesired = &h.Status.DesiredReplicas
		}
		ref := h.Spec.ScaleTargetRef
		switch {
		case ref.Kind == "ScaleGuard":
			key := h.Namespace + "/" + ref.Name
			if g := guards[key]; g != nil {
				w.guard = g
				used[key] = true
			} else {
				w.Problems = append(w.Problems, fmt.Sprintf("the HPA targets ScaleGuard %s, which does not exist", ref.Name))
			}
		case ref.Kind == "Deployment":
			w.Deployment = ref.Name
		default:
			w.Problems = append(w.Problems, fmt.Sprintf("the HPA targets %s %s: status shows Deployments and ScaleGuards", ref.Kind, ref.Name))
		}
		out = append(out, w)
	}
	for key, g := range guards {
		if !used[key] {
			out = append(out, &Workload{Namespace: g.Namespace, guard: g})
		}
	}
	var kept []*Workload
	for _, w := range out {
		if w.guard != nil {
			w.ScaleGuard = w.guard.Name
			w.Deployment = w.guard.Spec.TargetRef.Name
			w.GuardDesired = w.guard.Spec.Replicas
			w.State = string(w.guard.Status.State)
		}
		if o.target != "" && o.target != w.HPA && o.target != w.ScaleGuard && o.target != w.Deployment {
			continue
		}
		kept = append(kept, w)
	}
	sort.Slice(kept, func(i, j int) bool {
		a, b := kept[i], kept[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Deployment+a.HPA+a.ScaleGuard < b.Deployment+b.HPA+b.ScaleGuard
	})
	for _, w := range kept {
		if err := fill(ctx, c, o, w); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

// hpaMetric describes the HPA's Pods or Object metric of that name, or returns "".
func hpaMetric(h *autoscalingv2.HorizontalPodAutoscaler, name string) string {
	for _, m := range h.Spec.Metrics {
		switch {
		case m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && m.Pods.Metric.Name == name:
			return name + " " + targetText(m.Pods.Target, "per pod")
		case m.Type == autoscalingv2.ObjectMetricSourceType && m.Object != nil && m.Object.Metric.Name == name:
			return fmt.Sprintf("%s of %s %s %s", name, m.Object.DescribedObject.Kind, m.Object.DescribedObject.Name, targetText(m.Object.Target, ""))
		}
	}
	return ""
}

func targetText(t autoscalingv2.MetricTarget, per string) string {
	switch {
	case t.AverageValue != nil:
		return strings.TrimSpace("average " + t.AverageValue.String() + " " + per)
	case t.Value != nil:
		return "value " + t.Value.String()
	}
	return string(t.Type)
}

// fill reads a workload's Deployment, pods, values, next victim, budget and Events.
func fill(ctx context.Context, c *clients, o gatherOptions, w *Workload) error {
	now := o.now()
	if w.Deployment == "" {
		return nil
	}
	d, err := c.kube.AppsV1().Deployments(w.Namespace).Get(ctx, w.Deployment, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		w.Problems = append(w.Problems, fmt.Sprintf("Deployment %s not found", w.Deployment))
		w.Events = events(ctx, c, w, o.events)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get Deployment %s/%s: %w", w.Namespace, w.Deployment, err)
	}
	w.deploy = d
	w.Applied = d.Spec.Replicas
	w.Ready = d.Status.ReadyReplicas
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return fmt.Errorf("selector of Deployment %s/%s: %w", w.Namespace, w.Deployment, err)
	}
	pods, err := c.kube.CoreV1().Pods(w.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return fmt.Errorf("list pods of %s/%s: %w", w.Namespace, w.Deployment, err)
	}
	sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
	w.pods = pods.Items

	values, err := podValues(ctx, c, w.Namespace, o.metric, sel.String())
	if err != nil {
		w.Problems = append(w.Problems, err.Error())
	}
	scrape, err := labels.Parse(o.scrapeLabel)
	if err != nil {
		return fmt.Errorf("--scrape-selector: %w", err)
	}
	victims := map[string]bool{}
	if w.guard != nil && w.guard.Status.Step != nil {
		for _, v := range w.guard.Status.Step.Victims {
			victims[v.Name] = true
		}
	}
	var facts []policy.Pod
	for i := range w.pods {
		p := &w.pods[i]
		ps := PodState{
			Name: p.Name, Phase: string(p.Status.Phase), Ready: podutil.Ready(p),
			Draining:    p.Labels[v1alpha1.DrainLabel] == v1alpha1.DrainLabelValue,
			Terminating: p.DeletionTimestamp != nil,
		}
		scraped := scrape.Matches(labels.Set(p.Labels)) || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil
		var m *policy.Metrics
		if v, ok := values[p.Name]; ok {
			n := v.Value.Value()
			age := metav1.Duration{Duration: now.Sub(v.Timestamp.Time).Round(100 * time.Millisecond)}
			ps.Connections, ps.ValueAge = &n, &age
			m = &policy.Metrics{Connections: n, Draining: ps.Draining, ScrapeStart: v.Timestamp.Time}
		} else {
			switch {
			case !scrape.Matches(labels.Set(p.Labels)):
				ps.Note = "not scraped: no " + o.scrapeLabel + " label"
			case p.Status.Phase != corev1.PodRunning:
				ps.Note = "no value: " + string(p.Status.Phase)
			default:
				ps.Note = "no fresh value (run kubectl wsscale doctor)"
			}
		}
		if victims[p.Name] {
			ps.Note = strings.TrimPrefix(ps.Note+"; victim of the step in progress", "; ")
		}
		w.Pods = append(w.Pods, ps)
		facts = append(facts, policy.Pod{
			Name: p.Name, UID: p.UID, Created: p.CreationTimestamp.Time, Phase: p.Status.Phase,
			Ready: ps.Ready, Terminating: ps.Terminating,
			TemplateHash: p.Labels[appsv1.DefaultDeploymentUniqueLabelKey],
			Marked:       ps.Draining,
			MarkedBy:     markedBy(p),
			Scraped:      scraped,
			Metrics:      m,
		})
	}
	target, err := targetFacts(ctx, c, d)
	if err != nil {
		return err
	}
	w.Next = nextScaleDown(w, target, facts, now)
	if w.guard != nil {
		if b := w.guard.Spec.ScaleDown.DisconnectBudget; b != nil {
			win := policy.Window(b)
			used, _ := policy.Used(w.guard.Status.Ledger, now, win)
			w.Budget = &Budget{Max: b.MaxDisconnects, Used: used, Left: max(b.MaxDisconnects-used, 0), Window: metav1.Duration{Duration: win}}
		}
	}
	w.Events = events(ctx, c, w, o.events)
	return nil
}

// podValues reads the metric of the pods matching selector from the custom metrics API, as the
// HPA does.
func podValues(ctx context.Context, c *clients, ns, metric, selector string) (map[string]cmv1beta2.MetricValue, error) {
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s", ns, metric)
	body, err := c.kube.CoreV1().RESTClient().Get().AbsPath(path).Param("labelSelector", selector).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("custom metrics API: GET %s?labelSelector=%s: %v", path, selector, err)
	}
	var list cmv1beta2.MetricValueList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("custom metrics API: decode %s: %w", path, err)
	}
	out := map[string]cmv1beta2.MetricValue{}
	for _, it := range list.Items {
		out[it.DescribedObject.Name] = it
	}
	return out, nil
}

// targetFacts are the Deployment's facts for the policy, as the ScaleGuard controller reads them.
func targetFacts(ctx context.Context, c *clients, d *appsv1.Deployment) (policy.Target, error) {
	t := policy.Target{
		Found: true, Supported: true,
		Replicas:           ptr.Deref(d.Spec.Replicas, 1),
		Generation:         d.Generation,
		ObservedGeneration: d.Status.ObservedGeneration,
		StatusReplicas:     d.Status.Replicas,
		UpdatedReplicas:    d.Status.UpdatedReplicas,
	}
	if d.Spec.Selector != nil {
		t.Selector = metav1.FormatLabelSelector(d.Spec.Selector)
	}
	sets, err := c.kube.AppsV1().ReplicaSets(d.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return t, fmt.Errorf("list ReplicaSets of %s/%s: %w", d.Namespace, d.Name, err)
	}
	for i := range sets.Items {
		rs := &sets.Items[i]
		if metav1.IsControlledBy(rs, d) && rs.Annotations[revisionAnnotation] == d.Annotations[revisionAnnotation] {
			t.TemplateHash = rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
		}
	}
	return t, nil
}

// nextScaleDown asks the ScaleGuard's policy what a scale-down by one pod would do now: the same
// decision function the controller runs, on the same facts, with spec.replicas one below the
// live replicas. Without a ScaleGuard it is the default guard's choice, and the HPA's real
// choice is the ReplicaSet's.
func nextScaleDown(w *Workload, target policy.Target, pods []policy.Pod, now time.Time) *NextScaleDown {
	in := policy.Input{Now: now, Name: "(what-if)", Target: target, Pods: pods}
	if w.guard != nil {
		in.Name, in.Generation = w.guard.Name, w.guard.Generation
		in.Spec = *w.guard.Spec.DeepCopy()
		in.Status = *w.guard.Status.DeepCopy()
		if st := in.Status.Step; st != nil {
			names := make([]string, 0, len(st.Victims))
			for _, v := range st.Victims {
				names = append(names, fmt.Sprintf("%s (%d connections at mark)", v.Name, v.ConnectionsAtMark))
			}
			why := fmt.Sprintf("step %d→%d in progress, draining until %s", st.From, st.To, st.Deadline.UTC().Format(time.RFC3339))
			if st.CommitTime != nil {
				why = fmt.Sprintf("step %d→%d committed, waiting for the victims to go", st.From, st.To)
			}
			return &NextScaleDown{Victims: names, Why: why}
		}
	} else {
		in.Spec.TargetRef = v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: w.Deployment}
	}
	if target.Replicas <= 1 {
		return &NextScaleDown{Why: "at one replica: no scale-down possible", Blocked: "MinimumReached"}
	}
	desired := target.Replicas - 1
	in.Spec.Replicas = &desired
	if in.Status.AppliedReplicas == nil {
		in.Status.AppliedReplicas = &target.Replicas
	}
	d := policy.Decide(in)
	atMin := ""
	if w.hpa != nil && w.hpa.Spec.MinReplicas != nil && *w.hpa.Spec.MinReplicas >= target.Replicas {
		atMin = fmt.Sprintf("; the HPA's minReplicas %d allows none now", *w.hpa.Spec.MinReplicas)
	}
	if len(d.Mark) > 0 {
		var names []string
		byName := map[string]int64{}
		for _, p := range pods {
			if p.Metrics != nil {
				byName[p.Name] = p.Metrics.Connections
			}
		}
		for _, m := range d.Mark {
			names = append(names, fmt.Sprintf("%s (%d connections)", m.Name, byName[m.Name]))
		}
		why := "least connected Ready pod of the current ReplicaSet (ties: the youngest)"
		if w.guard == nil {
			why = "no ScaleGuard: the ReplicaSet picks by its own ranking, whatever the connections; a ScaleGuard would drain this one first"
		}
		return &NextScaleDown{Victims: names, Why: why + atMin}
	}
	if c := meta.FindStatusCondition(d.Status.Conditions, v1alpha1.ConditionScaleDownBlocked); c != nil && c.Status == metav1.ConditionTrue {
		return &NextScaleDown{Why: c.Message, Blocked: c.Reason}
	}
	return &NextScaleDown{Why: "no pod would go now"}
}

// events returns the last n Events of the workload's HPA and ScaleGuard, oldest first.
func events(ctx context.Context, c *clients, w *Workload, n int) []EventLine {
	if n <= 0 {
		return nil
	}
	var out []EventLine
	for _, obj := range []struct{ kind, name string }{{"HorizontalPodAutoscaler", w.HPA}, {"ScaleGuard", w.ScaleGuard}} {
		if obj.name == "" {
			continue
		}
		list, err := c.kube.CoreV1().Events(w.Namespace).List(ctx, metav1.ListOptions{
			FieldSelector: fmt.Sprintf("involvedObject.kind=%s,involvedObject.name=%s", obj.kind, obj.name),
		})
		if err != nil {
			w.Problems = append(w.Problems, fmt.Sprintf("list Events of %s %s: %v", obj.kind, obj.name, err))
			continue
		}
		for _, e := range list.Items {
			out = append(out, EventLine{Time: eventTime(&e), Type: e.Type, Reason: e.Reason, Object: obj.kind + "/" + obj.name, Message: e.Message, Count: e.Count})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(&out[j].Time) })
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// eventTime is when an Event last happened, whichever API wrote it.
func eventTime(e *corev1.Event) metav1.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return metav1.NewTime(e.Series.LastObservedTime.Time)
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp
	case !e.EventTime.IsZero():
		return metav1.NewTime(e.EventTime.Time)
	}
	return e.CreationTimestamp
}

// markedBy returns the guard named by a pod's guard annotation ("NAME DEADLINE").
func markedBy(p *corev1.Pod) string {
	name, _, _ := strings.Cut(p.Annotations[v1alpha1.GuardAnnotation], " ")
	return name
}
