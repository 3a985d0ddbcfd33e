package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	apimetrics "k8s.io/apiserver/pkg/endpoints/metrics"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/provider"
	"github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/pkg/provider/promsource"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
	"github.com/wsscale/wsscale/pkg/provider/store"
	"github.com/wsscale/wsscale/pkg/scrapeevents"
	"github.com/wsscale/wsscale/pkg/version"
)

// Adapter is the wired adapter, ready to Run.
type Adapter struct {
	cfg       *Config
	informers *pods.Informers
	scraper   *scrape.Scraper // nil with --source=prometheus
	store     *store.Store    // nil with --source=prometheus
	// metrics gathers the adapter's own metrics and those of the generic
	// API server (requests, Go runtime, process).
	metrics prometheus.Gatherer
	dynamic dynamic.Interface
	owner   string                  // NAMESPACE/NAME of our Service, "" when unknown
	guard   *guard                  // nil with --scale-guard=false
	events  events.EventBroadcaster // nil with --scrape-events=false
}

// serviceAccountNamespaceFile holds the pod's namespace when in a cluster.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Complete builds the clients, informers, value source and provider, and
// the API server around them.
func (c *Config) Complete() (*Adapter, error) {
	restConfig, err := c.Server.ClientConfig()
	if err != nil {
		return nil, err
	}
	dyn, err := c.Server.DynamicClient()
	if err != nil {
		return nil, err
	}
	// The Go runtime and process collectors are in the generic API
	// server's registry already; this one holds the adapter's own.
	registry := prometheus.NewRegistry()
	if err := version.Register(registry, "adapter"); err != nil {
		return nil, err
	}
	instruments, err := provider.NewInstruments(registry)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}

	a := &Adapter{cfg: c, dynamic: dyn, owner: c.APIServiceOwner,
		metrics: prometheus.Gatherers{legacyregistry.DefaultGatherer, registry}}
	if a.informers, err = pods.NewInformersForConfig(restConfig, c.WatchNamespace, c.Selection); err != nil {
		return nil, err
	}

	var source provider.Source
	var tracker *pods.PodTracker
	switch c.Source {
	case SourcePrometheus:
		source, err = promsource.New(c.Prometheus)
		if err != nil {
			return nil, err
		}
		tracker = pods.NewPodTracker(c.Selection, nil, nil)
		if err := provider.RegisterPodGauges(registry, tracker, nil); err != nil {
			return nil, err
		}
	default:
		store := store.New(c.Metrics, c.StaleAfter, clock.RealClock{}, instruments)
		var sink scrape.Sink = store
		if c.ScrapeEvents {
			if sink, err = a.scrapeEvents(restConfig, store); err != nil {
				return nil, err
			}
		}
		if a.scraper, err = scrape.New(c.Scrape, sink); err != nil {
			return nil, err
		}
		source, a.store = store, store
		tracker = pods.NewPodTracker(c.Selection, a.scraper, store)
		if err := provider.RegisterPodGauges(registry, tracker, store); err != nil {
			return nil, err
		}
	}
	if err := a.informers.AddPodHandler(tracker); err != nil {
		return nil, err
	}
	prov, err := provider.New(provider.Config{
		Metrics: c.Metrics, Pods: a.informers.Pods(), ReplicaSets: a.informers.ReplicaSets(),
		Selection: c.Selection, Source: source, Observer: instruments,
	})
	if err != nil {
		return nil, err
	}
	if c.Guard.Enabled {
		pm, err := newSourceMetrics(source, c.Selection, c.Metrics)
		if err != nil {
			return nil, err
		}
		if a.guard, err = newGuard(&c.Guard, restConfig, c.WatchNamespace, pm, registry); err != nil {
			return nil, err
		}
	}
	c.Server.WithCustomMetrics(prov)
	// The generic API server would serve only its own registry on /metrics;
	// ours is served there instead, behind the same delegated authentication
	// and authorization as the API (a scraper needs RBAC for the non-resource
	// URL /metrics).
	c.Server.EnableMetrics = false
	apimetrics.Register() // the request metrics the generic server would have registered
	server, err := c.Server.Server()
	if err != nil {
		return nil, fmt.Errorf("custom metrics API server: %w", err)
	}
	server.GenericAPIServer.Handler.NonGoRestfulMux.Handle("/metrics", a.metricsHandler())
	if err := server.GenericAPIServer.AddReadyzChecks(provider.ReadinessChecks(a.informers.HasSynced, a.store)...); err != nil {
		return nil, fmt.Errorf("readiness checks: %w", err)
	}
	if a.owner == "" {
		if ns, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
			a.owner = strings.TrimSpace(string(ns)) + "/wsscale-adapter"
		}
	}
	return a, nil
}

