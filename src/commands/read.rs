//! PGCACHE.READ <table> <pk_json> [ttl] [AFTER <lsn>] [MAXSTALE <ms>] [WITHAGE]
//!
//! The hit path is the product: when the client sent the canonical key (clients that
//! build keys as documented always do), a hit is a hash lookup for the table, one key
//! open and a reply straight from Redis's memory, with no JSON parsing. `AFTER` a position
//! the cache does not reflect yet, or a cache the change feed has not vouched for within the
//! freshness bound, reads PostgreSQL instead.

use crate::cache::miss::{self, KeyFrom, Read, count_hit};
use crate::cache::{self, Readable};
use crate::commands::docs::{Arg, Command, Keys, ONE_ROW, PK, Params, TABLE};
use crate::commands::{ReadOptions, with_age};
use crate::config::current;
use crate::model::key;
use crate::pg::schema;
use crate::redis::acl;
use crate::redis::keyspace::Name;
use crate::requests::reply::Reply;
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
    args: Params::new(&[
        TABLE,
        PK,
        Arg::ttl(),
        Arg::after(),
        Arg::max_stale(),
        Arg::with_age(),
    ]),
};

pub fn read(ctx: &Context, args: &[&[u8]]) -> Reply {
    let (table_arg, pk_arg) = (args[1], args[2]);
    let options = match ReadOptions::parse(&args[3..]) {
        Ok(options) => options,
        Err(e) => return e.into(),
    };
    if options.with_age {
        return with_age::read(ctx, table_arg, pk_arg, None, &options).unwrap_or_else(Reply::from);
    }
    let ttl = options.ttl.unwrap_or_else(current::default_ttl);
    let read = match options.read() {
        Ok(read) => read,
        Err(e) => return e.into(),
    };
    if read != Read::Cached {
        return miss::on_worker(ctx, table_arg, pk_arg, ttl, None, read);
    }
    let (schema, as_sent) = match lookup_canonical(ctx, table_arg, pk_arg) {
        AsSent::UnknownTable => {
            return miss::on_worker(ctx, table_arg, pk_arg, ttl, None, Read::Cached);
        }
        AsSent::Hit => return Reply::Sent,
        AsSent::NotCached(schema, name) => (schema, Some(name)),
        AsSent::Refused(schema) => (schema, None),
    };
    let pk = match key::canonicalise(pk_arg, &*schema) {
        Ok(pk) => pk,
        Err(e) => return Reply::Error(e),
    };
    // The name the canonical key was probed under (None: the client may not read it).
    let canonical = if pk.json.as_bytes() == pk_arg {
        as_sent
    } else {
        match cache::reply_if_readable(ctx, schema.key_prefix.as_bytes(), pk.json.as_bytes()) {
            Readable::Replied => {
                schema.stats.calls.inc();
                count_hit(ctx, &schema, pk.json.as_bytes());
                return Reply::Sent;
            }
            Readable::NotCached(name) => Some(name),
            Readable::Refused => None,
        }
    };
    let Some(name) = canonical else {
        return acl::no_read_permission(&pk.cache_key(&schema.key_prefix)).into();
    };
    if pk.unconfirmed {
        // Only PostgreSQL can tell which entry this spelling names (a hit above proved the
        // spelling canonical: entries are only ever written under confirmed keys).
        return miss::on_worker(ctx, table_arg, pk_arg, ttl, None, Read::Cached);
    }
    // READ names no key, so the server could not redirect it (GET's key it did).
    miss::one(ctx, schema, pk, ttl, KeyFrom::Derived(name))
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
            Readable::NotCached(name) => AsSent::NotCached(schema.clone(), name),
            Readable::Refused => AsSent::Refused(schema.clone()),
        }
    })
}
