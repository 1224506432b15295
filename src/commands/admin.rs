//! PGCACHE.STATS [RESET] [SOURCE name]: what pgcache has done for a source, and the server's
//! figures, as a map (RESP3) or name/value pairs (RESP2); the same figures as the `pgcache`
//! INFO section.
//! PGCACHE.HEALTH [SOURCE name]: whether pgcache can do its job for a source right now, with
//! every problem named.
//! PGCACHE.DRAIN [seconds]: refuse what would wait for PostgreSQL, before MODULE UNLOAD.

use crate::cache::drain;
use crate::cache::freshness;
use crate::cache::serving::{self, Hits};
use crate::cache::worker::{self, Probed};
use crate::commands::docs::{Arg, Command, Keys, Params};
use crate::commands::{only_source_option, source_option};
use crate::config::current;
use crate::error::Error;
use crate::invalidation::{self, position};
use crate::model::source::SourceId;
use crate::pg::{schema, standby};
use crate::report::listing;
use crate::requests::blocked;
use crate::requests::reply::Reply;
use crate::stats;
use redis_module::Context;

pub static STATS: Command = Command {
    name: "pgcache.stats",
    entry: super::command_fn!(STATS),
    handler: stats,
    tracked: None,
    flags: "readonly fast",
    summary: "Returns pgcache's counters, gauges and latencies on this node",
    since: "0.1.0",
    complexity: "O(T) for T tables",
    keys: Keys::None,
    tips: "nondeterministic_output",
    args: Params::new(&[Arg::text("RESET").optional(), Arg::source()]),
};

pub static HEALTH: Command = Command {
    name: "pgcache.health",
    entry: super::command_fn!(HEALTH),
    handler: health,
    tracked: None,
    flags: "readonly",
    summary: "Tells whether pgcache can do its job on this node right now",
    since: "0.1.0",
    complexity: "One PostgreSQL round trip",
    keys: Keys::None,
    tips: "nondeterministic_output",
    args: Params::new(&[Arg::source()]),
};

pub static DRAIN: Command = Command {
    name: "pgcache.drain",
    entry: super::command_fn!(DRAIN),
    handler: drain,
    tracked: None,
    flags: "admin",
    summary: "Refuses requests that would wait for PostgreSQL for a while, so that MODULE UNLOAD \
              finds none in flight",
    since: "0.2.0",
    complexity: "O(1)",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[Arg::integer("seconds").optional(), Arg::source()]),
};

pub fn stats(ctx: &Context, args: &[&[u8]]) -> Reply {
    let (source, others) = match source_option(&args[1..]) {
        Ok(parsed) => parsed,
        Err(e) => return e.into(),
    };
    match others.as_slice() {
        [] => {
            let mut listing = listing::all(source);
            if source == SourceId::DEFAULT {
                listing.extend(named_sources());
            }
            Reply::Map(listing)
        }
        [sub] if sub.eq_ignore_ascii_case(b"RESET") => {
            if let Err(refused) = crate::redis::acl::may_reset_figures(ctx) {
                return refused.into();
            }
            // What the listing showed: the default source's and the server's figures, or
            // the named source's only.
            if source == SourceId::DEFAULT {
                stats::reset();
            } else {
                stats::of(source).reset();
            }
            Reply::Ok
        }
        _ => Error::invalid("usage: PGCACHE.STATS [RESET] [SOURCE name]").into(),
    }
}

/// `sources`, the named sources' names, for the default source's listing; nothing without
/// named sources, so that a server with one database lists what it always listed.
fn named_sources() -> Option<(String, Reply)> {
    let names: Vec<Reply> = (current::named_ids().into_iter())
        .filter_map(|id| current::name(id).map(Reply::Bulk))
        .collect();
    (!names.is_empty()).then(|| ("sources".to_string(), Reply::Array(names)))
}

/// Work-queue fill above which HEALTH reports a problem.
const QUEUE_SATURATION_PROBLEM: f64 = 0.8;

