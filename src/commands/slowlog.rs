//! PGCACHE.SLOWLOG GET [count] | LEN | RESET, like Redis's SLOWLOG. Each entry:
//! id, unix time, duration µs, command, table, key (cut at 128 bytes), rows PostgreSQL
//! returned, the slow part (`queue`, `postgres` or `redis`), queue µs, PostgreSQL µs.

use crate::commands::docs::{Arg, Command, Keys, Params};
use crate::commands::utf8;
use crate::error::Error;
use crate::requests::reply::Reply;
use crate::stats::slowlog;
use redis_module::Context;

pub static SLOWLOG: Command = Command {
    name: "pgcache.slowlog",
    entry: super::command_fn!(SLOWLOG),
    handler: slowlog,
    tracked: None,
    flags: "admin",
    summary: "Lists the slowest pgcache calls on this node",
    since: "0.1.0",
    complexity: "O(N) for N entries returned",
    keys: Keys::None,
    tips: "nondeterministic_output",
    args: Params::new(&[
        Arg::text("GET | LEN | RESET"),
        Arg::integer("count").optional(),
    ]),
};

/// Entries GET returns without a count, as Redis's SLOWLOG GET.
const DEFAULT_COUNT: usize = 10;

const USAGE: &str = "usage: PGCACHE.SLOWLOG GET [count] | LEN | RESET";

pub fn slowlog(_ctx: &Context, args: &[&[u8]]) -> Reply {
    match (args[1].to_ascii_uppercase().as_slice(), args.len()) {
        (b"GET", 2) => get(DEFAULT_COUNT),
        (b"GET", 3) => match utf8(args[2], "count").map(str::parse::<i64>) {
            Ok(Ok(n)) if n < 0 => get(usize::MAX),
            Ok(Ok(n)) => get(n as usize),
            _ => Error::invalid("count must be an integer (-1: every entry)").into(),
        },
        (b"LEN", 2) => Reply::Int(slowlog::len() as i64),
        (b"RESET", 2) => {
            slowlog::reset();
            Reply::Ok
        }
        _ => Error::invalid(USAGE).into(),
    }
}

fn get(count: usize) -> Reply {
    Reply::Array(
        slowlog::newest(count)
            .into_iter()
            .map(|e| {
                let mut fields = vec![
                    Reply::Int(e.id as i64),
                    Reply::Int(e.unix_time as i64),
                    Reply::Int(e.duration_us as i64),
                    Reply::Bulk(e.command.into()),
                    Reply::Bulk(e.table),
                    Reply::Bulk(e.key),
                    Reply::Int(e.rows as i64),
                    Reply::Bulk(e.slow_part.name().into()),
                    Reply::Int(e.queue_us as i64),
                    Reply::Int(e.postgres_us as i64),
                ];
                // A named source's call says whose it was; the default source's entries
                // keep their ten fields.
                fields.extend(e.source.map(Reply::Bulk));
                Reply::Array(fields)
            })
            .collect(),
    )
}
