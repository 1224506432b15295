#!/usr/bin/env bash
# Counts the instructions redis-server's main thread spends on cold READs and MULTIREADs,
# under valgrind's callgrind: unlike timings, the counts do not move with the VM's load,
# so two builds can be compared exactly.
#
#   scripts/profile.sh [module.so ...]     (default: target/release/libpgcache.so)
#   PGCACHE_PROFILE_ONLY=cold|hits|after|requests|query scripts/profile.sh   (one section)
#
# Also counts what a READ hit costs next to GET and next to the cheapest module command that
# replies a key's value (examples/bare_get.rs, built by `make profile`).
#
# Uses the PostgreSQL of `make run` (started if needed) and a 100,000-row table of its
# own; each count gets a fresh redis-server under callgrind on port 6499. Needs valgrind
# (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 1; }
[ $# -gt 0 ] || set -- "$PWD/target/release/libpgcache.so"
PG_PORT=${PG_PORT:-55432}
PORT=6499
BARE=$PWD/target/release/examples/libbare_get.so
[ -f "$BARE" ] || { echo "needs $BARE: cargo build --release --example bare_get" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT

scripts/run.sh >/dev/null
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -q app <<'SQL'
CREATE TABLE IF NOT EXISTS profile_users (id integer PRIMARY KEY, name text NOT NULL, email text);
INSERT INTO profile_users SELECT g, 'user' || g, 'user' || g || '@example.com'
FROM generate_series(1, 100000) g ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS profile_orders (id integer PRIMARY KEY,
  user_id integer NOT NULL REFERENCES profile_users, total numeric NOT NULL);
INSERT INTO profile_orders VALUES (1, 1, 9.50) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS profile_lines (id integer PRIMARY KEY,
  order_id integer NOT NULL REFERENCES profile_orders, quantity integer NOT NULL);
INSERT INTO profile_lines VALUES (1, 1, 2) ON CONFLICT DO NOTHING;
SQL

# 100 MULTIREADs of 100 distinct cold keys, then 2000 cold READs; keys in canonical form.
MULTIREADS=100 READS=2000
{
  echo "PGCACHE.READ profile_users '{\"id\":1}'"
  for c in $(seq 0 $((MULTIREADS - 1))); do
    keys=$(seq -s, -f '{"id":%g}' $((1000 + c * 100)) $((1099 + c * 100)))
    echo "PGCACHE.MULTIREAD profile_users '[$keys]'"
  done
  seq -f "PGCACHE.READ profile_users '{\"id\":%g}'" 50000 $((50000 + READS - 1))
} >"$OUT/commands"

# Only what the calls cost is counted (--toggle-collect), not start-up or the timer work
# that grows with valgrind's slow wall clock: all of Redis's command processing plus its
# handling of unblocked clients, and, in a second run, the part spent in pgcache's command
# and reply callbacks (including the Redis API calls they make).
REDIS_WORK=(--toggle-collect=processCommand --toggle-collect=moduleHandleBlockedClients)
# (The older names let a run compare builds from before the layout of #22.)
PGCACHE_WORK=(--toggle-collect='pgcache::commands::*::entry'
  --toggle-collect='pgcache::redis::blocking::on_reply'
  --toggle-collect='pgcache::commands::*command'
  --toggle-collect='pgcache::requests::blocked::on_reply'
  --toggle-collect='pgcache::blocked::on_reply'
  --toggle-collect='pgcache::worker::blocked::on_reply')

start_server() { # start_server <module> <valgrind options...>: redis-server under callgrind
  local module=$1
  shift
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/cg" "$@" \
    redis-server --port "$PORT" --bind 127.0.0.1 --save "" --loadmodule "$BARE" --loadmodule "$module" \
    pg_host 127.0.0.1 pg_port "$PG_PORT" pg_database app pg_user postgres pg_sslmode disable \
    request_timeout_ms 60000 >"$OUT/log" 2>&1 &
  for _ in $(seq 300); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
}

stop_server() { # stops it and prints the main thread's instruction count
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
  wait
  grep -h '^summary' "$OUT/cg-01" | awk '{print $2}'
  rm -f "$OUT"/cg*
}

count() { # count <module> <commands file> <toggle options...>: main-thread instructions
  local module=$1 commands=$2
  shift 2
  start_server "$module" "$@"
  redis-cli -p "$PORT" <"$commands" >"$OUT/replies"
  if grep -qE "ERR|Invalid" "$OUT/replies"; then
    grep -m3 -E "ERR|Invalid" "$OUT/replies" >&2
    exit 1
  fi
  stop_server
}

head -n 1 "$OUT/commands" >"$OUT/warmup"
head -n $((MULTIREADS + 1)) "$OUT/commands" >"$OUT/multireads"
{ head -n 1 "$OUT/commands"; tail -n "$READS" "$OUT/commands"; } >"$OUT/reads"
# Both workloads start with the same warm-up READ (which also loads the table's schema), and
# redis-cli sends COMMAND DOCS when it connects (~5 M instructions): a run of the warm-up
# alone measures both, and is subtracted.
per_call() { # per_call <module> <commands> <calls> <baseline> <toggle options...>
  local module=$1 commands=$2 calls=$3 baseline=$4
  shift 4
  echo $((($(count "$module" "$commands" "$@") - baseline) / calls))
}
wanted() { [ -z "${PGCACHE_PROFILE_ONLY:-}" ] || [ "$PGCACHE_PROFILE_ONLY" = "$1" ]; }

if wanted cold; then
echo "Main-thread instructions per cold call (Redis's command processing and reply handling):"
echo
echo "| build | MULTIREAD of 100 keys | of which in pgcache's callbacks | READ | of which in pgcache's callbacks |"
echo "|---|---|---|---|---|"
for module in "$@"; do
  redis_base=$(count "$module" "$OUT/warmup" "${REDIS_WORK[@]}")
  pgcache_base=$(count "$module" "$OUT/warmup" "${PGCACHE_WORK[@]}")
  printf '| %s | %d | %d | %d | %d |\n' "$module" \
    "$(per_call "$module" "$OUT/multireads" "$MULTIREADS" "$redis_base" "${REDIS_WORK[@]}")" \
    "$(per_call "$module" "$OUT/multireads" "$MULTIREADS" "$pgcache_base" "${PGCACHE_WORK[@]}")" \
    "$(per_call "$module" "$OUT/reads" "$READS" "$redis_base" "${REDIS_WORK[@]}")" \
    "$(per_call "$module" "$OUT/reads" "$READS" "$pgcache_base" "${PGCACHE_WORK[@]}")"
done
fi

# Hits: the warm-up READ caches the row; each run then repeats one command on its entry.
HITS=5000
HIT_WORK=(--toggle-collect=processCommand)
entry="'pg_cache:profile_users:{\"id\":1}'"
hits_of() { # hits_of <command> [warm-up file]: a commands file of the warm-up and HITS calls
  {
    if [ -n "${2:-}" ]; then cat "$2"; else head -n 1 "$OUT/commands"; fi
    for _ in $(seq "$HITS"); do echo "$1"; done
  } >"$OUT/hits"
  echo "$OUT/hits"
}
if wanted hits; then
echo
echo "Instructions per call in \`processCommand\` (a hit of one 50-byte row):"
echo
echo "| build | GET | bare module command (BARE.GET) | PGCACHE.GET hit | PGCACHE.READ hit |"
echo "|---|---|---|---|---|"
for module in "$@"; do
  base=$(count "$module" "$OUT/warmup" "${HIT_WORK[@]}")
  printf '| %s | %d | %d | %d | %d |\n' "$module" \
    "$(per_call "$module" "$(hits_of "GET $entry")" "$HITS" "$base" "${HIT_WORK[@]}")" \
    "$(per_call "$module" "$(hits_of "BARE.GET $entry")" "$HITS" "$base" "${HIT_WORK[@]}")" \
    "$(per_call "$module" "$(hits_of "PGCACHE.GET $entry")" "$HITS" "$base" "${HIT_WORK[@]}")" \
    "$(per_call "$module" "$(hits_of "PGCACHE.READ profile_users '{\"id\":1}'")" "$HITS" "$base" "${HIT_WORK[@]}")"
done
fi

# READ ... AFTER <position> on a hit, beside the plain READ hit: the server runs in `auto`
# mode, which streams from `make run`'s PostgreSQL (wal_level = logical), so every position
# PostgreSQL printed before the run is applied. A build without AFTER shows n/a.
if wanted after; then
after_position=$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atq app -c "SELECT pg_current_wal_insert_lsn()")
echo
echo "Instructions per call in \`processCommand\`, READ hit with and without AFTER:"
echo
echo "| build | PGCACHE.READ hit | PGCACHE.READ hit AFTER $after_position |"
echo "|---|---|---|"
for module in "$@"; do
  base=$(count "$module" "$OUT/warmup" "${HIT_WORK[@]}")
  plain=$(per_call "$module" "$(hits_of "PGCACHE.READ profile_users '{\"id\":1}'")" "$HITS" "$base" "${HIT_WORK[@]}")
  after=$( (per_call "$module" "$(hits_of "PGCACHE.READ profile_users '{\"id\":1}' AFTER $after_position")" \
    "$HITS" "$base" "${HIT_WORK[@]}") 2>/dev/null || echo n/a)
  printf '| %s | %s | %s |\n' "$module" "$plain" "$after"
done
fi

# The same hits as redis-benchmark sends them (50 clients, pipeline 16), counting all of the
# main thread's work per request (reading and parsing requests, writing replies) over a run
# that sends no requests.
REQUESTS=100000
per_request() { # per_request <module> <baseline> <command...>
  local module=$1 baseline=$2
  shift 2
  start_server "$module"
  redis-cli -p "$PORT" PGCACHE.READ profile_users '{"id":1}' >/dev/null
  if [ $# -gt 0 ]; then
    redis-benchmark -p "$PORT" -c 50 -P 16 -n "$REQUESTS" "$@" >/dev/null
  fi
  stop_server >"$OUT/total" # not in $(...): its `wait` must run in this shell
  echo $((($(cat "$OUT/total") - baseline) / REQUESTS))
}
if wanted requests; then
echo
echo "Main-thread instructions per request, redis-benchmark -c 50 -P 16 (timer work varies with"
echo "the run's length, so these move by up to 5 % between runs; compare within a row):"
echo
echo "| build | GET | bare module command (BARE.GET) | PGCACHE.GET hit | PGCACHE.READ hit |"
echo "|---|---|---|---|---|"
name='pg_cache:profile_users:{"id":1}'
for module in "$@"; do
  idle=$(per_request "$module" 0)
  printf '| %s | %d | %d | %d | %d |\n' "$module" \
    "$(per_request "$module" "$idle" GET "$name")" \
    "$(per_request "$module" "$idle" BARE.GET "$name")" \
    "$(per_request "$module" "$idle" PGCACHE.GET "$name")" \
    "$(per_request "$module" "$idle" PGCACHE.READ profile_users '{"id":1}')"
done
fi

# PGCACHE.QUERY's hits (cached 1-row results: one table, a join of two and of three by
# foreign keys) beside READ's hit of the same row: the first calls learn each statement and
# fill its result, and are part of the baseline.
query="PGCACHE.QUERY \"SELECT id, name, email FROM profile_users WHERE id = \$1\" 1 1"
join2="PGCACHE.QUERY \"SELECT o.id, o.total, u.name FROM profile_orders o JOIN profile_users u ON u.id = o.user_id WHERE o.user_id = \$1\" 1 1"
join3="PGCACHE.QUERY \"SELECT l.quantity, o.total, u.name FROM profile_lines l JOIN profile_orders o ON o.id = l.order_id JOIN profile_users u ON u.id = o.user_id WHERE o.user_id = \$1\" 1 1"
warmup_of() { # warmup_of <command>: the warm-up READ, then the command three times
  {
    head -n 1 "$OUT/commands"
    for _ in 1 2 3; do echo "$1"; done
  } >"$OUT/query_warmup"
  echo "$OUT/query_warmup"
}
query_hit() { # query_hit <module> <command>: main-thread instructions per hit of it
  local warmup
  warmup=$(warmup_of "$2")
  per_call "$1" "$(hits_of "$2" "$warmup")" "$HITS" "$(count "$1" "$warmup" "${HIT_WORK[@]}")" "${HIT_WORK[@]}"
}
wanted query || exit 0
echo
echo "Instructions per call in \`processCommand\`, a hit of the same row by READ and by QUERY:"
echo
echo "| build | PGCACHE.READ hit | PGCACHE.QUERY hit (\`WHERE id = \$1\`, one row) | a join of two tables | of three |"
echo "|---|---|---|---|---|"
for module in "$@"; do
  base=$(count "$module" "$OUT/warmup" "${HIT_WORK[@]}")
  printf '| %s | %d | %d | %d | %d |\n' "$module" \
    "$(per_call "$module" "$(hits_of "PGCACHE.READ profile_users '{\"id\":1}'")" "$HITS" "$base" "${HIT_WORK[@]}")" \
    "$(query_hit "$module" "$query")" "$(query_hit "$module" "$join2")" "$(query_hit "$module" "$join3")"
done
