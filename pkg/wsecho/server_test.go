package wsecho

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestEcho(t *testing.T) {
	ts := startServer(t, testConfig())
	c := dial(t, ts)
	tests := []struct {
		name    string
		kind    int
		payload []byte
	}{
		{name: "text", kind: websocket.TextMessage, payload: []byte("hello, wsscale ✓")},
		{name: "binary", kind: websocket.BinaryMessage, payload: []byte{0, 1, 2, 0xff, 0xfe}},
		{name: "empty text", kind: websocket.TextMessage, payload: []byte{}},
		{name: "at the size limit", kind: websocket.BinaryMessage, payload: bytes.Repeat([]byte{7}, 1024)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.WriteMessage(tt.kind, tt.payload); err != nil {
				t.Fatal(err)
			}
			kind, got, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.kind || !bytes.Equal(got, tt.payload) {
				t.Errorf("echo = (%d, %q), want (%d, %q)", kind, got, tt.kind, tt.payload)
			}
		})
	}
}

func TestFragmentedMessageIsEchoedWhole(t *testing.T) {
	ts := startServer(t, testConfig())
	rc := dialRaw(t, ts.addr, "")
	msg := append(frame(false, 0, websocket.TextMessage, true, []byte("hel")), frame(true, 0, 0, true, []byte("lo"))...)
	if _, err := rc.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [2]byte
	if _, err := io.ReadFull(rc.br, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, hdr[1]&0x7f)
	if _, err := io.ReadFull(rc.br, body); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 0x80|websocket.TextMessage || string(body) != "hello" {
		t.Errorf("got frame %#x %q, want one final text frame \"hello\"", hdr[0], body)
	}
}

func TestConnectionLimit(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 2
	ts := startServer(t, cfg)
	first, second := dial(t, ts), dial(t, ts)

	_, resp, err := websocket.DefaultDialer.Dial(ts.url(), nil)
	if err == nil {
		t.Fatal("third connection was accepted over MAX_CONNECTIONS=2")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection: got %v, want HTTP 503", resp)
	}
	if got := resp.Header.Get("Retry-After"); got != "3" {
		t.Errorf("Retry-After = %q, want \"3\"", got)
	}
	if got := errorCount(t, ts.Server, ReasonOverCapacity); got != 1 {
		t.Errorf("over_capacity errors = %v, want 1", got)
	}
	// A full pod is not broken: it stays ready. An unready pod is the first one a ReplicaSet
	// deletes, and counts as unavailable to rollouts and PodDisruptionBudgets.
	resp, err = http.Get("http://" + ts.addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/health at MAX_CONNECTIONS = %d, want 200", resp.StatusCode)
	}
	// The connections already open are not affected.
	for i, c := range []*websocket.Conn{first, second} {
		if err := c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "still here" {
			t.Fatalf("connection %d after refusal: %q, %v", i, msg, err)
		}
	}
	// A slot freed by a leaving client can be taken again.
	_ = first.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	_, _, _ = first.ReadMessage()
	eventually(t, 5*time.Second, func() bool { return ts.Active() == 1 }, "active connections did not drop to 1")
	dial(t, ts)
}

func TestUpgradeFlood(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 10
	ts := startServer(t, cfg)
	goroutinesBefore := runtime.NumGoroutine()
	const attempts = 200
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted []*websocket.Conn
		refused  int
	)
	for i := 0; i < attempts; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, resp, err := websocket.DefaultDialer.Dial(ts.url(), nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted = append(accepted, c)
			case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
				refused++
			default:
				t.Errorf("dial: %v", err)
			}
		}()
	}
	wg.Wait()
	if len(accepted) != cfg.MaxConnections || refused != attempts-cfg.MaxConnections {
		t.Errorf("accepted %d, refused %d; want %d and %d", len(accepted), refused, cfg.MaxConnections, attempts-cfg.MaxConnections)
	}
	if got := ts.Active(); got != cfg.MaxConnections {
		t.Errorf("active = %d, want %d", got, cfg.MaxConnections)
	}
	for _, c := range accepted {
		_ = c.Close()
	}
	eventually(t, 10*time.Second, func() bool { return ts.Active() == 0 }, "connections not released")
	if got := ts.slots.Load(); got != 0 {
		t.Errorf("connection slots still taken after every client left: %d", got)
	}
	// Nothing of the flood stays behind: no goroutine per refused or finished connection.
	eventually(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= goroutinesBefore+2 },
		"goroutines did not return to their number before the flood (%d)", goroutinesBefore)
}

