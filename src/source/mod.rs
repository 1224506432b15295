//! The start and stop of one source (issue #53): one PostgreSQL database with everything
//! that follows it, in named steps. Its pool, which its workers' jobs and its feed borrow;
//! its event-loop fleet; its feed (the apply step's coverage, the freshness prober, the
//! replication stream or NOTIFY listener). What serves every source (commands, the deadline
//! thread, the workers, metrics, the main-thread hand-over) is started and stopped by
//! `lib.rs` around it.
//!
//! A stop undoes a start in reverse, the feed first: it holds its threads, which hold the
//! feed, and they read the pool.
//!
//! A named source is registered first (its number, its name, every layer's part: `parts`),
//! so the workers' scheduler can give it queues, then started like the default source.
//!
//! At run time (PGCACHE.SOURCE) a source is added the same way, with a number never used
//! before in this load, and removed by stopping it and retiring its number: its name no
//! longer resolves, but its parts stay installed until unload, so that whatever still holds
//! the number (a job a worker runs, a deadline) finds its own part and its own keys, never a
//! missing part or the default source's.

mod parts;

use crate::cache::{fill, onloop, worker};
use crate::config::{NamedSource, Settings, current};
use crate::error::Error;
use crate::invalidation;
use crate::model::source::SourceId;
use crate::pg::{pool, schema, standby};
use crate::query::{generations, statements};
use crate::requests::blocked;
use redis_module::Context;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

/// Registers the named sources declared at load: each gets its number and its part of every
/// layer, in the order declared (the numbers returned).
pub fn register(named: &[NamedSource]) -> Result<Vec<SourceId>, Error> {
    (named.iter())
        .map(|source| {
            let id = current::add_named(&source.name, &source.settings)?;
            parts::add(id);
            current::serve_named(id);
            Ok(id)
        })
        .collect()
}

/// Forgets every named source, retired ones too (at unload, or a failed load, once all are
/// stopped): their parts are dropped and their numbers may be handed out again by the next
/// load.
pub fn unregister_all() {
    for id in current::numbered_ids() {
        generations::forget_known(id);
        parts::forget(id);
        current::remove_named(id);
    }
    current::forget_named_numbers();
}

/// Starts the default source on `settings`, then each named source of `named` (registered,
/// in its order) on its own; on a failure, what was started is stopped again and the error
/// names the source.
pub fn start_all(ctx: &Context, settings: &Settings, named: &[SourceId]) -> Result<(), Error> {
    start(ctx, SourceId::DEFAULT, settings)?;
    for (at, (&id, source)) in named.iter().zip(&settings.named).enumerate() {
        if let Err(e) = start(ctx, id, &source.settings) {
            for &started in named[..at].iter().rev() {
                stop(started);
            }
            stop(SourceId::DEFAULT);
            return Err(Error::invalid(format!(
                "source {}: {}",
                source.name,
                e.message()
            )));
        }
    }
    Ok(())
}

/// Adds named source `named` while the server runs: registered, given its share of the
/// workers, started. On a failure nothing of it is served (its number is retired).
pub fn add(ctx: &Context, named: &NamedSource) -> Result<SourceId, Error> {
    let id = register(std::slice::from_ref(named))?[0];
    worker::add_source(id, named.settings.pool_size);
    // The event loop does not wait for its feed's first connection, as a load does: its
    // reads go to its database until the feed vouches for what it caches.
    if let Err(e) = start_waiting(ctx, id, &named.settings, Duration::ZERO) {
        worker::remove_source(id);
        current::retire_named(id);
        return Err(Error::invalid(format!(
            "source {}: {}",
            named.name,
            e.message()
        )));
    }
    Ok(id)
}

/// Removes named source `id` while the server runs: refused while a client waits for its
/// database (a drain of the source ends that), unless `anyway` (the primary's or the AOF's
/// word: a replica must follow it; its waiting clients are answered by their jobs, which
/// keep the retired number's parts); then stopped (a connection being opened for
/// its event-loop fleet is not waited for: unload waits for it), and its number retired.
/// Its entries stay in the keyspace (a source added again under the name finds them, as a
/// restart would), unserved meanwhile.
pub fn remove(id: SourceId, name: &str, anyway: bool) -> Result<(), Error> {
    let waiting = blocked::waiting_for(id);
    if waiting > 0 && !anyway {
        return Err(Error::invalid(format!(
            "source {name}: {waiting} clients are waiting for its database; run \
             PGCACHE.DRAIN 10 SOURCE {name}, repeat it until it replies 0, and try again"
        )));
    }
    // The event loop does not wait for its threads, which may be connecting to a database
    // that no longer answers (often why it is removed).
    stop_with(id, onloop::retire, &detach);
    // Its fills in flight read a database the name may no longer mean: nobody asking under
    // the name from now on joins them, and they cache nothing; its jobs still running
    // register theirs detached (retired first, so a fill registered meanwhile is counted).
    current::retire_named(id);
    fill::invalidated_scope(&current::scope(id));
    generations::forget_known(id);
    worker::remove_source(id);
    Ok(())
}

