//! PGCACHE.WRITE and INVALIDATE, events, replication and the AOF.
use pgcache_testkit::*;
use std::time::Duration;

#[test]
fn write_then_read_then_invalidate() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let ok: String = redis::cmd("PGCACHE.WRITE")
        .arg("users")
        .arg(r#"{ "id": "42" }"#)
        .arg(r#"{"id":42,"name":"written"}"#)
        .arg(120)
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    // WRITE is cache only: PostgreSQL still has user42, the cache has the written row.
    assert_eq!(
        read(&mut con, "users", r#"{"id":42}"#).unwrap().as_deref(),
        Some(r#"{"id":42,"name":"written"}"#)
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(r#"pg_cache:users:{"id":42}"#)
        .query(&mut con)
        .unwrap();
    assert!((110..=120).contains(&ttl), "{ttl}");
    assert_eq!(invalidate(&mut con, "users", r#"{"id":42}"#).unwrap(), "OK");
    assert_eq!(
        json(&read(&mut con, "users", r#"{"id":42}"#).unwrap().unwrap())["name"],
        "user42"
    );
    // Invalidating what is not cached is fine too.
    assert_eq!(
        invalidate(&mut con, "users", r#"{"id":9999}"#).unwrap(),
        "OK"
    );
}

#[test]
fn write_and_invalidate_validate_their_input() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    for (args, expected) in [
        (
            vec!["users", r#"{"id":1}"#, "[1,2]"],
            "must be a JSON object",
        ),
        (vec!["users", r#"{"id":1}"#, "{nope"], "not valid JSON"),
        (vec!["users", r#"{"id":"x"}"#, "{}"], "expected an integer"),
        (vec!["users", r#"{"id":1}"#, "{}", "0"], "TTL"),
        (vec!["nosuch", r#"{"id":1}"#, "{}"], "does not exist"),
        (vec!["users", r#"{"id":1}"#], "wrong number of arguments"),
    ] {
        let mut cmd = redis::cmd("PGCACHE.WRITE");
        for a in &args {
            cmd.arg(*a);
        }
        let e = cmd.query::<String>(&mut con).unwrap_err().to_string();
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    let e = redis::cmd("PGCACHE.INVALIDATE")
        .arg("users")
        .arg("[]")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(e.to_string().contains("JSON object"), "{e}");
}

#[test]
fn events_are_published_and_hit_events_are_opt_in() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let mut sub = stack.redis.connection();
    let mut pubsub = subscribe(&mut sub, "pg_cache_events");

    read(&mut con, "users", r#"{"id":"8"}"#).unwrap(); // miss
    read(&mut con, "users", r#"{"id":8}"#).unwrap(); // hit: not published by default
    write(&mut con, "users", r#"{"id":9}"#, "{}").unwrap();
    invalidate(&mut con, "users", r#"{"id":9}"#).unwrap();

    let miss = next_event(&mut pubsub);
    assert_eq!(miss["type"], "cache_miss");
    assert_eq!(miss["table"], "users");
    assert_eq!(miss["key"], r#"{"id":8}"#);
    assert!(miss["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(next_event(&mut pubsub)["type"], "cache_write");
    let inv = next_event(&mut pubsub);
    assert_eq!(
        (inv["type"].as_str(), inv["key"].as_str()),
        (Some("cache_invalidate"), Some(r#"{"id":9}"#))
    );

    config_set(&mut con, "pgcache.events", "hit").unwrap();
    read(&mut con, "users", r#"{"id":8}"#).unwrap();
    let hit = next_event(&mut pubsub);
    assert_eq!(
        (hit["type"].as_str(), hit["key"].as_str()),
        (Some("cache_hit"), Some(r#"{"id":8}"#))
    );

    // Another channel, settable at runtime.
    config_set(&mut con, "pgcache.event_channel", "other").unwrap();
    pubsub.subscribe("other").unwrap();
    read(&mut con, "users", r#"{"id":8}"#).unwrap();
    let msg = next_message(&mut pubsub);
    assert_eq!(msg.get_channel_name(), "other");
}

#[test]
fn fills_replicate_with_absolute_expiry_and_replicas_do_not_write() {
    let stack = Stack::start(USERS_SQL);
    let replica = stack.start_replica();
    let mut primary = stack.con();
    let mut rcon = replica.connection();

    let row = read(&mut primary, "users", r#"{"id":11}"#)
        .unwrap()
        .unwrap();
    let key = r#"pg_cache:users:{"id":11}"#;
    let replicated: String = wait_for("the fill on the replica", Duration::from_secs(10), || {
        redis::cmd("GET")
            .arg(key)
            .query::<Option<String>>(&mut rcon)
            .unwrap()
    });
    assert_eq!(replicated, row);
    let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut rcon).unwrap();
    assert!(
        pttl > 3_500_000,
        "absolute expiry reached the replica: {pttl}"
    );

    // A miss on the replica is answered from PostgreSQL and not written there.
    let row12 = read(&mut rcon, "users", r#"{"id":12}"#).unwrap().unwrap();
    assert_eq!(json(&row12)["id"], 12);
    let exists: bool = redis::cmd("EXISTS")
        .arg(r#"pg_cache:users:{"id":12}"#)
        .query(&mut rcon)
        .unwrap();
    assert!(!exists);
    // INVALIDATE on the primary removes the replica's copy too.
    invalidate(&mut primary, "users", r#"{"id":11}"#).unwrap();
    wait_for(
        "the invalidation on the replica",
        Duration::from_secs(10),
        || {
            (!redis::cmd("EXISTS")
                .arg(key)
                .query::<bool>(&mut rcon)
                .unwrap())
            .then_some(())
        },
    );
}

#[test]
fn fills_reach_the_aof_with_pxat() {
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let redis = Redis::start_with(
        &pg.module_args(),
        &["--appendonly", "yes", "--appendfsync", "always"],
        &[],
    )
    .unwrap();
    let mut con = redis.connection();
    wait_hits_served(&mut con);
    read(&mut con, "users", r#"{"id":21}"#).unwrap().unwrap();
    let aof: String = wait_for("the fill in the AOF", Duration::from_secs(10), || {
        let text: String = walk(&redis.dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".aof"))
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
            .collect();
        text.contains(r#"pg_cache:users:{"id":21}"#).then_some(text)
    });
    assert!(aof.contains("PXAT"), "{aof}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

const ORDERS_SQL: &str = "
    CREATE TABLE orders (id integer PRIMARY KEY, total numeric NOT NULL);
    INSERT INTO orders VALUES (1, 9.50);
";

fn flush(con: &mut redis::Connection, table: &str) -> redis::RedisResult<String> {
    redis::cmd("PGCACHE.FLUSH").arg(table).query(con)
}

fn assert_noperm<T: std::fmt::Debug>(result: redis::RedisResult<T>, what: &str) {
    let e = result.expect_err(what).to_string();
    assert!(e.to_uppercase().contains("NOPERM"), "{what}: {e}");
}

fn raw_entry(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).unwrap()
}

#[test]
fn acl_key_patterns_apply_to_the_keys_write_invalidate_and_flush_change() {
    let stack = Stack::start(&format!("{USERS_SQL} {ORDERS_SQL}"));
    let mut admin = stack.con();
    let order = r#"pg_cache:orders:{"id":1}"#;
    let cached = read(&mut admin, "orders", r#"{"id":1}"#).unwrap().unwrap();
    add_acl_user(&mut admin, "users_only", &["~pg_cache:users:*", "+@all"]);
    add_acl_user(&mut admin, "reads_all", &["%R~pg_cache:*", "+@all"]);
    add_acl_user(
        &mut admin,
        "one_key",
        &[r#"~pg_cache:users:{"id":1}"#, "+@all"],
    );
    let port = stack.redis.port;

    let mut users_only = connect_as(port, "users_only", "pw");
    assert_eq!(
        write(&mut users_only, "users", r#"{"id":1}"#, r#"{"id":1}"#).unwrap(),
        "OK"
    );
    assert_eq!(
        invalidate(&mut users_only, "users", r#"{"id":1}"#).unwrap(),
        "OK"
    );
    assert_eq!(flush(&mut users_only, "users").unwrap(), "OK");
    for pk in [r#"{"id":1}"#, r#"{ "id": "1" }"#] {
        assert_noperm(
            write(&mut users_only, "orders", pk, r#"{"id":1,"total":0}"#),
            "WRITE of another table's key",
        );
        assert_noperm(invalidate(&mut users_only, "orders", pk), "INVALIDATE");
    }
    assert_noperm(flush(&mut users_only, "orders"), "FLUSH of another table");
    // The first use of a table spelling is checked once a worker has read the schema.
    assert_noperm(
        write(
            &mut users_only,
            "public.orders",
            r#"{"id":1}"#,
            r#"{"id":1,"total":0}"#,
        ),
        "WRITE through a new spelling",
    );
    assert_eq!(
        raw_entry(&mut admin, order).as_deref(),
        Some(cached.as_str()),
        "no forged row, nothing invalidated or flushed"
    );

    // Reading every key is not writing any.
    let mut reads_all = connect_as(port, "reads_all", "pw");
    assert!(
        read(&mut reads_all, "orders", r#"{"id":1}"#)
            .unwrap()
            .is_some()
    );
    assert_noperm(
        write(&mut reads_all, "orders", r#"{"id":1}"#, "{}"),
        "WRITE",
    );
    assert_noperm(
        invalidate(&mut reads_all, "orders", r#"{"id":1}"#),
        "INVALIDATE",
    );
    assert_noperm(flush(&mut reads_all, "orders"), "FLUSH");

    // One key of a table is not all of them.
    let mut one_key = connect_as(port, "one_key", "pw");
    assert_eq!(
        write(&mut one_key, "users", r#"{"id":1}"#, r#"{"id":1}"#).unwrap(),
        "OK"
    );
    assert_noperm(
        write(&mut one_key, "users", r#"{"id":2}"#, r#"{"id":2}"#),
        "WRITE",
    );
    assert_noperm(
        flush(&mut one_key, "users"),
        "FLUSH with one key's permission",
    );
    assert_eq!(
        raw_entry(&mut admin, order).as_deref(),
        Some(cached.as_str())
    );

    // As for Redis's own refusals, ACL LOG says who was refused which key.
    let log: Vec<Vec<redis::Value>> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    let logged = format!("{log:?}");
    assert!(
        logged.contains("users_only") && logged.contains("pg_cache:orders:"),
        "{logged}"
    );
    assert_eq!(
        stats_figure(&mut admin, "errors"),
        0,
        "refusals are not pgcache errors"
    );
}

#[test]
fn commands_refused_by_acl_rules_stay_refused_and_stats_reset_needs_admin_rights() {
    let stack = Stack::start(USERS_SQL);
    let mut admin = stack.con();
    add_acl_user(
        &mut admin,
        "no_writes",
        &["~*", "+@all", "-pgcache.write", "-pgcache.flush"],
    );
    add_acl_user(
        &mut admin,
        "watcher",
        &["~*", "+pgcache.stats", "+pgcache.read"],
    );
    add_acl_user(
        &mut admin,
        "operator",
        &["~*", "+pgcache.stats", "+config|resetstat"],
    );
    let port = stack.redis.port;

    let mut no_writes = connect_as(port, "no_writes", "pw");
    assert!(
        read(&mut no_writes, "users", r#"{"id":1}"#)
            .unwrap()
            .is_some()
    );
    assert_noperm(write(&mut no_writes, "users", r#"{"id":1}"#, "{}"), "WRITE");
    assert_noperm(flush(&mut no_writes, "users"), "FLUSH");

    let mut watcher = connect_as(port, "watcher", "pw");
    read(&mut watcher, "users", r#"{"id":2}"#).unwrap();
    assert!(stats_figure(&mut watcher, "misses") > 0, "STATS reads");
    let reset: redis::RedisResult<String> =
        redis::cmd("PGCACHE.STATS").arg("RESET").query(&mut watcher);
    assert_noperm(reset, "STATS RESET by a user who may only read them");
    assert!(stats_figure(&mut admin, "misses") > 0, "nothing was reset");

    let mut operator = connect_as(port, "operator", "pw");
    let reset: String = redis::cmd("PGCACHE.STATS")
        .arg("RESET")
        .query(&mut operator)
        .unwrap();
    assert_eq!(reset, "OK");
    assert_eq!(stats_figure(&mut admin, "misses"), 0);
}
