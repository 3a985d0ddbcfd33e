package nodeagent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func TestOptionsValidate(t *testing.T) {
	valid := func() Options {
		return Options{
			Kubeconfig: "/k", NodeName: "local-node-1", NodeIP: "198.18.0.1", APIServerPort: 6443,
			PodCIDR: "198.18.1.0/24", Images: map[string]string{"wsscale/echo": "/bin/echo"}, StateDir: "/tmp/x",
		}
	}
	tests := []struct {
		name   string
		mutate func(*Options)
		want   []string
	}{
		{name: "valid", mutate: func(*Options) {}},
		{name: "everything wrong at once", mutate: func(o *Options) {
			*o = Options{NodeName: "Bad_Name", NodeIP: "::1", PodCIDR: "198.18.1.1/24", StateDir: "rel",
				Images: map[string]string{"wsscale/echo:v1": "echo"}, MaxPods: -1,
				CrashLoopBackOffBase: time.Minute, CrashLoopBackOffMax: time.Second}
		}, want: []string{
			"kubeconfig: required", `node name "Bad_Name"`, `node IP "::1"`, "API server port 0",
			`pod CIDR "198.18.1.1/24": host bits set`, `repository "wsscale/echo:v1"`, `binary "echo"`,
			`state dir "rel"`, "max pods -1", "crash loop back-off max 1s: below base 1m0s",
		}},
		{name: "tiny pod CIDR", mutate: func(o *Options) { o.PodCIDR = "198.18.1.0/31" }, want: []string{"at least two addresses"}},
		{name: "client instead of kubeconfig", mutate: func(o *Options) { o.Kubeconfig = ""; o.Client = fake.NewClientset() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.mutate(&o)
			errs := o.Validate()
			got := errors.Join(errs...)
			if len(tt.want) == 0 {
				if got != nil {
					t.Fatalf("unexpected errors: %v", got)
				}
				return
			}
			if len(errs) < len(tt.want) {
				t.Errorf("got %d errors, want at least %d: %v", len(errs), len(tt.want), got)
			}
			for _, w := range tt.want {
				if got == nil || !strings.Contains(got.Error(), w) {
					t.Errorf("errors %v lack %q", got, w)
				}
			}
		})
	}
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "node name: required") || !strings.Contains(err.Error(), "state dir: required") {
		t.Errorf("New did not aggregate errors: %v", err)
	}
}

func TestImageResolve(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "echo")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(dir, "plain")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := imageResolver{images: map[string]string{
		"wsscale/echo": bin, "wsscale/plain": notExec, "wsscale/missing": filepath.Join(dir, "nope"),
		"registry.local:5000/team/app": bin, "traefik": bin,
	}}
	tests := []struct {
		name, image, wantBin, wantErr string
	}{
		{name: "tag", image: "wsscale/echo:v1.2.3", wantBin: bin},
		{name: "no tag", image: "wsscale/echo", wantBin: bin},
		{name: "digest", image: "wsscale/echo@sha256:0123", wantBin: bin},
		{name: "tag and digest", image: "wsscale/echo:v1@sha256:0123", wantBin: bin},
		{name: "docker hub prefix", image: "docker.io/wsscale/echo:latest", wantBin: bin},
		{name: "registry with port", image: "registry.local:5000/team/app:1", wantBin: bin},
		{name: "registry with port, no tag", image: "registry.local:5000/team/app", wantBin: bin},
		{name: "official image", image: "traefik:v3.6", wantBin: bin},
		{name: "official image, library prefix", image: "docker.io/library/traefik:v3.6.12", wantBin: bin},
		{name: "official image, docker.io prefix", image: "docker.io/traefik:v3.6", wantBin: bin},
		{name: "unknown", image: "nginx:1.27", wantErr: `image "nginx:1.27" is not available on this node`},
		{name: "binary missing", image: "wsscale/missing:v1", wantErr: "which is not available"},
		{name: "not executable", image: "wsscale/plain", wantErr: "not an executable file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.resolve(tt.image)
			if tt.wantErr != "" {
				var nf *errImageNotPresent
				if !errors.As(err, &nf) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.wantBin {
				t.Fatalf("resolve = %q, %v; want %q", got, err, tt.wantBin)
			}
		})
	}
}

