//! QUERY misses the Redis event loop sends to PostgreSQL itself (issue #52), on connections
//! registered with the event loop (`redis::fds`), instead of handing each to a worker: a
//! miss then costs no thread hand-off on the way out and none on the way back.
//!
//! The path of a miss: the command handler blocks its client and queues the job for this
//! turn (misses of the same statement still join it, `query::batch`); a zero-delay task
//! (`main_thread`, after every command read in this turn) encodes the turn's jobs onto the
//! connections with the fewest requests in flight, pipelined, and writes what the sockets
//! take; the connection's read callback parses what arrived (`pg::wire::Conn`) and, once a
//! job's results are all in, finishes it as a worker would (`Pipelined::finish`) and
//! unblocks its client. Nothing here waits: connections are opened, authenticated and
//! TLS-negotiated on a thread of their own (`opener`) and handed over.
//!
//! What stays with the workers: misses a standby can answer (`pg::standby`: the workers
//! read them there), statements that run long or answered large
//! (`Figures::kept_off_the_loop`, which PGCACHE.QUERIES shows; a row past the wire's cap breaks its connection once and
//! marks the statement, or the table's lookups, `Job::answered_too_large`), READs and
//! MULTIREADs of a view, MULTIREADs of more than 128 keys, a job
//! whose answer needs a connection to run something again (`Pipelined::needs_worker`), jobs
//! in flight on a connection that broke (sent again there once, as the pool retries a read
//! on a fresh session), and everything while no connection is ready, while DEBUG FILLS
//! holds answers, or while `loop_connections` is 0.
//!
//! Each source has a fleet of its own (connections to its database, its own opener): a
//! source's misses go out on its fleet only. Main thread only; the state lives in a
//! thread-local (`fleet`).

mod fleet;
mod flight;
mod job;
mod looped;
mod opener;

use crate::cache::worker::{self, MayWait, Pipelined, RowLookup};
use crate::config::{PgSettings, current};
use crate::error::Error;
use crate::model::key::CanonicalPk;
use crate::model::source::SourceId;
use crate::pg::schema::TableSchema;
use crate::pg::standby;
use crate::redis::main_thread::Task;
use crate::requests::blocked::BlockedClient;
use crate::requests::reply::Reply;
use crate::stats;
pub use job::Rows;
use job::{Job, Lookup, ThenRows};
use redis_module::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sends this turn's jobs (from a timer: after every command this turn read).
static FLUSH: Task = Task::new("sending misses to PostgreSQL", flush);
/// Takes connections an opener thread handed over.
static HANDED_OVER: Task = Task::new("taking PostgreSQL connections", fleet::take_handed);
/// Reads on where a read callback stopped at its budget.
static CONTINUE: Task = Task::new("reading PostgreSQL's answers", fleet::continue_reading);

/// At a source's start: its fleet, with the connection settings its opener uses. Opens
/// nothing yet (the first miss does).
pub fn start(source: SourceId, settings: &PgSettings) -> Result<(), Error> {
    fleet::start(source, settings)
}

/// Whether the fleets may be stopped now: no opener thread of any is still connecting.
pub fn may_stop() -> Result<(), Error> {
    fleet::may_stop()
}

/// `PGCACHE.DEBUG PANIC SEND`: the next send of misses panics before any goes out.
pub fn panic_next_send() {
    fleet::panic_next_send();
}

/// `PGCACHE.DEBUG SENDS HOLD|RELEASE`: the event loop sends no misses while held (they
/// wait in their turn, and misses of one statement join one job); released, it sends them.
pub fn hold_sends(held: bool) {
    fleet::hold_sends(held);
    if !held {
        FLUSH.request();
    }
}

/// At a source's stop, after the workers stopped (no client is blocked, so nothing is in
/// flight): every connection of its fleet leaves the event loop and closes.
pub fn stop(source: SourceId) {
    fleet::stop(source);
}

/// At a source's removal while the server runs (no client of it is blocked): as `stop`,
/// without waiting on the event loop for a connection being opened.
pub fn retire(source: SourceId) {
    fleet::retire(source);
}

