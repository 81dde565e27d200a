#!/usr/bin/env bash
# AI gateway overhead: the upstream direct, agentd in front of it and Portkey's open-source
# gateway (@portkey-ai/gateway) in front of it, measured in one run against the same instant
# local upstream (nginx returning a fixed ~1 KB chat completion, and a fixed SSE stream).
# Two more entrants for reference: agentd with `server.busy_poll_us: 50` (its loop polls 50 µs
# before it sleeps), and nginx with one worker as a plain reverse proxy (keep-alive upstream,
# no buffering): the least one thread of a C proxy does per request on this machine.
#
#   max throughput     wrk -t2 -c64 -d${BENCH_SECONDS}s (post.lua: POST body + headers)
#   latency, 1 conn    wrk -t1 -c1 -d${BENCH_SECONDS}s --latency (p50/p99); load generator pinned
#                      to CPU 1, the servers to CPU 0 (see "Placement" below)
#   latency, fixed     loadgen.cpp (open loop, ${BENCH_RATE} req/s, 64 keep-alive connections,
#                      latency from the scheduled send time)
#   memory             VmHWM/VmRSS after the runs; agentd with ${BENCH_STREAMS} streams held open
#
# Usage: bench/ai_gateway/run.sh
# Environment: BENCH_SECONDS (10), BENCH_RATE (5000), BENCH_STREAMS (1000),
#   BENCH_PROFILE=1 (perf record agentd under wrk -c64 load and print the top functions),
#   BENCH_WAIT_QUIET=0 (do not wait for running builds/tests before measuring),
#   BENCH_OUT=FILE (also copy the results there; they are written to the temp dir, removed on exit),
#   AGENTD_BIN=PATH (measure this agentd binary instead of building build/release: e.g. one built
#   from `git archive HEAD` while the work tree is mid-edit).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=../../scripts/lib.sh
source scripts/lib.sh

secs=${BENCH_SECONDS:-10}
rate=${BENCH_RATE:-5000}
nstreams=${BENCH_STREAMS:-1000}
profile=${BENCH_PROFILE:-0}
token=bench-token-0123456789abcdef

# ---- install and build ----------------------------------------------------------------------
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || install_pkgs nginx-light
command -v wrk >/dev/null || install_pkgs wrk
command -v curl >/dev/null || install_pkgs curl
command -v g++ >/dev/null || install_pkgs g++
[ "$profile" = 1 ] && { command -v perf >/dev/null || install_pkgs linux-perf; }
export PATH=$PATH:/usr/sbin
install_npm "$here"
if [ -n "${AGENTD_BIN:-}" ]; then
  bin=$(realpath "$AGENTD_BIN")
  provenance="binary $bin"
else
  cmake --preset release >/dev/null
  cmake --build --preset release
  bin=$root/build/release/src/agentd
  provenance="commit $(git rev-parse --short HEAD)"
  [ -n "$(git status --porcelain -- src include CMakeLists.txt)" ] &&
    provenance+=" + uncommitted changes under src/ include/"