func TestFormatMap(t *testing.T) {
	got := formatMap(map[string]string{"wsscale.io/drain": "true", "app": "echo", "quote": `a"b` + "\n", "empty": ""})
	want := `app="echo"
empty=""
quote="a\"b\n"
wsscale.io/drain="true"`
	if got != want {
		t.Errorf("formatMap:\n%s\nwant:\n%s", got, want)
	}
	if got := formatMap(nil); got != "" {
		t.Errorf("formatMap(nil) = %q", got)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "alpha", "B": "beta"}
	mapping := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	tests := []struct{ name, in, want string }{
		{name: "plain", in: "abc", want: "abc"},
		{name: "one", in: "$(A)", want: "alpha"},
		{name: "two", in: "x$(A)-$(B)y", want: "xalpha-betay"},
		{name: "unknown kept", in: "$(C)", want: "$(C)"},
		{name: "escaped", in: "$$(A)", want: "$(A)"},
		{name: "lone dollar", in: "$A $", want: "$A $"},
		{name: "unterminated", in: "$(A", want: "$(A"},
		{name: "empty name", in: "$()", want: "$()"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expand(tt.in, mapping); got != tt.want {
				t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMakeEnvironment(t *testing.T) {
	client := fake.NewClientset(
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "ns"}, Data: map[string]string{"mode": "fast", "bad-name": "x", "LEVEL": "3"}},
		&v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "ns"}, Data: map[string][]byte{"password": []byte("s3cret")}},
	)
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-0", Namespace: "ns", UID: "u1", Labels: map[string]string{"app": "echo"}},
		Spec:       v1.PodSpec{NodeName: "node-a", ServiceAccountName: "sa"},
		Status:     v1.PodStatus{PodIP: "198.18.1.7", PodIPs: []v1.PodIP{{IP: "198.18.1.7"}}, HostIP: "198.18.0.1"},
	}
	fieldEnv := func(name, path string) v1.EnvVar {
		return v1.EnvVar{Name: name, ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: path}}}
	}
	ec := envContext{nodeIP: "198.18.0.1", apiServerPort: 6443, allocatable: v1.ResourceList{
		v1.ResourceCPU: resource.MustParse("8"), v1.ResourceMemory: resource.MustParse("16Gi")}}
	tests := []struct {
		name    string
		c       v1.Container
		want    map[string]string
		absent  []string
		wantErr string
	}{
		{
			name: "field refs and service variables",
			c: v1.Container{Env: []v1.EnvVar{
				fieldEnv("NAME", "metadata.name"), fieldEnv("NS", "metadata.namespace"), fieldEnv("IP", "status.podIP"),
				fieldEnv("HOST_IP", "status.hostIP"), fieldEnv("NODE", "spec.nodeName"), fieldEnv("APP", "metadata.labels['app']"),
				fieldEnv("SA", "spec.serviceAccountName"), fieldEnv("UID", "metadata.uid"),
			}},
			want: map[string]string{
				"NAME": "echo-0", "NS": "ns", "IP": "198.18.1.7", "HOST_IP": "198.18.0.1", "NODE": "node-a", "APP": "echo",
				"SA": "sa", "UID": "u1", "HOSTNAME": "echo-0", "PATH": defaultPath,
				"KUBERNETES_SERVICE_HOST": "198.18.0.1", "KUBERNETES_SERVICE_PORT": "6443", "KUBERNETES_PORT": "tcp://198.18.0.1:6443",
			},
		},
		{
			name: "configmap and secret refs, expansion, later wins",
			c: v1.Container{
				EnvFrom: []v1.EnvFromSource{
					{Prefix: "CFG_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}},
					{Prefix: "BAD=", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}},
					{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "gone"}, Optional: ptr.To(true)}},
				},
				Env: []v1.EnvVar{
					{Name: "MODE", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "mode"}}},
					{Name: "PASS", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
					{Name: "URL", Value: "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)/$(MODE)/$(NOPE)/$$(MODE)"},
					{Name: "CFG_LEVEL", Value: "override"},
					{Name: "OPT", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "missing", Optional: ptr.To(true)}}},
				},
			},
			want: map[string]string{
				"CFG_mode": "fast", "CFG_bad-name": "x", "CFG_LEVEL": "override", "MODE": "fast", "PASS": "s3cret",
				"URL": "https://198.18.0.1:6443/fast/$(NOPE)/$(MODE)",
			},
			absent: []string{"BAD=mode", "OPT"},
		},
		{
			name: "pod overrides service variables",
			c:    v1.Container{Env: []v1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: "10.0.0.1"}}},
			want: map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"},
		},
		{
			name: "resource field refs",
			c: v1.Container{
				Name: "app",
				Resources: v1.ResourceRequirements{
					Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m"), v1.ResourceMemory: resource.MustParse("64Mi")},
					Limits:   v1.ResourceList{v1.ResourceMemory: resource.MustParse("128Mi")},
				},
				Env: []v1.EnvVar{
					{Name: "REQ_CPU", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "requests.cpu"}}},
					{Name: "REQ_CPU_M", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
					{Name: "LIM_MEM_MI", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
					{Name: "LIM_CPU", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.cpu"}}},
				},
			},
			want: map[string]string{"REQ_CPU": "1", "REQ_CPU_M": "250", "LIM_MEM_MI": "128", "LIM_CPU": "8"},
		},
		{
			name:    "missing configmap",
			c:       v1.Container{Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}, Key: "k"}}}}},
			wantErr: `configmap "nope" not found`,
		},
		{
			name:    "missing secret key",
			c:       v1.Container{Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "sec"}, Key: "k"}}}}},
			wantErr: "couldn't find key k in Secret ns/sec",
		},
		{
			name:    "missing envFrom secret",
			c:       v1.Container{EnvFrom: []v1.EnvFromSource{{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}}}}},
			wantErr: `secret "nope" not found`,
		},
		{
			name:    "bad field path",
			c:       v1.Container{Env: []v1.EnvVar{fieldEnv("X", "spec.bogus")}},
			wantErr: `unsupported field path "spec.bogus"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := makeEnvironment(context.Background(), newObjectCache(client, "ns"), pod, &tt.c, ec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if got, ok := env.get(k); !ok || got != v {
					t.Errorf("%s = %q (set %v), want %q", k, got, ok, v)
				}
			}
			for _, k := range tt.absent {
				if v, ok := env.get(k); ok {
					t.Errorf("%s unexpectedly set to %q", k, v)
				}
			}
		})
	}
}

func TestContainerArgs(t *testing.T) {
	env := &envList{}
	env.set("PORT", "8080")
	tests := []struct {
		name string
		c    v1.Container
		want []string
	}{
		{name: "none", c: v1.Container{}, want: nil},
		{name: "args only", c: v1.Container{Args: []string{"--port=$(PORT)"}}, want: []string{"--port=8080"}},
		{name: "entrypoint dropped", c: v1.Container{Command: []string{"/echo"}}, want: nil},
		{name: "command tail before args", c: v1.Container{Command: []string{"/echo", "-v"}, Args: []string{"x"}}, want: []string{"-v", "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := containerArgs(&tt.c, env); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("containerArgs = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCrashBackOff(t *testing.T) {
	b := crashBackOff{base: 10 * time.Second, max: 5 * time.Minute}
	var got []time.Duration
	for i := 0; i < 8; i++ {
		got = append(got, b.next(time.Second))
	}
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	// A run longer than twice the maximum starts the sequence over.
	if d := b.next(10 * time.Minute); d != 0 {
		t.Errorf("after a long run: %v, want 0", d)
	}
	if d := b.next(time.Second); d != 10*time.Second {
		t.Errorf("second after reset: %v, want 10s", d)
	}
}

func TestIPAllocator(t *testing.T) {
	a := newIPAllocator(mustPrefix("198.18.1.0/29"), mustAddr("198.18.1.1"))
	var got []string
	for {
		ip, err := a.allocate()
		if err != nil {
			break
		}
		got = append(got, ip.String())
	}
	want := []string{"198.18.1.2", "198.18.1.3", "198.18.1.4", "198.18.1.5", "198.18.1.6"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	a.release(mustAddr("198.18.1.3"))
	if ip, err := a.allocate(); err != nil || ip.String() != "198.18.1.3" {
		t.Errorf("after release: %v, %v", ip, err)
	}
}
