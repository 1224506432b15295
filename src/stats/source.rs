//! One source's figures: what pgcache did for one PostgreSQL database (its counters, the
//! invalidation apply lag, where its misses spent their time, its tables'). Sources are
//! reported apart, so a slow or failing database shows in its own figures, never in another's
//! (design/53 §1.6); the server's own figures (per command, the slowlog) are `stats`'.

use super::stages::Stages;
use super::{Counter, Histogram};
use crate::model::pass_through::PassThrough;
use std::sync::{Arc, Mutex};

/// One source's figures, all atomics the hit path bumps without a lock (its tables' list
/// aside, which only schema reads and reports take).
pub struct SourceStats {
    pub hits: Counter,
    pub negative_hits: Counter,
    pub misses: Counter,
    pub fills: Counter,
    /// Rows answered but not cached because Redis was over its `maxmemory`.
    pub fills_skipped_oom: Counter,
    pub writes: Counter,
    pub invalidations_by_command: Counter,
    pub invalidations_by_postgres: Counter,
    /// Times the invalidation backlog passed its bound and became flushes of its tables.
    pub invalidation_backlog_flushes: Counter,
    pub flushes: Counter,
    pub flushes_without_scan: Counter,
    pub expirations: Counter,
    pub evictions: Counter,
    /// Tags `PGCACHE.INVALIDATE TAG` invalidated (counted in the default source's figures).
    pub tag_invalidations: Counter,
    /// Entries `PGCACHE.INVALIDATE TAG` dropped.
    pub tag_entries_dropped: Counter,
    /// Entries that joined a tag's set (one per entry and tag).
    pub tag_members_added: Counter,
    /// Members of tag sets whose entry was gone, removed as the sets grew.
    pub tag_members_swept: Counter,
    /// Entries a tagged call found without its tags, dropped so that it read them afresh.
    pub tag_untagged_dropped: Counter,
    /// Tag sets removed with members by anything but INVALIDATE TAG (evicted, expired,
    /// deleted), and the entries they listed that were dropped with them.
    pub tag_sets_lost: Counter,
    pub tag_orphans_dropped: Counter,
    pub errors: Counter,
    pub errors_timeout: Counter,
    pub errors_queue_full: Counter,
    pub errors_postgres: Counter,
    pub errors_internal: Counter,
    /// Hook deliveries that failed (an XADD to a key of another type, say).
    pub hook_errors: Counter,
    /// READs answered by another READ's query (coalesced onto a fill in flight).
    pub coalesced: Counter,
    /// PostgreSQL connections given up because PostgreSQL stopped answering (a silent network).
    pub pg_silent_connections: Counter,
    /// Reads run again on a new connection after the one lent out turned out dead.
    pub pg_retries: Counter,
    /// Times the invalidation listener lost its connection (and then resynchronised).
    pub listener_reconnects: Counter,
    /// Reads answered from PostgreSQL because the change feed had not vouched for the cache
    /// within their freshness bound (`max_staleness_ms` or `MAXSTALE`).
    pub bypassed_stale: Counter,
    /// Reads answered from the cache past their freshness bound, within `stale_if_error_ms`,
    /// because PostgreSQL could not be reached.
    pub served_stale: Counter,
    /// Requests that needed PostgreSQL refused at once during a known outage (circuit open).
    pub refused_outage: Counter,
    /// PGCACHE.QUERY results answered from the cache.
    pub query_hits: Counter,
    /// PGCACHE.QUERY results run on PostgreSQL.
    pub query_misses: Counter,
    /// PGCACHE.QUERY results answered but not cached: over `query_max_rows` or `query_max_bytes`.
    pub query_results_too_big: Counter,
    /// PGCACHE.QUERY results dropped by changes to the tables they read.
    pub query_invalidations: Counter,
    /// Statement spellings forgotten to keep the statement table within `query_max_statements`.
    pub query_statements_evicted: Counter,
    /// Row-precise PGCACHE.QUERY results answered but not cached: the index was full
    /// (`query_index_max_bytes`).
    pub query_index_full: Counter,
    /// QUERY jobs sent to PostgreSQL in one round trip with other statements' jobs.
    pub query_pipelined: Counter,
    /// Misses the event loop sent to PostgreSQL itself (`cache::onloop`).
    pub misses_on_loop: Counter,
    /// Misses the event loop sent and then handed to the workers (a connection broke, or the
    /// answer needed a worker's connection to finish).
    pub misses_loop_to_workers: Counter,
    /// Misses a standby answered (`standbys`), after its check said it replayed as far as
    /// the cache needed.
    pub misses_on_standbys: Counter,
    /// Misses sent to a standby that the primary answered instead: its check fell short of
    /// the position needed, or it failed.
    pub standby_rerouted: Counter,
    /// Connections the event loop opened to PostgreSQL.
    pub loop_connections_opened: Counter,
    /// Connections to PostgreSQL not opened for want of a resource of this server (file
    /// descriptors, memory, local ports): no outage of PostgreSQL (`pg::shortage`).
    pub pg_connects_short: Counter,
    /// pgcache's own part of the invalidation lag: from a change reaching pgcache (a
    /// notification, or a replicated transaction's commit, read) to its deletions applied,
    /// for the oldest change of each set applied together. The rest of the lag, from the
    /// commit to the change reaching pgcache, is PostgreSQL's and the network's.
    pub invalidation_apply: Histogram,
    /// Where misses spent their time, stage by stage.
    pub stages: Stages,
    /// Every table seen, by name.
    tables: Mutex<Vec<Arc<TableStats>>>,
}

