//! PGCACHE.STATS [RESET]: what pgcache has done, as a map (RESP3) or name/value pairs
//! (RESP2); the same figures as the `pgcache` INFO section.

use crate::error::Error;
use crate::flush;
use crate::pg::listener;
use crate::reply::Reply;
use crate::stats;
use crate::worker;
use redis_module::Context;

pub fn stats(_ctx: &Context, args: &[&[u8]]) -> Reply {
    match args.len() {
        1 => Reply::Map(report()),
        2 if args[1].eq_ignore_ascii_case(b"RESET") => {
            stats::reset();
            Reply::Ok
        }
        2 => Error::new("usage: PGCACHE.STATS [RESET]").into(),
        _ => Reply::WrongArity,
    }
}

/// Every figure, in reporting order.
pub fn report() -> Vec<(String, Reply)> {
    let mut out: Vec<(String, Reply)> = stats::counters()
        .into_iter()
        .map(|(name, value)| (name.to_string(), Reply::Int(value as i64)))
        .collect();
    out.push(("hit_ratio".into(), Reply::Double(stats::hit_ratio())));
    if let Some((queued, pool)) = worker::load() {
        out.push(("queue_depth".into(), Reply::Int(queued as i64)));
        out.push(("pool_size".into(), Reply::Int(pool.size as i64)));
        out.push(("pool_open".into(), Reply::Int(pool.open as i64)));
        out.push(("pool_in_use".into(), Reply::Int(pool.in_use as i64)));
        out.push(("pool_idle".into(), Reply::Int(pool.idle as i64)));
    }
    out.push((
        "listener".into(),
        Reply::Bulk(
            if listener::connected() {
                "connected"
            } else {
                "disconnected"
            }
            .into(),
        ),
    ));
    out.push((
        "flushes_running".into(),
        Reply::Int(flush::running() as i64),
    ));
    let commands = stats::COMMANDS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let s = stats::command_summary(i);
            let figures = vec![
                (
                    "calls".to_string(),
                    Reply::Int(stats::command_calls(i) as i64),
                ),
                ("timed_calls".to_string(), Reply::Int(s.count as i64)),
                ("avg_us".to_string(), Reply::Double(s.avg_us)),
                ("p50_us".to_string(), Reply::Int(s.p50_us as i64)),
                ("p99_us".to_string(), Reply::Int(s.p99_us as i64)),
            ];
            (name.to_string(), Reply::Map(figures))
        })
        .collect();
    out.push(("commands".into(), Reply::Map(commands)));
    out
}
