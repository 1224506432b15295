//! PGCACHE.READ <table> <pk_json> [ttl]
//!
//! The hit path is the product: when the client sent the canonical key (clients that
//! build keys as documented always do), a hit is a hash lookup for the table, one key
//! open and a reply straight from Redis's memory, with no JSON parsing.

use crate::cache::fill::{self, FillTicket, LeadOrWait, Outcome};
use crate::cache::worker::{self, KeyedFill, RowLookup};
use crate::cache::{self, Readable};
use crate::commands::docs::{Arg, Command, Keys, ONE_ROW, PK, TABLE};
use crate::commands::{count_hit, ttl_arg, utf8};
use crate::config::current;
use crate::error::{Error, Result};
use crate::events;
use crate::model::event::EventKind;
use crate::model::key::{self, CanonicalPk};
use crate::pg::{normalise, schema};
use crate::redis::acl;
use crate::redis::cluster;
use crate::requests::blocked::Completion;
use crate::requests::reply::Reply;
use crate::stats;
use crate::stats::Tracked;
use redis_module::Context;
use std::sync::Arc;

pub static READ: Command = Command {
    name: "pgcache.read",
    entry: super::command_fn!(READ),
    handler: read,
    tracked: Some(Tracked::Read),
    flags: "readonly",
    summary: "Returns a PostgreSQL row as JSON, from the cache or, on a miss, from PostgreSQL",
    since: "0.1.0",
    complexity: ONE_ROW,
    keys: Keys::None,
    tips: "",
    args: &[TABLE, PK, Arg::ttl()],
};

pub fn read(ctx: &Context, args: &[&[u8]]) -> Reply {
    let (table_arg, pk_arg) = (args[1], args[2]);
    let ttl = match ttl_arg(args.get(3)) {
        Ok(t) => t.unwrap_or_else(current::default_ttl),
        Err(e) => return e.into(),
    };
    let (schema, refused_as_sent) = match lookup_canonical(ctx, table_arg, pk_arg) {
        AsSent::UnknownTable => return read_on_worker(ctx, table_arg, pk_arg, ttl, None),
        AsSent::Hit => return Reply::Sent,
        AsSent::NotCached(schema) => (schema, false),
        AsSent::Refused(schema) => (schema, true),
    };
    let pk = match key::canonicalise(pk_arg, &*schema) {
        Ok(pk) => pk,
        Err(e) => return Reply::Error(e),
    };
    let canonical_readable = if pk.json.as_bytes() == pk_arg {
        !refused_as_sent
    } else {
        match cache::reply_if_readable(ctx, schema.key_prefix.as_bytes(), pk.json.as_bytes()) {
            Readable::Replied => {
                schema.stats.calls.inc();
                count_hit(ctx, &schema, pk.json.as_bytes());
                return Reply::Sent;
            }
            Readable::NotCached => true,
            Readable::Refused => false,
        }
    };
    if !canonical_readable {
        return acl::no_read_permission(&schema.cache_key(&pk.json)).into();
    }
    if pk.unconfirmed {
        // Only PostgreSQL can tell which entry this spelling names (a hit above proved the
        // spelling canonical: entries are only ever written under confirmed keys).
        return read_on_worker(ctx, table_arg, pk_arg, ttl, None);
    }
    // READ names no key, so the server could not redirect it (GET's key it did).
    if let Err(redirect) = cluster::check(ctx, &schema.cache_key(&pk.json)) {
        return redirect.into();
    }
    fetch(ctx, schema, pk, ttl)
}

/// A miss of a known key: wait for the fill of it in flight, or fetch it and fill.
pub fn fetch(ctx: &Context, schema: Arc<schema::TableSchema>, pk: CanonicalPk, ttl: u64) -> Reply {
    let key = schema.cache_key(&pk.json);
    if let Err(refusal) = worker::may_wait(ctx) {
        return refusal;
    }
    let timeout_ms = current::request_timeout_ms();
    let ticket = match fill::lead_or_wait(ctx, &key, timeout_ms, &schema.stats, &pk.json) {
        LeadOrWait::Wait => return Reply::Blocked,
        LeadOrWait::Lead(ticket) => ticket,
    };
    let then = {
        let (schema, pk) = (schema.clone(), pk.clone());
        Box::new(move |outcome: Outcome| {
            ticket.answer_waiters(&outcome);
            fill_completion(outcome, schema, pk, ttl, ticket)
        })
    };
    worker::submit_lookup(ctx, RowLookup { schema, pk, then })
}

/// What the hit path found for the table and key as the client sent them.
enum AsSent {
    UnknownTable,
    /// Replied from the cache.
    Hit,
    /// No entry under the key exactly as sent (it may still be a non-canonical spelling).
    NotCached(Arc<schema::TableSchema>),
    /// The client's ACL user may not read the key as sent (its canonical spelling decides).
    Refused(Arc<schema::TableSchema>),
}

/// The hit path: no JSON parsing, no locks, no allocation of ours when the client sent the
/// canonical key of a table seen before.
fn lookup_canonical(ctx: &Context, table_arg: &[u8], pk_arg: &[u8]) -> AsSent {
    schema::with_cached(table_arg, |schema| {
        let Some(schema) = schema else {
            return AsSent::UnknownTable;
        };
        match cache::reply_if_readable(ctx, schema.key_prefix.as_bytes(), pk_arg) {
            Readable::Replied => {
                schema.stats.calls.inc();
                count_hit(ctx, schema, pk_arg);
                AsSent::Hit
            }
            Readable::NotCached => AsSent::NotCached(schema.clone()),
            Readable::Refused => AsSent::Refused(schema.clone()),
        }
    })
}

