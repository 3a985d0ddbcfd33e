// Package provider serves the custom metrics API (custom.metrics.k8s.io)
// from the connection counts of pods, and holds the adapter's own metrics
// and readiness checks. Its parts are one noun per package:
//
//   - metricsconfig: the served metrics, their series and value rules, and
//     the metrics configuration file;
//   - pods: which pods are tracked (Selection), the pod and ReplicaSet
//     informers, and the PodTracker that turns pod events into targets;
//   - scrape and exposition: reading the pods' /metrics;
//   - store: the latest values and their freshness (the scraper's sink);
//   - promsource: values from an existing Prometheus instead.
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
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/utils/clock"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	podsel "github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/pkg/provider/store"
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

// Source gives the latest fresh values of a served metric. The value store
// (pkg/provider/store) and the Prometheus source (pkg/provider/promsource)
// implement it.
type Source interface {
	// Lookup returns the value of metric (an index into the served metrics)
	// for each named pod of namespace, in the same order. A pod without a
	// fresh value gets a Point with OK false, never a zero value.
	Lookup(ctx context.Context, metric int, namespace string, pods []string) ([]store.Point, error)
}

var (
	_ Source         = (*store.Store)(nil)
	_ podsel.Tracker = (*store.Store)(nil)
)

// Config configures a Provider.
type Config struct {
	// Metrics are the served metrics; Source indexes into them.
	Metrics []metricsconfig.Metric
	// Pods is the pod cache, with the indexes of pods.PodIndexers.
	Pods cache.Indexer
	// ReplicaSets is the ReplicaSet cache, with the indexes of
	// pods.ReplicaSetIndexers, to find a Deployment's pods.
	ReplicaSets cache.Indexer
	// Mapper resolves the resource names of requests, so that deployments,
	// deployment and deployments.apps mean the same; nil means a static
	// mapper of the served resources (ServedResources).
	Mapper meta.RESTMapper
	// Selection says which pods are tracked.
	Selection *podsel.Selection
	// Source gives the values.
	Source Source
	// Observer, if not nil, records every request.
	Observer RequestObserver
	// Clock times the requests; nil means the real clock.
	Clock clock.PassiveClock
}

// Provider implements the custom metrics API for pods and Deployments.
type Provider struct {
	metrics     []metricsconfig.Metric
	byName      map[string]int
	pods        corelisters.PodLister
	podIndex    cache.Indexer
	replicaSets cache.Indexer
	mapper      meta.RESTMapper
	selection   *podsel.Selection
	source      Source
	observer    RequestObserver
	clock       clock.PassiveClock
}

var _ cmprovider.CustomMetricsProvider = (*Provider)(nil)

// New returns a Provider.
func New(cfg Config) (*Provider, error) {
	if errs := metricsconfig.ValidateMetrics(cfg.Metrics); len(errs) > 0 {
		return nil, fmt.Errorf("invalid metrics: %w", errors.Join(errs...))
	}
	if cfg.Pods == nil || cfg.ReplicaSets == nil || cfg.Selection == nil || cfg.Source == nil {
		return nil, errors.New("provider needs pods, replica sets, a selection and a source")
	}
	p := &Provider{
		metrics:     append([]metricsconfig.Metric(nil), cfg.Metrics...),
		byName:      map[string]int{},
		pods:        corelisters.NewPodLister(cfg.Pods),
		podIndex:    cfg.Pods,
		replicaSets: cfg.ReplicaSets,
		mapper:      cfg.Mapper,
		selection:   cfg.Selection,
		source:      cfg.Source,
		observer:    cfg.Observer,
		clock:       cfg.Clock,
	}
	if p.clock == nil {
		p.clock = clock.RealClock{}
	}
	if p.mapper == nil {
		p.mapper = ServedResources()
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
	info = p.normalize(info)
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
	info = p.normalize(info)
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

// ServedResources returns a RESTMapper of the resources metrics are served
// for. It is static: these are built-in kinds, and asking the cluster's
// discovery would include custom.metrics.k8s.io, this adapter's own group,
// which is unavailable while the adapter starts.
func ServedResources() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}, {Group: "apps", Version: "v1"}})
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	return m
}

// shortNames are the short names kubectl knows for the served resources.
var shortNames = map[string]string{"po": "pods", "deploy": "deployments"}

