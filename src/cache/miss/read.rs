//! READ's way to a row. The hit path is the product: when the client sent the canonical key
//! (clients that build keys as documented always do), a hit is a hash lookup for the table,
//! one key open and a reply straight from Redis's memory, with no JSON parsing. `AFTER` a
//! position the cache does not reflect yet, or a cache the change feed has not vouched for
//! within the freshness bound, reads PostgreSQL instead.

use super::{KeyFrom, Read, count_hit, on_worker, one};
use crate::cache::tags::{self, Keep};
use crate::cache::{self, Readable};
use crate::model::key::{self, CanonicalPk};
use crate::model::source::SourceId;
use crate::model::tags::Tags;
use crate::pg::schema;
use crate::redis::acl;
use crate::redis::keyspace::Name;
use crate::requests::reply::Reply;
use redis_module::Context;
use std::sync::Arc;

/// PGCACHE.READ of `table_arg`'s row `pk_arg` (as the client sent them) in `source`'s
/// database, kept (and tagged) as `keep` says once fetched.
///
/// Inline: READ's hit runs through here, and left to where the crate's code units fall, it
/// paid a call more (+45 instructions a hit, measured at #53 step 3).
#[inline]
pub fn row(
    ctx: &Context,
    source: SourceId,
    table_arg: &[u8],
    pk_arg: &[u8],
    keep: Keep,
    read: Read,
) -> Reply {
    let probed = if read == Read::Cached {
        probe(ctx, source, table_arg, pk_arg, &keep.tags)
    } else {
        Probed::OnWorker
    };
    match probed {
        Probed::Answered(reply) => reply,
        // READ names no key, so the server could not redirect it (GET's key it did).
        Probed::Missed(schema, pk, name) => one(ctx, schema, pk, keep, KeyFrom::Derived(name)),
        Probed::OnWorker => on_worker(ctx, source, table_arg, pk_arg, keep, None, read),
    }
}

/// What the cache said of a row.
enum Probed {
    /// Replied (a hit), or refused.
    Answered(Reply),
    /// Not cached under its canonical key: the name the key was probed under.
    Missed(Arc<schema::TableSchema>, CanonicalPk, Name),
    /// Only PostgreSQL can tell the key: the table is not known yet, or the key's spelling
    /// is not one pgcache can confirm alone.
    OnWorker,
}

/// The hit path: the key as sent, then (when it is not canonical) the canonical key.
fn probe(ctx: &Context, source: SourceId, table_arg: &[u8], pk_arg: &[u8], tags: &Tags) -> Probed {
    let (schema, as_sent) = match lookup_canonical(ctx, source, table_arg, pk_arg, tags) {
        AsSent::UnknownTable => return Probed::OnWorker,
        AsSent::Hit => return Probed::Answered(Reply::Sent),
        AsSent::NotCached(schema, name) => (schema, Some(name)),
        AsSent::Refused(schema) => (schema, None),
    };
    let pk = match key::canonicalise(pk_arg, &*schema) {
        Ok(pk) => pk,
        Err(e) => return Probed::Answered(Reply::Error(e)),
    };
    // The name the canonical key was probed under (None: the client may not read it).
    let canonical = if pk.json.as_bytes() == pk_arg {
        as_sent
    } else {
        if tags.is_some() {
            let key = pk.cache_key(&schema.key_prefix);
            tags::serve_tagged_only(ctx, schema.source, &key, tags);
        }
        match cache::reply_if_readable(
            ctx,
            schema.source,
            schema.key_prefix.as_bytes(),
            pk.json.as_bytes(),
        ) {
            Readable::Replied => {
                schema.stats.calls.inc();
                count_hit(ctx, &schema, pk.json.as_bytes());
                return Probed::Answered(Reply::Sent);
            }
            Readable::NotCached(name) => Some(name),
            Readable::Refused => None,
        }
    };
    let Some(name) = canonical else {
        let refusal = acl::no_read_permission(&pk.cache_key(&schema.key_prefix));
        return Probed::Answered(refusal.into());
    };
    if pk.unconfirmed {
        // Only PostgreSQL can tell which entry this spelling names (a hit above proved the
        // spelling canonical: entries are only ever written under confirmed keys).
        return Probed::OnWorker;
    }
    Probed::Missed(schema, pk, name)
}

/// What the hit path found for the table and key as the client sent them.
enum AsSent {
    UnknownTable,
    /// Replied from the cache.
    Hit,
    /// No entry under the key exactly as sent (it may still be a non-canonical spelling),
    /// and the name it was probed under.
    NotCached(Arc<schema::TableSchema>, Name),
    /// The client's ACL user may not read the key as sent (its canonical spelling decides).
    Refused(Arc<schema::TableSchema>),
}

/// The hit path: no JSON parsing, no locks, no allocation of ours when the client sent the
/// canonical key of a table seen before.
fn lookup_canonical(
    ctx: &Context,
    source: SourceId,
    table_arg: &[u8],
    pk_arg: &[u8],
    tags: &Tags,
) -> AsSent {
    schema::of(source).with_cached(table_arg, |schema| {
        let Some(schema) = schema else {
            return AsSent::UnknownTable;
        };
        if tags.is_some() {
            let key = [schema.key_prefix.as_bytes(), pk_arg].concat();
            tags::serve_tagged_only(ctx, schema.source, &String::from_utf8_lossy(&key), tags);
        }
        match cache::reply_if_readable(ctx, schema.source, schema.key_prefix.as_bytes(), pk_arg) {
            Readable::Replied => {
                schema.stats.calls.inc();
                count_hit(ctx, schema, pk_arg);
                AsSent::Hit
            }
            Readable::NotCached(name) => AsSent::NotCached(schema.clone(), name),
            Readable::Refused => AsSent::Refused(schema.clone()),
        }
    })
}
