//! PGCACHE.READ <table> <pk_json> [ttl] [AFTER <lsn>] [MAXSTALE <ms>] [WITHAGE]
//!
//! The arguments are read here; the miss pipeline's `read` answers them, from the cache or
//! from PostgreSQL.

use crate::cache::miss;
use crate::commands::docs::{Arg, Command, Keys, ONE_ROW, PK, Params, TABLE};
use crate::commands::{ReadOptions, SourceFrom, with_age};
use crate::requests::reply::Reply;
use crate::stats::Tracked;
use redis_module::Context;

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
        Arg::source(),
        Arg::with_age(),
        Arg::tags(),
    ]),
};

pub fn read(ctx: &Context, args: &[&[u8]]) -> Reply {
    let (table_arg, pk_arg) = (args[1], args[2]);
    let options = match ReadOptions::parse(&args[3..], SourceFrom::Option) {
        Ok(options) => options,
        Err(e) => return e.into(),
    };
    if options.with_age {
        return with_age::read(ctx, table_arg, pk_arg, None, &options).unwrap_or_else(Reply::from);
    }
    match options.read() {
        Ok(read) => miss::read::row(ctx, options.source, table_arg, pk_arg, options.keep(), read),
        Err(e) => e.into(),
    }
}
