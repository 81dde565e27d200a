# Shared by scripts/run and scripts/test: install what is missing, start test services.
# Sourced, not executed.

AGENTD_BUILD_PKGS=(cmake g++ ninja-build ccache pkg-config libboost1.81-all-dev nlohmann-json3-dev
  libspdlog-dev libssl-dev libyaml-cpp-dev libsqlite3-dev libhiredis-dev libpqxx-dev zlib1g-dev)
AGENTD_TEST_PKGS=(libgtest-dev libgmock-dev redis-server postgresql clang libclang-rt-14-dev
  systemd docker-compose openssl curl bubblewrap python3 procps)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# install_pkgs PKG...: installs only what is missing; a no-op when everything is present.
install_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# install_npm DIR: `npm ci` in DIR when node_modules is missing or older than package-lock.json;
# installs Debian's nodejs and npm first when node is not on PATH.
install_npm() {
  local dir=$1
  command -v node >/dev/null 2>&1 || install_pkgs nodejs npm
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "== npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund)
  fi
}

# free_port: a port nobody listens on right now (the kernel picks it).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1:0")->sockport'
}

# start_services DIR: Redis and PostgreSQL on loopback, state under DIR. Exports
# AGENTD_TEST_REDIS_URL and AGENTD_TEST_DATABASE_URL.
start_services() {
  local dir=$1 i
  mkdir -p "$dir/redis" "$dir/pg"
  REDIS_PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --dir "$dir/redis" \
    --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" --save '' --appendonly no
  for i in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null || { cat "$dir/redis/redis.log"; return 1; }
  export AGENTD_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

  PG_PORT=$(free_port)
  PG_BIN=/usr/lib/postgresql/15/bin
  PG_DIR=$dir/pg
  chmod 755 "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  else
    PG_AS=()
  fi
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust >"$PG_DIR/initdb.log" 2>&1 ||
    { cat "$PG_DIR/initdb.log"; return 1; }
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/pg.log" -w start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR" >/dev/null ||
    { cat "$PG_DIR/pg.log"; return 1; }
  for i in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.1; done
  export AGENTD_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "== services: redis on $REDIS_PORT, postgresql on $PG_PORT"
}

stop_services() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "${REDIS_PORT:-}" ]; then
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  fi
}
