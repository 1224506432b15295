//! PGCACHE.QUERIES [RESET] [SOURCE name] and PGCACHE.EXPLAIN <sql> [SOURCE name]: what
//! QUERY caches for a source, statement by statement, in the manner of pg_stat_statements;
//! and what it would make of a statement, without running it.

use crate::cache::worker;
use crate::commands::docs::{Arg, Command, Keys, Params};
use crate::commands::{only_source_option, source_option};
use crate::config::current;
use crate::error::Error;
use crate::query::precision::Precision;
use crate::query::{Statement, statements};
use crate::requests::reply::Reply;
use redis_module::Context;

pub static QUERIES: Command = Command {
    name: "pgcache.queries",
    entry: super::command_fn!(QUERIES),
    handler: queries,
    tracked: None,
    flags: "readonly fast",
    summary: "Lists the statements PGCACHE.QUERY has seen, with their figures",
    since: "0.3.0",
    complexity: "O(S) for S statements",
    keys: Keys::None,
    tips: "nondeterministic_output",
    args: Params::new(&[Arg::text("RESET").optional(), Arg::source()]),
};

pub static EXPLAIN: Command = Command {
    name: "pgcache.explain",
    entry: super::command_fn!(EXPLAIN),
    handler: explain,
    tracked: None,
    flags: "readonly",
    summary: "Tells whether PGCACHE.QUERY can cache a statement, and how, without running it",
    since: "0.3.0",
    complexity: "O(1); a few catalog queries the first time a statement is seen",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[Arg::text("sql"), Arg::source()]),
};

pub fn queries(ctx: &Context, args: &[&[u8]]) -> Reply {
    let (source, others) = match source_option(&args[1..]) {
        Ok(parsed) => parsed,
        Err(e) => return e.into(),
    };
    match others.as_slice() {
        [] => Reply::Array(
            statements::of(source)
                .all()
                .iter()
                .map(|s| listed(s))
                .collect(),
        ),
        [sub] if sub.eq_ignore_ascii_case(b"RESET") => {
            if let Err(refused) = crate::redis::acl::may_reset_figures(ctx) {
                return refused.into();
            }
            for statement in statements::of(source).all() {
                statement.stats.calls.reset();
                statement.stats.hits.reset();
                statement.stats.misses.reset();
                statement.stats.latency.reset();
                statement.figures.reset();
                statement.stats.pass_through.reset();
            }
            Reply::Ok
        }
        _ => Error::invalid("usage: PGCACHE.QUERIES [RESET] [SOURCE name]").into(),
    }
}

fn tables(statement: &Statement) -> Reply {
    Reply::Array(
        statement
            .tables
            .iter()
            .map(|t| Reply::Bulk(t.display.clone()))
            .collect(),
    )
}

/// The columns a row-precise statement's results are matched on exactly.
fn exact_on(statement: &Statement) -> Reply {
    let columns = statement
        .precision
        .row()
        .map(|m| m.exact_on())
        .unwrap_or_default();
    Reply::Array(columns.into_iter().map(Reply::Bulk).collect())
}

/// The tables (as the statement names them) whose rows enter a row-precise join's results
/// only through another's foreign key: a change to one drops only the results holding it.
fn members_only(statement: &Statement) -> Reply {
    let sides = statement
        .precision
        .row()
        .map(|m| {
            m.sides
                .iter()
                .filter(|s| !s.enters)
                .map(|s| Reply::Bulk(s.reference.clone()))
                .collect()
        })
        .unwrap_or_default();
    Reply::Array(sides)
}

/// Why a statement's results are dropped per table (nil when they are not).
fn precision_reason(statement: &Statement) -> Reply {
    match &statement.precision {
        Precision::Table(why) => Reply::Bulk(why.clone()),
        Precision::Row(_) => Reply::Nil,
    }
}

/// The window of calls that decided whether the statement passes through: its hit ratio
/// and hits per result filled (nil before enough calls were judged).
fn judged(statement: &Statement) -> Reply {
    match statement.stats.pass_through.judged() {
        Some((hit_ratio, hits_per_miss)) => Reply::Map(vec![
            ("hit_ratio".into(), Reply::Double(hit_ratio)),
            ("hits_per_miss".into(), Reply::Double(hits_per_miss)),
        ]),
        None => Reply::Nil,
    }
}

