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
//!
//! One horizon per source (`of`): each source's feed vouches for its own entries only, so a
//! frozen database ages its own horizon and no other's (design/53 §1.3).

use crate::model::lsn::Lsn;
use crate::model::source::{PartRef, Parts, SourceId};
use crate::redis::clock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Every source's horizon; the default source's inline, so a hit reads it as it read the
/// statics before.
static HORIZONS: Parts<Horizon> = Parts::new(Horizon::new());

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    HORIZONS.install(id, Horizon::new());
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    HORIZONS.forget_named(id);
}

/// The horizon of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Horizon> {
    HORIZONS.of(id)
}

/// How fresh one source's entries are known to be.
pub struct Horizon {
    /// The horizon, in microseconds since the Unix epoch, or `UNTRACKED`.
    horizon_us: AtomicU64,
    /// Probes sent and not reached yet, oldest first; a stalled feed keeps only the newest
    /// few.
    pending: Mutex<VecDeque<Probe>>,
}
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

const PENDING_MAX: usize = 64;

impl Horizon {
    /// Untracked (const, so a `static` holds the default source's).
    pub const fn new() -> Horizon {
        Horizon {
            horizon_us: AtomicU64::new(UNTRACKED),
            pending: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether a read bounded to `bound_ms` (negative: unbounded) may be answered from the
    /// cache: the horizon is at most that old. Main thread (Redis's cached clock).
    #[inline]
    pub fn vouched(&self, bound_ms: i64) -> bool {
        bound_ms < 0
            || self.age_us(clock::cached_now_us()) <= (bound_ms as u64).saturating_mul(1000)
    }

    /// `vouched`, off the main thread (the system clock).
    pub fn vouched_now(&self, bound_ms: i64) -> bool {
        bound_ms < 0 || self.age_us(clock::now_us()) <= (bound_ms as u64).saturating_mul(1000)
    }

    /// The horizon's age at `now_us`; 0 when untracked (nothing to bound).
    #[inline]
    fn age_us(&self, now_us: u64) -> u64 {
        match self.horizon_us.load(Relaxed) {
            UNTRACKED => 0,
            horizon => now_us.saturating_sub(horizon),
        }
    }

    /// The horizon's age now (any thread); None when no feed vouches for the cache here or no
    /// probe has been reached yet.
    pub fn age(&self) -> Option<std::time::Duration> {
        match self.horizon_us.load(Relaxed) {
            UNTRACKED | 0 => None,
            horizon => Some(std::time::Duration::from_micros(
                clock::now_us().saturating_sub(horizon),
            )),
        }
    }

    /// The horizon's age in whole milliseconds, rounded up, as a reply tells it; -1 when nothing
    /// bounds it (no feed vouches for this node, or none has yet). Main thread.
    pub fn age_ms(&self) -> i64 {
        match self.horizon_us.load(Relaxed) {
            UNTRACKED | 0 => -1,
            horizon => clock::cached_now_us()
                .saturating_sub(horizon)
                .div_ceil(1000) as i64,
        }
    }

    /// Whether a feed vouches for the cache here (a probe runs).
    pub fn tracked(&self) -> bool {
        self.horizon_us.load(Relaxed) != UNTRACKED
    }

    /// A probe starts vouching for this node: the horizon starts at the epoch (infinitely old)
    /// until its first mark is reached.
    pub fn track(&self) {
        let _ = self
            .horizon_us
            .compare_exchange(UNTRACKED, 0, Relaxed, Relaxed);
    }

    /// No feed vouches for this node any more (the probe stopped): reads are bounded by TTLs only.
    pub fn untrack(&self) {
        self.horizon_us.store(UNTRACKED, Relaxed);
        self.pending.lock().unwrap().clear();
    }

    /// A probe took `mark` at `at_us`: the horizon moves there once the feed is applied past it.
    pub fn probe_sent(&self, mark: Mark, at_us: u64) {
        let mut pending = self.pending.lock().unwrap();
        if pending.len() == PENDING_MAX {
            pending.pop_front();
        }
        pending.push_back(Probe { mark, at_us });
    }

    /// The feed has been applied through `applied`: every probe whose mark it passed is
    /// reached, and the horizon moves to the latest of them.
    pub fn applied(&self, applied: Mark) {
        let mut pending = self.pending.lock().unwrap();
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
            self.advance(at_us);
        }
    }

    /// Moves the horizon to `at_us`, never back.
    fn advance(&self, at_us: u64) {
        let _ = self
            .horizon_us
            .fetch_update(Relaxed, Relaxed, |horizon| match horizon {
                UNTRACKED => None,
                horizon => Some(horizon.max(at_us)),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_moves_to_the_latest_probe_the_feed_passed_and_never_back() {
        let h = Horizon::new();
        h.untrack();
        assert!(h.vouched(0), "untracked: nothing bounds a hit");
        assert_eq!(h.age(), None);
        h.track();
        assert!(!h.vouched(1000), "no probe reached yet");
        assert_eq!(h.age(), None);
        assert!(h.vouched(-1), "unbounded reads are always served");
        let now = clock::now_us();
        h.probe_sent(Mark::Lsn(Lsn(100)), now - 3_000_000);
        h.probe_sent(Mark::Lsn(Lsn(200)), now - 2_000_000);
        h.probe_sent(Mark::Lsn(Lsn(300)), now - 1_000_000);
        h.applied(Mark::Lsn(Lsn(250)));
        let age = h.age().unwrap().as_millis();
        assert!((2000..2500).contains(&age), "{age}");
        assert!(!h.vouched(1500) && h.vouched(5000));
        h.applied(Mark::Heartbeat(u64::MAX));
        assert!(h.age_us(now) >= 2_000_000, "a heartbeat is not a position");
        h.applied(Mark::Lsn(Lsn(300)));
        assert!(h.vouched(1500));
        h.advance(now - 10_000_000);
        assert!(h.vouched(1500), "the horizon never moves back");
        h.untrack();
        assert!(h.vouched(0));
    }

    /// Each source's horizon is its own: one reached by its feed vouches for no other.
    #[test]
    fn horizons_do_not_share_state() {
        let (a, b) = (Horizon::new(), Horizon::new());
        a.track();
        b.track();
        let now = clock::now_us();
        a.probe_sent(Mark::Heartbeat(1), now);
        b.applied(Mark::Heartbeat(1));
        assert!(!b.vouched_now(1000) && !a.vouched_now(1000));
        a.applied(Mark::Heartbeat(1));
        assert!(a.vouched_now(1000) && !b.vouched_now(1000));
        b.untrack();
        assert!(a.tracked() && !b.tracked());
    }
}
