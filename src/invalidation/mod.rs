//! Invalidation driven by PostgreSQL, from one of two sources: `replication` streams a logical
//! replication slot (PostgreSQL's log; writers pay nothing), `listener` LISTENs for the
//! triggers' notifications. Both say which rows changed; `translate` turns that into cache
//! keys (a partition's changes its ancestors' too, a policy's table's the rows of the tables
//! it guards, `policies`), `ddl` what DDL reported through the same feed asks, gathered as
//! `changes`; `apply` applies them on the Redis main thread and decides when cached entries
//! can be trusted at all, `position` keeps how far the log has been applied, in the
//! keyspace, and `horizon` probes how recently the feed vouched for the cache. Each source
//! has its `feed`: the state of all of this for its database, below the modules that act on
//! it (they take `&Feed`; `feed/` holds each part's state, `changes` what its mailbox holds).

pub mod apply;
mod changes;
mod ddl;
mod durability;
mod feed;
mod heartbeat;
pub mod horizon;
pub mod listener;
mod policies;
pub mod position;
pub mod replication;
pub mod translate;

pub use apply::{deinit, init};
pub use feed::{add_part, each, forget_part, of};

use crate::config::{InvalidationSource, Settings};
use crate::model::source::SourceId;
use crate::pg::pool;
use redis_module::{Context, ContextFlags};
use std::time::Duration;

/// Starts the feed of `source` the settings ask for, on its pool, and waits (at most
/// `limit`) for its first connection attempt. Main thread, at load.
pub fn start(
    ctx: &Context,
    source: SourceId,
    settings: &Settings,
    limit: Duration,
) -> std::io::Result<()> {
    let pool = pool::of(source).map_err(|e| std::io::Error::other(e.message().to_string()))?;
    let feed = of(source);
    let slot = |fallback_channel| replication::SlotSource {
        base_slot: settings.replication_slot.clone(),
        slot: settings.replication_slot.clone(),
        publication: settings.publication.clone(),
        fallback_channel,
    };
    crate::config::current::of(source).fell_back_to_notify(false);
    match settings.invalidation_source {
        InvalidationSource::Notify => {
            listener::start(feed.clone(), pool, settings.invalidation_channel.clone())?;
            feed.listener.wait_for_first_attempt(limit);
        }
        InvalidationSource::Replication => {
            replication::start(ctx, feed.clone(), pool, slot(None))?;
            feed.replication.wait_for_first_attempt(limit);
        }
        InvalidationSource::Auto => {
            let fallback = slot(Some(settings.invalidation_channel.clone()));
            replication::start(ctx, feed.clone(), pool, fallback)?;
            feed.replication.wait_for_first_attempt(limit);
            if feed.replication.status().fell_back.is_some() {
                feed.listener.wait_for_first_attempt(limit);
            }
        }
    }
    Ok(())
}

/// Redis finished loading an RDB or AOF (`server_events`). A replica's dataset is its
/// primary's, kept fresh by the primary's deletions; anywhere else the loaded entries were
/// covered by no source of this process.
pub fn data_loaded(ctx: &Context) {
    if !ctx.get_flags().contains(ContextFlags::SLAVE) {
        distrust(ctx, "data was loaded from disk");
    }
}

/// This replica became a primary (`server_events`): its entries came from the old primary.
pub fn promoted(ctx: &Context) {
    distrust(ctx, "this replica became a primary");
}

/// This server became a replica (`server_events`): its primary consumes every slot now.
pub fn demoted() {
    each(|feed| feed.replication.demoted());
}

/// Entries no feed of this process covered: each replication source resumes from the
/// position they came with; each listener flushes its source's.
fn distrust(ctx: &Context, why: &str) {
    each(|feed| {
        if feed.replication.running() {
            if feed.apply.hold_until_resumed(ctx, why) {
                replication::load_position_soon(feed);
            }
        } else {
            feed.apply.distrust(ctx, why);
        }
    });
}

/// Stops the feed of `source` (and the listener `auto` may have started instead); `end`
/// takes each of its threads (to wait for it, or leave it to end on its own).
pub fn stop(source: SourceId, end: &dyn Fn(std::thread::JoinHandle<()>)) {
    horizon::stop(source, end);
    let feed = of(source);
    replication::stop(&feed, end);
    feed.listener.stop(end);
}
