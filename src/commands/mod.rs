//! Command handlers: parse arguments, delegate, reply. Each runs inside `dispatch`, which
//! reads arguments without copying and turns a panic into an error reply.

pub mod admin;
pub mod debug;
pub mod docs;
pub mod get;
pub mod hook;
pub mod multiread;
pub mod queries;
pub mod query;
pub mod read;
pub mod slowlog;
pub mod source;
mod with_age;
pub mod write;

use crate::cache::freshness;
use crate::cache::miss::Read;
use crate::cache::tags::Keep;
use crate::cache::worker;
use crate::config;
use crate::error::panic::catch;
use crate::error::{Error, Result};
use crate::events;
use crate::invalidation;
use crate::model::event::{EventKind, Extra};
use crate::model::key::{self, CanonicalPk};
use crate::model::lsn::Lsn;
use crate::model::source::SourceId;
use crate::model::tags::{self, Tags};
use crate::pg::circuit;
use crate::pg::normalise;
use crate::pg::schema::{self, TableSchema};
use crate::redis::args::Args;
use crate::redis::main_thread::Task;
use crate::requests::blocked::Completion;
use crate::requests::reply::{self, Reply};
use crate::requests::tracked;
use crate::stats;
use redis_module::Context;
use std::sync::Arc;
use std::time::Instant;

/// Arguments held without an allocation: every command's but a PGCACHE.QUERY with many
/// parameters.
const INLINE_ARGS: usize = 16;

/// No command of ours takes more arguments (PGCACHE.QUERY's most parameters and its
/// options); more is an arity error, not an allocation.
const MAX_ARGS: usize = crate::query::placeholders::MAX_PARAMS + 16;

pub type Handler = fn(&Context, &[&[u8]]) -> Reply;

pub use docs::Command;

/// Runs `described`'s handler for one call: the argument count checked against the
/// description, arguments as byte slices borrowed from Redis (no copies), panics contained,
/// the reply sent.
pub fn dispatch(context: &Context, call: &Args, described: &Command) {
    let command = described.tracked;
    // Hits are counted, not timed: two clock reads would cost the hit path ~5 %. A call
    // that waits for PostgreSQL is timed from when it blocks to its reply (worker module).
    let started = command
        .filter(|c| !c.timed_when_blocked())
        .map(|_| Instant::now());
    if let Some(command) = command {
        stats::count_call(command);
    }
    let argc = call.len();
    if argc > MAX_ARGS || described.accepts(argc).is_err() {
        reply::send(context, &Reply::WrongArity);
        return;
    }
    let handler = described.handler;
    // A plain array for the usual call (collecting into a SmallVec cost a READ hit ~110
    // instructions, make profile); a Vec only for a QUERY with many parameters.
    let mut inline: [&[u8]; INLINE_ARGS] = [&[]; INLINE_ARGS];
    let spilled: Vec<&[u8]>;
    let args: &[&[u8]] = if argc <= INLINE_ARGS {
        for (i, slot) in inline.iter_mut().enumerate().take(argc) {
            *slot = call.bytes(i);
        }
        &inline[..argc]
    } else {
        spilled = (0..argc).map(|i| call.bytes(i)).collect();
        &spilled
    };
    let reply = catch(|| handler(context, args)).unwrap_or_else(Reply::Error);
    // A hit has replied already: nothing to send, and no call into `send` for it.
    if !matches!(reply, Reply::Sent | Reply::Blocked) {
        reply::send(context, &reply);
    }
    // A hit has nothing to record (it is counted, not timed), so it skips the guard too.
    let finished = started.filter(|_| !matches!(reply.inner(), Reply::Blocked));
    let failed = reply.is_failure();
    if let Some(command) = command.filter(|_| finished.is_some() || failed) {
        crate::error::panic::contain("recording a call", || {
            if let Some(started) = finished {
                let elapsed_us = started.elapsed().as_micros() as u64;
                let source = tracked::source_of_call(command, args);
                tracked::finished(
                    context,
                    command,
                    args,
                    source,
                    elapsed_us,
                    None,
                    reply.detail(),
                );
            }
            if let Reply::Error(e) = reply.inner()
                && failed
            {
                tracked::failed(
                    context,
                    command,
                    args,
                    tracked::source_of_call(command, args),
                    e,
                );
            }
        });
    }
}

