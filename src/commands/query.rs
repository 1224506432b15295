//! PGCACHE.QUERY <sql> <nparams> [param ...] [TTL seconds] [AFTER lsn] [MAXSTALE ms] [WITHKEY]
//!
//! The result of a parameterised SELECT as one JSON array of row objects: the arguments are
//! read here, and the cache's QUERY pipeline (`cache::query`) answers them, from the cache
//! or, on a miss, from PostgreSQL.

use crate::cache::query::{self, Call};
use crate::cache::tags::Keep;
use crate::commands::docs::{Arg, Command, Keys, Params};
use crate::commands::{ReadOptions, SourceFrom, ttl_arg, utf8};
use crate::config::current;
use crate::error::{Error, Result};
use crate::requests::reply::Reply;
use crate::stats::Tracked;
use redis_module::Context;

pub static QUERY: Command = Command {
    name: "pgcache.query",
    entry: super::command_fn!(QUERY),
    handler: query,
    tracked: Some(Tracked::Query),
    flags: "readonly",
    summary: "Returns a SELECT's result as a JSON array of rows, from the cache or, on a miss, \
              from PostgreSQL",
    since: "0.3.0",
    complexity: "O(parameters) on a hit; one PostgreSQL query on a miss",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[
        Arg::text("sql"),
        Arg::integer("nparams"),
        Arg::text("param").optional().multiple(),
        Arg::ttl_seconds(),
        Arg::after(),
        Arg::max_stale(),
        Arg::source(),
        Arg::with_key(),
        Arg::tags(),
    ]),
};

/// Longest statement text accepted: each remembered spelling is kept in memory
/// (`query_max_statements` of them), so their size is bounded too.
const MAX_STATEMENT_BYTES: usize = 64 * 1024;

/// The call `args` make: the statement, its parameters and how it may be read.
fn parse_call<'a>(args: &'a [&'a [u8]]) -> Result<Call<'a>> {
    let nparams: usize = utf8(args[2], "nparams")?.parse().map_err(|_| {
        Error::invalid(format!(
            "nparams must be the number of parameters that follow the statement, got {:?}",
            String::from_utf8_lossy(args[2])
        ))
    })?;
    let given = args.len() - 3;
    if nparams > given {
        return Err(Error::invalid(format!(
            "nparams is {nparams} but only {given} arguments follow it"
        )));
    }
    let (params, rest) = args[3..].split_at(nparams);
    let mut ttl = None;
    let mut with_key = false;
    let mut others: Vec<&[u8]> = Vec::new();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        if arg.eq_ignore_ascii_case(b"TTL") && ttl.is_none() {
            ttl = ttl_arg(Some(rest.next().ok_or_else(|| {
                Error::invalid("TTL needs a number of seconds, such as TTL 60")
            })?))?;
        } else if arg.eq_ignore_ascii_case(b"WITHKEY") && !with_key {
            with_key = true;
        } else {
            others.push(arg);
        }
    }
    let options = ReadOptions::parse_many(&others, SourceFrom::Option)?;
    if options.ttl.is_some() {
        return Err(Error::invalid(
            "after the parameters come [TTL <seconds>], [AFTER <lsn>], [MAXSTALE <ms>], \
             [SOURCE <name>], [WITHKEY] and [TAG <tag> ...]; is nparams right?",
        ));
    }
    let sql = args[1];
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(Error::invalid(format!(
            "the statement is {} bytes; PGCACHE.QUERY takes statements of up to \
             {MAX_STATEMENT_BYTES} bytes (pass long lists as parameters, such as = ANY($1))",
            sql.len()
        )));
    }
    Ok(Call {
        source: options.source,
        sql,
        params,
        keep: Keep {
            ttl: ttl.unwrap_or_else(|| current::of(options.source).default_ttl()),
            tags: options.tags.clone(),
        },
        read: options.read()?,
        with_key,
    })
}

pub fn query(ctx: &Context, args: &[&[u8]]) -> Reply {
    match parse_call(args) {
        Ok(call) => query::call(ctx, &call),
        Err(e) => e.into(),
    }
}
