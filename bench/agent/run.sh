#!/usr/bin/env bash
# Agent planner: BENCH_INTENTS (1,000) intents at once, each BENCH_STEPS (3) tool-calling steps
# and a final answer (4 model calls, 3 MCP tool calls), run by
#   agentd   POST /v1/intents (Accept: text/event-stream) to an agent whose model is fake_llm and
#            whose MCP server is server-everything as its stdio child (`everything__echo`);
#            load.mjs posts them all at once and reads every stream to its final event
#   SDK      the OpenAI Agents SDK for JavaScript (@openai/agents, bench/agent/package.json):
#            sdk.mjs runs the same agent N times at once in one node process, against the same
#            fake_llm and its own server-everything stdio child (MCPServerStdio)
# fake_llm (tests/support) answers in its tool-loop policy (POST /_fake/policy): each chat
# completion by the shape of its own conversation (fewer than BENCH_STEPS tool results: one
# `echo` call; then the text), after BENCH_MODEL_DELAY_MS (0).
#
# Per run: wall time, intents/s, errors, per-intent latency p50/p99 (client side), CPU time of
# the server (and of the load generator); agentd: peak RSS over the run (VmHWM, reset before it)
# and the step overhead histogram (agentd_agent_step_overhead_seconds from /metrics, the
# difference over the run: orchestration time per model-call iteration, excluding model and
# tool time); SDK: peak RSS of its process. BENCH_ROUNDS (3) rounds each, interleaved; the
# median round (by throughput) is reported, every round is listed.
#
# Usage: bench/agent/run.sh
# Environment: BENCH_INTENTS (1000), BENCH_STEPS (3), BENCH_MODEL_DELAY_MS (0), BENCH_ROUNDS (3),
#   BENCH_SDK_STREAM (1: also run the SDK with run(..., {stream: true}); 0: non-streaming only),
#   BENCH_SDK=0 (agentd only, no ratios: for profiling),
#   BENCH_PERF_DATA=FILE (with BENCH_PROFILE=1: keep perf.data there),
#   BENCH_PROFILE=1 (perf record agentd during one more round and print the top functions),
#   BENCH_WAIT_QUIET=0 (do not wait for a quiet machine), BENCH_MAX_BUSY (15: % of the CPUs busy over 3 s, at most, before a round),
#   BENCH_WAIT_MAX (900 s), BENCH_OUT=FILE (keep the results), AGENTD_BIN=PATH (no build of
#   agentd), FAKE_LLM_BIN=PATH (no build of fake_llm).
# The workload is a count, not a duration: there is no BENCH_SECONDS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=../../scripts/lib.sh
source scripts/lib.sh
# shellcheck source=../lib.sh
source bench/lib.sh

n=${BENCH_INTENTS:-1000}
steps=${BENCH_STEPS:-3}
delay=${BENCH_MODEL_DELAY_MS:-0}
rounds=${BENCH_ROUNDS:-3}
sdk_stream=${BENCH_SDK_STREAM:-1}
sdk=${BENCH_SDK:-1}
profile=${BENCH_PROFILE:-0}
token=bench-agent-token-0123456789abcdef
admin=bench-agent-admin-0123456789abcdef
upstream_key=bench-upstream-key
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- install and build ----------------------------------------------------------------------
command -v curl >/dev/null || install_pkgs curl
[ "$profile" = 1 ] && { command -v perf >/dev/null || install_pkgs linux-perf; }
install_npm "$root/tests/interop"
install_npm "$here"
everything=$root/tests/interop/node_modules/@modelcontextprotocol/server-everything/dist/index.js
bin='' provenance=''  # set by agentd_binary
agentd_binary
if [ -n "${FAKE_LLM_BIN:-}" ]; then
  fake_bin=$(realpath "$FAKE_LLM_BIN")
