#!/usr/bin/env bash
# pgbench -S -c 8 -j 2 through four paths, in one run, and the ratios to direct:
#   direct       PostgreSQL at 127.0.0.1:5432
#   pgbouncer    session pooling, the Debian package
#   pipe         bench/pg_pipe.py, a bare uvloop byte pipe: the floor for a Python proxy
#   relay        `airlock relay`, 20-rule policy, recording on, no masks
#   relay+mask   the same plus a mask rule on pgbench_accounts.abalance (every row masked)
# The relay runs with AIRLOCK_RELAY_ALLOW_PLAINTEXT=1 so that every path is plaintext,
# as direct and pgbouncer are; `relay+tls` (sslmode=require) is measured too, for
# information. Targets: relay >= 0.5x direct, relay+mask >= 0.4x.
#
#   bench/pg_relay.sh [SECONDS per run, default 15]   (run as root or as a user that can
#   start pgbouncer; other load on the machine makes the numbers noisy: run it twice)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-15}
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
AIRLOCK_RELAY_ALLOW_PLAINTEXT=1 AIRLOCK_POSTGRES_PORT=$RELAY_PORT "$PY" -m app.cli relay >"$WORK/relay.log" 2>&1 &
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

echo "== pgbench -S -c 8 -j 2 -T $SECONDS_PER_RUN (scale 10)"
direct=$(tps 5432 postgres "" disable "$DB");            echo "direct      $direct tps"
bouncer=$(tps "$BOUNCER_PORT" postgres "" disable "$DB"); echo "pgbouncer   $bouncer tps"
pipe=$(tps "$PIPE_PORT" postgres "" disable "$DB");       echo "pipe        $pipe tps"
relay=$(tps "$RELAY_PORT" bench "$TOKEN" disable bench);  echo "relay       $relay tps"
relay_tls=$(tps "$RELAY_PORT" bench "$TOKEN" require bench); echo "relay+tls   $relay_tls tps"
"$PY" bench/pg_relay_setup.py mask "$DB"
sleep 2  # the relay sees the new policy version within 1 s
masked=$(tps "$RELAY_PORT" bench "$TOKEN" disable bench); echo "relay+mask  $masked tps"

echo "== ratios to direct"
"$PY" - "$direct" "$bouncer" "$pipe" "$relay" "$relay_tls" "$masked" <<'EOF'
import sys
direct, bouncer, pipe, relay, tls, masked = map(float, sys.argv[1:])
for name, value, target in (("pgbouncer", bouncer, None), ("pipe", pipe, None), ("relay", relay, 0.5),
                            ("relay+tls", tls, None),
                            ("relay+mask", masked, 0.4)):
    mark = "" if target is None else ("  (target >= %.1f: %s)" % (target, "met" if value / direct >= target else "MISSED"))
    print(f"{name:<11} {value / direct:.2f}x{mark}")
EOF
