package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

var echoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsecho-bin-")
	if err != nil {
		panic(err)
	}
	echoBin = filepath.Join(dir, "wsecho")
	build := exec.Command("go", "build", "-o", echoBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build echo:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type process struct {
	cmd     *exec.Cmd
	port    int
	mport   int
	out     *bytes.Buffer
	exited  chan struct{}
	exitErr error
}

func startEcho(t *testing.T, env ...string) *process {
	t.Helper()
	p := &process{port: freePort(t), mport: freePort(t), out: &bytes.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(echoBin, "--bind-address=127.0.0.1")
	p.cmd.Env = append(os.Environ(), append([]string{
		"PORT=" + strconv.Itoa(p.port), "METRICS_PORT=" + strconv.Itoa(p.mport), "SHUTDOWN_DELAY=0",
	}, env...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("echo output:\n%s", p.out)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", p.port))
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo never became ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closeRecord is what a client saw when its connection ended.
type closeRecord struct {
	code int
	at   time.Time
}

// connectClients opens n clients and returns a channel that yields how each one ended.
func connectClients(t *testing.T, port, n int) <-chan closeRecord {
	t.Helper()
	out := make(chan closeRecord, n)
	for i := 0; i < n; i++ {
		c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws", port), nil)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer c.Close()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					var ce *websocket.CloseError
					code := -1
					if errors.As(err, &ce) {
						code = ce.Code
					}
					out <- closeRecord{code: code, at: time.Now()}
					return
				}
			}
		}()
	}
	return out
}

// expectGracefulDrain checks that every client got 1001, that the closes were spread out rather than
// sent at once, that readiness failed during the drain, and that the process exited 0.
func expectGracefulDrain(t *testing.T, p *process, closes <-chan closeRecord, n int, spread time.Duration) {
	t.Helper()
	expectClosesSpread(t, p, closes, n, spread)
	expectExit0(t, p)
}

func expectExit0(t *testing.T, p *process) {
	t.Helper()
	select {
	case <-p.exited:
		if p.exitErr != nil {
			t.Errorf("echo exited with %v, want status 0", p.exitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("echo did not exit after the drain")
	}
}

// expectClosesSpread checks that every client got 1001, that the closes were spread out rather than
// sent at once, and that readiness failed during the drain.
func expectClosesSpread(t *testing.T, p *process, closes <-chan closeRecord, n int, spread time.Duration) {
	t.Helper()
	var first, last time.Time
	readinessChecked := false
	for i := 0; i < n; i++ {
		select {
		case r := <-closes:
			if r.code != websocket.CloseGoingAway {
				t.Errorf("client got close code %d, want 1001", r.code)
			}
			if first.IsZero() {
				first = r.at
				// Readiness fails while the drain is in progress.
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", p.port))
				if err == nil {
					_ = resp.Body.Close()
					readinessChecked = true
					if resp.StatusCode != http.StatusServiceUnavailable {
						t.Errorf("/health during the drain = %d, want 503", resp.StatusCode)
					}
				}
			}
			last = r.at
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d clients were closed", i, n)
		}
	}
	if !readinessChecked {
		t.Error("could not check readiness during the drain")
	}
	// The closes are scheduled evenly over the spread; a stalled machine can only delay them, so a
	// quarter of the spread is a safe lower bound for "not all at once".
	if got := last.Sub(first); got < spread/4 {
		t.Errorf("closes spanned %v, want them spread over about %v", got, spread)
	}
}

// health returns the status of /health, or 0 if the server did not answer.
func health(p *process) int {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", p.port))
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// expectState waits until /health answers want and checks that an upgrade gets wantUpgrade (101 or
// 503) and that websocket_draining is wantDraining.
func expectState(t *testing.T, p *process, want, wantUpgrade int, wantDraining string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for health(p) != want {
		select {
		case <-p.exited:
			t.Fatalf("echo exited (%v) while /health should answer %d", p.exitErr, want)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health = %d, want %d", health(p), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws", p.port), nil)
	switch {
	case wantUpgrade == http.StatusSwitchingProtocols && err != nil:
		t.Errorf("upgrade failed: %v, want it accepted", err)
	case wantUpgrade != http.StatusSwitchingProtocols && (err == nil || resp == nil || resp.StatusCode != wantUpgrade):
		t.Errorf("upgrade: %v (%v), want HTTP %d", resp, err, wantUpgrade)
	}
	if c != nil {
		_ = c.Close()
	}
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", p.mport))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if want := "\nwebsocket_draining " + wantDraining + "\n"; !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
	}
}

// expectRunning checks that the process has not exited.
func expectRunning(t *testing.T, p *process) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("echo exited (%v); a drain by label must keep it running", p.exitErr)
	default:
	}
}

// TestSIGTERMWaitsTheShutdownDelay: readiness fails at once on SIGTERM, upgrades are still served
// during the shutdown delay, and the drain follows.
func TestSIGTERMWaitsTheShutdownDelay(t *testing.T) {
	const clients = 10
	p := startEcho(t, "DRAIN_TIMEOUT=1s", "SHUTDOWN_DELAY=3s")
	closes := connectClients(t, p.port, clients)
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectState(t, p, http.StatusServiceUnavailable, http.StatusSwitchingProtocols, "0")
	late := connectClients(t, p.port, 1)
	if waited := time.Since(sent); waited > 2*time.Second {
		t.Fatalf("checks took %v, too long to tell the delay apart", waited)
	}
	expectClosesSpread(t, p, closes, clients, 800*time.Millisecond)
	if r := <-late; r.code != websocket.CloseGoingAway {
		t.Errorf("client accepted during the delay got close code %d, want 1001", r.code)
	}
	if waited := time.Since(sent); waited < 3*time.Second {
		t.Errorf("drain done %v after SIGTERM, before the 3s shutdown delay", waited)
	}
	expectExit0(t, p)
}

func TestDrainOnSIGTERM(t *testing.T) {
	const clients = 20
	p := startEcho(t, "DRAIN_TIMEOUT=2s")
	closes := connectClients(t, p.port, clients)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// 2s window less the close grace (at most a fifth of the window).
	expectGracefulDrain(t, p, closes, clients, 1600*time.Millisecond)
}

// TestDrainFollowsTheLabel drains by label, serves again when the label goes, drains again, and
// exits only on SIGTERM. The annotations file has the same meaning.
func TestDrainFollowsTheLabel(t *testing.T) {
	for _, file := range []struct{ env, name string }{{"DRAIN_LABELS_FILE", "labels"}, {"DRAIN_ANNOTATIONS_FILE", "annotations"}} {
		t.Run(file.name, func(t *testing.T) {
			const clients = 20
			dir := t.TempDir()
			writeVolume(t, dir, file.name, "app=\"echo\"\n")
			p := startEcho(t, "DRAIN_TIMEOUT=2s", file.env+"="+filepath.Join(dir, file.name))
			closes := connectClients(t, p.port, clients)

			writeVolume(t, dir, file.name, "app=\"echo\"\nwsscale.io/drain=\"true\"\n")
			expectClosesSpread(t, p, closes, clients, 1600*time.Millisecond)
			// Drained, and still up: unready, refusing upgrades.
			time.Sleep(500 * time.Millisecond)
			expectRunning(t, p)
			expectState(t, p, http.StatusServiceUnavailable, http.StatusServiceUnavailable, "1")

			// The label goes: the server serves again.
			writeVolume(t, dir, file.name, "app=\"echo\"\n")
			expectState(t, p, http.StatusOK, http.StatusSwitchingProtocols, "0")

			// Marked again: the new clients are drained in turn.
			closes = connectClients(t, p.port, clients)
			writeVolume(t, dir, file.name, "wsscale.io/drain=\"true\"\n")
			expectClosesSpread(t, p, closes, clients, 1600*time.Millisecond)
			expectRunning(t, p)
			expectState(t, p, http.StatusServiceUnavailable, http.StatusServiceUnavailable, "1")

			// Only SIGTERM ends it.
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			expectExit0(t, p)
		})
	}
}

// TestSIGTERMDuringLabelDrain: SIGTERM in the middle of a drain by label keeps the drain's schedule
// and exits 0 once it is done; removing the label then changes nothing.
func TestSIGTERMDuringLabelDrain(t *testing.T) {
	const clients = 20
	dir := t.TempDir()
	writeVolume(t, dir, "labels", "app=\"echo\"\n")
	p := startEcho(t, "DRAIN_TIMEOUT=3s", "DRAIN_LABELS_FILE="+filepath.Join(dir, "labels"))
	closes := connectClients(t, p.port, clients)
	writeVolume(t, dir, "labels", "wsscale.io/drain=\"true\"\n")
	select {
	case first := <-closes:
		if first.code != websocket.CloseGoingAway {
			t.Errorf("client got close code %d, want 1001", first.code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the label did not start a drain")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	writeVolume(t, dir, "labels", "app=\"echo\"\n")
	// 3s window less the close grace (at most a fifth): the rest of the 2.4s spread.
	expectClosesSpread(t, p, closes, clients-1, 1200*time.Millisecond)
	expectExit0(t, p)
}

// writeVolume updates a downward-API volume the way the kubelet does (atomic ..data symlink swap).
func writeVolume(t *testing.T, dir, name, content string) {
	t.Helper()
	ts, err := os.MkdirTemp(dir, "..ts_")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, name)
	if _, err := os.Lstat(link); os.IsNotExist(err) {
		if err := os.Symlink("..data/"+name, link); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInvalidConfigurationFailsAtStart(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		args []string
		want []string // every one must appear in the error output
	}{
		{name: "every bad variable is named at once",
			env:  []string{"PORT=abc", "MAX_CONNECTIONS=0", "PING_INTERVAL=-5", "DRAIN_TIMEOUT=soon", "MAX_MESSAGE_BYTES=1k"},
			want: []string{`PORT="abc"`, "MAX_CONNECTIONS", "PING_INTERVAL", `DRAIN_TIMEOUT="soon"`, `MAX_MESSAGE_BYTES="1k"`}},
		{name: "port out of range", env: []string{"PORT=70000"}, want: []string{"PORT (--port)", "70000"}},
		{name: "same port twice", env: []string{"PORT=8181", "METRICS_PORT=8181"}, want: []string{"PORT and METRICS_PORT must differ"}},
		{name: "bad origin", env: []string{"ALLOWED_ORIGINS=example.com"}, want: []string{"ALLOWED_ORIGINS", "example.com"}},
		{name: "negative drain timeout", env: []string{"DRAIN_TIMEOUT=-1s"}, want: []string{"DRAIN_TIMEOUT", "negative"}},
		{name: "bad flag value", args: []string{"--max-connections=lots"}, want: []string{"max-connections"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(echoBin, tt.args...)
			cmd.Env = append(os.Environ(), tt.env...)
			out, err := cmd.CombinedOutput()
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) || exitErr.ExitCode() == 0 {
				t.Fatalf("echo started with a bad configuration (err %v):\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output does not mention %q:\n%s", w, out)
				}
			}
		})
	}
}

// The load client's exit status says whether the target works: every connection opened and echoed
// against a live server; non-zero, naming what failed, against a port nobody listens on.
func TestLoadClientExpectations(t *testing.T) {
	p := startEcho(t)
	args := []string{"load", "-c", "5", "--rate", "0", "--message-interval", "50ms", "--messages", "1", "-d", "500ms", "-q",
		"--min-connected", "5", "--expect-echo"}
	out, err := exec.Command(echoBin, append(args, "--url", fmt.Sprintf("ws://127.0.0.1:%d/ws", p.port))...).CombinedOutput()
	if err != nil {
		t.Fatalf("load against a live server: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "echoed connections   5 of 5 opened") {
		t.Errorf("summary lacks the echoed connections:\n%s", out)
	}
	out, err = exec.Command(echoBin, append(args, "--url", fmt.Sprintf("ws://127.0.0.1:%d/ws", freePort(t)))...).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("load against a closed port: %v, want a non-zero exit\n%s", err, out)
	}
	for _, want := range []string{"0 of 5 connections opened, want at least 5", "no connection opened", "refused:5"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestLoadClientAgainstServer(t *testing.T) {
	p := startEcho(t, "MAX_CONNECTIONS=50")
	out, err := exec.Command(echoBin, "load", "--url", fmt.Sprintf("ws://127.0.0.1:%d/ws", p.port),
		"-c", "60", "--rate", "0", "--message-interval", "20ms", "-d", "1s", "-q", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("load: %v\n%s", err, out)
	}
	for _, want := range []string{`"opened": 50`, `"http_503": 10`, `"abnormalDrops": 0`, `"closedByClient": 50`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("load summary lacks %s:\n%s", want, out)
		}
	}
}
