#!/usr/bin/env bash
# bench/store: the persistence layer under load, against its own redis-server and PostgreSQL 15
# (started here in a temp dir, stopped on exit).
#
#   cache      redis-benchmark -q -c 16 -n N with -P 16 and -P 1 (-t set, then -t get), then
#              agentd's Redis client (store::make_kv, what the daemon uses) doing the same SET
#              then GET with
#              16 coroutines (as many callers as redis-benchmark's connections) and with 256
#              (as many commands in flight as -c 16 -P 16), all on one pipelined connection; and,
#              for comparison, 256 coroutines spread over two connections
#   records    durable intent+step writes (create_intent + 3 append_step per intent) for
#              BENCH_SECONDS with 1 and BENCH_WRITERS concurrent writers, on SQLite (WAL,
#              synchronous=FULL) and on PostgreSQL (fsync on, synchronous_commit on)
#   loop lag   p50/p99/max lateness of a 1 ms timer on the client's event loop during each run
#
# Usage: bench/store/run.sh
# Environment: BENCH_REQUESTS (200000), BENCH_SECONDS (10), BENCH_WRITERS (8), BENCH_REPEAT (5:
#   rounds of the cache runs; the median is reported),
#   BENCH_PIN=0 (no CPU pinning for the cache runs; see "Placement" below),
#   BENCH_PROFILE=1 (perf record the client under the pipelined run and print what dominates),
#   BENCH_WAIT_QUIET=0 (do not wait for a 1-minute load average <= 1.0 before measuring),
#   BENCH_OUT=FILE (also copy the results there).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=../../scripts/lib.sh
source scripts/lib.sh

requests=${BENCH_REQUESTS:-200000}
secs=${BENCH_SECONDS:-10}
writers=${BENCH_WRITERS:-8}
repeat=${BENCH_REPEAT:-5}
profile=${BENCH_PROFILE:-0}
quiet=${BENCH_WAIT_QUIET:-1}

# ---- install and build ----------------------------------------------------------------------
install_pkgs "${AGENTD_BUILD_PKGS[@]}" redis-server postgresql
[ "$profile" = 1 ] && { command -v perf >/dev/null || install_pkgs linux-perf; }
build=$root/build/storebench
cmake --preset release -B "$build" >/dev/null
cmake --build "$build" -j2 --target agentd_store_kv agentd_store_sql

