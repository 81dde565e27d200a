#!/usr/bin/env bash
# MCP gateway: tools/call round trips (server-everything's `echo`) measured in one run against
#   direct        server-everything's own Streamable HTTP endpoint (`... streamableHttp`)
#   agentd        agentd's /mcp, server-everything as its stdio child (`everything__echo`)
#   mcp-proxy     mcp-proxy 6.7.19 (tests/interop) fronting the same stdio server
#   supergateway  supergateway 4.0.0 (bench/mcp_gateway/package.json), `--stateful`: it runs a
#                 stdio child per session
#
#   load        mcpload.cpp (compiled on the fly): closed loop, one MCP session per connection
#               (initialize + notifications/initialized before the clock starts), each connection
#               sends a tools/call, reads the whole answer (JSON or SSE), checks it, sends the next
#   1 conn      load generator pinned to CPU 1, every server and its children to CPU 0 (as in
#               bench/ai_gateway); again unpinned for reference
#   16 conns    16 connections, 16 sessions, nothing pinned
#   sessions    on freshly started servers, before the load: VmRSS before and after opening
#               ${BENCH_SESSIONS} sessions over one connection and leaving them idle; for agentd
#               also ${BENCH_SESSIONS} more with a connection each
#   CPU         user+system time of each server process (and of its children) and of the load
#               generator per call, over each measured window
#
# Usage: bench/mcp_gateway/run.sh
# Environment: BENCH_SECONDS (12, measured; plus 2 s warm-up per run), BENCH_SESSIONS (1000),
#   BENCH_PROFILE=1 (perf record agentd under the 16-connection load and print the top functions),
#   BENCH_WAIT_QUIET=0 (do not wait for running builds/tests before measuring),
#   BENCH_WAIT_MAX (900: seconds to wait for a quiet machine before measuring anyway),
#   BENCH_OUT=FILE (also copy the results there; they are written to the temp dir, removed on exit),
#   AGENTD_BIN=PATH (measure this agentd binary instead of building build/release).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=../../scripts/lib.sh
source scripts/lib.sh
# shellcheck source=../lib.sh
source bench/lib.sh

secs=${BENCH_SECONDS:-12}
warmup=2
nsessions=${BENCH_SESSIONS:-1000}
profile=${BENCH_PROFILE:-0}
token=bench-token-0123456789abcdef
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- install and build ----------------------------------------------------------------------
command -v curl >/dev/null || install_pkgs curl
command -v g++ >/dev/null || install_pkgs g++
command -v taskset >/dev/null || install_pkgs util-linux
command -v sqlite3 >/dev/null || install_pkgs sqlite3  # counts agentd's audit records
[ "$profile" = 1 ] && { command -v perf >/dev/null || install_pkgs linux-perf; }
install_npm "$root/tests/interop"
install_npm "$here"
everything=$root/tests/interop/node_modules/@modelcontextprotocol/server-everything/dist/index.js
bin='' provenance=''  # set by agentd_binary
agentd_binary

tmp=$(mktemp -d)
pids=()
watcher_pid=
cleanup() {
  local p
  [ -z "$watcher_pid" ] || kill "$watcher_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${BENCH_OUT:-}" ] && [ -f "$tmp/results.md" ]; then cp "$tmp/results.md" "$BENCH_OUT"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