func TestOriginCheck(t *testing.T) {
	tests := []struct {
		name    string
		allowed string
		origin  string
		want    bool
	}{
		{name: "no origin header (non-browser client)", origin: "", want: true},
		{name: "same origin by default", origin: "http://HOST", want: true},
		{name: "cross origin refused by default", origin: "https://evil.example", want: false},
		{name: "listed origin", allowed: "https://chat.example.com", origin: "https://chat.example.com", want: true},
		{name: "listed origin, other scheme", allowed: "https://chat.example.com", origin: "http://chat.example.com", want: false},
		{name: "listed origin, other port", allowed: "https://chat.example.com", origin: "https://chat.example.com:8443", want: false},
		{name: "subdomain wildcard", allowed: "https://*.example.com", origin: "https://eu.chat.example.com", want: true},
		{name: "subdomain wildcard does not match the apex", allowed: "https://*.example.com", origin: "https://example.com", want: false},
		{name: "subdomain wildcard does not match a suffix look-alike", allowed: "https://*.example.com", origin: "https://badexample.com", want: false},
		{name: "case insensitive", allowed: "https://Chat.Example.com", origin: "https://chat.example.COM", want: true},
		{name: "star allows all", allowed: "*", origin: "https://anything.example", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			policy, err := ParseOriginPolicy(tt.allowed)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Origins = policy
			ts := startServer(t, cfg)
			h := http.Header{}
			if tt.origin != "" {
				h.Set("Origin", strings.ReplaceAll(tt.origin, "HOST", ts.addr))
			}
			c, resp, err := websocket.DefaultDialer.Dial(ts.url(), h)
			if tt.want {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				_ = c.Close()
				return
			}
			if err == nil {
				_ = c.Close()
				t.Fatal("accepted an origin that is not allowed")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("got %v, want HTTP 403", resp)
			}
			if got := errorCount(t, ts.Server, ReasonOriginRejected); got != 1 {
				t.Errorf("origin_rejected = %v, want 1", got)
			}
		})
	}
}

func TestParseOriginPolicyErrors(t *testing.T) {
	for _, bad := range []string{"chat.example.com", "ftp://x.example", "https://a.*.example.com", "https://x.example/path", "https://x.example?q=1"} {
		t.Run(bad, func(t *testing.T) {
			if _, err := ParseOriginPolicy(bad); err == nil {
				t.Errorf("ParseOriginPolicy(%q) accepted it", bad)
			}
		})
	}
}

