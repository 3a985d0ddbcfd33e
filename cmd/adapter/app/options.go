package app

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	logsapi "k8s.io/component-base/logs/api/v1"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"

	"github.com/wsscale/wsscale/pkg/provider/metricsconfig"
	"github.com/wsscale/wsscale/pkg/provider/pods"
	"github.com/wsscale/wsscale/pkg/provider/promsource"
	"github.com/wsscale/wsscale/pkg/provider/scrape"
)

// The value sources.
const (
	SourceScrape     = "scrape"
	SourcePrometheus = "prometheus"
)

// Options are the adapter's flags. The embedded AdapterBase owns the
// serving, authentication, authorization, audit and client flags.
type Options struct {
	// Base is the custom metrics API server scaffolding and its flags.
	Base *basecmd.AdapterBase
	// Logs are the component-base logging flags.
	Logs *logsapi.LoggingConfiguration

	Source            string
	ScrapeInterval    time.Duration
	ScrapeTimeout     time.Duration
	StaleAfter        time.Duration
	ScrapeConcurrency int
	// ScrapeEvents writes an Event on a pod when its scrapes start failing and when they recover.
	ScrapeEvents      bool
	MaxBodyBytes      int64
	DisableKeepAlives bool

	PodSelector             string
	RequireScrapeAnnotation bool
	MetricsPortName         string
	WatchNamespace          string
	MetricsConfigFile       string

	PrometheusURL            string
	PrometheusTimeout        time.Duration
	PrometheusNamespaceLabel string
	PrometheusPodLabel       string

	MetricsBindAddress string
	APIServiceOwner    string

	// Guard are the ScaleGuard controller's flags.
	Guard *GuardOptions
}

// NewOptions returns the defaults: scrape the running pods labelled
// wsscale.io/scrape=true every 5s and serve websocket_connections.
func NewOptions() *Options {
	return &Options{
		Base:                     &basecmd.AdapterBase{Name: "wsscale-adapter"},
		Logs:                     logsapi.NewLoggingConfiguration(),
		Source:                   SourceScrape,
		ScrapeInterval:           scrape.DefaultInterval,
		ScrapeConcurrency:        scrape.DefaultConcurrency,
		ScrapeEvents:             true,
		MaxBodyBytes:             scrape.DefaultMaxBodyBytes,
		PodSelector:              pods.DefaultPodSelector,
		MetricsPortName:          pods.DefaultMetricsPortName,
		PrometheusTimeout:        5 * time.Second,
		PrometheusNamespaceLabel: "namespace",
		PrometheusPodLabel:       "pod",
		Guard:                    NewGuardOptions(),
	}
}

// AddFlags adds every flag, the AdapterBase's included, to fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.Base.FlagSet = fs
	o.Base.InstallFlags()
	logsapi.AddFlags(o.Logs, fs)

	fs.StringVar(&o.Source, "source", o.Source, "Where values come from: scrape (the pods' /metrics) or prometheus (an existing Prometheus, --prometheus-url).")
	fs.DurationVar(&o.ScrapeInterval, "scrape-interval", o.ScrapeInterval, "How often each pod is scraped.")
	fs.DurationVar(&o.ScrapeTimeout, "scrape-timeout", o.ScrapeTimeout, "Time allowed for one scrape, from connecting to parsing; at most --scrape-interval (0: the smaller of 3s and --scrape-interval).")
	fs.DurationVar(&o.StaleAfter, "stale-after", o.StaleAfter, "Age beyond which a value is not served (0: twice --scrape-interval; with --source=prometheus 2m, two scrapes of a Prometheus that scrapes every minute).")
	fs.IntVar(&o.ScrapeConcurrency, "scrape-concurrency", o.ScrapeConcurrency, "Scrapes in flight at most.")
	fs.Int64Var(&o.MaxBodyBytes, "scrape-max-body-bytes", o.MaxBodyBytes, "Largest metrics response accepted; a larger one fails the scrape.")
	fs.BoolVar(&o.ScrapeEvents, "scrape-events", o.ScrapeEvents, "Write an Event on a pod (ScrapeFailing with the reason, ScrapeRecovered) when its scrapes start failing and when they recover, so that kubectl describe pod and kubectl wsscale doctor show why a pod has no value; needs create and patch on events.events.k8s.io.")
	fs.BoolVar(&o.DisableKeepAlives, "scrape-disable-keep-alives", o.DisableKeepAlives, "Open a connection per scrape instead of keeping one per pod (less memory, more CPU).")
	fs.StringVar(&o.PodSelector, "pod-selector", o.PodSelector, "Label selector of the pods to track, e.g. 'app=echo' or 'tier in (ws,edge)'; applied by the API server to the watch. Empty tracks every running pod (with --require-scrape-annotation: every pod annotated prometheus.io/scrape=\"true\").")
	fs.BoolVar(&o.RequireScrapeAnnotation, "require-scrape-annotation", o.RequireScrapeAnnotation, "Also require the annotation prometheus.io/scrape=\"true\" (checked by the adapter, not the API server: every pod the selector matches is still watched; ignored with --source=prometheus, where Prometheus decides what it scrapes).")
	fs.StringVar(&o.MetricsPortName, "metrics-port-name", o.MetricsPortName, "Container port scraped when a pod has no prometheus.io/port annotation.")
	fs.StringVar(&o.WatchNamespace, "watch-namespace", o.WatchNamespace, "Track pods of this namespace only (default: all namespaces).")
	fs.StringVar(&o.MetricsConfigFile, "metrics-config", o.MetricsConfigFile, "YAML file mapping served metrics to scraped series (default: websocket_connections and websocket_connections_utilization).")
	fs.StringVar(&o.PrometheusURL, "prometheus-url", o.PrometheusURL, "Prometheus base URL, with --source=prometheus.")
	fs.DurationVar(&o.PrometheusTimeout, "prometheus-timeout", o.PrometheusTimeout, "Time allowed for one Prometheus query.")
	fs.StringVar(&o.PrometheusNamespaceLabel, "prometheus-namespace-label", o.PrometheusNamespaceLabel, "Series label holding the pod's namespace, with --source=prometheus.")
	fs.StringVar(&o.PrometheusPodLabel, "prometheus-pod-label", o.PrometheusPodLabel, "Series label holding the pod's name, with --source=prometheus.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Also serve the adapter's own metrics on this address as plain, unauthenticated HTTP /metrics, e.g. :8080 (default: off; they are always on the secure port's /metrics, behind delegated authentication and authorization).")
	o.Guard.AddFlags(fs)
	fs.StringVar(&o.APIServiceOwner, "apiservice-service", o.APIServiceOwner, "NAMESPACE/NAME of the Service that fronts this adapter, to warn at start when the custom.metrics.k8s.io APIService points elsewhere (default: wsscale-adapter in the pod's namespace).")
}