fi

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
g++ -O2 -std=c++20 -o "$tmp/loadgen" "$here/loadgen.cpp"
# 1,000 client streams + 1,000 upstream connections in one process each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- payloads -------------------------------------------------------------------------------
created=1764000000
text="This is a fixed answer from the benchmark upstream, long enough to make the whole"
text+=" chat completion about one kilobyte, which is a typical size for a short assistant reply."
text="$text $text $text $text"
completion='{"id":"chatcmpl-bench0001","object":"chat.completion","created":'$created
completion+=',"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant",'
completion+='"content":"'$text'","refusal":null},"logprobs":null,"finish_reason":"stop"}],'
completion+='"usage":{"prompt_tokens":12,"completion_tokens":180,"total_tokens":192},'
completion+='"system_fingerprint":"fp_bench"}'
chunk() {  # chunk DELTA_JSON FINISH
  printf 'data: {"id":"chatcmpl-bench0002","object":"chat.completion.chunk","created":%s,' "$created"
  printf '"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_bench","choices":[{"index":0,'
  printf '"delta":%s,"logprobs":null,"finish_reason":%s}]}\\n\\n' "$1" "$2"
}
sse=$(
  chunk '{"role":"assistant","content":""}' null
  for w in Hello there this is a fixed streamed answer from the local upstream; do
    chunk "{\"content\":\"$w \"}" null
  done
  chunk '{}' '"stop"'
  printf 'data: {"id":"chatcmpl-bench0002","object":"chat.completion.chunk","created":%s,' "$created"
  printf '"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":12,'
  printf '"completion_tokens":10,"total_tokens":22}}\\n\\n'
  printf 'data: [DONE]\\n\\n'
)
messages='"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello."}]'
printf '{"model":"gpt-4o-mini",%s}' "$messages" >"$tmp/body-direct.json"
printf '{"model":"up/gpt-4o-mini",%s}' "$messages" >"$tmp/body-agentd.json"
printf '{"model":"gpt-4o-mini","stream":true,%s}' "$messages" >"$tmp/stream-direct.json"
printf '{"model":"ups/gpt-4o-mini","stream":true,%s}' "$messages" >"$tmp/stream-agentd.json"

# ---- nginx: the instant upstream, and one worker as a reverse proxy (reference) -------------
# nginx_start DIR WORKERS < SERVER-BLOCKS: writes DIR/nginx.conf (the common part, then the
# server blocks read from stdin) and starts nginx on it; sets started_pid.
nginx_start() {
  local dir=$1
  mkdir -p "$dir"
  {
    [ "$(id -u)" -eq 0 ] && echo "user $(id -un) $(id -gn);"
    cat <<EOF
worker_processes $2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
EOF
    cat
    echo "}"
  } >"$dir/nginx.conf"
  nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
  started_pid=$!
  pids+=("$started_pid")
}
nginx_port=$(free_port)
nginx_start "$tmp/nginx" auto <<EOF
  server {
    listen 127.0.0.1:$nginx_port;
    location = /v1/chat/completions {
      default_type application/json;
      return 200 '$completion';
    }
    location = /stream/v1/chat/completions {
      default_type text/event-stream;
      return 200 '$sse';
    }
  }
