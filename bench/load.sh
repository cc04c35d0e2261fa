#!/usr/bin/env bash
# Load benchmark for enclave-heap-exporter, everything measured side by side in one run on this
# machine (absolute numbers on shared 2-core machines are noisy; quote the ratios):
#   1. /metrics throughput vs nginx serving the same body as a static file, and vs Debian's
#      prometheus-node-exporter (wrk, -t1 -c16), plus p50/p99 latency at 1 and 16 connections;
#   2. read coalescing: 50 concurrent scrapers against a source whose every read takes 200 ms;
#   3. footprint: resident memory while serving, CPU and context switches while idle;
#   4. the sidecar path: a scrape through the Unix-socket agent vs an in-process scrape.
# Needs: wrk, nginx (nginx-light), prometheus-node-exporter, curl (Debian packages).
# Usage: bench/load.sh            (DURATION=10s by default; DURATION=30s for steadier numbers)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
for tool in wrk nginx prometheus-node-exporter curl; do
  command -v "$tool" >/dev/null || { echo "bench/load.sh needs $tool: apt-get install -y wrk nginx-light prometheus-node-exporter curl" >&2; exit 2; }
done
cargo build --release -q -p enclave-heap-exporter
cargo build --release -q -p enclave-heap-host --example sim-host
target_dir=${CARGO_TARGET_DIR:-target}
exporter=$target_dir/release/enclave-heap-exporter
sim_host=$target_dir/release/examples/sim-host
work=$(mktemp -d)
chmod 755 "$work"   # nginx workers run as an unprivileged user
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_http() { for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
# wrk's summary -> "req/s p50 p99" (latencies in ms)
run_wrk() {
  local conns=$1 url=$2
  wrk -t1 -c"$conns" -d"$DURATION" --latency "$url" | awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)} /^Requests\/sec/ {rps=$2}
    END {printf "%.0f %.3f %.3f\n", rps, p50, p99}'
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); duration $DURATION per run"

# --- 1. throughput against nginx and node_exporter -------------------------------------------
"$exporter" --web.listen-address=127.0.0.1:19801 --source app='sim:steady?heap_pages=256' --log.level=warn & pids+=($!)
wait_http http://127.0.0.1:19801/metrics
curl -fsS http://127.0.0.1:19801/metrics > "$work/metrics"; chmod 644 "$work/metrics"
cat > "$work/nginx.conf" <<NGINX
daemon off; worker_processes 2; pid $work/nginx.pid; error_log stderr error;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19802; root $work; location = /metrics { default_type text/plain; } } }
NGINX
nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
prometheus-node-exporter --web.listen-address=127.0.0.1:19803 --log.level=error 2>/dev/null & pids+=($!)
wait_http http://127.0.0.1:19802/metrics; wait_http http://127.0.0.1:19803/metrics
echo "body: exporter $(wc -c < "$work/metrics") bytes (nginx serves the same file), node_exporter $(curl -fsS http://127.0.0.1:19803/metrics | wc -c) bytes"

