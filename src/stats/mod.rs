//! What pgcache has done, for PGCACHE.STATS, the `pgcache` INFO section and the metrics
//! endpoint: counters and per-command and per-table latency histograms, all lock-free
//! atomics (the hit path pays one relaxed increment per counter it touches). Each source has
//! figures of its own (`SourceStats`, reached by its number: `of`); the commands' calls and
//! latency are the server's (a call is counted before its source is known).

pub mod slowlog;
mod source;
pub mod stages;

pub use source::{SourceStats, TableStats};

use crate::model::source::{PartRef, Parts, SourceId};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

/// Every source's figures; the default source's inline, so the hit path bumps its counters
/// as it bumped statics.
static FIGURES: Parts<SourceStats> = Parts::new(SourceStats::new());

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    FIGURES.install(id, SourceStats::new());
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    FIGURES.forget_named(id);
}

/// The figures of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, SourceStats> {
    FIGURES.of(id)
}

/// PGCACHE.STATS RESET: the server's figures and the sources'.
pub fn reset() {
    reset_server_wide();
    of(SourceId::DEFAULT).reset();
}

/// Drops every figure and table at MODULE UNLOAD. glibc keeps a library mapped while a
/// thread has a thread-local destructor of it to run (Redis's main thread does, for ever), so
/// a later MODULE LOAD finds these statics as the last instance left them: a new instance
/// must start from zero like a restarted server.
pub fn forget() {
    reset_server_wide();
    of(SourceId::DEFAULT).forget();
}

/// The figures that are the server's, not a source's: the stall probe and the commands'.
fn reset_server_wide() {
    crate::stall::reset();
    for h in &COMMAND_LATENCY {
        h.reset();
    }
    for c in &COMMAND_CALLS {
        c.reset();
    }
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
