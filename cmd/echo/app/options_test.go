package app

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/wsscale/wsscale/pkg/wsload"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func TestServerOptionsFromEnvironment(t *testing.T) {
	o := NewServerOptions(env(map[string]string{
		"PORT": "9000", "METRICS_PORT": "9001", "MAX_CONNECTIONS": "50000", "PING_INTERVAL": "15000",
		"DRAIN_TIMEOUT": "2m", "ALLOWED_ORIGINS": "https://a.example, https://*.b.example",
		"MAX_MESSAGE_BYTES": "1024", "DRAIN_ANNOTATIONS_FILE": "/etc/podinfo/annotations", "DRAIN_LABELS_FILE": "/etc/podinfo/labels", "SHUTDOWN_DELAY": "7s",
	}))
	if errs := o.Validate(); len(errs) > 0 {
		t.Fatalf("Validate: %v", errs)
	}
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	if o.Port != 9000 || o.MetricsPort != 9001 || cfg.MaxConnections != 50000 || cfg.PingInterval != 15*time.Second ||
		cfg.DrainTimeout != 2*time.Minute || cfg.MaxMessageBytes != 1024 || cfg.ShutdownDelay != 7*time.Second || o.DrainAnnotationsFile != "/etc/podinfo/annotations" ||
		!slices.Equal(o.DrainFiles(), []string{"/etc/podinfo/labels", "/etc/podinfo/annotations"}) {
		t.Errorf("environment not applied: %+v / %+v", o, cfg)
	}
	if cfg.ReadTimeout != 30*time.Second {
		t.Errorf("read timeout = %v, want twice the ping interval", cfg.ReadTimeout)
	}
}

func TestServerOptionsDefaults(t *testing.T) {
	o := NewServerOptions(env(nil))
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	if o.Port != 8080 || o.MetricsPort != 9090 || cfg.MaxConnections != 10000 || cfg.PingInterval != 30*time.Second ||
		cfg.DrainTimeout != 30*time.Second || cfg.MaxMessageBytes != 65536 || cfg.ShutdownDelay != 5*time.Second {
		t.Errorf("defaults differ from the documented ones: %+v", cfg)
	}
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	o := NewServerOptions(env(map[string]string{"PORT": "9000"}))
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse([]string{"--port=7000"}); err != nil {
		t.Fatal(err)
	}
	if o.Port != 7000 {
		t.Errorf("port = %d, want the flag's 7000", o.Port)
	}
}

func TestServerOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		want   []string // each must appear in one error
		errors int      // every problem is reported at once
	}{
		{name: "not numbers", env: map[string]string{"PORT": "http", "MAX_CONNECTIONS": "many", "PING_INTERVAL": "30s", "MAX_MESSAGE_BYTES": "64KiB"},
			want: []string{`PORT="http"`, `MAX_CONNECTIONS="many"`, `PING_INTERVAL="30s"`, `MAX_MESSAGE_BYTES="64KiB"`}, errors: 4},
		{name: "not a duration", env: map[string]string{"DRAIN_TIMEOUT": "30"}, want: []string{`DRAIN_TIMEOUT="30"`}, errors: 1},
		{name: "negative shutdown delay", env: map[string]string{"SHUTDOWN_DELAY": "-1s"}, want: []string{"SHUTDOWN_DELAY (--shutdown-delay)"}, errors: 1},
		{name: "out of range", env: map[string]string{"PORT": "0", "METRICS_PORT": "65536", "MAX_CONNECTIONS": "-1", "PING_INTERVAL": "0", "MAX_MESSAGE_BYTES": "0", "DRAIN_TIMEOUT": "-5s"},
			want: []string{"PORT (--port)", "METRICS_PORT (--metrics-port)", "MAX_CONNECTIONS", "PING_INTERVAL", "MAX_MESSAGE_BYTES", "DRAIN_TIMEOUT"}, errors: 6},
		{name: "same ports", env: map[string]string{"PORT": "8000", "METRICS_PORT": "8000"}, want: []string{"must differ"}, errors: 1},
		{name: "bad origins", env: map[string]string{"ALLOWED_ORIGINS": "https://ok.example,not-an-origin"}, want: []string{"ALLOWED_ORIGINS", "not-an-origin"}, errors: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := NewServerOptions(env(tt.env)).Validate()
			var all []string
			for _, e := range errs {
				all = append(all, e.Error())
			}
			joined := strings.Join(all, "\n")
			for _, w := range tt.want {
				if !strings.Contains(joined, w) {
					t.Errorf("no error mentions %q; got:\n%s", w, joined)
				}
			}
			if len(errs) != tt.errors {
				t.Errorf("got %d errors, want %d:\n%s", len(errs), tt.errors, joined)
			}
		})
	}
}

