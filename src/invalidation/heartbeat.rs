//! The freshness prober's heartbeat notifications (notify mode): what `horizon` sends on the
//! invalidation channel and the listener recognises among the triggers' payloads. Several
//! servers may listen on one channel; each counts only its own heartbeats, told apart by a
//! number drawn at start.

use crate::model::source::SourceId;
use std::sync::atomic::{AtomicU64, Ordering};

/// What starts a heartbeat payload; no trigger payload (JSON) starts so.
const PREFIX: &str = "pgcache:heartbeat ";

/// One feed's heartbeats: the number they carry, so that two sources LISTENing on one
/// database's channel count only their own.
pub struct Heartbeats {
    nonce: AtomicU64,
}

impl Heartbeats {
    /// No number drawn yet (const, so a `static` holds the default source's).
    pub const fn new() -> Heartbeats {
        Heartbeats {
            nonce: AtomicU64::new(0),
        }
    }

    /// Draws the number of `source`'s feed (at the prober's start): the source's number
    /// mixed in, so that two probers started in the same microsecond differ.
    pub fn draw(&self, seed: u64, source: SourceId) {
        let number = seed ^ u64::from(std::process::id()) ^ u64::from(source.number());
        self.nonce.store(number, Ordering::SeqCst);
    }

    /// The payload of heartbeat `number`.
    pub fn payload(&self, number: u64) -> String {
        format!("{PREFIX}{} {number}", self.nonce.load(Ordering::Relaxed))
    }

    /// The number of a heartbeat of this feed's in a notification's payload, if it is one;
    /// `Some(None)` for another's heartbeat (to be ignored), `None` for any other payload.
    pub fn of(&self, payload: &str) -> Option<Option<u64>> {
        let rest = payload.strip_prefix(PREFIX)?;
        let mut parts = rest.split(' ');
        let nonce: Option<u64> = parts.next().and_then(|n| n.parse().ok());
        let number: Option<u64> = parts.next().and_then(|n| n.parse().ok());
        Some(number.filter(|_| nonce == Some(self.nonce.load(Ordering::Relaxed))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_feed_s_heartbeats_count() {
        let (mine, other) = (Heartbeats::new(), Heartbeats::new());
        mine.nonce.store(42, Ordering::SeqCst);
        other.nonce.store(41, Ordering::SeqCst);
        assert_eq!(mine.of(&mine.payload(7)), Some(Some(7)));
        assert_eq!(mine.of(&other.payload(7)), Some(None));
        assert_eq!(mine.of("pgcache:heartbeat x"), Some(None));
        assert_eq!(mine.of(r#"{"table":"users","keys":[]}"#), None);
    }
}