tmp=$(mktemp -d)
cleanup() {
  stop_services
  if [ -n "${BENCH_OUT:-}" ] && [ -f "$tmp/results.md" ]; then cp "$tmp/results.md" "$BENCH_OUT"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The load generator: plain g++ against the static libraries, with the flags CMake used for them.
mapfile -t flags < <(compile_flags "$build" src/store/kv.cpp)
echo "== compiling the load generator"
g++ -std=c++20 -O2 -g "${flags[@]}" -o "$tmp/storebench" "$here/storebench.cpp" \
  "$build/src/libagentd_store_kv.a" "$build/src/libagentd_store_sql.a" "$build/src/libagentd_core.a" \
  -lhiredis -lpqxx -lpq -lsqlite3 -lspdlog -lfmt -lyaml-cpp -lssl -lcrypto -lz -pthread

start_services "$tmp"
# Placement: on a 2-vCPU VM a wakeup on the other vCPU costs tens of microseconds and whether two
# processes share one is up to the scheduler, which makes unpinned pipelined runs vary by 2-3x.
# The cache runs therefore put redis-server on CPU 0 and each client (redis-benchmark and ours
# alike) on CPU 1. BENCH_PIN=0 leaves placement to the scheduler.
client=()
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  taskset -apc 0 "$(cat "$tmp/redis/redis.pid")" >/dev/null
  client=(taskset -c 1)
fi
redis_url="redis://127.0.0.1:$REDIS_PORT/0"
pg_url=$AGENTD_TEST_DATABASE_URL

# ---- wait for a quiet machine (wait_quiet in bench/lib.sh) -------------------------------------
# Other benchmarks and builds share these cores; the load average is recorded next to the figures.

results=$tmp/results.md
rb() {  # rb PIPELINE OP: redis-benchmark's requests per second for OP (SET or GET), the median run
  grep "^$2:" "$tmp/rb-P$1.txt" | sed -E 's/^[A-Z]+: ([0-9.]+) requests per second.*/\1/' |
    sort -g | awk '{ v[NR] = $1 } END { printf "%.0f", v[int((NR + 1) / 2)] }'
}
rb_cpu() {  # rb_cpu PIPELINE OP: redis-server's CPU share during redis-benchmark's OP runs, median
  grep "^$2:" "$tmp/rb-P$1.txt" | sed -E 's/.*redis_cpu_pct=([0-9]+).*/\1/' |
    sort -g | awk '{ v[NR] = $1 } END { printf "%d", v[int((NR + 1) / 2)] }'
}
ours() {  # ours COROUTINESxCONNECTIONS OP: our RESULT line for OP with the median ops/s
  grep "op=$2 " "$tmp/ours$1.txt" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^ops_per_sec=/) print substr($i, 13) "\t" $0 }' |
    sort -g | awk -F'\t' '{ v[NR] = $2 } END { print v[int((NR + 1) / 2)] }'
}
field() {  # field LINE KEY
  echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# ---- cache: redis-benchmark vs agentd's client ----------------------------------------------
# Each of the four clients runs BENCH_REPEAT times, interleaved (a disturbance hits all of them);
# the median run is reported. 200,000 requests last well under a second at these rates.
wait_quiet
load_cache=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== cache: redis-benchmark and agentd's client, $repeat rounds (load $load_cache)"
# How busy redis-server was while redis-benchmark ran (its CPU time over the wall time),
# appended to each line (storebench measures it per phase itself, from STOREBENCH_REDIS_PID).
redis_pid=$(cat "$tmp/redis/redis.pid")
hz=$(getconf CLK_TCK)
redis_ticks() { awk '{ print $14 + $15 }' "/proc/$redis_pid/stat"; }
with_redis_cpu() {
  local t0 t1 s0 s1 out pct
  t0=$(redis_ticks)
  s0=$(date +%s.%N)
  out=$("$@")
  s1=$(date +%s.%N)
  t1=$(redis_ticks)
  pct=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v a="$s0" -v b="$s1" 'BEGIN { printf "%.0f", 100 * t / hz / (b - a) }')
  echo "$out" | sed "s/\$/ redis_cpu_pct=$pct/"
}
round_loads=()
for r in $(seq "$repeat"); do
  [ "$r" = 1 ] || wait_quiet
  round_loads+=("$(load1)")
  for p in 16 1; do
    for op in set get; do  # one at a time, so redis-server's CPU share is per operation
      with_redis_cpu "${client[@]}" redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -q -t "$op" \
        -P "$p" -c 16 -n "$requests" | tr '\r' '\n' | grep -E '^(SET|GET): [0-9.]+ requests per second' |
        sed "s/\$/ (round $r, -P $p)/" | tee -a "$tmp/rb-P$p.txt"
    done
  done
  for cfg in 16x1 256x1 256x2; do
    STOREBENCH_REDIS_PID=$redis_pid "${client[@]}" "$tmp/storebench" redis "$redis_url" \
      "${cfg%x*}" "$requests" "${cfg#*x}" | tee -a "$tmp/ours$cfg.txt"
  done
done
if [ "$profile" = 1 ]; then
  echo "== perf profile of agentd's client, 256 coroutines, $((requests * 5)) requests"
  perf record -g -o "$tmp/perf.data" -- "${client[@]}" "$tmp/storebench" redis "$redis_url" 256 "$((requests * 5))" >/dev/null 2>&1
  perf report -i "$tmp/perf.data" --no-children --percent-limit 1.5 --stdio --sort dso,symbol 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/[ -]+$//; s/ {2,}/  /g' | cut -c1-160 | head -30 >"$tmp/profile.txt" || true
  cat "$tmp/profile.txt"
fi

# ---- durable records ------------------------------------------------------------------------
wait_quiet
load_records=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== durable intent+step writes, ${secs}s each (load $load_records)"
records_lines=()
for w in 1 "$writers"; do
  rm -rf "$tmp/sqlite"
  mkdir -p "$tmp/sqlite"
  line=$("$tmp/storebench" records sqlite "$tmp/sqlite" "$w" "$secs")
  echo "$line"
  records_lines+=("$line")
  line=$("$tmp/storebench" records postgres "$pg_url" "$w" "$secs")
  echo "$line"
  records_lines+=("$line")
done

