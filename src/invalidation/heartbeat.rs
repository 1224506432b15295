//! The freshness prober's heartbeat notifications (notify mode): what `horizon` sends on the
//! invalidation channel and the listener recognises among the triggers' payloads. Several
//! servers may listen on one channel; each counts only its own heartbeats, told apart by a
//! number drawn at start.

use std::sync::atomic::{AtomicU64, Ordering};

/// What starts a heartbeat payload; no trigger payload (JSON) starts so.
const PREFIX: &str = "pgcache:heartbeat ";

/// This process's heartbeats carry this number.
static NONCE: AtomicU64 = AtomicU64::new(0);

/// Draws this process's number (at the prober's start).
pub fn draw(seed: u64) {
    NONCE.store(seed ^ u64::from(std::process::id()), Ordering::SeqCst);
}

/// The payload of heartbeat `number`.
pub fn payload(number: u64) -> String {
    format!("{PREFIX}{} {number}", NONCE.load(Ordering::Relaxed))
}

/// The number of a heartbeat of this process's in a notification's payload, if it is one;
/// `Some(None)` for another server's heartbeat (to be ignored), `None` for any other payload.
pub fn of(payload: &str) -> Option<Option<u64>> {
    let rest = payload.strip_prefix(PREFIX)?;
    let mut parts = rest.split(' ');
    let nonce: Option<u64> = parts.next().and_then(|n| n.parse().ok());
    let number: Option<u64> = parts.next().and_then(|n| n.parse().ok());
    Some(number.filter(|_| nonce == Some(NONCE.load(Ordering::Relaxed))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_process_s_heartbeats_count() {
        NONCE.store(42, Ordering::SeqCst);
        assert_eq!(of(&payload(7)), Some(Some(7)));
        assert_eq!(of("pgcache:heartbeat 41 7"), Some(None));
        assert_eq!(of("pgcache:heartbeat x"), Some(None));
        assert_eq!(of(r#"{"table":"users","keys":[]}"#), None);
    }
}
