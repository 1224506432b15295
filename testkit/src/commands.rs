//! pgcache's commands and CONFIG from a test, the SQL most tests start from, and waiting
//! for what invalidation does.

use crate::*;
use redis::ConnectionLike;
use std::collections::HashMap;
use std::time::Duration;

pub fn read(
    con: &mut redis::Connection,
    table: &str,
    pk: &str,
) -> redis::RedisResult<Option<String>> {
    query_through_interrupts(redis::cmd("PGCACHE.READ").arg(table).arg(pk), con)
}

/// Whether `e` is a read that a signal interrupted before any reply came (EINTR).
fn interrupted(e: &redis::RedisError) -> bool {
    e.is_io_error() && e.to_string().contains("(os error 4)")
}

/// `cmd`'s reply, waiting again when a signal interrupts the wait (EINTR: Linux ends a socket
/// read that has a timeout so when the process is stopped and continued): the command was
/// sent, its reply is still coming on the same connection.
pub fn query_through_interrupts<T: redis::FromRedisValue>(
    cmd: &redis::Cmd,
    con: &mut redis::Connection,
) -> redis::RedisResult<T> {
    let mut reply = con.req_command(cmd);
    while let Err(e) = &reply
        && interrupted(e)
    {
        reply = con.recv_response();
    }
    Ok(redis::from_redis_value(reply?.extract_error()?)?)
}

/// PGCACHE.WRITE of `data` as the row of `pk`.
pub fn write(
    con: &mut redis::Connection,
    table: &str,
    pk: &str,
    data: &str,
) -> redis::RedisResult<String> {
    redis::cmd("PGCACHE.WRITE")
        .arg(table)
        .arg(pk)
        .arg(data)
        .query(con)
}

pub fn invalidate(
    con: &mut redis::Connection,
    table: &str,
    pk: &str,
) -> redis::RedisResult<String> {
    redis::cmd("PGCACHE.INVALIDATE")
        .arg(table)
        .arg(pk)
        .query(con)
}

/// CONFIG SET `name` `value`; the error says why the server refused it.
pub fn config_set(
    con: &mut redis::Connection,
    name: &str,
    value: impl redis::ToRedisArgs,
) -> redis::RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(con)
}

/// CONFIG GET `pattern`: the flat list of names and values Redis replies.
pub fn config_get(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("CONFIG")
        .arg("GET")
        .arg(pattern)
        .query(con)
        .unwrap()
}

pub fn multiread(
    con: &mut redis::Connection,
    table: &str,
    keys: &str,
) -> redis::RedisResult<Vec<Option<String>>> {
    query_through_interrupts(redis::cmd("PGCACHE.MULTIREAD").arg(table).arg(keys), con)
}

