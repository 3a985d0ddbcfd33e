// Command dashboard generates the Grafana dashboard of the websocket-app chart with the Grafana
// Foundation SDK: `go run . OUTPUT` writes it as JSON (make update-dashboard).
//
// It is its own module so that the SDK stays out of the product's dependencies. The dashboard's
// queries name only metrics that are exported by the echo server (websocket_*), the adapter
// (wsscale_adapter_*, wsscale_guard_*) or kube-state-metrics (the HPA's replicas); a test in
// test/dashboard checks every name against the real exporters.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// The dashboard's UID: stable, so that the sidecar updates the same dashboard on every upgrade.
const uid = "wsscale-websocket-app"

// datasource is the dashboard's Prometheus, chosen by the $datasource variable.
var datasource = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// pods is the label filter of the server's series: the chosen namespace and pods.
const pods = `namespace=~"$namespace", pod=~"$pod"`

// nextID numbers the panels and rows: Grafana links, shares and embeds a panel by its id.
var nextID uint32

func id() uint32 {
	nextID++
	return nextID
}

func row(title string) *dashboard.RowBuilder { return dashboard.NewRowBuilder(title).Id(id()) }

func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Datasource(datasource).Expr(expr).LegendFormat(legend).Range()
}

func series(title, description, unit string, span uint32, queries ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().Id(id()).Title(title).Description(description).Datasource(datasource).
		Unit(unit).Min(0).Span(span).Height(8).FillOpacity(10)
	for _, q := range queries {
		p = p.WithTarget(q)
	}
	return p
}

func single(title, description, unit string, span uint32, q *prometheus.DataqueryBuilder) *stat.PanelBuilder {
	return stat.NewPanelBuilder().Id(id()).Title(title).Description(description).Datasource(datasource).
		Unit(unit).Span(span).Height(4).WithTarget(q.Instant())
}

func variable(name, label, q string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).Label(label).Datasource(datasource).
		Query(dashboard.StringOrMap{String: cog.ToPtr(q)}).Definition(q).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).Multi(true).IncludeAll(true).AllValue(".*")
}