/// One statement's line of PGCACHE.QUERIES.
fn listed(statement: &Statement) -> Reply {
    let misses = statement.stats.misses.get();
    let latency = statement.stats.latency.summary();
    let count = |n: u64| Reply::Int(n as i64);
    Reply::Map(vec![
        ("statement".into(), Reply::Bulk(statement.shown.clone())),
        ("tables".into(), tables(statement)),
        (
            "precision".into(),
            Reply::Bulk(statement.precision.name().into()),
        ),
        ("precision_reason".into(), precision_reason(statement)),
        ("calls".into(), count(statement.stats.calls.get())),
        ("hits".into(), count(statement.stats.hits.get())),
        ("misses".into(), count(misses)),
        ("fills".into(), count(statement.figures.fills.get())),
        ("not_cached".into(), count(statement.figures.too_big.get())),
        ("dropped".into(), count(statement.figures.dropped.get())),
        (
            "pass_through".into(),
            count(u64::from(
                statement
                    .stats
                    .pass_through
                    .is_passing(current::of(statement.source).pass_through()),
            )),
        ),
        (
            "passed_through".into(),
            count(statement.stats.pass_through.passed()),
        ),
        ("pass_through_judged_on".into(), judged(statement)),
        ("mean_miss_us".into(), Reply::Double(latency.avg_us)),
        ("p99_miss_us".into(), count(latency.p99_us)),
        (
            "mean_result_bytes".into(),
            count(statement.figures.result_bytes.get() / misses.max(1)),
        ),
        ("misses_from".into(), Reply::Bulk(misses_from(statement))),
    ])
}

/// Where its misses go to PostgreSQL from: the event loop, or the workers and why.
fn misses_from(statement: &Statement) -> String {
    let why = match statement.figures.kept_off_the_loop() {
        _ if current::of(statement.source).loop_connections() == 0 => "loop_connections is 0",
        Some(why) => why,
        None => return "event loop".into(),
    };
    format!("workers: {why}")
}

/// Each result column as `[name, type]`, in the result's order.
fn columns(statement: &Statement) -> Reply {
    Reply::Array(
        statement
            .columns
            .iter()
            .map(|c| {
                Reply::Array(vec![
                    Reply::Bulk(c.name.clone()),
                    Reply::Bulk(c.type_name.clone()),
                ])
            })
            .collect(),
    )
}

/// Each result column's types as `[[typname, oid], ...]`: its declared type (an array's
/// element), then each domain's base type, to the base type (a client's decoders of a type
/// apply to domains over it and arrays of it).
fn column_types(statement: &Statement) -> Reply {
    Reply::Array(
        (statement.columns.iter())
            .map(|c| {
                Reply::Array(
                    (c.types.iter())
                        .map(|(name, oid)| {
                            Reply::Array(vec![Reply::Bulk(name.clone()), Reply::Int(*oid as i64)])
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

pub fn explain(ctx: &Context, args: &[&[u8]]) -> Reply {
    let source = match only_source_option(&args[2..]) {
        Ok(source) => source,
        Err(e) => return e.into(),
    };
    let sql = args[1].to_vec();
    worker::submit(
        ctx,
        source,
        Box::new(move |conn| {
            let learned = crate::cache::query::learn(conn, source, &sql)
                .and_then(|statement| statement.admitted().map(|()| statement));
            let explained = match learned {
                Ok(statement) => vec![
                    ("cacheable".into(), Reply::Int(1)),
                    ("statement".into(), Reply::Bulk(statement.canonical.clone())),
                    ("tables".into(), tables(&statement)),
                    (
                        "precision".into(),
                        Reply::Bulk(statement.precision.name().into()),
                    ),
                    ("exact_on".into(), exact_on(&statement)),
                    ("members_only".into(), members_only(&statement)),
                    ("precision_reason".into(), precision_reason(&statement)),
                    (
                        "uncached_reason".into(),
                        statement
                            .uncached
                            .as_ref()
                            .map_or(Reply::Nil, |why| Reply::Bulk(why.clone())),
                    ),
                    (
                        "parameters".into(),
                        Reply::Array(
                            statement
                                .params
                                .iter()
                                .map(|p| Reply::Bulk(p.cast.clone()))
                                .collect(),
                        ),
                    ),
                    ("columns".into(), columns(&statement)),
                    ("column_types".into(), column_types(&statement)),
                ],
                // PostgreSQL out of reach says nothing about the statement.
                Err(e) if e.is_postgres() && e.message().starts_with("PostgreSQL unavailable") => {
                    return Err(e);
                }
                Err(e) => vec![
                    ("cacheable".into(), Reply::Int(0)),
                    ("reason".into(), Reply::Bulk(e.message().to_string())),
                ],
            };
            Ok(Box::new(move |_: &Context| Reply::Map(explained)))
        }),
    )
}