func TestBadInputClosesWithTheRightCode(t *testing.T) {
	tests := []struct {
		name     string
		send     []byte
		wantCode int
		reason   string
	}{
		{
			name:     "oversized message",
			send:     frame(true, 0, websocket.BinaryMessage, true, make([]byte, 1025)),
			wantCode: websocket.CloseMessageTooBig,
			reason:   ReasonMessageTooBig,
		},
		{
			name: "oversized message in fragments",
			send: append(frame(false, 0, websocket.BinaryMessage, true, make([]byte, 600)),
				frame(true, 0, 0, true, make([]byte, 600))...),
			wantCode: websocket.CloseMessageTooBig,
			reason:   ReasonMessageTooBig,
		},
		{
			// Only the header arrives: the declared length alone must be refused.
			name:     "frame header declaring a 1 TiB payload",
			send:     []byte{0x82, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4},
			wantCode: websocket.CloseMessageTooBig,
			reason:   ReasonMessageTooBig,
		},
		{
			name:     "invalid UTF-8 in a text frame",
			send:     frame(true, 0, websocket.TextMessage, true, []byte{'o', 'k', 0xc3, 0x28}),
			wantCode: websocket.CloseInvalidFramePayloadData,
			reason:   ReasonInvalidUTF8,
		},
		{
			name:     "unmasked client frame",
			send:     frame(true, 0, websocket.TextMessage, false, []byte("hi")),
			wantCode: websocket.CloseProtocolError,
			reason:   ReasonProtocolError,
		},
		{
			name:     "reserved bits without an extension",
			send:     frame(true, 4, websocket.TextMessage, true, []byte("hi")),
			wantCode: websocket.CloseProtocolError,
			reason:   ReasonProtocolError,
		},
		{
			name:     "reserved opcode",
			send:     frame(true, 0, 3, true, []byte("hi")),
			wantCode: websocket.CloseProtocolError,
			reason:   ReasonProtocolError,
		},
		{
			name:     "fragmented control frame",
			send:     frame(false, 0, websocket.PingMessage, true, []byte("hi")),
			wantCode: websocket.CloseProtocolError,
			reason:   ReasonProtocolError,
		},
		{
			name:     "control frame longer than 125 bytes",
			send:     frame(true, 0, websocket.PingMessage, true, make([]byte, 126)),
			wantCode: websocket.CloseProtocolError,
			reason:   ReasonProtocolError,
		},
		{
			name:     "continuation without a first frame",
			send:     frame(true, 0, 0, true, []byte("orphan")),
			wantCode: websocket.CloseProtocolError,
			reason:   ReasonProtocolError,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, testConfig())
			rc := dialRaw(t, ts.addr, "")
			if _, err := rc.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			code, err := rc.readClose(5 * time.Second)
			if err != nil {
				t.Fatalf("no close frame: %v", err)
			}
			if code != tt.wantCode {
				t.Errorf("close code = %d, want %d", code, tt.wantCode)
			}
			eventually(t, 5*time.Second, func() bool { return ts.Active() == 0 }, "connection still open")
			if got := errorCount(t, ts.Server, tt.reason); got != 1 {
				t.Errorf("websocket_errors_total{reason=%q} = %v, want 1", tt.reason, got)
			}
			// The server still serves others.
			c := dial(t, ts)
			if err := c.WriteMessage(websocket.TextMessage, []byte("ok")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.ReadMessage(); err != nil {
				t.Fatalf("server broken after bad input: %v", err)
			}
		})
	}
}

func TestHalfOpenPeerIsDropped(t *testing.T) {
	cfg := testConfig()
	cfg.PingInterval = 50 * time.Millisecond
	cfg.ReadTimeout = 200 * time.Millisecond
	ts := startServer(t, cfg)
	// A raw client never answers pings: to the server it looks like a peer that vanished without a FIN.
	rc := dialRaw(t, ts.addr, "")
	// The server tracks the connection only after its 101 response: wait for the drop itself.
	eventually(t, 10*time.Second, func() bool { return errorCount(t, ts.Server, ReasonReadTimeout) == 1 },
		"half-open connection was not dropped for its read timeout")
	eventually(t, 10*time.Second, func() bool { return ts.Active() == 0 }, "half-open connection still counted")
	if _, err := rc.readClose(5 * time.Second); err != nil && !isClosedWithoutFrame(err) {
		t.Errorf("connection not closed: %v", err)
	}
}

func TestPingsKeepAnsweringClientsAlive(t *testing.T) {
	cfg := testConfig()
	cfg.PingInterval = 20 * time.Millisecond
	cfg.ReadTimeout = 100 * time.Millisecond
	ts := startServer(t, cfg)
	c := dial(t, ts)
	pings := make(chan struct{}, 100)
	c.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	// Ten pings span several read timeouts: the connection survives because it answers them.
	for i := 0; i < 10; i++ {
		select {
		case <-pings:
		case <-time.After(10 * time.Second):
			t.Fatalf("ping %d never came", i)
		}
	}
	if ts.Active() != 1 || errorCount(t, ts.Server, ReasonReadTimeout) != 0 {
		t.Errorf("a client answering pings was dropped")
	}
}