func TestLoadOptions(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantErr    string
		wantSource string
	}{
		{name: "loopback target spreads sources", args: []string{"--url=ws://127.0.0.1:8080/ws"}, wantSource: "127.0.0.0/8"},
		{name: "remote target does not", args: []string{"--url=ws://198.18.1.5:8080/ws"}, wantSource: "invalid Prefix"},
		{name: "explicit range", args: []string{"--url=ws://127.0.0.1:1/ws", "--source-range=127.5.0.0/16"}, wantSource: "127.5.0.0/16"},
		{name: "bad url", args: []string{"--url=http://x/"}, wantErr: "url"},
		{name: "bad output", args: []string{"--output=yaml"}, wantErr: "--output"},
		{name: "bad range", args: []string{"--source-range=10.0.0.0"}, wantErr: "--source-range"},
		{name: "min connected above connections", args: []string{"-c=5", "--min-connected=6"}, wantErr: "--min-connected"},
		{name: "negative min connected", args: []string{"--min-connected=-1"}, wantErr: "--min-connected"},
		{name: "echo expected but nothing sent", args: []string{"--expect-echo"}, wantErr: "--expect-echo"},
		{name: "echo expected with messages", args: []string{"--url=ws://198.18.1.5:8080/ws", "--expect-echo", "--message-interval=1s", "--min-connected=100"}, wantSource: "invalid Prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewLoadOptions()
			fs := pflag.NewFlagSet("load", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := o.Config()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.SourcePrefix.String(); got != tt.wantSource {
				t.Errorf("source prefix = %s, want %s", got, tt.wantSource)
			}
		})
	}
}

func TestLoadCheck(t *testing.T) {
	good := wsload.Result{Target: 5, Opened: 5, Sent: 5, Received: 5, Echoed: 5}
	tests := []struct {
		name   string
		args   []string
		result func(r *wsload.Result)
		want   []string // substrings of the error; none: the run passes
	}{
		{name: "no expectations, nothing opened", result: func(r *wsload.Result) { *r = wsload.Result{Target: 5} }},
		{name: "every expectation met", args: []string{"--min-connected=5", "--expect-echo"}},
		{name: "fewer connected than required", args: []string{"--min-connected=5"},
			result: func(r *wsload.Result) { r.Opened, r.Echoed, r.DialErrors = 3, 3, map[string]int64{"refused": 2} },
			want:   []string{"3 of 5 connections opened, want at least 5", "refused:2"}},
		{name: "no connection at all", args: []string{"--expect-echo", "--min-connected=1"},
			result: func(r *wsload.Result) { *r = wsload.Result{Target: 5, DialErrors: map[string]int64{"timeout": 5}} },
			want:   []string{"0 of 5 connections opened", "no connection opened", "timeout:5"}},
		{name: "a connection without echo", args: []string{"--expect-echo"},
			result: func(r *wsload.Result) { r.Echoed = 4 },
			want:   []string{"4 of 5 opened connections got a correct echo"}},
		{name: "wrong echoes", args: []string{"--expect-echo"},
			result: func(r *wsload.Result) { r.Echoed, r.Mismatched = 0, 5 },
			want:   []string{"0 of 5 opened connections", "5 messages came back different"}},
		{name: "echo not expected, none came", args: []string{"--min-connected=5"},
			result: func(r *wsload.Result) { r.Echoed, r.Received = 0, 0 }},
		{name: "abnormal drops over the ratio", args: []string{"--max-drop-ratio=0.1"},
			result: func(r *wsload.Result) { r.AbnormalDrops = 1 },
			want:   []string{"1 of 5 connections dropped abnormally"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewLoadOptions()
			fs := pflag.NewFlagSet("load", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(append([]string{"-c=5", "--message-interval=1s"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			if _, err := o.Config(); err != nil {
				t.Fatal(err)
			}
			res := good
			if tt.result != nil {
				tt.result(&res)
			}
			err := o.Check(&res)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Check: %v, want the run to pass", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check passed; want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check: %v; want it to contain %q", err, w)
				}
			}
		})
	}
}