else
  # The release preset builds no tests: fake_llm (a test double) gets its own optimised build.
  cmake -S . -B build/agentbench -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGENTD_TESTS=ON >/dev/null
  cmake --build build/agentbench -j2 --target fake_llm
  fake_bin=$root/build/agentbench/tests/fake_llm
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${BENCH_OUT:-}" ] && [ -f "$tmp/results.md" ]; then cp "$tmp/results.md" "$BENCH_OUT"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# 1,000 streams to agentd, 1,000 model calls from it (and from the SDK) to fake_llm.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- fake_llm, agentd -----------------------------------------------------------------------
"$fake_bin" --api-key "$upstream_key" >"$tmp/fake.out" 2>"$tmp/fake.err" &
fake_pid=$!
pids+=("$fake_pid")
fake=
for _ in $(seq 100); do
  fake=$(sed -n 's/^fake_llm listening on //p' "$tmp/fake.out")
  [ -n "$fake" ] && break
  sleep 0.1
done
[ -n "$fake" ] || { echo "fake_llm did not start:"; cat "$tmp/fake.err"; exit 1; }
policy="{\"tool_steps\": $steps, \"tool\": \"echo\", \"delay_ms\": $delay, \"record\": false}"
curl -sf -X POST "$fake/_fake/policy" -d "$policy" >/dev/null

agentd_port=$(free_port)
cat >"$tmp/agentd.yaml" <<EOF
server:
  listen: http://127.0.0.1:$agentd_port
  limits: { max_connections: 8192 }
clients:
  - { name: bench, token: $token, scopes: ["agents:*", "mcp:everything/echo"] }
  - { name: ops, token: $admin, scopes: ["admin"] }
log: { level: warn, access_log: false }
store: { data_dir: $tmp/agentd-data }
ai:
  providers:
    - { name: fake, kind: openai, base_url: "$fake/v1", api_key: $upstream_key }
  models:
    - { name: bench-model, targets: [fake/gpt-4o-mini] }
  retry: { attempts: 1 }
  cache: { enabled: false }  # every model call reaches fake_llm, as the SDK's do
mcp:
  servers:
    - { name: everything, transport: stdio, command: node, args: ["$everything", stdio] }
agents:
  - name: bench
    description: Three echo steps, then an answer
    model: bench-model
    instruction: "You help {{client}}."
    servers: [everything]
    tools: ["everything__echo"]
intents: { max_running: $((n > 1000 ? n : 1000)) }
EOF
"$bin" -c "$tmp/agentd.yaml" >"$tmp/agentd.out" 2>"$tmp/agentd.err" &
agentd_pid=$!
pids+=("$agentd_pid")
agentd=http://127.0.0.1:$agentd_port
ready=
for _ in $(seq 300); do  # the MCP child starts in the background: until its tools are listed
  if curl -s -H "Authorization: Bearer $admin" "$agentd/readyz" 2>/dev/null | node -e '
    let s = ""; process.stdin.on("data", (c) => { s += c; }).on("end", () => {
      try { process.exit(JSON.parse(s).checks["mcp:everything"].detail.startsWith("ready") ? 0 : 1); }
      catch { process.exit(1); } });'; then
    ready=1
    break
  fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "agentd is not ready:"; curl -s -H "Authorization: Bearer $admin" "$agentd/readyz"; cat "$tmp/agentd.err"; exit 1; }

