package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// goodPodSpec is the demo's echo pod: grace 20 s above preStop 0 + shutdown 3 s + drain 10 s +
// close grace 2 s, the labels volume, the readiness probe on /health.
func goodPodSpec() corev1.PodSpec {
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](20),
		Containers: []corev1.Container{{
			Name: "echo",
			Env: []corev1.EnvVar{{Name: "DRAIN_TIMEOUT", Value: "10s"}, {Name: "SHUTDOWN_DELAY", Value: "3s"},
				{Name: "DRAIN_LABELS_FILE", Value: "/etc/podinfo/labels"}, {Name: "PING_INTERVAL", Value: "20000"}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("ws")}}},
			VolumeMounts:   []corev1.VolumeMount{{Name: "podinfo", MountPath: "/etc/podinfo"}},
		}},
		Volumes: []corev1.Volume{{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}},
		}}}},
	}
}

func TestDrainSafety(t *testing.T) {
	for _, tc := range []struct {
		name   string
		guard  bool
		change func(*corev1.PodSpec)
		want   []string // status: evidence fragment, one per check in order (grace, labels volume, readiness)
	}{
		{name: "the demo's pod", want: []string{"pass: terminationGracePeriodSeconds 20 > preStop 0s + shutdown delay 3s + drain window 10s + close grace 2s = 15s", "pass: DRAIN_LABELS_FILE=/etc/podinfo/labels comes from downwardAPI volume podinfo", "pass: readiness probe on /health"}},
		{name: "grace below the drain", change: func(s *corev1.PodSpec) { s.TerminationGracePeriodSeconds = ptr.To[int64](15) },
			want: []string{"fail: terminationGracePeriodSeconds 15 is not above the drain", "pass:", "pass:"}},
		{name: "default grace, default drain", change: func(s *corev1.PodSpec) {
			s.TerminationGracePeriodSeconds = nil
			s.Containers[0].Env = s.Containers[0].Env[2:]
		},
			want: []string{"fail: terminationGracePeriodSeconds 30 is not above the drain: preStop 0s + shutdown delay 5s + drain window 30s", "pass:", "pass:"}},
		{name: "preStop sleep counts", change: func(s *corev1.PodSpec) {
			s.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}}
		}, want: []string{"fail: terminationGracePeriodSeconds 20 is not above the drain: preStop 5s", "pass:", "pass:"}},
		{name: "no labels file, guarded", guard: true, change: func(s *corev1.PodSpec) { s.Containers[0].Env = s.Containers[0].Env[:2] },
			want: []string{"pass:", "fail: container echo has no DRAIN_LABELS_FILE", "pass:"}},
		{name: "no labels file, unguarded", change: func(s *corev1.PodSpec) { s.Containers[0].Env = s.Containers[0].Env[:2] },
			want: []string{"pass:", "warn: container echo has no DRAIN_LABELS_FILE", "pass:"}},
		{name: "volume of annotations only", guard: true, change: func(s *corev1.PodSpec) {
			s.Volumes[0].DownwardAPI.Items[0].FieldRef.FieldPath = "metadata.annotations"
		}, want: []string{"pass:", "fail: DRAIN_LABELS_FILE=/etc/podinfo/labels, but no downwardAPI volume with metadata.labels is mounted there", "pass:"}},
		{name: "mounted elsewhere", guard: true, change: func(s *corev1.PodSpec) { s.Containers[0].VolumeMounts[0].MountPath = "/podinfo" },
			want: []string{"pass:", "fail: DRAIN_LABELS_FILE=/etc/podinfo/labels, but no downwardAPI volume", "pass:"}},
		{name: "no readiness probe", change: func(s *corev1.PodSpec) { s.Containers[0].ReadinessProbe = nil },
			want: []string{"pass:", "pass:", "fail: container echo has no readiness probe"}},
		{name: "readiness elsewhere", change: func(s *corev1.PodSpec) { s.Containers[0].ReadinessProbe.HTTPGet.Path = "/livez" },
			want: []string{"pass:", "pass:", "warn: container echo's readiness probe is not an httpGet of /health"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := goodPodSpec()
			if tc.change != nil {
				tc.change(&spec)
			}
			w := &Workload{Namespace: "ns", Deployment: "echo", deploy: &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: spec}}}}
			if tc.guard {
				w.ScaleGuard = "echo"
			}
			d := &doctor{o: NewDoctorOptions(nil, testStreams())}
			d.checkDrainSafety(w)
			if len(d.checks) != len(tc.want) {
				t.Fatalf("%d checks, want %d: %+v", len(d.checks), len(tc.want), d.checks)
			}
			for i, want := range tc.want {
				status, frag, _ := strings.Cut(want, ":")
				frag = strings.TrimSpace(frag)
				got := d.checks[i]
				if got.Status != status || !strings.Contains(got.Evidence, frag) {
					t.Errorf("check %d: %s: %s; want %s with %q", i, got.Status, got.Evidence, status, frag)
				}
				if got.Status != Pass && got.Fix == "" {
					t.Errorf("check %d: %s without a fix", i, got.Status)
				}
			}
		})
	}
}

func TestHAProxyDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"30000": 30 * time.Second, "1h": time.Hour, "90s": 90 * time.Second, "5m": 5 * time.Minute, "250ms": 250 * time.Millisecond} {
		if got, err := haproxyDuration(in); err != nil || got != want {
			t.Errorf("haproxyDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "h", "1y", "1.5s", "-1s"} {
		if got, err := haproxyDuration(bad); err == nil {
			t.Errorf("haproxyDuration(%q) = %v, want an error", bad, got)
		}
	}
}

func TestDoctorOptionsValidate(t *testing.T) {
	o := NewDoctorOptions(nil, testStreams())
	o.Output, o.PingMargin, o.Probe, o.ProbeDuration = "yaml", 0.5, "http://example.test/ws", 0
	msg := joinErrors(o.Validate([]string{"extra"})).Error()
	for _, want := range []string{`--output "yaml"`, "--ping-margin 0.5", `--probe "http://example.test/ws": want a ws:// or wss://`, "--probe-duration 0s", "doctor takes no arguments"} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors %q lack %q", msg, want)
		}
	}
	if errs := NewDoctorOptions(nil, testStreams()).Validate(nil); len(errs) != 0 {
		t.Errorf("defaults: %v", errs)
	}
}

// TestProbe holds idle WebSockets against servers that keep them, close them with a code, and
// drop them without a close frame.
func TestProbe(t *testing.T) {
	up := websocket.Upgrader{}
	serve := func(after func(*websocket.Conn)) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			after(c)
		}))
	}
	keep := serve(func(c *websocket.Conn) {
		for i := 0; i < 3; i++ {
			_ = c.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second))
			time.Sleep(20 * time.Millisecond)
		}
		_, _, _ = c.ReadMessage()
	})
	defer keep.Close()
	closeCode := serve(func(c *websocket.Conn) {
		time.Sleep(50 * time.Millisecond)
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "app says bye"), time.Now().Add(time.Second))
		_, _, _ = c.ReadMessage()
	})
	defer closeCode.Close()
	drop := serve(func(c *websocket.Conn) {
		time.Sleep(50 * time.Millisecond)
		_ = c.NetConn().Close()
	})
	defer drop.Close()
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) }))
	defer refuse.Close()

	ws := func(s *httptest.Server) string { return "ws" + strings.TrimPrefix(s.URL, "http") }
	for _, tc := range []struct {
		name, url, status, evidence string
	}{
		{"kept", ws(keep), Pass, "held idle for 300ms (3 server pings answered)"},
		{"closed with a code", ws(closeCode), Fail, `close code 4000 ("app says bye")`},
		{"dropped", ws(drop), Fail, "without a close frame"},
		{"refused", ws(refuse), Fail, "HTTP 403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := probe(context.Background(), tc.url, 300*time.Millisecond)
			if got.Status != tc.status || !strings.Contains(got.Evidence, tc.evidence) {
				t.Errorf("probe: %s: %s; want %s with %q", got.Status, got.Evidence, tc.status, tc.evidence)
			}
		})
	}
}

func TestLoadBalancerIdleTimeouts(t *testing.T) {
	const aws, azure = "service.beta.kubernetes.io/aws-load-balancer-connection-idle-timeout", "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout"
	for _, tc := range []struct {
		key, value string
		want       string // status: evidence, then the fix after " | "
	}{
		{aws, "30", "fail: " + aws + "=30: the load balancer drops connections idle 30s, below the ping interval 20s × 2 | raise " + aws + " to at least 40 (seconds), or ping more often"},
		{aws, "40", "pass: " + aws + "=40 ≥ ping interval 20s × 2 | "},
		{azure, "1", "pass: " + azure + "=1 ≥ ping interval 20s × 2 | "},
		{azure, "soon", "fail: " + azure + `="soon" is not a number | set ` + azure + " to a whole number of at least 1 (minutes)"},
		{"example.com/unrelated", "1", ""},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			spec := goodPodSpec() // pings every 20 s
			svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
			svc.Name, svc.Namespace, svc.Annotations = "echo", "ns", map[string]string{tc.key: tc.value}
			d := &doctor{o: NewDoctorOptions(nil, testStreams())}
			d.checkLoadBalancers(&exposure{services: map[string]*corev1.Service{"echo": svc}, cfg: readServerConfig(&spec)})
			var got string
			for _, c := range d.checks {
				got = c.Status + ": " + c.Evidence + " | " + c.Fix
			}
			if got != tc.want {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}
