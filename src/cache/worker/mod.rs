//! The worker pool: PostgreSQL work runs here, never on the Redis event loop.
//!
//! A command that needs PostgreSQL blocks only its own client (`RedisModule_BlockClient`
//! with a timeout) and queues a job in its source's bounded queue (`scheduler`); a full
//! queue is an immediate error.
//! A job names its source; a worker runs it on a connection of that source's pool (borrowed
//! from the source's part for the job: the workers hold no pool of their own) and hands
//! back a *completion*: a closure that Redis runs on the main thread in the blocked
//! client's reply callback, where it can write the cache (in the client's DB, replicated)
//! and build the reply without taking the GIL from a thread. If the timeout fires first,
//! Redis replies the timeout error and later frees the completion unrun: every request gets
//! exactly one reply.
//!
//! Three kinds of job:
//! - work: any closure on a connection (schema reads, small MULTIREADs, WRITE of a new table);
//! - lookups (the READ miss): a worker takes every lookup already queued and fetches each
//!   table's keys in ONE query, so under load misses cost a round trip per batch;
//! - parts of a split request (a large MULTIREAD), run by several workers at once;
//! - runs (the QUERY miss): a worker takes the runs already queued and sends them all in one
//!   round trip (`pipeline`).

mod gather;
pub mod hold;
mod jobs;
mod lookups;
mod pipeline;
mod scheduler;

pub use jobs::{
    Combine, Keyed, KeyedFill, KeyedWork, Part, Pipelined, Probe, Probed, RowLookup, Sent,
    ThenLookup, Work,
};
pub use lookups::rows_on_standby;

use crate::config::current;
use crate::error::Error;
use crate::error::panic::{catch, catch_result, contain};
use crate::model::source::SourceId;
use crate::pg::pool;
use crate::requests::blocked::{self, BlockedClient, contained, error_completion};
use crate::requests::reply::Reply;
use gather::Gather;
use lookups::PendingLookup;
use pipeline::PendingRun;
use redis_module::{Context, ContextFlags};
use scheduler::{MAX_BATCH, MAX_PIPELINE, Scheduler, SchedulerGuard, Take};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

enum Queued {
    Work(BlockedClient, Work),
    Keyed(BlockedClient, KeyedWork),
    Part(Arc<Gather>, usize, Part),
    Probe(BlockedClient, Probe),
    /// A run sent alone (its statement is slow: `Figures::pipelines`).
    Run(BlockedClient, Box<dyn Pipelined>),
}

struct Job<T> {
    /// Whose database the job reads: its pool lends the connection.
    source: SourceId,
    deadline: Instant,
    task: T,
}

impl<T> Job<(BlockedClient, T)> {
    /// A lookup or run: the blocked client and what answers it travel together.
    fn with_client(source: SourceId, deadline: Instant, client: BlockedClient, item: T) -> Self {
        Job {
            source,
            deadline,
            task: (client, item),
        }
    }

    /// The client of a job its queue had no room for, to answer it with the error.
    fn into_client(self) -> BlockedClient {
        self.task.0
    }
}

type LookupJob = Job<(BlockedClient, RowLookup)>;
type RunJob = Job<(BlockedClient, Box<dyn Pipelined>)>;

/// Lookups and runs have queues of their own, so a worker can take all queued lookups (or
/// runs) of a source at once without taking other work away from idle workers.
type Jobs = Scheduler<SourceId, Job<Queued>, LookupJob, RunJob>;
type Queues<'a> = SchedulerGuard<'a, SourceId, Job<Queued>, LookupJob, RunJob>;

struct Workers {
    jobs: Arc<Jobs>,
    threads: Vec<JoinHandle<()>>,
    /// The sources served and their pools' sizes, from which their caps are computed.
    sources: Vec<(SourceId, usize)>,
}

static WORKERS: Mutex<Option<Workers>> = Mutex::new(None);
static WORKER_COUNT: AtomicUsize = AtomicUsize::new(1);
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// A worker's stack. Workers parse statements (`pg_query`, PostgreSQL's own parser, whose
/// tree is written out recursively): a statement of `1+1+...+1` nested 6,000 deep overflowed
/// the 2 MiB a thread gets by default and aborted the server. Reserved, not resident: a
/// page is taken only when used.
pub const STACK_BYTES: usize = 64 * 1024 * 1024;