g++ -O2 -std=c++20 -o "$tmp/mcpload" "$here/mcpload.cpp"
# 1,000 client connections held open at once (agentd's sessions with a connection each).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- the servers ----------------------------------------------------------------------------
# server-everything's streamableHttp mode listens on every interface (it has no host option):
# acceptable for a local benchmark, and it is stopped on exit. supergateway does the same.
mapfile -t proxy_unset < <(env | sed -n 's/^\(MCP_PROXY_[A-Za-z0-9_]*\)=.*/-u\n\1/p')
wait_http() {  # wait_http NAME URL EXPECT LOG: until URL answers (with EXPECT in the body, if given)
  local _ body
  for _ in $(seq 300); do
    if body=$(curl -s --max-time 2 "$2" 2>/dev/null) && { [ -z "$3" ] || grep -qF "$3" <<<"$body"; }; then
      return 0
    fi
    sleep 0.1
  done
  echo "$1 did not start ($2):"
  cat "$4"
  exit 1
}
start() {  # start NAME: a fresh server on a new port; sets NAME_port and NAME_pid
  case $1 in
    direct)
      direct_port=$(free_port)
      (cd "$tmp" && PORT=$direct_port exec node "$everything" streamableHttp) >>"$tmp/direct.out" 2>&1 &
      direct_pid=$!
      wait_http direct "http://127.0.0.1:$direct_port/mcp" "" "$tmp/direct.out"
      ;;
    agentd)
      agentd_port=$(free_port)
      {
        echo "server:"
        echo "  listen: http://127.0.0.1:$agentd_port"
        echo "  limits: { max_connections: 8192 }"
        echo "clients:"
        echo "  - { name: bench, token: $token, scopes: [\"mcp:*\"] }"
        echo "log: { level: warn, access_log: false }"
        echo "store: { data_dir: $tmp/agentd-data }"
        echo "mcp:"
        echo "  servers:"
        echo "    - { name: everything, transport: stdio, command: node, args: [\"$everything\", stdio] }"
      } >"$tmp/agentd.yaml"
      "$bin" -c "$tmp/agentd.yaml" >>"$tmp/agentd.out" 2>>"$tmp/agentd.err" &
      agentd_pid=$!
      wait_http agentd "http://127.0.0.1:$agentd_port/healthz" "" "$tmp/agentd.err"
      ;;
    proxy)
      # mcp-proxy reads MCP_PROXY_* variables as options: none may leak in from the environment.
      proxy_port=$(free_port)
      (cd "$tmp" && exec env "${proxy_unset[@]}" "$root/tests/interop/node_modules/.bin/mcp-proxy" \
        --host 127.0.0.1 --port "$proxy_port" --server stream --streamEndpoint /mcp -- \
        node "$everything" stdio) >>"$tmp/proxy.out" 2>&1 &
      proxy_pid=$!
      wait_http mcp-proxy "http://127.0.0.1:$proxy_port/ping" pong "$tmp/proxy.out"
      ;;
    supergateway)
      # --stateful: without it supergateway starts a new child for every request.
      supergateway_port=$(free_port)
      (cd "$tmp" && exec "$here/node_modules/.bin/supergateway" --stdio "node $everything stdio" \
        --outputTransport streamableHttp --stateful --port "$supergateway_port" --logLevel none \
        --healthEndpoint /healthz) >>"$tmp/supergateway.out" 2>&1 &
      supergateway_pid=$!
      wait_http supergateway "http://127.0.0.1:$supergateway_port/healthz" ok "$tmp/supergateway.out"
      ;;
  esac
  local var=${1}_pid
  pids+=("${!var}")
}
stop() {  # stop NAME: SIGTERM to the server and its children, then wait until all are gone
  local var=${1}_pid p _ procs alive
  procs=$(proc_tree "${!var}")
  for p in $procs; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${!var}" 2>/dev/null || true
  for _ in $(seq 100); do
    alive=
    for p in $procs; do [ -d "/proc/$p" ] && alive=1; done
    [ -z "$alive" ] && return 0
    sleep 0.1
  done
  for p in $procs; do kill -KILL "$p" 2>/dev/null || true; done
}

names=(direct agentd proxy supergateway)
for name in "${names[@]}"; do start "$name"; done
label() {
  case $1 in
    direct) echo "direct (server-everything streamableHttp)" ;;
    agentd) echo "agentd /mcp (stdio child)" ;;
    proxy) echo "mcp-proxy (stdio child)" ;;
    supergateway) echo "supergateway --stateful (stdio child per session)" ;;
  esac
}
# target NAME → url, tool, hargs (extra header arguments), pid
target() {
  hargs=()
  tool="echo"
  case $1 in
    direct) url=http://127.0.0.1:$direct_port/mcp pid=$direct_pid ;;
    agentd) url=http://127.0.0.1:$agentd_port/mcp pid=$agentd_pid tool=everything__echo
      hargs=(-H "Authorization: Bearer $token") ;;
    proxy) url=http://127.0.0.1:$proxy_port/mcp pid=$proxy_pid ;;
    supergateway) url=http://127.0.0.1:$supergateway_port/mcp pid=$supergateway_pid ;;
  esac
}

