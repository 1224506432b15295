//! Fault injection for tests (PGCACHE.DEBUG FILLS HOLD/STALL/RELEASE/HELD): holds fetched
//! rows on the worker before they are handed back, to force "an invalidation arrives while a
//! fill is in flight" (HOLD) or "a fill comes back after its client timed out" (STALL).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const RELEASED: u8 = 0;
const TO_DEADLINE: u8 = 1;
const PAST_DEADLINE: u8 = 2;

/// How far past its deadline a stalled fill is held if nobody releases it, so a test that
/// forgets RELEASE cannot wedge the workers.
const STALL_CAP: Duration = Duration::from_secs(10);

static MODE: AtomicU8 = AtomicU8::new(RELEASED);
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Holds fetched rows until RELEASE or their request's deadline.
pub fn hold() {
    MODE.store(TO_DEADLINE, Ordering::SeqCst);
}

/// Holds fetched rows, and every other answer a worker hands back, until RELEASE, past
/// their request's deadline.
pub fn stall() {
    MODE.store(PAST_DEADLINE, Ordering::SeqCst);
}

pub fn release() {
    MODE.store(RELEASED, Ordering::SeqCst);
}

/// Whether answers are held or stalled: the event loop, which must never wait, then leaves
/// misses to the workers, which hold them.
pub fn active() -> bool {
    MODE.load(Ordering::SeqCst) != RELEASED
}

/// Fills waiting at the hold point.
pub fn held() -> usize {
    HELD.load(Ordering::SeqCst)
}

/// Waits here while answers are stalled (not while fills are only held): workers call it
/// before handing back the answer of other work, such as a MULTIREAD's rows.
pub fn stall_point(deadline: Instant) {
    if MODE.load(Ordering::SeqCst) == PAST_DEADLINE {
        hold_point(deadline);
    }
}

/// Waits here while fills are held. Workers call it between fetching rows and handing them
/// back.
pub fn hold_point(deadline: Instant) {
    let until = match MODE.load(Ordering::SeqCst) {
        RELEASED => return,
        TO_DEADLINE => deadline,
        _ => deadline + STALL_CAP,
    };
    HELD.fetch_add(1, Ordering::SeqCst);
    while MODE.load(Ordering::SeqCst) != RELEASED && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    HELD.fetch_sub(1, Ordering::SeqCst);
}
