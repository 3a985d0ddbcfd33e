#!/usr/bin/env bash
# The demo: starts the local cluster, runs the reference WebSocket server as a Deployment behind a
# NodePort Service, holds connections on it with the load client while showing each pod's
# connection count, then scales the Deployment down: the removed pod drains, its clients get a 1001
# close frame spread over the drain window and reconnect (with jittered back-off) to the others.
# The cluster keeps running afterwards; `make cluster-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${DEMO_CONNECTIONS:-1500}
node_port=30080
ns=wsscale-demo
kubeconfig=.local/kubeconfig

make --no-print-directory cluster-up
go build -o bin/ ./cmd/echo
kubectl=.local/bin/kubectl # pinned with the control plane, built by cluster-up
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

echo "== the echo server: a Deployment of 3 pods behind a NodePort Service"
k create namespace "$ns" --dry-run=client -o yaml | k apply -f -
k apply -f hack/demo/echo.yaml
k -n "$ns" rollout status deployment/echo --timeout=180s
k -n "$ns" get pods -o wide

# Each pod's websocket_connections_active, read through the API server's pod proxy.
show_pods() {
  local pods
  pods=$(k -n "$ns" get pods -l app.kubernetes.io/name=echo -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}')
  for p in $pods; do
    local v
    v=$(k get --raw "/api/v1/namespaces/$ns/pods/$p:9090/proxy/metrics" 2>/dev/null |
      awk '$1=="websocket_connections_active"{print $2} $1=="websocket_draining"{d=$2} END{if(d=="1") print "(draining)"}' | paste -sd' ')
    printf '   %-28s connections: %s\n' "$p" "${v:-unknown}"
  done
}

echo "== $connections clients through 127.0.0.1:$node_port, each sending a message every second"
./bin/echo load --url "ws://127.0.0.1:$node_port/ws" -c "$connections" --rate 500 \
  --message-interval 1s --reconnect -d 40s --progress-interval 5s > .local/demo-load.txt &
load=$!
trap 'kill $load 2>/dev/null || true' EXIT
sleep 12
echo "== connections per pod"
show_pods
echo "== scale to 2 replicas: the pod that goes drains (1001 closes over 10s), its clients reconnect"
k -n "$ns" scale deployment/echo --replicas=2
sleep 6
show_pods
sleep 10
echo "== after the drain"
show_pods
wait $load || true
trap - EXIT
echo "== load client summary"
cat .local/demo-load.txt
cat <<MSG

The cluster keeps running. Try:
  $kubectl --kubeconfig $kubeconfig -n $ns get pods,svc,endpointslices
  ./bin/echo load --url ws://127.0.0.1:$node_port/ws -c 100 -d 30s
Stop it with: make cluster-down
MSG
