package nodeagent

import (
	"reflect"
	"testing"
)

func TestMountOrder(t *testing.T) {
	tests := []struct {
		name    string
		targets []string
		want    []string
	}{
		{name: "parents first", targets: []string{"/tmp/certs", "/tmp", "/var/run/secrets/kubernetes.io/serviceaccount", "/var"},
			want: []string{"/tmp", "/var", "/tmp/certs", "/var/run/secrets/kubernetes.io/serviceaccount"}},
		{name: "same depth keeps the pod's order", targets: []string{"/etc/b", "/etc/a", "/a"},
			want: []string{"/a", "/etc/b", "/etc/a"}},
		{name: "trailing slash counts as the clean path", targets: []string{"/tmp/x/", "/tmp"},
			want: []string{"/tmp", "/tmp/x/"}},
		{name: "none", targets: nil, want: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounts := make([]bindMount, len(tt.targets))
			for i, target := range tt.targets {
				mounts[i] = bindMount{Source: "/src", Target: target}
			}
			got := []string{}
			for _, i := range mountOrder(mounts) {
				got = append(got, mounts[i].Target)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("mountOrder: got %v, want %v", got, tt.want)
			}
		})
	}
}
