//! The worker pool: PostgreSQL work runs here, never on the Redis event loop.
//!
//! A command that needs PostgreSQL blocks only its own client (`RedisModule_BlockClient`
//! with a timeout) and queues a job on a bounded channel; a full queue is an immediate error.
//! A worker runs the job on a pooled connection and hands back a *completion*: a closure
//! that Redis runs on the main thread in the blocked client's reply callback, where it can
//! write the cache (in the client's DB, replicated) and build the reply without taking the
//! GIL from a thread. If the timeout fires first, Redis replies the timeout error and later
//! frees the completion unrun: every request gets exactly one reply.

use crate::error::Error;
use crate::pg::pool::{Pool, PoolStats, PooledClient};
use crate::reply::{self, Reply};
use crate::tunables;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use redis_module::{Context, raw};
use std::any::Any;
use std::os::raw::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs on the main thread with the blocked client's context and returns its reply.
pub type Completion = Box<dyn FnOnce(&Context) -> Reply + Send>;
/// Runs on a worker with a pooled connection.
pub type Work = Box<dyn FnOnce(&mut PooledClient<'_>) -> Result<Completion, Error> + Send>;

struct Job {
    client: BlockedClient,
    deadline: Instant,
    work: Work,
}

/// The blocked-client handle: Redis allows `UnblockClient` from any thread.
struct BlockedClient(*mut raw::RedisModuleBlockedClient);
// SAFETY: the handle is only passed back to RedisModule_UnblockClient, which is thread-safe.
unsafe impl Send for BlockedClient {}

struct Workers {
    sender: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
    pool: Arc<Pool>,
}

static WORKERS: Mutex<Option<Workers>> = Mutex::new(None);
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// Clients blocked by us whose privdata Redis has not freed yet.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Starts `count` workers sharing `pool`, with a queue of `queue_size` jobs.
pub fn start(count: usize, queue_size: usize, pool: Pool) -> std::io::Result<()> {
    let (sender, receiver) = crossbeam_channel::bounded(queue_size);
    let pool = Arc::new(pool);
    SHUTTING_DOWN.store(false, Ordering::SeqCst);
    let mut threads = Vec::with_capacity(count);
    for i in 0..count {
        let receiver = receiver.clone();
        let pool = pool.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("pgcache-worker-{i}"))
                .spawn(move || run(receiver, pool))?,
        );
    }
    *WORKERS.lock().unwrap() = Some(Workers {
        sender,
        threads,
        pool,
    });
    Ok(())
}

/// Stops and joins every worker. Refuses while clients are still waiting on a worker,
/// because Redis would later call back into this library's code.
pub fn stop() -> Result<(), String> {
    let in_flight = IN_FLIGHT.load(Ordering::SeqCst);
    if in_flight > 0 {
        return Err(format!(
            "{in_flight} requests are still waiting for PostgreSQL; retry when they are done"
        ));
    }
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let workers = WORKERS.lock().unwrap().take();
    if let Some(workers) = workers {
        drop(workers.sender);
        for thread in workers.threads {
            let _ = thread.join();
        }
    }
    Ok(())
}

pub fn pool_stats() -> Option<PoolStats> {
    WORKERS.lock().unwrap().as_ref().map(|w| w.pool.stats())
}

pub fn queue_depth() -> usize {
    WORKERS
        .lock()
        .unwrap()
        .as_ref()
        .map_or(0, |w| w.sender.len())
}

fn run(receiver: Receiver<Job>, pool: Arc<Pool>) {
    for job in receiver {
        let completion = if SHUTTING_DOWN.load(Ordering::SeqCst) {
            error_completion(Error::new("pgcache is shutting down"))
        } else if Instant::now() >= job.deadline {
            // The client already got its timeout reply; don't spend a query on it.
            error_completion(Error::new("request timed out in the queue"))
        } else {
            let work = job.work;
            let deadline = job.deadline;
            let pool = &pool;
            catch_unwind(AssertUnwindSafe(move || {
                let mut client = pool.get(deadline).map_err(Error::new)?;
                work(&mut client)
            }))
            .unwrap_or_else(|panic| Err(panic_error(panic)))
            .unwrap_or_else(error_completion)
        };
        let privdata = Box::into_raw(Box::new(Some(completion)));
        // SAFETY: each blocked client is unblocked exactly once, here.
        unsafe {
            raw::RedisModule_UnblockClient.unwrap()(job.client.0, privdata.cast());
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
    Error::new(format!(
        "internal error ({what}); the request was abandoned, Redis is unaffected; please report it"
    ))
}

/// Blocks the calling client and queues `work`. Returns the reply to send now: `Blocked`
/// when queued, or an error when the work cannot wait (inside MULTI or a script), the
/// queue is full, or the module is stopping.
pub fn submit(ctx: &Context, work: Work) -> Reply {
    // SAFETY: main thread, command context.
    let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
    if flags & raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING != 0 {
        return Reply::Error(Error::new(
            "this needs PostgreSQL, and a command inside MULTI/EXEC or a script cannot wait; \
             run it outside the transaction (cache hits work inside)",
        ));
    }
    let guard = WORKERS.lock().unwrap();
    let Some(workers) = guard.as_ref() else {
        return Reply::Error(Error::new("pgcache is shutting down"));
    };
    let timeout_ms = tunables::request_timeout_ms();
    // SAFETY: main thread; the callbacks below match what Redis passes them.
    let blocked = unsafe {
        raw::RedisModule_BlockClient.unwrap()(
            ctx.ctx,
            Some(on_reply),
            Some(on_timeout),
            Some(free_completion),
            timeout_ms as i64,
        )
    };
    let job = Job {
        client: BlockedClient(blocked),
        deadline: Instant::now() + Duration::from_millis(timeout_ms),
        work,
    };
    match workers.sender.try_send(job) {
        Ok(()) => {
            IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
            Reply::Blocked
        }
        Err(e) => {
            let job = match e {
                TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
            };
            // SAFETY: the client was blocked above and never reached a worker.
            unsafe {
                raw::RedisModule_AbortBlock.unwrap()(job.client.0);
            }
            Reply::Error(Error::new(format!(
                "the PostgreSQL queue is full ({} requests waiting); retry later or raise queue_size/workers",
                workers.sender.len()
            )))
        }
    }
}

/// Redis calls this on the main thread after a worker unblocked the client.
unsafe extern "C" fn on_reply(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let context = Context::new(ctx);
    // SAFETY: the privdata is the Box<Option<Completion>> the worker passed to UnblockClient.
    let slot = unsafe {
        &mut *(raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx)
            as *mut Option<Completion>)
    };
    let reply = match slot.take() {
        Some(completion) => catch_unwind(AssertUnwindSafe(|| completion(&context)))
            .unwrap_or_else(|panic| Reply::Error(panic_error(panic))),
        None => Reply::Error(Error::new("internal error: reply already sent")),
    };
    reply::send(&context, &reply);
    raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn on_timeout(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let context = Context::new(ctx);
    reply::send(
        &context,
        &Reply::Error(Error::new(format!(
            "request timed out after {} ms waiting for PostgreSQL; check that it is reachable, \
             or raise pgcache.request_timeout_ms",
            tunables::request_timeout_ms()
        ))),
    );
    raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn free_completion(_ctx: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    if !privdata.is_null() {
        // SAFETY: allocated by Box::into_raw in `run`, freed only here.
        drop(unsafe { Box::from_raw(privdata as *mut Option<Completion>) });
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}
