//! PGCACHE.GET <key> [ttl] [AFTER <lsn>] [MAXSTALE <ms>] [WITHAGE], PGCACHE.MGET <key> [key ...]
//! [AFTER <lsn>] [MAXSTALE <ms>] and
//! PGCACHE.KEY <table> <pk_json>:
//! the commands that name the cache key itself, so that Redis Cluster routes them, ACL key patterns apply and CLIENT
//! TRACKING tracks them.
//!
//! GET's hit is the product's fast path: the key the client sent is opened as it is (its
//! table found by the key's entry prefix, `<cache_prefix><table>:`), with no parsing, no
//! copy of the name and no allocation of ours. Anything else (a miss, a table not seen yet)
//! takes the key apart and reads the row exactly as READ does.

use crate::cache;
use crate::cache::freshness;
use crate::cache::miss::{self, KeyFrom, Read, count_hit, must_be_canonical};
use crate::cache::tags::Keep;
use crate::commands::docs::{Arg, Command, Keys, ONE_ROW, PK, Params, TABLE};
use crate::commands::{ReadOptions, SourceFrom, dispatch, only_source_option, with_age, with_key};
use crate::config::current;
use crate::error::panic::catch;
use crate::error::{Error, Result};
use crate::model::key;
use crate::model::source::SourceId;
use crate::pg::schema;
use crate::redis::args::{Arg as Argument, Args};
use crate::redis::command;
use crate::requests::reply::Reply;
use crate::stats::{self, Tracked};
use redis_module::Context;
use std::cell::Cell;

pub static GET: Command = Command {
    name: "pgcache.get",
    // The hit path answers in `fast_path`; anything else goes through `dispatch`.
    entry: crate::redis::command::entry!(fast_path),
    handler: get,
    tracked: Some(Tracked::Get),
    flags: "readonly",
    summary: "Returns the row a cache key names, from the cache or, on a miss, from PostgreSQL",
    since: "0.2.0",
    complexity: ONE_ROW,
    keys: Keys::One,
    tips: "",
    args: Params::new(&[
        Arg::key("key"),
        Arg::ttl(),
        Arg::after(),
        Arg::max_stale(),
        Arg::with_age(),
    ]),
};

pub static MGET: Command = Command {
    name: "pgcache.mget",
    // Redis asks MGET where its keys are (a trailing `AFTER <lsn>` is not two keys).
    entry: crate::redis::command::entry!(mget_or_its_keys),
    handler: mget,
    tracked: Some(Tracked::Mget),
    flags: "readonly",
    summary: "Returns the rows several cache keys name, missed ones fetched together",
    since: "0.2.0",
    complexity: "O(N) for N keys; one PostgreSQL query per table for the misses",
    keys: Keys::AllBeforeAfter,
    tips: "",
    args: Params::new(&[Arg::key("key").multiple(), Arg::after(), Arg::max_stale()]),
};

pub static KEY: Command = Command {
    name: "pgcache.key",
    entry: super::command_fn!(KEY),
    handler: key,
    tracked: None,
    flags: "readonly",
    summary: "Returns the canonical cache key of a row",
    since: "0.2.0",
    complexity: "O(1); one PostgreSQL query the first time a table is named",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[TABLE, PK, Arg::source()]),
};

/// What Redis calls for PGCACHE.GET: a hit is answered here, anything else goes through
/// `dispatch` like every command.
fn fast_path(ctx: &Context, args: &Args) {
    if args.len() == 2 {
        // Set as soon as the reply is out: after a panic, whether `dispatch` must reply.
        let replied = Cell::new(false);
        let _ = catch(|| serve_hit(ctx, args.get(1), &replied));
        if replied.get() {
            return;
        }
    }
    dispatch(ctx, args, &GET)
}

/// Replies the cached entry at `name` when its table is known here (setting `replied`);
/// otherwise replies nothing.
fn serve_hit(ctx: &Context, name: Argument, replied: &Cell<bool>) {
    let key = name.bytes();
    // The default source's tables: a named source's key (`pg_cache:@name:...`) is none of
    // theirs, and goes through `get`, which reads the source from it.
    schema::of(SourceId::DEFAULT).with_key_owner(key, |schema| {
        let Some(schema) = schema else {
            return;
        };
        // Past the freshness bound, `get` reads PostgreSQL (and counts it).
        if !freshness::of(SourceId::DEFAULT)
            .vouched(current::of(SourceId::DEFAULT).max_staleness_ms())
            || !cache::reply_if_cached_named(ctx, SourceId::DEFAULT, name, key)
        {
            return;
        }
        replied.set(true);
        stats::count_call(Tracked::Get);
        schema.stats.calls.inc();
        count_hit(ctx, schema, &key[schema.key_prefix.len()..]);
    })
}

/// PGCACHE.GET when the hit path could not answer: the key taken apart, checked to be the
/// row's canonical key, and read as READ reads it.
pub fn get(ctx: &Context, args: &[&[u8]]) -> Reply {
    match miss(ctx, args[1], &args[2..]) {
        Ok(reply) => reply,
        Err(e) => e.into(),
    }
}

