#!/usr/bin/env bash
# The demo: runs the reference WebSocket server, holds connections on it with the load client while
# printing progress, then drains the server with SIGTERM so that every client gets a 1001 close frame.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${DEMO_CONNECTIONS:-2000}
port=${DEMO_PORT:-8080}
metrics_port=${DEMO_METRICS_PORT:-9090}

go build -o bin/ ./cmd/echo
PORT=$port METRICS_PORT=$metrics_port DRAIN_TIMEOUT=10s ./bin/echo &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT

for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== holding $connections connections, each sending a message every second"
./bin/echo load --url "ws://127.0.0.1:$port/ws" -c "$connections" --rate 1000 \
  --message-interval 1s -d 15s --progress-interval 2s > .demo-load.txt &
load=$!
sleep 8
echo "== the server's metrics while loaded (http://127.0.0.1:$metrics_port/metrics)"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -E '^websocket_(connections_active|connections_max|messages_total|draining)'
echo "== SIGTERM: the server drains, closing every connection with 1001 over its 10s window"
kill -TERM $server
wait $load || true
wait $server && echo "== server exited 0 after draining"
trap - EXIT
cat .demo-load.txt
rm -f .demo-load.txt