impl SourceStats {
    /// All zero, no table (const, so a `static` holds the default source's).
    pub const fn new() -> SourceStats {
        SourceStats {
            hits: Counter::new(),
            negative_hits: Counter::new(),
            misses: Counter::new(),
            fills: Counter::new(),
            fills_skipped_oom: Counter::new(),
            writes: Counter::new(),
            invalidations_by_command: Counter::new(),
            invalidations_by_postgres: Counter::new(),
            invalidation_backlog_flushes: Counter::new(),
            flushes: Counter::new(),
            flushes_without_scan: Counter::new(),
            expirations: Counter::new(),
            evictions: Counter::new(),
            tag_invalidations: Counter::new(),
            tag_entries_dropped: Counter::new(),
            tag_members_added: Counter::new(),
            tag_members_swept: Counter::new(),
            tag_untagged_dropped: Counter::new(),
            tag_sets_lost: Counter::new(),
            tag_orphans_dropped: Counter::new(),
            errors: Counter::new(),
            errors_timeout: Counter::new(),
            errors_queue_full: Counter::new(),
            errors_postgres: Counter::new(),
            errors_internal: Counter::new(),
            hook_errors: Counter::new(),
            coalesced: Counter::new(),
            pg_silent_connections: Counter::new(),
            pg_retries: Counter::new(),
            listener_reconnects: Counter::new(),
            bypassed_stale: Counter::new(),
            served_stale: Counter::new(),
            refused_outage: Counter::new(),
            query_hits: Counter::new(),
            query_misses: Counter::new(),
            query_results_too_big: Counter::new(),
            query_invalidations: Counter::new(),
            query_statements_evicted: Counter::new(),
            query_index_full: Counter::new(),
            query_pipelined: Counter::new(),
            misses_on_loop: Counter::new(),
            misses_loop_to_workers: Counter::new(),
            misses_on_standbys: Counter::new(),
            standby_rerouted: Counter::new(),
            loop_connections_opened: Counter::new(),
            pg_connects_short: Counter::new(),
            invalidation_apply: Histogram::new(),
            stages: Stages::new(),
            tables: Mutex::new(Vec::new()),
        }
    }

    /// The counters, named as INFO, PGCACHE.STATS and the metrics endpoint show them, in
    /// reporting order.
    fn named(&self) -> [(&'static str, &Counter); 46] {
        [
            ("hits", &self.hits),
            ("negative_hits", &self.negative_hits),
            ("misses", &self.misses),
            ("fills", &self.fills),
            ("fills_skipped_oom", &self.fills_skipped_oom),
            ("writes", &self.writes),
            ("invalidations_by_command", &self.invalidations_by_command),
            ("invalidations_by_postgres", &self.invalidations_by_postgres),
            (
                "invalidation_backlog_flushes",
                &self.invalidation_backlog_flushes,
            ),
            ("flushes", &self.flushes),
            ("flushes_without_scan", &self.flushes_without_scan),
            ("expirations", &self.expirations),
            ("evictions", &self.evictions),
            ("tag_invalidations", &self.tag_invalidations),
            ("tag_entries_dropped", &self.tag_entries_dropped),
            ("tag_members_added", &self.tag_members_added),
            ("tag_members_swept", &self.tag_members_swept),
            ("tag_untagged_dropped", &self.tag_untagged_dropped),
            ("tag_sets_lost", &self.tag_sets_lost),
            ("tag_orphans_dropped", &self.tag_orphans_dropped),
            ("errors", &self.errors),
            ("errors_timeout", &self.errors_timeout),
            ("errors_queue_full", &self.errors_queue_full),
            ("errors_postgres", &self.errors_postgres),
            ("errors_internal", &self.errors_internal),
            ("hook_errors", &self.hook_errors),
            ("coalesced", &self.coalesced),
            ("pg_silent_connections", &self.pg_silent_connections),
            ("pg_retries", &self.pg_retries),
            ("listener_reconnects", &self.listener_reconnects),
            ("bypassed_stale", &self.bypassed_stale),
            ("served_stale", &self.served_stale),
            ("refused_outage", &self.refused_outage),
            ("query_hits", &self.query_hits),
            ("query_misses", &self.query_misses),
            ("query_results_too_big", &self.query_results_too_big),
            ("query_invalidations", &self.query_invalidations),
            ("query_statements_evicted", &self.query_statements_evicted),
            ("query_index_full", &self.query_index_full),
            ("query_pipelined", &self.query_pipelined),
            ("misses_on_loop", &self.misses_on_loop),
            ("misses_loop_to_workers", &self.misses_loop_to_workers),
            ("misses_on_standbys", &self.misses_on_standbys),
            ("standby_rerouted", &self.standby_rerouted),
            ("loop_connections_opened", &self.loop_connections_opened),
            ("pg_connects_short", &self.pg_connects_short),
        ]
    }

    /// Every counter's value, in reporting order.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.named().iter().map(|(n, c)| (*n, c.get())).collect()
    }

