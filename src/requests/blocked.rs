//! Blocked clients: blocking one, answering it exactly once from any thread, and the
//! callbacks Redis runs on the main thread (reply, timeout, free).
//!
//! Timeouts are pgcache's own, not Redis's: when a worker's `RedisModule_UnblockClient`
//! and Redis's timeout of the same client meet in one event-loop turn, Redis 7.0 unblocks
//! the client without calling either callback, and the client never gets a reply. So
//! clients block without a Redis timeout; a timer on the main thread answers those whose
//! deadline passed, and whichever of it and the worker comes first (one atomic swap) is the
//! one that unblocks the client.

use crate::config::current;
use crate::error::Error;
use crate::error::panic::{catch, catch_result};
use crate::redis::args::Args;
use crate::redis::blocking::{self, Blocked, Unblocked};
use crate::requests::reply::{self, Reply};
use crate::requests::tracked::{self, Timing};
use crate::stats::Tracked;
use redis_module::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs on the main thread with the blocked client's context and returns its reply.
pub type Completion = Box<dyn FnOnce(&Context) -> Reply + Send>;

/// Clients blocked by us and not yet released (aborted, or their completion freed by
/// Redis). While any exist, Redis may still call into this library.
static WAITING: AtomicUsize = AtomicUsize::new(0);

pub fn waiting() -> usize {
    WAITING.load(Ordering::SeqCst)
}

/// What the worker and the deadline timer share of one blocked client: Redis's handle,
/// which whichever of them comes first unblocks.
struct Ticket {
    client: Blocked<Answer>,
    blocked_at: Instant,
}

/// A blocked client's handle. Redis allows `UnblockClient` from any thread; `answer`
/// consumes the handle, so each client is answered once.
pub struct BlockedClient {
    ticket: Arc<Ticket>,
    /// When the client blocked: a call that waits is timed from here to its reply.
    blocked_at: Instant,
    /// When a worker took the job: splits the wait into queue and PostgreSQL time.
    picked: Option<Instant>,
}

/// What Redis holds for an answered client until its reply callback runs.
struct Answer {
    completion: Option<Completion>,
    blocked_at: Instant,
    timing: Timing,
}
impl BlockedClient {
    /// Blocks the client of `ctx` for at most `timeout_ms`. Main thread only.
    pub fn block(ctx: &Context, timeout_ms: u64) -> BlockedClient {
        // No Redis timeout: the deadline is watched here (see the module's doc).
        let client = blocking::block(ctx);
        WAITING.fetch_add(1, Ordering::SeqCst);
        let blocked_at = Instant::now();
        let ticket = Arc::new(Ticket { client, blocked_at });
        deadlines::watch(ctx, blocked_at + Duration::from_millis(timeout_ms), &ticket);
        BlockedClient {
            ticket,
            blocked_at,
            picked: None,
        }
    }

    /// Notes that a worker started on this client's job (the first call counts).
    pub fn picked(&mut self) {
        self.picked.get_or_insert_with(Instant::now);
    }

