#!/usr/bin/env bash
# bench/sandbox: the local sandbox backend (bubblewrap) against bare bwrap, in one run.
#
#   cycle   create + exec `true` + kill through the backend's public interface
#           (sandbox::make_local_backend, what the daemon uses; default config), BENCH_RUNS
#           times, p50/p99, and per phase
#   bare    the same fork+exec+wait timing of three bare bwrap command lines:
#             min    bwrap --ro-bind / / true
#             same   the flags the backend gives bwrap for a sandbox without network: every
#                    namespace (--unshare-all --unshare-user), uid/gid 1000, --die-with-parent,
#                    --new-session, --cap-drop ALL, --hostname, /usr /etc /opt read-only, the
#                    /bin /lib /lib64 /sbin symlinks, fresh /proc and /dev, a work dir bound at
#                    /home/user and a tmp dir at /tmp, --clearenv + PATH/HOME/USER; then `true`
#             shell  `same` running `/bin/bash -c true`, the command line the backend runs
#             login  `same` running `/bin/bash -l -c true` (the backend with login_shell: true)
#   ttfb    time to the first stdout byte of `echo hi; sleep 1` (start -> first byte, and to the
#           exit), through the backend (one sandbox) and through `same` bare bwrap
#
# The runs are interleaved in BENCH_ROUNDS rounds (a disturbance hits every variant), samples
# pooled. Target: the backend's cycle within 2x of bare bwrap with the same flags (p50).
#
# Usage: bench/sandbox/run.sh
# Environment: BENCH_RUNS (200), BENCH_ROUNDS (4), BENCH_TTFB_RUNS (10),
#   BENCH_PROFILE=1 (perf record the driver's cycle and print what dominates),
#   BENCH_WAIT_QUIET=0 (do not wait for a quiet machine), BENCH_OUT=FILE (keep the results).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
# shellcheck source=../../scripts/lib.sh
source scripts/lib.sh
# shellcheck source=../lib.sh
source bench/lib.sh

runs=${BENCH_RUNS:-200}
rounds=${BENCH_ROUNDS:-4}
ttfb_runs=${BENCH_TTFB_RUNS:-10}
profile=${BENCH_PROFILE:-0}
quiet=${BENCH_WAIT_QUIET:-1}
per_round=$(((runs + rounds - 1) / rounds))

# ---- install and build ----------------------------------------------------------------------
install_pkgs "${AGENTD_BUILD_PKGS[@]}" bubblewrap
[ "$profile" = 1 ] && { command -v perf >/dev/null || install_pkgs linux-perf; }
bwrap=/usr/bin/bwrap
build=$root/build/sandboxbench
cmake --preset release -B "$build" >/dev/null
cmake --build "$build" -j2 --target agentd_sandbox