read -r ex16 ex16p50 ex16p99 < <(run_wrk 16 http://127.0.0.1:19801/metrics)
read -r ng16 ng16p50 ng16p99 < <(run_wrk 16 http://127.0.0.1:19802/metrics)
read -r ne16 ne16p50 ne16p99 < <(run_wrk 16 http://127.0.0.1:19803/metrics)
read -r ex1 ex1p50 ex1p99 < <(run_wrk 1 http://127.0.0.1:19801/metrics)
read -r ng1 ng1p50 ng1p99 < <(run_wrk 1 http://127.0.0.1:19802/metrics)
printf '\n%-28s %10s %9s %9s %9s %9s\n' "/metrics" "req/s c16" "p50 c16" "p99 c16" "p50 c1" "p99 c1"
printf '%-28s %10s %7sms %7sms %7sms %7sms\n' "enclave-heap-exporter" "$ex16" "$ex16p50" "$ex16p99" "$ex1p50" "$ex1p99"
printf '%-28s %10s %7sms %7sms %7sms %7sms\n' "nginx, same body (static)" "$ng16" "$ng16p50" "$ng16p99" "$ng1p50" "$ng1p99"
printf '%-28s %10s %7sms %7sms\n' "prometheus-node-exporter" "$ne16" "$ne16p50" "$ne16p99"
awk -v e="$ex16" -v n="$ng16" -v x="$ne16" 'BEGIN {printf "ratio exporter/nginx: %.2f   exporter/node_exporter: %.1f\n", e/n, e/x}'
rss=$(awk '/VmRSS/ {print $2}' "/proc/${pids[0]}/status"); hwm=$(awk '/VmHWM/ {print $2}' "/proc/${pids[0]}/status")
echo "exporter resident memory after the runs: ${rss} KiB (peak ${hwm} KiB), including the simulated enclave's 1 MiB heap"

# --- 2. read coalescing -------------------------------------------------------------------------
"$exporter" --web.listen-address=127.0.0.1:19804 --source slow='sim:idle?delay=200ms' --log.level=warn & pids+=($!)
wait_http http://127.0.0.1:19804/metrics
before=$(curl -fsS http://127.0.0.1:19804/metrics | awk '/^enclave_heap_read_duration_seconds_count/ {print $2}')
start=$(date +%s.%N)
wrk -t2 -c50 -d"$DURATION" http://127.0.0.1:19804/metrics > "$work/coalesce.txt"
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
after=$(curl -fsS http://127.0.0.1:19804/metrics | awk '/^enclave_heap_read_duration_seconds_count/ {print $2}')
scrapes=$(awk '/requests in/ {print $1}' "$work/coalesce.txt")
echo
echo "coalescing: 50 concurrent scrapers for ${elapsed%.*} s against a 200 ms source (--source.min-interval=1s):"
echo "  $scrapes scrapes caused $((after - before)) reads (at most one per second: $(printf '%.0f' "$elapsed") + 1)"

# --- 3. idle footprint ----------------------------------------------------------------------------
"$exporter" --web.listen-address=127.0.0.1:19805 --source idle=sim:idle --log.level=warn & idle_pid=$!; pids+=($idle_pid)
wait_http http://127.0.0.1:19805/metrics
for _ in $(seq 20); do curl -fsS -o /dev/null http://127.0.0.1:19805/metrics; done
sleep 12   # tokio retires idle blocking-pool threads after 10 s; measure the steady state after it
cpu() { awk '{print $14 + $15}' "/proc/$idle_pid/stat"; }
switches() { cat /proc/"$idle_pid"/task/*/status | awk '/voluntary_ctxt_switches/ {s += $2} END {print s}'; }
c0=$(cpu); s0=$(switches); sleep 10; c1=$(cpu); s1=$(switches)
echo
echo "idle (sim:idle source, 10 s, no scrapes): $((c1 - c0)) CPU ticks, $((s1 - s0)) context switches; RSS $(awk '/VmRSS/ {print $2}' /proc/$idle_pid/status) KiB"

# --- 4. sidecar path --------------------------------------------------------------------------------
"$sim_host" --socket "$work/heap.sock" --profile steady --heap-pages 256 > "$work/sim-host.out" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do [ -S "$work/heap.sock" ] && break; sleep 0.05; done
"$exporter" --web.listen-address=127.0.0.1:19806 --source app="unix://$work/heap.sock" --source.min-interval=0s --log.level=warn & pids+=($!)
"$exporter" --web.listen-address=127.0.0.1:19807 --source app='sim:steady?heap_pages=256' --source.min-interval=0s --log.level=warn & pids+=($!)
wait_http http://127.0.0.1:19806/metrics; wait_http http://127.0.0.1:19807/metrics
read -r ag ag50 ag99 < <(run_wrk 1 http://127.0.0.1:19806/metrics)
read -r ip ip50 ip99 < <(run_wrk 1 http://127.0.0.1:19807/metrics)
echo
echo "sidecar path (every scrape reads: --source.min-interval=0s, agent's own min interval 1s):"
printf '  in-process sim: p50 %sms p99 %sms   via Unix-socket agent: p50 %sms p99 %sms   ratio p50 %.2f\n' \
  "$ip50" "$ip99" "$ag50" "$ag99" "$(echo "$ag50 / $ip50" | bc -l)"
