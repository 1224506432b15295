//! The end of a tracked call (READ, MULTIREAD, WRITE, INVALIDATE, FLUSH that waited for
//! PostgreSQL or changed the cache): its latency goes into the command's and the table's
//! histograms, a slow one into the slowlog (and to `slow` hooks), a failed one to `error`
//! hooks. The command or its completion says what it worked on by returning a described
//! reply (`Reply::described`); all of this runs on the main thread.

use crate::config::current;
use crate::error::Error;
use crate::events;
use crate::model::event::{EventKind, Extra};
use crate::model::source::SourceId;
use crate::requests::reply::Detail;
use crate::stats::slowlog::{self, SlowPart};
use crate::stats::{self, Tracked};
use redis_module::Context;
use std::time::Duration;

/// What the slowlog and events show as the table of a PGCACHE.QUERY call (a statement may
/// read several).
pub const QUERY_TABLE: &str = "(query)";

/// Where a call that waited for PostgreSQL spent its time before the reply callback.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub queued: Duration,
    pub postgres: Duration,
}

/// Records a finished call of `command` (called with `args`) that took `elapsed_us`;
/// `timing` when it waited for PostgreSQL, `detail` when the call said what it worked on.
pub fn finished(
    ctx: &Context,
    command: Tracked,
    args: &[&[u8]],
    source: SourceId,
    elapsed_us: u64,
    timing: Option<Timing>,
    detail: Option<&Detail>,
) {
    stats::record_command(command, elapsed_us);
    if let Some(d) = &detail {
        d.table.calls.inc();
        d.table.latency.record(elapsed_us);
    }
    if !slowlog::is_slow(elapsed_us) {
        return;
    }
    let (queue_us, postgres_us) = timing.map_or((0, 0), |t| {
        (t.queued.as_micros() as u64, t.postgres.as_micros() as u64)
    });
    let slow_part = match timing {
        None => SlowPart::Redis,
        Some(_) if queue_us > postgres_us => SlowPart::Queue,
        Some(_) => SlowPart::Postgres,
    };
    // A call that failed before knowing its table is shown with its arguments as sent.
    let (table, key, rows) = detail.map_or_else(
        || {
            let (table, key) = as_sent(command, args);
            (table, key, 0)
        },
        |d| (d.table.name.clone(), d.key.clone(), d.rows),
    );
    let entry = slowlog::add(slowlog::Entry {
        id: 0,
        unix_time: 0,
        duration_us: elapsed_us,
        command: command.name(),
        table,
        key,
        rows,
        slow_part,
        queue_us,
        postgres_us,
        source: current::name(source),
    });
    events::publish_with(
        ctx,
        EventKind::Slow,
        source,
        &entry.table,
        &entry.key,
        &[
            ("command", Extra::Text(entry.command)),
            ("duration_us", Extra::Int(entry.duration_us)),
            ("slow_part", Extra::Text(entry.slow_part.name())),
        ],
    );
}

/// Tells `error` hooks that a call of `command` with these arguments replied `error`.
pub fn failed(ctx: &Context, command: Tracked, args: &[&[u8]], source: SourceId, error: &Error) {
    if !events::wanted(EventKind::Error) {
        return;
    }
    let (table, key) = as_sent(command, args);
    events::publish_with(
        ctx,
        EventKind::Error,
        source,
        &table,
        &key,
        &[
            ("command", Extra::Text(command.name())),
            ("error", Extra::Text(&error.to_string())),
        ],
    );
}

/// The table and key a call named, as sent: arguments 1 and 2, or, for the commands that
/// name a cache key, that key's parts (the whole key when it cannot be taken apart); for
/// QUERY, `(query)` and its statement.
fn as_sent(command: Tracked, args: &[&[u8]]) -> (String, String) {
    if command == Tracked::Query {
        return (QUERY_TABLE.to_string(), argument(args, 1));
    }
    if !matches!(command, Tracked::Get | Tracked::Mget) {
        return (argument(args, 1), argument(args, 2));
    }
    match crate::model::key::split_cache_key(
        // Every source's keys start with the default source's prefix.
        &crate::config::current::key_prefix(crate::model::source::SourceId::DEFAULT),
        args.get(1).unwrap_or(&&b""[..]),
    ) {
        Ok((_, table, pk)) => (argument(&[table], 0), argument(&[pk], 0)),
        Err(_) => (String::new(), argument(args, 1)),
    }
}

/// Argument `i` as text, cut like a slowlog key.
fn argument(args: &[&[u8]], i: usize) -> String {
    args.get(i)
        .map(|a| slowlog::truncate_key(&String::from_utf8_lossy(a)))
        .unwrap_or_default()
}

/// Whose call it was: the source its `SOURCE <name>` names, or the one its first key names
/// (GET, MGET); the default source's otherwise, and for a name no source has.
pub fn source_of_call(command: Tracked, args: &[&[u8]]) -> SourceId {
    // From the first argument on (a table may be called `source`).
    let named = args.windows(2).skip(1).find_map(|pair| {
        let source = pair[0].eq_ignore_ascii_case(b"SOURCE");
        source.then(|| current::named(pair[1]).ok()).flatten()
    });
    let keyed = || match command {
        Tracked::Get | Tracked::Mget => args.get(1).and_then(|key| current::source_of_key(key)),
        _ => None,
    };
    named.or_else(keyed).unwrap_or(SourceId::DEFAULT)
}