/// A READ whose cache key only PostgreSQL can tell: the first use of a table spelling (the
/// worker reads its schema), or a key PostgreSQL must spell (`normalise`). Once the worker
/// knows the key, the READ goes the way of any miss: it waits for a fill of that key in
/// flight, or leads one. With `named`, the key the client named (PGCACHE.GET), which must
/// be that canonical key.
pub fn read_on_worker(
    ctx: &Context,
    table_arg: &[u8],
    pk_arg: &[u8],
    ttl: u64,
    named: Option<Vec<u8>>,
) -> Reply {
    let table = match checked_table(table_arg) {
        Ok(t) => t,
        Err(e) => return e.into(),
    };
    let pk_arg = pk_arg.to_vec();
    worker::submit_keyed(
        ctx,
        Box::new(move |client| {
            let schema = schema::resolve(client, &table)?;
            let pk = normalise::confirm(client, &schema, key::canonicalise(&pk_arg, &*schema)?)?;
            if let Some(named) = &named {
                must_be_canonical(named, &schema, &pk)?;
            }
            // A key the client named was routed by the server; a derived one is checked.
            let derived = named.is_none();
            let then = {
                let (schema, pk) = (schema.clone(), pk.clone());
                Box::new(move |outcome, ticket| {
                    first_completion(outcome, schema, pk, ttl, ticket, derived)
                })
            };
            Ok(KeyedFill { schema, pk, then })
        }),
    )
}

/// The main-thread half of `read_on_worker`'s miss. A `derived` key (READ's) is redirected
/// when this cluster node does not serve it. The entry may already be cached under the
/// canonical key (another spelling filled it); then the cached row is the answer, as for any
/// hit, and the fetched one is dropped.
fn first_completion(
    outcome: Outcome,
    schema: Arc<schema::TableSchema>,
    pk: CanonicalPk,
    ttl: u64,
    ticket: FillTicket,
    derived: bool,
) -> Completion {
    Box::new(move |ctx| {
        if derived && let Err(redirect) = cluster::check(ctx, &schema.cache_key(&pk.json)) {
            ticket.finish(&outcome);
            return redirect.into();
        }
        // A derived key's read permission is checked here, where it is first known (GET's
        // key the server checked).
        let (prefix, suffix) = (schema.key_prefix.as_bytes(), pk.json.as_bytes());
        let cached = if derived {
            cache::reply_if_readable(ctx, prefix, suffix)
        } else if cache::reply_if_cached(ctx, prefix, suffix) {
            Readable::Replied
        } else {
            Readable::NotCached
        };
        match cached {
            Readable::Replied => {
                ticket.finish(&outcome);
                count_hit(ctx, &schema, pk.json.as_bytes());
                return Reply::Sent.described(&schema.stats, pk.json.as_str(), 0);
            }
            Readable::Refused => {
                ticket.finish(&outcome);
                return acl::no_read_permission(&schema.cache_key(&pk.json)).into();
            }
            Readable::NotCached => {}
        }
        fill_completion(outcome, schema, pk, ttl, ticket)(ctx)
    })
}

/// Refuses a key the client named that is not the canonical key of its row, showing that.
pub fn must_be_canonical(
    named: &[u8],
    schema: &schema::TableSchema,
    pk: &CanonicalPk,
) -> Result<()> {
    let canonical = schema.cache_key(&pk.json);
    if canonical.as_bytes() == named {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{:?} is not a canonical cache key; this row's key is {canonical:?} (PGCACHE.KEY \
         gives it)",
        String::from_utf8_lossy(named)
    )))
}

pub fn checked_table(table_arg: &[u8]) -> Result<String> {
    let table = utf8(table_arg, "table name")?;
    schema::admit(table)?;
    Ok(table.to_string())
}

/// The main-thread half of a miss: cache the row, or remember for `negative_ttl` that there
/// is none, unless the key was invalidated while the query ran; then reply.
fn fill_completion(
    outcome: Outcome,
    schema: Arc<schema::TableSchema>,
    pk: CanonicalPk,
    ttl: u64,
    ticket: FillTicket,
) -> Completion {
    Box::new(move |ctx| {
        let fresh = ticket.finish(&outcome);
        let rows = outcome.as_ref().map_or(0, |row| u64::from(row.is_some()));
        let row = match outcome {
            Ok(row) => row,
            Err(e) => return Reply::Error(e).described(&schema.stats, pk.json.as_str(), rows),
        };
        stats::MISSES.inc();
        schema.stats.misses.inc();
        events::publish(ctx, EventKind::Miss, &schema.display, &pk.json);
        if fresh {
            let key = schema.cache_key(&pk.json);
            if cache::write_fetched(ctx, cache::admission(ctx, &key), &key, row.as_deref(), ttl) {
                events::publish(ctx, EventKind::Fill, &schema.display, &pk.json);
            }
        }
        // The key moves into the reply's description: this runs once per miss.
        Reply::from(row).described(&schema.stats, pk.json, rows)
    })
}
