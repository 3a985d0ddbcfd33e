package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/runtime"
)

// validateProbeURL accepts ws:// and wss:// URLs with a host.
func validateProbeURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("--probe %q: %v", raw, err)
	}
	if (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("--probe %q: want a ws:// or wss:// URL with a host", raw)
	}
	return nil
}

// probeDialer dials the probe; tests replace its NetDialContext.
var probeDialer = websocket.Dialer{HandshakeTimeout: 10 * time.Second}

// probe opens a WebSocket at rawURL, sends nothing, and holds it for hold: it answers the
// server's pings (as a browser does) but is otherwise idle, the way a quiet client is. It reports
// whether the connection survived, and if not, after how long and who closed it: a close frame
// names its sender's code; a connection that ends without one was cut by something on the path.
func probe(ctx context.Context, rawURL string, hold time.Duration) Check {
	obj := "idle WebSocket through " + rawURL
	start := time.Now()
	conn, resp, err := probeDialer.DialContext(ctx, rawURL, nil)
	if err != nil {
		ev := "the handshake failed: " + err.Error()
		if resp != nil {
			ev = fmt.Sprintf("the handshake failed with HTTP %d: %v", resp.StatusCode, err)
		}
		return Check{Area: "probe", Object: obj, Status: Fail, Evidence: ev, Fix: "check the route to the Service and that the proxy passes the Upgrade and Connection headers"}
	}
	defer conn.Close()
	pings := 0
	conn.SetPingHandler(func(data string) error {
		pings++
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	done := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				done <- err
				return
			}
		}
	}()
	timer := time.NewTimer(hold)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return Check{Area: "probe", Object: obj, Status: Warn, Evidence: fmt.Sprintf("interrupted after %v; the connection was still open", time.Since(start).Round(time.Second))}
	case <-timer.C:
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "probe done"), time.Now().Add(time.Second))
		return Check{Area: "probe", Object: obj, Status: Pass, Evidence: fmt.Sprintf("held idle for %v (%d server pings answered): nothing on the path cut it", hold, pings)}
	case err := <-done:
		after := time.Since(start).Round(100 * time.Millisecond)
		var ce *websocket.CloseError
		var ne net.Error
		switch {
		case errors.As(err, &ce) && ce.Code == websocket.CloseGoingAway:
			return Check{Area: "probe", Object: obj, Status: Warn, Evidence: fmt.Sprintf("closed after %v with 1001 going away (%q): a server drained or a proxy restarted", after, ce.Text), Fix: "run the probe again; a drain closes idle clients too"}
		case errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure:
			return Check{Area: "probe", Object: obj, Status: Fail, Evidence: fmt.Sprintf("cut after %v without a close frame (%d server pings answered): a proxy or load balancer on the path dropped the connection", after, pings), Fix: "raise that hop's idle or tunnel timeout above the ping interval, or remove its route timeout (see the exposure checks)"}
		case errors.As(err, &ce):
			return Check{Area: "probe", Object: obj, Status: Fail, Evidence: fmt.Sprintf("closed after %v with close code %d (%q) from the server or a proxy that speaks WebSocket", after, ce.Code, ce.Text), Fix: "the code names the reason: 1006 none, 1001 drain, 1011 server error, 4xxx application"}
		case errors.As(err, &ne) && ne.Timeout():
			return Check{Area: "probe", Object: obj, Status: Fail, Evidence: fmt.Sprintf("timed out after %v: %v", after, err)}
		default:
			return Check{Area: "probe", Object: obj, Status: Fail, Evidence: fmt.Sprintf("cut after %v without a close frame (%v): a proxy or load balancer on the path dropped the connection", after, err), Fix: "raise that hop's idle or tunnel timeout above the ping interval, or remove its route timeout (see the exposure checks)"}
		}
	}
}

// fromUnstructured converts a map into a typed value.
func fromUnstructured(m map[string]any, into any) error {
	if m == nil {
		return nil
	}
	return runtime.DefaultUnstructuredConverter.FromUnstructured(m, into)
}
