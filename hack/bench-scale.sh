#!/usr/bin/env bash
# The scale race (docs/benchmarks.md): the systems that can feed the HPA, one after the other on
# the same local cluster with the same load, through the real HPA controller:
#
#   direct      wsscale's adapter scraping the pods itself
#   guard       the same, the HPA scaling a ScaleGuard in front of the Deployment
#   prometheus  Prometheus (deploy/prometheus) scraping the pods, wsscale's adapter reading it
#   keda        Prometheus, KEDA's operator and metrics API server, a ScaledObject with the
#               Prometheus trigger (built first by hack/build-keda.sh, about 11 minutes cold)
#
# Surge: two echo pods, 300 connections per pod as target, the load jumps from 600 to 3,000
# connections (new ones arrive through the Service at 40/s). Reported per system: seconds from the
# jump until the HPA's desired replicas change, until the 10 pods are Ready, until every pod holds
# connections; the value the HPA saw over time; CPU seconds and peak RSS of the system's
# processes over the surge; the metrics API's latency p50/p99 under the HPA plus 10 requests/s.
# Drop: the surge's connections close and 600 deliberately uneven ones go to the four newest pods
# (300, 200, 60, 40; the other six hold none); the HPA takes the Deployment to two pods.
# Reported: the connections each removed pod held, clients disconnected, abrupt drops (no close
# frame), close codes.
#
# It runs test/e2e's TestScaleRace (WSSCALE_RACE=1) once per HPA sync period and Prometheus scrape
# interval, under the e2e lock, prints the markdown rows and keeps the logs and the JSON in
# $BENCH_OUT (default .local/bench/scale-<UTC time>, git-ignored). Needs root (the local cluster).
#
#   hack/bench-scale.sh                  # or: make bench-scale
#   BENCH_SYSTEMS=direct,prometheus BENCH_HPA_SYNC="15s" BENCH_PROM_INTERVALS="15s" hack/bench-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

systems=${BENCH_SYSTEMS:-direct,guard,prometheus,keda}
syncs=${BENCH_HPA_SYNC:-15s 5s}
intervals=${BENCH_PROM_INTERVALS:-15s 5s}
out=${BENCH_OUT:-.local/bench/scale-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

hack/build-tools.sh
if [[ ",$systems," == *",keda,"* ]]; then
  hack/build-keda.sh
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "go: $(go version | cut -d' ' -f3); prometheus v3.16.0; keda v2.21.0; kubernetes v1.37.2"
} | tee "$out/machine.txt"

rows="$out/rows.md"
echo "| system | HPA sync | scrape interval | to desired change | to new pods Ready | to spread | desired | CPU over the surge | peak RSS | metrics API p50 / p99 ms |" >"$rows"
echo "|---|---|---|---|---|---|---|---|---|---|" >>"$rows"
for sync in $syncs; do
  for interval in $intervals; do
    # The direct scrape has no Prometheus: it runs once per sync period, with the first interval.
    run_systems=$systems
    if [[ "$interval" != "${intervals%% *}" ]]; then
      run_systems=$(echo "$systems" | tr ',' '\n' | grep -v -e '^direct$' -e '^guard$' | paste -sd, -)
      [[ -n "$run_systems" ]] || continue
    fi
    log="$out/race-sync$sync-scrape$interval.log"
    echo "== HPA sync $sync, Prometheus scrape interval $interval: $run_systems"
    WSSCALE_RACE=1 WSSCALE_RACE_SYSTEMS="$run_systems" WSSCALE_RACE_PROM_INTERVAL="$interval" \
      WSSCALE_E2E_HPA_SYNC_PERIOD="$sync" WSSCALE_RACE_OUT="$PWD/$out/race-sync$sync-scrape$interval.json" \
      flock /tmp/wsscale-e2e.lock go test ./test/e2e -run '^TestScaleRace$' -count=1 -v -timeout 90m >"$log" 2>&1 || {
        echo "the race failed; see $log" >&2
        tail -30 "$log" >&2
        exit 1
      }
    grep -o 'RACE-ROW .*' "$log" | sed 's/^RACE-ROW //' >>"$rows"
    grep -o 'RACE-DROP .*' "$log" | sed 's/^RACE-DROP //' >>"$out/drops.md"
    grep -o 'RACE-SEEN .*' "$log" | sed 's/^RACE-SEEN /- /' >>"$out/seen.md"
  done
done
echo
cat "$rows"
echo
echo "| system | HPA sync | scrape interval | removed | clients disconnected | abrupt | close codes | to two pods |"
echo "|---|---|---|---|---|---|---|---|"
cat "$out/drops.md" 2>/dev/null || true
echo
echo "What the HPA saw (seconds since the jump: value, desired replicas):"
cat "$out/seen.md"
echo "raw: $out"