/// Starts `count` workers for `sources`, each with its pool's size, with queues of
/// `queue_size` jobs per source.
pub fn start(
    count: usize,
    sources: &[(SourceId, usize)],
    queue_size: usize,
) -> std::io::Result<()> {
    let pool_sizes: Vec<usize> = sources.iter().map(|&(_, pool_size)| pool_size).collect();
    let caps: Vec<(SourceId, usize)> = (sources.iter().map(|&(source, _)| source))
        .zip(scheduler::caps(count, &pool_sizes))
        .collect();
    let jobs = Arc::new(Jobs::new(&caps, queue_size));
    SHUTTING_DOWN.store(false, Ordering::SeqCst);
    WORKER_COUNT.store(count, Ordering::SeqCst);
    let mut threads = Vec::with_capacity(count);
    for i in 0..count {
        let taken_from = Arc::clone(&jobs);
        let spawned = std::thread::Builder::new()
            .name(format!("pgcache-worker-{i}"))
            .stack_size(STACK_BYTES)
            .spawn(move || run(&taken_from));
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                // The workers started so far end: nothing was queued.
                jobs.close();
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(e);
            }
        }
    }
    *WORKERS.lock().unwrap() = Some(Workers {
        jobs,
        threads,
        sources: sources.to_vec(),
    });
    Ok(())
}

/// Serves `source` too (added at run time), with its pool's size: every source's cap is
/// computed again for one more.
pub fn add_source(source: SourceId, pool_size: usize) {
    change_sources(|sources| sources.push((source, pool_size)));
}

/// Stops giving `source` (removed at run time) a share of the workers; what it still has
/// queued is taken and answered (its pool is gone: with an error).
pub fn remove_source(source: SourceId) {
    change_sources(|sources| sources.retain(|&(id, _)| id != source));
}

fn change_sources(change: impl FnOnce(&mut Vec<(SourceId, usize)>)) {
    let mut guard = WORKERS.lock().unwrap();
    let Some(workers) = guard.as_mut() else {
        return;
    };
    change(&mut workers.sources);
    let pool_sizes: Vec<usize> = workers.sources.iter().map(|&(_, size)| size).collect();
    let caps: Vec<(SourceId, usize)> = (workers.sources.iter().map(|&(source, _)| source))
        .zip(scheduler::caps(count(), &pool_sizes))
        .collect();
    workers.jobs.lock().set_caps(&caps);
    // A cap that grew may let a worker take a job queued already.
    workers.jobs.wake();
}

/// Jobs waiting for a worker (None once stopped).
pub fn queued() -> Option<usize> {
    let guard = WORKERS.lock().unwrap();
    Some(guard.as_ref()?.jobs.lock().waiting())
}

/// How many jobs a source's work queue holds at most.
pub fn queue_capacity() -> usize {
    WORKERS
        .lock()
        .unwrap()
        .as_ref()
        .map_or(0, |w| w.jobs.lock().bound())
}

pub fn count() -> usize {
    WORKER_COUNT.load(Ordering::SeqCst)
}

/// Stops and joins every worker. Refuses while any client is still blocked by us, because
/// Redis would later call back into this library's code.
pub fn stop() -> Result<(), Error> {
    let in_flight = blocked::waiting();
    if in_flight > 0 {
        return Err(Error::invalid(format!(
            "{in_flight} requests are still waiting for PostgreSQL; retry when they are done"
        )));
    }
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let workers = WORKERS.lock().unwrap().take();
    if let Some(workers) = workers {
        workers.jobs.close();
        for thread in workers.threads {
            let _ = thread.join();
        }
    }
    Ok(())
}

/// The error of a job the queues have no room for.
fn full(queues: &Queues) -> Error {
    Error::queue_full(format!(
        "the PostgreSQL queue is full ({} requests waiting); retry later or raise queue_size/workers",
        queues.waiting()
    ))
}

