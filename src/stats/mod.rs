//! What pgcache has done, for PGCACHE.STATS, the `pgcache` INFO section and the metrics
//! endpoint: counters and per-command and per-table latency histograms, all lock-free
//! atomics (the hit path pays one relaxed increment per counter it touches).

pub mod slowlog;
pub mod stages;

use crate::model::pass_through::PassThrough;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// A monotonic counter.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    pub fn reset(&self) {
        self.0.store(0, Relaxed);
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// Four buckets per power of two of microseconds: ~19 % resolution from 1 µs to hours, in a
/// fixed array (a real histogram, not an average of recent samples).
const SUB_BUCKETS: u64 = 4;
const BUCKETS: usize = 64 * SUB_BUCKETS as usize;

pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// A histogram's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub avg_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

fn bucket_of(us: u64) -> usize {
    if us < SUB_BUCKETS {
        return us as usize;
    }
    let power = 63 - u64::from(us.leading_zeros()); // us >= 4, so power >= 2
    let sub = (us >> (power - 2)) & (SUB_BUCKETS - 1);
    ((power - 1) * SUB_BUCKETS + sub) as usize
}

/// The smallest value that falls in `bucket` (what percentiles report: a lower bound).
fn bucket_floor(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let power = bucket / SUB_BUCKETS + 1;
    let sub = bucket % SUB_BUCKETS;
    (1 << power) + (sub << (power - 2))
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, us: u64) {
        self.buckets[bucket_of(us).min(BUCKETS - 1)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// For the metrics endpoint: how many recorded values were below 2^k µs, for k from 0
    /// to `max_power`, and the sum of all values. Durations are recorded truncated to whole
    /// microseconds, so "recorded below 2^k" is exactly "took at most 2^k µs".
    pub fn cumulative_powers_of_two(&self, max_power: u32) -> (Vec<u64>, u64, u64) {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let below = (0..=max_power)
            .map(|k| {
                counts
                    .iter()
                    .enumerate()
                    .take_while(|(bucket, _)| bucket_floor(*bucket) < 1 << k)
                    .map(|(_, n)| n)
                    .sum()
            })
            .collect();
        (below, counts.iter().sum(), self.sum_us.load(Relaxed))
    }

    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let percentile = |p: f64| {
            let rank = ((count as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (bucket, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return bucket_floor(bucket);
                }
            }
            0
        };
        Summary {
            count,
            avg_us: if count == 0 {
                0.0
            } else {
                self.sum_us.load(Relaxed) as f64 / count as f64
            },
            p50_us: if count == 0 { 0 } else { percentile(0.5) },
            p99_us: if count == 0 { 0 } else { percentile(0.99) },
        }
    }

    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Relaxed);
        }
        self.count.store(0, Relaxed);
        self.sum_us.store(0, Relaxed);
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

