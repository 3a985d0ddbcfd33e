package scrape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer serves handler and counts the TCP connections clients opened.
func countingServer(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(handler)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func newTestKeepAlive() *KeepAliveTransport {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &KeepAliveTransport{Dial: d.DialContext, IdleTimeout: time.Minute, MaxHeaderBytes: 4 << 10, Fallback: http.DefaultTransport}
}

func get(t *testing.T, tr http.RoundTripper, ctx context.Context, url string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), err
}

func TestKeepAliveReusesOneConnection(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{name: "content length", handler: func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "metric 1\n") }},
		{name: "chunked", handler: func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, "metric 1\n")
			w.(http.Flusher).Flush()
			fmt.Fprint(w, "other 2\n")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, conns := countingServer(t, tt.handler)
			tr := newTestKeepAlive()
			for i := 0; i < 10; i++ {
				body, err := get(t, tr, context.Background(), srv.URL+"/metrics")
				if err != nil || !strings.HasPrefix(body, "metric 1\n") {
					t.Fatalf("request %d: %q, %v", i, body, err)
				}
			}
			if got := conns.Load(); got != 1 {
				t.Errorf("opened %d connections for 10 sequential requests, want 1", got)
			}
		})
	}
}

func TestKeepAliveReplacesAConnectionTheServerClosed(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	tr := newTestKeepAlive()
	if _, err := get(t, tr, context.Background(), srv.URL); err != nil {
		t.Fatal(err)
	}
	// The server drops its idle connections, as a restarted pod or an idle timeout would.
	srv.CloseClientConnections()
	body, err := get(t, tr, context.Background(), srv.URL)
	if err != nil || body != "ok" {
		t.Fatalf("request after the server closed the idle connection: %q, %v", body, err)
	}
	if got := conns.Load(); got != 2 {
		t.Errorf("connections = %d, want 2", got)
	}
}

func TestKeepAliveDoesNotReuseAfterConnectionClose(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, "ok")
	})
	tr := newTestKeepAlive()
	for i := 0; i < 3; i++ {
		if _, err := get(t, tr, context.Background(), srv.URL); err != nil {
			t.Fatal(err)
		}
	}
	if got := conns.Load(); got != 3 {
		t.Errorf("connections = %d, want one per request", got)
	}
}

func TestKeepAliveAbandonsAnEndlessBody(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 4096))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	tr := newTestKeepAlive()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 64<<10); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error)
	go func() { closed <- resp.Body.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close tried to drain a body that never ends")
	}
	// The second request streams forever too (get stops at 1 MiB); what matters is that it needs a
	// new connection.
	_, _ = get(t, tr, context.Background(), srv.URL+"/?second")
	if got := conns.Load(); got != 2 {
		t.Errorf("connections = %d, want 2 (an abandoned body's connection is not reused)", got)
	}
}

func TestKeepAliveRefusesHugeHeaders(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i < 200; i++ {
			w.Header().Add("X-Padding", strings.Repeat("p", 100))
		}
		fmt.Fprint(w, "ok")
	})
	tr := newTestKeepAlive()
	_, err := get(t, tr, context.Background(), srv.URL)
	if !errors.Is(err, errHeadersTooLarge) {
		t.Fatalf("err = %v, want errHeadersTooLarge", err)
	}
}

func TestKeepAliveHonoursTheContext(t *testing.T) {
	release := make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { <-release })
	defer close(release)
	tr := newTestKeepAlive()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := get(t, tr, ctx, srv.URL)
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled request kept waiting for the server")
	}
}

func TestKeepAliveFallsBackForHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "tls") }))
	defer srv.Close()
	tr := newTestKeepAlive()
	tr.Fallback = srv.Client().Transport
	body, err := get(t, tr, context.Background(), srv.URL)
	if err != nil || body != "tls" {
		t.Fatalf("https request: %q, %v", body, err)
	}
}
