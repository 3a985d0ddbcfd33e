#!/usr/bin/env bash
# Benchmarks the reference WebSocket server (cmd/echo) against a Node.js echo server built on the npm
# package ws (hack/bench/node), side by side in one run, with the same load client (wsecho load):
#
#   1. resident memory per idle connection at BENCH_SMALL and BENCH_LARGE connections, for
#      connections that never sent a message and for connections that exchanged one echo of
#      BENCH_TRAFFIC_SIZE bytes and then idled (after traffic);
#   2. echo throughput and round trips with 1,000 connections flooding 1 KiB messages;
#   3. the most connections each server holds with its limits raised.
#
# It prints a markdown report and writes it, with the raw JSON of every measurement and the servers'
# logs, to $BENCH_OUT (default .local/bench/echo-<UTC time>, git-ignored). All traffic stays on
# loopback. Every process it starts is stopped on every exit path, Ctrl-C included.
#
#   hack/bench-echo.sh              # or: make bench-echo
#   BENCH_QUICK=1 hack/bench-echo.sh  # a short smoke run with small numbers
#   BENCH_PHASES=throughput hack/bench-echo.sh  # some of: memory throughput max gobench
#
# The machine is shared: compare the two servers within one run, not absolute numbers across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# --- settings ------------------------------------------------------------------------------------
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  : "${BENCH_SMALL:=1000}" "${BENCH_LARGE:=2000}" "${BENCH_IDLE:=12}" "${BENCH_FLOOD:=5}"
  : "${BENCH_MAX_TARGET:=3000}" "${BENCH_PHASES:=memory throughput max}"
fi
small=${BENCH_SMALL:-10000}       # connections of the first memory measurement
large=${BENCH_LARGE:-19000}       # the most one process can hold under RLIMIT_NOFILE=20000, with margin
rate=${BENCH_RATE:-2000}          # new connections per second, over all load client processes
idle=${BENCH_IDLE:-30}            # seconds held idle before memory is read: at least two ping rounds
ping_ms=${BENCH_PING_MS:-10000}   # keep-alive ping interval of both servers
traffic_size=${BENCH_TRAFFIC_SIZE:-1024} # the one message of an "after traffic" connection
flood_conns=${BENCH_FLOOD_CONNS:-1000}
flood_secs=${BENCH_FLOOD:-20}
flood_size=${BENCH_FLOOD_SIZE:-1024}
max_target=${BENCH_MAX_TARGET:-21000} # more than the file descriptor cap allows, to find the limit
per_client=${BENCH_PER_CLIENT:-10000} # connections per load client process (each has the same fd cap)
phases=${BENCH_PHASES:-memory throughput max gobench} # gobench: the Go benchmark IdleConnectionMemory
go_port=${BENCH_GO_PORT:-28080}
go_metrics_port=${BENCH_GO_METRICS_PORT:-28090}
node_port=${BENCH_NODE_PORT:-28081}
out=${BENCH_OUT:-.local/bench/echo-$(date -u +%Y%m%dT%H%M%SZ)}

mkdir -p "$out"
out=$(cd "$out" && pwd)
log() { printf '== %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench-echo: %s\n' "$*" >&2; exit 1; }

# --- process bookkeeping: only the PIDs started here are ever signalled --------------------------
started=()      # every PID this script started
server_pid=""
load_pids=()

# alive PID: true while PID runs and is a child of this script. Checking the parent keeps a PID that
# the system has reused for someone else's process from ever being signalled; a zombie counts as ended.
alive() {
  local st ppid
  st=$(awk '$1 == "State:" {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  ppid=$(awk '$1 == "PPid:" {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $ppid == "$$" ]]
}