pub fn health(ctx: &Context, args: &[&[u8]]) -> Reply {
    let source = match only_source_option(&args[1..]) {
        Ok(source) => source,
        Err(e) => return e.into(),
    };
    if drain::remaining(source).is_some() {
        // A drain refuses the probe's wait too; answer with what is known without it.
        let report = health_report(source, None);
        return Reply::Map(with_server_fields(ctx, source, report));
    }
    let checked = match worker::may_wait(ctx, source) {
        Ok(checked) => checked,
        Err(refusal) => {
            return match crate::pg::circuit::of(source).refusal() {
                // A known outage, checked moments ago: nobody waits for it. (Once the last
                // check is old, this probe is the check: `Circuit::admit`.)
                Some(outage) => {
                    let report = health_report(source, Some(Err(Error::postgres(outage))));
                    Reply::Map(with_server_fields(ctx, source, report))
                }
                None => refusal,
            };
        }
    };
    worker::submit_probe(
        ctx,
        checked,
        source,
        Box::new(move |probed| {
            Box::new(move |ctx| {
                let report = health_report(source, Some(probed));
                Reply::Map(with_server_fields(ctx, source, report))
            })
        }),
    )
}

/// `report` with the cluster's fields and, in the default source's report, each named
/// source's status, before `config`, which stays last.
fn with_server_fields(
    ctx: &Context,
    source: SourceId,
    mut report: Vec<(String, Reply)>,
) -> Vec<(String, Reply)> {
    let mut fields = cluster_report(ctx);
    if source == SourceId::DEFAULT {
        fields.extend(named_statuses());
    }
    let at = report.len() - 1;
    report.splice(at..at, fields);
    report
}

/// `sources`: each named source's status, `ok` or `degraded`, from what is known without a
/// round trip to its PostgreSQL (its circuit, feed and freshness; HEALTH SOURCE <name> checks
/// it and names the problems); nothing without named sources.
fn named_statuses() -> Option<(String, Reply)> {
    let statuses: Vec<(String, Reply)> = (current::named_ids().into_iter())
        .filter_map(|id| {
            let name = current::name(id)?;
            let rtt = crate::pg::circuit::of(id)
                .refusal()
                .map(|refusal| Err(Error::postgres(refusal)));
            let status = health_report(id, rtt).swap_remove(0).1;
            Some((name, status))
        })
        .collect();
    (!statuses.is_empty()).then(|| ("sources".to_string(), Reply::Map(statuses)))
}

/// Whether this node is part of a cluster, and how many slots it serves as a primary.
fn cluster_report(ctx: &Context) -> Vec<(String, Reply)> {
    match crate::redis::cluster::served_slots(ctx) {
        None => vec![("cluster".to_string(), Reply::Bulk("no".into()))],
        Some(slots) => vec![
            ("cluster".to_string(), Reply::Bulk("yes".into())),
            ("cluster_slots".to_string(), Reply::Int(slots as i64)),
        ],
    }
}

/// PGCACHE.DRAIN [seconds] [SOURCE name]: for `seconds` (10 by default; 0 ends a drain),
/// requests that would wait for PostgreSQL are refused (every source's, or the named
/// source's only); replies how many requests are still waiting (of that source), so an
/// operator repeats it until 0 and then runs MODULE UNLOAD (or removes the source).
pub fn drain(_ctx: &Context, args: &[&[u8]]) -> Reply {
    let (source, others) = match source_option(&args[1..]) {
        Ok(parsed) => parsed,
        Err(e) => return e.into(),
    };
    let seconds = match others.as_slice() {
        [] => DEFAULT_DRAIN_SECONDS,
        [seconds] => match std::str::from_utf8(seconds)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(n) if n <= drain::MAX_SECONDS => n,
            _ => {
                return Error::invalid(format!(
                    "PGCACHE.DRAIN takes a number of seconds from 0 (end the drain) to {}, got {:?}",
                    drain::MAX_SECONDS,
                    String::from_utf8_lossy(seconds)
                ))
                .into();
            }
        },
        _ => return Error::invalid("usage: PGCACHE.DRAIN [seconds] [SOURCE name]").into(),
    };
    if source == SourceId::DEFAULT {
        drain::open_for(seconds);
        Reply::Int(blocked::waiting() as i64)
    } else {
        drain::open_for_source(source, seconds);
        Reply::Int(blocked::waiting_for(source) as i64)
    }
}

