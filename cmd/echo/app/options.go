package app

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/wsscale/wsscale/pkg/wsecho"
)

// ServerOptions are the echo server's settings. Each one can be set by an environment variable (the
// names are a contract with the charts) and overridden by a flag.
type ServerOptions struct {
	BindAddress          string
	Port                 int
	MetricsPort          int
	MaxConnections       int
	PingIntervalMillis   int
	ReadTimeout          time.Duration
	WriteTimeout         time.Duration
	HandshakeTimeout     time.Duration
	DrainTimeout         time.Duration
	ShutdownDelay        time.Duration
	CloseGrace           time.Duration
	ReleaseMemoryAfter   time.Duration
	AllowedOrigins       string
	MaxMessageBytes      int64
	DrainLabelsFile      string
	DrainAnnotationsFile string
	DrainPoll            time.Duration

	// envErrors are the environment variables that could not be parsed; Validate reports them.
	envErrors []error
}

// NewServerOptions returns the defaults, overridden by the environment read through getenv.
func NewServerOptions(getenv func(string) (string, bool)) *ServerOptions {
	o := &ServerOptions{
		Port:               8080,
		MetricsPort:        9090,
		MaxConnections:     10000,
		PingIntervalMillis: 30000,
		WriteTimeout:       10 * time.Second,
		HandshakeTimeout:   10 * time.Second,
		DrainTimeout:       30 * time.Second,
		ShutdownDelay:      5 * time.Second,
		CloseGrace:         2 * time.Second,
		ReleaseMemoryAfter: 10 * time.Second,
		MaxMessageBytes:    65536,
		DrainPoll:          time.Second,
	}
	e := envReader{getenv: getenv}
	e.str("BIND_ADDRESS", &o.BindAddress)
	e.int("PORT", &o.Port)
	e.int("METRICS_PORT", &o.MetricsPort)
	e.int("MAX_CONNECTIONS", &o.MaxConnections)
	e.int("PING_INTERVAL", &o.PingIntervalMillis)
	e.duration("DRAIN_TIMEOUT", &o.DrainTimeout)
	e.duration("SHUTDOWN_DELAY", &o.ShutdownDelay)
	e.str("ALLOWED_ORIGINS", &o.AllowedOrigins)
	e.int64("MAX_MESSAGE_BYTES", &o.MaxMessageBytes)
	e.str("DRAIN_LABELS_FILE", &o.DrainLabelsFile)
	e.str("DRAIN_ANNOTATIONS_FILE", &o.DrainAnnotationsFile)
	o.envErrors = e.errs
	return o
}

// AddFlags registers the flags; each flag's default is the value from the environment.
func (o *ServerOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.BindAddress, "bind-address", o.BindAddress, "Address to listen on; empty means all (env BIND_ADDRESS).")
	fs.IntVar(&o.Port, "port", o.Port, "Port of the WebSocket endpoint /ws and of /health and /livez (env PORT).")
	fs.IntVar(&o.MetricsPort, "metrics-port", o.MetricsPort, "Port of the Prometheus /metrics endpoint (env METRICS_PORT).")
	fs.IntVar(&o.MaxConnections, "max-connections", o.MaxConnections, "Concurrent connections accepted; more get 503 with Retry-After (env MAX_CONNECTIONS).")
	fs.IntVar(&o.PingIntervalMillis, "ping-interval", o.PingIntervalMillis, "Milliseconds between keep-alive pings to each client (env PING_INTERVAL).")
	fs.DurationVar(&o.ReadTimeout, "read-timeout", o.ReadTimeout, "How long a connection may stay silent (no message, no pong) before it is dropped as half-open; 0 means twice the ping interval.")
	fs.DurationVar(&o.WriteTimeout, "write-timeout", o.WriteTimeout, "How long a write may block; a client that does not read for longer is disconnected.")
	fs.DurationVar(&o.HandshakeTimeout, "handshake-timeout", o.HandshakeTimeout, "How long a client may take to send its upgrade request.")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "Window over which connections are closed (1001) when draining (env DRAIN_TIMEOUT).")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", o.ShutdownDelay, "After SIGTERM, how long to stay unready but still accept upgrades before draining, while endpoints stop sending clients; 0 if a preStop hook already waits (env SHUTDOWN_DELAY).")
	fs.DurationVar(&o.CloseGrace, "close-grace", o.CloseGrace, "How long to wait for a client's close frame after sending one.")
	fs.DurationVar(&o.ReleaseMemoryAfter, "release-memory-after", o.ReleaseMemoryAfter, "After traffic, once no message has arrived and no connection opened or ended for this long, return the memory the traffic left behind (buffers, garbage) to the operating system; 0 never does.")
	fs.StringVar(&o.AllowedOrigins, "allowed-origins", o.AllowedOrigins, "Comma-separated browser origins allowed to connect (scheme://host[:port], scheme://*.domain, or *). Empty: clients without Origin and same-origin pages only (env ALLOWED_ORIGINS).")
	fs.Int64Var(&o.MaxMessageBytes, "max-message-bytes", o.MaxMessageBytes, "Largest message accepted; larger ones close the connection with 1009 (env MAX_MESSAGE_BYTES).")
	fs.StringVar(&o.DrainLabelsFile, "drain-labels-file", o.DrainLabelsFile, "Downward-API file of the pod's metadata.labels; the server drains while it holds wsscale.io/drain=\"true\" and serves again when the label is removed (env DRAIN_LABELS_FILE).")
	fs.StringVar(&o.DrainAnnotationsFile, "drain-annotations-file", o.DrainAnnotationsFile, "Downward-API file of the pod's metadata.annotations, read like --drain-labels-file (env DRAIN_ANNOTATIONS_FILE).")
	fs.DurationVar(&o.DrainPoll, "drain-poll-interval", o.DrainPoll, "How often the drain label and annotation files are read.")
	fs.DurationVar(&o.DrainPoll, "annotations-poll-interval", o.DrainPoll, "Old name of --drain-poll-interval.")
	_ = fs.MarkDeprecated("annotations-poll-interval", "use --drain-poll-interval")
}

