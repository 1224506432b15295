//! Answers blocked clients at their deadlines, from a thread of its own. Redis lets any
//! thread unblock a client, so the event loop keeps no timer for them: a client that blocks
//! adds its deadline to a heap here, and the thread sleeps until the earliest deadline of a
//! client still waiting, then answers each client still waiting with the timeout error.
//!
//! The event loop pays for a push onto the heap (no allocation once it has grown); it wakes
//! the thread only when the new deadline comes before the one the thread sleeps until, which
//! with one timeout for every request happens only after the thread was idle. Answered
//! clients leave the heap when the thread reaches them, or in one pass when they far
//! outnumber the clients still waiting.

use super::{Answer, Ticket, timeout_error};
use crate::requests::tracked::Timing;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
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

    pub fn instant(&self) -> Instant {
        self.at
    }
}

/// How long the thread sleeps with no client waiting before it looks again (a deadline set
/// later than that needs no wake-up).
const IDLE: Duration = Duration::from_secs(1);

/// A deadline in the heap, ordered by its `Due` alone.
struct Deadline(Due, Arc<Ticket>);

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Deadline {}
impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// How many deadlines the thread takes off the heap before it lets go of the lock.
const POPS_PER_LOCK: usize = 256;

struct Watch {
    due: BinaryHeap<Reverse<Deadline>>,
    /// When the sleeping thread will look again; None while it is awake (it looks at the
    /// map before it sleeps).
    sleeping_until: Option<Instant>,
    running: bool,
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    due: BinaryHeap::new(),
    sleeping_until: None,
    running: false,
});
static WAKE: Condvar = Condvar::new();
static THREAD: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Watch> {
    WATCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers `ticket` with a timeout at its deadline unless a worker answers it first.
pub(super) fn watch(ticket: &Arc<Ticket>, waiting: usize) {
    let mut watch = lock();
    if watch.due.len() > 1024 && watch.due.len() > 4 * waiting {
        watch
            .due
            .retain(|Reverse(Deadline(_, t))| !t.client.is_done());
    }
    let at = ticket.due.at;
    watch
        .due
        .push(Reverse(Deadline(ticket.due, ticket.clone())));
    let wake = watch.sleeping_until.is_some_and(|until| at < until);
    drop(watch);
    if wake {
        WAKE.notify_one();
    }
}

/// Starts the thread. At load.
pub fn start() -> std::io::Result<()> {
    lock().running = true;
    let thread = std::thread::Builder::new()
        .name("pgcache-deadlines".into())
        .spawn(|| {
            // A panic must not end the thread: clients would then wait past their deadline.
            while lock().running {
                crate::error::panic::contain("watching deadlines", run);
            }
        });
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
        let mut expired = Vec::new();
        // Clients already answered leave from the top; the rest are due, or the next wait.
        // A bounded number per hold of the lock, which the event loop takes for every miss.
        let mut popped = 0;
        while let Some(Reverse(Deadline(due, ticket))) = watch.due.peek()
            && popped < POPS_PER_LOCK
        {
            if !ticket.client.is_done() && due.at > now {
                break;
            }
            popped += 1;
            if let Some(Reverse(Deadline(_, ticket))) = watch.due.pop()
                && !ticket.client.is_done()
            {
                expired.push(ticket);
            }
        }
        if popped == POPS_PER_LOCK || !expired.is_empty() {
            drop(watch);
            crate::error::panic::contain("answering timed-out requests", || {
                expired.iter().for_each(|ticket| time_out(ticket))
            });
            watch = lock();
            continue;
        }
        let next = watch.due.peek().map(|Reverse(Deadline(due, _))| due.at);
        let until = next.map_or(now + IDLE, |at| at.min(now + IDLE));
        watch.sleeping_until = Some(until);
        watch = WAKE
            .wait_timeout(watch, until.saturating_duration_since(now))
            .unwrap_or_else(|e| e.into_inner())
            .0;
        watch.sleeping_until = None;
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
        source: ticket.source,
        blocked_at: ticket.blocked_at,
        timing: Timing {
            queued: ticket.blocked_at.elapsed(),
            postgres: Duration::ZERO,
        },
        handed: None,
    });
}