pub static HITS: Counter = Counter::new();
pub static NEGATIVE_HITS: Counter = Counter::new();
pub static MISSES: Counter = Counter::new();
pub static FILLS: Counter = Counter::new();
/// Rows answered but not cached because Redis was over its `maxmemory`.
pub static FILLS_SKIPPED_OOM: Counter = Counter::new();
pub static WRITES: Counter = Counter::new();
pub static INVALIDATIONS_BY_COMMAND: Counter = Counter::new();
pub static INVALIDATIONS_BY_POSTGRES: Counter = Counter::new();
/// Times the invalidation backlog passed its bound and became flushes of its tables.
pub static INVALIDATION_BACKLOG_FLUSHES: Counter = Counter::new();
pub static FLUSHES: Counter = Counter::new();
pub static FLUSHES_WITHOUT_SCAN: Counter = Counter::new();
pub static EXPIRATIONS: Counter = Counter::new();
pub static EVICTIONS: Counter = Counter::new();
pub static ERRORS: Counter = Counter::new();
pub static ERRORS_TIMEOUT: Counter = Counter::new();
pub static ERRORS_QUEUE_FULL: Counter = Counter::new();
pub static ERRORS_POSTGRES: Counter = Counter::new();
pub static ERRORS_INTERNAL: Counter = Counter::new();
/// Hook deliveries that failed (an XADD to a key of another type, say).
pub static HOOK_ERRORS: Counter = Counter::new();
/// READs answered by another READ's query (coalesced onto a fill in flight).
pub static COALESCED: Counter = Counter::new();
/// PostgreSQL connections given up because PostgreSQL stopped answering (a silent network).
pub static PG_SILENT_CONNECTIONS: Counter = Counter::new();
/// Reads run again on a new connection after the one lent out turned out dead.
pub static PG_RETRIES: Counter = Counter::new();
/// Times the invalidation listener lost its connection (and then resynchronised).
pub static LISTENER_RECONNECTS: Counter = Counter::new();
/// Reads answered from PostgreSQL because the change feed had not vouched for the cache
/// within their freshness bound (`max_staleness_ms` or `MAXSTALE`).
pub static BYPASSED_STALE: Counter = Counter::new();
/// Reads answered from the cache past their freshness bound, within `stale_if_error_ms`,
/// because PostgreSQL could not be reached.
pub static SERVED_STALE: Counter = Counter::new();
/// Requests that needed PostgreSQL refused at once during a known outage (circuit open).
pub static MISSES_REFUSED_OUTAGE: Counter = Counter::new();
/// PGCACHE.QUERY results answered from the cache.
pub static QUERY_HITS: Counter = Counter::new();
/// PGCACHE.QUERY results run on PostgreSQL.
pub static QUERY_MISSES: Counter = Counter::new();
/// PGCACHE.QUERY results answered but not cached: over `query_max_rows` or `query_max_bytes`.
pub static QUERY_TOO_BIG: Counter = Counter::new();
/// PGCACHE.QUERY results dropped by changes to the tables they read.
pub static QUERY_INVALIDATIONS: Counter = Counter::new();
/// Statement spellings forgotten to keep the statement table within `query_max_statements`.
pub static QUERY_STATEMENTS_EVICTED: Counter = Counter::new();
/// Row-precise PGCACHE.QUERY results answered but not cached: the index was full
/// (`query_index_max_bytes`).
pub static QUERY_INDEX_FULL: Counter = Counter::new();
/// QUERY jobs sent to PostgreSQL in one round trip with other statements' jobs.
pub static QUERY_PIPELINED: Counter = Counter::new();
/// Misses the event loop sent to PostgreSQL itself (`cache::onloop`).
pub static MISSES_ON_LOOP: Counter = Counter::new();
/// Misses the event loop sent and then handed to the workers (a connection broke, or the
/// answer needed a worker's connection to finish).
pub static MISSES_LOOP_TO_WORKERS: Counter = Counter::new();
/// Connections the event loop opened to PostgreSQL.
pub static LOOP_CONNECTIONS_OPENED: Counter = Counter::new();

/// pgcache's own part of the invalidation lag: from a change reaching pgcache (a
/// notification, or a replicated transaction's commit, read) to its deletions applied, for
/// the oldest change of each set applied together. The rest of the lag, from the commit to
/// the change reaching pgcache, is PostgreSQL's and the network's.
pub static INVALIDATION_APPLY: Histogram = Histogram::new();

/// The commands whose calls and latency are tracked, in reporting order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    Read,
    Multiread,
    Write,
    Invalidate,
    Flush,
    Get,
    Mget,
    Query,
}

impl Tracked {
    pub const ALL: [Tracked; 8] = [
        Tracked::Read,
        Tracked::Multiread,
        Tracked::Write,
        Tracked::Invalidate,
        Tracked::Flush,
        Tracked::Get,
        Tracked::Mget,
        Tracked::Query,
    ];

    /// As STATS, INFO and the metrics name it (the command without `pgcache.`).
    pub const fn name(self) -> &'static str {
        match self {
            Tracked::Read => "read",
            Tracked::Multiread => "multiread",
            Tracked::Write => "write",
            Tracked::Invalidate => "invalidate",
            Tracked::Flush => "flush",
            Tracked::Get => "get",
            Tracked::Mget => "mget",
            Tracked::Query => "query",
        }
    }

    /// Whether its latency is recorded only when it waits for PostgreSQL: READ and
    /// MULTIREAD hits take about a microsecond and are counted, not timed (two clock reads
    /// would cost a hit ~5 %).
    pub const fn timed_when_blocked(self) -> bool {
        matches!(
            self,
            Tracked::Read | Tracked::Multiread | Tracked::Get | Tracked::Mget | Tracked::Query
        )
    }

    /// The command these arguments call, if it is tracked.
    ///
    /// Only pgcache's commands block clients, and this runs for every blocked client's reply:
    /// the name's length and the letter after `pgcache.` tell pgcache's commands apart.
    pub fn of(args: &[&[u8]]) -> Option<Tracked> {
        let name = args.first()?;
        let first = name.get("pgcache.".len())?.to_ascii_lowercase();
        match (name.len(), first) {
            (12, b'r') => Some(Tracked::Read),
            (17, b'm') => Some(Tracked::Multiread),
            (13, b'w') => Some(Tracked::Write),
            (18, b'i') => Some(Tracked::Invalidate),
            (13, b'f') => Some(Tracked::Flush),
            (11, b'g') => Some(Tracked::Get),
            (12, b'm') => Some(Tracked::Mget),
            (13, b'q') => Some(Tracked::Query),
            _ => None,
        }
    }
}

