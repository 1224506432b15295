#!/usr/bin/env bash
# `make run`: a private PostgreSQL (port 55432, wal_level = logical, so pgcache reads its
# invalidations from the replication log) with demo tables and redis-server (port 6390)
# with pgcache loaded, both under .run/. `scripts/run.sh stop` stops them.
# `make run-cluster` (`scripts/run.sh cluster`): the same PostgreSQL and a 3-primary Redis
# Cluster on ports 7001-7003, each node with pgcache loaded.
# `STANDBY=1 make run` (`STANDBY=1 scripts/run.sh`) also starts a streaming hot standby of
# that PostgreSQL (port 55433, under .run/pg-standby), listed in the default source's
# `standbys`: misses are read there once it has replayed as far as the cache needs.
# RUN_DIR, PG_PORT, STANDBY_PORT, REDIS_PORT, CLUSTER_PORTS and CLUSTER_BUS_PORTS
# (space-separated; the bus ports default to each port + 10000, as in Redis) move it
# elsewhere (the documentation's test, tests/integration/readme.rs, runs its own demo this
# way).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${RUN_DIR:-$PWD/.run}"
PG_PORT=${PG_PORT:-55432}
STANDBY_PORT=${STANDBY_PORT:-$((PG_PORT + 1))}
REDIS_PORT=${REDIS_PORT:-6390}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

read -r -a CLUSTER_PORTS <<< "${CLUSTER_PORTS:-7001 7002 7003}"
read -r -a CLUSTER_BUS_PORTS <<< "${CLUSTER_BUS_PORTS:-}"

stop() {
  [ -f "$RUN/redis.pid" ] && kill "$(cat "$RUN/redis.pid")" 2>/dev/null || true
  for port in "${CLUSTER_PORTS[@]}"; do
    [ -f "$RUN/cluster/$port/redis.pid" ] && kill "$(cat "$RUN/cluster/$port/redis.pid")" 2>/dev/null || true
  done
  rm -rf "$RUN/cluster"
  [ -d "$RUN/pg-standby" ] && as_pg "$PG_BIN/pg_ctl" -D "$RUN/pg-standby" -m fast stop >/dev/null 2>&1 || true
  [ -d "$RUN/pg" ] && as_pg "$PG_BIN/pg_ctl" -D "$RUN/pg" -m fast stop >/dev/null 2>&1 || true
  rm -f "$RUN/redis.pid"
}

if [ "${1:-}" = "stop" ]; then stop; echo "stopped"; exit 0; fi
stop

mkdir -p "$RUN"
[ "$(id -u)" -eq 0 ] && chown postgres "$RUN"
if [ ! -f "$RUN/pg/PG_VERSION" ]; then
  as_pg "$PG_BIN/initdb" -D "$RUN/pg" -U postgres --auth=trust -E UTF8 >/dev/null
fi
# The demo's settings live in its own configuration (postgresql.auto.conf, as ALTER SYSTEM
# writes it), so `pg_ctl -D .run/pg start` by hand brings it back as it was: with
# wal_level reverted to replica, PostgreSQL would refuse to start while pgcache's slot exists.
as_pg tee "$RUN/pg/postgresql.auto.conf" >/dev/null <<CONF
# Written by scripts/run.sh (make run).
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = logical
CONF
as_pg "$PG_BIN/pg_ctl" -D "$RUN/pg" -l "$RUN/pg.log" -w start >/dev/null
# Only warnings and errors: the demo's idempotent set-up says NOTICE for what exists already.
psql_run() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -q "$@"; }
psql_run -d postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'app'" | grep -q 1 \
  || psql_run -d postgres -c "CREATE DATABASE app"
psql_run -d app -f examples/demo.sql >/dev/null
psql_run -d app -f examples/invalidation_trigger.sql >/dev/null
psql_run -d app -f examples/ddl_trigger.sql >/dev/null
psql_run -d app -c "SELECT pgcache_watch('users'), pgcache_watch('products'), pgcache_watch('sales.orders')" >/dev/null 2>&1
# A second database, served as the named source `analytics` (docs/configuration.md, Several
# databases): its own `users`.
psql_run -d postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'analytics'" | grep -q 1 \
  || psql_run -d postgres -c "CREATE DATABASE analytics"
psql_run -d analytics -f examples/demo_analytics.sql >/dev/null
psql_run -d analytics -f examples/invalidation_trigger.sql >/dev/null
psql_run -d analytics -c "SELECT pgcache_watch('users')" >/dev/null 2>&1

# The standby: a fresh base backup of the demo's PostgreSQL each time (-R: it streams from
# it), on a port of its own.
if [ "${STANDBY:-}" = "1" ]; then
  rm -rf "$RUN/pg-standby"
  as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$RUN/pg-standby" \
    -R -X stream -c fast
  as_pg sed -i "s/^port = .*/port = $STANDBY_PORT/" "$RUN/pg-standby/postgresql.auto.conf"
  as_pg "$PG_BIN/pg_ctl" -D "$RUN/pg-standby" -l "$RUN/pg-standby.log" -w start >/dev/null
fi

