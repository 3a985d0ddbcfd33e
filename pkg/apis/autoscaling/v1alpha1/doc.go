// Package v1alpha1 holds the ScaleGuard API: a resource with a scale subresource that the
// HorizontalPodAutoscaler targets instead of a Deployment, so that the ScaleGuard controller alone
// changes the Deployment's replicas and can drain the pods it removes first.
//
// +kubebuilder:object:generate=true
// +groupName=autoscaling.wsscale.io
package v1alpha1