EOF
nginx_pid=$started_pid
proxy_port=$(free_port)
nginx_start "$tmp/proxy" 1 <<EOF
  upstream up {
    server 127.0.0.1:$nginx_port;
    keepalive 256;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$proxy_port;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
EOF
proxy_pid=$started_pid

# ---- agentd ---------------------------------------------------------------------------------
agentd_port=$(free_port)
slow_port=$(free_port)
cat >"$tmp/agentd.yaml" <<EOF
server:
  listen: http://127.0.0.1:$agentd_port
  limits: { max_connections: 8192 }
clients:
  - { name: bench, token: $token, scopes: ["*"] }
log: { level: warn, access_log: false }
store: { data_dir: $tmp/agentd-data }
ai:
  providers:
    - { name: up, kind: openai, base_url: "http://127.0.0.1:$nginx_port/v1", api_key: x }
    - { name: ups, kind: openai, base_url: "http://127.0.0.1:$nginx_port/stream/v1", api_key: x }
    - { name: slow, kind: openai, base_url: "http://127.0.0.1:$slow_port/v1", api_key: x }
  cache: { enabled: false }
EOF
"$bin" -c "$tmp/agentd.yaml" >"$tmp/agentd.out" 2>"$tmp/agentd.err" &
agentd_pid=$!
pids+=("$agentd_pid")
# The same with busy polling (server.busy_poll_us), on its own port and data dir.
agentdbp_port=$(free_port)
sed -e "s|127.0.0.1:$agentd_port|127.0.0.1:$agentdbp_port|" -e "s|$tmp/agentd-data|$tmp/agentdbp-data|" \
  -e "s|^server:|server:\n  busy_poll_us: 50|" "$tmp/agentd.yaml" >"$tmp/agentdbp.yaml"
"$bin" -c "$tmp/agentdbp.yaml" >"$tmp/agentdbp.out" 2>"$tmp/agentdbp.err" &
agentdbp_pid=$!
pids+=("$agentdbp_pid")

# ---- Portkey --------------------------------------------------------------------------------
portkey_port=$(free_port)
(cd "$here" && exec node_modules/.bin/gateway --port="$portkey_port" --headless) \
  >"$tmp/portkey.out" 2>&1 &
portkey_pid=$!
pids+=("$portkey_pid")

wait_port() {  # wait_port NAME PORT LOG
  local _
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$2/" && return 0
    sleep 0.05
  done
  echo "$1 did not start on port $2:"
  cat "$3"
  exit 1
}
wait_port nginx "$nginx_port" "$tmp/nginx/error.log"
wait_port agentd "$agentd_port" "$tmp/agentd.err"
wait_port agentdbp "$agentdbp_port" "$tmp/agentdbp.err"
wait_port nginx-proxy "$proxy_port" "$tmp/proxy/error.log"
wait_port portkey "$portkey_port" "$tmp/portkey.out"

direct_url=http://127.0.0.1:$nginx_port/v1/chat/completions
direct_stream_url=http://127.0.0.1:$nginx_port/stream/v1/chat/completions
agentd_url=http://127.0.0.1:$agentd_port/v1/chat/completions
agentdbp_url=http://127.0.0.1:$agentdbp_port/v1/chat/completions
proxy_url=http://127.0.0.1:$proxy_port/v1/chat/completions
proxy_stream_url=http://127.0.0.1:$proxy_port/stream/v1/chat/completions
portkey_url=http://127.0.0.1:$portkey_port/v1/chat/completions
agentd_headers="Authorization: Bearer $token"
portkey_headers=$'Authorization: Bearer x\nx-portkey-provider: openai\nx-portkey-custom-host: http://127.0.0.1:'$nginx_port/v1
portkey_stream_headers=$'Authorization: Bearer x\nx-portkey-provider: openai\nx-portkey-custom-host: http://127.0.0.1:'$nginx_port/stream/v1

# target NAME VARIANT → sets url, body, headers for wrk/loadgen/curl
target() {
  case "$1/$2" in
    direct/plain) url=$direct_url body=$tmp/body-direct.json headers= ;;
    direct/stream) url=$direct_stream_url body=$tmp/stream-direct.json headers= ;;
    agentd/plain) url=$agentd_url body=$tmp/body-agentd.json headers=$agentd_headers ;;
    agentd/stream) url=$agentd_url body=$tmp/stream-agentd.json headers=$agentd_headers ;;
    agentdbp/plain) url=$agentdbp_url body=$tmp/body-agentd.json headers=$agentd_headers ;;
    agentdbp/stream) url=$agentdbp_url body=$tmp/stream-agentd.json headers=$agentd_headers ;;
    proxy/plain) url=$proxy_url body=$tmp/body-direct.json headers= ;;
    proxy/stream) url=$proxy_stream_url body=$tmp/stream-direct.json headers= ;;
    portkey/plain) url=$portkey_url body=$tmp/body-direct.json headers=$portkey_headers ;;
    portkey/stream) url=$portkey_url body=$tmp/stream-direct.json headers=$portkey_stream_headers ;;
  esac
}

header_args() {  # the lines of $headers as curl/loadgen -H arguments
  hargs=()
  local line
  while IFS= read -r line; do [ -n "$line" ] && hargs+=(-H "$line"); done <<<"$headers"
  return 0
}

names=(direct proxy agentd agentdbp portkey)