/// How long PGCACHE.DRAIN refuses misses when given no time.
const DEFAULT_DRAIN_SECONDS: u64 = 10;

/// The health figures, given a PostgreSQL round trip's time or failure (None: no probe was
/// sent, because a drain is under way).
fn health_report(source: SourceId, probed: Option<Result<Probed, Error>>) -> Vec<(String, Reply)> {
    let mut problems = Vec::new();
    let mut postgres = Vec::new();
    if let Some(left) = drain::remaining(source) {
        problems.push(format!(
            "draining (PGCACHE.DRAIN): requests that need PostgreSQL are refused for {:.0} \
             more seconds (PGCACHE.DRAIN 0 ends it)",
            left.as_secs_f64().ceil()
        ));
    }
    match probed {
        None => postgres.push(("postgres".to_string(), Reply::Bulk("not checked".into()))),
        Some(Ok(probed)) => {
            postgres.push(("postgres".to_string(), Reply::Bulk("reachable".into())));
            postgres.push((
                "postgres_rtt_us".to_string(),
                Reply::Int(probed.rtt.as_micros() as i64),
            ));
            postgres.push((
                "postgres_timezone".to_string(),
                Reply::Bulk(probed.timezone),
            ));
        }
        Some(Err(e)) => {
            problems.push(format!("PostgreSQL is unreachable: {e}"));
            postgres.push(("postgres".to_string(), Reply::Bulk("unreachable".into())));
        }
    }
    let listener = if !current::of(source).listening() {
        "off"
    } else if invalidation::of(source).connected() {
        "connected"
    } else {
        problems.push(
            "the invalidation listener is disconnected: rows changed meanwhile may be served \
             until it reconnects"
                .to_string(),
        );
        "disconnected"
    };
    let freshness = freshness_report(source, &mut problems);
    let mut warnings = Vec::new();
    let feed = current::of(source)
        .listening()
        .then(|| invalidation_source(source, &mut problems, &mut warnings));
    let standbys = standbys_report(source, &mut warnings);
    let queued = worker::queued().unwrap_or(0);
    let capacity = worker::queue_capacity().max(1);
    let saturation = queued as f64 / capacity as f64;
    if saturation > QUEUE_SATURATION_PROBLEM {
        problems.push(format!(
            "the PostgreSQL queue is {:.0} % full ({queued} of {capacity})",
            saturation * 100.0
        ));
    }
    let mut out = vec![
        (
            "status".to_string(),
            Reply::Bulk(
                if problems.is_empty() {
                    "ok"
                } else {
                    "degraded"
                }
                .into(),
            ),
        ),
        (
            "problems".to_string(),
            Reply::Array(problems.into_iter().map(Reply::Bulk).collect()),
        ),
        (
            "warnings".to_string(),
            Reply::Array(warnings.into_iter().map(Reply::Bulk).collect()),
        ),
        (
            "version".to_string(),
            Reply::Bulk(env!("CARGO_PKG_VERSION").into()),
        ),
    ];
    out.extend(postgres);
    out.push((
        "postgres_circuit".to_string(),
        Reply::Bulk(circuit_report(source)),
    ));
    out.push(("listener".to_string(), Reply::Bulk(listener.into())));
    if let Some((ago, why)) = invalidation::of(source).last_loss() {
        out.push((
            "listener_last_loss".to_string(),
            Reply::Bulk(format!("{} s ago: {why}", ago.as_secs())),
        ));
    }
    out.extend(freshness);
    out.extend(feed.into_iter().flatten());
    out.extend(standbys);
    out.push(("queue_saturation".to_string(), Reply::Double(saturation)));
    out.push((
        "table_spellings".to_string(),
        Reply::Int(schema::of(source).remembered() as i64),
    ));
    out.extend(listing::gauges(source));
    let config = crate::module::parameters::effective_of(source)
        .into_iter()
        .map(|(k, v)| (k.to_string(), Reply::Bulk(v)))
        .collect();
    out.push(("config".to_string(), Reply::Map(config)));
    out
}

