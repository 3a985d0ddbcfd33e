package version

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123abc"}, {Key: "vcs.modified", Value: "true"},
	}}
	tests := []struct {
		name   string
		linked string
		bi     *debug.BuildInfo
		want   string
	}{
		{name: "linked version wins", linked: "v0.2.0", bi: vcs, want: "v0.2.0 (revision 0123abc-dirty, go1.26.8)"},
		{name: "work tree build", bi: vcs, want: "(devel) (revision 0123abc-dirty, go1.26.8)"},
		{name: "module version", bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.3.1"}}, want: "v0.3.1 (revision unknown, go1.26.8)"},
		{name: "no build info", linked: "", bi: nil, want: "(devel) (revision unknown, "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fromBuildInfo(tt.linked, func() (*debug.BuildInfo, bool) { return tt.bi, tt.bi != nil }).String()
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRegister(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if err := Register(reg, "wsecho"); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg, "wsscale_build_info", "go_build_info")
	if err != nil || n != 2 {
		t.Fatalf("build info series: %d, %v; want 2", n, err)
	}
	if err := Register(reg, "wsecho"); err == nil {
		t.Error("registering twice: no error")
	}
}
