//! PGCACHE.HOOK: routing events to channels and streams, bad definitions, persistence
//! across a restart (as configuration) and replication to replicas.
use pgcache_testkit::*;
use std::collections::HashMap;
use std::time::Duration;

fn hook(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<String> {
    redis::cmd("PGCACHE.HOOK").arg(args).query(con)
}

/// Each hook of HOOK LIST as a map of its fields.
fn hook_list(con: &mut redis::Connection) -> Vec<HashMap<String, Option<String>>> {
    let hooks: Vec<Vec<Option<String>>> =
        redis::cmd("PGCACHE.HOOK").arg("LIST").query(con).unwrap();
    hooks
        .into_iter()
        .map(|flat| {
            flat.chunks(2)
                .map(|pair| (pair[0].clone().unwrap(), pair[1].clone()))
                .collect()
        })
        .collect()
}

fn definitions(con: &mut redis::Connection) -> Vec<String> {
    hook_list(con)
        .into_iter()
        .map(|h| h["definition"].clone().unwrap())
        .collect()
}

#[test]
fn hooks_route_events_to_channels_and_streams() {
    let stack = Stack::start_with(
        &format!("{USERS_SQL} CREATE TABLE orders (id int PRIMARY KEY);"),
        &["events", "none"],
    );
    let mut con = stack.con();
    let mut sub = stack.redis.connection();
    let mut pubsub = subscribe(&mut sub, "misses");

    assert_eq!(
        hook(
            &mut con,
            &["ADD", "m", "ON", "fill,miss,hit", "PUBLISH", "misses"]
        )
        .unwrap(),
        "OK"
    );
    hook(
        &mut con,
        &[
            "ADD",
            "audit",
            "on",
            "write,invalidate",
            "TABLE",
            "public.users",
            "XADD",
            "audit",
            "MAXLEN",
            "~",
            "1000",
        ],
    )
    .unwrap();
    hook(
        &mut con,
        &[
            "ADD",
            "o",
            "ON",
            "write",
            "TABLE",
            "orders",
            "XADD",
            "orders-audit",
        ],
    )
    .unwrap();

    read(&mut con, "users", r#"{"id":3}"#).unwrap().unwrap();
    let miss = next_event(&mut pubsub);
    assert_eq!(miss["type"], "cache_miss");
    assert_eq!(miss["table"], "users");
    assert_eq!(miss["key"], r#"{"id":3}"#);
    let fill = next_event(&mut pubsub);
    assert_eq!(fill["type"], "cache_fill");
    assert_eq!(fill["key"], r#"{"id":3}"#);
    read(&mut con, "users", r#"{"id":3}"#).unwrap().unwrap();
    let hit = next_event(&mut pubsub);
    assert_eq!(hit["type"], "cache_hit");
    assert_eq!(hit["key"], r#"{"id":3}"#);

    write(&mut con, "users", r#"{"id":5}"#, r#"{"name":"x"}"#).unwrap();
    invalidate(&mut con, "users", r#"{ "id" : "5" }"#).unwrap();
    let entries = stream_entries(&mut con, "audit");
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["type"], "cache_write");
    assert_eq!(entries[1]["type"], "cache_invalidate");
    assert_eq!(entries[1]["table"], "users");
    assert_eq!(entries[1]["key"], r#"{"id":5}"#, "the canonical key");
    assert!(entries[1]["timestamp"].parse::<u64>().unwrap() > 1_600_000_000_000);
    let exists: bool = redis::cmd("EXISTS")
        .arg("orders-audit")
        .query(&mut con)
        .unwrap();
    assert!(!exists, "a hook for another table does not fire");

    // LIST: the built-in hook first (events none here), then ours as defined.
    assert_eq!(
        definitions(&mut con),
        vec![
            "default ON none PUBLISH pg_cache_events",
            "m ON hit,miss,fill PUBLISH misses",
            "audit ON write,invalidate TABLE users XADD audit MAXLEN ~ 1000",
            "o ON write TABLE orders XADD orders-audit",
        ]
    );
    let listed = &hook_list(&mut con)[2];
    assert_eq!(listed["action"].as_deref(), Some("xadd"));
    assert_eq!(listed["target"].as_deref(), Some("audit"));
    assert_eq!(listed["table"].as_deref(), Some("users"));
    assert_eq!(hook_list(&mut con)[1]["table"], None);
    let setting = config_get(&mut con, "pgcache.hooks");
    assert!(
        setting[1].starts_with("m ON hit,miss,fill PUBLISH misses; audit ON"),
        "{setting:?}"
    );

    // Adding the same definition again is harmless; another one under the name is not.
    hook(
        &mut con,
        &["ADD", "m", "ON", "hit,miss,fill", "PUBLISH", "misses"],
    )
    .unwrap();
    let e = hook(&mut con, &["ADD", "m", "ON", "miss", "PUBLISH", "misses"]).unwrap_err();
    assert!(e.to_string().contains("hook m exists"), "{e}");

    assert_eq!(hook(&mut con, &["DEL", "audit"]).unwrap(), "OK");
    write(&mut con, "users", r#"{"id":6}"#, r#"{"name":"x"}"#).unwrap();
    assert_eq!(
        stream_entries(&mut con, "audit").len(),
        2,
        "a deleted hook is silent"
    );
    let e = hook(&mut con, &["DEL", "audit"]).unwrap_err();
    assert!(e.to_string().contains("no hook named \"audit\""), "{e}");
}

#[test]
fn bad_hook_definitions_get_clear_errors() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    for (args, needle) in [
        (vec!["ADD"], "expected <name>"),
        (
            vec!["ADD", "default", "ON", "miss", "PUBLISH", "c"],
            "built-in hook",
        ),
        (vec!["DEL", "default"], "CONFIG SET pgcache.events none"),
        (
            vec!["ADD", "h", "ON", "miss,oops", "PUBLISH", "c"],
            "unknown event \"oops\"",
        ),
        (
            vec!["ADD", "h", "ON", "miss", "PUBLISH"],
            "channel needs a name",
        ),
        (
            vec!["ADD", "h", "ON", "miss", "XADD", "s", "MAXLEN", "~", "-3"],
            "MAXLEN",
        ),
        (
            vec!["ADD", "h", "ON", "miss", "XADD", "pg_cache:s"],
            "cache prefix",
        ),
        (
            vec!["ADD", "h", "ON", "miss", "TABLE", "a.b.c", "PUBLISH", "c"],
            "invalid table name",
        ),
        (
            vec!["ADD", "bad name!", "ON", "miss", "PUBLISH", "c"],
            "hook name",
        ),
        (vec!["FROB"], "usage: PGCACHE.HOOK"),
    ] {
        let e = hook(&mut con, &args).unwrap_err().to_string();
        assert!(
            e.contains("pgcache:") && e.contains(needle),
            "{args:?}: {e}"
        );
    }
    let e = config_set(&mut con, "pgcache.hooks", "x ON nope PUBLISH c")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown event"), "{e}");
    assert_eq!(definitions(&mut con).len(), 1, "nothing was added");
}

#[test]
fn error_and_slow_events_name_the_call() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    hook(&mut con, &["ADD", "ops", "ON", "error,slow", "XADD", "ops"]).unwrap();
    read(&mut con, "nosuch", r#"{"id":1}"#).unwrap_err();
    config_set(&mut con, "pgcache.slowlog_threshold_us", "0").unwrap();
    read(&mut con, "users", r#"{"id":9}"#).unwrap().unwrap();
    let entries = stream_entries(&mut con, "ops");
    let error = entries.iter().find(|e| e["type"] == "cache_error").unwrap();
    assert_eq!(error["command"], "read");
    assert_eq!(error["table"], "nosuch");
    assert!(error["error"].contains("does not exist"), "{error:?}");
    let slow = entries
        .iter()
        .find(|e| e["type"] == "cache_slow" && e["table"] == "users")
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(slow["key"], r#"{"id":9}"#);
    assert_eq!(slow["command"], "read");
    assert!(slow["duration_us"].parse::<u64>().unwrap() > 0);
}

#[test]
fn hooks_survive_a_restart_as_configuration() {
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let mut redis = Redis::start_configured(
        &args_without_password(&pg),
        &[("PGCACHE_PG_PASSWORD", PG_PASSWORD)],
    );
    let mut con = redis.connection();
    hook(
        &mut con,
        &["ADD", "kept", "ON", "write", "XADD", "kept", "MAXLEN", "10"],
    )
    .unwrap();
    hook(&mut con, &["ADD", "gone", "ON", "write", "PUBLISH", "gone"]).unwrap();
    hook(&mut con, &["DEL", "gone"]).unwrap();
    let conf = std::fs::read_to_string(redis.dir.join("redis.conf")).unwrap();
    assert!(
        conf.contains("pgcache.hooks"),
        "saved by CONFIG REWRITE:\n{conf}"
    );

    redis.restart();
    let mut con = redis.connection();
    assert_eq!(
        definitions(&mut con),
        vec![
            "default ON miss,write,invalidate,stale,query_invalidated,tag_invalidate PUBLISH pg_cache_events",
            "kept ON write XADD kept MAXLEN = 10",
        ]
    );
    write(&mut con, "users", r#"{"id":1}"#, r#"{"name":"x"}"#).unwrap();
    assert_eq!(
        stream_entries(&mut con, "kept").len(),
        1,
        "the hook works after the restart"
    );
}

/// Module arguments of `pg` without the password, which then comes from the environment
/// (a rewritten redis.conf keeps module arguments as given).
fn args_without_password(pg: &Pg) -> Vec<String> {
    pg.module_args()
        .chunks(2)
        .filter(|pair| pair[0] != "pg_password")
        .flatten()
        .cloned()
        .collect()
}

/// Hooks on tables whose names need quoting: a space, `;`, `"` and non-ASCII letters.
const QUOTED_TABLES_SQL: &str = r#"
    CREATE TABLE "my table" (id int PRIMARY KEY, name text);
    CREATE SCHEMA "a;b";
    CREATE TABLE "a;b"."c ""d""" (id int PRIMARY KEY);
    CREATE TABLE "Ünï ✓" (id int PRIMARY KEY);
"#;

fn add_quoted_table_hooks(con: &mut redis::Connection) -> Vec<String> {
    for args in [
        &[
            "ADD",
            "h1",
            "ON",
            "write",
            "TABLE",
            r#""my table""#,
            "PUBLISH",
            "ch1",
        ][..],
        &[
            "ADD",
            "h2",
            "ON",
            "write,invalidate",
            "TABLE",
            r#""a;b"."c ""d""""#,
            "XADD",
            "s2",
            "MAXLEN",
            "~",
            "5",
        ],
        &[
            "ADD",
            "h3",
            "ON",
            "miss",
            "TABLE",
            r#""Ünï ✓""#,
            "XADD",
            "s3",
            "MAXLEN",
            "7",
        ],
    ] {
        hook(con, args).unwrap();
    }
    definitions(con)
}

#[test]
fn hooks_on_quoted_table_names_survive_a_restart_from_the_configuration() {
    let pg = Pg::start();
    pg.execute(QUOTED_TABLES_SQL);
    let mut redis = Redis::start_configured(
        &args_without_password(&pg),
        &[("PGCACHE_PG_PASSWORD", PG_PASSWORD)],
    );
    let before = add_quoted_table_hooks(&mut redis.connection());
    assert_eq!(before[1], r#"h1 ON write TABLE "my table" PUBLISH ch1"#);

    redis.restart();
    let mut con = redis.connection();
    assert_eq!(definitions(&mut con), before, "read back from redis.conf");
    let mut sub = redis.connection();
    let mut pubsub = subscribe(&mut sub, "ch1");
    write(
        &mut con,
        r#""my table""#,
        r#"{"id":1}"#,
        r#"{"id":1,"name":"x"}"#,
    )
    .unwrap();
    let payload: String = next_message(&mut pubsub).get_payload().unwrap();
    let event: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        event["table"], r#""my table""#,
        "the hook works after the restart: {event}"
    );
}

#[test]
fn hooks_on_quoted_table_names_replay_from_the_aof_and_reach_replicas() {
    let pg = Pg::start();
    pg.execute(QUOTED_TABLES_SQL);
    // No configuration file: after the restart the hooks can only come from the AOF.
    let redis = Redis::start_with(
        &pg.module_args(),
        &["--appendonly", "yes", "--appendfsync", "always"],
        &[],
    )
    .unwrap();
    let mut stack = Stack { redis, pg };
    let replica = stack.start_replica();
    let before = add_quoted_table_hooks(&mut stack.con());
    let mut rcon = replica.connection();
    wait_for("the hooks on the replica", Duration::from_secs(10), || {
        (definitions(&mut rcon) == before).then_some(())
    });

    stack.redis.restart();
    assert_eq!(
        definitions(&mut stack.con()),
        before,
        "replayed from the AOF"
    );
}

#[test]
fn hooks_replicate_to_replicas() {
    let stack = Stack::start(USERS_SQL);
    let mut primary = stack.con();
    // Defined before the replica exists: it arrives with the replica's first sync.
    hook(
        &mut primary,
        &["ADD", "early", "ON", "write", "XADD", "audit"],
    )
    .unwrap();
    let replica = stack.start_replica();
    let mut rcon = replica.connection();
    let replica_hooks = |rcon: &mut redis::Connection| definitions(rcon)[1..].to_vec();
    wait_for(
        "the early hook on the replica",
        Duration::from_secs(10),
        || (replica_hooks(&mut rcon) == ["early ON write XADD audit"]).then_some(()),
    );

    hook(&mut primary, &["ADD", "late", "ON", "miss", "PUBLISH", "m"]).unwrap();
    hook(&mut primary, &["DEL", "early"]).unwrap();
    wait_for(
        "the changes on the replica",
        Duration::from_secs(10),
        || (replica_hooks(&mut rcon) == ["late ON miss PUBLISH m"]).then_some(()),
    );

    let e = hook(&mut rcon, &["ADD", "x", "ON", "miss", "PUBLISH", "m"]).unwrap_err();
    assert!(e.to_string().contains("replica"), "{e}");

    // A stream hook writes on the primary; the stream reaches the replica as data.
    hook(&mut primary, &["ADD", "w", "ON", "write", "XADD", "writes"]).unwrap();
    write(&mut primary, "users", r#"{"id":2}"#, r#"{"name":"x"}"#).unwrap();
    wait_for("the stream on the replica", Duration::from_secs(10), || {
        (stream_entries(&mut rcon, "writes").len() == 1).then_some(())
    });
    assert_eq!(stream_entries(&mut primary, "writes").len(), 1);
}

#[test]
fn a_broken_hook_target_is_counted_and_logged_not_fatal() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let _: () = redis::cmd("SET")
        .arg("not-a-stream")
        .arg("x")
        .query(&mut con)
        .unwrap();
    hook(
        &mut con,
        &["ADD", "broken", "ON", "write", "XADD", "not-a-stream"],
    )
    .unwrap();
    write(&mut con, "users", r#"{"id":1}"#, r#"{"name":"x"}"#).unwrap();
    write(&mut con, "users", r#"{"id":2}"#, r#"{"name":"x"}"#).unwrap();
    let stats = map_reply(&mut con, "PGCACHE.STATS");
    let failures: i64 = redis::from_redis_value(stats["hook_errors"].clone()).unwrap();
    assert_eq!(failures, 2, "each failed delivery is counted");
    let log = stack.redis.log();
    assert_eq!(
        log.matches("hook broken: XADD not-a-stream failed").count(),
        1,
        "logged once, not once per event:\n{log}"
    );
    assert!(log.contains("WRONGTYPE"), "{log}");
}

/// A connection authenticated as `user`.
fn connection_as(redis: &Redis, user: &str, password: &str) -> redis::Connection {
    let mut con = redis.connection();
    let _: () = redis::cmd("AUTH")
        .arg(user)
        .arg(password)
        .query(&mut con)
        .unwrap();
    con
}

#[test]
fn hooks_deliver_only_where_the_user_who_added_them_may_write() {
    let stack = Stack::start(USERS_SQL);
    let mut admin = stack.con();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "alice",
            "on",
            ">pw",
            "~audit:*",
            "~pgcache:*",
            "&events:*",
            "+@all",
        ])
        .query(&mut admin)
        .unwrap();
    for id in 1..=3 {
        let _: String = redis::cmd("XADD")
            .arg("secret")
            .arg("*")
            .arg("n")
            .arg(id)
            .query(&mut admin)
            .unwrap();
    }
    let mut alice = connection_as(&stack.redis, "alice", "pw");

    for (args, needle) in [
        (
            vec!["ADD", "s", "ON", "write", "XADD", "secret"],
            "ACL user \"alice\" may not write to stream \"secret\"",
        ),
        (
            vec![
                "ADD", "t", "ON", "write", "XADD", "secret", "MAXLEN", "=", "1",
            ],
            "may not write to (and trim, for MAXLEN) stream \"secret\"",
        ),
        (
            vec!["ADD", "p", "ON", "write", "PUBLISH", "private"],
            "may not publish on channel \"private\"",
        ),
        (
            vec!["ADD", "b", "ON", "write", "XADD", "audit:b", "BY", "root"],
            "BY root names another user",
        ),
    ] {
        let e = hook(&mut alice, &args).unwrap_err();
        assert!(e.to_string().contains(needle), "{args:?}: {e}");
    }
    let e = hook(&mut alice, &["SYNC", "s ON write XADD secret"]).unwrap_err();
    assert!(e.to_string().contains("primary sends"), "{e}");
    assert_eq!(definitions(&mut admin).len(), 1, "nothing was added");

    hook(
        &mut alice,
        &[
            "ADD",
            "mine",
            "ON",
            "write",
            "XADD",
            "audit:alice",
            "MAXLEN",
            "=",
            "10",
        ],
    )
    .unwrap();
    hook(
        &mut alice,
        &["ADD", "told", "ON", "write", "PUBLISH", "events:alice"],
    )
    .unwrap();
    let listed = &hook_list(&mut admin)[1];
    assert_eq!(listed["owner"].as_deref(), Some("alice"));
    assert_eq!(
        listed["definition"].as_deref(),
        Some("mine ON write XADD audit:alice MAXLEN = 10 BY alice")
    );
    let replica = stack.start_replica();
    let mut rcon = replica.connection();
    wait_for(
        "alice's hooks on the replica",
        Duration::from_secs(10),
        || {
            (definitions(&mut rcon)[1..]
                == [
                    "mine ON write XADD audit:alice MAXLEN = 10 BY alice",
                    "told ON write PUBLISH events:alice BY alice",
                ])
            .then_some(())
        },
    );

    write(&mut admin, "users", r#"{"id":1}"#, r#"{"name":"x"}"#).unwrap();
    assert_eq!(stream_entries(&mut admin, "audit:alice").len(), 1);

    // Once alice may no longer write there, her hook stops: counted, logged, nothing written.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "alice", "resetkeys", "~other:*", "resetchannels"])
        .query(&mut admin)
        .unwrap();
    write(&mut admin, "users", r#"{"id":2}"#, r#"{"name":"x"}"#).unwrap();
    assert_eq!(stream_entries(&mut admin, "audit:alice").len(), 1);
    let stats = map_reply(&mut admin, "PGCACHE.STATS");
    let refused: i64 = redis::from_redis_value(stats["hook_errors"].clone()).unwrap();
    assert_eq!(refused, 2, "both of alice's hooks were refused once");
    let log = stack.redis.log();
    assert!(
        log.contains("hook mine: ACL user \"alice\" may not write to (and trim, for MAXLEN) stream \"audit:alice\"; event dropped"),
        "{log}"
    );
    assert_eq!(
        stream_entries(&mut admin, "secret").len(),
        3,
        "the stream alice could not touch is intact"
    );
}
