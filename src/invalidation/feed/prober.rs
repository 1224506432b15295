//! The state of a feed's freshness prober: its thread, and the failure it last logged. The
//! prober itself (what it asks PostgreSQL, how it moves the horizon) is
//! `invalidation::horizon`'s.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

/// One feed's prober: a frozen PostgreSQL's `PATIENCE` must not age another source's
/// horizon.
pub struct Prober {
    pub(in crate::invalidation) stop: AtomicBool,
    pub(in crate::invalidation) thread: Mutex<Option<JoinHandle<()>>>,
    /// The last failure logged, so a long outage logs once, not ten times a second.
    pub(in crate::invalidation) last_failure: Mutex<Option<String>>,
}

impl Prober {
    /// Not started (const, so a `static` holds the default source's).
    pub const fn new() -> Prober {
        Prober {
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            last_failure: Mutex::new(None),
        }
    }
}