fn miss(ctx: &Context, named: &[u8], rest: &[&[u8]]) -> Result<Reply> {
    let mut options = ReadOptions::parse(rest, SourceFrom::Keys)?;
    let (source, table_arg, pk_arg) = split(named)?;
    options.source = source;
    let keep = options.keep();
    if options.with_age {
        return with_age::read(ctx, table_arg, pk_arg, Some(named), &options);
    }
    let read = options.read()?;
    // A table not seen yet, a key only PostgreSQL can spell, or a read the cache may not
    // answer yet (`AFTER`): a worker finds the key and reads the row.
    let known = match schema::of(source)
        .cached(table_arg)
        .filter(|_| read == Read::Cached)
    {
        Some(schema) => Some((key::canonicalise(pk_arg, &*schema)?, schema)),
        None => None,
    };
    let Some((pk, schema)) = known.filter(|(pk, _)| !pk.unconfirmed) else {
        let named = Some(named.to_vec());
        return Ok(miss::on_worker(
            ctx, source, table_arg, pk_arg, keep, named, read,
        ));
    };
    must_be_canonical(named, &schema, &pk)?;
    // The hit path found nothing; a hit here means the table was learnt meanwhile.
    if cache::reply_if_cached(
        ctx,
        schema.source,
        schema.key_prefix.as_bytes(),
        pk.json.as_bytes(),
    ) {
        schema.stats.calls.inc();
        count_hit(ctx, &schema, pk.json.as_bytes());
        return Ok(Reply::Sent);
    }
    Ok(miss::one(ctx, schema, pk, keep, KeyFrom::Named))
}

/// A key the client named, taken apart: the source it names, its table and its pk.
fn split(named: &[u8]) -> Result<(SourceId, &[u8], &[u8])> {
    // Every source's keys start with the default source's prefix: `split_cache_key` reads
    // the source named after it.
    let prefix = current::key_prefix(SourceId::DEFAULT);
    let (source, table, pk) = key::split_cache_key(&prefix, named)?;
    let source = match source {
        None => SourceId::DEFAULT,
        Some(name) => current::named(name)?,
    };
    Ok((source, table, pk))
}

/// What Redis calls for PGCACHE.MGET: a call, or Redis asking where its keys are (for
/// routing, ACL key checks and CLIENT TRACKING).
fn mget_or_its_keys(ctx: &Context, args: &Args) {
    if !command::is_keys_position_request(ctx) {
        return dispatch(ctx, args, &MGET);
    }
    for position in command::keys_before_after(args.len(), |i| args.bytes(i)) {
        command::report_read_key(ctx, position);
    }
}

/// PGCACHE.MGET <key> [key ...] [AFTER <lsn>]: the rows in the caller's order, nil where
/// there is none; the misses fetched together, as MULTIREAD fetches them (each table's
/// keys in one query).
pub fn mget(ctx: &Context, args: &[&[u8]]) -> Reply {
    let keys = command::keys_before_after(args.len(), |i| args[i]);
    let options = ReadOptions::parse_many(&args[keys.end..], SourceFrom::Keys);
    match options.and_then(|options| read_named(ctx, &args[keys], options)) {
        Ok(reply) => reply,
        Err(e) => e.into(),
    }
}

fn read_named(ctx: &Context, named: &[&[u8]], mut options: ReadOptions) -> Result<Reply> {
    let max = current::multiread_max();
    if named.len() > max {
        return Err(Error::invalid(format!(
            "more than {max} keys in one MGET (pgcache.multiread_max); split the call"
        )));
    }
    let keys = named.iter().map(|k| split(k)).collect::<Result<Vec<_>>>()?;
    // One source: AFTER is a position in one database's log, and the freshness bound is
    // one source's.
    let source = keys
        .first()
        .map_or(SourceId::DEFAULT, |(source, ..)| *source);
    if keys.iter().any(|(other, ..)| *other != source) {
        return Err(Error::invalid(
            "the keys of one MGET name two sources; read each source's keys in a call of its own",
        ));
    }
    options.source = source;
    let tables = keys.into_iter().map(|(_, table, pk)| (table, pk)).collect();
    miss::many_named(
        ctx,
        source,
        named,
        tables,
        Keep::for_ttl(current::of(source).default_ttl()),
        options.read()?,
    )
}

/// PGCACHE.KEY <table> <pk_json>: the row's canonical cache key.
pub fn key(ctx: &Context, args: &[&[u8]]) -> Reply {
    let source = match only_source_option(&args[3..]) {
        Ok(source) => source,
        Err(e) => return e.into(),
    };
    if let Err(e) = schema::of(source).admit_arg(args[1]) {
        return e.into();
    }
    with_key(ctx, source, args[1], args[2], |_, schema, pk| {
        Reply::Bulk(pk.cache_key(&schema.key_prefix))
    })
}
