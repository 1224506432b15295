//! The worker pool: PostgreSQL work runs here, never on the Redis event loop.
//!
//! A command that needs PostgreSQL blocks only its own client (`RedisModule_BlockClient`
//! with a timeout) and queues a job on a bounded channel; a full queue is an immediate error.
//! A worker runs the job on a pooled connection and hands back a *completion*: a closure
//! that Redis runs on the main thread in the blocked client's reply callback, where it can
//! write the cache (in the client's DB, replicated) and build the reply without taking the
//! GIL from a thread. If the timeout fires first, Redis replies the timeout error and later
//! frees the completion unrun: every request gets exactly one reply.
//!
//! Single-row lookups (the READ miss) are batched: a worker that wakes up takes every
//! lookup already queued and fetches each table's keys in ONE query, so under load misses
//! cost one round trip per batch instead of one per request.

use crate::error::Error;
use crate::key::CanonicalPk;
use crate::pg::fetch;
use crate::pg::pool::{Pool, PooledClient};
use crate::pg::schema::TableSchema;
use crate::reply::{self, Reply};
use crate::tunables;
use crossbeam_channel::{Receiver, Sender};
use redis_module::{Context, raw};
use std::any::Any;
use std::collections::HashMap;
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

/// One row to fetch, and what to do on the main thread with it (None: no such row).
pub struct RowLookup {
    pub schema: Arc<TableSchema>,
    pub pk: CanonicalPk,
    pub then: Box<dyn FnOnce(Option<String>) -> Completion + Send>,
}

enum Task {
    Work(Work),
    Lookup(RowLookup),
}

struct Job<T> {
    client: BlockedClient,
    deadline: Instant,
    task: T,
}

/// Most jobs one worker takes at once; also the most keys in one batched query.
const MAX_BATCH: usize = 128;

/// The blocked-client handle: Redis allows `UnblockClient` from any thread.
struct BlockedClient(*mut raw::RedisModuleBlockedClient);
// SAFETY: the handle is only passed back to RedisModule_UnblockClient, which is thread-safe.
unsafe impl Send for BlockedClient {}

/// Lookups have their own queue, so a worker can take all queued lookups at once without
/// taking other work away from idle workers.
struct Queues {
    work: Sender<Job<Work>>,
    lookups: Sender<Job<RowLookup>>,
}

struct Workers {
    queues: Queues,
    threads: Vec<JoinHandle<()>>,
}

static WORKERS: Mutex<Option<Workers>> = Mutex::new(None);
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// Clients blocked by us whose privdata Redis has not freed yet.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Starts `count` workers sharing `pool`, with a queue of `queue_size` jobs.
pub fn start(count: usize, queue_size: usize, pool: Pool) -> std::io::Result<()> {
    let (work, work_receiver) = crossbeam_channel::bounded(queue_size);
    let (lookups, lookup_receiver) = crossbeam_channel::bounded(queue_size);
    let pool = Arc::new(pool);
    SHUTTING_DOWN.store(false, Ordering::SeqCst);
    let mut threads = Vec::with_capacity(count);
    for i in 0..count {
        let receivers = (work_receiver.clone(), lookup_receiver.clone());
        let pool = pool.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("pgcache-worker-{i}"))
                .spawn(move || run(receivers.0, receivers.1, pool))?,
        );
    }
    *WORKERS.lock().unwrap() = Some(Workers {
        queues: Queues { work, lookups },
        threads,
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
        drop(workers.queues);
        for thread in workers.threads {
            let _ = thread.join();
        }
    }
    Ok(())
}

fn run(work: Receiver<Job<Work>>, lookups: Receiver<Job<RowLookup>>, pool: Arc<Pool>) {
    loop {
        crossbeam_channel::select! {
            recv(work) -> job => match job {
                Ok(job) => {
                    if let Some((client, deadline, work)) = admit(job) {
                        let completion = contained(|| {
                            let mut conn = pool.get(deadline).map_err(Error::new)?;
                            work(&mut conn)
                        });
                        finish(client, completion);
                    }
                }
                Err(_) => return,
            },
            recv(lookups) -> job => match job {
                Ok(first) => {
                    let mut batch: Vec<PendingLookup> = admit(first).into_iter().collect();
                    while batch.len() < MAX_BATCH {
                        match lookups.try_recv() {
                            Ok(job) => batch.extend(admit(job)),
                            Err(_) => break,
                        }
                    }
                    run_lookups(batch, &pool);
                }
                Err(_) => return,
            },
        }
    }
}

