package wsecho

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons recorded in websocket_errors_total. The set is fixed so that dashboards and alerts can rely
// on it and so that every series exists (at 0) from the first scrape.
const (
	// ReasonOverCapacity: an upgrade was refused because MAX_CONNECTIONS connections are open.
	ReasonOverCapacity = "over_capacity"
	// ReasonDraining: an upgrade was refused because the server is draining.
	ReasonDraining = "draining"
	// ReasonOriginRejected: an upgrade was refused by the origin allow-list.
	ReasonOriginRejected = "origin_rejected"
	// ReasonHandshake: the request was not a valid WebSocket upgrade.
	ReasonHandshake = "handshake"
	// ReasonMessageTooBig: a message exceeded MAX_MESSAGE_BYTES (closed with 1009).
	ReasonMessageTooBig = "message_too_big"
	// ReasonInvalidUTF8: a text message was not valid UTF-8 (closed with 1007).
	ReasonInvalidUTF8 = "invalid_utf8"
	// ReasonProtocolError: the peer broke RFC 6455 framing (closed with 1002).
	ReasonProtocolError = "protocol_error"
	// ReasonReadTimeout: nothing, not even a pong, arrived within the read timeout (half-open peer).
	ReasonReadTimeout = "read_timeout"
	// ReasonWriteTimeout: the peer did not read fast enough (slow client); it was disconnected.
	ReasonWriteTimeout = "write_timeout"
	// ReasonAbnormalClosure: the peer went away without a close frame.
	ReasonAbnormalClosure = "abnormal_closure"
)

var allReasons = []string{
	ReasonOverCapacity, ReasonDraining, ReasonOriginRejected, ReasonHandshake, ReasonMessageTooBig,
	ReasonInvalidUTF8, ReasonProtocolError, ReasonReadTimeout, ReasonWriteTimeout, ReasonAbnormalClosure,
}

// metrics holds the server's Prometheus instruments. Their names are a contract with the adapter,
// the charts and the dashboard; do not rename them.
type metrics struct {
	active      prometheus.Gauge
	total       prometheus.Counter
	messagesIn  prometheus.Counter
	messagesOut prometheus.Counter
	errors      *prometheus.CounterVec
	max         prometheus.Gauge
	draining    prometheus.Gauge
	duration    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, maxConnections int) *metrics {
	messages := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "websocket_messages_total",
		Help: "WebSocket data messages by direction (in: received from clients, out: sent to clients).",
	}, []string{"direction"})
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "websocket_connections_active",
			Help: "WebSocket connections currently open.",
		}),
		total: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "websocket_connections_total",
			Help: "WebSocket connections accepted since start.",
		}),
		messagesIn:  messages.WithLabelValues("in"),
		messagesOut: messages.WithLabelValues("out"),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "websocket_errors_total",
			Help: "Refused upgrades and connections ended by an error, by reason.",
		}, []string{"reason"}),
		max: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "websocket_connections_max",
			Help: "Configured limit of concurrent WebSocket connections (MAX_CONNECTIONS).",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "websocket_draining",
			Help: "1 while the server drains or stays drained (drain label, SIGTERM) and refuses new clients, else 0.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "websocket_connection_duration_seconds",
			Help: "How long WebSocket connections stayed open.",
			// 100ms .. ~1.5 days: chat and trading sessions last from seconds to days.
			Buckets: prometheus.ExponentialBuckets(0.1, 4, 10),
		}),
	}
	for _, r := range allReasons {
		m.errors.WithLabelValues(r)
	}
	m.max.Set(float64(maxConnections))
	reg.MustRegister(m.active, m.total, messages, m.errors, m.max, m.draining, m.duration)
	return m
}