// metricsHandler serves the adapter's own metrics.
func (a *Adapter) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{ErrorLog: klogErrorLogger{}})
}

// klogErrorLogger logs the metrics handler's gathering errors.
type klogErrorLogger struct{}

func (klogErrorLogger) Println(v ...any) {
	klog.ErrorS(errors.New(fmt.Sprint(v...)), "Gathering the adapter's own metrics")
}

// Run serves until ctx is done. The API server starts at once, so that
// /livez answers and /readyz says what it waits for; the pod becomes ready
// once the caches have synced and the first scrape round is done.
func (a *Adapter) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errCh := make(chan error, 3)

	if addr := a.cfg.MetricsBindAddress; addr != "" && addr != "0" {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen on --metrics-bind-address %s: %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", a.metricsHandler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
		go func() {
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errCh <- fmt.Errorf("metrics server: %w", err)
			}
		}()
		klog.InfoS("Serving the adapter's own metrics without authentication", "address", lis.Addr().String())
	}

	// A server that fails to start (e.g. its port is taken) cancels ctx,
	// which ends the wait for the caches; its error is the one returned.
	serverErr := make(chan error, 1)
	go func() {
		serverErr <- a.cfg.Server.Run(ctx)
		cancel()
	}()
	stop := func(err error) error {
		cancel()
		if serr := <-serverErr; serr != nil {
			return serr
		}
		return err
	}

	a.informers.Start(ctx)
	defer a.informers.Shutdown()
	if err := a.informers.WaitForSync(ctx); err != nil {
		// Only the end of ctx ends the wait: a signal (a clean stop) or
		// the server's failure (its error).
		return stop(nil)
	}
	klog.InfoS("Pod and ReplicaSet caches synced")
	checkAPIServices(ctx, a.dynamic, a.owner)

	if a.events != nil {
		if err := a.events.StartRecordingToSinkWithContext(ctx); err != nil {
			return stop(fmt.Errorf("start recording Events: %w", err))
		}
		defer a.events.Shutdown()
	}
	if a.scraper != nil {
		a.store.BeginFirstRound()
		go func() {
			if err := a.scraper.Run(ctx); err != nil {
				errCh <- fmt.Errorf("scraper: %w", err)
			}
		}()
	}
	if a.guard != nil {
		go func() {
			if err := a.guard.Run(ctx); err != nil {
				errCh <- fmt.Errorf("scaleguard controller: %w", err)
			}
		}()
	}
	select {
	case err := <-errCh:
		return stop(err)
	case err := <-serverErr:
		return err
	}
}

// scrapeEvents puts the Events of failing and recovered scrapes in front of the store: a user's
// kubectl can read them on the pod, unlike the adapter's own metrics.
func (a *Adapter) scrapeEvents(restConfig *rest.Config, store scrape.Sink) (scrape.Sink, error) {
	kube, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return nil, err
	}
	a.events = events.NewBroadcaster(&events.EventSinkImpl{Interface: kube.EventsV1()})
	cfg := scrapeevents.DefaultConfig()
	pods := a.informers.Pods()
	cfg.Pod = func(key scrape.PodKey) runtime.Object {
		obj, ok, err := pods.GetByKey(key.String())
		if p, isPod := obj.(*corev1.Pod); ok && err == nil && isPod && p != nil {
			return p
		}
		return nil
	}
	return scrapeevents.New(store, a.events.NewRecorder(clientgoscheme.Scheme, "wsscale.io/adapter"), cfg), nil
}
