//! Blocked clients: blocking one, answering it exactly once from any thread, and the
//! callbacks Redis runs on the main thread (reply, timeout, free).
//!
//! Timeouts are pgcache's own, not Redis's: when a worker's `RedisModule_UnblockClient`
//! and Redis's timeout of the same client meet in one event-loop turn, Redis 7.0 unblocks
//! the client without calling either callback, and the client never gets a reply. So
//! clients block without a Redis timeout; a thread of ours answers those whose deadline
//! passed (`deadlines`), and whichever of it and the worker comes first (one atomic swap) is
//! the one that unblocks the client.

use crate::config::current;
use crate::error::Error;
use crate::error::panic::{catch, catch_result};
use crate::model::source::SourceId;
use crate::redis::args::Args;
use crate::redis::blocking::{self, Blocked, Unblocked};
use crate::requests::reply::{self, Reply};
use crate::requests::tracked::{self, Timing};
use crate::stats::Tracked;
use crate::stats::{self, stages::Stage};
use redis_module::Context;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs on the main thread with the blocked client's context and returns its reply.
pub type Completion = Box<dyn FnOnce(&Context) -> Reply + Send>;

/// Clients blocked by us and not yet released (aborted, or their completion freed by
/// Redis). While any exist, Redis may still call into this library.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// How many of them wait for each named source (the default's are the rest): what
/// `PGCACHE.DRAIN SOURCE <name>` waits to see reach 0. The default source's misses never
/// take this lock.
static WAITING_NAMED: Mutex<Vec<(SourceId, usize)>> = Mutex::new(Vec::new());

pub fn waiting() -> usize {
    WAITING.load(Ordering::SeqCst)
}

/// How many clients wait for PostgreSQL work of `source`.
pub fn waiting_for(source: SourceId) -> usize {
    let named = WAITING_NAMED.lock().unwrap_or_else(|e| e.into_inner());
    if source == SourceId::DEFAULT {
        let of_named: usize = named.iter().map(|(_, n)| n).sum();
        return waiting().saturating_sub(of_named);
    }
    named
        .iter()
        .find(|(id, _)| *id == source)
        .map_or(0, |(_, n)| *n)
}

/// Counts a client of `source` in (`blocked`) or out.
fn count(source: SourceId, blocked: bool) -> usize {
    let waiting = if blocked {
        WAITING.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        WAITING.fetch_sub(1, Ordering::SeqCst) - 1
    };
    if source != SourceId::DEFAULT {
        let mut named = WAITING_NAMED.lock().unwrap_or_else(|e| e.into_inner());
        match named.iter_mut().find(|(id, _)| *id == source) {
            Some((_, n)) if blocked => *n += 1,
            Some((_, n)) => *n = n.saturating_sub(1),
            None if blocked => named.push((source, 1)),
            None => {}
        }
    }
    waiting
}

/// What the worker and the deadline thread share of one blocked client: Redis's handle,
/// which whichever of them comes first unblocks, and the client's place among the deadlines.
struct Ticket {
    client: Blocked<Answer>,
    /// Whose PostgreSQL the client waits for.
    source: SourceId,
    blocked_at: Instant,
    due: deadlines::Due,
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
    /// Whose PostgreSQL the client waited for (counted out when Redis frees this).
    source: SourceId,
    blocked_at: Instant,
    timing: Timing,
    /// When the worker handed the answer to Redis (None: a timeout, which times no stage).
    handed: Option<Instant>,
}
impl BlockedClient {
    /// Blocks the client of `ctx`, waiting for PostgreSQL work of `source`, for at most
    /// `timeout_ms`. Main thread only.
    pub fn block(ctx: &Context, source: SourceId, timeout_ms: u64) -> BlockedClient {
        // No Redis timeout: the deadline is watched here (see the module's doc).
        let client = blocking::block(ctx);
        let waiting = count(source, true);
        let blocked_at = Instant::now();
        let due = deadlines::Due::at(blocked_at + Duration::from_millis(timeout_ms));
        let ticket = Arc::new(Ticket {
            client,
            source,
            blocked_at,
            due,
        });
        deadlines::watch(&ticket, waiting);
        BlockedClient {
            ticket,
            blocked_at,
            picked: None,
        }
    }

    /// When the client gets its timeout reply if no answer came first.
    pub fn deadline(&self) -> Instant {
        self.ticket.due.instant()
    }

    /// Notes that a worker started on this client's job (the first call counts).
    pub fn picked(&mut self) {
        self.picked.get_or_insert_with(Instant::now);
    }