// scrapeTimeout returns the effective scrape timeout.
func (o *Options) scrapeTimeout() time.Duration {
	if o.ScrapeTimeout == 0 {
		return min(scrape.DefaultTimeout, o.ScrapeInterval)
	}
	return o.ScrapeTimeout
}

// staleAfter returns the effective staleness bound.
func (o *Options) staleAfter() time.Duration {
	if o.StaleAfter == 0 {
		if o.Source == SourcePrometheus {
			return promsource.DefaultStaleAfter
		}
		return 2 * o.ScrapeInterval
	}
	return o.StaleAfter
}

// Validate returns every problem of the options at once.
func (o *Options) Validate() []error {
	_, errs := o.validate()
	return errs
}

// validate returns every problem of the options and the served metrics,
// read from --metrics-config once (nil when it has problems).
func (o *Options) validate() ([]metricsconfig.Metric, []error) {
	var errs []error
	if o.Base.CustomMetricsAdapterServerOptions != nil {
		errs = append(errs, o.Base.CustomMetricsAdapterServerOptions.Validate()...)
	}
	switch o.Source {
	case SourceScrape:
		if o.ScrapeInterval <= 0 {
			errs = append(errs, fmt.Errorf("--scrape-interval must be positive, got %v", o.ScrapeInterval))
		}
		if o.ScrapeTimeout < 0 {
			errs = append(errs, fmt.Errorf("--scrape-timeout must not be negative, got %v", o.ScrapeTimeout))
		} else if o.ScrapeInterval > 0 && o.ScrapeTimeout > o.ScrapeInterval {
			errs = append(errs, fmt.Errorf("--scrape-timeout %v exceeds --scrape-interval %v", o.ScrapeTimeout, o.ScrapeInterval))
		}
		if o.ScrapeConcurrency < 1 {
			errs = append(errs, fmt.Errorf("--scrape-concurrency must be at least 1, got %d", o.ScrapeConcurrency))
		}
		if o.MaxBodyBytes < 1 {
			errs = append(errs, fmt.Errorf("--scrape-max-body-bytes must be positive, got %d", o.MaxBodyBytes))
		}
		if o.PrometheusURL != "" {
			errs = append(errs, errors.New("--prometheus-url needs --source=prometheus"))
		}
	case SourcePrometheus:
		if u, err := url.Parse(o.PrometheusURL); o.PrometheusURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--source=prometheus needs --prometheus-url=http(s)://host[:port], got %q", o.PrometheusURL))
		}
		if o.PrometheusTimeout <= 0 {
			errs = append(errs, fmt.Errorf("--prometheus-timeout must be positive, got %v", o.PrometheusTimeout))
		}
		if o.PrometheusNamespaceLabel == "" || o.PrometheusPodLabel == "" {
			errs = append(errs, errors.New("--prometheus-namespace-label and --prometheus-pod-label must not be empty"))
		}
	default:
		errs = append(errs, fmt.Errorf("--source must be scrape or prometheus, got %q", o.Source))
	}
	if o.StaleAfter < 0 {
		errs = append(errs, fmt.Errorf("--stale-after must not be negative, got %v", o.StaleAfter))
	} else if o.Source == SourceScrape && o.StaleAfter > 0 && o.StaleAfter < o.ScrapeInterval {
		errs = append(errs, fmt.Errorf("--stale-after %v is shorter than --scrape-interval %v: every value would go stale between scrapes", o.StaleAfter, o.ScrapeInterval))
	}
	if _, err := labels.Parse(o.PodSelector); err != nil {
		errs = append(errs, fmt.Errorf("--pod-selector %q: %w", o.PodSelector, err))
	}
	if o.MetricsPortName == "" {
		errs = append(errs, errors.New("--metrics-port-name must not be empty"))
	}
	metrics, err := o.metrics()
	if err != nil {
		errs = append(errs, fmt.Errorf("--metrics-config: %w", err))
	}
	if o.MetricsBindAddress != "0" && o.MetricsBindAddress != "" {
		if _, _, err := net.SplitHostPort(o.MetricsBindAddress); err != nil {
			errs = append(errs, fmt.Errorf("--metrics-bind-address %q: %w", o.MetricsBindAddress, err))
		}
	}
	if o.APIServiceOwner != "" {
		if ns, name, ok := strings.Cut(o.APIServiceOwner, "/"); !ok || ns == "" || name == "" {
			errs = append(errs, fmt.Errorf("--apiservice-service must be NAMESPACE/NAME, got %q", o.APIServiceOwner))
		}
	}
	errs = append(errs, o.Guard.Validate()...)
	if err := logsapi.Validate(o.Logs, nil, nil).ToAggregate(); err != nil {
		errs = append(errs, err)
	}
	return metrics, errs
}

