// Package provider serves the custom metrics API (custom.metrics.k8s.io)
// from the connection counts of pods: which pods to track (a stripped pod
// informer and a Selection), their latest values (a Store fed by the scraper,
// or the Prometheus source), freshness, and the answers to the HPA.
//
// Missing or stale data is never reported as 0: a pod without a fresh value
// is left out of the answer, so that the HPA treats it as missing (it then
// assumes the target value on scale-down and 0 on scale-up, which holds the
// replica count instead of cutting pods on no data).
package provider

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/klog/v2"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/utils/clock"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// The resources metrics are served for.
var (
	podsResource        = schema.GroupResource{Resource: "pods"}
	deploymentsResource = schema.GroupResource{Group: "apps", Resource: "deployments"}
)

// RequestObserver is told about every API request, for the adapter's own
// metrics.
type RequestObserver interface {
	// ObserveRequest records one request: method is "by_name" or
	// "by_selector", code the HTTP status of the answer.
	ObserveRequest(method, resource string, code int, duration time.Duration)
}

// Config configures a Provider.
type Config struct {
	// Metrics are the served metrics; Source indexes into them.
	Metrics []Metric
	// Pods lists the pods in the informer cache.
	Pods corelisters.PodLister
	// ReplicaSets lists the ReplicaSets, to find a pod's Deployment.
	ReplicaSets appslisters.ReplicaSetLister
	// Selection says which pods are tracked.
	Selection *Selection
	// Source gives the values.
	Source Source
	// Observer, if not nil, records every request.
	Observer RequestObserver
	// Clock times the requests; nil means the real clock.
	Clock clock.PassiveClock
}

// Provider implements the custom metrics API for pods and Deployments.
type Provider struct {
	metrics     []Metric
	byName      map[string]int
	pods        corelisters.PodLister
	replicaSets appslisters.ReplicaSetLister
	selection   *Selection
	source      Source
	observer    RequestObserver
	clock       clock.PassiveClock
}

var _ cmprovider.CustomMetricsProvider = (*Provider)(nil)

// New returns a Provider.
func New(cfg Config) (*Provider, error) {
	if errs := ValidateMetrics(cfg.Metrics); len(errs) > 0 {
		return nil, fmt.Errorf("invalid metrics: %w", errors.Join(errs...))
	}
	if cfg.Pods == nil || cfg.ReplicaSets == nil || cfg.Selection == nil || cfg.Source == nil {
		return nil, errors.New("provider needs pods, replica sets, a selection and a source")
	}
	p := &Provider{
		metrics:     append([]Metric(nil), cfg.Metrics...),
		byName:      map[string]int{},
		pods:        cfg.Pods,
		replicaSets: cfg.ReplicaSets,
		selection:   cfg.Selection,
		source:      cfg.Source,
		observer:    cfg.Observer,
		clock:       cfg.Clock,
	}
	if p.clock == nil {
		p.clock = clock.RealClock{}
	}
	for i, m := range p.metrics {
		p.byName[m.Name] = i
	}
	return p, nil
}

// ListAllMetrics implements CustomMetricsProvider: every metric for pods and
// for Deployments, both namespaced.
func (p *Provider) ListAllMetrics() []cmprovider.CustomMetricInfo {
	infos := make([]cmprovider.CustomMetricInfo, 0, 2*len(p.metrics))
	for _, m := range p.metrics {
		infos = append(infos,
			cmprovider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: m.Name},
			cmprovider.CustomMetricInfo{GroupResource: deploymentsResource, Namespaced: true, Metric: m.Name},
		)
	}
	return infos
}

// GetMetricByName implements CustomMetricsProvider: the value of one pod, or
// the aggregate over the pods of one Deployment.
func (p *Provider) GetMetricByName(ctx context.Context, name types.NamespacedName, info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (v *custom_metrics.MetricValue, err error) {
	defer p.observe("by_name", info.GroupResource, p.clock.Now(), &err)
	m, err := p.metric(info, metricSelector)
	if err != nil {
		return nil, err
	}
	switch info.GroupResource {
	case podsResource:
		return p.podValue(ctx, m, name, metricSelector)
	default: // deploymentsResource
		return p.deploymentValue(ctx, m, name, metricSelector)
	}
}

// GetMetricBySelector implements CustomMetricsProvider: the values of the
// selected pods that have a fresh one (the others are left out), or the
// aggregates of every Deployment in the namespace that has tracked pods.
func (p *Provider) GetMetricBySelector(ctx context.Context, namespace string, selector labels.Selector, info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (list *custom_metrics.MetricValueList, err error) {
	defer p.observe("by_selector", info.GroupResource, p.clock.Now(), &err)
	m, err := p.metric(info, metricSelector)
	if err != nil {
		return nil, err
	}
	if info.GroupResource == deploymentsResource {
		return p.deploymentValues(ctx, m, namespace, selector, metricSelector)
	}
	pods, err := p.pods.Pods(namespace).List(selector)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("list pods in %q: %w", namespace, err))
	}
	names := make([]string, 0, len(pods))
	for _, pod := range pods {
		if p.selection.Selected(pod) {
			names = append(names, pod.Name)
		}
	}
	points, err := p.lookup(ctx, m, namespace, names)
	if err != nil {
		return nil, err
	}
	ident := p.identifier(m, metricSelector)
	list = &custom_metrics.MetricValueList{Items: make([]custom_metrics.MetricValue, 0, len(names))}
	for i, pt := range points {
		if pt.OK {
			list.Items = append(list.Items, metricValue(podRef(namespace, names[i]), ident, pt))
		}
	}
	return list, nil
}