static COMMAND_CALLS: [Counter; Tracked::ALL.len()] =
    [const { Counter::new() }; Tracked::ALL.len()];
static COMMAND_LATENCY: [Histogram; Tracked::ALL.len()] =
    [const { Histogram::new() }; Tracked::ALL.len()];

pub fn count_call(command: Tracked) {
    COMMAND_CALLS[command as usize].inc();
}

pub fn command_calls(command: Tracked) -> u64 {
    COMMAND_CALLS[command as usize].get()
}

/// Records one call of `command` that took `us` microseconds.
pub fn record_command(command: Tracked, us: u64) {
    COMMAND_LATENCY[command as usize].record(us);
}

pub fn command_summary(command: Tracked) -> Summary {
    COMMAND_LATENCY[command as usize].summary()
}

pub fn command_histogram(command: Tracked) -> &'static Histogram {
    &COMMAND_LATENCY[command as usize]
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

static TABLES: Mutex<Vec<Arc<TableStats>>> = Mutex::new(Vec::new());

/// The figures of the table called `name`, made on first use. Called when a schema is read
/// from the catalog, never on the hit path.
pub fn table(name: &str) -> Arc<TableStats> {
    let mut tables = TABLES.lock().unwrap();
    if let Some(t) = tables.iter().find(|t| t.name == name) {
        return t.clone();
    }
    let t = Arc::new(TableStats::named(name));
    tables.push(t.clone());
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    t
}

/// Every table seen, by name.
pub fn tables() -> Vec<Arc<TableStats>> {
    TABLES.lock().unwrap().clone()
}

/// The counters, named as INFO, PGCACHE.STATS and the metrics endpoint show them.
static NAMED: [(&str, &Counter); 36] = [
    ("hits", &HITS),
    ("negative_hits", &NEGATIVE_HITS),
    ("misses", &MISSES),
    ("fills", &FILLS),
    ("fills_skipped_oom", &FILLS_SKIPPED_OOM),
    ("writes", &WRITES),
    ("invalidations_by_command", &INVALIDATIONS_BY_COMMAND),
    ("invalidations_by_postgres", &INVALIDATIONS_BY_POSTGRES),
    (
        "invalidation_backlog_flushes",
        &INVALIDATION_BACKLOG_FLUSHES,
    ),
    ("flushes", &FLUSHES),
    ("flushes_without_scan", &FLUSHES_WITHOUT_SCAN),
    ("expirations", &EXPIRATIONS),
    ("evictions", &EVICTIONS),
    ("errors", &ERRORS),
    ("errors_timeout", &ERRORS_TIMEOUT),
    ("errors_queue_full", &ERRORS_QUEUE_FULL),
    ("errors_postgres", &ERRORS_POSTGRES),
    ("errors_internal", &ERRORS_INTERNAL),
    ("hook_errors", &HOOK_ERRORS),
    ("coalesced", &COALESCED),
    ("pg_silent_connections", &PG_SILENT_CONNECTIONS),
    ("pg_retries", &PG_RETRIES),
    ("listener_reconnects", &LISTENER_RECONNECTS),
    ("bypassed_stale", &BYPASSED_STALE),
    ("served_stale", &SERVED_STALE),
    ("refused_outage", &MISSES_REFUSED_OUTAGE),
    ("query_hits", &QUERY_HITS),
    ("query_misses", &QUERY_MISSES),
    ("query_results_too_big", &QUERY_TOO_BIG),
    ("query_invalidations", &QUERY_INVALIDATIONS),
    ("query_statements_evicted", &QUERY_STATEMENTS_EVICTED),
    ("query_index_full", &QUERY_INDEX_FULL),
    ("query_pipelined", &QUERY_PIPELINED),
    ("misses_on_loop", &MISSES_ON_LOOP),
    ("misses_loop_to_workers", &MISSES_LOOP_TO_WORKERS),
    ("loop_connections_opened", &LOOP_CONNECTIONS_OPENED),
];

