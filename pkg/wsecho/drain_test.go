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
				d.run(closers, make(chan struct{}), make(chan struct{}), func() { cut.Store(true) })
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
		drainer{clock: clk, window: time.Minute, closeGrace: time.Second}.run([]goingAwayCloser{v}, idle, make(chan struct{}), func() {
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

// writeDownwardAPI updates a downward-API volume the way the kubelet does: a new timestamped
// directory holding every file, then an atomic rename of the ..data symlink.
func writeDownwardAPI(t *testing.T, dir, name, content string) {
	t.Helper()
	ts, err := os.MkdirTemp(dir, "..2026_")
	if err != nil {
		t.Fatal(err)
	}
	// The other files of the volume keep their content.
	for _, other := range []string{"labels", "annotations"} {
		if old, err := os.ReadFile(filepath.Join(dir, other)); err == nil && other != name {
			if err := os.WriteFile(filepath.Join(ts, other), old, 0o644); err != nil {
				t.Fatal(err)
			}
		}
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
	for _, f := range []string{"labels", "annotations"} {
		if _, err := os.Lstat(filepath.Join(dir, f)); os.IsNotExist(err) {
			if err := os.Symlink("..data/"+f, filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestDrainEndsWhenWithdrawn(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	victims := []*fakeVictim{{}, {}, {}, {}}
	closers := []goingAwayCloser{victims[0], victims[1], victims[2], victims[3]}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// spread = 4s - 0.8s: one close every 0.8s.
		drainer{clock: clk, window: 4 * time.Second, closeGrace: time.Second}.run(closers, make(chan struct{}), stop, func() {
			t.Error("connections cut after the drain was withdrawn")
		})
	}()
	waitForWaiter(t, clk)
	clk.Step(800 * time.Millisecond)
	eventually(t, 10*time.Second, func() bool { return countClosed(victims) == 2 }, "second close not sent")
	waitForWaiter(t, clk)
	close(stop)
	<-done
	clk.Step(time.Minute)
	if got := countClosed(victims); got != 2 {
		t.Errorf("%d connections closed, want the 2 closed before the drain was withdrawn", got)
	}
}

// drainStates collects what WatchDrainFiles reports.
type drainStates struct {
	mu  sync.Mutex
	got []bool
}

func (d *drainStates) set(drain bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, drain)
}

func (d *drainStates) snapshot() []bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.got)
}

func TestWatchDrainFiles(t *testing.T) {
	dir := t.TempDir()
	labels := filepath.Join(dir, "labels")
	annotations := filepath.Join(dir, "annotations")
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	var states drainStates
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		WatchDrainFiles(ctx, []string{labels, annotations}, time.Second, clk, states.set)
	}()
	defer func() { cancel(); <-stopped }()

	// Each step changes the volume, lets one poll happen, and says what must have been reported
	// since the start.
	steps := []struct {
		name  string
		file  string // "labels" or "annotations"; empty: no change
		body  string
		state []bool
	}{
		{name: "no file yet"},
		{name: "labels without the marker", file: "labels", body: "app=\"echo\"\n"},
		{name: "marker false", file: "labels", body: "wsscale.io/drain=\"false\"\n"},
		{name: "marker true", file: "labels", body: "app=\"echo\"\nwsscale.io/drain=\"true\"\n", state: []bool{true}},
		{name: "still true", state: []bool{true}},
		{name: "malformed file keeps the state", file: "labels", body: "not the downward API format\n", state: []bool{true}},
		{name: "label removed", file: "labels", body: "app=\"echo\"\n", state: []bool{true, false}},
		{name: "label again", file: "labels", body: "wsscale.io/drain=\"true\"\n", state: []bool{true, false, true}},
		{name: "removed again", file: "labels", body: "app=\"echo\"\n", state: []bool{true, false, true, false}},
		{name: "annotation alone", file: "annotations", body: "wsscale.io/drain=\"true\"\n", state: []bool{true, false, true, false, true}},
		{name: "label too: no change", file: "labels", body: "wsscale.io/drain=\"true\"\n", state: []bool{true, false, true, false, true}},
		{name: "annotation removed, label holds", file: "annotations", body: "a=\"b\"\n", state: []bool{true, false, true, false, true}},
		{name: "both gone", file: "labels", body: "", state: []bool{true, false, true, false, true, false}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.file != "" {
				writeDownwardAPI(t, dir, st.file, st.body)
			}
			waitForWaiter(t, clk)
			clk.Step(time.Second)
			// The poll runs after the step; it is done once the watcher waits again.
			waitForWaiter(t, clk)
			if got := states.snapshot(); !slices.Equal(got, st.state) {
				t.Fatalf("reported %v, want %v", got, st.state)
			}
		})
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
				d.run(closers, make(chan struct{}), make(chan struct{}), func() { cut.Store(true) })
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
	// Each close frame gets the close grace to be written; a busy machine must not make the reading
	// clients miss theirs.
	cfg.CloseGrace = time.Second
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

// readUntilClosed reads from c in the background and reports the close code it ended with (-1: no
// close frame).
func readUntilClosed(c *websocket.Conn) <-chan int {
	code := make(chan int, 1)
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					code <- ce.Code
				} else {
					code <- -1
				}
				return
			}
		}
	}()
	return code
}

