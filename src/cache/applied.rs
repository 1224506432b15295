//! How far the cache reflects PostgreSQL's log: every transaction committed up to this
//! position has been applied to it (replication source; 0/0 otherwise). A read `AFTER` a
//! position the cache has not reached yet may wait a little for it (`wait_for`), on a
//! worker, never on the event loop.

use crate::model::lsn::Lsn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

static APPLIED: AtomicU64 = AtomicU64::new(0);
/// Threads in `wait_for`: only then does `set` take the lock to wake them.
static WAITING: AtomicUsize = AtomicUsize::new(0);
static LOCK: Mutex<()> = Mutex::new(());
static MOVED: Condvar = Condvar::new();

/// The position applied.
#[inline]
pub fn get() -> Lsn {
    Lsn(APPLIED.load(Ordering::Acquire))
}

/// The cache now reflects the log up to `lsn` (or, after a restart of the source, only up
/// to it). Wakes the readers waiting for it.
pub fn set(lsn: Lsn) {
    APPLIED.store(lsn.0, Ordering::Release);
    if WAITING.load(Ordering::SeqCst) > 0 {
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        MOVED.notify_all();
    }
}

/// Waits at most `limit` for the cache to reach `lsn`; whether it has.
pub fn wait_for(lsn: Lsn, limit: Duration) -> bool {
    if get() >= lsn {
        return true;
    }
    let until = Instant::now() + limit;
    WAITING.fetch_add(1, Ordering::SeqCst);
    let mut guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let reached = loop {
        if get() >= lsn {
            break true;
        }
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            break false;
        };
        guard = MOVED
            .wait_timeout(guard, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    };
    drop(guard);
    WAITING.fetch_sub(1, Ordering::SeqCst);
    reached
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_is_woken_when_the_position_is_reached_and_gives_up_at_its_limit() {
        set(Lsn(100));
        assert!(wait_for(Lsn(100), Duration::ZERO));
        assert!(!wait_for(Lsn(101), Duration::from_millis(5)));
        let reader = std::thread::spawn(|| wait_for(Lsn(200), Duration::from_secs(30)));
        while WAITING.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        set(Lsn(200));
        assert!(reader.join().unwrap());
    }
}
