#!/usr/bin/env bash
# Checks the deployment files: the systemd unit (systemd-analyze verify and security), the
# compose file (docker-compose config), every configuration in config/examples/ (agentd
# --check-config, then a real start of production.yaml), and that the shutdown timeouts of
# the unit and the compose file stay above server.shutdown_grace.
#
# Usage: deploy_files_test.sh AGENTD_BINARY SOURCE_DIR
# A check whose tool is not installed is skipped with the reason printed.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 AGENTD_BINARY SOURCE_DIR" >&2
  exit 2
fi
agentd=$(realpath "$1")
src=$(realpath "$2")
[ -x "$agentd" ] || { echo "not executable: $agentd" >&2; exit 2; }

passed=0
failed=0
skipped=0
tmp=$(mktemp -d /tmp/agentd-deploy.XXXXXX)
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

pass() { passed=$((passed + 1)); echo "PASS  $1"; }
fail() { failed=$((failed + 1)); echo "FAIL  $1"; }
skip() { skipped=$((skipped + 1)); echo "SKIP  $1"; }

# Dummy values for everything the example configurations read from the environment.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 ||
  { echo "openssl could not make a test certificate" >&2; exit 1; }
export LOBECHAT_TOKEN=lobechat-test-token-0123456789
export AGENTD_OPS_TOKEN=
export AGENTD_TLS_CERT=$tmp/cert.pem
export AGENTD_TLS_KEY=$tmp/key.pem
export AGENTD_DATA_DIR=$tmp/data
export OPENAI_API_KEY=sk-test-openai
export ANTHROPIC_API_KEY=sk-test-anthropic
export POSTGRES_PASSWORD=postgres-test-password
unset AGENTD_LISTEN AGENTD_LOCAL_LISTEN AGENTD_LOG_FILE AGENTD_CORS_ORIGIN LLM_BASE_URL

# --- systemd unit ------------------------------------------------------------------------------
unit=$src/config/agentd.service
if command -v systemd-analyze >/dev/null; then
  # verify insists that ExecStart's binary exists: point it at the one just built.
  mkdir -p "$tmp/unit"
  sed "s#/usr/local/bin/agentd#$agentd#g" "$unit" >"$tmp/unit/agentd.service"
  if out=$(systemd-analyze verify "$tmp/unit/agentd.service" 2>&1) &&
     ! grep -q 'agentd.service' <<<"$out"; then
    pass "systemd-analyze verify agentd.service"
  else
    echo "$out"
    fail "systemd-analyze verify agentd.service"
  fi
  # Exposure 0.0 (locked down) to 10.0 (unprotected); the unit scores 2.4. --threshold is in
  # tenths: fail when a change pushes it above 3.0.
  if out=$(systemd-analyze security --offline=yes --threshold=30 "$tmp/unit/agentd.service" 2>&1); then
    pass "systemd-analyze security: $(grep -o 'exposure level for [^:]*: [0-9.]*' <<<"$out" | sed 's/.*: //') (at most 3.0)"
  else
    echo "$out" | grep -E '✗|exposure' || echo "$out"
    fail "systemd-analyze security --offline=yes --threshold=30"
  fi
else
  skip "systemd unit: systemd-analyze is not installed (Debian package systemd)"
  skip "systemd unit security: systemd-analyze is not installed (Debian package systemd)"
fi

# --- compose file ------------------------------------------------------------------------------
compose=()
if command -v docker-compose >/dev/null; then
  compose=(docker-compose)