# ---- sanity: every path answers the echo ----------------------------------------------------
# (agentd's first calls also wait here until its stdio child is up.)
declare -A R
for name in "${names[@]}"; do
  target "$name"
  if ! out=$("$tmp/mcpload" --url "$url" "${hargs[@]}" --tool "$tool" --connections 1 --duration 1 --warmup 0.5) ||
    [ "$(kv calls "$out")" -eq 0 ] || [ "$(kv bad_answers "$out")" -ne 0 ] || [ "$(kv errors "$out")" -ne 0 ]; then
    echo "$name: tools/call $tool did not answer as expected:"
    echo "$out"
    tail -20 "$tmp/agentd.err" "$tmp/proxy.out" "$tmp/supergateway.out" "$tmp/direct.out"
    exit 1
  fi
  R[$name.format]=JSON
  [ "$(kv sse_answers "$out")" -gt 0 ] && R[$name.format]="SSE"
  echo "   $name: $(kv calls "$out") calls in 1 s, answered as ${R[$name.format]}"
done
echo "== every path answers tools/call echo"

# ---- wait for a quiet machine (as bench/ai_gateway does) ------------------------------------
busy_pct() {  # CPU time not idle, all cores, over 3 seconds
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  sleep 3
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " ");
    busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%d", (busy + idle) ? 100 * busy / (busy + idle) : 0}'
}
# Builds and test runs of the other engineers skew every figure. Each measurement waits (up to
# BENCH_WAIT_MAX seconds) until none runs and the machine is idle, and is taken again when one
# started meanwhile.
quiet=${BENCH_WAIT_QUIET:-1}
wait_max=${BENCH_WAIT_MAX:-900}
busy_re='ninja|ctest|cc1plus|collect2|_tests?( |$)'
wait_quiet() {
  local waited=0
  [ "$quiet" = 1 ] || return 0
  while pgrep -f "$busy_re" >/dev/null || [ "$(busy_pct)" -gt 10 ]; do
    if [ "$waited" -ge "$wait_max" ]; then
      echo "   (no quiet machine after ${wait_max}s: measuring anyway; load $(cut -d' ' -f1 /proc/loadavg))"
      noisy=1
      return 0
    fi
    [ $((waited % 60)) -eq 0 ] &&
      echo "   (waiting for a quiet machine: $(pgrep -fc "$busy_re") build/test processes, load $(cut -d' ' -f1 /proc/loadavg))"
    sleep 2
    waited=$((waited + 5))
  done
}
measured() {  # measured CMD ARGS...: run CMD on a quiet machine
  local try
  for try in 1 2 3 4; do
    wait_quiet
    rm -f "$tmp/interfered"
    if [ "$quiet" = 1 ]; then
      (while :; do pgrep -f "$busy_re" >/dev/null && touch "$tmp/interfered"; sleep 0.5; done) &
      watcher_pid=$!
    fi
    "$@"
    if [ "$quiet" = 1 ]; then
      kill "$watcher_pid" 2>/dev/null || true
      wait "$watcher_pid" 2>/dev/null || true
      watcher_pid=
    fi
    [ -e "$tmp/interfered" ] || return 0
    echo "   (a build or test ran meanwhile: measuring again, try $((try + 1)))"
  done
  echo "   (still disturbed after 4 tries: the figures above are suspect)"
  interfered=1
}
interfered=0
noisy=0

# ---- helpers --------------------------------------------------------------------------------

pinning=0
[ "$(nproc)" -ge 2 ] && pinning=1
client_cpu=()
pin() {  # pin on|off: every server process and its children on CPU 0, the load generator on CPU 1
  local p cpus="0-$(($(nproc) - 1))"
  [ "$pinning" = 1 ] || return 0
  [ "$1" = on ] && cpus=0
  for p in $(for q in "$direct_pid" "$agentd_pid" "$proxy_pid" "$supergateway_pid"; do proc_tree "$q"; done); do
    taskset -a -p -c "$cpus" "$p" >/dev/null 2>&1 || true
  done
  client_cpu=()
  [ "$1" = on ] && client_cpu=(taskset -c 1)
  return 0
}

audit_rows() {  # rows in agentd's audit log (SQLite, WAL: readable while agentd writes)
  sqlite3 "$tmp/agentd-data/agentd.db" 'select count(*) from audit_log' 2>/dev/null || echo 0
}
audit_dropped() { grep -c 'audit record not stored' "$tmp/agentd.err" || true; }

settle() {  # settle PID: wait (up to 60 s) until the process tree stops using CPU; prints seconds
  local t0 t1 waited=0
  while [ "$waited" -lt 60 ]; do
    t0=$(tree_ticks "$1")
    sleep 1
    t1=$(tree_ticks "$1")
    [ $((t1 - t0)) -le 2 ] && break
    waited=$((waited + 1))
  done
  echo "$waited"
}
# shellcheck disable=SC2046 # one pid a word
tree_ticks() { proc_ticks $(proc_tree "$1"); }  # user+system clock ticks of PID and its descendants

