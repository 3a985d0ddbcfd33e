package wsecho

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	clocktesting "k8s.io/utils/clock/testing"
)

type fakeVictim struct {
	closed atomic.Bool
}

func (v *fakeVictim) closeGoingAway() { v.closed.Store(true) }

func countClosed(vs []*fakeVictim) int {
	n := 0
	for _, v := range vs {
		if v.closed.Load() {
			n++
		}
	}
	return n
}

// waitForWaiter blocks until the goroutine under test waits on the fake clock.
func waitForWaiter(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("drain loop never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDrainSpreadsClosesOverTheWindow(t *testing.T) {
	tests := []struct {
		name       string
		victims    int
		window     time.Duration
		closeGrace time.Duration
		// after each step of the clock, how many victims must have their close frame
		steps []time.Duration
		want  []int
	}{
		{
			// spread = 10s - 1s = 9s: one close every 0.9s, the first at once.
			name: "ten connections over ten seconds", victims: 10, window: 10 * time.Second, closeGrace: time.Second,
			steps: []time.Duration{0, 899 * time.Millisecond, time.Millisecond, 900 * time.Millisecond, 3600 * time.Millisecond, 3600 * time.Millisecond},
			want:  []int{1, 1, 2, 3, 7, 10},
		},
		{
			// The close grace takes at most a fifth of a short window: spread = 1s - 0.2s.
			name: "grace longer than a fifth of the window", victims: 4, window: time.Second, closeGrace: 2 * time.Second,
			steps: []time.Duration{0, 200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond},
			want:  []int{1, 2, 3, 4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
			victims := make([]*fakeVictim, tt.victims)
			closers := make([]goingAwayCloser, tt.victims)
			for i := range victims {
				victims[i] = &fakeVictim{}
				closers[i] = victims[i]
			}
			var cut atomic.Bool
			done := make(chan struct{})
			d := drainer{clock: clk, window: tt.window, closeGrace: tt.closeGrace}
			go func() {
				defer close(done)
				d.run(closers, make(chan struct{}), func() { cut.Store(true) })
			}()
			for i, step := range tt.steps {
				waitForWaiter(t, clk)
				clk.Step(step)
				want := tt.want[i]
				// The loop acts on the step asynchronously; wait until it waits again or is done.
				deadline := time.Now().Add(10 * time.Second)
				for countClosed(victims) < want && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if got := countClosed(victims); got != want {
					t.Fatalf("after step %d (%v): %d closed, want %d", i, step, got, want)
				}
			}
			if cut.Load() {
				t.Fatal("remaining connections were cut before the window ended")
			}
			// Nobody answers: at the end of the window the rest is cut.
			waitForWaiter(t, clk)
			clk.Step(tt.window)
			<-done
			if !cut.Load() {
				t.Error("connections left at the end of the window were not cut")
			}
		})
	}
}

func TestDrainEndsEarlyWhenEveryoneLeft(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	idle := make(chan struct{})
	v := &fakeVictim{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		drainer{clock: clk, window: time.Minute, closeGrace: time.Second}.run([]goingAwayCloser{v}, idle, func() {
			t.Error("cut called although every connection had left")
		})
	}()
	waitForWaiter(t, clk)
	close(idle)
	<-done
	if !v.closed.Load() {
		t.Error("the connection got no close frame")
	}
}

func TestParseDownwardAPIFile(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr bool
	}{
		{name: "kubelet format", in: "kubernetes.io/config.seen=\"2026-01-01T00:00:00Z\"\nwsscale.io/drain=\"true\"\n",
			want: map[string]string{"kubernetes.io/config.seen": "2026-01-01T00:00:00Z", DrainAnnotation: "true"}},
		{name: "escaped value", in: `note="line1\nline \"2\""`, want: map[string]string{"note": "line1\nline \"2\""}},
		{name: "empty file", in: "", want: map[string]string{}},
		{name: "no equals sign", in: "garbage\n", wantErr: true},
		{name: "unquoted value", in: "wsscale.io/drain=true\n", wantErr: true},
		{name: "empty key", in: "=\"x\"\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDownwardAPIFile([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

// writeAnnotations updates a downward-API volume the way the kubelet does: a new timestamped
// directory, then an atomic rename of the ..data symlink.
func writeAnnotations(t *testing.T, dir, content string) {
	t.Helper()
	ts := filepath.Join(dir, "..2026_"+time.Now().Format("150405.000000000"))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "annotations"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "annotations")); os.IsNotExist(err) {
		if err := os.Symlink("..data/annotations", filepath.Join(dir, "annotations")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWatchAnnotations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "annotations")
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	drained := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go WatchAnnotations(ctx, path, time.Second, clk, func() { close(drained) })

	poll := func() {
		waitForWaiter(t, clk)
		clk.Step(time.Second)
		waitForWaiter(t, clk)
	}
	assertNotDrained := func(when string) {
		select {
		case <-drained:
			t.Fatalf("drained %s", when)
		default:
		}
	}
	// The volume is not there yet, then it is, without the annotation, then with a bad line.
	poll()
	assertNotDrained("with no file")
	writeAnnotations(t, dir, "app=\"echo\"\n")
	poll()
	assertNotDrained("without the annotation")
	writeAnnotations(t, dir, "wsscale.io/drain=\"false\"\n")
	poll()
	assertNotDrained("with drain=false")
	writeAnnotations(t, dir, "this is not the downward API format\n")
	poll()
	assertNotDrained("with a malformed file")
	writeAnnotations(t, dir, "app=\"echo\"\nwsscale.io/drain=\"true\"\n")
	waitForWaiter(t, clk)
	clk.Step(time.Second)
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("drain annotation not noticed")
	}
}

func TestDrainClosesEveryConnectionWith1001(t *testing.T) {
	cfg := testConfig()
	cfg.DrainTimeout = time.Second
	cfg.CloseGrace = 200 * time.Millisecond
	ts := startServer(t, cfg)
	const clients = 10
	codes := make(chan int, clients)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		c := dial(t, ts)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					if ce, ok := err.(*websocket.CloseError); ok {
						codes <- ce.Code
					} else {
						codes <- -1
					}
					return
				}
			}
		}()
	}
	eventually(t, 5*time.Second, func() bool { return ts.Active() == clients }, "clients not connected")
	ts.Drain()

	// Readiness fails and new upgrades are refused while draining.
	resp, err := http.Get("http://" + ts.addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/health while draining = %d, want 503", resp.StatusCode)
	}
	_, resp, err = websocket.DefaultDialer.Dial(ts.url(), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("upgrade while draining: %v, %v; want 503 with Retry-After", resp, err)
	}
	if got := counterValue(t, ts.Server, "websocket_draining", "", ""); got != 1 {
		t.Errorf("websocket_draining = %v, want 1", got)
	}

	wg.Wait()
	close(codes)
	for code := range codes {
		if code != websocket.CloseGoingAway {
			t.Errorf("client got close code %d, want 1001", code)
		}
	}
	select {
	case <-ts.Drained():
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not finish")
	}
	if ts.Active() != 0 {
		t.Errorf("%d connections left after the drain", ts.Active())
	}
}