# ---- report ---------------------------------------------------------------------------------
{
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "Storage: $(df -T "$tmp" | awk 'NR == 2 {print $2 " on " $1}') (the SQLite file and PostgreSQL's data dir)"
  echo "Redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), SQLite $(dpkg-query -W -f='${Version}' libsqlite3-0 2>/dev/null | cut -d- -f1)"
  echo "Commit $(git rev-parse --short HEAD)$([ -n "$(git status --porcelain -- src include)" ] && echo ' + uncommitted changes under src/ include/')"
  echo
  echo "### Cache: SET/GET round trips, $requests each, median of $repeat rounds"
  echo
  echo "Load average at the start: $load_cache; 1-minute load at the start of each round: ${round_loads[*]}."
  [ ${#client[@]} -gt 0 ] && echo "redis-server on CPU 0, every client on CPU 1."
  echo
  echo "| client | in flight | SET ops/s | GET ops/s | redis-server busy (SET; GET) | client busy, CPU µs/op (SET; GET) | loop lag p50 / p99 / max (SET; GET) |"
  echo "|---|---|---|---|---|---|---|"
  for p in 16 1; do
    echo "| redis-benchmark -c 16 -P $p | $((16 * p)) | $(rb "$p" SET) | $(rb "$p" GET) | $(rb_cpu "$p" SET)%; $(rb_cpu "$p" GET)% | | |"
  done
  lag() { echo "$(field "$1" lag_p50_us) / $(field "$1" lag_p99_us) / $(field "$1" lag_max_us) µs"; }
  for cfg in 16x1 256x1 256x2; do
    set_line=$(ours "$cfg" set)
    get_line=$(ours "$cfg" get)
    conns="1 connection"
    [ "${cfg#*x}" = 1 ] || conns="${cfg#*x} connections (2 Kv instances; for comparison)"
    echo "| agentd store::make_kv, ${cfg%x*} coroutines, $conns | ${cfg%x*} | $(field "$set_line" ops_per_sec) | $(field "$get_line" ops_per_sec) | $(field "$set_line" redis_cpu_pct)%; $(field "$get_line" redis_cpu_pct)% | $(field "$set_line" client_cpu_pct)%, $(field "$set_line" cpu_us_per_op); $(field "$get_line" client_cpu_pct)%, $(field "$get_line" cpu_us_per_op) | $(lag "$set_line"); $(lag "$get_line") |"
  done
  echo
  awk -v s="$(field "$(ours 256x1 set)" ops_per_sec)" -v g="$(field "$(ours 256x1 get)" ops_per_sec)" \
    -v rs="$(rb 16 SET)" -v rg="$(rb 16 GET)" 'BEGIN {
    rs_ratio = s / rs; rg_ratio = g / rg
    printf "Ratio to redis-benchmark -P 16 (256 coroutines on one connection: as many commands in flight): SET %.0f%%, GET %.0f%%. ", 100 * rs_ratio, 100 * rg_ratio
    printf "Target >= 50%%: %s\n", (rs_ratio >= 0.5 && rg_ratio >= 0.5) ? "PASS" : "MISS"
  }'
  awk -v s="$(field "$(ours 16x1 set)" ops_per_sec)" -v g="$(field "$(ours 16x1 get)" ops_per_sec)" \
    -v rs="$(rb 1 SET)" -v rg="$(rb 1 GET)" -v ps="$(rb 16 SET)" -v pg="$(rb 16 GET)" 'BEGIN {
    printf "\n16 coroutines: SET %.0f%% / GET %.0f%% of -P 16, SET %.0f%% / GET %.0f%% of -P 1 (16 connections, no pipelining).\n", 100 * s / ps, 100 * g / pg, 100 * s / rs, 100 * g / rg
  }'
  echo
  echo "### Durable intent+step writes (create_intent + 3 append_step; load average $load_records)"
  echo
  echo "| backend | writers | intents/s | writes/s | per intent p50 / p99 | loop lag p50 / p99 / max |"
  echo "|---|---|---|---|---|---|"
  for line in "${records_lines[@]}"; do
    echo "| $(field "$line" backend) | $(field "$line" writers) | $(field "$line" intents_per_sec) | $(field "$line" writes_per_sec) | $(field "$line" intent_p50_ms) / $(field "$line" intent_p99_ms) ms | $(field "$line" lag_p50_us) / $(field "$line" lag_p99_us) / $(field "$line" lag_max_us) µs |"
  done
  if [ -s "$tmp/profile.txt" ]; then
    echo
    echo "### Profile of the client, 256 coroutines (perf, self time, >= 1.5%)"
    echo
    echo '```'
    cat "$tmp/profile.txt"
    echo '```'
  fi
} >"$results"
echo
cat "$results"