load_run() {  # load_run NAME KEY CONNS
  local name=$1 key=$2 conns=$3 out k calls rows0=0 dropped0=0
  target "$name"
  if [ "$name" = agentd ]; then
    rows0=$(audit_rows)
    dropped0=$(audit_dropped)
  fi
  out=$("${client_cpu[@]}" "$tmp/mcpload" --url "$url" "${hargs[@]}" --tool "$tool" \
    --connections "$conns" --duration "$secs" --warmup "$warmup" --pid "$pid")
  echo "$out" >"$tmp/load-$name-$key.txt"
  for k in calls_per_sec p50_us p90_us p99_us max_us calls errors bad_answers client_cpu_ms \
    server_cpu_ms children_cpu_ms answered_total; do
    R[$name.$key.$k]=$(kv "$k" "$out")
  done
  # Work a server still does after the last answer (agentd: audit records queued for the
  # database, which wait on the disk more than on the CPU) would otherwise land in the next run.
  R[$name.$key.busy_after]=$(settle "$pid")
  if [ "$name" = agentd ]; then
    local waited=0 stored dropped
    while :; do  # until every answered call is either stored or reported dropped (60 s at most)
      stored=$(($(audit_rows) - rows0))
      dropped=$(($(audit_dropped) - dropped0))
      [ $((stored + dropped)) -ge "${R[$name.$key.answered_total]}" ] || [ "$waited" -ge 60 ] && break
      sleep 1
      waited=$((waited + 1))
    done
    R[$name.$key.audit_stored]=$stored
    R[$name.$key.audit_dropped]=$dropped
    R[$name.$key.audit_after]=$waited
  fi
  calls=${R[$name.$key.calls]}
  per_call() { awk -v ms="$1" -v n="$calls" 'BEGIN {printf "%.0f", n ? ms * 1e3 / n : 0}'; }
  R[$name.$key.cpu_self_us]=$(per_call "${R[$name.$key.server_cpu_ms]}")
  R[$name.$key.cpu_children_us]=$(per_call "${R[$name.$key.children_cpu_ms]}")
  R[$name.$key.cpu_client_us]=$(per_call "${R[$name.$key.client_cpu_ms]}")
  local bad=$((${R[$name.$key.errors]} + ${R[$name.$key.bad_answers]}))
  printf '%-13s %-4s %9s calls/s  p50 %7s us  p99 %7s us  CPU/call: server %s us, its children %s us, client %s us; busy %s s after%s%s\n' \
    "$name" "$key" "${R[$name.$key.calls_per_sec]}" "${R[$name.$key.p50_us]}" "${R[$name.$key.p99_us]}" \
    "${R[$name.$key.cpu_self_us]}" "${R[$name.$key.cpu_children_us]}" "${R[$name.$key.cpu_client_us]}" \
    "${R[$name.$key.busy_after]}" \
    "$([ "$name" = agentd ] && echo "; audit: ${R[$name.$key.answered_total]} calls answered, ${R[$name.$key.audit_stored]} records stored, ${R[$name.$key.audit_dropped]} dropped, accounted for ${R[$name.$key.audit_after]} s after")" \
    "$([ "$bad" -gt 0 ] && echo "  (${R[$name.$key.errors]} errors, ${R[$name.$key.bad_answers]} bad answers: $(kv first_bad "$out"))")"
  [ "$calls" -gt 0 ] || { echo "$name: no call completed"; exit 1; }
}