    /// Hits (negative ones included) over all lookups, 0 when there were none.
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.hits.get() + self.negative_hits.get();
        let total = hits + self.misses.get();
        if total == 0 {
            0.0
        } else {
            hits as f64 / total as f64
        }
    }

    /// The figures of the table called `name`, made on first use. Called when a schema is
    /// read from the catalog, never on the hit path.
    pub fn table(&self, name: &str) -> Arc<TableStats> {
        let mut tables = self.tables.lock().unwrap();
        if let Some(t) = tables.iter().find(|t| t.name == name) {
            return t.clone();
        }
        let t = Arc::new(TableStats::named(name));
        tables.push(t.clone());
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        t
    }

    /// Every table seen, by name.
    pub fn tables(&self) -> Vec<Arc<TableStats>> {
        self.tables.lock().unwrap().clone()
    }

    /// Every figure back to zero; the tables stay listed.
    pub fn reset(&self) {
        for (_, counter) in self.named() {
            counter.reset();
        }
        self.invalidation_apply.reset();
        self.stages.reset();
        for t in self.tables() {
            t.calls.reset();
            t.hits.reset();
            t.misses.reset();
            t.latency.reset();
            t.pass_through.reset();
        }
    }

    /// Every figure back to zero and no table listed, as a new source starts.
    pub fn forget(&self) {
        self.reset();
        self.tables.lock().unwrap().clear();
    }
}

/// One table's figures. Every schema of the table shares them (`TableSchema::stats`), so
/// the hit path reaches them without a lookup.
pub struct TableStats {
    /// The table as cache keys and events name it.
    pub name: String,
    /// Commands on this table: hits plus the timed calls.
    pub calls: Counter,
    /// Keys answered from the cache (negative hits included).
    pub hits: Counter,
    /// Keys fetched from PostgreSQL.
    pub misses: Counter,
    /// Calls that waited for PostgreSQL or changed the cache, from call to reply.
    pub latency: Histogram,
    /// Whether its misses pass through, uncached (`model::pass_through`).
    pub pass_through: PassThrough,
    /// A row of it was too long for the event loop to read (past `pg::wire::conn`'s cap):
    /// its misses are read by the workers.
    pub large_rows: std::sync::atomic::AtomicBool,
}

impl TableStats {
    /// Figures of their own, all zero, under `name` (not listed among the tables': a
    /// statement's figures, say).
    pub fn named(name: &str) -> TableStats {
        TableStats {
            name: name.to_string(),
            calls: Counter::new(),
            hits: Counter::new(),
            misses: Counter::new(),
            latency: Histogram::new(),
            pass_through: PassThrough::default(),
            large_rows: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

// Schemas compare and print by what they describe; the figures are the same table's.
impl std::fmt::Debug for TableStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableStats({})", self.name)
    }
}

impl PartialEq for TableStats {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TableStats {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::stages::STAGES;

    #[test]
    fn tables_are_shared_by_name() {
        let stats = SourceStats::new();
        let a = stats.table("a");
        a.hits.inc();
        assert_eq!(stats.table("a").hits.get(), 1);
        assert!(stats.tables().iter().any(|t| t.name == "a"));
    }

    /// A source forgotten (at MODULE UNLOAD) leaves no figure behind: no counter, no
    /// histogram, no table.
    #[test]
    fn forget_clears_every_figure_of_a_source() {
        let stats = SourceStats::new();
        for (_, counter) in stats.named() {
            counter.inc();
        }
        stats.invalidation_apply.record(5);
        for named in &STAGES {
            stats.stages.record(named.stage, 5);
        }
        let table = stats.table("users");
        table.calls.inc();
        table.latency.record(5);
        assert!(stats.counters().iter().all(|(_, n)| *n == 1));

        stats.reset();
        assert!(stats.counters().iter().all(|(_, n)| *n == 0));
        assert_eq!(stats.invalidation_apply.summary().count, 0);
        assert!(
            STAGES
                .iter()
                .all(|named| stats.stages.histogram(named.stage).summary().count == 0)
        );
        assert_eq!((table.calls.get(), table.latency.summary().count), (0, 0));
        assert_eq!(stats.tables().len(), 1, "a reset keeps the tables listed");

        stats.forget();
        assert!(stats.tables().is_empty());
    }
}