func TestClientThatNeverReadsIsDisconnected(t *testing.T) {
	cfg := testConfig()
	cfg.MaxMessageBytes = 64 << 10
	cfg.WriteTimeout = 200 * time.Millisecond
	ts := startServer(t, cfg)

	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A small receive window fills quickly.
	_ = nc.(*net.TCPConn).SetReadBuffer(4096)
	rc := &rawConn{Conn: nc, br: bufio.NewReader(nc)}
	if err := rc.handshake(ts.addr, ""); err != nil {
		t.Fatal(err)
	}
	msg := frame(true, 0, websocket.BinaryMessage, true, make([]byte, 60<<10))
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; i < 2000; i++ {
			_ = nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := nc.Write(msg); err != nil {
				return
			}
		}
	}()
	eventually(t, 30*time.Second, func() bool { return errorCount(t, ts.Server, ReasonWriteTimeout) == 1 },
		"a client that never reads was not disconnected")
	eventually(t, 10*time.Second, func() bool { return ts.Active() == 0 }, "slow client still counted as open")
	_ = nc.Close()
	<-writerDone
}

func TestIncompleteHandshakeIsCut(t *testing.T) {
	cfg := testConfig()
	cfg.HandshakeTimeout = 200 * time.Millisecond
	ts := startServer(t, cfg)
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Headers that never end.
	if _, err := io.WriteString(nc, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(nc)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("server kept an incomplete handshake open")
	}
}

func TestNotAnUpgradeRequest(t *testing.T) {
	ts := startServer(t, testConfig())
	resp, err := http.Get("http://" + ts.addr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET /ws = %d, want 400", resp.StatusCode)
	}
	if got := errorCount(t, ts.Server, ReasonHandshake); got != 1 {
		t.Errorf("handshake errors = %v, want 1", got)
	}
}

func TestAbnormalClosureIsCounted(t *testing.T) {
	ts := startServer(t, testConfig())
	c := dial(t, ts)
	_ = c.NetConn().Close() // no close frame
	eventually(t, 5*time.Second, func() bool { return ts.Active() == 0 }, "connection not released")
	if got := errorCount(t, ts.Server, ReasonAbnormalClosure); got != 1 {
		t.Errorf("abnormal_closure = %v, want 1", got)
	}
}