// stuckVictim is a connection whose close frame cannot be written: its closeGoingAway blocks until
// released, as gorilla's WriteControl does while a write to a client that stopped reading holds the
// connection's write lock.
type stuckVictim struct {
	fakeVictim
	release <-chan struct{}
}

func (v *stuckVictim) closeGoingAway() {
	v.closed.Store(true)
	<-v.release
}

func TestDrainScheduleIsNotHeldUpByStuckCloses(t *testing.T) {
	tests := []struct {
		name  string
		stuck map[int]bool // indexes of the victims whose close blocks
	}{
		{name: "first connection stuck", stuck: map[int]bool{0: true}},
		{name: "every other connection stuck", stuck: map[int]bool{0: true, 2: true, 4: true, 6: true, 8: true}},
		{name: "all stuck", stuck: map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 6: true, 7: true, 8: true, 9: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
			release := make(chan struct{})
			defer close(release)
			var all []*fakeVictim
			var closers []goingAwayCloser
			for i := 0; i < 10; i++ {
				if tt.stuck[i] {
					v := &stuckVictim{release: release}
					all = append(all, &v.fakeVictim)
					closers = append(closers, v)
					continue
				}
				v := &fakeVictim{}
				all = append(all, v)
				closers = append(closers, v)
			}
			var cut atomic.Bool
			done := make(chan struct{})
			// spread = 10s - 1s: one close every 0.9s.
			d := drainer{clock: clk, window: 10 * time.Second, closeGrace: time.Second}
			go func() {
				defer close(done)
				d.run(closers, make(chan struct{}), func() { cut.Store(true) })
			}()
			for want := 1; want <= 10; want++ {
				deadline := time.Now().Add(10 * time.Second)
				for countClosed(all) < want && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if got := countClosed(all); got != want {
					t.Fatalf("at %v: %d closes started, want %d: a close that cannot be written held up the schedule",
						clk.Since(time.Unix(1_700_000_000, 0)), got, want)
				}
				waitForWaiter(t, clk)
				clk.Step(900 * time.Millisecond)
			}
			// The window ends on time although some closes never completed.
			waitForWaiter(t, clk)
			clk.Step(time.Second)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the drain did not end at the end of its window")
			}
			if !cut.Load() {
				t.Error("connections left at the end of the window were not cut")
			}
		})
	}
}

