#!/usr/bin/env bash
# The demo: starts the local cluster, runs the reference WebSocket server as a Deployment behind a
# NodePort Service and the custom metrics adapter, holds connections on the server with the load
# client, and shows each pod's connection count as the HPA reads it (custom.metrics.k8s.io). It
# scales the Deployment down by hand: the removed pod drains, its clients get a 1001 close frame
# spread over the drain window and reconnect (with jittered back-off) to the others. Then an HPA
# takes over and scales the Deployment on open connections.
# The cluster keeps running afterwards; `make cluster-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${DEMO_CONNECTIONS:-1500}
node_port=30080
ns=wsscale-demo
kubeconfig=.local/kubeconfig

make --no-print-directory cluster-up
go build -o bin/wsecho ./cmd/echo
kubectl=.local/bin/kubectl # pinned with the control plane, built by cluster-up
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

echo "== the custom metrics adapter (custom.metrics.k8s.io), installed with its chart"
helm=.local/bin/helm # pinned, built by cluster-up
KUBECONFIG="$kubeconfig" "$helm" upgrade --install wsscale deploy/helm/wsscale -n wsscale-system --create-namespace \
  --set adapter.scrapeInterval=2s
echo "== the echo server: a Deployment of 3 pods behind a NodePort Service"
k create namespace "$ns" --dry-run=client -o yaml | k apply -f -
k apply -f hack/demo/echo.yaml
k -n "$ns" rollout status deployment/echo --timeout=180s
k -n wsscale-system rollout status deployment/wsscale --timeout=180s
k wait --for=condition=Available --timeout=120s apiservice/v1beta2.custom.metrics.k8s.io
k -n "$ns" get pods -o wide

# websocket_connections of every echo pod, as the HPA reads it through the aggregated API.
show_pods() {
  k get --raw "/apis/custom.metrics.k8s.io/v1beta2/namespaces/$ns/pods/*/websocket_connections" |
    tr '{},' '\n\n\n' | awk -F'"' '/"name":"echo-/{pod=$4} /"value":/{v=$0; sub(/.*"value":/, "", v); gsub(/"/, "", v); printf "   %-28s websocket_connections: %s\n", pod, v}'
}

echo "== $connections clients through 127.0.0.1:$node_port, each sending a message every second"
./bin/wsecho load --url "ws://127.0.0.1:$node_port/ws" -c "$connections" --rate 500 \
  --message-interval 1s --reconnect -d 70s --progress-interval 5s > .local/demo-load.txt &
load=$!
trap 'kill $load 2>/dev/null || true' EXIT
sleep 12
echo "== connections per pod, from /apis/custom.metrics.k8s.io"
show_pods
echo "== scale to 2 replicas: the pod that goes drains (after a 3s shutdown delay, 1001 closes over 10s), its clients reconnect"
k -n "$ns" scale deployment/echo --replicas=2
sleep 19
echo "== after the drain"
show_pods
echo "== an HPA takes over: 300 connections per pod on average (hack/demo/hpa.yaml)"
k apply -f hack/demo/hpa.yaml
sleep 20
k -n "$ns" get hpa echo
k -n "$ns" get pods
wait $load || true
trap - EXIT
echo "== load client summary"
cat .local/demo-load.txt
cat <<MSG

The cluster keeps running; with the clients gone the HPA scales back to its minimum after the
stabilisation window. Try:
  $kubectl --kubeconfig $kubeconfig -n $ns describe hpa echo
  $kubectl --kubeconfig $kubeconfig get --raw /apis/custom.metrics.k8s.io/v1beta2/namespaces/$ns/pods/*/websocket_connections
  ./bin/wsecho load --url ws://127.0.0.1:$node_port/ws -c 100 -d 30s
Stop it with: make cluster-down
MSG