sessions_run() {  # sessions_run NAME N [--with-connections]: on a freshly started server
  local name=$1 n=$2 out k
  shift 2
  # A fresh process each time (also when a disturbed run is repeated): one that has freed memory
  # before hands it out again, and a session then seems to cost nothing.
  stop "$name"
  start "$name"
  target "$name"
  out=$("$tmp/mcpload" --url "$url" "${hargs[@]}" --sessions "$n" --pid "$pid" --delete "$@")
  echo "$out" >"$tmp/sessions-$name.txt"
  for k in sessions open_seconds rss_before_kb rss_after_kb per_session_bytes tree_rss_before_kb \
    tree_rss_after_kb tree_per_session_bytes processes_before processes_after conn_rss_before_kb \
    conn_rss_after_kb conn_per_session_bytes; do
    R[$name.s.$k]=$(kv "$k" "$out")
  done
  printf '%-13s %s idle sessions: VmRSS %s -> %s KiB, %s bytes per session (with children: %s -> %s KiB, %s bytes; %s -> %s processes)%s\n' \
    "$name" "$n" "${R[$name.s.rss_before_kb]}" "${R[$name.s.rss_after_kb]}" "${R[$name.s.per_session_bytes]}" \
    "${R[$name.s.tree_rss_before_kb]}" "${R[$name.s.tree_rss_after_kb]}" "${R[$name.s.tree_per_session_bytes]}" \
    "${R[$name.s.processes_before]}" "${R[$name.s.processes_after]}" \
    "$([ -n "${R[$name.s.conn_per_session_bytes]}" ] && echo "; $n more, a connection each: ${R[$name.s.conn_rss_before_kb]} -> ${R[$name.s.conn_rss_after_kb]} KiB, ${R[$name.s.conn_per_session_bytes]} bytes per session+connection")"
}

versions="Node $(node --version), server-everything $(node -p "require('$root/tests/interop/node_modules/@modelcontextprotocol/server-everything/package.json').version"), mcp-proxy $(node -p "require('$root/tests/interop/node_modules/mcp-proxy/package.json').version"), supergateway $(node -p "require('$here/node_modules/supergateway/package.json').version")"
machine=$(machine_description)
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'); $machine"
echo "== agentd: $provenance; $versions; ${secs}s measured + ${warmup}s warm-up per run"
echo "== load average at the start: $load_start (now $(cut -d' ' -f1-3 /proc/loadavg))"

# ---- idle sessions, on fresh processes ------------------------------------------------------
echo "-- $nsessions idle sessions (initialize + notifications/initialized each, then left idle)"
measured sessions_run agentd "$nsessions" --with-connections
measured sessions_run direct "$nsessions"
measured sessions_run proxy "$nsessions"
# supergateway runs a child process (~70 MB) per session: 1,000 would not fit in this machine.
sg_sessions=20
measured sessions_run supergateway "$sg_sessions"

# ---- load -----------------------------------------------------------------------------------
# Warm every path (JIT, pools) before the measured runs.
for name in "${names[@]}"; do
  target "$name"
  "$tmp/mcpload" --url "$url" "${hargs[@]}" --tool "$tool" --connections 4 --duration 2 --warmup 0 >/dev/null
done
pin on
echo "-- 1 connection, load generator on CPU 1, servers and their children on CPU 0 (pinning: $pinning)"
for name in "${names[@]}"; do measured load_run "$name" c1 1; done
pin off
echo "-- 16 connections (16 sessions), unpinned"
for name in "${names[@]}"; do measured load_run "$name" c16 16; done
echo "-- 1 connection, unpinned (reference)"
for name in "${names[@]}"; do measured load_run "$name" c1u 1; done

if [ "$profile" = 1 ]; then
  echo "== perf record of agentd under 16 connections"
  target agentd
  record() {
    "$tmp/mcpload" --url "$url" "${hargs[@]}" --tool "$tool" --connections 16 --duration "$((secs + 2))" \
      --warmup 1 >"$tmp/load-profile.txt" &
    local load_pid=$!
    sleep 2
    perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -p "$agentd_pid" -o "$tmp/perf.data" \
      -- sleep "$secs" 2>/dev/null
    wait "$load_pid"
  }
  measured record
  shorten() {
    sed -E 's/ +$//; s/std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >/std::string/g
      s/nlohmann::json_abi_v3_11_2::/nlohmann::/g
      s/nlohmann::basic_json<std::map, std::vector, std::string, bool, long, unsigned long, double, std::allocator, nlohmann::adl_serializer, std::vector<unsigned char, std::allocator<unsigned char> > >/json/g
      s/boost::asio::/asio::/g; s/boost::beast::/beast::/g' | cut -c1-150
  }
  perf report -i "$tmp/perf.data" --no-inline --stdio --no-children --sort dso -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -8 | shorten >"$tmp/perf-dso.txt"
  perf report -i "$tmp/perf.data" --no-inline --stdio --no-children --fields overhead,sym -g none --percent-limit 0.8 \
    2>/dev/null | grep -v '^#' | grep -v '^$' | head -30 | shorten >"$tmp/perf-self.txt"
  perf report -i "$tmp/perf.data" --no-inline --stdio --children --fields overhead_children,overhead,sym -g none \
    --percent-limit 1.5 2>/dev/null | shorten |
    grep -E '\] (agentd::|json::(parse|dump)|__libc_(sendmsg|recvmsg|malloc|free|write|read)|__GI___libc_(malloc|free|write|read)|epoll_wait|SHA256)' |
    head -40 >"$tmp/perf-children.txt"
  cat "$tmp/perf-dso.txt" "$tmp/perf-self.txt" "$tmp/perf-children.txt"
