//! PGCACHE.STATS's listing: every figure, in reporting order, as reply fields (counters,
//! `figures`' gauges, the listener's state, the longest callback, per-command and per-table
//! calls and latency). The INFO section shows the same listing, flattened. A listing is one
//! source's figures beside the server's.

use crate::config::current;
use crate::invalidation;
use crate::model::source::SourceId;
use crate::report::figures;
use crate::requests::reply::Reply;
use crate::stall;
use crate::stats;

/// The gauges of `source` and the server's (`figures`), as reply fields.
pub fn gauges(source: SourceId) -> impl Iterator<Item = (String, Reply)> {
    figures::gauges(source).into_iter().map(|gauge| {
        let value = match gauge.value {
            figures::Value::Int(n) => Reply::Int(n),
            figures::Value::Ratio(r) => Reply::Double(r),
        };
        (gauge.name.to_string(), value)
    })
}

/// Every figure of `id` and of the server, in reporting order.
pub fn all(id: SourceId) -> Vec<(String, Reply)> {
    let source = stats::of(id);
    let mut out: Vec<(String, Reply)> = source
        .counters()
        .into_iter()
        .map(|(name, value)| (name.to_string(), Reply::Int(value as i64)))
        .collect();
    out.extend(gauges(id));
    // Two figures STATS also spells out in words.
    let feed = invalidation::of(id);
    let listening = if feed.connected() {
        "connected"
    } else {
        "disconnected"
    };
    out.push(("listener".into(), Reply::Bulk(listening.into())));
    if feed.replication.active() {
        // Positions are text (`0/16B3748`), as PostgreSQL writes them.
        let status = feed.replication.status();
        let applied = invalidation::position::applied_lsn_of(id);
        out.push((
            "replication_applied_lsn".into(),
            Reply::Bulk(applied.to_string()),
        ));
        let confirmed = status
            .confirmed
            .map_or_else(|| "none".to_string(), |lsn| lsn.to_string());
        out.push(("replication_confirmed_lsn".into(), Reply::Bulk(confirmed)));
    }
    out.push((
        "longest_callback".into(),
        Reply::Bulk(stall::longest().1.into()),
    ));
    let commands = stats::Tracked::ALL
        .into_iter()
        .map(|command| {
            let mut figures = vec![(
                "calls".to_string(),
                Reply::Int(stats::command_calls(command) as i64),
            )];
            figures.extend(latency_figures(stats::command_summary(command)));
            (command.name().to_string(), Reply::Map(figures))
        })
        .collect();
    out.push(("commands".into(), Reply::Map(commands)));
    out.push(("tables".into(), Reply::Map(tables(id))));
    out
}

/// Each table's figures in source `id`: calls, hits, misses, pass-through, latency.
pub fn tables(id: SourceId) -> Vec<(String, Reply)> {
    stats::of(id)
        .tables()
        .iter()
        .map(|t| {
            let mut figures = vec![
                ("calls".to_string(), Reply::Int(t.calls.get() as i64)),
                ("hits".to_string(), Reply::Int(t.hits.get() as i64)),
                ("misses".to_string(), Reply::Int(t.misses.get() as i64)),
                (
                    "pass_through".to_string(),
                    Reply::Int(i64::from(
                        t.pass_through.is_passing(current::of(id).pass_through()),
                    )),
                ),
                (
                    "passed_through".to_string(),
                    Reply::Int(t.pass_through.passed() as i64),
                ),
                (
                    "rows_too_long_for_loop".to_string(),
                    Reply::Int(i64::from(
                        t.large_rows.load(std::sync::atomic::Ordering::Relaxed),
                    )),
                ),
            ];
            figures.extend(latency_figures(t.latency.summary()));
            (t.name.clone(), Reply::Map(figures))
        })
        .collect()
}

/// A histogram's figures: the calls it timed, their average, median and 99th percentile.
fn latency_figures(s: stats::Summary) -> Vec<(String, Reply)> {
    vec![
        ("timed_calls".to_string(), Reply::Int(s.count as i64)),
        ("avg_us".to_string(), Reply::Double(s.avg_us)),
        ("p50_us".to_string(), Reply::Int(s.p50_us as i64)),
        ("p99_us".to_string(), Reply::Int(s.p99_us as i64)),
    ]
}
