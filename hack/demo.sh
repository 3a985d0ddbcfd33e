#!/usr/bin/env bash
# The demo: starts the local cluster, installs the custom metrics adapter (with the ScaleGuard
# controller) and the reference WebSocket server with their charts (the server as a Deployment behind
# a NodePort Service, with a ScaleGuard and an HPA), and holds deliberately uneven connections on four
# echo pods with the load client. Then the HPA, pointed at the ScaleGuard, asks for two pods: the guard drains the two least-connected pods (their clients get a
# 1001 close frame and reconnect to the others) before it lowers the Deployment, and its Events say
# which pods it chose and why. The demo compares the clients cut with what a choice blind to
# connections (the ReplicaSet's, under a plain HPA) would cut.
# The cluster keeps running afterwards; `make cluster-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${DEMO_CONNECTIONS:-1200} # held by two of the pods
few=${DEMO_FEW_CONNECTIONS:-60}       # spread over all four
node_port=30080
ingress=${DEMO_INGRESS:-} # traefik: the clients go through Traefik (deploy/traefik) and an Ingress
ns=wsscale-demo
kubeconfig=.local/kubeconfig

make --no-print-directory cluster-up
go build -o bin/wsecho ./cmd/echo
go build -o bin/kubectl-wsscale ./cmd/kubectl-wsscale
kubectl=.local/bin/kubectl # pinned with the control plane, built by cluster-up
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

echo "== the custom metrics adapter (custom.metrics.k8s.io), which runs the ScaleGuard controller, with its chart"
echo "   (deploy/helm/wsscale: the adapter, its APIServices and RBAC, the ScaleGuard CRD and the guard's role)"
helm=.local/bin/helm # pinned, built by cluster-up
KUBECONFIG="$kubeconfig" "$helm" upgrade --install wsscale deploy/helm/wsscale -n wsscale-system --create-namespace \
  --set adapter.scrapeInterval=2s
k wait --for=condition=Established --timeout=60s crd/scaleguards.autoscaling.wsscale.io
echo "== the echo server with its chart (deploy/helm/websocket-app, values hack/demo/chart/echo-values.yaml):"
echo "   a Deployment behind a NodePort Service, a ScaleGuard between it and an HPA held at 4 pods for now"
k create namespace "$ns" --dry-run=client -o yaml | k apply -f -
# Objects of an earlier demo that applied plain manifests are not the chart's: remove them first.
if ! KUBECONFIG="$kubeconfig" "$helm" status echo -n "$ns" >/dev/null 2>&1; then
  k -n "$ns" delete hpa/echo scaleguard/echo deployment/echo service/echo --ignore-not-found --wait=true
fi
# A rerun's upgrade puts the HPA's bounds back to 4, and the guard scales the Deployment up to them.
KUBECONFIG="$kubeconfig" "$helm" upgrade --install echo deploy/helm/websocket-app -n "$ns" -f hack/demo/chart/echo-values.yaml
k -n "$ns" wait --for=jsonpath='{.status.replicas}'=4 deployment/echo --timeout=180s
k -n "$ns" rollout status deployment/echo --timeout=180s
k -n wsscale-system rollout status deployment/wsscale --timeout=180s
case "$ingress" in
"") ;;
traefik)
  echo "== Traefik (deploy/traefik) in front: clients -> Traefik NodePort 30880 -> Ingress hack/demo/traefik-ingress.yaml -> pods"
  hack/traefik-up.sh "$kubeconfig"
  k apply -f hack/demo/traefik-ingress.yaml
  node_port=30880
  for _ in $(seq 30); do # Traefik serves the route once it has read the Ingress
    ./bin/wsecho load --url "ws://127.0.0.1:$node_port/ws" -c 1 -d 1s -q -o json 2>/dev/null | grep -q '"opened": 1' && break
    sleep 1
  done
  ;;
*) echo "DEMO_INGRESS=$ingress: want traefik or nothing" >&2; exit 1 ;;
esac
k wait --for=condition=Available --timeout=120s apiservice/v1beta2.custom.metrics.k8s.io

# The echo pods that are not terminating, oldest first.
live_pods() {
  k -n "$ns" get pods -l app.kubernetes.io/name=echo --sort-by=.metadata.creationTimestamp \
    -o jsonpath='{range .items[?(@.status.phase=="Running")]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}' |
    awk 'NF==1{print $1}'
}
for _ in $(seq 60); do
  mapfile -t pods < <(live_pods)
  [ "${#pods[@]}" -eq 4 ] && break
  sleep 1
done
[ "${#pods[@]}" -eq 4 ] || { echo "want 4 running echo pods, have: ${pods[*]}" >&2; exit 1; }

# websocket_connections of every echo pod, as the HPA and the guard read it (custom.metrics.k8s.io).
pod_values() {
  k get --raw "/apis/custom.metrics.k8s.io/v1beta2/namespaces/$ns/pods/*/websocket_connections" |
    tr '{},' '\n\n\n' | awk -F'"' '/"name":"echo-/{pod=$4} /"value":/{v=$0; sub(/.*"value":/, "", v); gsub(/"/, "", v); print pod, v}'
}
show_pods() { pod_values | awk '{printf "   %-28s websocket_connections: %s\n", $1, $2}'; }
# Waits until the adapter sees $1 connections in all.
wait_total() {
  for _ in $(seq 60); do
    [ "$(pod_values | awk '{s+=$2} END{print s+0}')" -ge "$1" ] && return 0
    sleep 1
  done
  echo "the adapter never saw $1 connections" >&2
  show_pods >&2
  return 1
}