// metric resolves the metric of a request, or returns the API's NotFound.
func (p *Provider) metric(info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (int, error) {
	m, ok := p.byName[info.Metric]
	if !ok || !info.Namespaced || (info.GroupResource != podsResource && info.GroupResource != deploymentsResource) {
		return 0, cmprovider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	// A metric's labels are those its series must carry; a metric selector
	// that they do not satisfy selects nothing.
	if metricSelector != nil && !metricSelector.Empty() {
		set := labels.Set{}
		for _, l := range p.metrics[m].Series.Labels {
			set[l.Name] = l.Value
		}
		if !metricSelector.Matches(set) {
			return 0, cmprovider.NewMetricNotFoundForSelectorError(info.GroupResource, info.Metric, "*", metricSelector)
		}
	}
	return m, nil
}

// identifier returns the MetricIdentifier shared by every value of an answer.
func (p *Provider) identifier(m int, metricSelector labels.Selector) custom_metrics.MetricIdentifier {
	ident := custom_metrics.MetricIdentifier{Name: p.metrics[m].Name}
	if metricSelector != nil && !metricSelector.Empty() {
		if sel, err := metav1.ParseToLabelSelector(metricSelector.String()); err == nil {
			ident.Selector = sel
		}
	}
	return ident
}

func (p *Provider) lookup(ctx context.Context, m int, namespace string, pods []string) ([]Point, error) {
	points, err := p.source.Lookup(ctx, m, namespace, pods)
	if err != nil {
		var status apierrors.APIStatus
		if errors.As(err, &status) {
			return nil, err
		}
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("metric %s in namespace %s: %v", p.metrics[m].Name, namespace, err))
	}
	return points, nil
}

func (p *Provider) podValue(ctx context.Context, m int, name types.NamespacedName, metricSelector labels.Selector) (*custom_metrics.MetricValue, error) {
	metricName := p.metrics[m].Name
	pod, err := p.pods.Pods(name.Namespace).Get(name.Name)
	if apierrors.IsNotFound(err) {
		return nil, apierrors.NewNotFound(podsResource, name.Name)
	}
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("get pod %s: %w", name, err))
	}
	if !p.selection.Selected(pod) {
		return nil, cmprovider.NewMetricNotFoundForError(podsResource, metricName, name.Name)
	}
	points, err := p.lookup(ctx, m, name.Namespace, []string{name.Name})
	if err != nil {
		return nil, err
	}
	if !points[0].OK {
		return nil, cmprovider.NewMetricNotFoundForError(podsResource, metricName, name.Name)
	}
	v := metricValue(podRef(name.Namespace, name.Name), p.identifier(m, metricSelector), points[0])
	return &v, nil
}

// DeploymentOf returns the name of the Deployment that controls a pod
// through its ReplicaSet, or "" when there is none.
func (p *Provider) DeploymentOf(pod *corev1.Pod) string {
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil || ref.Kind != "ReplicaSet" {
		return ""
	}
	rs, err := p.replicaSets.ReplicaSets(pod.Namespace).Get(ref.Name)
	if err != nil || (ref.UID != "" && rs.UID != "" && rs.UID != ref.UID) {
		return ""
	}
	owner := metav1.GetControllerOfNoCopy(rs)
	if owner == nil || owner.Kind != "Deployment" {
		return ""
	}
	return owner.Name
}

// deploymentPods groups the tracked pods of a namespace by Deployment;
// only returns the group of deployment when it is not "".
func (p *Provider) deploymentPods(namespace, deployment string) (map[string][]string, error) {
	pods, err := p.pods.Pods(namespace).List(labels.Everything())
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("list pods in %q: %w", namespace, err))
	}
	groups := map[string][]string{}
	for _, pod := range pods {
		if !p.selection.Selected(pod) {
			continue
		}
		d := p.DeploymentOf(pod)
		if d == "" || (deployment != "" && d != deployment) {
			continue
		}
		groups[d] = append(groups[d], pod.Name)
	}
	return groups, nil
}