    /// Undoes `block` for a client that never reached a worker. Main thread only (so the
    /// deadline timer, which runs there too, has not answered it).
    pub fn abort(self) {
        if self.ticket.client.abort() {
            WAITING.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Hands the completion to Redis, which runs it on the main thread (or frees it unrun
    /// if the client left meanwhile). A client already answered for its deadline gets
    /// nothing more; the completion is then dropped on the main thread, where what it holds
    /// (a fill's waiters) expects to be.
    pub fn answer(self, completion: Completion) {
        if self.ticket.client.is_done() {
            late::drop_on_main_thread(completion);
            return;
        }
        let now = Instant::now();
        let timing = match self.picked {
            Some(picked) => Timing {
                queued: picked.saturating_duration_since(self.blocked_at),
                postgres: now.saturating_duration_since(picked),
            },
            None => Timing {
                queued: now.saturating_duration_since(self.blocked_at),
                postgres: Duration::ZERO,
            },
        };
        let answer = Answer {
            completion: Some(completion),
            blocked_at: self.blocked_at,
            timing,
        };
        if let Err(mut answer) = self.ticket.client.unblock(answer)
            && let Some(completion) = answer.completion.take()
        {
            late::drop_on_main_thread(completion);
        }
    }
}

/// The timeout every client whose deadline passed gets.
fn timeout_error() -> Error {
    Error::timeout(format!(
        "request timed out after {} ms waiting for PostgreSQL; check that it is \
             reachable, or raise pgcache.request_timeout_ms",
        current::request_timeout_ms()
    ))
}

/// Answers blocked clients at their deadlines, from a timer on the main thread.
mod deadlines {
    use super::{Answer, Ticket, WAITING, timeout_error};
    use crate::requests::tracked::Timing;
    use redis_module::{Context, RedisModuleTimerID};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// A client's deadline; ordered by time, then by when it was watched.
    struct Due {
        at: Instant,
        seq: u64,
        ticket: Arc<Ticket>,
    }
    impl PartialEq for Due {
        fn eq(&self, other: &Self) -> bool {
            (self.at, self.seq) == (other.at, other.seq)
        }
    }
    impl Eq for Due {}
    impl PartialOrd for Due {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Due {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            (self.at, self.seq).cmp(&(other.at, other.seq))
        }
    }

    #[derive(Default)]
    struct Watch {
        due: BinaryHeap<Reverse<Due>>,
        seq: u64,
        /// Our pending timers: (token, id, when it fires). Redis refuses MODULE UNLOAD while
        /// a module's timer is pending, so they are stopped once no client waits.
        timers: Vec<(u64, RedisModuleTimerID, Instant)>,
    }

    /// Touched on the main thread only; the mutex is never contended.
    static WATCH: Mutex<Option<Watch>> = Mutex::new(None);

    fn with<R>(f: impl FnOnce(&mut Watch) -> R) -> R {
        let mut watch = WATCH.lock().unwrap_or_else(|e| e.into_inner());
        f(watch.get_or_insert_with(Watch::default))
    }

    /// Answers `ticket` with a timeout at `at` unless a worker answers first. Main thread.
    pub(super) fn watch(ctx: &Context, at: Instant, ticket: &Arc<Ticket>) {
        with(|watch| {
            // Answered clients leave the heap only when their deadline comes: drop them in
            // one pass when they far outnumber the clients still waiting.
            let waiting = WAITING.load(Ordering::Relaxed);
            if watch.due.len() > 1024 && watch.due.len() > 4 * waiting {
                watch
                    .due
                    .retain(|Reverse(due)| !due.ticket.client.is_done());
            }
            watch.seq += 1;
            let seq = watch.seq;
            watch.due.push(Reverse(Due {
                at,
                seq,
                ticket: ticket.clone(),
            }));
            arm(ctx, watch, at);
        });
    }

    /// Makes sure a timer fires by `at`.
    fn arm(ctx: &Context, watch: &mut Watch, at: Instant) {
        if watch.timers.iter().any(|(_, _, fires)| *fires <= at) {
            return;
        }
        watch.seq += 1;
        let token = watch.seq;
        // Rounded up: firing a moment early would find nothing due and re-arm.
        let delay = at.saturating_duration_since(Instant::now()) + Duration::from_millis(1);
        let id = ctx.create_timer(delay, fire, token);
        watch.timers.push((token, id, at));
    }

    fn fire(ctx: &Context, token: u64) {
        crate::error::panic::guard("answering timed-out requests", || {
            let expired: Vec<Arc<Ticket>> = with(|watch| {
                watch.timers.retain(|(t, _, _)| *t != token);
                let now = Instant::now();
                let mut expired = Vec::new();
                while let Some(Reverse(due)) = watch.due.peek()
                    && due.at <= now
                {
                    let Some(Reverse(due)) = watch.due.pop() else {
                        break;
                    };
                    expired.push(due.ticket);
                }
                if let Some(next) = watch.due.peek().map(|Reverse(due)| due.at) {
                    arm(ctx, watch, next);
                }
                expired
            });
            for ticket in expired.into_iter().filter(|t| !t.client.is_done()) {
                let error = timeout_error();
                // A worker that answered meanwhile won: its answer stands.
                let _ = ticket.client.unblock(Answer {
                    completion: Some(Box::new(move |_| error.into())),
                    blocked_at: ticket.blocked_at,
                    timing: Timing {
                        queued: ticket.blocked_at.elapsed(),
                        postgres: Duration::ZERO,
                    },
                });
            }
        });
    }

    /// No client waits any more: nothing is left to time out, so the timers go (MODULE
    /// UNLOAD waits for none of them). Main thread.
    pub(super) fn none_waiting(ctx: &Context) {
        let timers = with(|watch| {
            watch.due.clear();
            std::mem::take(&mut watch.timers)
        });
        for (_, id, _) in timers {
            let _ = ctx.stop_timer::<u64>(id);
        }
    }
}

/// Completions whose client was already answered for its deadline: dropped on the main
/// thread, where dropping one may answer a fill's other waiters.
mod late {
    use super::Completion;
    use crate::redis::main_thread::Task;
    use std::sync::Mutex;

    static LATE: Mutex<Vec<Completion>> = Mutex::new(Vec::new());
    static DROP: Task = Task::new("dropping a late reply", drop_all);

    pub(super) fn drop_on_main_thread(completion: Completion) {
        LATE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(completion);
        DROP.request_from_thread();
    }

    fn drop_all(_: &redis_module::Context) -> bool {
        // Taken out first, and the lock released, before any is dropped: dropping one may
        // answer a fill's waiters whose deadline passed too, which come back here.
        let late = std::mem::take(&mut *LATE.lock().unwrap_or_else(|e| e.into_inner()));
        drop(late);
        false
    }
}

pub fn error_completion(e: Error) -> Completion {
    Box::new(move |_| Reply::Error(e))
}

/// Runs `f`, turning an error or a panic into an error completion.
pub fn contained(f: impl FnOnce() -> Result<Completion, Error>) -> Completion {
    catch_result(f).unwrap_or_else(error_completion)
}

impl Unblocked for Answer {
    /// After a worker (or the deadline) unblocked the client: exactly one reply is sent,
    /// whatever panics.
    fn reply(&mut self, ctx: &Context, args: &Args) {
        let started = Instant::now();
        crate::error::panic::guard_since(started, "sending a reply", || {
            self.send(ctx, args, started)
        });
    }

    fn timeout(ctx: &Context, args: &Args) {
        crate::error::panic::guard("replying a timeout", || {
            let error = timeout_error();
            send_once(ctx, &Reply::Error(error.clone()));
            let args = args.head();
            if let Some(command) = Tracked::of(&args) {
                crate::error::panic::contain("recording a timeout", || {
                    tracked::failed(ctx, command, &args, &error)
                });
            }
        });
    }

    fn free(ctx: &Context, answer: Box<Answer>) {
        // Dropping an unrun completion can run code of ours (a fill ticket answers its
        // waiters), which must not unwind into Redis.
        crate::error::panic::guard("freeing a reply", || drop(answer));
        if WAITING.fetch_sub(1, Ordering::SeqCst) == 1 {
            crate::error::panic::guard("stopping deadline timers", || deadlines::none_waiting(ctx));
        }
    }
}

impl Answer {
    /// `reply`'s work, `now` being when it started: run the completion, send its reply,
    /// record the call.
    fn send(&mut self, ctx: &Context, args: &Args, now: Instant) {
        let reply = catch(|| match self.completion.take() {
            Some(completion) => completion(ctx),
            None => Reply::Error(Error::internal("internal error: reply already sent")),
        })
        .unwrap_or_else(Reply::Error);
        send_once(ctx, &reply);
        // The call is named by its own arguments, which Redis keeps with the blocked client.
        let args = args.head();
        if let Some(command) = Tracked::of(&args) {
            let elapsed_us = now.saturating_duration_since(self.blocked_at).as_micros() as u64;
            crate::error::panic::contain("recording a reply", || {
                tracked::finished(
                    ctx,
                    command,
                    &args,
                    elapsed_us,
                    Some(self.timing),
                    reply.detail(),
                );
                if let Reply::Error(e) = reply.inner()
                    && reply.is_failure()
                {
                    tracked::failed(ctx, command, &args, e);
                }
            });
        }
    }
}

/// Sends `reply`; should sending it panic part-way, nothing more is sent (a partial reply
/// cannot be taken back, and a second one would desynchronise the client).
fn send_once(ctx: &Context, reply: &Reply) {
    crate::error::panic::contain("sending a reply", || reply::send(ctx, reply));
}
