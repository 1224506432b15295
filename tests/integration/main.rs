//! The integration suite: one binary, a module per concern, each test against a real
//! PostgreSQL and a real redis-server (or valkey-server, `PGCACHE_TEST_SERVER`) with the
//! built module loaded, started by the test on ports of its own (`pgcache-testkit`). The
//! reliability runs (chaos, fuzz, soak, cycles, memcheck) are binaries of their own.

mod after;
mod batching;
mod bounds;
mod circuit;
mod cluster;
mod cluster_sources;
mod coalescing;
mod consistency;
mod ddl_edges;
mod docs_claims;
mod freshness;
mod hooks;
mod invalidation;
mod keys;
mod metrics;
mod multiread;
mod onloop;
mod orm_corpus;
mod pass_through;
mod pause;
mod query;
mod query_access;
mod query_edges;
mod query_feed;
mod query_joins;
mod query_keyless;
mod query_refusals;
mod query_rows;
mod query_session;
mod query_sources;
mod query_wrapping;
mod read;
mod readme;
mod replication;
mod restart;
mod robustness;
mod slowlog;
mod sources;
mod sources_isolation;
mod sources_reports;
mod sources_runtime;
mod staleness;
mod standbys;
mod stats;
mod tags;
mod tls;
mod write;
