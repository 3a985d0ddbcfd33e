package version

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	tests := []struct {
		name, version, commit, want string
	}{
		{name: "unset", version: "dev", commit: "", want: "dev (commit unknown, "},
		{name: "release", version: "v0.1.0", commit: "abc123", want: "v0.1.0 (commit abc123, "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oldV, oldC := Version, Commit
			t.Cleanup(func() { Version, Commit = oldV, oldC })
			Version, Commit = tc.version, tc.commit
			if got := String(); !strings.HasPrefix(got, tc.want) {
				t.Errorf("String() = %q, want prefix %q", got, tc.want)
			}
		})
	}
}
