//! Blocked clients: blocking one, answering it exactly once from any thread, and the
//! callbacks Redis runs on the main thread (reply, timeout, free).

use crate::error::{Error, ErrorKind};
use crate::reply::{self, Reply};
use crate::requests::{self, Timing};
use crate::stats::Tracked;
use crate::tunables;
use redis_module::{Context, raw};
use std::any::Any;
use std::os::raw::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs on the main thread with the blocked client's context and returns its reply.
pub type Completion = Box<dyn FnOnce(&Context) -> Reply + Send>;

/// Clients blocked by us and not yet released (aborted, or their completion freed by
/// Redis). While any exist, Redis may still call into this library.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}

/// A blocked client's handle. Redis allows `UnblockClient` from any thread; `answer`
/// consumes the handle, so each client is answered once.
pub struct BlockedClient {
    handle: *mut raw::RedisModuleBlockedClient,
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
// SAFETY: the handle is only passed back to RedisModule_UnblockClient / AbortBlock.
unsafe impl Send for BlockedClient {}

impl BlockedClient {
    /// Blocks the client of `ctx` for at most `timeout_ms`. Main thread only.
    pub fn block(ctx: &Context, timeout_ms: u64) -> BlockedClient {
        // SAFETY: main thread; the callbacks match what Redis passes them.
        let handle = unsafe {
            raw::RedisModule_BlockClient.unwrap()(
                ctx.ctx,
                Some(on_reply),
                Some(on_timeout),
                Some(free_completion),
                timeout_ms as i64,
            )
        };
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        BlockedClient {
            handle,
            blocked_at: Instant::now(),
            picked: None,
        }
    }

    /// Notes that a worker started on this client's job (the first call counts).
    pub fn picked(&mut self) {
        self.picked.get_or_insert_with(Instant::now);
    }

    /// Undoes `block` for a client that never reached a worker. Main thread only.
    pub fn abort(self) {
        // SAFETY: blocked by `block` and never unblocked.
        unsafe {
            raw::RedisModule_AbortBlock.unwrap()(self.handle);
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }

    /// Hands the completion to Redis, which runs it on the main thread (or frees it unrun
    /// if the client timed out or left meanwhile).
    pub fn answer(self, completion: Completion) {
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
        let privdata = Box::into_raw(Box::new(Answer {
            completion: Some(completion),
            blocked_at: self.blocked_at,
            timing,
        }));
        // SAFETY: `self` is consumed, so this client is unblocked exactly once.
        unsafe {
            raw::RedisModule_UnblockClient.unwrap()(self.handle, privdata.cast());
        }
    }
}

pub fn error_completion(e: Error) -> Completion {
    Box::new(move |_| Reply::Error(e))
}

pub fn panic_error(panic: Box<dyn Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::of(
        ErrorKind::Internal,
        format!(
            "internal error ({what}); the request was abandoned, Redis is unaffected; please report it"
        ),
    )
}

/// Runs `f`, turning an error or a panic into an error completion.
pub fn contained(f: impl FnOnce() -> Result<Completion, Error>) -> Completion {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|panic| Err(panic_error(panic)))
        .unwrap_or_else(error_completion)
}

/// Redis calls this on the main thread after a worker unblocked the client. Exactly one
/// reply is sent, whatever panics.
unsafe extern "C" fn on_reply(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    let started = Instant::now();
    crate::error::guard_since(started, "sending a reply", || {
        // SAFETY: Redis passes the privdata given to UnblockClient and the blocked
        // command's arguments.
        unsafe { reply_unblocked(ctx, argv, argc, started) }
    });
    raw::REDISMODULE_OK as c_int
}

/// `on_reply`'s work, `now` being when it started: run the completion, send its reply,
/// record the call.
unsafe fn reply_unblocked(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    now: Instant,
) {
    let context = Context::new(ctx);
    // SAFETY: the privdata is the Box<Answer> passed to UnblockClient.
    let answer = unsafe {
        &mut *(raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx) as *mut Answer)
    };
    let reply = catch_unwind(AssertUnwindSafe(|| match answer.completion.take() {
        Some(completion) => completion(&context),
        None => Reply::Error(Error::new("internal error: reply already sent")),
    }))
    .unwrap_or_else(|panic| Reply::Error(panic_error(panic)));
    send_once(&context, &reply);
    // SAFETY: Redis passes the blocked command's arguments.
    let args = unsafe { crate::args::borrow_head(argv, argc) };
    // The call is named by its own arguments, which Redis keeps with the blocked client.
    if let Some(command) = Tracked::of(&args) {
        let elapsed_us = now.saturating_duration_since(answer.blocked_at).as_micros() as u64;
        crate::error::contain("recording a reply", || {
            requests::finished(
                &context,
                command,
                &args,
                elapsed_us,
                Some(answer.timing),
                reply.detail(),
            );
            if let Reply::Error(e) = reply.inner()
                && reply.is_failure()
            {
                requests::failed(&context, command, &args, e);
            }
        });
    }
}

/// Sends `reply`; should sending it panic part-way, nothing more is sent (a partial reply
/// cannot be taken back, and a second one would desynchronise the client).
fn send_once(ctx: &Context, reply: &Reply) {
    crate::error::contain("sending a reply", || reply::send(ctx, reply));
}

unsafe extern "C" fn on_timeout(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    crate::error::guard("replying a timeout", || {
        let context = Context::new(ctx);
        let error = Error::of(
            ErrorKind::Timeout,
            format!(
                "request timed out after {} ms waiting for PostgreSQL; check that it is \
                 reachable, or raise pgcache.request_timeout_ms",
                tunables::request_timeout_ms()
            ),
        );
        send_once(&context, &Reply::Error(error.clone()));
        // SAFETY: Redis passes the blocked command's arguments.
        let args = unsafe { crate::args::borrow_head(argv, argc) };
        if let Some(command) = Tracked::of(&args) {
            crate::error::contain("recording a timeout", || {
                requests::failed(&context, command, &args, &error)
            });
        }
    });
    raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn free_completion(_ctx: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    if !privdata.is_null() {
        // SAFETY: allocated by Box::into_raw in `answer`, freed only here.
        let answer = unsafe { Box::from_raw(privdata as *mut Answer) };
        // Dropping an unrun completion can run code of ours (a fill ticket answers its
        // waiters), which must not unwind into Redis.
        crate::error::guard("freeing a reply", || drop(answer));
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}
