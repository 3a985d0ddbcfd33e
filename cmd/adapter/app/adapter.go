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
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/wsscale/wsscale/pkg/provider"
	"github.com/wsscale/wsscale/pkg/provider/promsource"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// Adapter is the wired adapter, ready to Run.
type Adapter struct {
	cfg       *Config
	informers *provider.Informers
	scraper   *scrape.Scraper // nil with --source=prometheus
	registry  *prometheus.Registry
	dynamic   dynamic.Interface
	owner     string // NAMESPACE/NAME of our Service, "" when unknown
	guard     *guard // nil with --scale-guard=false
}

// serviceAccountNamespaceFile holds the pod's namespace when in a cluster.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Complete builds the clients, informers, value source and provider, and
// the API server around them.
func (c *Config) Complete() (*Adapter, error) {
	o := c.Options
	restConfig, err := o.Base.ClientConfig()
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := o.Base.DynamicClient()
	if err != nil {
		return nil, err
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	instruments, err := provider.NewInstruments(registry)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}

	a := &Adapter{cfg: c, registry: registry, dynamic: dyn, owner: o.APIServiceOwner}
	a.informers = provider.NewInformers(client, o.WatchNamespace, c.Selection)

	var source provider.Source
	var tracker *provider.PodTracker
	switch o.Source {
	case SourcePrometheus:
		source, err = promsource.New(promsource.Config{
			URL: o.PrometheusURL, Timeout: o.PrometheusTimeout, StaleAfter: c.StaleAfter, Metrics: c.Metrics,
			NamespaceLabel: o.PrometheusNamespaceLabel, PodLabel: o.PrometheusPodLabel,
		})
		if err != nil {
			return nil, err
		}
		tracker = provider.NewPodTracker(c.Selection, nil, nil)
		if err := provider.RegisterPodGauges(registry, tracker, nil); err != nil {
			return nil, err
		}
	default:
		store := provider.NewStore(c.Metrics, c.StaleAfter, clock.RealClock{}, instruments)
		if a.scraper, err = scrape.New(c.Scrape, store); err != nil {
			return nil, err
		}
		source = store
		tracker = provider.NewPodTracker(c.Selection, a.scraper, store)
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
	if o.Guard.Enabled {
		pm, err := newSourceMetrics(source, c.Selection, c.Metrics)
		if err != nil {
			return nil, err
		}
		if a.guard, err = newGuard(o.Guard, restConfig, o.WatchNamespace, pm, registry); err != nil {
			return nil, err
		}
	}
	o.Base.WithCustomMetrics(prov)
	if _, err := o.Base.Server(); err != nil {
		return nil, fmt.Errorf("custom metrics API server: %w", err)
	}
	if a.owner == "" {
		if ns, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
			a.owner = strings.TrimSpace(string(ns)) + "/wsscale-adapter"
		}
	}
	return a, nil
}

// Run serves until ctx is done: the adapter's own metrics, the informers,
// the scraper once the caches are full, and the API.
func (a *Adapter) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errCh := make(chan error, 3)

	if addr := a.cfg.Options.MetricsBindAddress; addr != "" && addr != "0" {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen on --metrics-bind-address %s: %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
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
		klog.InfoS("Serving the adapter's own metrics", "address", lis.Addr().String())
	}

	a.informers.Start(ctx)
	defer a.informers.Shutdown()
	if err := a.informers.WaitForSync(ctx); err != nil {
		return err
	}
	klog.InfoS("Pod and ReplicaSet caches synced")
	checkAPIServices(ctx, a.dynamic, a.owner)

	if a.scraper != nil {
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
	serverErr := make(chan error, 1)
	go func() { serverErr <- a.cfg.Options.Base.Run(ctx) }()
	select {
	case err := <-errCh:
		cancel()
		<-serverErr
		return err
	case err := <-serverErr:
		return err
	}
}
