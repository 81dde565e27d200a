# Helpers shared by the benchmark scripts (after scripts/lib.sh). Sourced, not executed; they
# expect `root` (the repository) and run from it.

# agentd_binary: sets `bin` and `provenance`. AGENTD_BIN when given (no build); otherwise the
# release preset's agentd, built with -j2 (the machines have two cores, shared).
agentd_binary() {
  if [ -n "${AGENTD_BIN:-}" ]; then
    bin=$(realpath "$AGENTD_BIN")
    provenance="binary $bin"
    return
  fi
  cmake --preset release >/dev/null
  cmake --build build/release -j2 --target agentd
  bin=$root/build/release/src/agentd
  provenance="commit $(git rev-parse --short HEAD)"
  [ -n "$(git status --porcelain -- src include CMakeLists.txt)" ] &&
    provenance+=" + uncommitted changes under src/ include/"
  return 0
}

# proc_tree PID: PID and all its descendants, one a line.
proc_tree() {
  local p
  echo "$1"
  # shellcheck disable=SC2013 # the file holds pids separated by spaces
  for p in $(cat "/proc/$1/task/"*/children 2>/dev/null); do proc_tree "$p"; done
}

# proc_ticks PID...: user+system clock ticks of these processes (0 for one that is gone).
proc_ticks() {
  local total=0 p t
  for p in "$@"; do
    t=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null) || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# kv KEY TEXT: the value of the `KEY=value` line in TEXT (what the load generators print).
kv() { awk -F= -v k="$1" '$1==k {print substr($0, length(k) + 2)}' <<<"$2"; }

# machine_description: cores, CPU model, memory, OS and kernel, for the results.
machine_description() {
  echo "$(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
}

# compile_flags BUILD SOURCE: the -I/-isystem/-D flags CMake used for SOURCE (a path suffix) in
# BUILD's compile_commands.json, one a line: for drivers compiled against the static libraries.
compile_flags() {
  python3 - "$1/compile_commands.json" "$2" <<'EOF'
import json, shlex, sys
for entry in json.load(open(sys.argv[1])):
    if entry["file"].endswith(sys.argv[2]):
        args = shlex.split(entry["command"])
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-isystem", "-I", "-D"):
                print(a); print(args[i + 1]); i += 2; continue
            if a.startswith(("-D", "-I")):
                print(a)
            i += 1
        break
EOF
}

# wait_quiet: unless `quiet` is 0, waits until the 1-minute load average is at most 1.0, no
# compiler, linker, ninja or ctest runs, and the CPUs were at least 85% idle over 2 s (polled
# every 30 s, for up to 20 minutes; then it measures anyway and says so).
load1() { cut -d' ' -f1 /proc/loadavg; }
idle_pct() {
  local a b
  a=$(awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat)
  sleep 2
  b=$(awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    t = y[2] - x[2]; idle = 100; if (t > 0) idle = 100 * (y[1] - x[1]) / t; printf "%d", idle }'
}
is_quiet() {
  awk -v l="$(load1)" 'BEGIN { exit !(l <= 1.0) }' &&
    ! pgrep -x 'cc1plus|ld|collect2|ninja|ctest' >/dev/null 2>&1 &&
    [ "$(idle_pct)" -ge 85 ]
}
wait_quiet() {
  local i
  [ "${quiet:-1}" = 1 ] || return 0
  for i in $(seq 40); do
    is_quiet && return 0
    echo "   (waiting for a quiet machine: load $(cut -d' ' -f1-3 /proc/loadavg), $(pgrep -xc 'cc1plus|ld|collect2|ninja|ctest' 2>/dev/null) build processes, poll $i/40)"
    sleep 30
  done
  echo "   (still busy after 20 minutes: measuring anyway)"
}
