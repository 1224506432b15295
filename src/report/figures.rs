//! The figures pgcache reports that go up and down, declared once: PGCACHE.STATS (and so the
//! INFO section) and the metrics endpoint both list them from here. The counters are
//! `SourceStats::counters()`; the per-command and per-table figures are `stats`' histograms.
//! Most gauges are a source's (its pool, feed, freshness, statements); the rest are the
//! server's (the work queue, the event loop, the slowlog), the same whichever source asks.

use crate::cache::fill;
use crate::cache::flush;
use crate::cache::freshness;
use crate::cache::worker;
use crate::invalidation;
use crate::model::source::SourceId;
use crate::stall;
use crate::stats;
use crate::stats::slowlog;
use std::borrow::Cow;

pub enum Value {
    Int(i64),
    Ratio(f64),
}

pub struct Gauge {
    pub name: &'static str,
    pub help: Cow<'static, str>,
    pub value: Value,
    /// Whether it is the asking source's figure (false: the server's).
    pub of_source: bool,
}

fn int(name: &'static str, help: impl Into<Cow<'static, str>>, value: impl TryInto<i64>) -> Gauge {
    Gauge {
        name,
        help: help.into(),
        value: Value::Int(value.try_into().unwrap_or(i64::MAX)),
        of_source: true,
    }
}

/// A gauge of the server's, not of a source's.
fn server(gauge: Gauge) -> Gauge {
    Gauge {
        of_source: false,
        ..gauge
    }
}

/// Every gauge, in reporting order: `id`'s own and the server's.
pub fn gauges(id: SourceId) -> Vec<Gauge> {
    let source = stats::of(id);
    let invalidation_apply = source.invalidation_apply.summary();
    let mut all = vec![Gauge {
        name: "hit_ratio",
        help: "Hits (negative ones included) over lookups since the last reset.".into(),
        value: Value::Ratio(source.hit_ratio()),
        of_source: true,
    }];
    let pool = crate::pg::pool::of(id).map(|pool| pool.stats());
    if let (Some(queued), Ok(pool)) = (worker::queued(), pool) {
        all.extend([
            server(int("queue_depth", "Jobs waiting for a worker.", queued)),
            int("pool_size", "PostgreSQL connections at most.", pool.size),
            int("pool_open", "PostgreSQL connections open.", pool.open),
            int("pool_in_use", "PostgreSQL connections in use.", pool.in_use),
            int("pool_idle", "PostgreSQL connections idle.", pool.idle),
        ]);
    }
    all.extend([
        server(int(
            "queue_capacity",
            "Jobs the work queue holds at most.",
            worker::queue_capacity(),
        )),
        int(
            "listener_connected",
            "1 when the invalidation source (the replication stream or the listener) is connected to PostgreSQL.",
            u8::from(invalidation::of(id).connected()),
        ),
        int(
            "invalidation_apply_p50_us",
            "pgcache's own part of the invalidation lag, median since the last reset: from a change reaching pgcache (a notification, a replicated commit) to its entries deleted, in microseconds.",
            invalidation_apply.p50_us,
        ),
        int(
            "invalidation_apply_p99_us",
            "pgcache's own part of the invalidation lag, 99th percentile since the last reset, in microseconds.",
            invalidation_apply.p99_us,
        ),
        server(int(
            "fills_in_flight",
            "Keys being fetched from PostgreSQL for the cache, however many clients wait for each.",
            fill::count(),
        )),
        server(int(
            "flushes_running",
            "PGCACHE.FLUSH runs still dropping entries.",
            flush::running(),
        )),
        server(int(
            "longest_callback_us",
            "Longest single pgcache callback on the event loop since the last reset, in microseconds.",
            stall::longest().0,
        )),
        server(int(
            "slowlog_length",
            "Entries in PGCACHE.SLOWLOG.",
            slowlog::len(),
        )),
        int(
            "query_statements",
            "Statement spellings PGCACHE.QUERY remembers (at most query_max_statements).",
            crate::query::statements::of(id).count(),
        ),
        int(
            "query_index_results",
            "Row-precise PGCACHE.QUERY results in the index that drops them row by row.",
            crate::query::membership::of(id).results(),
        ),
        int(
            "query_index_bytes",
            "Memory the index of row-precise results takes, in bytes (an estimate; at most query_index_max_bytes).",
            crate::query::membership::of(id).bytes(),
        ),
    ]);
    for named in &stats::stages::STAGES {
        let summary = source.stages.histogram(named.stage).summary();
        all.extend([
            int(
                named.p50,
                format!(
                    "Misses' median time since the last reset, in microseconds, {}.",
                    named.help
                ),
                summary.p50_us,
            ),
            int(
                named.p99,
                format!(
                    "Misses' 99th percentile since the last reset, in microseconds, {}.",
                    named.help
                ),
                summary.p99_us,
            ),
            int(
                named.avg,
                format!(
                    "Misses' average since the last reset, in microseconds, {}.",
                    named.help
                ),
                summary.avg_us.round() as u64,
            ),
        ]);
    }
    all.extend([
        int(
            "freshness_age_ms",
            "Age of the freshness horizon in milliseconds, rounded up: every change PostgreSQL committed before it has been applied to the cache, so no hit is staler than this (-1: no change feed vouches for this node, or none has yet).",
            freshness::of(id).age().map_or(-1, |age| age.as_micros().div_ceil(1000) as i64),
        ),
        int(
            "postgres_circuit_open",
            "1 while PostgreSQL is known to be unreachable: requests that need it fail at once, and one probe at a time checks it.",
            u8::from(crate::pg::circuit::of(id).open()),
        ),
        int(
            "hits_served",
            "1 while hits are answered from the cache within max_staleness_ms, 0 while reads go to PostgreSQL (the change feed has not vouched for the cache within the bound, or the cache is held: entries loaded from disk wait for the feed to catch up) or are served stale.",
            u8::from(crate::cache::serving::now(id).served()),
        ),
    ]);
    let feed = invalidation::of(id);
    if let Some(slot) = feed.replication.status().slot {
        let applied = invalidation::position::applied_lsn_of(id);
        all.extend([
            int(
                "replication_lag_bytes",
                "Bytes of PostgreSQL's log written and not yet applied to the cache.",
                slot.server_lsn.0.saturating_sub(applied.0),
            ),
            int(
                "replication_retained_bytes",
                "Bytes of log PostgreSQL keeps for pgcache's replication slot.",
                slot.retained_bytes,
            ),
            int(
                "replication_apply_lag_us",
                "From the last applied transaction's commit in PostgreSQL to its invalidations applied, in microseconds.",
                feed.position.last_lag().as_micros(),
            ),
        ]);
    }
    all
}