# stop PID SIGNAL SECONDS: sends SIGNAL, waits up to SECONDS, then SIGKILL; reaps the process.
stop() {
  local pid=$1 sig=$2 secs=$3 i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${started[@]}"; do
    if alive "$pid"; then stop "$pid" TERM 5; fi
  done
  [[ $rc == 0 ]] || printf 'bench-echo: stopped (exit %s); partial results in %s\n' "$rc" "$out" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- what the machine is ------------------------------------------------------------------------
proc_field() {
  alive "$2" || die "process $2 ended during the measurement; see the logs in $out"
  awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"
}
rss_kib() { proc_field VmRSS "$1"; }
peak_kib() { proc_field VmHWM "$1"; }
fd_count() { local f=(/proc/"$1"/fd/*); echo "${#f[@]}"; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime + stime
# children_cpu VAR: sets VAR to the user + system seconds of the reaped children of this shell. The
# times builtin runs in this shell, not in a command substitution, whose children would be its own.
children_cpu() {
  times >"$out/.times"
  printf -v "$1" '%s' "$(awk 'NR == 2 { for (i = 1; i <= NF; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } }
    END { print s + 0 }' "$out/.times")"
}
port_free() { [[ -z $(ss -Hltn "sport = :$1") ]]; }
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n\t' '  ')"; }

for p in "$go_port" "$go_metrics_port" "$node_port"; do
  port_free "$p" || die "port $p is in use; choose others with BENCH_GO_PORT, BENCH_GO_METRICS_PORT, BENCH_NODE_PORT"
done
command -v node >/dev/null || die "node is not installed (Node.js 18 or later is needed for the peer)"
command -v npm >/dev/null || die "npm is not installed"

log "building bin/wsecho (cmd/echo)"
go build -o bin/wsecho ./cmd/echo
log "installing the pinned ws package (npm ci)"
(cd hack/bench/node && npm ci --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null)

ws_version=$(node -p "require('$root/hack/bench/node/node_modules/ws/package.json').version")
nofile_hard=$(ulimit -Hn)
raise_error=$( (ulimit -Hn 1048576) 2>&1 | sed 's/^.*ulimit: /ulimit -Hn 1048576: /' || true)
[[ -n $raise_error ]] || raise_error="(raising the hard limit to 1048576 succeeded)"
cat >"$out/machine.json" <<EOF
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- cmd pkg 2>/dev/null || echo '+changes')",
  "nproc": $(nproc),
  "cpu": $(json_str "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"),
  "memTotalKiB": $(awk '/^MemTotal:/ {print $2}' /proc/meminfo),
  "kernel": $(json_str "$(uname -sr)"),
  "go": $(json_str "$(go version)"),
  "node": $(json_str "$(node --version)"),
  "ws": $(json_str "$ws_version"),
  "loadavg": $(json_str "$(cut -d' ' -f1-3 /proc/loadavg)"),
  "nofileHard": $(json_str "$nofile_hard"),
  "nofileRaise": $(json_str "$raise_error"),
  "somaxconn": $(cat /proc/sys/net/core/somaxconn),
  "settings": {"small": $small, "large": $large, "rate": $rate, "idleSeconds": $idle, "pingMs": $ping_ms,
    "trafficMessageBytes": $traffic_size, "floodConnections": $flood_conns, "floodSeconds": $flood_secs, "floodMessageBytes": $flood_size,
    "maxTarget": $max_target, "connectionsPerClientProcess": $per_client}
}
EOF
log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), RLIMIT_NOFILE hard $nofile_hard"

# --- servers ------------------------------------------------------------------------------------
server_port=""
server_loadavg="" # the machine's load average when the current server started
wait_health() {
  local i
  for ((i = 0; i < 100; i++)); do
    alive "$server_pid" || die "$1 exited at start; see its log in $out"
    curl -fsS -o /dev/null "http://127.0.0.1:$server_port/health" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not become healthy on port $server_port"
}

# start_server KIND NAME [VAR=value...]: KIND is go or node; extra variables go to its environment.
start_server() {
  local kind=$1 name=$2
  shift 2
  if [[ $kind == go ]]; then
    server_port=$go_port
    env PORT="$go_port" METRICS_PORT="$go_metrics_port" BIND_ADDRESS=127.0.0.1 \
      MAX_CONNECTIONS=1000000 PING_INTERVAL="$ping_ms" DRAIN_TIMEOUT=2s MAX_MESSAGE_BYTES=65536 "$@" \
      bin/wsecho >"$out/$name.server.log" 2>&1 &
  else
    server_port=$node_port
    env PORT="$node_port" BIND_ADDRESS=127.0.0.1 PING_INTERVAL="$ping_ms" MAX_MESSAGE_BYTES=65536 "$@" \
      node "$root/hack/bench/node/server.js" >"$out/$name.server.log" 2>&1 &
  fi
  server_pid=$!
  started+=("$server_pid")
  server_loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
  wait_health "$name"
  sleep 1 # let start-up allocations settle before the baseline is read
}

stop_server() { stop "$server_pid" TERM 10; }

go_metric() { # the value of one Go runtime metric of the running Go server, or null
  local v
  v=$(curl -fsS --max-time 5 "http://127.0.0.1:$go_metrics_port/metrics" 2>/dev/null |
    awk -v m="$1" '$1 == m {print $2}') || true
  echo "${v:-null}"
}

# --- load clients -------------------------------------------------------------------------------
# start_load NAME CONNECTIONS ARGS...: spreads the connections over processes of at most
# $per_client each (every process has the same file descriptor cap) at $rate per second in total.
start_load() {
  local name=$1 total=$2 procs i n left
  shift 2
  procs=$(((total + per_client - 1) / per_client))
  left=$total
  load_pids=()
  for ((i = 0; i < procs; i++)); do
    n=$((left / (procs - i)))
    left=$((left - n))
    bin/wsecho load --url "ws://127.0.0.1:$server_port/ws" -c "$n" \
      --rate "$(awk -v r="$rate" -v p="$procs" 'BEGIN {printf "%g", r / p}')" -q -o json "$@" \
      >"$out/$name.client$i.json" 2>"$out/$name.client$i.log" &
    load_pids+=("$!")
    started+=("$!")
  done
}

# finish_load SIGNAL: ends the load clients (SIGTERM: close every connection normally and report)
# or, with "wait", waits for them to finish on their own.
finish_load() {
  local pid
  for pid in "${load_pids[@]}"; do
    if [[ $1 == wait ]]; then wait "$pid" || true; else stop "$pid" TERM 30; fi
  done
}

clients_json() { # the load clients' summaries of run NAME as a JSON array
  local f sep="" s="["
  for f in "$out/$1".client*.json; do
    if [[ -s $f ]]; then s+="$sep$(cat "$f")"; else s+="${sep}null"; fi
    sep=","
  done
  echo "$s]"
}

# wait_open TARGET BASE_FDS SECONDS: until the server holds TARGET more sockets than at the start,
# the count stops growing for 5 s after the planned ramp-up, or SECONDS pass.
wait_open() {
  local target=$1 base=$2 limit=$3 start=$SECONDS last=-1 since=$SECONDS held ramp
  ramp=$(((target + rate - 1) / rate))
  while ((SECONDS - start < limit)); do
    held=$(($(fd_count "$server_pid") - base))
    ((held >= target)) && return 0
    if ((held != last)); then
      last=$held
      since=$SECONDS
    elif ((SECONDS - start > ramp && SECONDS - since >= 5)); then
      return 0
    fi
    sleep 0.5
  done
}

# --- 1. memory per idle connection --------------------------------------------------------------
# measure_memory KIND ID LABEL CONNECTIONS [VAR=value...]; with traffic=1 in its environment each
# connection first exchanges one message (sent within 2 s of opening) and then idles.
measure_memory() {
  local kind=$1 id=$2 label=$3 n=$4 name base_rss base_fds base_heap=null base_stack=null
  local rss peak held heap=null stack=null state=never-sent load_args=()
  shift 4
  if [[ ${traffic:-0} == 1 ]]; then
    state=after-traffic
    load_args=(--message-interval 2s --messages 1 --message-size "$traffic_size")
  fi
  name="memory-$id-$state-$n"
  log "memory: $label, $n idle connections ($state) at $rate/s, held ${idle}s"
  start_server "$kind" "$name" "$@"
  base_rss=$(rss_kib "$server_pid")
  base_fds=$(fd_count "$server_pid")
  if [[ $kind == go ]]; then
    base_heap=$(go_metric go_memstats_heap_inuse_bytes)
    base_stack=$(go_metric go_memstats_stack_inuse_bytes)
  fi
  start_load "$name" "$n" -d 0 "${load_args[@]}"
  wait_open "$n" "$base_fds" $((n / rate + 60))
  sleep "$idle"
  rss=$(rss_kib "$server_pid")
  peak=$(peak_kib "$server_pid")
  held=$(($(fd_count "$server_pid") - base_fds))
  if [[ $kind == go ]]; then
    heap=$(go_metric go_memstats_heap_inuse_bytes)
    stack=$(go_metric go_memstats_stack_inuse_bytes)
  fi
  finish_load TERM
  stop_server
  cat >"$out/$name.json" <<EOF
{"phase": "memory", "server": "$kind", "label": $(json_str "$label"), "state": "$state", "target": $n, "held": $held,
 "loadavgAtStart": $(json_str "$server_loadavg"),
 "baselineRssKiB": $base_rss, "loadedRssKiB": $rss, "peakRssKiB": $peak,
 "baselineHeapInuse": $base_heap, "loadedHeapInuse": $heap,
 "baselineStackInuse": $base_stack, "loadedStackInuse": $stack,
 "clients": $(clients_json "$name")}
EOF
  log "memory: $label held $held, RSS ${base_rss} -> ${rss} KiB (peak $peak KiB)"
}

# --- 2. echo throughput -------------------------------------------------------------------------
measure_throughput() {
  local kind=$1 label=$2 name cpu0 cpu1 t0 t1 ccpu0 ccpu1
  name="throughput-$kind"
  log "throughput: $label, $flood_conns connections flooding $flood_size-byte messages for ${flood_secs}s"
  start_server "$kind" "$name"
  cpu0=$(cpu_ticks "$server_pid")
  t0=$(date +%s.%N)
  children_cpu ccpu0
  start_load "$name" "$flood_conns" --flood --message-size "$flood_size" -d "${flood_secs}s"
  finish_load wait
  t1=$(date +%s.%N)
  cpu1=$(cpu_ticks "$server_pid")
  children_cpu ccpu1
  stop_server
  cat >"$out/$name.json" <<EOF
{"phase": "throughput", "server": "$kind", "label": $(json_str "$label"),
 "loadavgAtStart": $(json_str "$server_loadavg"),
 "serverCpuSeconds": $(awk -v a="$cpu0" -v b="$cpu1" -v h="$(getconf CLK_TCK)" 'BEGIN {print (b - a) / h}'),
 "clientCpuSeconds": $(awk -v a="$ccpu0" -v b="$ccpu1" 'BEGIN {print b - a}'),
 "wallSeconds": $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'),
 "clients": $(clients_json "$name")}
EOF
}

# --- 3. the most connections held ---------------------------------------------------------------
measure_max() {
  local kind=$1 label=$2 name base_fds held peak rss
  name="max-$kind"
  log "max: $label, $max_target connections attempted at $rate/s"
  start_server "$kind" "$name"
  base_fds=$(fd_count "$server_pid")
  start_load "$name" "$max_target" -d 0
  # Dials that cannot be accepted end by the client's 10 s handshake timeout.
  sleep $((max_target / rate + 12))
  held=$(($(fd_count "$server_pid") - base_fds))
  rss=$(rss_kib "$server_pid")
  peak=$(peak_kib "$server_pid")
  finish_load TERM
  stop_server
  cat >"$out/$name.json" <<EOF
{"phase": "max", "server": "$kind", "label": $(json_str "$label"), "target": $max_target,
 "loadavgAtStart": $(json_str "$server_loadavg"),
 "held": $held, "loadedRssKiB": $rss, "peakRssKiB": $peak, "fdLimit": $(json_str "$nofile_hard"),
 "clients": $(clients_json "$name")}
EOF
  log "max: $label held $held"
}

go_label="wsecho (Go)"
node_label="Node.js ws $ws_version"
if [[ " $phases " == *" memory "* ]]; then
  for n in "$small" "$large"; do
    measure_memory go go "$go_label" "$n"
    measure_memory node node "$node_label" "$n"
    traffic=1 measure_memory go go "$go_label" "$n"
    traffic=1 measure_memory node node "$node_label" "$n"
    measure_memory go go-gogc50 "$go_label, GOGC=50" "$n" GOGC=50
  done
fi
if [[ " $phases " == *" throughput "* ]]; then
  measure_throughput go "$go_label"
  measure_throughput node "$node_label"
fi
if [[ " $phases " == *" max "* ]]; then
  measure_max go "$go_label"
  measure_max node "$node_label"
fi
if [[ " $phases " == *" gobench "* ]]; then
  log "Go benchmark IdleConnectionMemory"
  go test -run '^$' -bench IdleConnectionMemory -benchtime 1x ./pkg/wsecho | tee "$out/go-bench.txt" >&2
fi

rm -f "$out/.times"
cut -d' ' -f1-3 /proc/loadavg >"$out/loadavg-end.txt"
node hack/bench/report.js "$out" | tee "$out/results.md"
log "results: $out/results.md (raw JSON and server logs beside it)"