/// `[{"id":1},{"id":2},...]` for these ids.
pub fn id_array(ids: impl IntoIterator<Item = i64>) -> String {
    let keys: Vec<String> = ids
        .into_iter()
        .map(|id| format!(r#"{{"id":{id}}}"#))
        .collect();
    format!("[{}]", keys.join(","))
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The shipped trigger SQL, installed by tests that need invalidation from PostgreSQL.
pub const TRIGGER_SQL: &str = include_str!("../../examples/invalidation_trigger.sql");

/// The shipped DDL event trigger, which every test database has (`Pg::start`), installed by
/// a superuser as docs/setup.md asks.
pub const DDL_TRIGGER_SQL: &str = include_str!("../../examples/ddl_trigger.sql");

/// Whether `key` exists.
pub fn exists(con: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query(con).unwrap()
}

/// Reads `pk` until its row is cached (the first reads after a start are answered but not
/// cached until the invalidation listener listens), and returns the row.
pub fn read_until_cached(con: &mut redis::Connection, table: &str, pk: &str) -> String {
    let key = format!("pg_cache:{table}:{pk}");
    wait_for(
        &format!("{key} to be cached"),
        Duration::from_secs(10),
        || {
            let row = read(con, table, pk).unwrap().expect("a row");
            redis::cmd("EXISTS")
                .arg(&key)
                .query::<bool>(con)
                .unwrap()
                .then_some(row)
        },
    )
}

/// `read_until_cached` of a named source's row (issue #53): READ with `SOURCE source` until
/// its key, `pg_cache:@<source>:<table>:<pk>`, exists; the source's feed is listening then.
pub fn read_until_cached_of(
    con: &mut redis::Connection,
    source: &str,
    table: &str,
    pk: &str,
) -> String {
    let key = format!("pg_cache:@{source}:{table}:{pk}");
    wait_for(
        &format!("{key} to be cached"),
        Duration::from_secs(10),
        || {
            let row: Option<String> = query_through_interrupts(
                redis::cmd("PGCACHE.READ")
                    .arg(table)
                    .arg(pk)
                    .arg("SOURCE")
                    .arg(source),
                con,
            )
            .unwrap();
            let row = row.expect("a row");
            exists(con, &key).then_some(row)
        },
    )
}

/// Waits until `key` no longer exists.
pub fn wait_gone(con: &mut redis::Connection, key: &str) {
    wait_for(
        &format!("{key} to be invalidated"),
        Duration::from_secs(10),
        || (!redis::cmd("EXISTS").arg(key).query::<bool>(con).unwrap()).then_some(()),
    );
}

/// Waits until the replication feed applied the log through `position` (PGCACHE.HEALTH's
/// `replication_applied_lsn`).
pub fn wait_applied(con: &mut redis::Connection, position: &str) {
    wait_for("the log applied", Duration::from_secs(20), || {
        let health = map_reply(con, "PGCACHE.HEALTH");
        let applied: String =
            redis::from_redis_value(health.get("replication_applied_lsn")?.clone()).ok()?;
        (lsn(&applied) >= lsn(position)).then_some(())
    });
}

/// How many cache entries the connection's DB holds (`DBSIZE` also counts the replication
/// source's position key).
pub fn cache_entries(con: &mut redis::Connection) -> usize {
    redis::cmd("KEYS")
        .arg("pg_cache:*")
        .query::<Vec<String>>(con)
        .unwrap()
        .len()
}

/// The backend of the invalidation source (the listener's session, or the replication
/// source's walsender), if connected.
pub fn listener_pid(pg: &Pg) -> Option<i32> {
    pg.superuser()
        .query_opt(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name IN ('pgcache-listener', 'pgcache-replication')",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
}

/// `con` subscribed to `channel`, waiting at most 10 s for each message.
pub fn subscribe<'a>(con: &'a mut redis::Connection, channel: &str) -> redis::PubSub<'a> {
    let mut pubsub = con.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    pubsub.subscribe(channel).unwrap();
    pubsub
}

/// The next message on a subscribed channel. A wait interrupted without a message (EINTR:
/// Linux ends a socket read that has a timeout so when the process is stopped and continued,
/// signal handler or not) waits again.
pub fn next_message(pubsub: &mut redis::PubSub) -> redis::Msg {
    loop {
        match pubsub.get_message() {
            Ok(msg) => return msg,
            Err(e) if interrupted(&e) => continue,
            Err(e) => panic!("a message before the read timeout: {e}"),
        }
    }
}

/// The next message on a subscribed channel, parsed as JSON.
pub fn next_event(pubsub: &mut redis::PubSub) -> serde_json::Value {
    json(&next_message(pubsub).get_payload::<String>().unwrap())
}

/// Waits until the number of keys matching `pattern` is `wanted` (described as `what`).
fn wait_keys(
    con: &mut redis::Connection,
    pattern: &str,
    what: &str,
    wanted: impl Fn(usize) -> bool,
) {
    wait_for(
        &format!("{what} keys {pattern}"),
        Duration::from_secs(10),
        || {
            let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(con).unwrap();
            wanted(keys.len()).then_some(())
        },
    );
}

/// Waits until at least `n` keys match `pattern` (fills are written: the cache is not held).
pub fn wait_keys_at_least(con: &mut redis::Connection, pattern: &str, n: usize) {
    wait_keys(con, pattern, &format!("at least {n}"), |keys| keys >= n);
}

/// Waits until at most `n` keys match `pattern` (a flush finished).
pub fn wait_keys_at_most(con: &mut redis::Connection, pattern: &str, n: usize) {
    wait_keys(con, pattern, &format!("at most {n}"), |keys| keys <= n);
}

pub const USERS_SQL: &str = "
    CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL, email text);
    INSERT INTO users SELECT g, 'user' || g, 'user' || g || '@example.com' FROM generate_series(1, 200) g;
";

/// A stream's entries, each as field -> value.
pub fn stream_entries(con: &mut redis::Connection, stream: &str) -> Vec<HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            entry
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value(v.clone()).unwrap()))
                .collect()
        })
        .collect()
}

/// PGCACHE.DEBUG `what` `arg` (a stack started with `debug_commands yes`): its reply.
pub fn debug(con: &mut redis::Connection, what: &str, arg: &str) -> String {
    query_through_interrupts(redis::cmd("PGCACHE.DEBUG").arg(what).arg(arg), con).unwrap()
}

/// A READ on a connection of its own, in a thread: for requests that must wait concurrently.
pub fn spawn_read(
    port: u16,
    table: &'static str,
    pk: impl Into<String>,
) -> std::thread::JoinHandle<redis::RedisResult<Option<String>>> {
    let pk = pk.into();
    std::thread::spawn(move || {
        let mut con = connect(port);
        read(&mut con, table, &pk)
    })
}

/// MODULE UNLOAD of pgcache, again while Redis refuses it: pgcache refuses to unload while
/// work for the main thread is queued (a freshness probe, invalidations) and Redis while a
/// timer of ours is pending, both for moments. Panics when it is still refused after 20 s.
pub fn unload(con: &mut redis::Connection) {
    wait_for("the unload", Duration::from_secs(20), || {
        redis::cmd("MODULE")
            .arg("UNLOAD")
            .arg("pgcache")
            .query::<String>(con)
            .ok()
    });
}