# ---- sanity: every path answers 200 with the expected body ----------------------------------
for name in "${names[@]}"; do
  for variant in plain stream; do
    target "$name" "$variant"
    header_args
    code=$(curl -s -o "$tmp/check.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      "${hargs[@]}" --data-binary "@$body" "$url")
    want='"chat.completion"'
    [ "$variant" = stream ] && want='data: [DONE]'
    if [ "$code" != 200 ] || ! grep -qF "$want" "$tmp/check.out"; then
      echo "$name/$variant: HTTP $code, expected 200 with $want:"
      head -c 600 "$tmp/check.out"
      echo
      tail -20 "$tmp/agentd.err" "$tmp/portkey.out"
      exit 1
    fi
  done
done
echo "== all paths answer (completion $(printf %s "$completion" | wc -c) bytes, stream $(printf '%b' "$sse" | wc -c) bytes)"

# ---- wait for a quiet machine ---------------------------------------------------------------
busy_pct() {  # CPU time not idle, all cores, over 3 seconds
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  sleep 3
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " ");
    busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%d", (busy + idle) ? 100 * busy / (busy + idle) : 0}'
}
# Builds and test runs (a CI run, another checkout) skew every figure. Each measurement waits
# until none runs and the machine is idle, and is taken again when one started meanwhile.
quiet=${BENCH_WAIT_QUIET:-1}
busy_re='ninja|ctest|cc1plus|collect2|_tests?( |$)'
wait_quiet() {
  local waited=0
  [ "$quiet" = 1 ] || return 0
  while pgrep -f "$busy_re" >/dev/null || [ "$(busy_pct)" -gt 10 ]; do
    [ $((waited % 60)) -eq 0 ] &&
      echo "   (waiting for a quiet machine: $(pgrep -fc "$busy_re") build/test processes, load $(cut -d' ' -f1 /proc/loadavg))"
    sleep 2
    waited=$((waited + 5))
  done
}
measured() {  # measured CMD ARGS...: run CMD on a quiet machine
  local try
  for try in 1 2 3 4 5 6; do
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
  echo "   (still disturbed after 6 tries: the figures above are suspect)"
  interfered=1
}
interfered=0
echo "== load before measuring: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- measurements ---------------------------------------------------------------------------
# Placement. On a VM, waking a process on the *other* vCPU costs tens of microseconds (an idle
# vCPU has to be kicked awake), waking one on the same vCPU a few. Left to the scheduler, a
# one-connection run lands on either side at random, and the latencies with it. So the latency
# runs (one connection, fixed rate) pin the load generator to CPU 1 and every server (nginx,
# agentd, Portkey) to CPU 0: each request crosses between the cores twice on every path, and
# what a gateway adds is its own work plus its same-core hop to the upstream. The throughput
# runs (64 connections) are not pinned: every process may use both cores. One unpinned
# one-connection run per path is reported for reference.
declare -A R
pinning=0
[ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null && pinning=1
client_cpu=()
pin() {  # pin on|off
  local p cpus="0-$(($(nproc) - 1))"
  [ "$pinning" = 1 ] || return 0
  [ "$1" = on ] && cpus=0
  for p in "$nginx_pid" $(pgrep -P "$nginx_pid") "$proxy_pid" $(pgrep -P "$proxy_pid") \
    "$agentd_pid" "$agentdbp_pid" "$portkey_pid"; do
    taskset -a -p -c "$cpus" "$p" >/dev/null
  done
  client_cpu=()
  [ "$1" = on ] && client_cpu=(taskset -c 1)
  return 0
}

to_us() {  # wrk's "123.45us" / "1.23ms" / "1.02s" → microseconds
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.0f", v }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.0f", v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.0f", v * 1000000 }
    else printf "nan" }'
}