func TestMetrics(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 7
	ts := startServer(t, cfg)
	var conns []*websocket.Conn
	for i := 0; i < 3; i++ {
		c := dial(t, ts)
		for j := 0; j < 2; j++ {
			if err := c.WriteMessage(websocket.TextMessage, []byte("m")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.ReadMessage(); err != nil {
				t.Fatal(err)
			}
		}
		conns = append(conns, c)
	}
	expected := `
# HELP websocket_connections_active WebSocket connections currently open.
# TYPE websocket_connections_active gauge
websocket_connections_active 3
# HELP websocket_connections_max Configured limit of concurrent WebSocket connections (MAX_CONNECTIONS).
# TYPE websocket_connections_max gauge
websocket_connections_max 7
# HELP websocket_connections_total WebSocket connections accepted since start.
# TYPE websocket_connections_total counter
websocket_connections_total 3
# HELP websocket_draining 1 while the server drains or stays drained (drain label, SIGTERM) and refuses new clients, else 0.
# TYPE websocket_draining gauge
websocket_draining 0
# HELP websocket_messages_total WebSocket data messages by direction (in: received from clients, out: sent to clients).
# TYPE websocket_messages_total counter
websocket_messages_total{direction="in"} 6
websocket_messages_total{direction="out"} 6
`
	names := []string{"websocket_connections_active", "websocket_connections_max", "websocket_connections_total",
		"websocket_draining", "websocket_messages_total"}
	// The server counts a message as sent once its write returned, which may be just after the
	// client read it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		err := testutil.GatherAndCompare(ts.Registry(), strings.NewReader(expected), names...)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics differ: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, c := range conns {
		_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
		_, _, _ = c.ReadMessage()
		_ = c.Close()
	}
	eventually(t, 5*time.Second, func() bool { return ts.Active() == 0 }, "connections did not close")
	if got := counterValue(t, ts.Server, "websocket_connections_active", "", ""); got != 0 {
		t.Errorf("websocket_connections_active = %v after clients left, want 0", got)
	}
	// The exposition over HTTP carries every documented metric, and every error reason at 0 or more.
	resp, err := http.Get("http://" + ts.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{
		"# TYPE websocket_connections_active gauge", "# TYPE websocket_connections_total counter",
		"# TYPE websocket_messages_total counter", "# TYPE websocket_errors_total counter",
		"# TYPE websocket_connections_max gauge", "# TYPE websocket_draining gauge",
		"# TYPE websocket_connection_duration_seconds histogram", "websocket_connection_duration_seconds_count 3",
		"websocket_connections_active 0",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, r := range allReasons {
		if want := fmt.Sprintf("websocket_errors_total{reason=%q}", r); !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestHealthAndLiveness(t *testing.T) {
	ts := startServer(t, testConfig())
	for path, want := range map[string]int{"/health": 200, "/livez": 200} {
		resp, err := http.Get("http://" + ts.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// TestMessagesBufferedTogetherAreAllEchoed sends pongs and messages in one TCP write, so that they
// arrive in the server's read buffer at once. Between messages the server waits for readability on
// the socket and consumes pongs from the read buffer itself, which is only right if gorilla reads
// through that same buffer, the one hijackWriter hands it (gorilla does so when ReadBufferSize is 0
// and the hijacked reader is larger than 256 bytes). Were gorilla to read through a buffer of its
// own, the second message would wait in it unseen, and pongs would be taken from a buffer nobody
// fills.
func TestMessagesBufferedTogetherAreAllEchoed(t *testing.T) {
	ts := startServer(t, testConfig())
	for _, tt := range []struct {
		name   string
		frames [][]byte
		want   []string
	}{
		{name: "two messages", frames: [][]byte{
			frame(true, 0, websocket.TextMessage, true, []byte("one")),
			frame(true, 0, websocket.TextMessage, true, []byte("two")),
		}, want: []string{"one", "two"}},
		{name: "pongs around a message", frames: [][]byte{
			frame(true, 0, websocket.PongMessage, true, nil),
			frame(true, 0, websocket.TextMessage, true, []byte("after a pong")),
			frame(true, 0, websocket.PongMessage, true, []byte("x")),
			frame(true, 0, websocket.TextMessage, true, []byte("after another")),
		}, want: []string{"after a pong", "after another"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr, "")
			if _, err := rc.Write(bytes.Join(tt.frames, nil)); err != nil {
				t.Fatal(err)
			}
			_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
			for _, want := range tt.want {
				var hdr [2]byte
				if _, err := io.ReadFull(rc.br, hdr[:]); err != nil {
					t.Fatalf("waiting for the echo of %q: %v", want, err)
				}
				body := make([]byte, hdr[1]&0x7f)
				if _, err := io.ReadFull(rc.br, body); err != nil {
					t.Fatal(err)
				}
				if string(body) != want {
					t.Fatalf("echo = %q, want %q", body, want)
				}
			}
		})
	}
}

func TestReleaseWhenQuiet(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	s := New(testConfig(), clk)
	var releases atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.releaseWhenQuiet(ctx, 10*time.Second, func() { releases.Add(1) })
	}()
	defer func() { cancel(); <-stopped }()

	steps := []struct {
		name     string
		activity uint64 // messages and connections during the period
		want     int32  // releases so far, after the period
	}{
		{name: "quiet from the start: nothing to release", want: 0},
		{name: "traffic", activity: 3000, want: 0},
		{name: "still traffic", activity: 10, want: 0},
		{name: "first quiet period after traffic", want: 1},
		{name: "still quiet: released already", want: 1},
		{name: "one connection ends", activity: 1, want: 1},
		{name: "quiet again", want: 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			waitForWaiter(t, clk)
			s.activity.Add(st.activity)
			clk.Step(10 * time.Second)
			// The check runs after the step; it is done once the loop waits again.
			waitForWaiter(t, clk)
			if got := releases.Load(); got != st.want {
				t.Errorf("%d releases, want %d", got, st.want)
			}
		})
	}
}