tmp=$(mktemp -d)
cleanup() {
  if [ -n "${BENCH_OUT:-}" ] && [ -f "$tmp/results.md" ]; then cp "$tmp/results.md" "$BENCH_OUT"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The driver: plain g++ against the static libraries, with the flags CMake used for them.
mapfile -t flags < <(compile_flags "$build" src/sandbox/local_backend.cpp)
echo "== compiling the driver"
g++ -std=c++20 -O2 -g "${flags[@]}" -o "$tmp/sandboxbench" "$here/sandboxbench.cpp" \
  "$build/src/libagentd_sandbox.a" "$build/src/libagentd_net.a" "$build/src/libagentd_core.a" \
  -lspdlog -lfmt -lyaml-cpp -lssl -lcrypto -lz -pthread

# ---- the bare command lines -----------------------------------------------------------------
mkdir -p "$tmp/bare/work" "$tmp/bare/tmp" "$tmp/sandboxes"
chmod 1777 "$tmp/bare/tmp"
min=("$bwrap" --ro-bind / / true)
same=("$bwrap" --unshare-all --unshare-user --uid 1000 --gid 1000 --die-with-parent --new-session
  --cap-drop ALL --hostname sandbox)
for p in /usr /etc /opt; do same+=(--ro-bind-try "$p" "$p"); done
for p in /bin /lib /lib64 /sbin /lib32 /libx32; do
  if [ -L "$p" ]; then
    same+=(--symlink "$(readlink "$p")" "$p")
  elif [ -d "$p" ]; then
    same+=(--ro-bind "$p" "$p")
  fi
done
same+=(--proc /proc --dev /dev --bind "$tmp/bare/work" /home/user --bind "$tmp/bare/tmp" /tmp
  --chdir /home/user --clearenv --setenv PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  --setenv HOME /home/user --setenv USER user --)
streamed='echo hi; sleep 1'

# ---- measure --------------------------------------------------------------------------------
samples=$tmp/samples.txt
export SANDBOXBENCH_SAMPLES=$samples
drv=$tmp/sandboxbench
log=$tmp/driver.log
drive() {  # drive ARGS...: the driver, its log to $log; its log's tail when it fails
  "$drv" "$@" 2>>"$log" || { echo "sandboxbench $1 failed:" >&2; tail -20 "$log" >&2; return 1; }
}
# A warm-up cycle (page cache, bwrap's first run), not counted; its log says which cgroups the
# backend uses.
SANDBOXBENCH_SAMPLES=/dev/null drive cycle 3 "$tmp/sandboxes" >/dev/null
cgroups=$(grep -o 'cgroups: pids [^)]*' "$log" | head -1 | sed 's/^cgroups: //')
loads=()
for r in $(seq "$rounds"); do
  wait_quiet
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
  echo "== round $r/$rounds: $per_round runs each (load $(cut -d' ' -f1-3 /proc/loadavg))"
  drive cycle "$per_round" "$tmp/sandboxes"
  SANDBOXBENCH_LABEL=min drive bare "$per_round" "${min[@]}"
  SANDBOXBENCH_LABEL=same drive bare "$per_round" "${same[@]}" true
  SANDBOXBENCH_LABEL=shell drive bare "$per_round" "${same[@]}" /bin/bash -c true
  SANDBOXBENCH_LABEL=login drive bare "$per_round" "${same[@]}" /bin/bash -l -c true
done
echo "== time to first byte of '$streamed', $ttfb_runs runs each"
drive ttfb "$ttfb_runs" "$tmp/sandboxes" "$streamed"
SANDBOXBENCH_LABEL=bare_ttfb drive bare_ttfb "$ttfb_runs" "${same[@]}" /bin/bash -c "$streamed"
left=$(find "$tmp/sandboxes" -mindepth 1 -maxdepth 1 | wc -l)

if [ "$profile" = 1 ]; then
  echo "== perf profile of the cycle, $runs runs"
  SANDBOXBENCH_SAMPLES=/dev/null perf record -g -o "$tmp/perf.data" -- "$drv" cycle "$runs" "$tmp/sandboxes" >/dev/null 2>>"$log"
  perf report -i "$tmp/perf.data" --children --percent-limit 3 --stdio --sort dso,symbol 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/[ -]+$//; s/ {2,}/  /g' | cut -c1-160 | head -30 >"$tmp/profile.txt" || true
  cat "$tmp/profile.txt"
fi

# ---- report ---------------------------------------------------------------------------------
pct() {  # pct METRIC P: the P-th percentile (0..1) of the pooled samples of METRIC, in ms
  awk -v m="$1" '$1 == m {print $2}' "$samples" | sort -g |
    awk -v p="$2" '{ v[NR] = $1 } END { i = int(p * (NR - 1) + 0.5) + 1; if (i > NR) i = NR; printf "%.2f", v[i] / 1000 }'
}
count() { awk -v m="$1" '$1 == m' "$samples" | wc -l; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
{
  echo "Machine: $(machine_description)"
  echo "bubblewrap $(dpkg-query -W -f='${Version}' bubblewrap 2>/dev/null), commit $(git rev-parse --short HEAD)$([ -n "$(git status --porcelain -- src include bench/sandbox)" ] && echo ' + uncommitted changes')"
  echo "The backend's cgroups (its log): ${cgroups:-none (rlimits)}"
  echo "1-minute load at the start of each round: ${loads[*]}"
  echo
  echo "### create + exec \`true\` + kill, $(count cycle.total) runs in $rounds interleaved rounds"
  echo
  echo "| what | p50 ms | p99 ms |"
  echo "|---|---|---|"
  echo "| agentd local backend: create + exec \`true\` + kill | $(pct cycle.total 0.5) | $(pct cycle.total 0.99) |"
  echo "| &nbsp;&nbsp;create (dirs, cgroups, metadata) | $(pct cycle.create 0.5) | $(pct cycle.create 0.99) |"
  echo "| &nbsp;&nbsp;exec \`true\` to its exit event | $(pct cycle.exec 0.5) | $(pct cycle.exec 0.99) |"
  echo "| &nbsp;&nbsp;kill (cgroups, files) | $(pct cycle.kill 0.5) | $(pct cycle.kill 0.99) |"
  echo "| bare \`bwrap --ro-bind / / true\` | $(pct min.total 0.5) | $(pct min.total 0.99) |"
  echo "| bare bwrap, the backend's flags, \`true\` | $(pct same.total 0.5) | $(pct same.total 0.99) |"
  echo "| bare bwrap, the backend's flags, \`/bin/bash -c true\` | $(pct shell.total 0.5) | $(pct shell.total 0.99) |"
  echo "| bare bwrap, the backend's flags, \`/bin/bash -l -c true\` (login_shell) | $(pct login.total 0.5) | $(pct login.total 0.99) |"
  echo
  p50=$(pct cycle.total 0.5)
  p99=$(pct cycle.total 0.99)
  r_same=$(ratio "$p50" "$(pct same.total 0.5)")
  r_same99=$(ratio "$p99" "$(pct same.total 0.99)")
  echo "Ratio to bare bwrap with the same flags: p50 ${r_same}x, p99 ${r_same99}x;" \
    "to the same with the backend's shell: p50 $(ratio "$p50" "$(pct shell.total 0.5)")x;" \
    "to \`bwrap --ro-bind / / true\`: p50 $(ratio "$p50" "$(pct min.total 0.5)")x."
  awk -v r="$r_same" 'BEGIN { printf "Target: within 2x of bare bwrap (p50, same flags): %s\n", (r <= 2.0) ? "PASS" : "MISS" }'
  echo
  echo "### Time to first output byte of \`$streamed\`, $ttfb_runs runs"
  echo
  echo "| what | first byte p50 / p99 ms | exit p50 / p99 ms |"
  echo "|---|---|---|"
  echo "| agentd local backend (start -> first stdout event) | $(pct ttfb.first 0.5) / $(pct ttfb.first 0.99) | $(pct ttfb.exit 0.5) / $(pct ttfb.exit 0.99) |"
  echo "| bare bwrap, the backend's flags, \`/bin/bash -c\` | $(pct bare_ttfb.first 0.5) / $(pct bare_ttfb.first 0.99) | $(pct bare_ttfb.exit 0.5) / $(pct bare_ttfb.exit 0.99) |"
  echo
  echo "Sandbox directories left under the backend's root after the runs: $left."
  if [ -s "$tmp/profile.txt" ]; then
    echo
    echo "### Profile of the cycle (perf, children, >= 3%)"
    echo
    echo '```'
    cat "$tmp/profile.txt"
    echo '```'
  fi
} >"$tmp/results.md"
echo
cat "$tmp/results.md"