fi
R[agentd.rss_end]=$(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$agentd_pid/status")
R[agentd.hwm_end]=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$agentd_pid/status")
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average at the end: $load_end"

# ---- report ---------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
verdict() { if awk "BEGIN {exit !($1)}"; then echo PASS; else echo MISS; fi; }
fmt_us() {
  awk -v u="$1" 'BEGIN {
    if (u == "" || u == "nan") print "?";
    else if (u < 1000) printf "%d µs", u;
    else if (u < 1000000) printf "%.2f ms", u / 1000;
    else printf "%.2f s", u / 1000000 }'
}
fmt_n() { printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
kib() { awk -v b="$1" 'BEGIN {printf "%.1f KiB", b / 1024}'; }
cell() { echo "$(fmt_n "${R[$1.calls_per_sec]}") | $(fmt_us "${R[$1.p50_us]}") / $(fmt_us "${R[$1.p99_us]}")"; }

r_proxy_c16=$(ratio "${R[agentd.c16.calls_per_sec]}" "${R[proxy.c16.calls_per_sec]}")
r_proxy_c1=$(ratio "${R[agentd.c1.calls_per_sec]}" "${R[proxy.c1.calls_per_sec]}")
r_direct_c16=$(ratio "${R[agentd.c16.calls_per_sec]}" "${R[direct.c16.calls_per_sec]}")
r_direct_c1=$(ratio "${R[agentd.c1.calls_per_sec]}" "${R[direct.c1.calls_per_sec]}")
errors_total=0
for k in "${!R[@]}"; do
  case "$k" in *.errors | *.bad_answers) errors_total=$((errors_total + ${R[$k]:-0})) ;; esac
done