// normalize resolves the resource of a request through the RESTMapper, as
// the custom-metrics-apiserver's helpers do: the API server passes the
// resource as the client wrote it (deployments, deployment.apps, deploy).
// A resource the mapper does not know is left as it is, and not found.
func (p *Provider) normalize(info cmprovider.CustomMetricInfo) cmprovider.CustomMetricInfo {
	if info.GroupResource == podsResource || info.GroupResource == deploymentsResource {
		return info
	}
	if long, ok := shortNames[info.GroupResource.Resource]; ok {
		info.GroupResource.Resource = long
	}
	if normalized, _, err := info.Normalized(p.mapper); err == nil {
		return normalized
	}
	return info
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

func (p *Provider) lookup(ctx context.Context, m int, namespace string, pods []string) ([]store.Point, error) {
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

// deploymentPods are the tracked pods of one Deployment, as far as the
// caches know.
type deploymentPods struct {
	// members are the pods of the Deployment's cached ReplicaSets.
	members []*corev1.Pod
	// unknown are pods whose ReplicaSet is not in the cache (or is another
	// one of the same name) and whose name says it may be the Deployment's:
	// the cache missed a new ReplicaSet, so membership cannot be told.
	unknown []unknownPod
}

type unknownPod struct {
	pod        *corev1.Pod
	replicaSet string
}

// podsOf returns the tracked pods of a Deployment from the indexes: its
// ReplicaSets, their pods, and the pods of uncached ReplicaSets named like
// the Deployment's.
func (p *Provider) podsOf(namespace, deployment string) (deploymentPods, error) {
	var out deploymentPods
	sets, err := p.replicaSets.ByIndex(podsel.ReplicaSetsByDeployment, namespace+"/"+deployment)
	if err != nil {
		return out, apierrors.NewInternalError(fmt.Errorf("ReplicaSets of deployment %s/%s: %w", namespace, deployment, err))
	}
	for _, obj := range sets {
		rs, ok := obj.(*appsv1.ReplicaSet)
		if !ok {
			continue
		}
		pods, err := p.podIndex.ByIndex(podsel.PodsByReplicaSet, namespace+"/"+rs.Name)
		if err != nil {
			return out, apierrors.NewInternalError(fmt.Errorf("pods of ReplicaSet %s/%s: %w", namespace, rs.Name, err))
		}
		for _, obj := range pods {
			pod, ok := obj.(*corev1.Pod)
			if !ok || !p.selection.Selected(pod) {
				continue
			}
			if ref := metav1.GetControllerOfNoCopy(pod); ref == nil || (ref.UID != "" && rs.UID != "" && ref.UID != rs.UID) {
				out.unknown = append(out.unknown, unknownPod{pod: pod, replicaSet: rs.Name})
				continue
			}
			out.members = append(out.members, pod)
		}
	}
	// The ReplicaSets that pods name but the cache lacks. A Deployment names
	// its ReplicaSets DEPLOYMENT-HASH, HASH being the pods' pod-template-hash
	// label.
	prefix := namespace + "/" + deployment + "-"
	for _, key := range p.podIndex.ListIndexFuncValues(podsel.PodsByReplicaSet) {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		if _, cached, err := p.replicaSets.GetByKey(key); err != nil || cached {
			continue
		}
		rsName := key[len(namespace)+1:]
		pods, err := p.podIndex.ByIndex(podsel.PodsByReplicaSet, key)
		if err != nil {
			return out, apierrors.NewInternalError(fmt.Errorf("pods of ReplicaSet %s: %w", key, err))
		}
		for _, obj := range pods {
			pod, ok := obj.(*corev1.Pod)
			if !ok || !p.selection.Selected(pod) {
				continue
			}
			if hash := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; hash != "" && rsName != deployment+"-"+hash {
				continue // another Deployment's, e.g. web-canary's for web
			}
			out.unknown = append(out.unknown, unknownPod{pod: pod, replicaSet: rsName})
		}
	}
	return out, nil
}

// deploymentValue aggregates the values of a Deployment's tracked pods by
// the Deployment rule (see aggregate).
func (p *Provider) deploymentValue(ctx context.Context, m int, name types.NamespacedName, metricSelector labels.Selector) (*custom_metrics.MetricValue, error) {
	pods, err := p.podsOf(name.Namespace, name.Name)
	if err != nil {
		return nil, err
	}
	if len(pods.members) == 0 && len(pods.unknown) == 0 {
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
	sets, err := p.replicaSets.ByIndex(cache.NamespaceIndex, namespace)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("list ReplicaSets in %q: %w", namespace, err))
	}
	seen := map[string]bool{}
	list := &custom_metrics.MetricValueList{}
	for _, obj := range sets {
		rs, ok := obj.(*appsv1.ReplicaSet)
		if !ok {
			continue
		}
		owner := metav1.GetControllerOfNoCopy(rs)
		if owner == nil || owner.Kind != "Deployment" || seen[owner.Name] {
			continue
		}
		seen[owner.Name] = true
		v, err := p.deploymentValue(ctx, m, types.NamespacedName{Namespace: namespace, Name: owner.Name}, metricSelector)
		if apierrors.IsNotFound(err) {
			continue // no pods, or incomplete: left out, like a pod without a value
		}
		if err != nil {
			return nil, err
		}
		list.Items = append(list.Items, *v)
	}
	return list, nil
}

// servesClients reports whether a pod without a fresh value may still hold
// connections: it is Ready, or it had a value since its containers last
// started (a draining pod is not Ready but still closing its clients). A
// pod that is neither (starting, crash-looping) serves nobody.
func servesClients(pod *corev1.Pod, pt store.Point) bool {
	return pt.HadValue || podsel.Ready(pod)
}

// aggregate combines a Deployment's values by the Deployment rule. It is
// never a partial sum that misses a pod serving clients: when such a pod
// has no fresh value, or may be the Deployment's but its ReplicaSet is not
// in the cache, there is no value (NotFound) and the HPA holds. A pod that
// serves nobody and has no value is left out, so a rollout's new pods before
// their first scrape and crash-looping pods do not freeze the Deployment.
// With no value at all there is no answer either, never 0.
func (p *Provider) aggregate(ctx context.Context, m int, name types.NamespacedName, pods deploymentPods, metricSelector labels.Selector) (custom_metrics.MetricValue, error) {
	metric := p.metrics[m]
	names := make([]string, 0, len(pods.members)+len(pods.unknown))
	for _, pod := range pods.members {
		names = append(names, pod.Name)
	}
	for _, u := range pods.unknown {
		names = append(names, u.pod.Name)
	}
	points, err := p.lookup(ctx, m, name.Namespace, names)
	if err != nil {
		return custom_metrics.MetricValue{}, err
	}
	notFound := func(format string, args ...any) error {
		return &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
			Message: fmt.Sprintf("the server could not find the metric %s for %s %s: ", metric.Name, deploymentsResource, name.Name) +
				fmt.Sprintf(format, args...),
		}}
	}
	for i, u := range pods.unknown {
		if pt := points[len(pods.members)+i]; pt.OK || servesClients(u.pod, pt) {
			return custom_metrics.MetricValue{}, notFound("ReplicaSet %q of pod %q is not in the cache yet, so whether the pod is the Deployment's is unknown", u.replicaSet, u.pod.Name)
		}
	}
	missing, counted := 0, 0
	var agg float64
	var oldest time.Time
	for i, pt := range points[:len(pods.members)] {
		if !pt.OK {
			if servesClients(pods.members[i], pt) {
				missing++
			}
			continue
		}
		switch {
		case counted == 0:
			agg = pt.Value
		case metric.Aggregation == metricsconfig.AggregateMax:
			agg = math.Max(agg, pt.Value)
		default:
			agg += pt.Value
		}
		counted++
		if oldest.IsZero() || pt.Time.Before(oldest) {
			oldest = pt.Time
		}
	}
	if missing > 0 {
		return custom_metrics.MetricValue{}, notFound("%d of %d pods that serve clients have no fresh value", missing, missing+counted)
	}
	if counted == 0 {
		return custom_metrics.MetricValue{}, notFound("no pod of the Deployment has a value yet")
	}
	if metric.Aggregation == metricsconfig.AggregateAvg {
		agg /= float64(counted)
	}
	ref := custom_metrics.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: name.Namespace, Name: name.Name}
	return metricValue(ref, p.identifier(m, metricSelector), store.Point{Value: agg, Time: oldest, OK: true}), nil
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

func metricValue(ref custom_metrics.ObjectReference, ident custom_metrics.MetricIdentifier, pt store.Point) custom_metrics.MetricValue {
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