/// The function Redis calls for the command `$described` (a static `Command`): it hands
/// the call to `dispatch` with that description.
macro_rules! command_fn {
    ($described:path) => {
        $crate::redis::command::entry!(|ctx, args| $crate::commands::dispatch(
            ctx,
            args,
            &$described
        ))
    };
}
use command_fn;

/// Every command but PGCACHE.DEBUG (registered only with `debug_commands yes`), in the
/// order docs/commands.md documents them.
pub static ALL: [&Command; 17] = [
    &read::READ,
    &multiread::MULTIREAD,
    &query::QUERY,
    &queries::QUERIES,
    &queries::EXPLAIN,
    &get::GET,
    &get::MGET,
    &get::KEY,
    &write::WRITE,
    &write::INVALIDATE,
    &write::FLUSH,
    &admin::STATS,
    &slowlog::SLOWLOG,
    &hook::HOOK,
    &source::SOURCE,
    &admin::HEALTH,
    &admin::DRAIN,
];

pub fn utf8<'a>(arg: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(arg).map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// Where a command's source comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SourceFrom {
    /// A `SOURCE <name>` option (the default source without one).
    Option,
    /// The keys it names (GET, MGET): a `SOURCE` option is refused.
    Keys,
}

/// A command's `[SOURCE <name>]` among its optional arguments `rest`, in any place: the
/// source (the default without one) and the other arguments, in their order.
pub fn source_option<'a>(rest: &[&'a [u8]]) -> Result<(SourceId, Vec<&'a [u8]>)> {
    let mut source = None;
    let mut others = Vec::with_capacity(rest.len());
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        if arg.eq_ignore_ascii_case(b"SOURCE") && source.is_none() {
            source = Some(source_arg(args.next())?);
        } else {
            others.push(*arg);
        }
    }
    Ok((source.unwrap_or(SourceId::DEFAULT), others))
}

/// `SOURCE`'s value: a source's name.
fn source_arg(arg: Option<&&[u8]>) -> Result<SourceId> {
    let name = arg
        .ok_or_else(|| Error::invalid("SOURCE needs a source's name, such as SOURCE analytics"))?;
    config::current::named(name)
}

/// The source of a command whose only option is `[SOURCE <name>]`.
pub fn only_source_option(rest: &[&[u8]]) -> Result<SourceId> {
    match source_option(rest)? {
        (source, others) if others.is_empty() => Ok(source),
        (_, others) => Err(Error::invalid(format!(
            "unexpected argument {:?}: the only option here is [SOURCE <name>]",
            String::from_utf8_lossy(others[0])
        ))),
    }
}

/// A read's optional arguments after its key: `[ttl] [AFTER <lsn>] [MAXSTALE <ms>]
/// [SOURCE <name>]` and, on READ and GET, `[WITHAGE]`, in any order.
pub struct ReadOptions {
    /// Whose database the read reads.
    pub source: SourceId,
    pub ttl: Option<u64>,
    pub after: Option<Lsn>,
    /// The call's own freshness bound, in milliseconds (`max_staleness_ms` otherwise).
    pub max_stale: Option<i64>,
    /// `WITHAGE`: reply `[answer, age_ms]` (READ and GET; see `with_age`).
    pub with_age: bool,
    /// `TAG <tag> [tag ...]`: the tags the call's entries carry (READ, MULTIREAD, QUERY).
    pub tags: Tags,
}

/// The tags after a `TAG` (whose arguments are `args`): every argument up to the next
/// option keyword.
pub fn tags_option<'a, 'b>(
    args: &mut std::iter::Peekable<impl Iterator<Item = &'b &'a [u8]>>,
) -> Result<Arc<[String]>>
where
    'a: 'b,
{
    let mut given: Vec<&[u8]> = Vec::new();
    while let Some(arg) = args.next_if(|a| {
        !tags::OPTION_WORDS
            .iter()
            .any(|w| a.eq_ignore_ascii_case(w.as_bytes()))
    }) {
        given.push(arg);
    }
    tags::parse(&given)
}