/// From the server's cron, for every fleet: closes the connections PostgreSQL went silent on (their requests
/// go to the workers while their deadlines allow), and during PGCACHE.DRAIN every connection
/// once its requests are answered (a drain leaves the event loop none of pgcache's sockets).
pub fn look_after() {
    fleet::look_after();
}

/// Sends `run` from the event loop when a connection can take it, else to a worker
/// (`worker::submit_run`, whose refusals stand). `pipelines`: the statement's runs are
/// quick, and may share a worker's round trip; `on_loop`: its figures let it go out from
/// the event loop (`Figures::kept_off_the_loop`: quick runs, small results).
pub fn submit_run(
    ctx: &Context,
    checked: MayWait,
    source: SourceId,
    run: Box<dyn Pipelined>,
    pipelines: bool,
    on_loop: bool,
) -> Reply {
    // A miss a standby can answer goes to the workers, which read it there.
    if !on_loop
        || worker::hold::active()
        || standby::could_take(source, run.needed())
        || !fleet::takes_a_job(source)
    {
        return worker::submit_run(ctx, checked, source, run, pipelines);
    }
    blocked(ctx, source, |client, deadline| {
        fleet::queue(Job::Run {
            client,
            deadline,
            source,
            run,
        })
    })
}

/// Blocks the calling client, lets `queue` put its job (of `source`) in this turn, and
/// asks for the turn's flush.
fn blocked(ctx: &Context, source: SourceId, queue: impl FnOnce(BlockedClient, Instant)) -> Reply {
    let timeout_ms = current::request_timeout_ms();
    let client = BlockedClient::block(ctx, source, timeout_ms);
    queue(client, Instant::now() + Duration::from_millis(timeout_ms));
    stats::of(source).misses_on_loop.inc();
    FLUSH.request();
    Reply::Blocked
}

/// Sends a READ or GET miss's row lookup from the event loop when a connection can take
/// it, else to a worker (`worker::submit_lookup`).
pub fn submit_lookup(ctx: &Context, checked: MayWait, lookup: RowLookup) -> Reply {
    // A view's row may take as long as its query does (it is read alone, not batched):
    // behind it on a connection, other misses would wait for it.
    if !lookup.schema.batchable
        || large_rows(&lookup.schema)
        || worker::hold::active()
        || standby::could_take(lookup.schema.source, lookup.needed)
        || !fleet::takes_a_job(lookup.schema.source)
    {
        return worker::submit_lookup(ctx, checked, lookup);
    }
    blocked(ctx, lookup.schema.source, |client, deadline| {
        fleet::queue_lookup(Lookup {
            client,
            deadline,
            lookup,
        })
    })
}

fn flush(_ctx: &Context) -> bool {
    fleet::flush();
    false
}

/// Whether the event loop takes a MULTIREAD's or MGET's missed `keys` of `schema`
/// (`submit_many`): one statement reads them, and a connection has room.
pub fn takes_many(schema: &TableSchema, keys: &[CanonicalPk]) -> bool {
    !worker::hold::active()
        && !large_rows(schema)
        && job::one_statement_reads(schema, keys)
        && fleet::takes_a_job(schema.source)
}

/// Whether a row of the table was once too long for the event loop to read (its connection
/// broke on it): its misses are read by the workers.
fn large_rows(schema: &TableSchema) -> bool {
    (schema.stats.large_rows).load(std::sync::atomic::Ordering::Relaxed)
}

/// Sends the statement reading `keys` from the event loop (`takes_many` said it may);
/// `then` makes the completion from each key's row.
pub fn submit_many(
    ctx: &Context,
    _: MayWait,
    schema: Arc<TableSchema>,
    keys: Arc<[CanonicalPk]>,
    then: ThenRows,
) -> Reply {
    blocked(ctx, schema.source, |client, deadline| {
        fleet::queue(Job::Many {
            client,
            deadline,
            schema,
            keys,
            then,
        })
    })
}