    /// Undoes `block` for a client that never reached a worker; false when the deadline
    /// thread answered it first (then it has its reply, and must get no other). Main thread
    /// only.
    #[must_use]
    pub fn abort(self) -> bool {
        let undone = self.ticket.client.abort();
        if undone {
            count(self.ticket.source, false);
        }
        undone
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
            source: self.ticket.source,
            blocked_at: self.blocked_at,
            timing,
            handed: Some(now),
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

mod deadlines;

pub use deadlines::{start as start_deadlines, stop as stop_deadlines};

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
                    let source = tracked::source_of_call(command, &args);
                    tracked::failed(ctx, command, &args, source, &error)
                });
            }
        });
    }

    fn free(_: &Context, answer: Box<Answer>) {
        // Dropping an unrun completion can run code of ours (a fill ticket answers its
        // waiters), which must not unwind into Redis.
        let source = answer.source;
        crate::error::panic::guard("freeing a reply", || drop(answer));
        count(source, false);
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
        let filled = Instant::now();
        if asked_for_age(args) && !matches!(reply.inner(), Reply::Error(_) | Reply::Sent) {
            // WITHAGE: an answer given after a wait came from PostgreSQL in this call.
            send_once(
                ctx,
                &Reply::Array(vec![reply.inner().clone(), Reply::Int(0)]),
            );
        } else if matches!(reply.inner(), Reply::Bulk(_)) && asked_for_key(args) {
            // WITHKEY: an answer no key holds (the fill that cached it names its own).
            send_once(
                ctx,
                &Reply::Array(vec![
                    reply.inner().clone(),
                    Reply::Nil,
                    Reply::Array(vec![]),
                ]),
            );
        } else {
            send_once(ctx, &reply);
        }
        self.record_stages(now, filled, Instant::now());
        // The call is named by its own arguments, which Redis keeps with the blocked client.
        let args = args.head();
        if let Some(command) = Tracked::of(&args) {
            let elapsed_us = now.saturating_duration_since(self.blocked_at).as_micros() as u64;
            crate::error::panic::contain("recording a reply", || {
                tracked::finished(
                    ctx,
                    command,
                    &args,
                    self.source,
                    elapsed_us,
                    Some(self.timing),
                    reply.detail(),
                );
                if let Reply::Error(e) = reply.inner()
                    && reply.is_failure()
                {
                    tracked::failed(ctx, command, &args, self.source, e);
                }
            });
        }
    }
}

impl Answer {
    /// Where the miss spent its time: the reply callback started at `woken`, the completion
    /// ran until `filled`, the reply was written by `replied`.
    fn record_stages(&self, woken: Instant, filled: Instant, replied: Instant) {
        let Some(handed) = self.handed else {
            return;
        };
        let us = |from: Instant, to: Instant| to.saturating_duration_since(from).as_micros() as u64;
        let stats = stats::of(SourceId::DEFAULT);
        for (stage, took) in [
            (Stage::Queue, self.timing.queued.as_micros() as u64),
            (Stage::Postgres, self.timing.postgres.as_micros() as u64),
            (Stage::Wakeup, us(handed, woken)),
            (Stage::Fill, us(woken, filled)),
            (Stage::Reply, us(filled, replied)),
            (Stage::Total, us(self.blocked_at, replied)),
        ] {
            stats.stages.record(stage, took);
        }
    }
}

/// Whether the call is a READ or GET with `WITHAGE` among its options (after the table or key
/// and the pk, none of which can be the bare word).
fn asked_for_age(args: &Args) -> bool {
    matches!(
        Tracked::of(&args.head()),
        Some(Tracked::Read | Tracked::Get)
    ) && (2..args.len()).any(|i| args.bytes(i).eq_ignore_ascii_case(b"WITHAGE"))
}

/// Whether the call is a QUERY with `WITHKEY` among its options (after its parameters,
/// which may be the bare word).
fn asked_for_key(args: &Args) -> bool {
    if !matches!(Tracked::of(&args.head()), Some(Tracked::Query)) || args.len() < 3 {
        return false;
    }
    let Some(nparams) = std::str::from_utf8(args.bytes(2))
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return false;
    };
    (3 + nparams..args.len()).any(|i| args.bytes(i).eq_ignore_ascii_case(b"WITHKEY"))
}

/// Sends `reply`; should sending it panic part-way, nothing more is sent (a partial reply
/// cannot be taken back, and a second one would desynchronise the client).
fn send_once(ctx: &Context, reply: &Reply) {
    crate::error::panic::contain("sending a reply", || reply::send(ctx, reply));
}
