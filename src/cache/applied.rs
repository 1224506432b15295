//! How far the cache reflects PostgreSQL's log: every transaction committed up to this
//! position has been applied to it (replication source; 0/0 otherwise). A read `AFTER` a
//! position the cache has not reached yet may wait a little for it (`wait_for`), on a
//! worker, never on the event loop.
//!
//! `begun` is where a standby must have replayed to answer a miss as the primary would
//! (issue #53, design/53 §3.1): a change set's deletions are applied a slice at a time, so a
//! key may already be invalidated by a transaction the cache has not wholly `applied`.
//! The position of every change set that changes entries is `begun` before its first
//! slice; a fill's ticket taken now (main thread) needs a read that reflects at least it.
//!
//! One position per source (`of`): each database has its own log.

use crate::model::lsn::Lsn;
use crate::model::source::{PartRef, Parts, SourceId};
use crate::redis::role::writable;
use redis_module::Context;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Every source's applied position; the default source's inline.
static APPLIED: Parts<Applied> = Parts::new(Applied::new());

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    APPLIED.install(id, Applied::new());
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    APPLIED.forget_named(id);
}

/// The applied position of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Applied> {
    APPLIED.of(id)
}

/// The position a miss of `source` needs a standby to have replayed to answer it as the
/// primary would (design/53 §3.1): what began being applied here. None where nothing here
/// says: NOTIFY, a feed not streaming, a replica (its primary's deletions arrive ahead of
/// the position it replicates); only the primary answers those. Main thread.
pub fn needed(ctx: &Context, source: SourceId) -> Option<Lsn> {
    let applied = of(source);
    (applied.tracked.load(Ordering::SeqCst) && writable(ctx)).then(|| applied.begun())
}

/// How far one source's log is applied to the cache, and the readers waiting for it.
pub struct Applied {
    applied: AtomicU64,
    /// The latest position whose changes began being applied (never below `applied`).
    begun: AtomicU64,
    /// Whether this server streams the source's log and applies it (`begun` is kept).
    tracked: AtomicBool,
    /// Threads in `wait_for`: only then does `set` take the lock to wake them.
    waiting: AtomicUsize,
    lock: Mutex<()>,
    moved: Condvar,
}

impl Applied {
    /// Nothing applied (const, so a `static` holds the default source's).
    pub const fn new() -> Applied {
        Applied {
            applied: AtomicU64::new(0),
            begun: AtomicU64::new(0),
            tracked: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            moved: Condvar::new(),
        }
    }

    /// The position applied.
    #[inline]
    pub fn get(&self) -> Lsn {
        Lsn(self.applied.load(Ordering::Acquire))
    }

    /// The position the changes applied so far began at: a read reflecting it misses no
    /// change applied to the cache before now, whole or in part. Never moves back (a source
    /// that restarts from an earlier position only asks standbys for more than it needs).
    #[inline]
    pub fn begun(&self) -> Lsn {
        Lsn(self.begun.load(Ordering::SeqCst))
    }

    /// Whether the source's log streams to this server, which applies it (`needed`).
    pub fn track(&self, streaming: bool) {
        self.tracked.store(streaming, Ordering::SeqCst);
    }

    /// The changes up to `lsn` are about to be applied (main thread, before their first
    /// slice).
    pub fn begin(&self, lsn: Lsn) {
        self.begun.fetch_max(lsn.0, Ordering::SeqCst);
    }

    /// The cache now reflects the log up to `lsn` (or, after a restart of the source, only up
    /// to it). Wakes the readers waiting for it.
    pub fn set(&self, lsn: Lsn) {
        self.begin(lsn);
        self.applied.store(lsn.0, Ordering::Release);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.moved.notify_all();
        }
    }

    /// Waits at most `limit` for the cache to reach `lsn`; whether it has.
    pub fn wait_for(&self, lsn: Lsn, limit: Duration) -> bool {
        if self.get() >= lsn {
            return true;
        }
        let until = Instant::now() + limit;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let reached = loop {
            if self.get() >= lsn {
                break true;
            }
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break false;
            };
            guard = self
                .moved
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        drop(guard);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begun_leads_applied_and_never_moves_back() {
        let applied = Applied::new();
        applied.begin(Lsn(300));
        assert_eq!((applied.get(), applied.begun()), (Lsn(0), Lsn(300)));
        applied.set(Lsn(200));
        assert_eq!(
            applied.begun(),
            Lsn(300),
            "a change set begun still needs its end"
        );
        applied.set(Lsn(400));
        assert_eq!(applied.begun(), Lsn(400), "applied is begun too");
        applied.set(Lsn(0));
        assert_eq!(
            applied.begun(),
            Lsn(400),
            "a restart from less asks no less"
        );
    }

    #[test]
    fn a_reader_is_woken_when_the_position_is_reached_and_gives_up_at_its_limit() {
        let applied = Applied::new();
        applied.set(Lsn(100));
        assert!(applied.wait_for(Lsn(100), Duration::ZERO));
        assert!(!applied.wait_for(Lsn(101), Duration::from_millis(5)));
        assert!(
            !Applied::new().wait_for(Lsn(100), Duration::ZERO),
            "another source's position is its own"
        );
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| applied.wait_for(Lsn(200), Duration::from_secs(30)));
            while applied.waiting.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            applied.set(Lsn(200));
            assert!(reader.join().unwrap());
        });
    }
}