/// HEALTH's `standbys` (none listed: no field): each standby as the prober last saw it, how
/// far behind what the cache applied its replay is; one not serving is a warning (misses go
/// to the primary).
fn standbys_report(source: SourceId, warnings: &mut Vec<String>) -> Option<(String, Reply)> {
    let seen = standby::seen(source);
    if seen.is_empty() {
        return None;
    }
    let applied = position::applied_lsn_of(source);
    let entries = (seen.into_iter())
        .map(|standby| {
            if standby.state != standby::State::Serving {
                warnings.push(format!(
                    "standby {} is {}{}: misses go to the primary",
                    standby.address,
                    standby.state.name(),
                    standby
                        .why
                        .as_deref()
                        .map(|why| format!(" ({why})"))
                        .unwrap_or_default()
                ));
            }
            let field = |name: &str, value: Reply| (name.to_string(), value);
            Reply::Map(vec![
                field("address", Reply::Bulk(standby.address)),
                field("state", Reply::Bulk(standby.state.name().into())),
                field(
                    "replay_lsn",
                    standby
                        .replay_lsn
                        .map_or(Reply::Nil, |lsn| Reply::Bulk(lsn.to_string())),
                ),
                field(
                    "behind_bytes",
                    standby.replay_lsn.map_or(Reply::Nil, |lsn| {
                        Reply::Int(applied.0.saturating_sub(lsn.0) as i64)
                    }),
                ),
                field("misses", Reply::Int(standby.misses as i64)),
                field("rerouted", Reply::Int(standby.rerouted as i64)),
                field("why", standby.why.map_or(Reply::Nil, Reply::Bulk)),
            ])
        })
        .collect();
    Some(("standbys".to_string(), Reply::Array(entries)))
}