impl ReadOptions {
    pub fn parse(rest: &[&[u8]], from: SourceFrom) -> Result<ReadOptions> {
        let mut options = ReadOptions {
            source: SourceId::DEFAULT,
            ttl: None,
            after: None,
            max_stale: None,
            with_age: false,
            tags: None,
        };
        let mut named_source = false;
        let mut args = rest.iter().peekable();
        while let Some(arg) = args.next() {
            if arg.eq_ignore_ascii_case(b"TAG") && options.tags.is_none() {
                if from == SourceFrom::Keys {
                    return Err(Error::invalid(
                        "TAG is taken by READ, MULTIREAD, QUERY and WRITE, which derive their keys",
                    ));
                }
                options.tags = Some(tags_option(&mut args)?);
            } else if arg.eq_ignore_ascii_case(b"AFTER") && options.after.is_none() {
                let lsn = args.next().ok_or_else(|| {
                    Error::invalid("AFTER needs a WAL position, such as AFTER 0/16B3748")
                })?;
                options.after = Some(Lsn::parse(utf8(lsn, "AFTER's position")?)?);
            } else if arg.eq_ignore_ascii_case(b"MAXSTALE") && options.max_stale.is_none() {
                options.max_stale = Some(max_stale_arg(args.next())?);
            } else if arg.eq_ignore_ascii_case(b"WITHAGE") && !options.with_age {
                options.with_age = true;
            } else if arg.eq_ignore_ascii_case(b"SOURCE") && !named_source {
                if from == SourceFrom::Keys {
                    return Err(Error::invalid(
                        "a key names its own source (pg_cache:@<source>:...); give no SOURCE",
                    ));
                }
                options.source = source_arg(args.next())?;
                named_source = true;
            } else if options.ttl.is_none() {
                options.ttl = ttl_arg(Some(arg))?;
            } else {
                return Err(Error::invalid(format!(
                    "unexpected argument {:?}: after the key come [ttl], [AFTER <lsn>], \
                     [MAXSTALE <ms>], [SOURCE <name>], [WITHAGE] and [TAG <tag> ...]",
                    String::from_utf8_lossy(arg)
                )));
            }
        }
        Ok(options)
    }

    /// How long the call's entries are kept (its ttl, else the source's `default_ttl`) and
    /// the tags they carry.
    pub fn keep(&self) -> Keep {
        Keep {
            ttl: self
                .ttl
                .unwrap_or_else(|| config::current::of(self.source).default_ttl()),
            tags: self.tags.clone(),
        }
    }

    /// The options of a read of many rows (MGET, MULTIREAD): WITHAGE is READ's and GET's, as
    /// a multi-row answer has no single age.
    ///
    /// Inline: QUERY's hit runs through here, and left out of line it paid a call more
    /// (+24 instructions a hit, measured when `SOURCE` came, #53 step 7); `#[inline]` alone
    /// left it out of line.
    #[inline(always)]
    pub fn parse_many(rest: &[&[u8]], from: SourceFrom) -> Result<ReadOptions> {
        let options = ReadOptions::parse(rest, from)?;
        if options.with_age {
            return Err(Error::invalid(
                "WITHAGE is an option of PGCACHE.READ and PGCACHE.GET (one row, one age)",
            ));
        }
        Ok(options)
    }

