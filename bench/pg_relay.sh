#!/usr/bin/env bash
# pgbench -S -c 8 -j 2 through four paths, in one run, and the ratios to direct:
#   direct       PostgreSQL at 127.0.0.1:5432
#   pgbouncer    session pooling, the Debian package
#   pipe         bench/pg_pipe.py, a bare uvloop byte pipe: the floor for a Python proxy
#   relay        `airlock relay`, 20-rule policy, recording on, no masks
#   relay+mask   the same plus a mask rule on pgbench_accounts.abalance (every row masked)
#   relay+tls, relay+mask+tls   the same two with TLS on the client leg (sslmode=require),
#                as every real runtime connects (records to the client capped at 8 KiB)
# The relay runs with AIRLOCK_RELAY_ALLOW_PLAINTEXT=1 so that the plaintext paths compare
# with direct and pgbouncer, which are plaintext too; the TLS variants add the cost of
# encryption on top, for information. Targets: relay >= 0.5x direct, relay+mask >= 0.4x.
#
#   [ROUNDS=3] bench/pg_relay.sh [SECONDS per run, default 10]   (run as root or as a user
#   that can start pgbouncer). Every path is measured once per round, and each ratio is
#   the median over the rounds of the ratio to that round's direct run: other load on
#   the machine drifts, and one run of each is not enough to see through it.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
ROUNDS=${ROUNDS:-3}
PY=${PY:-.venv/bin/python}
PG="-h 127.0.0.1 -p 5432 -U postgres"
DB="airlock_bench_$$"
WORK=$(mktemp -d /tmp/airlock-pgbench.XXXXXX)
chmod 755 "$WORK"
RELAY_PID="" BOUNCER_PID="" PIPE_PID=""

cleanup() {
  [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null || true
  [ -n "$BOUNCER_PID" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  [ -n "$PIPE_PID" ] && kill "$PIPE_PID" 2>/dev/null || true
  dropdb $PG --if-exists --force "$DB" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

tps() {  # tps PORT USER PASSWORD SSLMODE DB
  PGPASSWORD="$3" PGSSLMODE="$4" pgbench -h 127.0.0.1 -p "$1" -U "$2" -n -S -c 8 -j 2 -T "$SECONDS_PER_RUN" "$5" 2>&1 \
    | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}

echo "== setup"
createdb $PG "$DB"
pgbench $PG -i -s 10 -q "$DB" >/dev/null 2>&1

export AIRLOCK_HOME="$WORK/home" AIRLOCK_SECRET_KEY
AIRLOCK_SECRET_KEY=$("$PY" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
unset AIRLOCK_DATABASE_URL
TOKEN=$("$PY" bench/pg_relay_setup.py init "$DB")

RELAY_PORT=$(free_port)
AIRLOCK_RELAY_ALLOW_PLAINTEXT=1 AIRLOCK_POSTGRES_PORT=$RELAY_PORT AIRLOCK_SSH_PORT=0 AIRLOCK_MYSQL_PORT=0 "$PY" -m app.cli relay >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!

PIPE_PORT=$(free_port)
"$PY" bench/pg_pipe.py "$PIPE_PORT" >/dev/null 2>&1 &
PIPE_PID=$!

BOUNCER_PORT=$(free_port)
cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=5432 dbname=$DB
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
auth_type = trust
auth_file = $WORK/users.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOF
echo '"postgres" ""' >"$WORK/users.txt"
chmod 644 "$WORK"/pgbouncer.ini "$WORK"/users.txt
if [ "$(id -u)" = 0 ]; then  # pgbouncer refuses to run as root
  chown -R postgres "$WORK"
  runuser -u postgres -- pgbouncer -q "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
else
  pgbouncer -q "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
fi
BOUNCER_PID=$!

for _ in $(seq 100); do
  grep -q "listening on" "$WORK/relay.log" 2>/dev/null && pg_isready -q -h 127.0.0.1 -p "$BOUNCER_PORT" \
    && pg_isready -q -h 127.0.0.1 -p "$PIPE_PORT" && break
  sleep 0.1
done

use_policy() {  # plain | mask: the relay sees a new policy version within a second
  "$PY" bench/pg_relay_setup.py "$1" "$DB"
  sleep 2
}

# Rounds of every path, each ratio taken to the direct run of its own round: the
# machine's speed drifts over minutes, and a round takes about 7 x SECONDS.
echo "== pgbench -S -c 8 -j 2 -T $SECONDS_PER_RUN (scale 10), $ROUNDS rounds"
results=""
for round in $(seq "$ROUNDS"); do
  direct=$(tps 5432 postgres "" disable "$DB")
  bouncer=$(tps "$BOUNCER_PORT" postgres "" disable "$DB")
  pipe=$(tps "$PIPE_PORT" postgres "" disable "$DB")
  relay=$(tps "$RELAY_PORT" bench "$TOKEN" disable bench)
  relay_tls=$(tps "$RELAY_PORT" bench "$TOKEN" require bench)
  use_policy mask
  masked=$(tps "$RELAY_PORT" bench "$TOKEN" disable bench)
  masked_tls=$(tps "$RELAY_PORT" bench "$TOKEN" require bench)
  use_policy plain
  echo "round $round: direct $direct, pgbouncer $bouncer, pipe $pipe, relay $relay, relay+tls $relay_tls," \
       "relay+mask $masked, relay+mask+tls $masked_tls tps"
  results="$results $direct,$bouncer,$pipe,$relay,$relay_tls,$masked,$masked_tls"
done

echo "== ratios to direct (median of the rounds; each round's ratios in brackets)"
"$PY" - $results <<'EOF'
import statistics
import sys

rounds = [list(map(float, r.split(","))) for r in sys.argv[1:]]
names = ("pgbouncer", "pipe", "relay", "relay+tls", "relay+mask", "relay+mask+tls")
targets = {"relay": 0.5, "relay+mask": 0.4}
for i, name in enumerate(names, start=1):
    ratios = [r[i] / r[0] for r in rounds]
    median = statistics.median(ratios)
    target = targets.get(name)
    mark = "" if target is None else "  (target >= %.1f: %s)" % (target, "met" if median >= target else "MISSED")
    print(f"{name:<14} {median:.2f}x  [{', '.join(f'{x:.2f}' for x in ratios)}]{mark}")
EOF
