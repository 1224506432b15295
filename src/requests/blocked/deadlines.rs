//! Answers blocked clients at their deadlines, from a thread of its own. Redis lets any
//! thread unblock a client, so the event loop keeps no timer for them: a client that blocks
//! adds its deadline here (and a worker that answers it takes the deadline away again), and
//! the thread sleeps until the earliest deadline, then answers each client still waiting
//! with the timeout error.
//!
//! The event loop pays for an insertion into an ordered map; it wakes the thread only when
//! the new deadline comes before the one the thread sleeps until, which with one timeout for
//! every request happens only after the thread was idle.

use super::{Answer, Ticket, timeout_error};
use crate::requests::tracked::Timing;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A client's deadline, and its place among clients with the same one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Due {
    at: Instant,
    seq: u64,
}

impl Due {
    pub fn at(at: Instant) -> Due {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Due {
            at,
            seq: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// How long the thread sleeps with no client waiting before it looks again (a deadline set
/// later than that needs no wake-up).
const IDLE: Duration = Duration::from_secs(1);

struct Watch {
    due: BTreeMap<Due, Arc<Ticket>>,
    /// When the sleeping thread will look again; None while it is awake (it looks at the
    /// map before it sleeps).
    sleeping_until: Option<Instant>,
    running: bool,
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    due: BTreeMap::new(),
    sleeping_until: None,
    running: false,
});
static WAKE: Condvar = Condvar::new();
static THREAD: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Watch> {
    WATCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers `ticket` with a timeout at its deadline unless a worker answers it first.
pub(super) fn watch(ticket: &Arc<Ticket>) {
    let mut watch = lock();
    let at = ticket.due.at;
    watch.due.insert(ticket.due, ticket.clone());
    let wake = watch.sleeping_until.is_some_and(|until| at < until);
    drop(watch);
    if wake {
        WAKE.notify_one();
    }
}

/// `ticket` was answered or its block undone: its deadline no longer matters.
pub(super) fn forget(ticket: &Ticket) {
    lock().due.remove(&ticket.due);
}

/// Starts the thread. At load.
pub fn start() -> std::io::Result<()> {
    lock().running = true;
    let thread = std::thread::Builder::new()
        .name("pgcache-deadlines".into())
        .spawn(run);
    match thread {
        Ok(thread) => {
            *THREAD.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
            Ok(())
        }
        Err(e) => {
            lock().running = false;
            Err(e)
        }
    }
}

/// Stops the thread and forgets every deadline. At unload, when no client is blocked.
pub fn stop() {
    lock().running = false;
    WAKE.notify_all();
    if let Some(thread) = THREAD.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = thread.join();
    }
    lock().due.clear();
}

fn run() {
    let mut watch = lock();
    while watch.running {
        let now = Instant::now();
        match watch.due.first_key_value().map(|(due, _)| due.at) {
            Some(at) if at <= now => {
                let later = watch.due.split_off(&Due {
                    at: now,
                    seq: u64::MAX,
                });
                let expired = std::mem::replace(&mut watch.due, later);
                drop(watch);
                crate::error::panic::contain("answering timed-out requests", || {
                    expired.into_values().for_each(|ticket| time_out(&ticket))
                });
                watch = lock();
            }
            next => {
                let until = next.map_or(now + IDLE, |at| at.min(now + IDLE));
                watch.sleeping_until = Some(until);
                watch = WAKE
                    .wait_timeout(watch, until - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                watch.sleeping_until = None;
            }
        }
    }
}

/// Answers a client whose deadline passed with the timeout error, unless a worker answered
/// it meanwhile (then its answer stands).
fn time_out(ticket: &Ticket) {
    if ticket.client.is_done() {
        return;
    }
    let error = timeout_error();
    let _ = ticket.client.unblock(Answer {
        completion: Some(Box::new(move |_| error.into())),
        blocked_at: ticket.blocked_at,
        timing: Timing {
            queued: ticket.blocked_at.elapsed(),
            postgres: Duration::ZERO,
        },
    });
}
