#!/usr/bin/env bash
# The services scripts/test starts for integration tests answer: Redis PING, PostgreSQL SELECT.
set -euo pipefail
: "${AGENTD_TEST_REDIS_URL:?not set: run the tests through scripts/test, which starts Redis}"
: "${AGENTD_TEST_DATABASE_URL:?not set: run the tests through scripts/test, which starts PostgreSQL}"
pong=$(redis-cli -u "$AGENTD_TEST_REDIS_URL" ping)
[ "$pong" = "PONG" ] || { echo "redis answered: $pong"; exit 1; }
one=$(psql "$AGENTD_TEST_DATABASE_URL" -tAc 'select 41 + 1')
[ "$one" = "42" ] || { echo "postgresql answered: $one"; exit 1; }
echo "redis and postgresql are up"