func build() (dashboard.Dashboard, error) {
	return dashboard.NewDashboardBuilder("WebSocket app (wsscale)").
		Uid(uid).
		Description("Open connections per pod, connection churn, drains and the autoscaling decisions of the HPA, the wsscale adapter and its ScaleGuard.").
		Tags([]string{"wsscale", "websocket"}).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Prometheus").Type("prometheus")).
		WithVariable(variable("namespace", "Namespace", `label_values(websocket_connections_active, namespace)`)).
		WithVariable(variable("pod", "Pod", `label_values(websocket_connections_active{namespace=~"$namespace"}, pod)`)).
		WithRow(row("Connections")).
		WithPanel(single("Open connections", "All open WebSocket connections of the chosen pods.", "short", 6,
			query(`sum(websocket_connections_active{`+pods+`})`, "open"))).
		WithPanel(single("Pods draining", "Pods that refuse new clients and close theirs with 1001: marked by the ScaleGuard or terminating.", "short", 6,
			query(`sum(websocket_draining{`+pods+`})`, "draining"))).
		WithPanel(single("Connect rate", "Connections accepted per second.", "cps", 6,
			query(`sum(rate(websocket_connections_total{`+pods+`}[$__rate_interval]))`, "connects"))).
		WithPanel(single("Disconnect rate", "Connections ended per second, whoever closed them.", "cps", 6,
			query(`sum(rate(websocket_connection_duration_seconds_count{`+pods+`}[$__rate_interval]))`, "disconnects"))).
		WithPanel(series("Connections per pod", "Open connections of each pod: what the HPA averages (websocket_connections) and the ScaleGuard ranks victims by. A pod at its limit refuses upgrades with 503.", "short", 12,
			query(`sum by (pod) (websocket_connections_active{`+pods+`})`, "{{pod}}"),
			query(`max(websocket_connections_max{`+pods+`})`, "limit per pod"))).
		WithPanel(series("Drain state per pod", "1 while a pod drains: its clients get 1001 spread over DRAIN_TIMEOUT and the Service no longer sends it new ones.", "short", 12,
			query(`max by (pod) (websocket_draining{`+pods+`})`, "{{pod}}"))).
		WithPanel(series("Connects and disconnects", "Connections accepted and ended per second, per pod. Disconnects that spike together with a drain are a scale-down's cost.", "cps", 12,
			query(`sum by (pod) (rate(websocket_connections_total{`+pods+`}[$__rate_interval]))`, "connect {{pod}}"),
			query(`-sum by (pod) (rate(websocket_connection_duration_seconds_count{`+pods+`}[$__rate_interval]))`, "disconnect {{pod}}"))).
		WithPanel(series("Messages", "Data messages per second, received from and sent to clients.", "short", 12,
			query(`sum by (direction) (rate(websocket_messages_total{`+pods+`}[$__rate_interval]))`, "{{direction}}"))).
		WithPanel(series("Errors by reason", "Refused upgrades (over_capacity, draining, origin_rejected, handshake) and connections ended by an error, per second.", "short", 12,
			query(`sum by (reason) (rate(websocket_errors_total{`+pods+`}[$__rate_interval])) > 0`, "{{reason}}"))).
		WithPanel(series("Connection duration (p50, p99)", "How long connections stayed open before they ended.", "s", 12,
			query(`histogram_quantile(0.5, sum by (le) (rate(websocket_connection_duration_seconds_bucket{`+pods+`}[$__rate_interval])))`, "p50"),
			query(`histogram_quantile(0.99, sum by (le) (rate(websocket_connection_duration_seconds_bucket{`+pods+`}[$__rate_interval])))`, "p99"))).
		WithRow(row("Autoscaling")).
		WithPanel(series("HPA replicas: desired and current", "What the HPA asks for and what it sees (kube-state-metrics). With a ScaleGuard, current counts the pods that are not draining.", "short", 12,
			query(`max by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_desired_replicas{namespace=~"$namespace"})`, "desired {{horizontalpodautoscaler}}"),
			query(`max by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_current_replicas{namespace=~"$namespace"})`, "current {{horizontalpodautoscaler}}"),
			query(`max by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_spec_max_replicas{namespace=~"$namespace"})`, "max {{horizontalpodautoscaler}}"))).
		WithPanel(series("ScaleGuard: scale-down blocked", "1 while a ScaleGuard holds a scale-down, by reason (BudgetExhausted, MetricsUnavailable, RolloutInProgress, ...).", "short", 12,
			query(`max by (scaleguard, reason) (wsscale_guard_blocked) > 0`, "{{scaleguard}}: {{reason}}"))).
		WithPanel(series("ScaleGuard: steps and victims", "Scale-down steps ended per hour by outcome, and pods marked to drain.", "short", 12,
			query(`sum by (scaleguard, outcome) (increase(wsscale_guard_steps_total[1h]))`, "{{scaleguard}} steps {{outcome}}"),
			query(`sum by (scaleguard) (increase(wsscale_guard_victims_total[1h]))`, "{{scaleguard}} victims"))).
		WithPanel(series("ScaleGuard: disconnects and budget", "Clients disconnected by scale-downs (ledger), and what the disconnect budget's current window has used.", "short", 12,
			query(`sum by (scaleguard) (increase(wsscale_guard_connections_disconnected_total[1h]))`, "{{scaleguard}} disconnected per hour"),
			query(`max by (scaleguard) (wsscale_guard_budget_used)`, "{{scaleguard}} budget used"))).
		WithRow(row("Adapter")).
		WithPanel(series("Scrape errors", "Failed scrapes of the pods' metrics per second, by reason: a pod without a fresh value holds the HPA and the ScaleGuard.", "short", 8,
			query(`sum by (reason) (rate(wsscale_adapter_scrape_errors_total[$__rate_interval])) > 0`, "{{reason}}"))).
		WithPanel(series("Value freshness", "Tracked pods by the state of their last scrape: only fresh values are served to the HPA.", "short", 8,
			query(`sum by (state) (wsscale_adapter_pod_values)`, "{{state}}"),
			query(`sum(wsscale_adapter_pods_tracked)`, "tracked"))).
		WithPanel(series("Scrape and API latency (p99)", "Time of one pod scrape and of one custom metrics API answer.", "s", 8,
			query(`histogram_quantile(0.99, sum by (le) (rate(wsscale_adapter_scrape_duration_seconds_bucket[$__rate_interval])))`, "scrape"),
			query(`histogram_quantile(0.99, sum by (le) (rate(wsscale_adapter_api_request_duration_seconds_bucket[$__rate_interval])))`, "API"))).
		Build()
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dashboard OUTPUT.json")
		os.Exit(2)
	}
	d, err := build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build the dashboard:", err)
		os.Exit(1)
	}
	data, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "encode the dashboard:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(os.Args[1], append(data, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
