#!/usr/bin/env bash
# Baseline of the HTTP layer: wrk against agentd's /healthz (open) and /readyz (bearer auth,
# JSON), plain and TLS, plus resident memory. Uses the release build.
# Usage: bench/http_baseline.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-10}
bin=build/release/src/agentd
[ -x "$bin" ] || { cmake --preset release >/dev/null && cmake --build --preset release; }
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 2; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
token=bench-token-0123456789abcdef

run() {  # run NAME URL [header]
  local name=$1 url=$2
  shift 2
  local out
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "$url")
  printf '%-22s %10s req/s   p50 %-8s p99 %-8s\n' "$name" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")"
}

AGENTD_TOKEN=$token "$bin" --set server.listen='["http://127.0.0.1:0", "https://127.0.0.1:0"]' \
  --set server.tls.cert="$tmp/cert.pem" --set server.tls.key="$tmp/key.pem" \
  --set log.access_log=false --set store.data_dir="$tmp/data" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do [ "$(grep -c 'listening on' "$tmp/out")" -ge 2 ] && break; sleep 0.05; done
http=$(grep -m1 -o 'http://[0-9.:]*' "$tmp/out")
https=$(grep -m1 -o 'https://[0-9.:]*' "$tmp/out")
echo "agentd $(git rev-parse --short HEAD), $(nproc) cores, wrk -t1 -c$conns -d${secs}s"
run "http  /healthz" "$http/healthz"
run "http  /readyz (auth)" "$http/readyz" -H "Authorization: Bearer $token"
run "https /healthz" "$https/healthz"
run "https /readyz (auth)" "$https/readyz" -H "Authorization: Bearer $token"
echo "resident memory after the runs: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
kill -TERM $pid
wait $pid
