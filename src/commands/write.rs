//! PGCACHE.WRITE <table> <pk_json> <data_json> [ttl], PGCACHE.INVALIDATE <table> <pk_json>
//! and PGCACHE.FLUSH <table>:
//! cache-only changes (PostgreSQL is not written), replicated like every cache write.

use crate::cache;
use crate::commands::{ttl_arg, with_schema};
use crate::error::Error;
use crate::events::{self, EventKind};
use crate::fill;
use crate::flush;
use crate::key;
use crate::reply::Reply;
use crate::requests;
use crate::stats;
use crate::tunables;
use redis_module::Context;
use serde_json::Value;

pub fn write(ctx: &Context, args: &[&[u8]]) -> Reply {
    if !(4..=5).contains(&args.len()) {
        return Reply::WrongArity;
    }
    let ttl = match ttl_arg(args.get(4)) {
        Ok(t) => t.unwrap_or_else(tunables::default_ttl),
        Err(e) => return e.into(),
    };
    let data = match serde_json::from_slice::<Value>(args[3]) {
        Ok(Value::Object(_)) => String::from_utf8_lossy(args[3]).into_owned(),
        Ok(_) => {
            return Error::new(
                "data must be a JSON object (the row), such as {\"id\":1,\"name\":\"x\"}",
            )
            .into();
        }
        Err(e) => return Error::new(format!("data is not valid JSON ({e})")).into(),
    };
    let pk_arg = args[2].to_vec();
    with_schema(ctx, args[1], move |ctx, schema| {
        let pk = match key::canonicalise(&pk_arg, &*schema) {
            Ok(pk) => pk,
            Err(e) => return Error::new(e).into(),
        };
        requests::describe(&schema.stats, pk.json.as_str(), 0);
        let key = schema.cache_key(&pk.json);
        // A fill in flight must not overwrite what the client wrote.
        fill::invalidated(&key);
        cache::store(ctx, &key, &data, ttl);
        stats::WRITES.inc();
        events::publish(ctx, EventKind::Write, &schema.display, &pk.json);
        Reply::Ok
    })
}

pub fn invalidate(ctx: &Context, args: &[&[u8]]) -> Reply {
    if args.len() != 3 {
        return Reply::WrongArity;
    }
    let pk_arg = args[2].to_vec();
    with_schema(ctx, args[1], move |ctx, schema| {
        let pk = match key::canonicalise(&pk_arg, &*schema) {
            Ok(pk) => pk,
            Err(e) => return Error::new(e).into(),
        };
        requests::describe(&schema.stats, pk.json.as_str(), 0);
        cache::delete(ctx, &schema.cache_key(&pk.json));
        stats::INVALIDATIONS_BY_COMMAND.inc();
        events::publish(ctx, EventKind::Invalidate, &schema.display, &pk.json);
        Reply::Ok
    })
}

/// PGCACHE.FLUSH <table>: drops every cached row of the table, a slice at a time; from the
/// reply on, none of them is served.
pub fn flush(ctx: &Context, args: &[&[u8]]) -> Reply {
    if args.len() != 2 {
        return Reply::WrongArity;
    }
    with_schema(ctx, args[1], |ctx, schema| {
        requests::describe(&schema.stats, "", 0);
        flush::start(ctx, &schema.key_prefix);
        Reply::Ok
    })
}
