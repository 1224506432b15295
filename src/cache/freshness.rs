//! How fresh the cache is known to be: the freshness horizon, the last moment at which every
//! change PostgreSQL had committed was provably applied to the cache. Its age bounds how stale
//! any hit can be, whatever the entry: a change committed after the horizon may not have been
//! applied yet, one committed before it has.
//!
//! The horizon moves by probes (`invalidation::horizon`): at a known moment a probe takes a
//! *mark* from PostgreSQL that the change feed must carry past it (the log's insert position,
//! or a heartbeat notification), and once the main thread has applied the feed through that
//! mark, the probe's moment becomes the horizon. Marks are reached in the order they were
//! taken, so a probe reached vouches for every older one too.
//!
//! Reads compare the horizon's age with their bound (`max_staleness_ms`, or the call's
//! `MAXSTALE`): one clock read Redis already made for the command, two loads and a compare.

use crate::model::lsn::Lsn;
use crate::redis::clock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The horizon, in microseconds since the Unix epoch, or `UNTRACKED`.
static HORIZON_US: AtomicU64 = AtomicU64::new(UNTRACKED);
/// No feed vouches for the cache here (invalidation off): its freshness is its TTL's, as
/// before pgcache had a horizon.
const UNTRACKED: u64 = u64::MAX;

/// What the feed must carry past for a probe to be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The replication stream applied the log through this position.
    Lsn(Lsn),
    /// The listener's heartbeat notification of this number was applied.
    Heartbeat(u64),
}

impl Mark {
    fn reached_by(self, applied: Mark) -> bool {
        match (self, applied) {
            (Mark::Lsn(mark), Mark::Lsn(applied)) => applied >= mark,
            (Mark::Heartbeat(mark), Mark::Heartbeat(applied)) => applied >= mark,
            _ => false,
        }
    }
}

/// A probe waiting for its mark, taken at `at_us`.
struct Probe {
    mark: Mark,
    at_us: u64,
}

/// Probes sent and not reached yet, oldest first; a stalled feed keeps only the newest few.
static PENDING: Mutex<VecDeque<Probe>> = Mutex::new(VecDeque::new());
const PENDING_MAX: usize = 64;

/// Whether a read bounded to `bound_ms` (negative: unbounded) may be answered from the
/// cache: the horizon is at most that old. Main thread (Redis's cached clock).
#[inline]
pub fn vouched(bound_ms: i64) -> bool {
    bound_ms < 0 || age_us(clock::cached_now_us()) <= (bound_ms as u64).saturating_mul(1000)
}

/// `vouched`, off the main thread (the system clock).
pub fn vouched_now(bound_ms: i64) -> bool {
    bound_ms < 0 || age_us(clock::now_us()) <= (bound_ms as u64).saturating_mul(1000)
}

/// The horizon's age at `now_us`; 0 when untracked (nothing to bound).
#[inline]
fn age_us(now_us: u64) -> u64 {
    match HORIZON_US.load(Relaxed) {
        UNTRACKED => 0,
        horizon => now_us.saturating_sub(horizon),
    }
}

/// The horizon's age now (any thread); None when no feed vouches for the cache here or no
/// probe has been reached yet.
pub fn age() -> Option<std::time::Duration> {
    match HORIZON_US.load(Relaxed) {
        UNTRACKED | 0 => None,
        horizon => Some(std::time::Duration::from_micros(
            clock::now_us().saturating_sub(horizon),
        )),
    }
}

/// The horizon's age in whole milliseconds, rounded up, as a reply tells it; -1 when nothing
/// bounds it (no feed vouches for this node, or none has yet). Main thread.
pub fn age_ms() -> i64 {
    match HORIZON_US.load(Relaxed) {
        UNTRACKED | 0 => -1,
        horizon => clock::cached_now_us()
            .saturating_sub(horizon)
            .div_ceil(1000) as i64,
    }
}

/// Whether a feed vouches for the cache here (a probe runs).
pub fn tracked() -> bool {
    HORIZON_US.load(Relaxed) != UNTRACKED
}

/// A probe starts vouching for this node: the horizon starts at the epoch (infinitely old)
/// until its first mark is reached.
pub fn track() {
    let _ = HORIZON_US.compare_exchange(UNTRACKED, 0, Relaxed, Relaxed);
}

/// No feed vouches for this node any more (the probe stopped): reads are bounded by TTLs only.
pub fn untrack() {
    HORIZON_US.store(UNTRACKED, Relaxed);
    PENDING.lock().unwrap().clear();
}

/// A probe took `mark` at `at_us`: the horizon moves there once the feed is applied past it.
pub fn probe_sent(mark: Mark, at_us: u64) {
    let mut pending = PENDING.lock().unwrap();
    if pending.len() == PENDING_MAX {
        pending.pop_front();
    }
    pending.push_back(Probe { mark, at_us });
}

/// The feed has been applied through `applied`: every probe whose mark it passed is
/// reached, and the horizon moves to the latest of them.
pub fn applied(applied: Mark) {
    let mut pending = PENDING.lock().unwrap();
    let mut reached = None;
    while let Some(probe) = pending.front() {
        if !probe.mark.reached_by(applied) {
            break;
        }
        reached = Some(probe.at_us);
        pending.pop_front();
    }
    drop(pending);
    if let Some(at_us) = reached {
        advance(at_us);
    }
}

/// Moves the horizon to `at_us`, never back.
fn advance(at_us: u64) {
    let _ = HORIZON_US.fetch_update(Relaxed, Relaxed, |horizon| match horizon {
        UNTRACKED => None,
        horizon => Some(horizon.max(at_us)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_moves_to_the_latest_probe_the_feed_passed_and_never_back() {
        untrack();
        assert!(vouched(0), "untracked: nothing bounds a hit");
        assert_eq!(age(), None);
        track();
        assert!(!vouched(1000), "no probe reached yet");
        assert_eq!(age(), None);
        assert!(vouched(-1), "unbounded reads are always served");
        let now = clock::now_us();
        probe_sent(Mark::Lsn(Lsn(100)), now - 3_000_000);
        probe_sent(Mark::Lsn(Lsn(200)), now - 2_000_000);
        probe_sent(Mark::Lsn(Lsn(300)), now - 1_000_000);
        applied(Mark::Lsn(Lsn(250)));
        let age = age().unwrap().as_millis();
        assert!((2000..2500).contains(&age), "{age}");
        assert!(!vouched(1500) && vouched(5000));
        applied(Mark::Heartbeat(u64::MAX));
        assert!(age_us(now) >= 2_000_000, "a heartbeat is not a position");
        applied(Mark::Lsn(Lsn(300)));
        assert!(vouched(1500));
        advance(now - 10_000_000);
        assert!(vouched(1500), "the horizon never moves back");
        untrack();
        assert!(vouched(0));
    }
}