/// HEALTH's fields on where invalidations come from; what is wrong with it goes to `problems`,
/// what works but should not be left so to `warnings`.
fn invalidation_source(
    id: SourceId,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<(String, Reply)> {
    let feed = invalidation::of(id);
    let status = feed.replication.status();
    let mut out = Vec::new();
    let source = if let Some(why) = &status.fell_back {
        warnings.push(format!(
            "invalidation_source auto uses NOTIFY: {why}; every watched table's writes are \
             serialised by NOTIFY"
        ));
        "notify"
    } else if feed.replication.active() {
        "replication"
    } else if feed.listener.connected() || feed.listener.last_loss().is_some() {
        "notify"
    } else {
        "undecided"
    };
    out.push((
        "invalidation_source".to_string(),
        Reply::Bulk(source.into()),
    ));
    if source != "replication" {
        return out;
    }
    if let Some(problem) = &status.problem {
        problems.push(format!(
            "the replication source is not streaming: {problem}"
        ));
    }
    if let Some(applied) = feed.position.applied() {
        out.push((
            "replication_slot".to_string(),
            Reply::Bulk(applied.slot.clone()),
        ));
        out.push((
            "replication_applied_lsn".to_string(),
            Reply::Bulk(applied.lsn.to_string()),
        ));
    }
    // Before the first confirmation too: an operator compares it with the applied one.
    out.push((
        "replication_confirmed_lsn".to_string(),
        Reply::Bulk(
            status
                .confirmed
                .map_or_else(|| "none yet".to_string(), |lsn| lsn.to_string()),
        ),
    ));
    if let Some(slot) = &status.slot {
        let applied = position::applied_lsn_of(id);
        out.extend([
            (
                "replication_server_lsn".to_string(),
                Reply::Bulk(slot.server_lsn.to_string()),
            ),
            (
                "replication_lag_bytes".to_string(),
                Reply::Int(slot.server_lsn.0.saturating_sub(applied.0) as i64),
            ),
            (
                "replication_retained_bytes".to_string(),
                Reply::Int(slot.retained_bytes as i64),
            ),
            (
                "replication_wal_status".to_string(),
                Reply::Bulk(slot.wal_status.clone()),
            ),
        ]);
        if matches!(slot.wal_status.as_str(), "unreserved" | "lost") {
            problems.push(format!(
                "replication slot's log is {}: PostgreSQL may give the slot up (see \
                 max_slot_wal_keep_size), and pgcache would start over with a flush",
                slot.wal_status
            ));
        }
        let (unlogged, unpublished): (Vec<_>, Vec<_>) =
            slot.unpublished.iter().partition(|(_, unlogged)| *unlogged);
        if !unpublished.is_empty() {
            let names: Vec<String> = unpublished.iter().map(|(t, _)| t.display()).collect();
            warnings.push(format!(
                "tables served that the publication does not cover (or not every partition \
                 or child of), refreshed only by their TTL: {} (run pgcache_watch)",
                names.join(", ")
            ));
        }
        if !unlogged.is_empty() {
            let names: Vec<String> = unlogged.iter().map(|(t, _)| t.display()).collect();
            warnings.push(format!(
                "tables served whose rows are (partly) UNLOGGED, which PostgreSQL's log never \
                 holds: {} (ALTER TABLE ... SET LOGGED, or notify mode)",
                names.join(", ")
            ));
        }
        warnings.extend(slot.publication_gaps.iter().cloned());
        out.push((
            "ddl_followed".to_string(),
            Reply::Bulk(if slot.ddl_followed { "yes" } else { "no" }.into()),
        ));
    }
    // The horizon's age: how far behind PostgreSQL's commits the cache may be, which grows
    // while the stream is silent (the last applied transaction's lag would not).
    out.push((
        "replication_lag_ms".to_string(),
        Reply::Int(freshness::of(id).age_ms()),
    ));
    out
}

/// The circuit to PostgreSQL: closed, or open since when and why.
fn circuit_report(source: SourceId) -> String {
    match crate::pg::circuit::of(source).outage() {
        None => "closed".to_string(),
        Some(outage) => format!(
            "open for {:.1} s: {}",
            outage.since.elapsed().unwrap_or_default().as_secs_f64(),
            outage.reason
        ),
    }
}

/// The freshness horizon's age in milliseconds; -1 when no probe has come back yet.
/// HEALTH's fields on how fresh hits are: the horizon's age, the bound, and whether hits are
/// answered from the cache now; a bound passed is a problem that says what reads do.
fn freshness_report(source: SourceId, problems: &mut Vec<String>) -> Vec<(String, Reply)> {
    let hits = serving::now(source);
    if hits == Hits::Unbounded {
        return vec![("hits".to_string(), Reply::Bulk(hits.word().into()))];
    }
    let bound = current::of(source).max_staleness_ms();
    match &hits {
        Hits::ServedStale => problems.push(format!(
            "PostgreSQL cannot be reached: hits are served past max_staleness_ms ({bound}) for \
             as long as the cache is at most stale_if_error_ms ({}) behind",
            current::of(source).stale_if_error_ms()
        )),
        Hits::Bypassed(why) => problems.push(why.clone()),
        Hits::Served | Hits::Unbounded => {}
    }
    // (`freshness_age_ms` comes with the gauges, as STATS tells it.)
    vec![
        ("hits".to_string(), Reply::Bulk(hits.word().into())),
        ("max_staleness_ms".to_string(), Reply::Int(bound)),
    ]
}