// deploymentValue aggregates the values of a Deployment's tracked pods. A
// partial aggregate is not served: if any tracked pod of the Deployment has
// no fresh value, there is no value (NotFound) and the HPA holds, because a
// sum over some pods would look like a drop in load.
func (p *Provider) deploymentValue(ctx context.Context, m int, name types.NamespacedName, metricSelector labels.Selector) (*custom_metrics.MetricValue, error) {
	groups, err := p.deploymentPods(name.Namespace, name.Name)
	if err != nil {
		return nil, err
	}
	pods := groups[name.Name]
	if len(pods) == 0 {
		return nil, cmprovider.NewMetricNotFoundForError(deploymentsResource, p.metrics[m].Name, name.Name)
	}
	v, err := p.aggregate(ctx, m, name, pods, metricSelector)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

func (p *Provider) deploymentValues(ctx context.Context, m int, namespace string, selector labels.Selector, metricSelector labels.Selector) (*custom_metrics.MetricValueList, error) {
	if selector != nil && !selector.Empty() {
		return nil, apierrors.NewBadRequest("label selectors on deployments are not supported; ask for a Deployment by name")
	}
	groups, err := p.deploymentPods(namespace, "")
	if err != nil {
		return nil, err
	}
	list := &custom_metrics.MetricValueList{}
	for d, pods := range groups {
		v, err := p.aggregate(ctx, m, types.NamespacedName{Namespace: namespace, Name: d}, pods, metricSelector)
		if apierrors.IsNotFound(err) {
			continue // incomplete: left out, like a pod without a value
		}
		if err != nil {
			return nil, err
		}
		list.Items = append(list.Items, v)
	}
	return list, nil
}

func (p *Provider) aggregate(ctx context.Context, m int, name types.NamespacedName, pods []string, metricSelector labels.Selector) (custom_metrics.MetricValue, error) {
	metric := p.metrics[m]
	points, err := p.lookup(ctx, m, name.Namespace, pods)
	if err != nil {
		return custom_metrics.MetricValue{}, err
	}
	missing := 0
	var agg float64
	var oldest time.Time
	first := true
	for _, pt := range points {
		if !pt.OK {
			missing++
			continue
		}
		switch {
		case first:
			agg, first = pt.Value, false
		case metric.Aggregation == AggregateMax:
			agg = math.Max(agg, pt.Value)
		default:
			agg += pt.Value
		}
		if oldest.IsZero() || pt.Time.Before(oldest) {
			oldest = pt.Time
		}
	}
	if missing > 0 {
		return custom_metrics.MetricValue{}, &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
			Message: fmt.Sprintf("the server could not find the metric %s for %s %s: %d of %d pods have no fresh value",
				metric.Name, deploymentsResource, name.Name, missing, len(points)),
		}}
	}
	if metric.Aggregation == AggregateAvg {
		agg /= float64(len(points))
	}
	ref := custom_metrics.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: name.Namespace, Name: name.Name}
	return metricValue(ref, p.identifier(m, metricSelector), Point{Value: agg, Time: oldest, OK: true}), nil
}

func (p *Provider) observe(method string, gr schema.GroupResource, start time.Time, err *error) {
	if p.observer == nil {
		return
	}
	code := http.StatusOK
	if *err != nil {
		code = http.StatusInternalServerError
		var status apierrors.APIStatus
		if errors.As(*err, &status) {
			code = int(status.Status().Code)
		}
	}
	p.observer.ObserveRequest(method, gr.String(), code, p.clock.Since(start))
	if code >= http.StatusInternalServerError {
		klog.ErrorS(*err, "Custom metrics request failed", "method", method, "resource", gr.String())
	}
}

func podRef(namespace, name string) custom_metrics.ObjectReference {
	return custom_metrics.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: namespace, Name: name}
}

func metricValue(ref custom_metrics.ObjectReference, ident custom_metrics.MetricIdentifier, pt Point) custom_metrics.MetricValue {
	return custom_metrics.MetricValue{
		DescribedObject: ref,
		Metric:          ident,
		Timestamp:       metav1.NewTime(pt.Time),
		Value:           quantity(pt.Value),
	}
}

// quantity renders a value exactly when it is an integer, else in
// thousandths (the HPA compares in milli-units).
func quantity(v float64) resource.Quantity {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return *resource.NewQuantity(int64(v), resource.DecimalSI)
	}
	return *resource.NewMilliQuantity(int64(math.Round(v*1000)), resource.DecimalSI)
}
