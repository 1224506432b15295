#!/usr/bin/env bash
# `make bench`: runs benches/pgcache.rs (private PostgreSQL + server, redis-benchmark, pgbench).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench pgcache
