//! What a restart, a reload or a promotion may serve: never a row changed in PostgreSQL while
//! nothing listened, and a server restarts with the settings it had.

use pgcache_testkit::*;
use std::time::Duration;

fn watched_users() -> Stack {
    Stack::start(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users');"
    ))
}

fn name_of(row: &str) -> String {
    json(row)["name"].as_str().unwrap().to_string()
}

fn select(con: &mut redis::Connection, db: i64) {
    let _: () = redis::cmd("SELECT").arg(db).query(con).unwrap();
}

#[test]
fn a_restart_from_an_rdb_serves_no_row_changed_while_the_server_was_down() {
    let mut stack = watched_users();
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":5}"#);
    select(&mut con, 3);
    read_until_cached(&mut con, "users", r#"{"id":6}"#);
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    stack.redis.stop();
    stack
        .pg
        .execute("UPDATE users SET name = 'changed-while-down' WHERE id IN (5, 6)");
    stack.redis.start_again();

    let mut con = stack.con();
    let row = read(&mut con, "users", r#"{"id":5}"#).unwrap().unwrap();
    assert_eq!(name_of(&row), "changed-while-down");
    select(&mut con, 3);
    let row = read(&mut con, "users", r#"{"id":6}"#).unwrap().unwrap();
    assert_eq!(name_of(&row), "changed-while-down");

    // Entries cached after the restart, in any DB, are invalidated by later changes.
    read_until_cached(&mut con, "users", r#"{"id":6}"#);
    stack
        .pg
        .execute("UPDATE users SET name = 'after-restart' WHERE id = 6");
    wait_gone(&mut con, r#"pg_cache:users:{"id":6}"#);
    let row = read(&mut con, "users", r#"{"id":6}"#).unwrap().unwrap();
    assert_eq!(name_of(&row), "after-restart");
}

#[test]
fn invalidations_reach_entries_in_every_db_even_those_another_process_filled() {
    let mut stack = watched_users();
    let mut con = stack.con();
    select(&mut con, 7);
    read_until_cached(&mut con, "users", r#"{"id":9}"#);
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    stack.redis.restart();
    let mut con = stack.con();
    select(&mut con, 7);
    // In notify mode the restarted server drops what it loaded (the replication source keeps
    // it: the position came with it); cache the row again in DB 7 through a plain SET, as an
    // entry an earlier process left there would be.
    if invalidation_source() == "notify" {
        wait_for(
            "the loaded entries to be dropped",
            Duration::from_secs(10),
            || {
                let n = cache_entries(&mut con);
                (n == 0).then_some(())
            },
        );
    }
    let _: () = redis::cmd("SET")
        .arg(r#"pg_cache:users:{"id":9}"#)
        .arg(r#"{"id":9,"name":"old"}"#)
        .query(&mut con)
        .unwrap();
    stack
        .pg
        .execute("UPDATE users SET name = 'new' WHERE id = 9");
    wait_gone(&mut con, r#"pg_cache:users:{"id":9}"#);
}

#[test]
fn entries_present_when_the_module_loads_are_not_served() {
    let stack = watched_users();
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":3}"#);
    let _: String = redis::cmd("MODULE")
        .arg("UNLOAD")
        .arg("pgcache")
        .query(&mut con)
        .unwrap();
    stack
        .pg
        .execute("UPDATE users SET name = 'changed-while-unloaded' WHERE id = 3");
    let mut load = redis::cmd("MODULE");
    load.arg("LOAD").arg(module_path().to_str().unwrap());
    for a in stack.pg.module_args() {
        load.arg(a);
    }
    let _: String = load.query(&mut con).unwrap();
    let row = read(&mut con, "users", r#"{"id":3}"#).unwrap().unwrap();
    assert_eq!(name_of(&row), "changed-while-unloaded");
}

#[test]
fn a_promoted_replica_serves_no_row_its_old_primary_could_not_invalidate() {
    let mut stack = watched_users();
    let replica = stack.start_replica();
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":4}"#);
    let mut rcon = replica.connection();
    wait_for("the entry on the replica", Duration::from_secs(10), || {
        redis::cmd("EXISTS")
            .arg(r#"pg_cache:users:{"id":4}"#)
            .query::<bool>(&mut rcon)
            .unwrap()
            .then_some(())
    });
    // The primary dies; the change it would have invalidated reaches nobody who can write.
    stack.redis.stop();
    stack
        .pg
        .execute("UPDATE users SET name = 'changed-after-failover' WHERE id = 4");
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut rcon)
        .unwrap();
    let row = read(&mut rcon, "users", r#"{"id":4}"#).unwrap().unwrap();
    assert_eq!(name_of(&row), "changed-after-failover");
    // The promoted replica now invalidates as a primary.
    read_until_cached(&mut rcon, "users", r#"{"id":4}"#);
    stack
        .pg
        .execute("UPDATE users SET name = 'later' WHERE id = 4");
    wait_gone(&mut rcon, r#"pg_cache:users:{"id":4}"#);
}

#[test]
fn a_server_with_the_password_in_its_loadmodule_line_restarts_after_config_rewrite() {
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let mut redis = Redis::start_configured(&pg.module_args(), &[]);
    let mut con = redis.connection();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    let _: String = redis::cmd("PGCACHE.HOOK")
        .arg(&["ADD", "h", "ON", "write", "PUBLISH", "somewhere"])
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("CONFIG").arg("REWRITE").query(&mut con).unwrap();

    redis.restart();
    let mut con = redis.connection();
    let row = read(&mut con, "users", r#"{"id":2}"#).unwrap().unwrap();
    assert_eq!(json(&row)["id"], 2);
    // Still out of everything but the admin's own view of the loadmodule line.
    let info: String = redis::cmd("INFO")
        .arg("everything")
        .query(&mut con)
        .unwrap();
    let health: redis::Value = redis::cmd("PGCACHE.HEALTH").query(&mut con).unwrap();
    for out in [redis.log(), info, format!("{health:?}")] {
        assert!(!out.contains(PG_PASSWORD), "password leaked in: {out}");
    }
}

#[test]
fn a_module_loaded_again_starts_its_figures_and_slowlog_from_zero() {
    let stack = watched_users();
    let mut con = stack.con();
    config_set(&mut con, "pgcache.slowlog_threshold_us", "0").unwrap();
    read_until_cached(&mut con, "users", r#"{"id":2}"#);
    assert!(read(&mut con, "no_such_table", r#"{"id":2}"#).is_err());
    let slowlog_len = |con: &mut redis::Connection| -> i64 {
        redis::cmd("PGCACHE.SLOWLOG").arg("LEN").query(con).unwrap()
    };
    let tables = |con: &mut redis::Connection| nested(&map_reply(con, "PGCACHE.STATS")["tables"]);
    assert!(stats_figure(&mut con, "misses") > 0 && stats_figure(&mut con, "errors") > 0);
    assert!(slowlog_len(&mut con) > 0);
    assert!(tables(&mut con).contains_key("users"));

    let _: String = redis::cmd("MODULE")
        .arg(&["UNLOAD", "pgcache"])
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("MODULE")
        .arg("LOAD")
        .arg(module_path().to_str().unwrap())
        .arg(stack.pg.module_args())
        .query(&mut con)
        .unwrap();

    // Redis keeps the library mapped, statics and all: the new instance must not show the
    // old one's figures.
    for name in ["hits", "misses", "fills", "errors"] {
        assert_eq!(stats_figure(&mut con, name), 0, "{name} after MODULE LOAD");
    }
    assert_eq!(
        slowlog_len(&mut con),
        0,
        "slowlog entries after MODULE LOAD"
    );
    assert!(tables(&mut con).is_empty(), "{:?}", tables(&mut con).keys());
}

/// HEALTH says what reads do (issue #70 item 7): after a restart from an RDB in replication
/// mode, the entries loaded are not served until the stream has caught up with PostgreSQL;
/// HEALTH says `bypassed` meanwhile, and once it says `served`, a READ of a loaded entry is
/// a hit. (It said `served` while such READs went to PostgreSQL for seconds.)
#[test]
fn health_says_hits_are_served_only_once_a_loaded_entry_is_served() {
    if invalidation_source() != "replication" {
        return;
    }
    let mut stack = watched_users();
    let mut con = stack.con();
    for id in 1..=5 {
        read_until_cached(&mut con, "users", &format!(r#"{{"id":{id}}}"#));
    }
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    stack.redis.restart();
    let mut con = stack.con();
    wait_for(
        "HEALTH to say hits are served",
        Duration::from_secs(30),
        || {
            let health = map_reply(&mut con, "PGCACHE.HEALTH");
            let hits: String = redis::from_redis_value(health["hits"].clone()).unwrap();
            let before = stats_figure(&mut con, "hits");
            read(&mut con, "users", r#"{"id":5}"#).unwrap().unwrap();
            let hit = stats_figure(&mut con, "hits") > before;
            if hits == "served" {
                assert!(
                    hit,
                    "HEALTH said hits are served; the READ after it went to PostgreSQL"
                );
                return Some(());
            }
            // (A hit here may follow a HEALTH that said bypassed: the cache was served from
            // between the two.)
            None
        },
    );
}