/// Every counter's value, in reporting order.
pub fn counters() -> Vec<(&'static str, u64)> {
    NAMED.iter().map(|(n, c)| (*n, c.get())).collect()
}

/// Hits (negative ones included) over all lookups, 0 when there were none.
pub fn hit_ratio() -> f64 {
    let hits = HITS.get() + NEGATIVE_HITS.get();
    let total = hits + MISSES.get();
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

/// PGCACHE.STATS RESET.
pub fn reset() {
    crate::stall::reset();
    for (_, counter) in &NAMED {
        counter.reset();
    }
    for h in &COMMAND_LATENCY {
        h.reset();
    }
    INVALIDATION_APPLY.reset();
    stages::reset();
    for c in &COMMAND_CALLS {
        c.reset();
    }
    for t in tables() {
        t.calls.reset();
        t.hits.reset();
        t.misses.reset();
        t.latency.reset();
        t.pass_through.reset();
    }
}

/// Drops every figure and table at MODULE UNLOAD. glibc keeps a library mapped while a
/// thread has a thread-local destructor of it to run (Redis's main thread does, for ever), so
/// a later MODULE LOAD finds these statics as the last instance left them: a new instance
/// must start from zero like a restarted server.
pub fn forget() {
    reset();
    TABLES.lock().unwrap().clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_floors_round_trip() {
        let mut last = 0;
        for us in 0..100_000u64 {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            last = b;
            assert!(bucket_floor(b) <= us, "{us}");
        }
        for b in 0..BUCKETS - 4 {
            assert_eq!(bucket_of(bucket_floor(b)), b);
        }
    }

    #[test]
    fn percentiles_come_from_the_distribution() {
        let h = Histogram::new();
        for _ in 0..98 {
            h.record(100);
        }
        h.record(10_000);
        h.record(10_000);
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((96..=100).contains(&s.p50_us), "{s:?}");
        assert!((8_000..=10_000).contains(&s.p99_us), "{s:?}");
        assert!((s.avg_us - 298.0).abs() < 0.01);
        h.reset();
        assert_eq!(h.summary().count, 0);
    }

    #[test]
    fn cumulative_counts_are_exact_at_powers_of_two() {
        let h = Histogram::new();
        for us in [0, 1, 3, 4, 7, 8, 1000, 1023, 1024, 5000] {
            h.record(us);
        }
        let (below, count, sum) = h.cumulative_powers_of_two(13);
        assert_eq!(count, 10);
        assert_eq!(sum, 8070);
        // below[k]: values < 2^k
        assert_eq!(below[0], 1);
        assert_eq!(below[1], 2);
        assert_eq!(below[2], 3);
        assert_eq!(below[3], 5);
        assert_eq!(below[4], 6);
        assert_eq!(below[10], 8);
        assert_eq!(below[11], 9);
        assert_eq!(below[13], 10);
    }

    #[test]
    fn tables_are_shared_by_name() {
        let a = table("stats_test_a");
        a.hits.inc();
        assert_eq!(table("stats_test_a").hits.get(), 1);
        assert!(tables().iter().any(|t| t.name == "stats_test_a"));
    }

    #[test]
    fn tracked_commands_are_found_in_any_case() {
        assert_eq!(Tracked::of(&[b"PGCACHE.READ"]), Some(Tracked::Read));
        assert_eq!(Tracked::of(&[b"pgcache.flush"]), Some(Tracked::Flush));
        assert_eq!(Tracked::of(&[b"pgcache.stats"]), None);
        assert_eq!(Tracked::of(&[b"GET"]), None);
        assert_eq!(Tracked::of(&[]), None);
        for command in Tracked::ALL {
            let name = format!("PGCACHE.{}", command.name().to_uppercase());
            assert_eq!(Tracked::of(&[name.as_bytes()]), Some(command));
        }
        for untracked in [
            "pgcache.stats",
            "PGCACHE.HEALTH",
            "pgcache.debug",
            "pgcache.hook",
            "pgcache.slowlog",
            "pgcache.key",
        ] {
            assert_eq!(Tracked::of(&[untracked.as_bytes()]), None, "{untracked}");
        }
    }
}
