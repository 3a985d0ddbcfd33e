package pods

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsscale/wsscale/pkg/provider/internal/podtest"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

// TestInformerRequests checks what the pod watch asks the API server for:
// the selection's labels and running pods only, filtered on the server, in
// protobuf. The API server is an httptest server that records the requests.
func TestInformerRequests(t *testing.T) {
	type request struct{ query, accept string }
	var mu sync.Mutex
	var pods []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/pods" {
			mu.Lock()
			pods = append(pods, request{query: r.URL.RawQuery, accept: r.Header.Get("Accept")})
			mu.Unlock()
		}
		kind, version := "Pod", "v1"
		if strings.Contains(r.URL.Path, "replicasets") {
			kind, version = "ReplicaSet", "apps/v1"
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") == "true" {
			// A streaming list (sendInitialEvents) ends its empty initial
			// state with a bookmark; then nothing happens.
			if r.URL.Query().Get("sendInitialEvents") == "true" {
				_, _ = w.Write([]byte(`{"type":"BOOKMARK","object":{"kind":"` + kind + `","apiVersion":"` + version + `","metadata":{"resourceVersion":"1","annotations":{"k8s.io/initial-events-end":"true"}}}}` + "\n"))
				w.(http.Flusher).Flush()
			}
			<-r.Context().Done()
			return
		}
		kind += "List"
		_, _ = w.Write([]byte(`{"kind":"` + kind + `","apiVersion":"` + version + `","metadata":{"resourceVersion":"1"},"items":[]}`))
	}))
	defer srv.Close()

	tests := []struct {
		name      string
		selector  string
		wantLabel string
	}{
		{name: "default label", selector: DefaultPodSelector, wantLabel: "labelSelector=wsscale.io%2Fscrape%3Dtrue"},
		{name: "widened to every pod", selector: "", wantLabel: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			pods = nil
			mu.Unlock()
			sel, err := labels.Parse(tt.selector)
			if err != nil {
				t.Fatal(err)
			}
			inf, err := NewInformersForConfig(&rest.Config{Host: srv.URL}, "", &Selection{Selector: sel, PortName: DefaultMetricsPortName})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			inf.Start(ctx)
			err = inf.WaitForSync(ctx)
			cancel()
			inf.Shutdown()
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(pods) == 0 {
				t.Fatal("no pod list or watch")
			}
			for _, r := range pods {
				if !strings.Contains(r.query, "fieldSelector=status.phase%3DRunning") {
					t.Errorf("pod request %q lacks the field selector status.phase=Running", r.query)
				}
				if tt.wantLabel != "" && !strings.Contains(r.query, tt.wantLabel) {
					t.Errorf("pod request %q lacks %s", r.query, tt.wantLabel)
				}
				if tt.wantLabel == "" && strings.Contains(r.query, "labelSelector") {
					t.Errorf("pod request %q has a label selector", r.query)
				}
				if !strings.HasPrefix(r.accept, "application/vnd.kubernetes.protobuf") {
					t.Errorf("pod request accepts %q, want protobuf first", r.accept)
				}
			}
		})
	}
}

// gatedHandler holds its first OnAdd until released.
type gatedHandler struct {
	entered, release chan struct{}
	once             sync.Once
}

func (g *gatedHandler) OnAdd(any, bool) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
}
func (g *gatedHandler) OnUpdate(_, _ any) {}
func (g *gatedHandler) OnDelete(any)      {}

// TestSyncWaitsForHandlers: the caches count as synced only once every
// handler has seen the initial list, so the first scrape round never begins
// from a Store that misses pods the cache already holds.
func TestSyncWaitsForHandlers(t *testing.T) {
	client := fake.NewClientset(podtest.NewPod("ns", "a", podtest.WithLabels(ScrapeLabel, "true")))
	sel := &Selection{Selector: labels.SelectorFromSet(labels.Set{ScrapeLabel: "true"}), PortName: DefaultMetricsPortName}
	inf, err := NewInformers(client, "", sel)
	if err != nil {
		t.Fatal(err)
	}
	gate := &gatedHandler{entered: make(chan struct{}), release: make(chan struct{})}
	if err := inf.AddPodHandler(gate); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer func() { cancel(); inf.Shutdown() }()
	inf.Start(ctx)
	select {
	case <-gate.entered: // the pod is in the cache; the handler is busy with it
	case <-ctx.Done():
		t.Fatal("handler never called")
	}
	if inf.HasSynced() {
		t.Error("synced while a handler has not seen the initial list")
	}
	close(gate.release)
	if err := inf.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	if !inf.HasSynced() {
		t.Error("not synced after WaitForSync")
	}
}