elif command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
fi
if [ ${#compose[@]} -gt 0 ]; then
  if out=$("${compose[@]}" -f "$src/docker/compose.yaml" config 2>&1); then
    services=$("${compose[@]}" -f "$src/docker/compose.yaml" config --services | sort | tr '\n' ' ')
    checks=$(grep -c '^    healthcheck:' <<<"$out" || true)
    if [ "$services" = "agentd postgres redis " ] && [ "$checks" -eq 3 ]; then
      pass "${compose[*]} config (services: $services; $checks health checks)"
    else
      echo "$out"
      fail "${compose[*]} config: expected agentd, postgres and redis with a health check each, got services '$services' and $checks health checks"
    fi
  else
    echo "$out"
    fail "${compose[*]} -f docker/compose.yaml config"
  fi
else
  skip "compose file: neither docker-compose nor the docker compose plugin is installed (Debian package docker-compose)"
fi

# --- example configurations --------------------------------------------------------------------
shopt -s nullglob
examples=("$src"/config/examples/*.yaml "$src"/config/agentd.yaml)
[ ${#examples[@]} -gt 1 ] || fail "config/examples/ has no *.yaml"
for f in "${examples[@]}"; do
  name=${f#"$src"/}
  if out=$("$agentd" --check-config "$f" 2>&1); then
    pass "agentd --check-config $name"
  else
    echo "$out"
    fail "agentd --check-config $name"
  fi
done

# production.yaml with the environment docker/compose.yaml gives it (Redis and PostgreSQL URLs
# set): still valid.
if out=$(AGENTD_LISTEN=0.0.0.0:8443 AGENTD_LOCAL_LISTEN=127.0.0.1:8081 \
         AGENTD_REDIS_URL=redis://redis:6379/0 \
         AGENTD_DATABASE_URL=postgresql://agentd:pw@postgres:5432/agentd \
         "$agentd" --check-config "$src/config/examples/production.yaml" 2>&1); then
  pass "production.yaml with the compose environment"
else
  echo "$out"
  fail "production.yaml with the compose environment"
fi

# --- production.yaml starts, serves both listeners, drains on SIGTERM ----------------------------
if command -v curl >/dev/null; then
  AGENTD_LISTEN=127.0.0.1:0 AGENTD_LOCAL_LISTEN=127.0.0.1:0 \
    "$agentd" -c "$src/config/examples/production.yaml" >"$tmp/stdout" 2>"$tmp/stderr" &
  daemon_pid=$!
  for _ in $(seq 100); do
    [ "$(grep -c '^agentd listening on' "$tmp/stdout" || true)" -eq 2 ] && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
  done
  https_url=$(sed -n 's/^agentd listening on \(https:.*\)$/\1/p' "$tmp/stdout")
  http_url=$(sed -n 's/^agentd listening on \(http:.*\)$/\1/p' "$tmp/stdout")
  ops_token=$(cat "$tmp/data/tokens/ops.token" 2>/dev/null || true)
  token_mode=$(stat -c %a "$tmp/data/tokens/ops.token" 2>/dev/null || true)
  ok=1
  [ -n "$https_url" ] && [ -n "$http_url" ] || ok=0
  if [ $ok -eq 1 ]; then
    health=$(curl -fsS --max-time 5 "$http_url/healthz" || true)
    health_tls=$(curl -fsSk --max-time 5 "$https_url/healthz" || true)
    ready=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code}' \
      -H "Authorization: Bearer $ops_token" "$https_url/readyz" || true)
    denied=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code}' \
      -H "Authorization: Bearer $LOBECHAT_TOKEN" "$https_url/metrics" || true)
    models=$(curl -sk --max-time 5 -H "Authorization: Bearer $LOBECHAT_TOKEN" "$https_url/v1/models" || true)
    [ "$health" = '{"status":"ok"}' ] && [ "$health_tls" = '{"status":"ok"}' ] &&
      [ "$ready" = 200 ] && [ "$denied" = 403 ] && [ "$token_mode" = 600 ] &&
      grep -q '"id":"smart"' <<<"$models" && grep -q '"id":"assistant"' <<<"$models" || ok=0
  fi
  kill -TERM "$daemon_pid" 2>/dev/null || true
  status=0
  wait "$daemon_pid" || status=$?
  daemon_pid=
  if [ $ok -eq 1 ] && [ $status -eq 0 ] && grep -q '"msg":"agentd stopped"' "$tmp/stderr"; then
    pass "production.yaml runs: https and loopback http listeners, ops token 0600, /readyz 200 for ops, /metrics 403 and /v1/models with alias smart and agent assistant for lobechat, exit 0 on SIGTERM"
  else
    echo "--- stdout"; cat "$tmp/stdout"; echo "--- stderr"; tail -20 "$tmp/stderr"
    echo "healthz='${health:-}' healthz(tls)='${health_tls:-}' readyz=${ready:-} metrics=${denied:-} token mode=${token_mode:-} exit=$status"
    echo "/v1/models: ${models:-}"
    fail "production.yaml runs"
  fi
else
  skip "production.yaml start: curl is not installed"
fi

# --- stop timeouts above server.shutdown_grace -------------------------------------------------
seconds() {  # "20s" -> 20; anything else is not understood here
  [[ $1 =~ ^([0-9]+)s$ ]] && echo "${BASH_REMATCH[1]}"
}
grace=$(seconds "$(sed -n 's/^  shutdown_grace: *\([^ #]*\).*/\1/p' "$src/config/examples/production.yaml")")
unit_stop=$(seconds "$(sed -n 's/^TimeoutStopSec=//p' "$unit")")
compose_stop=$(seconds "$(sed -n 's/^ *stop_grace_period: *//p' "$src/docker/compose.yaml")")
if [ -n "$grace" ] && [ -n "$unit_stop" ] && [ -n "$compose_stop" ] &&
   [ "$unit_stop" -gt "$grace" ] && [ "$compose_stop" -gt "$grace" ]; then
  pass "TimeoutStopSec=${unit_stop}s and stop_grace_period ${compose_stop}s exceed shutdown_grace ${grace}s"
else
  fail "stop timeouts: TimeoutStopSec='$unit_stop' stop_grace_period='$compose_stop' must exceed production.yaml's shutdown_grace='$grace' (all in whole seconds, e.g. 20s)"
fi

echo "deploy_files: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