wrk_run() {  # wrk_run NAME VARIANT KEY THREADS CONNS
  local name=$1 variant=$2 key=$3 threads=$4 conns=$5 out bad
  target "$name" "$variant"
  out=$(BENCH_BODY_FILE=$body BENCH_HEADERS=$headers "${client_cpu[@]}" \
    wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$here/post.lua" "$url")
  echo "$out" >"$tmp/wrk-$name-$variant-$key.txt"
  R[$name.$variant.$key.rps]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  R[$name.$variant.$key.p50]=$(to_us "$(awk '$1=="50%" {print $2}' <<<"$out")")
  R[$name.$variant.$key.p99]=$(to_us "$(awk '$1=="99%" {print $2}' <<<"$out")")
  bad=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
  R[$name.$variant.$key.bad]=$bad
  printf '%-8s %-6s %-4s %8s req/s  p50 %7s us  p99 %7s us%s\n' "$name" "$variant" "$key" \
    "${R[$name.$variant.$key.rps]}" "${R[$name.$variant.$key.p50]}" "${R[$name.$variant.$key.p99]}" \
    "$([ "$bad" -gt 0 ] && echo "  ($bad errors/non-2xx!)")"
  if [ "$bad" -gt 0 ]; then grep -E 'Socket errors|Non-2xx' <<<"$out" | sed 's/^ */     /'; fi
  return 0
}

rate_run() {  # rate_run NAME: the open-loop fixed-rate run
  local name=$1 out capture=() k
  target "$name" plain
  header_args
  case $name in agentd*) capture=(--capture x-agentd-overhead-us) ;; esac
  out=$("${client_cpu[@]}" "$tmp/loadgen" --url "$url" --rate "$rate" --duration "$secs" --warmup 2 \
    --connections 64 --body-file "$body" "${hargs[@]}" "${capture[@]}")
  echo "$out" >"$tmp/loadgen-$name.txt"
  for k in achieved_rate p50_us p99_us non2xx errors unfinished capture_p50 capture_p99; do
    R[$name.rate.$k]=$(awk -F= -v k="$k" '$1==k {print $2}' <<<"$out")
  done
  R[$name.rate.saturated]=$(awk -v a="${R[$name.rate.achieved_rate]}" -v r="$rate" \
    -v u="${R[$name.rate.unfinished]}" 'BEGIN {print (a < 0.97 * r || u > 0) ? 1 : 0}')
  printf '%-8s %s req/s: achieved %s, p50 %s us, p99 %s us, errors %s, non-2xx %s%s\n' "$name" \
    "$rate" "${R[$name.rate.achieved_rate]}" "${R[$name.rate.p50_us]}" "${R[$name.rate.p99_us]}" \
    "${R[$name.rate.errors]}" "${R[$name.rate.non2xx]}" \
    "$([ "${R[$name.rate.saturated]}" = 1 ] && echo "  (cannot sustain the rate: ${R[$name.rate.unfinished]} unfinished)")"
}

mem() {  # mem PID FIELD → MB, summed over the process and its children
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk -v f="$2:" '$1==f {print $2}' "/proc/$p/status")))
  done
  awk -v k="$total" 'BEGIN {printf "%.1f", k / 1024}'
}

echo "== agentd: $provenance; $(nproc) cores, ${secs}s per run; nginx $(nginx -v 2>&1 | sed 's/.*\///'), Portkey $(node -p "require('$here/node_modules/@portkey-ai/gateway/package.json').version"), Node $(node --version)"
# Warm every path (connection pools, JIT) before the measured runs.
for name in "${names[@]}"; do
  target "$name" plain
  BENCH_BODY_FILE=$body BENCH_HEADERS=$headers wrk -t1 -c8 -d2s -s "$here/post.lua" "$url" >/dev/null
done
echo "-- throughput, wrk -t2 -c64, unpinned"
for name in "${names[@]}"; do measured wrk_run "$name" plain c64 2 64; done
for name in "${names[@]}"; do measured wrk_run "$name" stream c64 2 64; done
pin on
echo "-- latency, load generator on CPU 1, servers on CPU 0 (pinning: $pinning)"
for name in "${names[@]}"; do measured wrk_run "$name" plain c1 1 1; done
for name in "${names[@]}"; do measured rate_run "$name"; done
for name in "${names[@]}"; do measured wrk_run "$name" stream c1 1 1; done
pin off
echo "-- latency, one connection, unpinned (reference)"
for name in "${names[@]}"; do measured wrk_run "$name" plain c1u 1 1; done
for name in "${names[@]}"; do
  pid_var=${name}_pid
  [ "$name" = direct ] && pid_var=nginx_pid
  R[$name.hwm]=$(mem "${!pid_var}" VmHWM)
  R[$name.rss]=$(mem "${!pid_var}" VmRSS)
done