# ---- helpers --------------------------------------------------------------------------------
hz=$(getconf CLK_TCK)
metrics() { curl -sf -H "Authorization: Bearer $admin" "$agentd/metrics" >"$1"; }
# From two /metrics snapshots: "le count" lines of the step overhead histogram's difference, then
# "sum S" and "count N"; and of the store: append_step calls and their mean time (the wait for
# the writer connection included), every SQL call per intent, and SQLite's commits (group
# commits: agentd_store_sql_write_batch_size) per intent.
overhead_buckets() {
  awk 'NR == FNR {b[$1] = $NF; next} {d = $NF - b[$1]}
    /^agentd_agent_step_overhead_seconds_bucket/ {match($1, /le="[^"]*"/); print substr($1, RSTART + 4, RLENGTH - 5), d}
    /^agentd_agent_step_overhead_seconds_sum/ {print "sum", d}
    /^agentd_agent_step_overhead_seconds_count/ {print "count", d}' "$1" "$2"
}
store_calls() {  # store_calls BEFORE AFTER N
  awk -v n="$3" 'NR == FNR {b[$1] = $NF; next} {d = $NF - b[$1]}
    /^agentd_store_sql_call_seconds_count/ {calls += d; if ($1 ~ /op="append_step"/) steps = d}
    /^agentd_store_sql_call_seconds_sum/ && $1 ~ /op="append_step"/ {steps_s = d}
    /^agentd_store_sql_write_batch_size_count/ {commits = d}
    /^agentd_store_sql_write_batch_size_sum/ {batched = d}
    END {printf "sql_per_intent=%.1f append_step_mean_us=%.0f commits_per_intent=%.3f writes_per_commit=%.1f\n", calls / n, steps ? steps_s / steps * 1e6 : 0, commits / n, commits ? batched / commits : 0}' "$1" "$2"
}
# quantiles BUCKETS: p50, p99 (linear within a bucket, as Prometheus' histogram_quantile), the
# share of steps at or under 1 ms, the mean and the count.
quantiles() {
  awk '{d[$1] = $2; if ($1 != "sum" && $1 != "count") les[++k] = $1}
    END {
      n = d["count"]; if (n <= 0) {print "p50_us=nan p99_us=nan le1ms=0 mean_us=nan steps=0"; exit}
      split("0.5 0.99", qs, " ")
      for (j = 1; j <= 2; j++) {
        want = qs[j] * n; lo = 0; prev = 0; v = "inf"
        for (i = 1; i <= k; i++) {
          if (d[les[i]] >= want) {
            if (les[i] == "+Inf") {v = lo} else {v = lo + (les[i] - lo) * (want - prev) / (d[les[i]] - prev)}
            break
          }
          prev = d[les[i]]; if (les[i] != "+Inf") lo = les[i]
        }
        q[j] = (v == "inf") ? "inf" : sprintf("%.0f", v * 1e6)
        if (les[i] == "+Inf") q[j] = ">" q[j]  # beyond the last bucket: only a lower bound
      }
      printf "p50_us=%s p99_us=%s le1ms=%.4f mean_us=%.0f steps=%d\n", q[1], q[2], d["0.001"] / n, d["sum"] / n * 1e6, n
    }' "$1"
}
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1==k {print $2}'; }

# ---- wait for a quiet machine ---------------------------------------------------------------
# Other engineers build and benchmark on these 2 cores. Each round waits (up to BENCH_WAIT_MAX
# seconds) until no compiler or test runs and the CPUs were at most BENCH_MAX_BUSY % busy over
# 3 s (the load average would count this script's own previous round), and says when it
# measured anyway. The 1-minute load average at the start of each round is reported.
quiet=${BENCH_WAIT_QUIET:-1}
max_busy=${BENCH_MAX_BUSY:-15}
wait_max=${BENCH_WAIT_MAX:-900}
busy_re='cc1plus|ninja|ctest|_tests( |$)'
noisy=0
cpu_busy() {  # percent of all CPUs' time not idle over 3 s
  local a b
  a=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat)
  sleep 3
  b=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " "); t = y[1] - x[1] + y[2] - x[2]
    printf "%d", t ? 100 * (y[1] - x[1]) / t : 0}'
}
until_quiet() {
  local waited=0 busy
  [ "$quiet" = 1 ] || return 0
  for (( ; ; waited += 10)); do
    busy=$(cpu_busy)
    ! pgrep -f "$busy_re" >/dev/null && [ "$busy" -le "$max_busy" ] && return 0
    if [ "$waited" -ge "$wait_max" ]; then
      echo "   (not quiet after ${wait_max}s: measuring anyway, CPUs $busy% busy, load $(cut -d' ' -f1 /proc/loadavg))"
      noisy=1
      return 0
    fi
    [ $((waited % 60)) -eq 0 ] &&
      echo "   (waiting for a quiet machine: CPUs $busy% busy, load $(cut -d' ' -f1 /proc/loadavg), $(pgrep -fc "$busy_re") build/test processes)"
    sleep 7
  done
}