// expectServing checks readiness, upgrades and websocket_draining in one state of the server.
func expectServing(t *testing.T, ts *testServer, serving bool) {
	t.Helper()
	wantStatus, wantDraining := http.StatusOK, 0.0
	if !serving {
		wantStatus, wantDraining = http.StatusServiceUnavailable, 1
	}
	resp, err := http.Get("http://" + ts.addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != wantStatus {
		t.Errorf("/health = %d, want %d", resp.StatusCode, wantStatus)
	}
	c, resp, err := websocket.DefaultDialer.Dial(ts.url(), nil)
	if serving && err != nil {
		t.Errorf("upgrade refused while serving: %v", err)
	}
	if !serving && (err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable) {
		t.Errorf("upgrade while drained: %v, %v; want 503", resp, err)
	}
	if c != nil {
		_ = c.Close()
	}
	if got := counterValue(t, ts.Server, "websocket_draining", "", ""); got != wantDraining {
		t.Errorf("websocket_draining = %v, want %v", got, wantDraining)
	}
}

func expectServeRunning(t *testing.T, ts *testServer) {
	t.Helper()
	select {
	case err := <-ts.done:
		ts.done <- err // for the cleanup
		t.Fatalf("Serve returned (%v) after a drain by label", err)
	default:
	}
}

func TestDrainUndrainDrainAgain(t *testing.T) {
	cfg := testConfig()
	cfg.DrainTimeout = 500 * time.Millisecond
	ts := startServer(t, cfg)
	for round := 1; round <= 2; round++ {
		var codes []<-chan int
		for i := 0; i < 5; i++ {
			codes = append(codes, readUntilClosed(dial(t, ts)))
		}
		eventually(t, 5*time.Second, func() bool { return ts.Active() == 5 }, "round %d: clients not connected", round)
		expectServing(t, ts, true)

		ts.Drain()
		for _, code := range codes {
			if got := <-code; got != websocket.CloseGoingAway {
				t.Errorf("round %d: close code %d, want 1001", round, got)
			}
		}
		select {
		case <-ts.Drained():
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: drain did not finish", round)
		}
		// Drained, and still up: unready, refusing upgrades, until the label goes.
		expectServeRunning(t, ts)
		expectServing(t, ts, false)
		ts.Drain() // the label is still there: nothing changes
		expectServing(t, ts, false)

		ts.Undrain()
		expectServing(t, ts, true)
		if ts.Drained() != nil {
			t.Error("Drained fires while the server serves")
		}
	}
}

func TestUndrainKeepsTheConnectionsNotYetClosed(t *testing.T) {
	cfg := testConfig()
	cfg.DrainTimeout = time.Hour // the second close would come after half an hour
	ts := startServer(t, cfg)
	a, b := dial(t, ts), dial(t, ts)
	codeA, codeB := readUntilClosed(a), readUntilClosed(b)
	eventually(t, 5*time.Second, func() bool { return ts.Active() == 2 }, "clients not connected")
	ts.Drain()
	var first int
	select {
	case first = <-codeA:
		codeA = codeB
	case first = <-codeB:
	case <-time.After(10 * time.Second):
		t.Fatal("no close frame at the start of the drain")
	}
	if first != websocket.CloseGoingAway {
		t.Errorf("close code %d, want 1001", first)
	}
	ts.Undrain()
	expectServing(t, ts, true)
	// The closed client leaves once its close handshake is done; the other one stays.
	eventually(t, 5*time.Second, func() bool { return ts.Active() == 1 }, "connections open after the drain was withdrawn: want the one not yet closed")
	select {
	case code := <-codeA:
		t.Errorf("the connection not yet closed ended with %d after the drain was withdrawn", code)
	default:
	}
}

func TestTerminateDuringLabelDrain(t *testing.T) {
	cfg := testConfig()
	cfg.DrainTimeout = 2 * time.Second
	ts := startServer(t, cfg)
	var codes []<-chan int
	for i := 0; i < 10; i++ {
		codes = append(codes, readUntilClosed(dial(t, ts)))
	}
	eventually(t, 5*time.Second, func() bool { return ts.Active() == 10 }, "clients not connected")
	ts.Drain()
	drained := ts.Drained()
	ts.cancel()  // SIGTERM
	ts.Undrain() // the label goes after SIGTERM: too late, the process ends
	for _, code := range codes {
		if got := <-code; got != websocket.CloseGoingAway {
			t.Errorf("close code %d, want 1001", got)
		}
	}
	select {
	case err := <-ts.done:
		ts.done <- err
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return after SIGTERM")
	}
	select {
	case <-drained:
	default:
		t.Error("Serve returned before the label's drain had finished")
	}
	if got := counterValue(t, ts.Server, "websocket_draining", "", ""); got != 1 {
		t.Errorf("websocket_draining = %v after SIGTERM, want 1", got)
	}
}

// TestShutdownDelay: on SIGTERM readiness fails at once, but upgrades are still accepted and nobody
// is closed until the shutdown delay has passed (endpoints take a while to drop the pod); then the
// drain runs.
func TestShutdownDelay(t *testing.T) {
	cfg := testConfig()
	cfg.ShutdownDelay = 5 * time.Second
	cfg.DrainTimeout = time.Second
	// Deadlines are taken from the fake clock, so it starts at the real time.
	clk := clocktesting.NewFakeClock(time.Now())
	ts := startServerWithClock(t, cfg, clk)
	early := readUntilClosed(dial(t, ts))
	eventually(t, 5*time.Second, func() bool { return ts.Active() == 1 }, "client not connected")

	ts.cancel() // SIGTERM
	eventually(t, 5*time.Second, func() bool {
		resp, err := http.Get("http://" + ts.addr + "/health")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, "readiness did not fail at once on SIGTERM")
	clk.Step(cfg.ShutdownDelay - time.Millisecond)
	// Still within the delay: a client whose load balancer has not caught up is served.
	late := readUntilClosed(dial(t, ts))
	eventually(t, 5*time.Second, func() bool { return ts.Active() == 2 }, "upgrade during the shutdown delay not served")
	if got := counterValue(t, ts.Server, "websocket_draining", "", ""); got != 0 {
		t.Errorf("websocket_draining = %v during the shutdown delay, want 0", got)
	}
	select {
	case code := <-early:
		t.Fatalf("a client was closed (%d) during the shutdown delay", code)
	default:
	}

	// Once the delay has passed, both are drained with 1001 and Serve returns.
	stepped := cfg.ShutdownDelay - time.Millisecond
	for _, code := range []<-chan int{early, late} {
		for got := false; !got; {
			select {
			case c := <-code:
				got = true
				if c != websocket.CloseGoingAway {
					t.Errorf("close code %d, want 1001", c)
				}
			case <-time.After(5 * time.Millisecond):
				if stepped > time.Minute {
					t.Fatal("no close frame long after the shutdown delay")
				}
				clk.Step(50 * time.Millisecond)
				stepped += 50 * time.Millisecond
			}
		}
	}
	if stepped < cfg.ShutdownDelay {
		t.Errorf("first close after %v of the fake clock, want at least the shutdown delay %v", stepped, cfg.ShutdownDelay)
	}
	for done := false; !done; {
		select {
		case err := <-ts.done:
			ts.done <- err
			done = true
		case <-time.After(5 * time.Millisecond):
			if stepped > time.Minute {
				t.Fatal("Serve did not return after the drain")
			}
			clk.Step(50 * time.Millisecond)
			stepped += 50 * time.Millisecond
		}
	}
}

// TestShutdownDelaySkippedWhenDrained: a server drained by label is already out of the endpoints,
// so SIGTERM ends it without waiting.
func TestShutdownDelaySkippedWhenDrained(t *testing.T) {
	cfg := testConfig()
	cfg.ShutdownDelay = time.Hour
	clk := clocktesting.NewFakeClock(time.Now())
	ts := startServerWithClock(t, cfg, clk)
	ts.Drain()
	select {
	case <-ts.Drained():
	case <-time.After(10 * time.Second):
		t.Fatal("drain without connections did not finish")
	}
	ts.cancel()
	select {
	case err := <-ts.done:
		ts.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM after a drain by label waited for the shutdown delay")
	}
}
