// Package version says which build of a wsscale binary is running: the release version (set at
// link time), the source revision and the Go version, for --version and the build-info metric.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// version and revision are the release and the source revision, set at link time by the
// Makefile's GO_LDFLAGS (`make build`, and the Dockerfile through `make build-binary`):
// -ldflags "-X github.com/wsscale/wsscale/pkg/version.version=v0.1.0 -X ....revision=SHA".
// Without them the module version and the revision recorded by the go command are used.
var version, revision string

// Info describes one build.
type Info struct {
	// Version is the release version, or the module version the binary was built at
	// ("(devel)" for a build from a work tree).
	Version string
	// Revision is the source control revision, "unknown" when the build did not record it.
	Revision string
	// Modified says the work tree had uncommitted changes.
	Modified bool
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string
}

// Get returns the running binary's build information.
func Get() Info {
	info := fromBuildInfo(version, debug.ReadBuildInfo)
	if revision != "" {
		info.Revision, info.Modified = revision, false
	}
	return info
}

func fromBuildInfo(linked string, read func() (*debug.BuildInfo, bool)) Info {
	info := Info{Version: linked, Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := read()
	if !ok {
		if info.Version == "" {
			info.Version = "(devel)"
		}
		return info
	}
	if info.Version == "" {
		info.Version = bi.Main.Version
	}
	if info.Version == "" {
		info.Version = "(devel)"
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is the one line --version prints.
func (i Info) String() string {
	rev := i.Revision
	if i.Modified {
		rev += "-dirty"
	}
	return fmt.Sprintf("%s (revision %s, %s)", i.Version, rev, i.GoVersion)
}

// Register adds to reg the standard go_build_info metric and wsscale_build_info{program,
// version, revision, goversion}, always 1, so that dashboards can tell which build runs where.
func Register(reg prometheus.Registerer, program string) error {
	i := Get()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsscale_build_info",
		Help: "Which build of a wsscale binary is running; always 1.",
		ConstLabels: prometheus.Labels{
			"program": program, "version": i.Version, "revision": i.Revision, "goversion": i.GoVersion,
		},
	})
	info.Set(1)
	for _, c := range []prometheus.Collector{info, collectors.NewBuildInfoCollector()} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register build info: %w", err)
		}
	}
	return nil
}
