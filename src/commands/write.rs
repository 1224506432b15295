//! PGCACHE.WRITE <table> <pk_json> <data_json> [ttl], PGCACHE.INVALIDATE <table> <pk_json>
//! and PGCACHE.FLUSH <table>:
//! cache-only changes (PostgreSQL is not written), replicated like every cache write.

use crate::cache;
use crate::cache::flush;
use crate::cache::tags::{Keep, drain};
use crate::commands::docs::{Arg, Command, Keys, PK, Params, TABLE};
use crate::commands::{only_source_option, source_option, ttl_arg, with_key, with_schema};
use crate::config::current;
use crate::error::Error;
use crate::events;
use crate::model::event::EventKind;
use crate::model::source::{Scope, SourceId};
use crate::model::tags;
use crate::query::dropped;
use crate::redis::acl::{self, Change};
use crate::redis::cluster;
use crate::requests::reply::Reply;
use crate::stats;
use crate::stats::Tracked;
use redis_module::Context;
use serde_json::value::RawValue;

pub static WRITE: Command = Command {
    name: "pgcache.write",
    entry: super::command_fn!(WRITE),
    handler: write,
    tracked: Some(Tracked::Write),
    flags: "write deny-oom",
    summary: "Caches a row's JSON under its key (PostgreSQL is not written)",
    since: "0.1.0",
    complexity: "O(1)",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[
        TABLE,
        PK,
        Arg::text("data_json"),
        Arg::ttl(),
        Arg::source(),
        Arg::tags(),
    ]),
};

pub static INVALIDATE: Command = Command {
    name: "pgcache.invalidate",
    entry: super::command_fn!(INVALIDATE),
    handler: invalidate,
    tracked: Some(Tracked::Invalidate),
    flags: "write",
    summary: "Removes a row's cache entry, or (TAG) every entry carrying any of the tags",
    since: "0.1.0",
    complexity: "O(1) for a row; O(N) for the N entries of the tags, in slices",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[
        Arg::text("table | TAG"),
        Arg::text("pk_json | tag"),
        Arg::text("tag").optional().multiple(),
        Arg::source(),
    ]),
};

pub static FLUSH: Command = Command {
    name: "pgcache.flush",
    entry: super::command_fn!(FLUSH),
    handler: flush,
    tracked: Some(Tracked::Flush),
    flags: "write",
    summary: "Removes every cache entry of a table",
    since: "0.1.0",
    complexity: "O(N) for the N keys of the database, in slices",
    keys: Keys::None,
    tips: "request_policy:all_shards response_policy:all_succeeded",
    args: Params::new(&[TABLE, Arg::source()]),
};

pub fn write(ctx: &Context, args: &[&[u8]]) -> Reply {
    let (source, keep) = match options(&args[4..]) {
        Ok(options) => options,
        Err(e) => return e.into(),
    };
    let data = match checked_row(args[3]) {
        Ok(data) => data,
        Err(e) => return e.into(),
    };
    with_key(ctx, source, args[1], args[2], move |ctx, schema, pk| {
        let key = pk.cache_key(&schema.key_prefix);
        // As Redis orders its own checks: permissions, then the slot.
        if let Err(refused) = acl::may_change(ctx, &key, Change::Set) {
            return refused.into();
        }
        if let Err(redirect) = cluster::check(ctx, &key) {
            return redirect.into();
        }
        cache::store(ctx, &key, &data, keep.ttl);
        cache::tags::attach_new(ctx, schema.source, &[&key], &keep.tags, keep.ttl);
        stats::of(schema.source).writes.inc();
        events::publish(
            ctx,
            EventKind::Write,
            schema.source,
            &schema.display,
            &pk.json,
        );
        Reply::Ok.described(&schema.stats, pk.json.as_str(), 0)
    })
}

/// WRITE's `[ttl] [SOURCE <name>] [TAG <tag> ...]`: the source, the TTL (the source's
/// `default_ttl` without one) and the tags (every argument after `TAG`).
fn options(rest: &[&[u8]]) -> Result<(SourceId, Keep), Error> {
    let (source, others) = source_option(rest)?;
    let (others, tags) = match others.iter().position(|a| a.eq_ignore_ascii_case(b"TAG")) {
        Some(at) => (&others[..at], Some(tags::parse(&others[at + 1..])?)),
        None => (&others[..], None),
    };
    let ttl = match others[..] {
        [] => None,
        [ttl] => ttl_arg(Some(&ttl))?,
        [_, unexpected, ..] => {
            return Err(Error::invalid(format!(
                "unexpected argument {:?}: after the row come [ttl], [SOURCE <name>] and \
                 [TAG <tag> ...]",
                String::from_utf8_lossy(unexpected)
            )));
        }
    };
    let ttl = ttl.unwrap_or_else(|| current::of(source).default_ttl());
    Ok((source, Keep { ttl, tags }))
}

