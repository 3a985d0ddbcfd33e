package nodeagent

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestResolvConf(t *testing.T) {
	dns := []string{"198.19.0.10"}
	pod := func(policy v1.DNSPolicy, hostNet bool, cfg *v1.PodDNSConfig) *v1.Pod {
		return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}, Spec: v1.PodSpec{DNSPolicy: policy, HostNetwork: hostNet, DNSConfig: cfg}}
	}
	clusterFile := "nameserver 198.19.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	tests := []struct {
		name       string
		pod        *v1.Pod
		clusterDNS []string
		want       string
		wantOwn    bool
	}{
		{name: "default policy is ClusterFirst", pod: pod("", false, nil), clusterDNS: dns, want: clusterFile, wantOwn: true},
		{name: "ClusterFirst", pod: pod(v1.DNSClusterFirst, false, nil), clusterDNS: dns, want: clusterFile, wantOwn: true},
		{name: "ClusterFirst on the host network keeps the node's", pod: pod(v1.DNSClusterFirst, true, nil), clusterDNS: dns, wantOwn: false},
		{name: "ClusterFirstWithHostNet", pod: pod(v1.DNSClusterFirstWithHostNet, true, nil), clusterDNS: dns, want: clusterFile, wantOwn: true},
		{name: "Default keeps the node's", pod: pod(v1.DNSDefault, false, nil), clusterDNS: dns, wantOwn: false},
		{name: "no cluster DNS on the node", pod: pod(v1.DNSClusterFirst, false, nil), wantOwn: false},
		{name: "None takes dnsConfig only", pod: pod(v1.DNSNone, false, &v1.PodDNSConfig{
			Nameservers: []string{"198.18.1.53"}, Searches: []string{"example.test"},
			Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}, {Name: "edns0"}},
		}), clusterDNS: dns, want: "nameserver 198.18.1.53\nsearch example.test\noptions ndots:2 edns0\n", wantOwn: true},
		{name: "dnsConfig merges into ClusterFirst, options override", pod: pod(v1.DNSClusterFirst, false, &v1.PodDNSConfig{
			Nameservers: []string{"198.19.0.10", "198.18.1.53"}, Searches: []string{"cluster.local", "extra.test"},
			Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("1")}},
		}), clusterDNS: dns,
			want:    "nameserver 198.19.0.10\nnameserver 198.18.1.53\nsearch shop.svc.cluster.local svc.cluster.local cluster.local extra.test\noptions ndots:1\n",
			wantOwn: true},
		{name: "at most three nameservers", pod: pod(v1.DNSNone, false, &v1.PodDNSConfig{Nameservers: []string{"198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4"}}),
			want: "nameserver 198.18.1.1\nnameserver 198.18.1.2\nnameserver 198.18.1.3\n", wantOwn: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, own := resolvConf(tt.pod, tt.clusterDNS, "cluster.local")
			if own != tt.wantOwn || got != tt.want {
				t.Errorf("resolvConf: got (%q, %v), want (%q, %v)", got, own, tt.want, tt.wantOwn)
			}
		})
	}
}
