package localcluster

import (
	"strings"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Options)
		want   []string
	}{
		{name: "defaults", modify: func(*Options) {}},
		{name: "free port", modify: func(o *Options) { o.APIPort = 0 }},
		{
			name: "every problem at once",
			modify: func(o *Options) {
				o.BinDir = ""
				o.APIPort = 70000
				o.NodeName = ""
				o.HPASyncPeriod = 0
				o.StopTimeout = -time.Second
				o.ExtraArgs = map[string][]string{"kubelet": {"--v=4"}}
			},
			want: []string{"bin dir", "api port 70000", "node name", "hpa sync period", "stop timeout", `"kubelet"`},
		},
		{
			name:   "extra args for a component",
			modify: func(o *Options) { o.ExtraArgs = map[string][]string{"kube-apiserver": {"--v=4"}} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewOptions()
			tt.modify(o)
			errs := o.Validate()
			if len(errs) != len(tt.want) {
				t.Fatalf("Validate() = %v, want %d errors about %v", errs, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d = %q, want it to mention %q", i, errs[i], w)
				}
			}
		})
	}
}