load() { # name, connections
  ./bin/wsecho load --url "ws://127.0.0.1:$node_port/ws" -c "$2" --rate 500 --message-interval 5s \
    --reconnect -d 10m -q -o json > ".local/demo-load-$1.json" &
}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

echo "== uneven load: ${pods[0]} and ${pods[1]} leave the Service for a moment (the drain label, by hand),"
echo "   so that $connections clients all go to ${pods[2]} and ${pods[3]}"
k -n "$ns" label pod "${pods[0]}" "${pods[1]}" wsscale.io/drain=true
k -n "$ns" wait --for=condition=Ready=false pod/"${pods[0]}" pod/"${pods[1]}" --timeout=60s
sleep 2 # the NodePort follows the Service's endpoints
load many "$connections"
wait_total "$connections"
k -n "$ns" label pod "${pods[0]}" "${pods[1]}" wsscale.io/drain-
k -n "$ns" wait --for=condition=Ready pod/"${pods[0]}" pod/"${pods[1]}" --timeout=60s
sleep 2
echo "== $few more clients, spread over the four pods"
load few "$few"
wait_total $((connections + few))
sleep 2
echo "== connections per pod, from /apis/custom.metrics.k8s.io"
show_pods

echo "== the chart's ScaleGuard between the HPA and the Deployment: at most 100 clients cut per minute"
k -n "$ns" wait --for=jsonpath='{.spec.replicas}'=4 scaleguard/echo --timeout=90s
k -n "$ns" get scaleguard echo
# What a choice blind to connections would cut taking 4 pods to 2: the ReplicaSet ranks by
# readiness, deletion cost, node and age, never by clients.
read -r guard_cut blind_avg blind_worst < <(pod_values | sort -k2 -n | awk '{v[NR]=$2; s+=$2} END{print v[1]+v[2], int(s/2), v[3]+v[4]}')

bin/kubectl-wsscale --kubeconfig "$kubeconfig" -n "$ns" record echo --duration 10m -o .local/demo-timeline.svg >/dev/null &
record=$!
echo "== the HPA targets the ScaleGuard; helm upgrade lowers its minimum to 2: 700 connections per pod on average ask for 2 pods"
KUBECONFIG="$kubeconfig" "$helm" upgrade echo deploy/helm/websocket-app -n "$ns" --reuse-values \
  --set autoscaling.minReplicas=2,autoscaling.maxReplicas=6
last=""
for _ in $(seq 150); do
  state=$(k -n "$ns" get scaleguard echo -o jsonpath='desired {.spec.replicas}, applied {.status.appliedReplicas}, {.status.state} {.status.step.victims[*].name}')
  [ "$state" != "$last" ] && echo "   ScaleGuard: $state" && last=$state
  case "$state" in "desired 2, applied 2, Steady "*) break ;; esac
  sleep 1
done
echo "== why those pods: the ScaleGuard's Events (kubectl describe scaleguard echo)"
k -n "$ns" describe scaleguard echo | sed -n '/^Events:/,$p'
k -n "$ns" get scaleguard,hpa
sleep 8 # the cut clients reconnect to the remaining pods (jittered back-off)
echo "== after the scale-down: the clients that were cut have reconnected to the pods that stay"
show_pods

kill -INT "$record" && wait "$record" && echo "== the scale-down as a picture (kubectl wsscale record): .local/demo-timeline.svg"
kill -TERM $(jobs -p) 2>/dev/null || true
wait || true
trap - EXIT
cut=0
for f in .local/demo-load-many.json .local/demo-load-few.json; do
  summary=$(tr -d ' \n' < "$f")
  n=$(grep -o '"1001":[0-9]*' <<<"$summary" | cut -d: -f2 || true)
  cut=$((cut + ${n:-0}))
  echo "   $f: $(grep -o '"closesByServerCode":{[^}]*}' <<<"$summary"), $(grep -o '"abnormalDrops":[0-9]*' <<<"$summary")"
done
cat <<MSG

== connections cut by the scale-down 4 → 2
   with the ScaleGuard:             $cut, each with a 1001 close frame (the two least-connected pods held
                                    $guard_cut; a client that reconnected to a victim before it left the
                                    Service's endpoints is cut again)
   a choice blind to connections:   $blind_avg on average, up to $blind_worst (the two fullest pods)

The cluster keeps running. Try:
  $kubectl --kubeconfig $kubeconfig -n $ns get scaleguards
  $kubectl --kubeconfig $kubeconfig -n $ns scale scaleguard/echo --replicas=3
  $kubectl --kubeconfig $kubeconfig -n $ns describe scaleguard echo
  bin/kubectl-wsscale --kubeconfig $kubeconfig -n $ns status    (or doctor; on PATH: kubectl wsscale)
  ./bin/wsecho load --url ws://127.0.0.1:$node_port/ws -c 100 -d 30s
Stop it with: make cluster-down
MSG
