package app

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/wsscale/wsscale/pkg/version"
)

func TestVersionFlag(t *testing.T) {
	cmd := NewEchoCommand(context.Background())
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if want := "wsecho version " + version.Get().String(); strings.TrimSpace(out.String()) != want {
		t.Errorf("--version printed %q, want %q", out.String(), want)
	}
}
