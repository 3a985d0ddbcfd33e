// Package version holds the build's version information, set at link time by the Makefile's
// GO_LDFLAGS (the one place that defines how the product's binaries are built, for `make build`
// and the Dockerfile alike).
package version

import (
	"fmt"
	"runtime"
)

// Version is the release the binary was built from: a git tag, or "dev" for a build without one.
var Version = "dev"

// Commit is the git commit the binary was built from, empty when unknown.
var Commit = ""

// String describes the build in one line, for a --version flag and the start-up log.
func String() string {
	commit := Commit
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, %s, %s/%s)", Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