// Validate returns every problem with the options, each naming its variable.
func (o *ServerOptions) Validate() []error {
	errs := append([]error(nil), o.envErrors...)
	port := func(name string, v int) {
		if v < 1 || v > 65535 {
			errs = append(errs, fmt.Errorf("%s: must be a port between 1 and 65535, got %d", name, v))
		}
	}
	port("PORT (--port)", o.Port)
	port("METRICS_PORT (--metrics-port)", o.MetricsPort)
	if o.Port == o.MetricsPort {
		errs = append(errs, fmt.Errorf("PORT and METRICS_PORT must differ, both are %d", o.Port))
	}
	if o.MaxConnections < 1 {
		errs = append(errs, fmt.Errorf("MAX_CONNECTIONS (--max-connections): must be at least 1, got %d", o.MaxConnections))
	}
	if o.PingIntervalMillis < 1 {
		errs = append(errs, fmt.Errorf("PING_INTERVAL (--ping-interval): must be at least 1 millisecond, got %d", o.PingIntervalMillis))
	}
	if o.ReadTimeout < 0 || (o.ReadTimeout > 0 && o.ReadTimeout <= o.pingInterval()) {
		errs = append(errs, fmt.Errorf("--read-timeout: must exceed PING_INTERVAL (%v), got %v", o.pingInterval(), o.ReadTimeout))
	}
	if o.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("DRAIN_TIMEOUT (--drain-timeout): must not be negative, got %v", o.DrainTimeout))
	}
	if o.ShutdownDelay < 0 {
		errs = append(errs, fmt.Errorf("SHUTDOWN_DELAY (--shutdown-delay): must not be negative, got %v", o.ShutdownDelay))
	}
	if o.ReleaseMemoryAfter < 0 {
		errs = append(errs, fmt.Errorf("--release-memory-after: must not be negative, got %v", o.ReleaseMemoryAfter))
	}
	if o.MaxMessageBytes < 1 {
		errs = append(errs, fmt.Errorf("MAX_MESSAGE_BYTES (--max-message-bytes): must be at least 1, got %d", o.MaxMessageBytes))
	}
	for name, d := range map[string]time.Duration{
		"--write-timeout": o.WriteTimeout, "--handshake-timeout": o.HandshakeTimeout,
		"--close-grace": o.CloseGrace, "--drain-poll-interval": o.DrainPoll,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %v", name, d))
		}
	}
	if _, err := wsecho.ParseOriginPolicy(o.AllowedOrigins); err != nil {
		errs = append(errs, fmt.Errorf("ALLOWED_ORIGINS (--allowed-origins): %w", err))
	}
	return errs
}

func (o *ServerOptions) pingInterval() time.Duration {
	return time.Duration(o.PingIntervalMillis) * time.Millisecond
}

// DrainFiles returns the downward-API files to watch for the drain marker.
func (o *ServerOptions) DrainFiles() []string {
	var files []string
	for _, f := range []string{o.DrainLabelsFile, o.DrainAnnotationsFile} {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
}

// Config turns validated options into the server's configuration.
func (o *ServerOptions) Config() (wsecho.Config, error) {
	if errs := o.Validate(); len(errs) > 0 {
		return wsecho.Config{}, errors.Join(errs...)
	}
	origins, _ := wsecho.ParseOriginPolicy(o.AllowedOrigins)
	readTimeout := o.ReadTimeout
	if readTimeout == 0 {
		readTimeout = 2 * o.pingInterval()
	}
	return wsecho.Config{
		MaxConnections:     o.MaxConnections,
		MaxMessageBytes:    o.MaxMessageBytes,
		PingInterval:       o.pingInterval(),
		ReadTimeout:        readTimeout,
		WriteTimeout:       o.WriteTimeout,
		HandshakeTimeout:   o.HandshakeTimeout,
		DrainTimeout:       o.DrainTimeout,
		ShutdownDelay:      o.ShutdownDelay,
		CloseGrace:         o.CloseGrace,
		ReleaseMemoryAfter: o.ReleaseMemoryAfter,
		RetryAfter:         5 * time.Second,
		Origins:            origins,
	}, nil
}

// envReader parses environment variables into option fields and collects the ones that are invalid.
type envReader struct {
	getenv func(string) (string, bool)
	errs   []error
}

// OSEnv reads the process environment.
func OSEnv(name string) (string, bool) { return os.LookupEnv(name) }

func (e *envReader) str(name string, dst *string) {
	if v, ok := e.getenv(name); ok {
		*dst = v
	}
}

func (e *envReader) int(name string, dst *int) {
	if v, ok := e.getenv(name); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not an integer", name, v))
			return
		}
		*dst = n
	}
}

func (e *envReader) int64(name string, dst *int64) {
	if v, ok := e.getenv(name); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not an integer", name, v))
			return
		}
		*dst = n
	}
}

func (e *envReader) duration(name string, dst *time.Duration) {
	if v, ok := e.getenv(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not a duration (e.g. 30s, 2m)", name, v))
			return
		}
		*dst = d
	}
}