/// A job to run, or None after replying to it when it must not run (shutting down, or its
/// client already timed out, so a query would be wasted).
fn admit<T>(job: Job<T>) -> Option<(BlockedClient, Instant, T)> {
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        finish(
            job.client,
            error_completion(Error::new("pgcache is shutting down")),
        );
        None
    } else if Instant::now() >= job.deadline {
        finish(
            job.client,
            error_completion(Error::new("request timed out in the queue")),
        );
        None
    } else {
        Some((job.client, job.deadline, job.task))
    }
}

/// Runs `f`, turning an error or a panic into an error completion.
fn contained(f: impl FnOnce() -> Result<Completion, Error>) -> Completion {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|panic| Err(panic_error(panic)))
        .unwrap_or_else(error_completion)
}

/// Hands the completion to Redis, which runs it on the main thread (or frees it unrun if
/// the client timed out or left).
fn finish(client: BlockedClient, completion: Completion) {
    let privdata = Box::into_raw(Box::new(Some(completion)));
    // SAFETY: each blocked client is unblocked exactly once, here.
    unsafe {
        raw::RedisModule_UnblockClient.unwrap()(client.0, privdata.cast());
    }
}

type PendingLookup = (BlockedClient, Instant, RowLookup);

/// Fetches every table's lookups in one query; if that query fails, each lookup is retried
/// alone so that one bad key (or one ambiguous view row) fails only its own request.
fn run_lookups(lookups: Vec<PendingLookup>, pool: &Pool) {
    let mut by_table: HashMap<*const TableSchema, Vec<PendingLookup>> = HashMap::new();
    for pending in lookups {
        by_table
            .entry(Arc::as_ptr(&pending.2.schema))
            .or_default()
            .push(pending);
    }
    for (_, group) in by_table {
        let deadline = group
            .iter()
            .map(|(_, d, _)| *d)
            .min()
            .expect("groups are not empty");
        let rows = if group.len() > 1 {
            catch_unwind(AssertUnwindSafe(|| fetch_group(&group, pool, deadline))).unwrap_or(None)
        } else {
            None
        };
        match rows {
            Some(rows) => {
                for ((client, _, lookup), row) in group.into_iter().zip(rows) {
                    finish(client, contained(|| Ok((lookup.then)(row))));
                }
            }
            None => {
                for (client, deadline, lookup) in group {
                    let completion = contained(|| {
                        let mut conn = pool.get(deadline).map_err(Error::new)?;
                        let row = fetch::one(&mut conn, &lookup.schema, &lookup.pk)?;
                        Ok((lookup.then)(row))
                    });
                    finish(client, completion);
                }
            }
        }
    }
}

/// One query for a group's distinct keys; the row for each lookup in order, or None if the
/// batch failed.
fn fetch_group(
    group: &[PendingLookup],
    pool: &Pool,
    deadline: Instant,
) -> Option<Vec<Option<String>>> {
    let mut distinct: Vec<CanonicalPk> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for (_, _, lookup) in group {
        index_of.entry(lookup.pk.json.as_str()).or_insert_with(|| {
            distinct.push(lookup.pk.clone());
            distinct.len() - 1
        });
    }
    let mut conn = pool.get(deadline).ok()?;
    let rows = fetch::many(&mut conn, &group[0].2.schema, &distinct).ok()?;
    Some(
        group
            .iter()
            .map(|(_, _, lookup)| rows[index_of[lookup.pk.json.as_str()]].clone())
            .collect(),
    )
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
    enqueue(ctx, Task::Work(work))
}

/// Like `submit`, for one row lookup, which workers batch with others of the same table.
pub fn submit_lookup(ctx: &Context, lookup: RowLookup) -> Reply {
    enqueue(ctx, Task::Lookup(lookup))
}

fn enqueue(ctx: &Context, task: Task) -> Reply {
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
    let client = BlockedClient(blocked);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let queues = &workers.queues;
    let refused = match task {
        Task::Work(task) => queues
            .work
            .try_send(Job {
                client,
                deadline,
                task,
            })
            .err()
            .map(|e| e.into_inner().client),
        Task::Lookup(task) => queues
            .lookups
            .try_send(Job {
                client,
                deadline,
                task,
            })
            .err()
            .map(|e| e.into_inner().client),
    };
    match refused {
        None => {
            IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
            Reply::Blocked
        }
        Some(client) => {
            // SAFETY: the client was blocked above and never reached a worker.
            unsafe {
                raw::RedisModule_AbortBlock.unwrap()(client.0);
            }
            Reply::Error(Error::new(format!(
                "the PostgreSQL queue is full ({} requests waiting); retry later or raise queue_size/workers",
                queues.work.len() + queues.lookups.len()
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