if [ "$profile" = 1 ]; then
  echo "== perf record of agentd under wrk -t2 -c64 (non-streaming, unpinned)"
  target agentd plain
  record() {
    BENCH_BODY_FILE=$body BENCH_HEADERS=$headers wrk -t2 -c64 -d"$((secs + 2))s" -s "$here/post.lua" \
      "$url" >"$tmp/wrk-profile.txt" &
    local wrk_pid=$!
    sleep 1
    perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -p "$agentd_pid" -o "$tmp/perf.data" \
      -- sleep "$secs" 2>/dev/null
    wait "$wrk_pid"
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
  # Inclusive time of agentd's own functions and of the JSON, allocator and socket calls.
  perf report -i "$tmp/perf.data" --no-inline --stdio --children --fields overhead_children,overhead,sym -g none \
    --percent-limit 1.5 2>/dev/null | shorten |
    grep -E '\] (agentd::|json::(parse|dump)|__libc_(sendmsg|recvmsg|malloc|free)|__GI___libc_(malloc|free)|epoll_wait)' |
    head -30 >"$tmp/perf-children.txt"
  cat "$tmp/perf-dso.txt" "$tmp/perf-self.txt" "$tmp/perf-children.txt"
fi

echo "== $nstreams concurrent streams through agentd (slow upstream, one chunk a second)"
streams() {
  streams_json=$(node "$here/streams.mjs" --upstream-port "$slow_port" \
    --agentd "http://127.0.0.1:$agentd_port" --token "$token" --pid "$agentd_pid" --n "$nstreams" --hold 10)
}
measured streams
echo "$streams_json"
js() { node -e "const o = JSON.parse(process.argv[1]); console.log(o['$1'])" "$streams_json"; }
kb_mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
R[streams.opened]=$(js opened)
R[streams.completed]=$(js completed)
R[streams.errors]=$(js errors)
R[streams.fds]=$(js fds_open)
R[streams.rss]=$(kb_mb "$(js rss_open_max_kb)")
R[streams.hwm]=$(kb_mb "$(js hwm_kb)")
R[streams.before]=$(kb_mb "$(js rss_before_kb)")

# ---- report ---------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%d", a - b}'; }
verdict() { if awk "BEGIN {exit !($1)}"; then echo PASS; else echo MISS; fi; }
fmt_us() {  # microseconds → "123 µs" / "1.23 ms" / "1.23 s"
  awk -v u="$1" 'BEGIN {
    if (u == "" || u == "nan") print "?";
    else if (u < 1000) printf "%d µs", u;
    else if (u < 1000000) printf "%.2f ms", u / 1000;
    else printf "%.2f s", u / 1000000 }'
}
fmt_n() { printf '%s' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
pair() { echo "$(fmt_us "${R[$1.p50]}") / $(fmt_us "${R[$1.p99]}")"; }
rate_pair() {
  if [ "${R[$1.rate.saturated]}" = 1 ]; then
    echo "saturated: $(fmt_n "${R[$1.rate.achieved_rate]%.*}") req/s done"
  else
    echo "$(fmt_us "${R[$1.rate.p50_us]}") / $(fmt_us "${R[$1.rate.p99_us]}")"
  fi
}
label() {
  case $1 in
    direct) echo "direct (nginx)" ;;
    proxy) echo "nginx, 1 worker, as a reverse proxy (reference)" ;;
    agentd) echo agentd ;;
    agentdbp) echo "agentd, busy_poll_us: 50" ;;
    portkey) echo Portkey ;;
  esac
}

