package pods

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// The indexes of the caches, besides the namespace index, so that a
// Deployment's pods are found without listing its namespace.
const (
	// PodsByReplicaSet indexes pods by "namespace/name" of the ReplicaSet
	// that controls them.
	PodsByReplicaSet = "replicaset"
	// ReplicaSetsByDeployment indexes ReplicaSets by "namespace/name" of the
	// Deployment that controls them.
	ReplicaSetsByDeployment = "deployment"
)

// PodIndexers are the indexes of the pod cache.
func PodIndexers() cache.Indexers {
	return cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc, PodsByReplicaSet: podReplicaSetIndex}
}

// ReplicaSetIndexers are the indexes of the ReplicaSet cache.
func ReplicaSetIndexers() cache.Indexers {
	return cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc, ReplicaSetsByDeployment: replicaSetDeploymentIndex}
}

func podReplicaSetIndex(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil && ref.Kind == "ReplicaSet" {
		return []string{pod.Namespace + "/" + ref.Name}, nil
	}
	return nil, nil
}

func replicaSetDeploymentIndex(obj any) ([]string, error) {
	rs, ok := obj.(*appsv1.ReplicaSet)
	if !ok {
		return nil, nil
	}
	if ref := metav1.GetControllerOfNoCopy(rs); ref != nil && ref.Kind == "Deployment" {
		return []string{rs.Namespace + "/" + ref.Name}, nil
	}
	return nil, nil
}

// Informers are the caches the provider reads: pods, restricted by the
// selection's label selector on the server and stripped by StripPod, and
// ReplicaSets stripped to their owner, to find a pod's Deployment.
type Informers struct {
	podFactory informers.SharedInformerFactory
	rsFactory  informers.SharedInformerFactory
	pods       cache.SharedIndexInformer
	rs         cache.SharedIndexInformer
	// handlers are the pod handlers' registrations: synced once each
	// handler has been called for every pod of the initial list.
	handlers []cache.ResourceEventHandlerRegistration
}

// NewInformersForConfig returns the informers of namespace ("" for all) for
// a selection, with a client of their own made from cfg that speaks
// protobuf, the API server's cheapest encoding to send and to decode.
func NewInformersForConfig(cfg *rest.Config, namespace string, selection *Selection) (*Informers, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("informer client: %w", err)
	}
	return NewInformers(client, namespace, selection)
}

// RunningPods is the field selector of the pod watch: only running pods can
// be scraped, and the API server leaves the others (pending, completed
// Jobs) out of the watch. (The ScaleGuard controller, which must see pending
// pods, keeps a watch of its own for that reason: see cmd/adapter/app's
// guardCacheOptions.)
var RunningPods = fields.OneTermEqualSelector("status.phase", string(corev1.PodRunning))

// NewInformers returns the informers of namespace ("" for all) for a
// selection. The pod watch is filtered on the API server by the selection's
// label selector and by phase Running. Nothing runs until Start.
func NewInformers(client kubernetes.Interface, namespace string, selection *Selection) (*Informers, error) {
	labelSelector := ""
	if selection.Selector != nil && !selection.Selector.Empty() {
		labelSelector = selection.Selector.String()
	}
	podOpts := []informers.SharedInformerOption{
		informers.WithNamespace(namespace),
		informers.WithTransform(selection.StripPod),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector, o.FieldSelector = labelSelector, RunningPods.String()
		}),
	}
	i := &Informers{
		podFactory: informers.NewSharedInformerFactoryWithOptions(client, 0, podOpts...),
		rsFactory: informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithNamespace(namespace), informers.WithTransform(StripReplicaSet)),
	}
	i.pods = i.podFactory.Core().V1().Pods().Informer()
	i.rs = i.rsFactory.Apps().V1().ReplicaSets().Informer()
	if err := i.pods.AddIndexers(cache.Indexers{PodsByReplicaSet: podReplicaSetIndex}); err != nil {
		return nil, fmt.Errorf("index pods by ReplicaSet: %w", err)
	}
	if err := i.rs.AddIndexers(cache.Indexers{ReplicaSetsByDeployment: replicaSetDeploymentIndex}); err != nil {
		return nil, fmt.Errorf("index ReplicaSets by Deployment: %w", err)
	}
	return i, nil
}

// Pods returns the pod cache, with the indexes of PodIndexers.
func (i *Informers) Pods() cache.Indexer { return i.pods.GetIndexer() }

// ReplicaSets returns the ReplicaSet cache, with the indexes of
// ReplicaSetIndexers.
func (i *Informers) ReplicaSets() cache.Indexer { return i.rs.GetIndexer() }

// AddPodHandler registers a handler of pod events. Call it before Start.
func (i *Informers) AddPodHandler(h cache.ResourceEventHandler) error {
	reg, err := i.pods.AddEventHandler(h)
	if err != nil {
		return fmt.Errorf("add pod event handler: %w", err)
	}
	i.handlers = append(i.handlers, reg)
	return nil
}

// Start starts the informers; they stop when ctx is done.
func (i *Informers) Start(ctx context.Context) {
	i.podFactory.Start(ctx.Done())
	i.rsFactory.Start(ctx.Done())
}

// WaitForSync waits until both caches hold a full list and every pod
// handler has seen it, or ctx is done.
func (i *Informers) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), i.HasSynced) {
		return fmt.Errorf("wait for pod and ReplicaSet caches: %w", context.Cause(ctx))
	}
	return nil
}

// HasSynced reports whether both caches hold a full list and every pod
// handler has seen it: the Store then tracks every pod the cache holds.
func (i *Informers) HasSynced() bool {
	if !i.pods.HasSynced() || !i.rs.HasSynced() {
		return false
	}
	for _, reg := range i.handlers {
		if !reg.HasSynced() {
			return false
		}
	}
	return true
}

// Shutdown waits for the informers' goroutines after ctx is done.
func (i *Informers) Shutdown() {
	i.podFactory.Shutdown()
	i.rsFactory.Shutdown()
}
