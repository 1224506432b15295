//! Redis's own events that pgcache follows: expirations and evictions of its entries (counted,
//! and raised as `expire` / `evict` events), replicas coming online (sent the hooks), and the
//! end of a load from disk or a promotion to primary (entries no listener covered: see
//! `invalidation::apply`), and the cron (event-loop connections gone silent or drained: `cache::onloop`).

use crate::cache;
use crate::cache::emptied;
use crate::config::current;
use crate::error;
use crate::events;
use crate::events::hooks;
use crate::invalidation;
use crate::model::event;
use crate::model::source::SourceId;
use crate::module::parameters;
use crate::query::dropped;
use crate::redis::server_events::{self, ServerEvents, SetRead};
use crate::stats;
use redis_module::Context;

/// Subscribes to the events. At load.
pub fn subscribe(ctx: &Context) {
    server_events::subscribe::<Followed>(ctx);
}

struct Followed;

impl ServerEvents for Followed {
    /// Counts expirations and evictions of pgcache's entries and raises the `expire` and
    /// `evict` events.
    fn key_removed(ctx: &Context, key: &[u8], evicted: bool) {
        error::panic::guard("a keyspace event", || key_removed(ctx, key, evicted));
    }

    /// A tag's set removed another way than by its drain takes its entries with it.
    fn key_unlinking(ctx: &Context, name: &[u8], set: &SetRead<'_>) {
        error::panic::guard("a key's removal", || {
            cache::tags::orphans::key_unlinking(ctx, name, set)
        });
    }

    fn loading_ended(ctx: &Context) {
        error::panic::guard("the end of a load", || {
            emptied::forget_all();
            dropped::index_lost(ctx, &cache::dbs_with_keys(ctx));
            invalidation::data_loaded(ctx)
        });
    }

    fn promoted(ctx: &Context) {
        error::panic::guard("a promotion to primary", || {
            emptied::forget_all();
            dropped::index_lost(ctx, &cache::dbs_with_keys(ctx));
            invalidation::promoted(ctx)
        });
    }

    fn demoted(ctx: &Context) {
        error::panic::guard("a demotion to replica", || {
            emptied::forget_all();
            invalidation::demoted();
            // Its primary drops the results it serves now; its own index covers nothing.
            dropped::index_lost(ctx, &[]);
        });
    }

    fn dbs_changed(ctx: &Context) {
        error::panic::guard("a FLUSHDB or SWAPDB", || {
            // A swap may bring entries where a flush under way has scanned already.
            emptied::forget_all();
            dropped::index_lost(ctx, &cache::dbs_with_keys(ctx))
        });
    }

    /// Closes the event loop's PostgreSQL connections that went silent, or every one during
    /// a drain, though no miss came to look.
    fn cron(_ctx: &Context) {
        error::panic::guard("the cron's look at PostgreSQL connections", || {
            cache::onloop::look_after()
        });
    }

    /// Sends the hooks and the named sources to replicas.
    fn replica_online(ctx: &Context) {
        error::panic::guard("a replica coming online", || {
            hooks::on_replica_online(ctx);
            parameters::on_replica_online(ctx);
        });
    }
}

fn key_removed(ctx: &Context, name: &[u8], evicted: bool) {
    // Every source's keys start with the default source's prefix (a named one's go on
    // with `@<name>:`).
    let prefix = current::key_prefix(SourceId::DEFAULT);
    let Some(entry) = name.strip_prefix(prefix.as_bytes()) else {
        return;
    };
    // A key naming no installed source (one removed, or written by hand) is no source's:
    // no figure or index of another's counts it.
    let Some(source) = current::source_of_key(name) else {
        return;
    };
    // A tag's set is no entry: not counted, no event. Evicted where its members could not
    // be read as it went, its entries must go another way.
    let own = crate::model::source::split(entry).map_or(entry, |(_, rest)| rest);
    if own.starts_with(crate::model::tags::SET_MARK.as_bytes()) {
        if evicted && !server_events::unlinks_followed() {
            cache::tags::orphans::set_evicted_unread(ctx, source, name);
        }
        return;
    }
    // A result leaves its own source's index.
    if let Some((_, rest)) = crate::model::source::split(entry)
        && rest.starts_with(crate::query::key::RESULT_TAG.as_bytes())
        && let Ok(key) = std::str::from_utf8(name)
    {
        let db = crate::redis::keyspace::selected_db(ctx);
        crate::query::membership::of(source).remove(&(db, key.into()));
    }
    let kind = if evicted {
        stats::of(source).evictions.inc();
        event::EventKind::Evict
    } else {
        stats::of(source).expirations.inc();
        event::EventKind::Expire
    };
    if events::wanted(kind) {
        // The table as the source names it: a named source's key goes on with `@<name>:`,
        // which its event says as `source`.
        let own = crate::model::source::split(entry).map_or(entry, |(_, rest)| rest);
        let own = String::from_utf8_lossy(own);
        let (table, key) = cache::split_entry_name(&own);
        events::publish(ctx, kind, source, table, key);
    }
}