{
  echo "$(date -u '+%Y-%m-%d'). Machine: $machine. agentd: $provenance. $versions."
  echo "Load average at the start: $load_start; at the end: $load_end. ${secs} s measured per run after ${warmup} s of warm-up."
  echo
  echo "### tools/call echo round trips (one session per connection)"
  echo
  echo "| | answer | 1 connection, pinned: calls/s | p50 / p99 | 16 connections: calls/s | p50 / p99 | 1 connection, unpinned: calls/s | p50 / p99 |"
  echo "|---|---|---|---|---|---|---|---|"
  for name in "${names[@]}"; do
    echo "| $(label "$name") | ${R[$name.format]} | $(cell "$name.c1") | $(cell "$name.c16") | $(cell "$name.c1u") |"
  done
  echo
  echo "CPU per call at 16 connections (user + system, from /proc; the server process / its stdio children / the load generator):"
  echo
  echo "| | server | children | load generator |"
  echo "|---|---|---|---|"
  for name in "${names[@]}"; do
    echo "| $(label "$name") | ${R[$name.c16.cpu_self_us]} µs | ${R[$name.c16.cpu_children_us]} µs | ${R[$name.c16.cpu_client_us]} µs |"
  done
  echo
  echo "agentd's audit log (one durable record per tools/call, SQLite in the data dir, \`synchronous=FULL\`), per run:"
  echo "calls answered (warm-up included), records stored, records dropped (\`mcp audit record not"
  echo "stored\` in its log), and how long after the last answer every call was accounted for."
  echo
  echo "| run | calls answered | records stored | dropped | accounted for after |"
  echo "|---|---|---|---|---|"
  for key in c1 c16 c1u; do
    echo "| $key | $(fmt_n "${R[agentd.$key.answered_total]}") | $(fmt_n "${R[agentd.$key.audit_stored]}") | $(fmt_n "${R[agentd.$key.audit_dropped]}") | ${R[agentd.$key.audit_after]} s |"
  done
  echo
  echo "agentd's VmRSS after all the runs: ${R[agentd.rss_end]} MB (peak ${R[agentd.hwm_end]} MB)."
  echo
  echo "### Idle sessions (each server freshly started; 20 sessions opened and deleted first)"
  echo
  echo "| | sessions | VmRSS before → after | per session | with children: before → after | processes |"
  echo "|---|---|---|---|---|---|"
  for name in "${names[@]}"; do
    echo "| $(label "$name") | $(fmt_n "${R[$name.s.sessions]}") | ${R[$name.s.rss_before_kb]} → ${R[$name.s.rss_after_kb]} KiB | $(kib "${R[$name.s.per_session_bytes]}") (with children $(kib "${R[$name.s.tree_per_session_bytes]}")) | ${R[$name.s.tree_rss_before_kb]} → ${R[$name.s.tree_rss_after_kb]} KiB | ${R[$name.s.processes_before]} → ${R[$name.s.processes_after]} |"
  done
  echo
  echo "- The node processes' VmRSS moves with garbage collection: their per-session figures are indicative (supergateway's own process can even shrink; its cost is the child per session)."
  echo "- agentd, $(fmt_n "$nsessions") more sessions with a connection of its own each (held open): VmRSS ${R[agentd.s.conn_rss_before_kb]} → ${R[agentd.s.conn_rss_after_kb]} KiB, $(kib "${R[agentd.s.conn_per_session_bytes]}") per session + connection"
  echo
  echo "### Ratios"
  echo
  echo "- agentd / mcp-proxy calls/s: ${r_proxy_c16}× at 16 connections, ${r_proxy_c1}× at 1 connection (pinned)"
  echo "- agentd / direct calls/s: ${r_direct_c16}× at 16 connections, ${r_direct_c1}× at 1 connection (pinned)"
  echo "- agentd / supergateway calls/s: $(ratio "${R[agentd.c16.calls_per_sec]}" "${R[supergateway.c16.calls_per_sec]}")× at 16 connections, $(ratio "${R[agentd.c1.calls_per_sec]}" "${R[supergateway.c1.calls_per_sec]}")× at 1 connection (pinned)"
  echo "- p50 at 1 connection, agentd minus direct: $((${R[agentd.c1.p50_us]} - ${R[direct.c1.p50_us]})) µs pinned, $((${R[agentd.c1u.p50_us]} - ${R[direct.c1u.p50_us]})) µs unpinned"
  echo "- errors or wrong answers in all runs: $errors_total"
  [ "$interfered" = 1 ] && echo "- **a build or test kept running during some runs: these figures are suspect**"
  [ "$noisy" = 1 ] && echo "- **some runs started on a busy machine (no quiet moment within ${wait_max}s)**"
  echo
  echo "### Targets"
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  echo "| agentd ≥ 5× mcp-proxy's calls/s (16 connections) | ${r_proxy_c16}× ($(fmt_n "${R[agentd.c16.calls_per_sec]}") vs $(fmt_n "${R[proxy.c16.calls_per_sec]}")); 1 connection ${r_proxy_c1}× | $(verdict "$r_proxy_c16 >= 5") |"
  echo "| agentd p50 at 1 connection ≤ direct's | $(fmt_us "${R[agentd.c1.p50_us]}") vs $(fmt_us "${R[direct.c1.p50_us]}") pinned; $(fmt_us "${R[agentd.c1u.p50_us]}") vs $(fmt_us "${R[direct.c1u.p50_us]}") unpinned | $(verdict "${R[agentd.c1.p50_us]} <= ${R[direct.c1.p50_us]} && ${R[agentd.c1u.p50_us]} <= ${R[direct.c1u.p50_us]}") |"
  echo "| memory per idle downstream session ≤ 20 KiB | $(kib "${R[agentd.s.per_session_bytes]}") ($(kib "${R[agentd.s.conn_per_session_bytes]}") with a connection each) | $(verdict "${R[agentd.s.per_session_bytes]} <= 20480") |"
  if [ "$profile" = 1 ]; then
    echo
    echo "### perf: agentd under 16 connections ($(kv calls_per_sec "$(cat "$tmp/load-profile.txt")") calls/s while recorded)"
    echo
    echo '```'
    cat "$tmp/perf-dso.txt"
    echo
    cat "$tmp/perf-self.txt"
    echo
    cat "$tmp/perf-children.txt"
    echo '```'
  fi
} >"$tmp/results.md"
echo
cat "$tmp/results.md"
echo
echo "(results file: $tmp/results.md, removed on exit; set BENCH_OUT=FILE to keep a copy)"