    /// Where the read may take its row: the cache, while the change feed has vouched for it
    /// within the call's bound (`MAXSTALE`, else `max_staleness_ms`), else PostgreSQL. With
    /// `AFTER`, the cache only once it reflects that position (the replication source
    /// applied it); before that, the cache if the source, streaming, applies it within a
    /// few milliseconds, else PostgreSQL.
    ///
    /// While PostgreSQL is known to be unreachable (`circuit`), a read past its bound is
    /// answered from the cache as long as the horizon is younger than `stale_if_error_ms`
    /// (a call's own `MAXSTALE` is a cap too); past that, it is an error that says so.
    ///
    /// Always inline: every hit asks it, and where the hint alone was left to the code's
    /// size, a READ hit paid a call more (+20 instructions, measured at #53 step 3).
    #[inline(always)]
    pub fn read(&self) -> Result<Read> {
        let bound = self
            .max_stale
            .unwrap_or_else(|| config::current::of(self.source).max_staleness_ms());
        if !freshness::of(self.source).vouched(bound) {
            return self.unvouched(bound);
        }
        Ok(match self.after {
            Some(lsn) if !invalidation::of(self.source).applied_through(lsn) => {
                if invalidation::of(self.source).streaming() {
                    Read::After(lsn)
                } else {
                    Read::FromPostgres
                }
            }
            _ => Read::Cached,
        })
    }

    /// `read` past the freshness bound `bound`.
    #[cold]
    fn unvouched(&self, bound: i64) -> Result<Read> {
        let circuit = circuit::of(self.source);
        if !circuit.open() {
            stats::of(self.source).bypassed_stale.inc();
            return Ok(Read::Unvouched);
        }
        // AFTER asks for a reply that reflects its position: a stale hit is no such reply,
        // outage or not. Only PostgreSQL could give it, and it cannot be reached.
        if let Some(lsn) = self
            .after
            .filter(|&lsn| !invalidation::of(self.source).applied_through(lsn))
        {
            let why = circuit
                .refusal()
                .unwrap_or_else(|| "PostgreSQL unavailable".into());
            return Err(Error::postgres(format!(
                "{why}; the cache has not applied the log through AFTER's position {lsn}, so \
                 no cached row is served (without AFTER, hits are served within \
                 stale_if_error_ms)"
            )));
        }
        let cap = match self.max_stale {
            Some(_) => bound,
            None => config::current::of(self.source).stale_if_error_ms(),
        };
        if freshness::of(self.source).vouched(cap) {
            stats::of(self.source).served_stale.inc();
            if circuit.first_stale_hit() {
                ANNOUNCE_STALE.request();
            }
            return Ok(Read::Cached);
        }
        let age = freshness::of(self.source).age().map_or_else(
            || "no change feed has vouched for the cache yet".to_string(),
            |age| format!("the cache may be {} ms behind", age.as_millis()),
        );
        let why = circuit
            .refusal()
            .unwrap_or_else(|| "PostgreSQL unavailable".into());
        Err(Error::postgres(format!(
            "{why}; {age}, more than {} allows ({cap} ms), so no cached row is served",
            if self.max_stale.is_some() {
                "MAXSTALE"
            } else {
                "stale_if_error_ms"
            }
        )))
    }
}

/// Announces on the event channel, once per outage of each source, that hits are served
/// past `max_staleness_ms` (run after the command: the event is not the reply's business).
static ANNOUNCE_STALE: Task = Task::new("announcing stale hits", |ctx| {
    circuit::each(|source, circuit| {
        if circuit.take_stale_announcement() {
            announce_stale(ctx, source, circuit);
        }
    });
    false
});

fn announce_stale(ctx: &Context, source: SourceId, circuit: &circuit::Circuit) {
    let reason = circuit.outage().map(|o| o.reason).unwrap_or_default();
    let age_ms = freshness::of(source)
        .age()
        .map_or(0, |age| age.as_millis() as u64);
    let whose = config::current::name(source)
        .map(|name| format!(" (source {name})"))
        .unwrap_or_default();
    ctx.log_warning(&format!(
        "pgcache: PostgreSQL{whose} cannot be reached ({reason}); hits are served up to \
         stale_if_error_ms behind its commits (the cache is {age_ms} ms behind now)"
    ));
    events::publish_with(
        ctx,
        EventKind::Stale,
        source,
        "",
        "",
        &[
            ("reason", Extra::Text(&reason)),
            ("age_ms", Extra::Int(age_ms)),
        ],
    );
}