declare -A R
agentd_round() {  # agentd_round KEY [perf]: with perf, perf record agentd during the round
  local key=$1 out q kids t0 t1 c0 c1 f0 f1 idle0 idle1 perf_pid k
  until_quiet
  R[$key.load]=$(cut -d' ' -f1 /proc/loadavg)
  metrics "$tmp/metrics-before"
  echo 5 >"/proc/$agentd_pid/clear_refs"  # VmHWM := VmRSS: the peak is this run's
  mapfile -t kids < <(proc_tree "$agentd_pid" | tail -n +2)
  t0=$(proc_ticks "$agentd_pid")
  c0=$(proc_ticks "${kids[@]}")
  f0=$(proc_ticks "$fake_pid")
  idle0=$(awk '/^cpu / {print $5 + $6}' /proc/stat)
  if [ "${2:-}" = perf ]; then
    perf record -e cpu-clock -F 999 -g -p "$agentd_pid" -o "$tmp/perf.data" 2>/dev/null &
    perf_pid=$!
  fi
  out=$(node "$here/load.mjs" --url "$agentd" --token "$token" --agent bench --n "$n" --steps "$steps")
  if [ -n "${perf_pid:-}" ]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" 2>/dev/null || true
  fi
  idle1=$(awk '/^cpu / {print $5 + $6}' /proc/stat)
  t1=$(proc_ticks "$agentd_pid")
  c1=$(proc_ticks "${kids[@]}")
  f1=$(proc_ticks "$fake_pid")
  R[$key.rss_peak_kb]=$(awk '/^VmHWM/ {print $2}' "/proc/$agentd_pid/status")
  metrics "$tmp/metrics-after"
  for k in intents_per_sec seconds completed errors p50_ms p99_ms max_ms first_error; do
    R[$key.$k]=$(kv "$k" "$out")
  done
  R[$key.client_cpu_ms]=$(kv cpu_ms "$out")
  R[$key.cpu_ms]=$(((t1 - t0) * 1000 / hz))
  R[$key.children_cpu_ms]=$(((c1 - c0) * 1000 / hz))
  R[$key.fake_cpu_ms]=$(((f1 - f0) * 1000 / hz))
  R[$key.idle_ms]=$(((idle1 - idle0) * 1000 / hz))
  overhead_buckets "$tmp/metrics-before" "$tmp/metrics-after" >"$tmp/buckets"
  q=$(quantiles "$tmp/buckets")
  for k in p50_us p99_us le1ms mean_us steps; do R[$key.step_$k]=$(field "$k" "$q"); done
  q=$(store_calls "$tmp/metrics-before" "$tmp/metrics-after" "$n")
  for k in sql_per_intent append_step_mean_us commits_per_intent writes_per_commit; do R[$key.$k]=$(field "$k" "$q"); done
  printf '%-9s %8s intents/s  %6s s  errors %s  latency p50 %s ms p99 %s ms  step overhead p50 %s us p99 %s us mean %s us (%s steps, %.2f%% <= 1 ms)  append_step %s us mean (%s SQL calls, %s commits per intent)  CPU ms: agentd %s, its MCP child %s, fake_llm %s, load.mjs %s, idle %s  VmHWM %s KiB  (load %s)%s\n' \
    "$key" "${R[$key.intents_per_sec]}" "${R[$key.seconds]}" "${R[$key.errors]}" "${R[$key.p50_ms]}" "${R[$key.p99_ms]}" \
    "${R[$key.step_p50_us]}" "${R[$key.step_p99_us]}" "${R[$key.step_mean_us]}" "${R[$key.step_steps]}" \
    "$(awk -v f="${R[$key.step_le1ms]}" 'BEGIN {print f * 100}')" "${R[$key.append_step_mean_us]}" "${R[$key.sql_per_intent]}" "${R[$key.commits_per_intent]}" \
    "${R[$key.cpu_ms]}" "${R[$key.children_cpu_ms]}" "${R[$key.fake_cpu_ms]}" "${R[$key.client_cpu_ms]}" "${R[$key.idle_ms]}" \
    "${R[$key.rss_peak_kb]}" "${R[$key.load]}" \
    "$([ "${R[$key.errors]}" != 0 ] && echo "  first error: ${R[$key.first_error]}")"
}
sdk_round() {  # sdk_round KEY STREAM: a fresh node process (and MCP child) per round
  local key=$1 out k
  until_quiet
  R[$key.load]=$(cut -d' ' -f1 /proc/loadavg)
  out=$(node "$here/sdk.mjs" --llm "$fake" --key "$upstream_key" --everything "$everything" --n "$n" \
    --steps "$steps" --stream "$2")
  for k in intents_per_sec seconds completed errors p50_ms p99_ms max_ms cpu_ms rss_before_kb rss_peak_kb first_error; do
    R[$key.$k]=$(kv "$k" "$out")
  done
  printf '%-9s %8s intents/s  %6s s  errors %s  latency p50 %s ms p99 %s ms  CPU %s ms  peak RSS %s KiB  (load %s)%s\n' \
    "$key" "${R[$key.intents_per_sec]}" "${R[$key.seconds]}" "${R[$key.errors]}" "${R[$key.p50_ms]}" "${R[$key.p99_ms]}" \
    "${R[$key.cpu_ms]}" "${R[$key.rss_peak_kb]}" "${R[$key.load]}" \
    "$([ "${R[$key.errors]}" != 0 ] && echo "  first error: ${R[$key.first_error]}")"
}
median_key() {  # median_key PREFIX: the round with the median throughput
  local r
  for r in $(seq "$rounds"); do echo "${R[$1$r.intents_per_sec]} $1$r"; done | sort -g | awk '{k[NR] = $2} END {print k[int((NR + 1) / 2)]}'
}

