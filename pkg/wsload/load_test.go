package wsload

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	// 1..10000 microseconds, uniformly.
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 5000 * time.Microsecond},
		{0.9, 9000 * time.Microsecond},
		{0.99, 9900 * time.Microsecond},
		{1, 10000 * time.Microsecond},
	}
	for _, tt := range tests {
		got := h.quantile(tt.q)
		if diff := float64(got-tt.want) / float64(tt.want); diff > 1.0/64 || diff < -1.0/64 {
			t.Errorf("quantile(%v) = %v, want %v within 1/64", tt.q, got, tt.want)
		}
	}
	if h.max != 10*time.Millisecond {
		t.Errorf("max = %v", h.max)
	}
}

func TestHistogramBucketsCoverEveryValue(t *testing.T) {
	for _, v := range []time.Duration{0, 1, 127, 128, 129, 1000, time.Second, time.Hour, 1<<63 - 1} {
		b := bucketOf(v)
		if b < 0 || b >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d out of range", v, b)
		}
		if got := bucketValue(b); v >= 128 && (float64(got)-float64(v))/float64(v) > 1.0/64 {
			t.Errorf("bucketValue(bucketOf(%d)) = %d, more than 1/64 off", v, got)
		}
	}
}

func TestSourceAddr(t *testing.T) {
	p := netip.MustParsePrefix("127.0.0.0/8")
	if got := sourceAddr(p, 0); got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("first source = %v", got)
	}
	if got := sourceAddr(p, 256); got != netip.MustParseAddr("127.0.1.1") {
		t.Errorf("source 256 = %v", got)
	}
	small := netip.MustParsePrefix("127.1.2.0/30") // two usable addresses
	if a, b := sourceAddr(small, 0), sourceAddr(small, 2); a != b {
		t.Errorf("sources do not wrap around the prefix: %v, %v", a, b)
	}
}

func TestValidate(t *testing.T) {
	c := DefaultConfig()
	c.URL = "http://x"
	c.Connections = 0
	c.Flood = true
	c.MessageSize = 4
	errs := c.Validate()
	if len(errs) != 3 {
		t.Errorf("got %d errors, want 3 (url, connections, message size): %v", len(errs), errs)
	}
}

// echoServer is a minimal echo endpoint whose behaviour tests can steer.
type echoServer struct {
	addr     string
	closeAll atomic.Int32 // when set, the server ends every connection with this close code
	cut      atomic.Bool  // when set, the server drops connections without a close frame
	garble   atomic.Bool  // when set, the server answers every message with a different one
	accepted atomic.Int32
}

// waitFor polls cond until it holds; it fails the test after a generous deadline.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	es := &echoServer{}
	up := websocket.Upgrader{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	es.addr = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		es.accepted.Add(1)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if code := es.closeAll.Load(); code != 0 {
					_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), ""), time.Now().Add(time.Second))
					return
				}
				if es.cut.Load() {
					_ = c.NetConn().Close()
					return
				}
			}
		}()
		for {
			kind, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if es.garble.Load() {
				msg = []byte("not your message")
			}
			if err := c.WriteMessage(kind, msg); err != nil {
				return
			}
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return es
}

func TestRunMeasuresEchoes(t *testing.T) {
	es := startEcho(t)
	cfg := DefaultConfig()
	cfg.URL = "ws://" + es.addr + "/ws"
	cfg.Connections = 20
	cfg.ConnectRate = 0
	cfg.Flood = true
	cfg.MessageSize = 256
	cfg.Duration = 300 * time.Millisecond
	cfg.SourcePrefix = netip.MustParsePrefix("127.0.0.0/8")
	var progress atomic.Int32
	cfg.ProgressInterval = 50 * time.Millisecond
	cfg.Progress = func(Snapshot) { progress.Add(1) }
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 20 || res.PeakOpen != 20 {
		t.Errorf("opened %d, peak %d; want 20", res.Opened, res.PeakOpen)
	}
	if res.Received == 0 || res.RTT.Count != uint64(res.Received) || res.Mismatched != 0 {
		t.Errorf("received %d, rtt samples %d, mismatched %d", res.Received, res.RTT.Count, res.Mismatched)
	}
	if res.RTT.P50 <= 0 || res.RTT.P99 < res.RTT.P50 || res.RTT.Max < res.RTT.P99 {
		t.Errorf("implausible round trips: %+v", res.RTT)
	}
	if res.ClosedByClient != 20 || res.AbnormalDrops != 0 {
		t.Errorf("closed by client %d, drops %d; want 20 and 0", res.ClosedByClient, res.AbnormalDrops)
	}
	if progress.Load() == 0 {
		t.Error("no progress reported")
	}
}

