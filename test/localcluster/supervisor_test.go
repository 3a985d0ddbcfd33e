package localcluster

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func testSupervisor() *supervisor {
	dir := "/state"
	return &supervisor{
		cfg: supervisorConfig{
			StateDir:                  dir,
			HPASyncPeriod:             2 * time.Second,
			HPADownscaleStabilization: 15 * time.Second,
		},
		pki: &clusterPKI{
			CA:                       &certificate{CertFile: dir + "/pki/ca.crt", KeyFile: dir + "/pki/ca.key"},
			APIServer:                &certificate{CertFile: dir + "/pki/apiserver.crt", KeyFile: dir + "/pki/apiserver.key"},
			FrontProxyCA:             &certificate{CertFile: dir + "/pki/front-proxy-ca.crt"},
			FrontProxyClient:         &certificate{CertFile: dir + "/pki/front-proxy-client.crt", KeyFile: dir + "/pki/front-proxy-client.key"},
			KubeletClient:            &certificate{CertFile: dir + "/pki/kubelet-client.crt", KeyFile: dir + "/pki/kubelet-client.key"},
			ServiceAccountKeyFile:    dir + "/pki/sa.key",
			ServiceAccountPubKeyFile: dir + "/pki/sa.pub",
		},
	}
}

// The flags that make aggregation, service accounts and fast HPA tests work are the
// contract of the local cluster; losing one breaks the project's end-to-end tests
// in ways that are slow to trace back.
func TestComponentArgs(t *testing.T) {
	s := testSupervisor()
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{
			name: "kube-apiserver",
			args: s.apiserverArgs(),
			want: []string{
				"--advertise-address=198.18.0.1",
				"--service-cluster-ip-range=198.19.0.0/16",
				"--authorization-mode=Node,RBAC",
				"--enable-aggregator-routing=true",
				"--endpoint-reconciler-type=none",
				"--requestheader-client-ca-file=/state/pki/front-proxy-ca.crt",
				"--requestheader-allowed-names=front-proxy-client",
				"--requestheader-extra-headers-prefix=X-Remote-Extra-",
				"--requestheader-group-headers=X-Remote-Group",
				"--requestheader-username-headers=X-Remote-User",
				"--proxy-client-cert-file=/state/pki/front-proxy-client.crt",
				"--proxy-client-key-file=/state/pki/front-proxy-client.key",
				"--service-account-signing-key-file=/state/pki/sa.key",
				"--service-account-key-file=/state/pki/sa.pub",
				"--client-ca-file=/state/pki/ca.crt",
				"--kubelet-client-certificate=/state/pki/kubelet-client.crt",
				"--kubelet-client-key=/state/pki/kubelet-client.key",
				"--kubelet-certificate-authority=/state/pki/ca.crt",
				"--kubelet-preferred-address-types=InternalIP,Hostname",
			},
		},
		{
			name: "kube-controller-manager",
			args: s.controllerManagerArgs(),
			want: []string{
				"--controllers=*",
				"--use-service-account-credentials=true",
				"--service-account-private-key-file=/state/pki/sa.key",
				"--root-ca-file=/state/pki/ca.crt",
				"--horizontal-pod-autoscaler-sync-period=2s",
				"--horizontal-pod-autoscaler-downscale-stabilization=15s",
				"--cert-dir=/state/controller-manager",
			},
		},
		{
			name: "kube-scheduler",
			args: s.schedulerArgs(),
			want: []string{"--kubeconfig=/state/kubeconfigs/scheduler.kubeconfig", "--cert-dir=/state/scheduler"},
		},
		{
			name: "etcd",
			args: s.etcdArgs(),
			want: []string{"--data-dir=/state/etcd", "--listen-client-urls=http://127.0.0.1:2379"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, w := range tt.want {
				if !slices.Contains(tt.args, w) {
					t.Errorf("missing %s in:\n%s", w, strings.Join(tt.args, "\n"))
				}
			}
			// Nothing may write outside the state directory (the default cert dirs are under /var/run).
			for _, a := range tt.args {
				if name, value, ok := strings.Cut(a, "="); ok && strings.HasPrefix(value, "/") && !strings.HasPrefix(value, "/state/") {
					t.Errorf("%s points outside the state directory: %s", name, value)
				}
			}
		})
	}
}
