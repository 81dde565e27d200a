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
