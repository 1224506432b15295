//! Draining before MODULE UNLOAD. Redis refuses to unload a module while any client waits
//! on it, so under steady load an unload would be refused for as long as the load lasts.
//! PGCACHE.DRAIN opens a window in which a request that would wait for PostgreSQL is refused
//! at once (hits are still served), so the requests in flight finish and the unload finds
//! none. The window closes by itself: a drain nobody follows with an unload does not leave
//! the cache refusing misses for good. `PGCACHE.DRAIN ... SOURCE <name>` opens a window for
//! one named source only (before it is removed), the others served as before.

use crate::config::current;
use crate::error::Error;
use crate::model::source::SourceId;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest window one PGCACHE.DRAIN may open.
pub const MAX_SECONDS: u64 = 3600;

/// When the window of every source closes, in milliseconds since the Unix epoch; 0 when
/// none is open. The default source's misses read only this.
static UNTIL_MS: AtomicU64 = AtomicU64::new(0);

/// The windows of single named sources, as `UNTIL_MS`.
static NAMED_UNTIL_MS: Mutex<Vec<(SourceId, u64)>> = Mutex::new(Vec::new());

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens (or moves the end of) the window of every source to `seconds` from now; 0 closes
/// it (and every named source's: a load starts with none open).
pub fn open_for(seconds: u64) {
    UNTIL_MS.store(until(seconds), Ordering::SeqCst);
    if seconds == 0 {
        NAMED_UNTIL_MS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Opens (or moves the end of) the window of named source `source` alone; 0 closes it.
pub fn open_for_source(source: SourceId, seconds: u64) {
    let mut named = NAMED_UNTIL_MS.lock().unwrap_or_else(|e| e.into_inner());
    named.retain(|(id, _)| *id != source);
    if seconds > 0 {
        named.push((source, until(seconds)));
    }
}

fn until(seconds: u64) -> u64 {
    if seconds == 0 {
        0
    } else {
        now_ms() + seconds * 1000
    }
}

/// How long `source`'s requests that need PostgreSQL are refused, if they are: the window of
/// every source, or its own.
pub fn remaining(source: SourceId) -> Option<Duration> {
    let every = left(UNTIL_MS.load(Ordering::Relaxed));
    if source == SourceId::DEFAULT {
        return every;
    }
    let named = NAMED_UNTIL_MS.lock().unwrap_or_else(|e| e.into_inner());
    let own = (named.iter().find(|(id, _)| *id == source)).and_then(|(_, until)| left(*until));
    every.max(own)
}

/// What is left of a window closing at `until`.
fn left(until: u64) -> Option<Duration> {
    let now = now_ms();
    (until > now).then(|| Duration::from_millis(until - now))
}

/// The error for a request of `source` that would wait for PostgreSQL while its window is
/// open.
pub fn refusal(source: SourceId) -> Option<Error> {
    let left = remaining(source)?.as_secs_f64().ceil();
    if left_for_every_source() {
        return Some(Error::invalid(format!(
            "draining for MODULE UNLOAD (PGCACHE.DRAIN): requests that need PostgreSQL are \
             refused for {left:.0} more seconds; cached rows are still served. Retry then, or \
             end the drain with PGCACHE.DRAIN 0"
        )));
    }
    let name = current::name(source).unwrap_or_default();
    Some(Error::invalid(format!(
        "source {name:?} is draining (PGCACHE.DRAIN ... SOURCE {name}): its requests that need \
         PostgreSQL are refused for {left:.0} more seconds; its cached rows are still served. \
         Retry then, or end the drain with PGCACHE.DRAIN 0 SOURCE {name}"
    )))
}

/// Whether the window of every source is open.
fn left_for_every_source() -> bool {
    left(UNTIL_MS.load(Ordering::Relaxed)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_refuses_until_it_closes() {
        let (default, named) = (SourceId::DEFAULT, SourceId::numbered(1007));
        assert!(refusal(default).is_none());
        open_for(5);
        let e = refusal(default).expect("refused while open").to_string();
        assert!(e.contains("PGCACHE.DRAIN 0"), "{e}");
        assert!(remaining(default).unwrap() <= Duration::from_secs(5));
        assert!(
            refusal(named).is_some(),
            "every source's window covers the named"
        );
        open_for(0);
        assert!(refusal(default).is_none() && remaining(default).is_none());

        // A named source's own window leaves the others served.
        open_for_source(named, 5);
        assert!(refusal(named).unwrap().to_string().contains("SOURCE"));
        assert!(refusal(default).is_none() && refusal(SourceId::numbered(1008)).is_none());
        open_for_source(named, 0);
        assert!(refusal(named).is_none());
        open_for_source(named, 5);
        open_for(0);
        assert!(
            refusal(named).is_none(),
            "a load starts with no window open"
        );
    }
}
