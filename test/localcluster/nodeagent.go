package localcluster

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/wsscale/wsscale/test/nodeagent"
)

// startNodeAgent runs the process-based node agent in this process, inside the node
// network, with the admin kubeconfig.
func (s *supervisor) startNodeAgent() error {
	agent, err := nodeagent.New(nodeagent.Options{
		Kubeconfig:    s.path("kubeconfigs", "admin.kubeconfig"),
		NodeName:      s.cfg.NodeName,
		NodeIP:        NodeIP,
		APIServerPort: APIServerPort,
		PodCIDR:       PodCIDR,
		Images:        s.cfg.Images,
		StateDir:      s.path("node"),
		// Downward API files change a moment after a label does, as on a kubelet.
		DownwardAPISyncDelay: s.cfg.DownwardAPISyncDelay,
		ClusterDNS:           []string{ClusterDNSIP},
		ClusterDomain:        ClusterDomain,
		KubeletAPI: nodeagent.KubeletAPIOptions{
			Port:         KubeletPort,
			CertFile:     s.pki.KubeletServing.CertFile,
			KeyFile:      s.pki.KubeletServing.KeyFile,
			ClientCAFile: s.pki.CA.CertFile,
		},
	})
	if err != nil {
		return fmt.Errorf("node agent: %w", err)
	}
	s.runNodeAgent(agent)
	return nil
}

func (s *supervisor) runNodeAgent(agent nodeAgentRunner) {
	ctx, cancel := context.WithCancel(context.Background())
	s.agentCancel = cancel
	s.agentRuns = true
	go func() { s.agentDone <- agent.Run(ctx) }()
}

// grantKubeletAPI binds kube-apiserver's kubelet client identity to the built-in
// system:kubelet-api-admin role, which the node agent's authorization checks (through
// SubjectAccessReviews) as a kubelet does.
func grantKubeletAPI(ctx context.Context, client kubernetes.Interface) error {
	_, err := client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "wsscale-local:kube-apiserver-kubelet-api"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: kubeletClientName}},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
