//! Draining before MODULE UNLOAD. Redis refuses to unload a module while any client waits
//! on it, so under steady load an unload would be refused for as long as the load lasts.
//! PGCACHE.DRAIN opens a window in which a request that would wait for PostgreSQL is refused
//! at once (hits are still served), so the requests in flight finish and the unload finds
//! none. The window closes by itself: a drain nobody follows with an unload does not leave
//! the cache refusing misses for good.

use crate::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest window one PGCACHE.DRAIN may open.
pub const MAX_SECONDS: u64 = 3600;

/// When the window closes, in milliseconds since the Unix epoch; 0 when none is open.
static UNTIL_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens (or moves the end of) the window to `seconds` from now; 0 closes it.
pub fn open_for(seconds: u64) {
    let until = if seconds == 0 {
        0
    } else {
        now_ms() + seconds * 1000
    };
    UNTIL_MS.store(until, Ordering::SeqCst);
}

/// How long the window stays open, if one is.
pub fn remaining() -> Option<Duration> {
    let until = UNTIL_MS.load(Ordering::Relaxed);
    if until == 0 {
        return None;
    }
    let now = now_ms();
    (until > now).then(|| Duration::from_millis(until - now))
}

/// The error for a request that would wait for PostgreSQL while the window is open.
pub fn refusal() -> Option<Error> {
    let left = remaining()?;
    Some(Error::invalid(format!(
        "draining for MODULE UNLOAD (PGCACHE.DRAIN): requests that need PostgreSQL are \
         refused for {:.0} more seconds; cached rows are still served. Retry then, or end \
         the drain with PGCACHE.DRAIN 0",
        left.as_secs_f64().ceil()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_refuses_until_it_closes() {
        assert!(refusal().is_none());
        open_for(5);
        let e = refusal().expect("refused while open").to_string();
        assert!(e.contains("PGCACHE.DRAIN 0"), "{e}");
        assert!(remaining().unwrap() <= Duration::from_secs(5));
        open_for(0);
        assert!(refusal().is_none() && remaining().is_none());
    }
}