/// `MAXSTALE`'s value: milliseconds, `-1` for unbounded.
fn max_stale_arg(arg: Option<&&[u8]>) -> Result<i64> {
    let arg = arg.ok_or_else(|| {
        Error::invalid("MAXSTALE needs a number of milliseconds, such as MAXSTALE 500")
    })?;
    match utf8(arg, "MAXSTALE's value")?.parse::<i64>() {
        Ok(ms) if ms >= -1 => Ok(ms),
        _ => Err(Error::invalid(format!(
            "MAXSTALE takes milliseconds from 0 (or -1: unbounded), got {:?}",
            String::from_utf8_lossy(arg)
        ))),
    }
}

/// The optional TTL argument in seconds.
pub fn ttl_arg(arg: Option<&&[u8]>) -> Result<Option<u64>> {
    match arg {
        None => Ok(None),
        Some(a) => config::parse_ttl(utf8(a, "TTL")?).map(Some),
    }
}

/// Calls `then` on the main thread with the table's schema: right away if it is cached,
/// else after a worker read it from the catalog (the client waits, nobody else does).
pub fn with_schema<F>(ctx: &Context, source: SourceId, table_arg: &[u8], then: F) -> Reply
where
    F: FnOnce(&Context, Arc<TableSchema>) -> Reply + Send + 'static,
{
    if let Some(schema) = schema::of(source).cached(table_arg) {
        return then(ctx, schema);
    }
    let table = match schema::of(source).admit_arg(table_arg) {
        Ok(t) => t,
        Err(e) => return e.into(),
    };
    worker::submit(
        ctx,
        source,
        Box::new(move |client| {
            let schema = schema::of(source).resolve(client, &table)?;
            let completion: Completion = Box::new(move |ctx| then(ctx, schema));
            Ok(completion)
        }),
    )
}

