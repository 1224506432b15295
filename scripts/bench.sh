#!/usr/bin/env bash
# `make bench`: builds the module, then runs benches/pgcache.rs (private PostgreSQL and
# server, redis-benchmark, pgbench). PGCACHE_BENCH_ONLY=hits|multiread|query-hits|misses|query-misses|query-precision|query-bulk|miss-path|ping|lag|coalescing|
# bulk|writers|load-lag|pg-restart|trouble|oltp|invalidated|sources|standby|tags runs one section; PGCACHE_TEST_SERVER=/path/to/valkey-server
# benchmarks Valkey instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
cargo build --release --example bare_get
cargo bench --bench pgcache