/// A worker: takes jobs until the scheduler closes.
fn run(jobs: &Jobs) {
    let mut finished = None;
    while let Some(taken) = jobs.next(finished) {
        finished = Some(taken.source());
        // Each job contains its own panics; this catches one that escaped, so the worker
        // lives on and its source's `busy` count falls again at the next take (a lost
        // worker would shrink the source's cap for good). The jobs' clients, dropped
        // unanswered, get the request timeout's reply.
        contain("a worker's job", || take(jobs, taken));
    }
}

/// Runs what a worker took: one job, or a batch of one source's lookups or runs (with
/// those queued meanwhile).
fn take(jobs: &Jobs, taken: Take<SourceId, Job<Queued>, LookupJob, RunJob>) {
    match taken {
        Take::Work(_, job) => run_queued(job),
        Take::Lookups(source, first) => {
            let mut batch: Vec<PendingLookup> =
                first.into_iter().filter_map(admit_lookup).collect();
            let mut yielded = false;
            while batch.len() < MAX_BATCH {
                let more = jobs.lock().more_lookups(source, MAX_BATCH - batch.len());
                if !more.is_empty() {
                    batch.extend(more.into_iter().filter_map(admit_lookup));
                } else if !yielded {
                    // Woken for a lone lookup: give the main thread one slice to queue
                    // the misses arriving with it, so they share the query.
                    yielded = true;
                    std::thread::yield_now();
                } else {
                    break;
                }
            }
            lookups::run(batch);
        }
        Take::Runs(source, first) => {
            // Only runs already queued: each would otherwise wait for a worker.
            let mut taken: Vec<PendingRun> = first.into_iter().filter_map(admit_run).collect();
            while taken.len() < MAX_PIPELINE {
                let more = jobs.lock().more_runs(source, MAX_PIPELINE - taken.len());
                if more.is_empty() {
                    break;
                }
                taken.extend(more.into_iter().filter_map(admit_run));
            }
            pipeline::run(source, taken);
        }
    }
}

/// Why a queued job must not run: shutting down, or its client already timed out (a
/// query would be wasted).
fn refusal(deadline: Instant) -> Option<Error> {
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        Some(Error::invalid("pgcache is shutting down"))
    } else if Instant::now() >= deadline {
        Some(Error::invalid("request timed out in the queue"))
    } else {
        None
    }
}

fn run_queued(job: Job<Queued>) {
    let refused = refusal(job.deadline);
    let source = job.source;
    match job.task {
        Queued::Work(mut client, work) => {
            client.picked();
            let completion = match refused {
                Some(e) => error_completion(e),
                None => contained(|| {
                    let pool = pool::of(source)?;
                    let mut conn = pool.get(job.deadline)?;
                    work(&mut conn)
                }),
            };
            hold::stall_point(job.deadline);
            client.answer(completion);
        }
        Queued::Keyed(mut client, work) => {
            client.picked();
            match refused {
                Some(e) => client.answer(error_completion(e)),
                None => run_keyed(client, work, source, job.deadline),
            }
        }
        Queued::Part(gather, index, part) => {
            gather.part_started();
            let result = match refused {
                Some(e) => Err(e),
                None => catch_result(|| {
                    let pool = pool::of(source)?;
                    let mut conn = pool.get(job.deadline)?;
                    part(&mut conn)
                }),
            };
            gather.deliver(index, result);
        }
        Queued::Run(client, run) => {
            let job = Job::with_client(source, job.deadline, client, run);
            if let Some(run) = admit_run(job) {
                pipeline::run(source, vec![run]);
            }
        }
        Queued::Probe(mut client, then) => {
            client.picked();
            let started = Instant::now();
            let probed = match refused {
                Some(e) => Err(e),
                None => pool::of(source).and_then(|pool| {
                    let mut conn = pool.get(job.deadline)?;
                    conn.query("SELECT pg_catalog.current_setting('TimeZone')", &[])
                        .map(|rows| Probed {
                            rtt: started.elapsed(),
                            timezone: rows.first().map(|row| row.get(0)).unwrap_or_default(),
                        })
                        .map_err(|e| Error::postgres(crate::pg::errors::describe(&e)).caused_by(e))
                }),
            };
            client.answer(contained(|| Ok(then(probed))));
        }
    }
}