// floodUntilStalled opens a connection whose receive buffer is tiny and never read, and sends large
// messages until its own writes stall: by then the server's echo of one of them is blocked in a
// write to this client and holds the connection's write lock.
func floodUntilStalled(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	rc := &rawConn{Conn: nc, br: bufio.NewReader(nc)}
	if err := rc.handshake(addr, ""); err != nil {
		t.Fatal(err)
	}
	msg := frame(true, 0, websocket.BinaryMessage, true, make([]byte, 60<<10))
	for i := 0; i < 10_000; i++ {
		_ = nc.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := nc.Write(msg); err != nil {
			if isTimeout(err) {
				return nc
			}
			t.Fatalf("flood: %v", err)
		}
	}
	t.Fatal("the server kept reading from a client that never reads")
	return nil
}

// TestSlowClientsDoNotStallTheDrain drains 500 clients that read and 50 that stopped reading while
// the server was writing to them. The close frames of the readers must go out on the drain's
// schedule, and the drain must end inside its window, however long the write timeout.
func TestSlowClientsDoNotStallTheDrain(t *testing.T) {
	const readers, slow = 500, 50
	cfg := testConfig()
	cfg.MaxConnections = readers + slow
	cfg.MaxMessageBytes = 64 << 10
	cfg.WriteTimeout = 8 * time.Second // longer than the window: a blocking close would stall it
	cfg.DrainTimeout = 3 * time.Second
	cfg.CloseGrace = 500 * time.Millisecond
	// A machine shared with other work delays goroutines by a few hundred milliseconds at worst;
	// a stalled schedule is late by seconds.
	const tolerance = 600 * time.Millisecond
	ts := startServer(t, cfg)

	type result struct {
		code int
		at   time.Time
	}
	results := make(chan result, readers)
	for i := 0; i < readers; i++ {
		c := dial(t, ts)
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					code := -1
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						code = ce.Code
					}
					results <- result{code: code, at: time.Now()}
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for i := 0; i < slow; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			floodUntilStalled(t, ts.addr)
		}()
	}
	wg.Wait()
	eventually(t, 10*time.Second, func() bool { return ts.Active() == readers+slow }, "clients not connected")

	start := time.Now()
	ts.Drain()
	var got []time.Duration
	for i := 0; i < readers; i++ {
		select {
		case r := <-results:
			if r.code != websocket.CloseGoingAway {
				t.Errorf("a reading client got close code %d at %v, want 1001", r.code, r.at.Sub(start))
			}
			got = append(got, r.at.Sub(start))
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d reading clients were closed", i, readers)
		}
	}
	select {
	case <-ts.Drained():
	case <-time.After(30 * time.Second):
		t.Fatal("the drain did not finish")
	}
	if took := time.Since(start); took > cfg.DrainTimeout+tolerance {
		t.Errorf("the drain took %v, want it inside its window of %v", took, cfg.DrainTimeout)
	}

	// The victims are closed in an arbitrary order, so the j-th reader to be closed holds one of
	// the slots j .. j+slow of the plan.
	slices.Sort(got)
	n := readers + slow
	spread := drainer{window: cfg.DrainTimeout, closeGrace: cfg.CloseGrace}.spread()
	late := 0
	var worst time.Duration
	for j, at := range got {
		earliest, latest := closeAt(j, n, spread), closeAt(j+slow, n, spread)
		if at < earliest-tolerance || at > latest+tolerance {
			late++
			worst = max(worst, at-latest)
		}
	}
	if late > 0 {
		t.Errorf("%d of %d close frames off the plan by more than %v (worst %v late); 10th percentile at %v, plan %v",
			late, readers, tolerance, worst, got[readers/10], closeAt(n/10, n, spread))
	}
	eventually(t, 10*time.Second, func() bool { return ts.Active() == 0 }, "connections left after the drain")
	// A client whose close frame still fitted in its socket buffer ended without a write timeout.
	if got := errorCount(t, ts.Server, ReasonWriteTimeout); got < 1 || got > slow {
		t.Errorf("write_timeout errors = %v, want between 1 and %d: the clients that did not read", got, slow)
	}
}
