package app

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestPidFileRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		content string // written directly when set
		record  pidRecord
		want    pidRecord
		wantErr bool
	}{
		{name: "starting", record: pidRecord{PID: 42}, want: pidRecord{PID: 42}},
		{name: "ready", record: pidRecord{PID: 42, StateDir: "/tmp/wsscale-localcluster-1"}, want: pidRecord{PID: 42, StateDir: "/tmp/wsscale-localcluster-1"}},
		{name: "garbage", content: "not a pid\n", wantErr: true},
		{name: "negative", content: "-3\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pf := pidFile{Path: filepath.Join(t.TempDir(), "sub", "cluster.pid")}
			if tt.content != "" {
				os.MkdirAll(filepath.Dir(pf.Path), 0o755)
				if err := os.WriteFile(pf.Path, []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if err := pf.write(tt.record); err != nil {
				t.Fatal(err)
			}
			got, err := pf.read()
			if (err != nil) != tt.wantErr {
				t.Fatalf("read() error = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("read() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPidFileRemoveIfOwned(t *testing.T) {
	pf := pidFile{Path: filepath.Join(t.TempDir(), "cluster.pid")}
	if err := pf.write(pidRecord{PID: 42}); err != nil {
		t.Fatal(err)
	}
	pf.removeIfOwned(43)
	if _, err := pf.read(); err != nil {
		t.Fatalf("another process's pid file was removed: %v", err)
	}
	pf.removeIfOwned(42)
	if _, err := pf.read(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read() after removal = %v, want not exist", err)
	}
}

func TestIsLocalClusterProcess(t *testing.T) {
	// This test binary is alive but is not `localcluster up`.
	if isLocalClusterProcess(os.Getpid()) {
		t.Error("the test binary was taken for a local cluster")
	}
	if isLocalClusterProcess(1 << 30) {
		t.Error("a pid that cannot exist was taken for a local cluster")
	}
}