/// Stops every source: the named ones in reverse, then the default source.
pub fn stop_all() {
    for id in current::named_ids().into_iter().rev() {
        stop(id);
    }
    stop(SourceId::DEFAULT);
}

/// Starts `source` on `settings`, after the server-wide threads (its misses go to the
/// workers and the main thread). On a failure, what was started is stopped again.
pub fn start(ctx: &Context, source: SourceId, settings: &Settings) -> Result<(), Error> {
    let first_attempt = settings.pg.connect_timeout + Duration::from_millis(500);
    start_waiting(ctx, source, settings, first_attempt)
}

/// `start`, waiting up to `first_attempt` for the feed's first connection attempt.
fn start_waiting(
    ctx: &Context,
    source: SourceId,
    settings: &Settings,
    first_attempt: Duration,
) -> Result<(), Error> {
    // Its tables are described afresh, under this load's settings.
    schema::of(source).clear();
    // The source's part owns the pool; the workers and the feed borrow it from there.
    let pool = pool::Pool::new(source, settings.pg.clone(), settings.pool_size)
        .map_err(|e| Error::invalid(format!("cannot set up TLS to PostgreSQL: {e}")))?;
    pool::install(source, pool);
    if let Err(e) = standby::start(source, settings) {
        standby::stop(source, &join);
        pool::remove(source);
        return Err(e);
    }
    if let Err(e) = onloop::start(source, &settings.pg) {
        standby::stop(source, &join);
        pool::remove(source);
        return Err(Error::invalid(format!(
            "cannot set up TLS to PostgreSQL: {e}"
        )));
    }
    if let Err(why) = start_feed(ctx, source, settings, first_attempt) {
        stop_feed(source, &join);
        onloop::stop(source);
        standby::stop(source, &join);
        pool::remove(source);
        return Err(Error::internal(why));
    }
    Ok(())
}

/// The feed of `source`: the apply step's coverage, the freshness prober (which runs with
/// invalidation off too: it closes the circuit after an outage), and the stream or listener
/// the settings ask for, waited for up to its first connection attempt (`first_attempt`).
fn start_feed(
    ctx: &Context,
    source: SourceId,
    settings: &Settings,
    first_attempt: Duration,
) -> Result<(), String> {
    invalidation::init(ctx, source, settings.listen);
    let channel = settings.invalidation_channel.clone();
    invalidation::horizon::start(source, channel)
        .map_err(|e| format!("cannot start the freshness prober: {e}"))?;
    if settings.listen {
        invalidation::start(ctx, source, settings, first_attempt)
            .map_err(|e| format!("cannot start the invalidation listener: {e}"))?;
    }
    Ok(())
}

/// Threads of sources removed while the server ran, left to end on their own (each ends
/// within its connect timeout or patience once told to stop): the library may be unloaded
/// only once they have.
static DETACHED: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

fn join(thread: JoinHandle<()>) {
    let _ = thread.join();
}

fn detach(thread: JoinHandle<()>) {
    DETACHED.lock().unwrap().push(thread);
}

/// Whether every source may be stopped now: no event-loop connection is being opened, and
/// no thread of a removed source still runs.
pub fn may_stop() -> Result<(), Error> {
    onloop::may_stop()?;
    let mut detached = DETACHED.lock().unwrap();
    detached.retain(|thread| !thread.is_finished());
    if !detached.is_empty() {
        return Err(Error::invalid(format!(
            "{} threads of removed sources are still ending (each within its connect \
             timeout); retry shortly",
            detached.len()
        )));
    }
    Ok(())
}

/// Stops `source`, after the workers stopped (no client waits on it, nothing of it is in
/// flight), waiting for its threads. Nothing is written to the keyspace: a key written
/// during MODULE UNLOAD would make Redis replicate the UNLOAD itself to the replicas.
pub fn stop(source: SourceId) {
    stop_with(source, onloop::stop, &join);
}

/// `stop`, its fleet closed by `stop_fleet`, its threads handed to `end`.
fn stop_with(source: SourceId, stop_fleet: fn(SourceId), end: &dyn Fn(JoinHandle<()>)) {
    stop_feed(source, end);
    stop_fleet(source);
    standby::stop(source, end);
    // Nothing runs on the pool any more: its connections close, and a module loaded again
    // makes its own.
    pool::remove(source);
    schema::of(source).clear();
    // Loaded again, the module learns its statements afresh, under that load's settings (the
    // cache prefix among them). The index and the generations it knows stay with the
    // library's memory, true as the feed resumes.
    statements::of(source).forget_all();
}

/// Stops the feed's threads, then drops what its mailbox still holds.
fn stop_feed(source: SourceId, end: &dyn Fn(JoinHandle<()>)) {
    invalidation::stop(source, end);
    invalidation::deinit(source);
}