versions="Node $(node --version), @openai/agents $(node -p "require('$here/node_modules/@openai/agents/package.json').version") (openai $(node -p "require('$here/node_modules/openai/package.json').version")), server-everything $(node -p "require('$root/tests/interop/node_modules/@modelcontextprotocol/server-everything/package.json').version")"
machine=$(machine_description)
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'); $machine"
echo "== agentd: $provenance; $versions"
echo "== $n intents at once, $steps tool steps each, model delay $delay ms; $rounds rounds"
echo "== load average at the start: $load_start (now $(cut -d' ' -f1-3 /proc/loadavg))"

# Warm-up: the MCP session, the model connection pool, SQLite, the node JIT.
warm=$(node "$here/load.mjs" --url "$agentd" --token "$token" --agent bench --n 20 --steps "$steps" ${BENCH_SHOW:+--show 1})
[ "$(kv errors "$warm")" = 0 ] || { echo "agentd warm-up failed:"; echo "$warm"; tail -20 "$tmp/agentd.err"; exit 1; }
R[agentd.rss_idle_kb]=$(awk '/^VmRSS/ {print $2}' "/proc/$agentd_pid/status")

for r in $(seq "$rounds"); do
  agentd_round "agentd$r"
  [ "$sdk" = 1 ] || continue
  sdk_round "sdk$r" 0
  [ "$sdk_stream" = 1 ] && sdk_round "sdks$r" 1