/// Calls `then` on the main thread with the table's schema and the canonical key of
/// `pk_arg`: right away when both are known here, else after a worker read the schema from
/// the catalog or had PostgreSQL spell the key (`normalise`).
pub fn with_key<F>(
    ctx: &Context,
    source: SourceId,
    table_arg: &[u8],
    pk_arg: &[u8],
    then: F,
) -> Reply
where
    F: FnOnce(&Context, Arc<TableSchema>, CanonicalPk) -> Reply + Send + 'static,
{
    if let Some(schema) = schema::of(source).cached(table_arg) {
        match key::canonicalise(pk_arg, &*schema) {
            Ok(pk) if !pk.unconfirmed => return then(ctx, schema, pk),
            Ok(_) => {}
            Err(e) => return e.into(),
        }
    }
    let table = match schema::of(source).admit_arg(table_arg) {
        Ok(t) => t,
        Err(e) => return e.into(),
    };
    let pk_arg = pk_arg.to_vec();
    worker::submit(
        ctx,
        source,
        Box::new(move |client| {
            let schema = schema::of(source).resolve(client, &table)?;
            let pk = key::canonicalise(&pk_arg, &*schema)?;
            let pk = normalise::confirm(client, &schema, pk)?;
            let completion: Completion = Box::new(move |ctx| then(ctx, schema, pk));
            Ok(completion)
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/commands.md's heading of each command shows the arguments its description
    /// declares.
    #[test]
    fn docs_headings_show_each_commands_arguments() {
        let page = include_str!("../../docs/commands.md");
        for command in ALL.iter().copied().chain([&debug::DEBUG]) {
            let usage = command.usage();
            let heading = if usage.is_empty() {
                format!("## {}\n", command.name.to_uppercase())
            } else {
                format!("## {} `{usage}`", command.name.to_uppercase())
            };
            assert!(
                page.contains(&heading),
                "docs/commands.md has no heading {heading:?}"
            );
        }
    }

    #[test]
    fn read_options_come_in_either_order() {
        let parse = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            ReadOptions::parse(&args, SourceFrom::Option).map(|o| (o.ttl, o.after))
        };
        let bound = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            ReadOptions::parse(&args, SourceFrom::Option).map(|o| o.max_stale)
        };
        assert_eq!(bound(&["MAXSTALE", "250"]).unwrap(), Some(250));
        assert_eq!(
            bound(&["maxstale", "-1", "60", "AFTER", "0/1"]).unwrap(),
            Some(-1)
        );
        for bad in [&["MAXSTALE"][..], &["MAXSTALE", "-2"], &["MAXSTALE", "x"]] {
            assert!(bound(bad).is_err(), "{bad:?}");
        }
        let lsn = Some(Lsn(0x16B3748));
        assert_eq!(parse(&[]).unwrap(), (None, None));
        assert_eq!(parse(&["60"]).unwrap(), (Some(60), None));
        assert_eq!(parse(&["AFTER", "0/16B3748"]).unwrap(), (None, lsn));
        assert_eq!(
            parse(&["60", "after", "0/16B3748"]).unwrap(),
            (Some(60), lsn)
        );
        assert_eq!(
            parse(&["AFTER", "0/16B3748", "60"]).unwrap(),
            (Some(60), lsn)
        );
        for bad in [
            &["AFTER"][..],
            &["AFTER", "x"],
            &["60", "60"],
            &["0"],
            &["AFTER", "0/1", "AFTER", "0/2"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Only the default source is served yet: every `SOURCE` names an unknown one, and a
    /// command whose keys name their source refuses the option.
    #[test]
    fn a_source_option_names_a_source_the_server_serves() {
        let words = |args: &[&str]| -> Vec<Vec<u8>> {
            args.iter().map(|a| a.as_bytes().to_vec()).collect()
        };
        let read = |args: &[&str], from| {
            let args = words(args);
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            ReadOptions::parse(&args, from).map(|o| o.source)
        };
        assert_eq!(
            read(&["60"], SourceFrom::Option).unwrap(),
            SourceId::DEFAULT
        );
        let unknown = read(&["60", "source", "analytics"], SourceFrom::Option).unwrap_err();
        assert!(
            unknown.message().contains("no source named \"analytics\""),
            "{unknown}"
        );
        assert!(
            read(&["SOURCE"], SourceFrom::Option)
                .unwrap_err()
                .message()
                .contains("SOURCE needs a source's name")
        );
        let keyed = read(&["SOURCE", "analytics"], SourceFrom::Keys).unwrap_err();
        assert!(keyed.message().contains("give no SOURCE"), "{keyed}");

        let only = |args: &[&str]| {
            let args = words(args);
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            only_source_option(&args)
        };
        assert_eq!(only(&[]).unwrap(), SourceId::DEFAULT);
        assert!(
            only(&["SOURCE", "x"])
                .unwrap_err()
                .message()
                .contains("no source named")
        );
        assert!(
            only(&["x"])
                .unwrap_err()
                .message()
                .contains("unexpected argument \"x\"")
        );
        let args = words(&["60", "SOURCE"]);
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        assert!(source_option(&args).is_err());
        let args = words(&["60"]);
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let (source, others) = source_option(&args).unwrap();
        assert_eq!((source, others), (SourceId::DEFAULT, vec![&b"60"[..]]));
    }

    #[test]
    fn arity_follows_the_arguments() {
        assert_eq!(read::READ.arity(), -3);
        // [ttl] is one argument, [AFTER <lsn>] two, [SOURCE <name>] two; WITHAGE is one
        // argument; TAG takes any number.
        assert_eq!((read::READ.min_args(), read::READ.max_args()), (3, None));
        assert_eq!(write::INVALIDATE.arity(), -3);
        assert_eq!(write::INVALIDATE.max_args(), None);
        assert_eq!(get::MGET.max_args(), None);
        assert_eq!(admin::HEALTH.arity(), -1);
        assert_eq!(admin::HEALTH.max_args(), Some(3));
        assert!(read::READ.accepts(2).is_err());
        assert!(read::READ.accepts(30).is_ok());
        assert_eq!(
            read::READ.usage(),
            "<table> <pk_json> [ttl] [AFTER lsn] [MAXSTALE ms] [SOURCE name] [WITHAGE] \
             [TAG tag ...]"
        );
        assert_eq!(
            write::INVALIDATE.usage(),
            "<table | TAG> <pk_json | tag> [tag ...] [SOURCE name]"
        );
        assert_eq!(
            get::MGET.usage(),
            "<key> [key ...] [AFTER lsn] [MAXSTALE ms]"
        );
    }
}
