//! Fault injection for tests (PGCACHE.DEBUG FILLS HOLD/RELEASE/HELD): holds fetched rows on
//! the worker before they are handed back, to force "an invalidation arrives while a fill is
//! in flight".

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static HOLD: AtomicBool = AtomicBool::new(false);
static HELD: AtomicUsize = AtomicUsize::new(0);

pub fn set_hold(hold: bool) {
    HOLD.store(hold, Ordering::SeqCst);
}

/// Fills waiting at the hold point.
pub fn held() -> usize {
    HELD.load(Ordering::SeqCst)
}

/// Waits here while fills are held (never past `deadline`). Workers call it between
/// fetching rows and handing them back.
pub fn hold_point(deadline: Instant) {
    if !HOLD.load(Ordering::Relaxed) {
        return;
    }
    HELD.fetch_add(1, Ordering::SeqCst);
    while HOLD.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    HELD.fetch_sub(1, Ordering::SeqCst);
}