# derived NAME: V[rd], V[rp] (throughput over direct's and Portkey's), V[a50], V[a99] (added
# latency at one connection), V[r50], V[r99] (added at the fixed rate), V[sat] for one entrant.
declare -A V
derived() {
  local n=$1
  V[rd]=$(ratio "${R[$n.plain.c64.rps]}" "${R[direct.plain.c64.rps]}")
  V[rp]=$(ratio "${R[$n.plain.c64.rps]}" "${R[portkey.plain.c64.rps]}")
  V[a50]=$(minus "${R[$n.plain.c1.p50]}" "${R[direct.plain.c1.p50]}")
  V[a99]=$(minus "${R[$n.plain.c1.p99]}" "${R[direct.plain.c1.p99]}")
  V[r50]=$(minus "${R[$n.rate.p50_us]}" "${R[direct.rate.p50_us]}")
  V[r99]=$(minus "${R[$n.rate.p99_us]}" "${R[direct.rate.p99_us]}")
  V[sat]=${R[$n.rate.saturated]}
}
derived agentd
rps_ratio_direct=${V[rd]} rps_ratio_portkey=${V[rp]}
add_c1_p50=${V[a50]} add_c1_p99=${V[a99]} add_rate_p50=${V[r50]} add_rate_p99=${V[r99]}
errors_total=0
for k in "${!R[@]}"; do
  case "$k" in *.bad | *.rate.errors | *.rate.non2xx) errors_total=$((errors_total + ${R[$k]:-0})) ;; esac
done