done
[ "$sdk" = 1 ] || sdk_stream=0
a=$(median_key agentd)
s=none  # BENCH_SDK=0: no SDK figures
for k in intents_per_sec seconds errors p50_ms p99_ms cpu_ms rss_peak_kb; do R[none.$k]=0; done
ss=
[ "$sdk" = 1 ] && s=$(median_key sdk)
[ "$sdk_stream" = 1 ] && ss=$(median_key sdks)

if [ "$profile" = 1 ]; then
  echo "== perf record of agentd during one more round"
  agentd_round agentdp perf
  [ -z "${BENCH_PERF_DATA:-}" ] || cp "$tmp/perf.data" "$BENCH_PERF_DATA"
  shorten() {
    sed -E 's/ +$//; s/std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >/std::string/g
      s/nlohmann::json_abi_v3_11_2::/nlohmann::/g; s/boost::asio::/asio::/g; s/boost::beast::/beast::/g' | cut -c1-160
  }
  head_of() { grep -v '^#' | grep -v '^$' | head -"$1" | shorten; }
  {
    echo "by thread (the loop is agentd's first thread; the others are its blocking pool):"
    perf report -i "$tmp/perf.data" --stdio --no-children --sort pid -g none 2>/dev/null | head_of 10 || true
    echo
    perf report -i "$tmp/perf.data" --no-inline --stdio --no-children --sort dso -g none 2>/dev/null | head_of 8 || true
    echo
    perf report -i "$tmp/perf.data" --no-inline --stdio --no-children --fields overhead,sym -g none --percent-limit 1 \
      2>/dev/null | head_of 25 || true
    echo
    perf report -i "$tmp/perf.data" --no-inline --stdio --children --fields overhead_children,sym -g none \
      --percent-limit 4 2>/dev/null | grep -E 'fdatasync|sqlite3|sendmsg|epoll_wait|recv|read|write' | head_of 12 || true
  } >"$tmp/perf.txt"
  cat "$tmp/perf.txt"
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average at the end: $load_end"

# ---- report ---------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1f", a / b; else print "n/a"}'; }
verdict() { if awk "BEGIN {exit !($1)}"; then echo PASS; else echo MISS; fi; }
mib() { awk -v k="$1" 'BEGIN {printf "%.0f MiB", k / 1024}'; }
per_step() { awk -v ms="$1" -v n="$2" -v s="$((steps + 1))" 'BEGIN {printf "%.0f µs", n ? ms * 1000 / (n * s) : 0}'; }
best_sdk=$s
[ -n "$ss" ] && awk -v a="${R[$ss.intents_per_sec]}" -v b="${R[$s.intents_per_sec]}" 'BEGIN {exit !(a > b)}' && best_sdk=$ss
r_tp=$(ratio "${R[$a.intents_per_sec]}" "${R[$best_sdk.intents_per_sec]}")
r_tp_num=$r_tp
[ "$r_tp" = n/a ] && r_tp_num=0
errors_total=0
for k in "${!R[@]}"; do
  case "$k" in *.errors) errors_total=$((errors_total + ${R[$k]:-0})) ;; esac
