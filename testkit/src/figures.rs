//! Reading figures: map replies (STATS, HEALTH) and INFO fields.

use crate::*;
use std::collections::HashMap;
use std::time::Duration;

/// A command's map reply (flat name/value pairs in RESP2) as a map.
pub fn map_reply(con: &mut redis::Connection, command: &str) -> HashMap<String, redis::Value> {
    nested(&redis::cmd(command).query(con).unwrap())
}

/// The number a map reply gives as `name`.
pub fn figure(map: &HashMap<String, redis::Value>, name: &str) -> i64 {
    redis::from_redis_value(map[name].clone()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The number PGCACHE.STATS gives as `name`.
pub fn stats_figure(con: &mut redis::Connection, name: &str) -> i64 {
    figure(&map_reply(con, "PGCACHE.STATS"), name)
}

/// A nested map (flat name/value pairs in RESP2) as a map.
pub fn nested(value: &redis::Value) -> HashMap<String, redis::Value> {
    let flat: Vec<redis::Value> = redis::from_redis_value(value.clone()).unwrap();
    flat.chunks(2)
        .map(|pair| {
            (
                redis::from_redis_value::<String>(pair[0].clone()).unwrap(),
                pair[1].clone(),
            )
        })
        .collect()
}

/// The field `field` of `INFO section`, if there is one.
pub fn info_value(con: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// A number of `INFO section`.
pub fn info_int(con: &mut redis::Connection, section: &str, field: &str) -> i64 {
    info_value(con, section, field)
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
        .parse()
        .unwrap()
}

/// How many clients wait on a blocking command (pgcache's misses among them).
pub fn blocked_clients(con: &mut redis::Connection) -> i64 {
    info_int(con, "clients", "blocked_clients")
}

/// Waits until exactly `n` clients are blocked.
pub fn wait_blocked(con: &mut redis::Connection, n: i64) {
    wait_for(
        &format!("{n} blocked clients"),
        Duration::from_secs(20),
        || (blocked_clients(con) == n).then_some(()),
    );
}

/// Waits until the change feed vouches for the cache (STATS `hits_served`): until then
/// reads go to PostgreSQL and nothing is cached.
pub fn wait_hits_served(con: &mut redis::Connection) {
    crate::wait_for(
        "the change feed to vouch for the cache",
        std::time::Duration::from_secs(10),
        || (stats_figure(con, "hits_served") == 1).then_some(()),
    );
}

/// Waits until PostgreSQL is known to be reachable again (STATS `postgres_circuit_open`).
pub fn wait_circuit_closed(con: &mut redis::Connection) {
    crate::wait_for(
        "pgcache to find PostgreSQL reachable",
        std::time::Duration::from_secs(20),
        || (stats_figure(con, "postgres_circuit_open") == 0).then_some(()),
    );
}
