//! The stall probe: how long pgcache's callbacks hold Redis's event loop. Every callback Redis
//! makes into pgcache (a slice of invalidations or of a flush, a wake-up, a blocked client's
//! reply, a timer) runs through `error::panic::guard`, which reports its duration here; STATS, INFO
//! and the metrics endpoint show the longest since load or RESET, and what it was.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

static LONGEST_US: AtomicU64 = AtomicU64::new(0);
static LONGEST_WHAT: Mutex<&str> = Mutex::new("");

/// Notes that the callback `what` held the event loop for `elapsed`.
pub fn callback_took(what: &'static str, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    // The lock is taken only for a new longest, which soon stops happening.
    if us > LONGEST_US.fetch_max(us, Relaxed) {
        *LONGEST_WHAT.lock().unwrap() = what;
    }
}

/// The longest callback's duration in µs, and what it was doing.
pub fn longest() -> (u64, &'static str) {
    (LONGEST_US.load(Relaxed), *LONGEST_WHAT.lock().unwrap())
}

pub fn reset() {
    LONGEST_US.store(0, Relaxed);
    *LONGEST_WHAT.lock().unwrap() = "";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_longest_and_its_name_until_reset() {
        reset();
        callback_took("a", Duration::from_micros(300));
        callback_took("b", Duration::from_micros(100));
        assert_eq!(longest(), (300, "a"));
        callback_took("c", Duration::from_millis(2));
        assert_eq!(longest(), (2000, "c"));
        reset();
        assert_eq!(longest(), (0, ""));
    }
}