/// Runs a `KeyedWork`: finds the key (and maybe the answer), then joins a fill of it in
/// flight (its leader answers this client) or fetches the row itself, leading a fill that
/// later READs of the key join.
fn run_keyed(client: BlockedClient, work: KeyedWork, source: SourceId, deadline: Instant) {
    let pool = match pool::of(source) {
        Ok(pool) => pool,
        Err(e) => return client.answer(error_completion(e)),
    };
    let mut conn = match pool.get(deadline) {
        Ok(conn) => conn,
        Err(e) => return client.answer(error_completion(e)),
    };
    let step = catch_result(|| work(&mut conn));
    match step {
        Err(e) => client.answer(error_completion(e)),
        Ok(Keyed::Answer(completion)) => client.answer(contained(|| Ok(completion))),
        Ok(Keyed::Fill(KeyedFill {
            schema,
            pk,
            fresh,
            tags,
            then,
        })) => {
            let key = pk.shared_cache_key(&schema.key_prefix);
            let led = if fresh {
                Some((crate::cache::fill::lead(key, schema.source, &tags), client))
            } else {
                crate::cache::fill::lead_or_join(
                    client,
                    &key,
                    schema.source,
                    &schema.stats,
                    &pk.json,
                )
            };
            let Some((ticket, client)) = led else {
                return;
            };
            let outcome = catch_result(|| crate::pg::fetch::one(&mut conn, &schema, &pk));
            hold::hold_point(deadline);
            ticket.answer_waiters(&outcome);
            client.answer(contained(|| Ok(then(outcome, ticket, schema, pk))));
        }
    }
}

fn admit_run(job: RunJob) -> Option<PendingRun> {
    let (mut client, run) = job.task;
    client.picked();
    let deadline = run_deadline(job.deadline, run.as_ref());
    match refusal(deadline) {
        Some(e) => {
            client.answer(contained(|| Ok(run.finish(Sent::Failed(e)))));
            None
        }
        None => Some((client, deadline, run)),
    }
}

/// Until when a run is awaited: by its own client, or later by misses that joined it (they
/// have their own time left when the job's client timed out in the queue).
fn run_deadline(deadline: Instant, run: &dyn Pipelined) -> Instant {
    let joined = catch(|| run.awaited_until()).ok().flatten();
    joined.map_or(deadline, |joined| joined.max(deadline))
}

fn admit_lookup(job: LookupJob) -> Option<PendingLookup> {
    let (mut client, lookup) = job.task;
    client.picked();
    match refusal(job.deadline) {
        Some(e) => {
            client.answer(error_completion(e));
            None
        }
        None => Some((client, job.deadline, lookup)),
    }
}

/// Blocks the calling client and queues `work`, to run on a connection to `source`.
/// Returns the reply to send now: `Blocked` when queued, or an error when the work cannot
/// wait (inside MULTI or a script), the queue is full, or the module is stopping.
pub fn submit(ctx: &Context, source: SourceId, work: Work) -> Reply {
    enqueue(ctx, source, 1, |queues, client, deadline| {
        send_work(queues, source, deadline, Queued::Work(client, work))
    })
}

/// Like `submit`, for work that finds its key on the worker before it reads the row.
pub fn submit_keyed(ctx: &Context, source: SourceId, work: KeyedWork) -> Reply {
    enqueue(ctx, source, 1, |queues, client, deadline| {
        send_work(queues, source, deadline, Queued::Keyed(client, work))
    })
}

/// Like `submit`, for a PostgreSQL round trip (`SELECT 1` on a pooled connection, connecting
/// if needed) whose time or failure `then` turns into the reply; the caller checked that
/// its client may wait (`may_wait`).
pub fn submit_probe(ctx: &Context, checked: MayWait, source: SourceId, then: Probe) -> Reply {
    enqueue_checked(ctx, checked, source, 1, |queues, client, deadline| {
        send_work(queues, source, deadline, Queued::Probe(client, then))
    })
}

/// Queues a job that answers one client; hands the client back if the queue refused it.
fn send_work(
    queues: &mut Queues,
    source: SourceId,
    deadline: Instant,
    task: Queued,
) -> Result<(), BlockedClient> {
    let job = Job {
        source,
        deadline,
        task,
    };
    queues.push_work(source, job).map_err(|job| match job.task {
        Queued::Work(client, _)
        | Queued::Keyed(client, _)
        | Queued::Probe(client, _)
        | Queued::Run(client, _) => client,
        Queued::Part(..) => unreachable!("parts are queued by submit_parts"),
    })
}

