package provider

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Informers are the caches the provider reads: pods, restricted by the
// selection's label selector on the server and stripped by StripPod, and
// ReplicaSets stripped to their owner, to find a pod's Deployment.
type Informers struct {
	podFactory informers.SharedInformerFactory
	rsFactory  informers.SharedInformerFactory
	pods       cache.SharedIndexInformer
	rs         cache.SharedIndexInformer
}

// NewInformers returns the informers of namespace ("" for all) for a
// selection. Nothing runs until Start.
func NewInformers(client kubernetes.Interface, namespace string, selection *Selection) *Informers {
	podOpts := []informers.SharedInformerOption{
		informers.WithNamespace(namespace),
		informers.WithTransform(selection.StripPod),
	}
	if selection.Selector != nil && !selection.Selector.Empty() {
		sel := selection.Selector.String()
		podOpts = append(podOpts, informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel }))
	}
	i := &Informers{
		podFactory: informers.NewSharedInformerFactoryWithOptions(client, 0, podOpts...),
		rsFactory: informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithNamespace(namespace), informers.WithTransform(StripReplicaSet)),
	}
	i.pods = i.podFactory.Core().V1().Pods().Informer()
	i.rs = i.rsFactory.Apps().V1().ReplicaSets().Informer()
	return i
}

// Pods returns the pod lister.
func (i *Informers) Pods() corelisters.PodLister {
	return corelisters.NewPodLister(i.pods.GetIndexer())
}

// ReplicaSets returns the ReplicaSet lister.
func (i *Informers) ReplicaSets() appslisters.ReplicaSetLister {
	return appslisters.NewReplicaSetLister(i.rs.GetIndexer())
}

// AddPodHandler registers a handler of pod events.
func (i *Informers) AddPodHandler(h cache.ResourceEventHandler) error {
	if _, err := i.pods.AddEventHandler(h); err != nil {
		return fmt.Errorf("add pod event handler: %w", err)
	}
	return nil
}

// Start starts the informers; they stop when ctx is done.
func (i *Informers) Start(ctx context.Context) {
	i.podFactory.Start(ctx.Done())
	i.rsFactory.Start(ctx.Done())
}

// WaitForSync waits until both caches hold a full list, or ctx is done.
func (i *Informers) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), i.pods.HasSynced, i.rs.HasSynced) {
		return fmt.Errorf("wait for pod and ReplicaSet caches: %w", context.Cause(ctx))
	}
	return nil
}

// Shutdown waits for the informers' goroutines after ctx is done.
func (i *Informers) Shutdown() {
	i.podFactory.Shutdown()
	i.rsFactory.Shutdown()
}
