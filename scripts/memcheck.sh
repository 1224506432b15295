#!/usr/bin/env bash
# valgrind memcheck over a short mixed workload (tests/memcheck/): hits, misses, errors,
# timeouts, invalidations, hooks, an UNLOAD and LOAD. Redis's own allocator (jemalloc) hides
# allocations from valgrind, so this builds Debian's Redis 7.0.15 source with libc malloc into
# .tools/ first (once, about two minutes). Prints valgrind's leak summary; fails when any
# block definitely lost was allocated in pgcache's code, or on any invalid read, write or use
# of uninitialised memory (the ERROR SUMMARY, which counts those and definite losses only).
# --keep-debuginfo keeps the symbols of the unloaded instance: without it, what that instance
# lost shows as ??? frames, not pgcache's.
set -euo pipefail
cd "$(dirname "$0")/.."

version=7.0.15
sha256=4b1dc4ee6d622a09fff9c6777191209750fb5e5a725ef78ea012d6eef4c22982
dir=.tools/redis-libc-$version
if ! command -v valgrind >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
scripts/build-redis.sh "$version" "$sha256" "$dir" MALLOC=libc
wrapper=.tools/valgrind-redis-server
cat > "$wrapper" <<WRAPPER
#!/bin/sh
exec valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite --keep-debuginfo=yes \\
  --errors-for-leak-kinds=definite \\
  --num-callers=40 --log-file="\$PGCACHE_VALGRIND_LOG" "$PWD/$dir/src/redis-server" "\$@"
WRAPPER
chmod +x "$wrapper"
PGCACHE_TEST_SERVER="$PWD/$wrapper" cargo test --release --test memcheck -- --ignored --nocapture