/// Like `submit`, for one row lookup, which workers batch with others of the same table.
/// A view's lookups are not batched (`TableSchema::batchable`) and go to the general queue,
/// so that idle workers share them.
pub fn submit_lookup(ctx: &Context, checked: MayWait, lookup: RowLookup) -> Reply {
    let source = lookup.schema.source;
    if !lookup.schema.batchable {
        return submit(
            ctx,
            source,
            Box::new(move |conn| {
                let RowLookup {
                    schema, pk, then, ..
                } = lookup;
                let row = crate::pg::fetch::one(conn, &schema, &pk);
                Ok(then(row, schema, pk))
            }),
        );
    }
    enqueue_checked(ctx, checked, source, 1, |queues, client, deadline| {
        let job = Job::with_client(source, deadline, client, lookup);
        queues.push_lookup(source, job).map_err(Job::into_client)
    })
}

/// Like `submit`, for a statement's run, which a worker sends in one round trip with the
/// other runs of `source` queued with it (`pipeline`) unless it is to run alone
/// (`pipelines` false).
pub fn submit_run(
    ctx: &Context,
    checked: MayWait,
    source: SourceId,
    run: Box<dyn Pipelined>,
    pipelines: bool,
) -> Reply {
    enqueue_checked(ctx, checked, source, 1, |queues, client, deadline| {
        if !pipelines {
            return send_work(queues, source, deadline, Queued::Run(client, run));
        }
        let job = Job::with_client(source, deadline, client, run);
        queues.push_run(source, job).map_err(Job::into_client)
    })
}

/// Queues a run whose client is blocked already (the event loop sent it and could not finish
/// it: its connection broke, or what came back needs a worker's connection). A full queue
/// or a stopped pool answers it with the error.
pub fn resubmit_run(
    client: BlockedClient,
    deadline: Instant,
    source: SourceId,
    run: Box<dyn Pipelined>,
) {
    let refused = {
        let guard = WORKERS.lock().unwrap();
        match guard.as_ref() {
            None => Some((client, run, Error::invalid("pgcache is shutting down"))),
            Some(workers) => {
                let mut queues = workers.jobs.lock();
                let job = Job::with_client(source, deadline, client, run);
                match queues.push_run(source, job) {
                    Ok(()) => {
                        drop(queues);
                        workers.jobs.wake();
                        None
                    }
                    Err(job) => {
                        let (client, run) = job.task;
                        Some((client, run, full(&queues)))
                    }
                }
            }
        }
    };
    if let Some((client, run, e)) = refused {
        client.answer(contained(|| Ok(run.finish(Sent::Failed(e)))));
    }
}

/// Queues work whose client is blocked already (the event loop could not finish it). A
/// full queue or a stopped pool answers it with the error.
pub fn resubmit_work(client: BlockedClient, deadline: Instant, source: SourceId, work: Work) {
    let refused = {
        let guard = WORKERS.lock().unwrap();
        match guard.as_ref() {
            None => Some((client, Error::invalid("pgcache is shutting down"))),
            Some(workers) => {
                let mut queues = workers.jobs.lock();
                match send_work(&mut queues, source, deadline, Queued::Work(client, work)) {
                    Ok(()) => {
                        drop(queues);
                        workers.jobs.wake();
                        None
                    }
                    Err(client) => Some((client, full(&queues))),
                }
            }
        }
    };
    if let Some((client, e)) = refused {
        client.answer(error_completion(e));
    }
}

/// Queues a lookup whose client is blocked already (the event loop sent it and its
/// connection broke). A full queue or a stopped pool answers it with the error.
pub fn resubmit_lookup(client: BlockedClient, deadline: Instant, lookup: RowLookup) {
    let refused = {
        let guard = WORKERS.lock().unwrap();
        match guard.as_ref() {
            None => Some((client, Error::invalid("pgcache is shutting down"))),
            Some(workers) => {
                let mut queues = workers.jobs.lock();
                let source = lookup.schema.source;
                let job = Job::with_client(source, deadline, client, lookup);
                match queues.push_lookup(source, job) {
                    Ok(()) => {
                        drop(queues);
                        workers.jobs.wake();
                        None
                    }
                    Err(job) => Some((job.into_client(), full(&queues))),
                }
            }
        }
    };
    if let Some((client, e)) = refused {
        client.answer(error_completion(e));
    }
}

