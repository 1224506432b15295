//! The start and stop of one source (issue #53): one PostgreSQL database with everything
//! that follows it, in named steps. Its pool, which its workers' jobs and its feed borrow;
//! its event-loop fleet; its feed (the apply step's coverage, the freshness prober, the
//! replication stream or NOTIFY listener). What serves every source (commands, the deadline
//! thread, the workers, metrics, the main-thread hand-over) is started and stopped by
//! `lib.rs` around it.
//!
//! A stop undoes a start in reverse, the feed first: it holds its threads, which hold the
//! feed, and they read the pool.

use crate::cache::onloop;
use crate::config::Settings;
use crate::error::Error;
use crate::invalidation;
use crate::model::source::SourceId;
use crate::pg::{pool, schema};
use crate::query::statements;
use redis_module::Context;
use std::time::Duration;

/// Starts `source` on `settings`, after the server-wide threads (its misses go to the
/// workers and the main thread). On a failure, what was started is stopped again.
pub fn start(ctx: &Context, source: SourceId, settings: &Settings) -> Result<(), Error> {
    // Its tables are described afresh, under this load's settings.
    schema::of(source).clear();
    // The source's part owns the pool; the workers and the feed borrow it from there.
    let pool = pool::Pool::new(source, settings.pg.clone(), settings.pool_size)
        .map_err(|e| Error::invalid(format!("cannot set up TLS to PostgreSQL: {e}")))?;
    pool::install(source, pool);
    if let Err(e) = onloop::start(source, &settings.pg) {
        pool::remove(source);
        return Err(Error::invalid(format!(
            "cannot set up TLS to PostgreSQL: {e}"
        )));
    }
    if let Err(why) = start_feed(ctx, source, settings) {
        stop_feed(source);
        onloop::stop(source);
        pool::remove(source);
        return Err(Error::internal(why));
    }
    Ok(())
}

/// The feed of `source`: the apply step's coverage, the freshness prober (which runs with
/// invalidation off too: it closes the circuit after an outage), and the stream or listener
/// the settings ask for, waited for up to its first connection attempt.
fn start_feed(ctx: &Context, source: SourceId, settings: &Settings) -> Result<(), String> {
    invalidation::init(ctx, source, settings.listen);
    let first_attempt = settings.pg.connect_timeout + Duration::from_millis(500);
    let channel = settings.invalidation_channel.clone();
    invalidation::horizon::start(source, channel)
        .map_err(|e| format!("cannot start the freshness prober: {e}"))?;
    if settings.listen {
        invalidation::start(ctx, source, settings, first_attempt)
            .map_err(|e| format!("cannot start the invalidation listener: {e}"))?;
    }
    Ok(())
}

/// Whether every source may be stopped now (no event-loop connection is being opened).
pub fn may_stop() -> Result<(), Error> {
    onloop::may_stop()
}

/// Stops `source`, after the workers stopped (no client waits on it, nothing of it is in
/// flight). Nothing is written to the keyspace: a key written during MODULE UNLOAD would
/// make Redis replicate the UNLOAD itself to the replicas.
pub fn stop(source: SourceId) {
    stop_feed(source);
    onloop::stop(source);
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
fn stop_feed(source: SourceId) {
    invalidation::stop(source);
    invalidation::deinit(source);
}