// metrics returns the served metrics: the file's, or the defaults.
func (o *Options) metrics() ([]metricsconfig.Metric, error) {
	if o.MetricsConfigFile == "" {
		return metricsconfig.DefaultMetrics(), nil
	}
	data, err := os.ReadFile(o.MetricsConfigFile)
	if err != nil {
		return nil, err
	}
	return metricsconfig.ParseMetricsConfig(o.MetricsConfigFile, data)
}

// Config is the validated, parsed configuration, without clients: all that
// Complete needs, so that nothing refers back to the flags.
type Config struct {
	// Metrics are the served metrics.
	Metrics []metricsconfig.Metric
	// Selection says which pods are tracked.
	Selection *pods.Selection
	// WatchNamespace restricts the tracked pods to one namespace; "" is all.
	WatchNamespace string
	// Source is where values come from: SourceScrape or SourcePrometheus.
	Source string
	// Scrape configures the scraper (with SourceScrape).
	Scrape scrape.Config
	// Prometheus configures the Prometheus source (with SourcePrometheus).
	Prometheus promsource.Config
	// StaleAfter is the age beyond which values are not served.
	StaleAfter time.Duration
	// Guard configures the ScaleGuard controller.
	Guard GuardOptions
	// MetricsBindAddress, unless "" or "0", also serves the adapter's own
	// metrics there as plain HTTP.
	MetricsBindAddress string
	// APIServiceOwner is NAMESPACE/NAME of the Service that fronts the
	// adapter; "" means wsscale-adapter in the pod's namespace.
	APIServiceOwner string
	// ScrapeEvents writes an Event on a pod when its scrapes start failing and when they recover.
	ScrapeEvents bool
	// Server is the custom metrics API server scaffolding, as the flags
	// configured it; Complete builds the clients and the server from it.
	Server *basecmd.AdapterBase
}

// Config validates the options and returns the configuration; the metrics
// configuration file is read once.
func (o *Options) Config() (*Config, error) {
	metrics, errs := o.validate()
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration:\n%w", errors.Join(errs...))
	}
	metrics = withGuardMetrics(o.Guard, metrics)
	sel, err := labels.Parse(o.PodSelector)
	if err != nil {
		return nil, err
	}
	sc := scrape.NewConfig(metricsconfig.ScrapeSeries(metrics)...)
	sc.Interval, sc.Timeout, sc.Concurrency = o.ScrapeInterval, o.scrapeTimeout(), o.ScrapeConcurrency
	sc.MaxBodyBytes, sc.DisableKeepAlives = o.MaxBodyBytes, o.DisableKeepAlives
	staleAfter := o.staleAfter()
	return &Config{
		Metrics: metrics,
		Selection: &pods.Selection{
			// Prometheus decides which pods it scrapes (with a ServiceMonitor
			// they carry no prometheus.io/scrape annotation).
			Selector: sel, RequireAnnotation: o.RequireScrapeAnnotation && o.Source != SourcePrometheus,
			PortName: o.MetricsPortName,
		},
		WatchNamespace: o.WatchNamespace,
		Source:         o.Source,
		Scrape:         sc,
		Prometheus: promsource.Config{
			URL: o.PrometheusURL, Timeout: o.PrometheusTimeout, StaleAfter: staleAfter, Metrics: metrics,
			NamespaceLabel: o.PrometheusNamespaceLabel, PodLabel: o.PrometheusPodLabel,
		},
		StaleAfter:         staleAfter,
		Guard:              *o.Guard,
		MetricsBindAddress: o.MetricsBindAddress,
		APIServiceOwner:    o.APIServiceOwner,
		ScrapeEvents:       o.ScrapeEvents,
		Server:             o.Base,
	}, nil
}