done
row() {  # row KEY LABEL
  echo "| $2 | ${R[$1.intents_per_sec]} | ${R[$1.seconds]} s | ${R[$1.errors]} | ${R[$1.p50_ms]} / ${R[$1.p99_ms]} ms | $(per_step "${R[$1.cpu_ms]}" "$n") | $(mib "${R[$1.rss_peak_kb]}") |"
}
{
  echo "$(date -u '+%Y-%m-%d'). Machine: $machine. agentd: $provenance. $versions."
  echo "Load average at the start: $load_start; at the end: $load_end. $n intents at once, $steps tool steps + a final answer each ($((steps + 1)) model calls, $steps MCP tool calls), fake_llm's model delay $delay ms; the median of $rounds rounds (by throughput)."
  echo
  echo "| | intents/s | wall time | errors | latency p50 / p99 | CPU per model call (agentd; the SDK's process) | peak RSS |"
  echo "|---|---|---|---|---|---|---|"
  row "$a" "agentd (POST /v1/intents, SSE)"
  [ "$sdk" = 1 ] && row "$s" "Agents SDK, run()"
  [ -n "$ss" ] && row "$ss" "Agents SDK, run(..., {stream: true})"
  echo
  echo "agentd's step overhead (agentd_agent_step_overhead_seconds over the median round, ${R[$a.step_steps]} steps): p50 ${R[$a.step_p50_us]} µs, p99 ${R[$a.step_p99_us]} µs (interpolated within the histogram's buckets), mean ${R[$a.step_mean_us]} µs; $(awk -v f="${R[$a.step_le1ms]}" 'BEGIN {printf "%.2f", f * 100}')% of steps at or under 1 ms."
  echo "agentd's durable records in that round: ${R[$a.sql_per_intent]} SQL calls per intent, ${R[$a.commits_per_intent]} SQLite commits per intent (${R[$a.writes_per_commit]} writes per group commit on average), append_step ${R[$a.append_step_mean_us]} µs on average (the wait for the writer's commit included)."
  echo "CPU time over that round: agentd ${R[$a.cpu_ms]} ms, its server-everything child ${R[$a.children_cpu_ms]} ms, fake_llm ${R[$a.fake_cpu_ms]} ms, load.mjs ${R[$a.client_cpu_ms]} ms; both CPUs idle ${R[$a.idle_ms]} ms of $(awk -v s="${R[$a.seconds]}" -v c="$(nproc)" 'BEGIN {printf "%.0f", s * c * 1000}') ms."
  echo "agentd's VmRSS after the warm-up $(mib "${R[agentd.rss_idle_kb]}"), peak during the median round $(mib "${R[$a.rss_peak_kb]}") (VmHWM, reset before each round); the SDK's peak is its process's maxRSS (its MCP child not counted, nor agentd's)."
  echo
  echo "Every round (intents/s; step overhead p99 for agentd; load average at its start):"
  echo
  for r in $(seq "$rounds"); do
    echo "- round $r: agentd ${R[agentd$r.intents_per_sec]} (p99 ${R[agentd$r.step_p99_us]} µs, load ${R[agentd$r.load]}), SDK ${R[sdk$r.intents_per_sec]:-n/a} (load ${R[sdk$r.load]:-n/a})$([ -n "$ss" ] && echo ", SDK streaming ${R[sdks$r.intents_per_sec]} (load ${R[sdks$r.load]})")"
  done
  [ "$noisy" = 1 ] && echo "- **some rounds started on a busy machine (no quiet moment within ${wait_max}s)**"
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  echo "| step overhead ≤ 1 ms at p99 | p99 ${R[$a.step_p99_us]} µs; $(awk -v f="${R[$a.step_le1ms]}" 'BEGIN {printf "%.2f", f * 100}')% ≤ 1 ms | $(verdict "${R[$a.step_le1ms]} >= 0.99") |"
  echo "| zero errors | $errors_total in all rounds (both sides) | $(verdict "$errors_total == 0") |"
  echo "| ≥ 5× the Agents SDK's throughput | ${r_tp}× (${R[$a.intents_per_sec]} vs ${R[$best_sdk.intents_per_sec]} intents/s, the SDK's faster mode) | $(verdict "$r_tp_num >= 5") |"
  if [ "$profile" = 1 ]; then
    echo
    echo "### perf: agentd during one more round (${R[agentdp.intents_per_sec]} intents/s while recorded)"
    echo
    echo '```'
    cat "$tmp/perf.txt"
    echo '```'
  fi
} >"$tmp/results.md"
echo
cat "$tmp/results.md"
echo
echo "(results file: $tmp/results.md, removed on exit; set BENCH_OUT=FILE to keep a copy)"
