package nodeagent

import (
	"context"
	"fmt"
	"os"
	goruntime "runtime"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const (
	leaseNamespace = "kube-node-lease"
	// nodeVersion is reported as the kubelet version: the control plane's.
	nodeVersion = "v1.37.2"
)

// nodeConditions are the conditions of a healthy node at now; a heartbeat refreshes them.
func nodeConditions(old []v1.NodeCondition, now time.Time) []v1.NodeCondition {
	t := metav1.NewTime(now)
	want := []v1.NodeCondition{
		{Type: v1.NodeMemoryPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "process-based node agent has sufficient memory available"},
		{Type: v1.NodeDiskPressure, Status: v1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "process-based node agent has no disk pressure"},
		{Type: v1.NodePIDPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "process-based node agent has sufficient PID available"},
		{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", Message: "process-based node agent is posting ready status"},
	}
	for i := range want {
		want[i].LastHeartbeatTime = t
		want[i].LastTransitionTime = t
		for _, o := range old {
			if o.Type == want[i].Type && o.Status == want[i].Status {
				want[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	return want
}

func kernelVersion() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// desiredNode is the Node object this agent registers.
func (a *Agent) desiredNode(now time.Time) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: a.opts.NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname": a.opts.NodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     goruntime.GOARCH,
				"beta.kubernetes.io/os":  "linux",
				"wsscale.io/node-agent":  "process",
			},
		},
		Spec: v1.NodeSpec{PodCIDR: a.opts.PodCIDR, PodCIDRs: []string{a.opts.PodCIDR}},
		Status: v1.NodeStatus{
			Capacity:        a.allocatable.DeepCopy(),
			Allocatable:     a.allocatable.DeepCopy(),
			Phase:           v1.NodeRunning,
			Conditions:      nodeConditions(nil, now),
			DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: int32(a.opts.KubeletAPI.Port)}},
			Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: a.opts.NodeIP},
				{Type: v1.NodeHostName, Address: a.opts.NodeName},
			},
			NodeInfo: v1.NodeSystemInfo{
				KubeletVersion:          nodeVersion,
				KubeProxyVersion:        "",
				OperatingSystem:         "linux",
				Architecture:            goruntime.GOARCH,
				OSImage:                 "wsscale process-based node agent",
				KernelVersion:           kernelVersion(),
				ContainerRuntimeVersion: "process://1",
			},
		},
	}
}

// registerNode creates the Node, or takes over an existing one of the same name, retrying
// until the API server answers or ctx ends.
func (a *Agent) registerNode(ctx context.Context) error {
	delay := 500 * time.Millisecond
	for {
		err := a.tryRegisterNode(ctx)
		if err == nil {
			return nil
		}
		a.logger().Error(err, "Registering node failed; retrying", "delay", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("register node %s: %w", a.opts.NodeName, err)
		case <-a.clock.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

func (a *Agent) tryRegisterNode(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	want := a.desiredNode(a.clock.Now())
	created, err := nodes.Create(ctx, want, metav1.CreateOptions{})
	if err == nil {
		// Status is ignored on create; set it through the subresource.
		created.Status = want.Status
		_, err = nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node: %w", err)
	}
	cur, err := nodes.Get(ctx, a.opts.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node: %w", err)
	}
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	for k, v := range want.Labels {
		cur.Labels[k] = v
	}
	if cur.Spec.PodCIDR == "" {
		cur.Spec.PodCIDR, cur.Spec.PodCIDRs = want.Spec.PodCIDR, want.Spec.PodCIDRs
	}
	cur.Spec.Unschedulable = false
	updated, err := nodes.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update node: %w", err)
	}
	want.Status.Conditions = nodeConditions(updated.Status.Conditions, a.clock.Now())
	updated.Status = want.Status
	if _, err := nodes.UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update node status: %w", err)
	}
	return nil
}

// runNodeStatus refreshes the Node's condition heartbeats every NodeStatusPeriod.
func (a *Agent) runNodeStatus(ctx context.Context) {
	t := a.clock.NewTicker(a.opts.NodeStatusPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		if err := a.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
			a.logger().Error(err, "Updating node status failed")
		}
	}
}

func (a *Agent) updateNodeStatus(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, a.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return a.tryRegisterNode(ctx)
	}
	if err != nil {
		return fmt.Errorf("get node: %w", err)
	}
	want := a.desiredNode(a.clock.Now())
	want.Status.Conditions = nodeConditions(node.Status.Conditions, a.clock.Now())
	node.Status = want.Status
	if _, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update node status: %w", err)
	}
	return nil
}

// runLease renews the node's Lease every quarter of LeaseDuration; the node lifecycle
// controller reads it as the node's heartbeat.
func (a *Agent) runLease(ctx context.Context) {
	t := a.clock.NewTicker(a.opts.LeaseDuration / 4)
	defer t.Stop()
	for {
		if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
			a.logger().Error(err, "Renewing node lease failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

func (a *Agent) renewLease(ctx context.Context) error {
	leases := a.client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(a.clock.Now())
	lease, err := leases.Get(ctx, a.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err := a.client.CoreV1().Nodes().Get(ctx, a.opts.NodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get node for lease owner: %w", err)
		}
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name:      a.opts.NodeName,
				Namespace: leaseNamespace,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.opts.NodeName),
				LeaseDurationSeconds: ptr.To(int32(a.opts.LeaseDuration / time.Second)),
				RenewTime:            &now,
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create lease: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get lease: %w", err)
	}
	lease.Spec.HolderIdentity = ptr.To(a.opts.NodeName)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(a.opts.LeaseDuration / time.Second))
	lease.Spec.RenewTime = &now
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update lease: %w", err)
	}
	return nil
}