/// Like `submit`, for a request split into `parts` that workers run at once; `join` builds
/// the completion from all their rows.
pub fn submit_parts(ctx: &Context, source: SourceId, parts: Vec<Part>, join: Combine) -> Reply {
    let count = parts.len();
    enqueue(ctx, source, count, |queues, client, deadline| {
        // Only the main thread enqueues, so the room checked by `enqueue` is still there.
        let gather = Arc::new(Gather::new(client, count, join));
        for (index, part) in parts.into_iter().enumerate() {
            let task = Queued::Part(gather.clone(), index, part);
            let job = Job {
                source,
                deadline,
                task,
            };
            if queues.push_work(source, job).is_err() {
                gather.deliver(index, Err(Error::invalid("the PostgreSQL queue is full")));
            }
        }
        Ok(())
    })
}

/// Proof that the calling client may be blocked (`may_wait`), for a caller that checked
/// before it decided to queue a job.
pub struct MayWait(());

/// Whether the calling client may be blocked for PostgreSQL work of `source`: no drain
/// under way (`drain`), no known outage of its database, and not inside MULTI/EXEC or a
/// script.
pub fn may_wait(ctx: &Context, source: SourceId) -> Result<MayWait, Reply> {
    if let Some(refusal) = crate::cache::drain::refusal(source) {
        return Err(Reply::Error(refusal));
    }
    // A known outage: no client waits for PostgreSQL's timeout, but the one let through as
    // the outage's check.
    if let Err(refusal) = crate::pg::circuit::of(source).admit() {
        crate::stats::of(source).refused_outage.inc();
        return Err(Reply::Error(Error::postgres(refusal)));
    }
    if ctx.get_flags().contains(ContextFlags::DENY_BLOCKING) {
        return Err(Reply::Error(Error::invalid(
            "this needs PostgreSQL, and a command inside MULTI/EXEC or a script cannot wait; \
             run it outside the transaction (cache hits work inside)",
        )));
    }
    Ok(MayWait(()))
}

/// Checks that the client may wait and that `jobs` fit in the queue, blocks the client and
/// lets `send` queue the job(s); `send` hands the client back if its job was refused.
fn enqueue(
    ctx: &Context,
    source: SourceId,
    jobs: usize,
    send: impl FnOnce(&mut Queues, BlockedClient, Instant) -> Result<(), BlockedClient>,
) -> Reply {
    match may_wait(ctx, source) {
        Ok(checked) => enqueue_checked(ctx, checked, source, jobs, send),
        Err(refusal) => refusal,
    }
}

/// `enqueue` for a client already known to be one that may wait.
fn enqueue_checked(
    ctx: &Context,
    _: MayWait,
    source: SourceId,
    jobs: usize,
    send: impl FnOnce(&mut Queues, BlockedClient, Instant) -> Result<(), BlockedClient>,
) -> Reply {
    let guard = WORKERS.lock().unwrap();
    let Some(workers) = guard.as_ref() else {
        return Reply::Error(Error::invalid("pgcache is shutting down"));
    };
    // Only the main thread queues, so the room seen here is still there when `send` runs;
    // the workers wait for the lock only while a job goes in, not while the client is
    // blocked.
    if jobs > 1 {
        let queues = workers.jobs.lock();
        if queues.work_room(source) < jobs {
            return Reply::Error(full(&queues));
        }
    }
    let timeout_ms = current::request_timeout_ms();
    let client = BlockedClient::block(ctx, source, timeout_ms);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let sent = {
        let mut queues = workers.jobs.lock();
        send(&mut queues, client, deadline).map_err(|client| (client, full(&queues)))
    };
    match sent {
        Ok(()) => {
            for _ in 0..jobs {
                workers.jobs.wake();
            }
            Reply::Blocked
        }
        Err((client, full)) => {
            if client.abort() {
                Reply::Error(full)
            } else {
                // Timed out already (a stalled event loop): the client has its reply.
                Reply::Blocked
            }
        }
    }
}
