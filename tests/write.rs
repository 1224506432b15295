//! PGCACHE.WRITE and INVALIDATE, events, replication and the AOF.
mod common;
use common::*;
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
    let msg = pubsub.get_message().unwrap();
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