func TestRunStopsSendingAfterMessagesPerConnection(t *testing.T) {
	es := startEcho(t)
	for _, tt := range []struct {
		name  string
		flood bool
	}{{name: "interval"}, {name: "flood", flood: true}} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.URL = "ws://" + es.addr + "/ws"
			cfg.Connections = 10
			cfg.ConnectRate = 0
			cfg.MessageInterval = 10 * time.Millisecond
			cfg.Flood = tt.flood
			cfg.MessagesPerConnection = 2
			cfg.Duration = 300 * time.Millisecond
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Sent != 20 || res.Received != 20 || res.Echoed != 10 {
				t.Errorf("sent %d, received %d, echoed connections %d; want 2 per connection, each echoed", res.Sent, res.Received, res.Echoed)
			}
			if res.ClosedByClient != 10 || res.AbnormalDrops != 0 {
				t.Errorf("closed by client %d, drops %d; want the idle connections held to the end", res.ClosedByClient, res.AbnormalDrops)
			}
		})
	}
}

// A server that answers with something else than the message echoes no connection.
func TestRunCountsOnlyCorrectEchoes(t *testing.T) {
	es := startEcho(t)
	es.garble.Store(true)
	cfg := DefaultConfig()
	cfg.URL = "ws://" + es.addr + "/ws"
	cfg.Connections = 5
	cfg.ConnectRate = 0
	cfg.MessageInterval = 10 * time.Millisecond
	cfg.MessagesPerConnection = 1
	cfg.Duration = 200 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 5 || res.Sent != 5 || res.Mismatched != 5 || res.Received != 0 || res.Echoed != 0 {
		t.Errorf("opened %d, sent %d, mismatched %d, received %d, echoed connections %d; want 5, 5, 5, 0, 0",
			res.Opened, res.Sent, res.Mismatched, res.Received, res.Echoed)
	}
}

func TestRunCountsClosesAndDrops(t *testing.T) {
	tests := []struct {
		name      string
		end       func(*echoServer)
		wantCode  string
		wantDrops int64
	}{
		{name: "server closes with 1001", end: func(es *echoServer) { es.closeAll.Store(websocket.CloseGoingAway) }, wantCode: "1001"},
		{name: "server closes with 1011", end: func(es *echoServer) { es.closeAll.Store(websocket.CloseInternalServerErr) }, wantCode: "1011"},
		{name: "server drops without a close frame", end: func(es *echoServer) { es.cut.Store(true) }, wantDrops: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := startEcho(t)
			cfg := DefaultConfig()
			cfg.URL = "ws://" + es.addr + "/ws"
			cfg.Connections = 5
			cfg.ConnectRate = 0
			cfg.Duration = 30 * time.Second
			done := make(chan *Result)
			go func() {
				res, err := Run(context.Background(), cfg)
				if err != nil {
					t.Error(err)
				}
				done <- res
			}()
			// Once all are connected the server ends them; the run ends by itself because every
			// connection ended and none reconnects.
			waitFor(t, func() bool { return es.accepted.Load() == 5 }, "5 connections")
			tt.end(es)
			var res *Result
			select {
			case res = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("run did not end when every connection had ended")
			}
			if tt.wantCode != "" && res.ClosesByCode[tt.wantCode] != 5 {
				t.Errorf("closes by code = %v, want 5 × %s", res.ClosesByCode, tt.wantCode)
			}
			if res.AbnormalDrops != tt.wantDrops {
				t.Errorf("abnormal drops = %d, want %d", res.AbnormalDrops, tt.wantDrops)
			}
		})
	}
}

func TestRunReconnectsAfterClose(t *testing.T) {
	es := startEcho(t)
	cfg := DefaultConfig()
	cfg.URL = "ws://" + es.addr + "/ws"
	cfg.Connections = 3
	cfg.ConnectRate = 0
	cfg.Reconnect = true
	cfg.ReconnectMin = time.Millisecond
	cfg.ReconnectMax = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *Result)
	go func() {
		res, _ := Run(ctx, cfg)
		done <- res
	}()
	waitFor(t, func() bool { return es.accepted.Load() == 3 }, "3 connections")
	es.closeAll.Store(websocket.CloseGoingAway)
	waitFor(t, func() bool { return es.accepted.Load() >= 9 }, "two rounds of reconnects")
	cancel()
	res := <-done
	if res.Opened <= 3 {
		t.Errorf("opened %d connections, want reconnects beyond the first 3", res.Opened)
	}
	if !strings.HasPrefix(res.URL, "ws://") {
		t.Errorf("url %q", res.URL)
	}
}
