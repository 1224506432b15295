//! The state of a feed's NOTIFY listener: its thread, whether it listens, and why it last
//! lost its connection. The listener itself (LISTEN, receiving, handing changes over) is
//! `invalidation::listener`'s.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// One feed's listener: its thread, and what it tells the others.
pub struct Listener {
    pub(in crate::invalidation) stop: AtomicBool,
    pub(in crate::invalidation) connected: AtomicBool,
    /// The first connection attempt since `start` has ended, one way or the other.
    pub(in crate::invalidation) attempted: AtomicBool,
    pub(in crate::invalidation) thread: Mutex<Option<JoinHandle<()>>>,
    /// Why the listener last lost its connection, and when.
    pub(in crate::invalidation) last_loss: Mutex<Option<(std::time::SystemTime, String)>>,
}

impl Listener {
    /// Not started (const, so a `static` holds the default source's).
    pub const fn new() -> Listener {
        Listener {
            stop: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            attempted: AtomicBool::new(false),
            thread: Mutex::new(None),
            last_loss: Mutex::new(None),
        }
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Why the listener last lost its connection and how long ago, if it ever did.
    pub fn last_loss(&self) -> Option<(Duration, String)> {
        let last = self.last_loss.lock().unwrap();
        last.as_ref()
            .map(|(at, why)| (at.elapsed().unwrap_or_default(), why.clone()))
    }
}