# Whether the server on port $1 answers PING within 60 s: it loads pgcache first, which waits
# for its first connections to PostgreSQL (one per source), slow on a loaded machine.
answers() {
  for _ in $(seq 600); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

MODULE_ARGS=(pg_host 127.0.0.1 pg_port "$PG_PORT" pg_database app pg_user postgres pg_sslmode disable)
if [ "${STANDBY:-}" = "1" ]; then MODULE_ARGS+=(standbys "127.0.0.1:$STANDBY_PORT"); fi
MODULE_ARGS+=(source analytics pg_host 127.0.0.1 pg_port "$PG_PORT" pg_database analytics pg_user postgres pg_sslmode disable)

if [ "${1:-}" = "cluster" ]; then
  addresses=()
  for i in "${!CLUSTER_PORTS[@]}"; do
    port=${CLUSTER_PORTS[$i]}
    bus=${CLUSTER_BUS_PORTS[$i]:-$((port + 10000))}
    dir="$RUN/cluster/$port"
    mkdir -p "$dir"
    redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 --daemonize yes --cluster-enabled yes \
      --cluster-node-timeout 2000 --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      --dir "$dir" --save "" --loadmodule "$PWD/target/release/libpgcache.so" "${MODULE_ARGS[@]}"
    answers "$port" || { echo "redis-server on port $port did not answer"; tail -20 "$dir/redis.log"; exit 1; }
    addresses+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  # Ready when every node says the cluster is up and knows every other node: one node's
  # word is not enough (the others answer CLUSTERDOWN until the configuration reaches them).
  cluster_ready() {
    for port in "${CLUSTER_PORTS[@]}"; do
      info=$(redis-cli -p "$port" cluster info 2>/dev/null) || return 1
      grep -q "cluster_state:ok" <<< "$info" || return 1
      grep -q "cluster_known_nodes:${#CLUSTER_PORTS[@]}" <<< "$info" || return 1
      grep -q "cluster_slots_ok:16384" <<< "$info" || return 1
    done
  }
  for _ in $(seq 300); do cluster_ready && break; sleep 0.1; done
  cluster_ready || { echo "the cluster did not come up; see $RUN/cluster/*/redis.log"; exit 1; }
  first=${CLUSTER_PORTS[0]}
  cat <<TXT
A 3-primary Redis Cluster with pgcache is running on ports ${CLUSTER_PORTS[*]}.
  PostgreSQL: psql -h 127.0.0.1 -p $PG_PORT -U postgres app
Try (-c follows MOVED):
  redis-cli -c -p $first PGCACHE.GET 'pg_cache:users:{"id":1}'
  redis-cli -c -p $first PGCACHE.READ users '{"id":2}'
  redis-cli -c -p $first PGCACHE.KEY users '{"id":"3"}'
  redis-cli -p $first PGCACHE.HEALTH                 # cluster yes, and the slots this node serves
  psql -h 127.0.0.1 -p $PG_PORT -U postgres app -c "UPDATE users SET name = 'Ada' WHERE id = 1"
  redis-cli -c -p $first PGCACHE.GET 'pg_cache:users:{"id":1}'   # the change, on whichever node
Logs: $RUN/cluster/<port>/redis.log, $RUN/pg.log. Stop: scripts/run.sh stop
TXT
  exit 0
fi

# MODULE LOAD/UNLOAD from this machine only (Debian's default refuses them): the
# PGCACHE.DRAIN example of docs/commands.md ends with an unload.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --enable-module-command local \
  --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log" --dir "$RUN" --save "" \
  --loadmodule "$PWD/target/release/libpgcache.so" "${MODULE_ARGS[@]}"
answers "$REDIS_PORT" || { tail -20 "$RUN/redis.log"; exit 1; }

cat <<TXT
pgcache is running.
  Redis:      redis-cli -p $REDIS_PORT
  PostgreSQL: psql -h 127.0.0.1 -p $PG_PORT -U postgres app
Try:
  redis-cli -p $REDIS_PORT PGCACHE.QUERY 'SELECT id, name FROM users WHERE id <= \$1 ORDER BY id' 1 3
  redis-cli -p $REDIS_PORT PGCACHE.READ users '{"id":1}'
  redis-cli -p $REDIS_PORT PGCACHE.MULTIREAD users '[{"id":1},{"id":2},{"id":99999}]'
  redis-cli -p $REDIS_PORT PGCACHE.READ products '{"category":"electronics","product_id":456}'
  redis-cli -p $REDIS_PORT PGCACHE.READ users '{"id":1}' SOURCE analytics   # the analytics database's row
  psql -h 127.0.0.1 -p $PG_PORT -U postgres app -c "UPDATE users SET name = 'Ada' WHERE id = 1"
  redis-cli -p $REDIS_PORT PGCACHE.READ users '{"id":1}'     # the change, not the old row
  redis-cli -p $REDIS_PORT PGCACHE.QUERY 'SELECT id, name FROM users WHERE id <= \$1 ORDER BY id' 1 3
Logs: $RUN/redis.log, $RUN/pg.log. Stop: scripts/run.sh stop
TXT
if [ "${STANDBY:-}" = "1" ]; then
  cat <<TXT
A hot standby of it streams on port $STANDBY_PORT (log: $RUN/pg-standby.log); misses go there:
  redis-cli -p $REDIS_PORT PGCACHE.HEALTH      # standbys: its state, replay_lsn, misses
  redis-cli -p $REDIS_PORT PGCACHE.STATS       # misses_on_standbys
TXT
fi