{
  echo "agentd: $provenance. $(nproc) cores; ${secs}s per run; nginx $(nginx -v 2>&1 | sed 's/.*\///'), Portkey $(node -p "require('$here/node_modules/@portkey-ai/gateway/package.json').version"), Node $(node --version)."
  echo
  echo "### Non-streaming chat completion (~1 KB answer)"
  echo
  echo "| | req/s, wrk -c64 | p50 / p99, 1 connection | p50 / p99 at $(fmt_n "$rate") req/s | p50 / p99, 1 connection, unpinned | RSS after the runs (peak) |"
  echo "|---|---|---|---|---|---|"
  for name in "${names[@]}"; do
    echo "| $(label $name) | $(fmt_n "${R[$name.plain.c64.rps]}") | $(pair "$name.plain.c1") | $(rate_pair "$name") | $(pair "$name.plain.c1u") | ${R[$name.rss]} MB (${R[$name.hwm]} MB) |"
  done
  echo
  echo "### Streaming chat completion (SSE: role, 10 content chunks, finish, usage, [DONE])"
  echo
  echo "| | req/s, wrk -c64 | p50 / p99, 1 connection |"
  echo "|---|---|---|"
  for name in "${names[@]}"; do
    echo "| $(label $name) | $(fmt_n "${R[$name.stream.c64.rps]}") | $(pair "$name.stream.c1") |"
  done
  echo
  echo "### Ratios and overhead"
  echo
  echo "- agentd / direct throughput: $rps_ratio_direct (streaming: $(ratio "${R[agentd.stream.c64.rps]}" "${R[direct.stream.c64.rps]}"))"
  echo "- agentd / Portkey throughput: $rps_ratio_portkey (streaming: $(ratio "${R[agentd.stream.c64.rps]}" "${R[portkey.stream.c64.rps]}"))"
  echo "- added latency, agentd minus direct: 1 connection p50 $add_c1_p50 µs, p99 $add_c1_p99 µs; at $(fmt_n "$rate") req/s p50 $add_rate_p50 µs, p99 $add_rate_p99 µs; 1 connection unpinned p50 $(minus "${R[agentd.plain.c1u.p50]}" "${R[direct.plain.c1u.p50]}") µs, p99 $(minus "${R[agentd.plain.c1u.p99]}" "${R[direct.plain.c1u.p99]}") µs; streaming, 1 connection p50 $(minus "${R[agentd.stream.c1.p50]}" "${R[direct.stream.c1.p50]}") µs"
  echo "- agentd with busy_poll_us: 50 / direct throughput: $(ratio "${R[agentdbp.plain.c64.rps]}" "${R[direct.plain.c64.rps]}"); added latency at 1 connection p50 $(minus "${R[agentdbp.plain.c1.p50]}" "${R[direct.plain.c1.p50]}") µs, p99 $(minus "${R[agentdbp.plain.c1.p99]}" "${R[direct.plain.c1.p99]}") µs; at $(fmt_n "$rate") req/s p50 $(minus "${R[agentdbp.rate.p50_us]}" "${R[direct.rate.p50_us]}") µs, p99 $(minus "${R[agentdbp.rate.p99_us]}" "${R[direct.rate.p99_us]}") µs"
  echo "- reference, nginx with one worker as a reverse proxy: $(ratio "${R[proxy.plain.c64.rps]}" "${R[direct.plain.c64.rps]}") of direct throughput, $(ratio "${R[proxy.plain.c64.rps]}" "${R[portkey.plain.c64.rps]}")× Portkey's; added latency at 1 connection p50 $(minus "${R[proxy.plain.c1.p50]}" "${R[direct.plain.c1.p50]}") µs, p99 $(minus "${R[proxy.plain.c1.p99]}" "${R[direct.plain.c1.p99]}") µs; agentd did $(ratio "${R[agentd.plain.c64.rps]}" "${R[proxy.plain.c64.rps]}") of its throughput"
  echo "- added latency, Portkey minus direct: 1 connection p50 $(minus "${R[portkey.plain.c1.p50]}" "${R[direct.plain.c1.p50]}") µs, p99 $(minus "${R[portkey.plain.c1.p99]}" "${R[direct.plain.c1.p99]}") µs"
  echo "- agentd's own x-agentd-overhead-us at $(fmt_n "$rate") req/s: median ${R[agentd.rate.capture_p50]:-?} µs, p99 ${R[agentd.rate.capture_p99]:-?} µs"
  echo "- agentd with $nstreams concurrent streams open: VmRSS ${R[streams.rss]} MB (highest while held; ${R[streams.before]} MB before, VmHWM ${R[streams.hwm]} MB, ${R[streams.fds]} open fds); ${R[streams.opened]} opened, ${R[streams.completed]} completed with [DONE], ${R[streams.errors]} errors"
  echo "- errors or non-2xx answers in all runs: $errors_total"
  [ "$interfered" = 1 ] && echo "- **a build or test kept running during some runs: these figures are suspect**"
  echo
  echo "### Targets"
  echo
  # cells NAME: the first four target rows' "measured | verdict" cells for one agentd entrant
  cells() {
    derived "$1"
    C[1]="$(awk -v r="${V[rd]}" 'BEGIN {printf "%.1f%%", r * 100}') | $(verdict "${V[rd]} >= 0.40")"
    C[2]="${V[rp]}× | $(verdict "${V[rp]} >= 30")"
    C[3]="${V[a50]} µs / ${V[r50]} µs | $(verdict "${V[a50]} <= 100 && ${V[r50]} <= 100 && ${V[sat]} == 0")"
    C[4]="${V[a99]} µs / ${V[r99]} µs | $(verdict "${V[a99]} <= 1000 && ${V[r99]} <= 1000 && ${V[sat]} == 0")"
  }
  declare -A C
  cells agentd
  declare -A D
  for i in 1 2 3 4; do D[$i]=${C[$i]}; done
  cells agentdbp
  echo "| target | agentd | | agentd, busy_poll_us: 50 | |"
  echo "|---|---|---|---|---|"
  echo "| agentd ≥ 40% of direct req/s (c64) | ${D[1]} | ${C[1]} |"
  echo "| agentd ≥ 30× Portkey req/s (c64) | ${D[2]} | ${C[2]} |"
  echo "| added p50 ≤ 100 µs (1 connection / $(fmt_n "$rate") req/s) | ${D[3]} | ${C[3]} |"
  echo "| added p99 ≤ 1 ms (1 connection / $(fmt_n "$rate") req/s) | ${D[4]} | ${C[4]} |"
  echo "| RSS < 50 MB with $nstreams streams | ${R[streams.rss]} MB (${R[streams.opened]} open) | $(verdict "${R[streams.rss]} < 50 && ${R[streams.opened]} == $nstreams && ${R[streams.errors]} == 0") | (not measured) | |"
  if [ "$profile" = 1 ]; then
    echo
    echo "### perf: agentd under wrk -t2 -c64 ($(awk '/Requests\/sec/ {printf "%.0f", $2}' "$tmp/wrk-profile.txt") req/s while recorded)"
    echo
    echo "Self time by object, then by symbol; then inclusive time (children, self) of agentd's functions"
    echo "and of JSON, allocator and socket calls."
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