/// Largest row WRITE accepts: far above any row PostgreSQL's `row_to_json` gives a cache
/// (fields over ~1 GB are impossible there anyway), far below what a stray argument could be.
pub const MAX_ROW_BYTES: usize = 16 * 1024 * 1024;

/// The row as sent, checked to be one JSON object: validated in one scan, no JSON tree built,
/// and an oversized argument refused before it is read.
fn checked_row(arg: &[u8]) -> Result<String, Error> {
    if arg.len() > MAX_ROW_BYTES {
        return Err(Error::invalid(format!(
            "data is {} bytes, more than the {MAX_ROW_BYTES} a cached row may have",
            arg.len()
        )));
    }
    let raw: &RawValue = serde_json::from_slice(arg)
        .map_err(|e| Error::invalid(format!("data is not valid JSON ({e})")))?;
    if !raw.get().trim_start().starts_with('{') {
        return Err(Error::invalid(
            "data must be a JSON object (the row), such as {\"id\":1,\"name\":\"x\"}",
        ));
    }
    Ok(String::from_utf8_lossy(arg).into_owned())
}

pub fn invalidate(ctx: &Context, args: &[&[u8]]) -> Reply {
    if args[1].eq_ignore_ascii_case(b"TAG") {
        return invalidate_tags(ctx, &args[2..]);
    }
    let source = match only_source_option(&args[3..]) {
        Ok(source) => source,
        Err(e) => return e.into(),
    };
    with_key(ctx, source, args[1], args[2], move |ctx, schema, pk| {
        let key = pk.cache_key(&schema.key_prefix);
        if let Err(refused) = acl::may_change(ctx, &key, Change::Delete) {
            return refused.into();
        }
        if let Err(redirect) = cluster::check(ctx, &key) {
            return redirect.into();
        }
        cache::delete(ctx, &key);
        // The row may be in cached query results too (PGCACHE.QUERY): those of its table go.
        // In every DB: the index it drops covers them all.
        dropped::table_changed(
            ctx,
            schema.source,
            &Scope::prefix(&schema.key_prefix),
            &cache::dbs_with_keys(ctx),
        );
        stats::of(schema.source).invalidations_by_command.inc();
        events::publish(
            ctx,
            EventKind::Invalidate,
            schema.source,
            &schema.display,
            &pk.json,
        );
        Reply::Ok.described(&schema.stats, pk.json.as_str(), 0)
    })
}

/// PGCACHE.INVALIDATE TAG <tag> [tag ...]: drops every entry of every source carrying any
/// of the tags (a table named `tag` is spelled `public.tag` here); the reply, once they are
/// gone, is how many went.
fn invalidate_tags(ctx: &Context, args: &[&[u8]]) -> Reply {
    let tags = match tags::parse(args) {
        Ok(tags) => tags,
        Err(e) => return e.into(),
    };
    // The tags' sets and entries are anywhere under the cache's prefix.
    if let Err(refused) = acl::may_change_every_key(ctx, &current::cache_prefix()) {
        return refused.into();
    }
    drain::start(ctx, tags.to_vec(), cache::dbs_with_keys(ctx))
}

/// PGCACHE.FLUSH <table>: drops every cached row of the table, a slice at a time; from the
/// reply on, none of them is served.
pub fn flush(ctx: &Context, args: &[&[u8]]) -> Reply {
    let source = match only_source_option(&args[2..]) {
        Ok(source) => source,
        Err(e) => return e.into(),
    };
    with_schema(ctx, source, args[1], |ctx, schema| {
        if let Err(refused) = acl::may_change_every_key(ctx, &schema.key_prefix) {
            return refused.into();
        }
        flush::start(ctx, schema.source, &Scope::prefix(&schema.key_prefix));
        Reply::Ok.described(&schema.stats, "", 0)
    })
}
