//! The replication source's own promises, whatever mode the suite runs in: no flush after a
//! gap it can cover (PostgreSQL restarted, redis-server restarted from RDB or AOF), a flush
//! that says why when it cannot (the slot dropped), a slot that keeps no log while only other
//! tables change, and `auto`'s choice.

use pgcache_testkit::*;
use std::time::Duration;

const REPLICATION: [&str; 2] = ["invalidation_source", "replication"];

/// PostgreSQL with `users` published, and pgcache streaming it (`server_args` for Redis).
fn streaming(server_args: &[&str]) -> (Pg, Redis) {
    let pg = Pg::start();
    pg.execute(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'replication');"
    ));
    let mut args = pg.module_args();
    args.extend(REPLICATION.map(String::from));
    let redis = Redis::start_with(&args, server_args, &[]).unwrap();
    wait_streaming(&mut redis.connection());
    (pg, redis)
}

fn wait_streaming(con: &mut redis::Connection) {
    wait_for("the replication stream", Duration::from_secs(20), || {
        (stats_figure(con, "listener_connected") == 1).then_some(())
    });
    wait_hits_served(con);
}

fn key(id: i32) -> String {
    format!(r#"pg_cache:users:{{"id":{id}}}"#)
}

fn cache_users(con: &mut redis::Connection, ids: std::ops::RangeInclusive<i32>) {
    for id in ids {
        read_until_cached(con, "users", &format!(r#"{{"id":{id}}}"#));
    }
}

fn health_text(con: &mut redis::Connection, field: &str) -> String {
    let health = map_reply(con, "PGCACHE.HEALTH");
    redis::from_redis_value(health[field].clone()).unwrap()
}

/// The slot's `wal_status` as HEALTH shows it once the stream has first asked PostgreSQL
/// about the slot (the stream does so when it is first idle, so a moment after connecting).
fn slot_wal_status(con: &mut redis::Connection) -> String {
    wait_for(
        "the slot's state in HEALTH",
        Duration::from_secs(20),
        || {
            let health = map_reply(con, "PGCACHE.HEALTH");
            redis::from_redis_value(health.get("replication_wal_status")?.clone()).ok()
        },
    )
}

/// Waits until the keyspace holds the position of every change committed so far.
fn wait_position_stored(pg: &Pg, con: &mut redis::Connection) {
    let wal: String = pg
        .superuser()
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    let target = lsn(&wal);
    wait_for("the position stored", Duration::from_secs(20), || {
        let stored: Option<String> = redis::cmd("GET")
            .arg("pgcache:replication:position")
            .query(con)
            .unwrap();
        let stored = lsn(stored?.split(' ').next()?);
        (stored >= target).then_some(())
    });
}

/// Rows 1..=20 cached, the server stopped, rows 5 and 6 changed, the server started again:
/// only those two entries go, and nothing is flushed.
fn restart_keeps_unchanged_rows(persistence: &[&str], save: bool) {
    let (pg, mut redis) = streaming(persistence);
    let mut con = redis.connection();
    cache_users(&mut con, 1..=20);
    wait_position_stored(&pg, &mut con);
    if save {
        let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    }
    redis.shutdown();
    let mut con = change_rows_5_and_6_and_start_again(&pg, &mut redis);
    let row = read(&mut con, "users", r#"{"id":5}"#).unwrap().unwrap();
    assert_eq!(json(&row)["name"], "changed-while-down");
    let log = redis.log();
    assert!(
        log.contains("resuming invalidations from the position"),
        "{log}"
    );
}

/// With the server (rows 1..=20 cached) stopped: changes rows 5 and 6, starts the server
/// again, and checks that exactly those two entries go, with no flush.
fn change_rows_5_and_6_and_start_again(pg: &Pg, redis: &mut Redis) -> redis::Connection {
    pg.execute("UPDATE users SET name = 'changed-while-down' WHERE id IN (5, 6)");
    redis.start_again();
    let mut con = redis.connection();
    wait_gone(&mut con, &key(5));
    wait_gone(&mut con, &key(6));
    for id in (1..=4).chain(7..=20) {
        assert!(
            exists(&mut con, &key(id)),
            "entry {id} survives the restart"
        );
    }
    assert_eq!(stats_figure(&mut con, "flushes"), 0);
    let log = redis.log();
    assert!(!log.contains("dropping every cached row"), "{log}");
    con
}

/// The slot's confirmed position, as PostgreSQL holds it.
fn slot_confirmed(pg: &Pg) -> u64 {
    let confirmed: String = pg
        .superuser()
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'pgcache'",
            &[],
        )
        .unwrap()
        .get(0);
    lsn(&confirmed)
}

/// Waits until pgcache has sent PostgreSQL a status update after this call: whatever it
/// confirms now has reached the slot.
fn wait_next_status(pg: &Pg) {
    let mut pg = pg.superuser();
    let asked: std::time::SystemTime = pg.query_one("SELECT now()", &[]).unwrap().get(0);
    wait_for("a status update", Duration::from_secs(20), || {
        let replied: Option<std::time::SystemTime> = pg
            .query_one(
                "SELECT max(reply_time) FROM pg_stat_replication \
                 WHERE application_name = 'pgcache-replication'",
                &[],
            )
            .unwrap()
            .get(0);
        replied.filter(|r| *r > asked).map(|_| ())
    });
}

/// A server with RDB snapshots (save points set) and no AOF is killed after its last
/// snapshot, while the log moved on: the slot was confirmed no further than the snapshot
/// holds, so the restart resumes from it, and only the rows changed since go.
#[test]
fn a_crash_after_a_snapshot_resumes_from_the_snapshot_without_a_flush() {
    let (pg, mut redis) = streaming(&["--save", "3600 1"]);
    pg.execute("CREATE TABLE other (id serial PRIMARY KEY, v text)");
    let mut con = redis.connection();
    cache_users(&mut con, 1..=20);
    wait_position_stored(&pg, &mut con);
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    let saved: String = redis::cmd("GET")
        .arg("pgcache:replication:position")
        .query(&mut con)
        .unwrap();
    let saved = lsn(saved.split(' ').next().unwrap());
    // The log moves on past the snapshot (a table pgcache does not serve), pgcache stores
    // the new position and reports to PostgreSQL.
    pg.execute("INSERT INTO other (v) SELECT 'x' FROM generate_series(1, 100)");
    wait_position_stored(&pg, &mut con);
    wait_next_status(&pg);
    let confirmed = slot_confirmed(&pg);
    assert!(
        confirmed <= saved,
        "confirmed {confirmed:X} past the snapshot's {saved:X}"
    );
    redis.stop();
    change_rows_5_and_6_and_start_again(&pg, &mut redis);
}

#[test]
fn a_restart_from_an_rdb_drops_only_the_rows_changed_while_the_server_was_down() {
    restart_keeps_unchanged_rows(&[], true);
}

#[test]
fn a_restart_from_an_aof_drops_only_the_rows_changed_while_the_server_was_down() {
    restart_keeps_unchanged_rows(&["--appendonly", "yes", "--appendfsync", "always"], false);
}

#[test]
fn a_postgresql_restart_keeps_the_entries_of_unchanged_rows() {
    let (mut pg, redis) = streaming(&[]);
    let mut con = redis.connection();
    cache_users(&mut con, 1..=20);
    pg.stop();
    pg.restart();
    pg.execute("UPDATE users SET name = 'after the restart' WHERE id = 7");
    wait_gone(&mut con, &key(7));
    for id in (1..=6).chain(8..=20) {
        assert!(exists(&mut con, &key(id)), "entry {id} survives");
    }
    assert_eq!(stats_figure(&mut con, "flushes"), 0);
    assert!(stats_figure(&mut con, "listener_reconnects") >= 1);
    let row = read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap();
    assert_eq!(json(&row)["name"], "after the restart");
}

#[test]
fn a_slot_dropped_behind_its_back_starts_over_with_a_flush_that_says_why() {
    let (pg, redis) = streaming(&[]);
    let mut con = redis.connection();
    cache_users(&mut con, 1..=5);
    let mut admin = pg.superuser();
    // pgcache takes its slot back within milliseconds: end its session and drop the slot
    // until the drop wins.
    wait_for("the slot dropped", Duration::from_secs(20), || {
        admin
            .batch_execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = 'pgcache' AND active_pid IS NOT NULL",
            )
            .unwrap();
        admin
            .batch_execute("SELECT pg_drop_replication_slot('pgcache')")
            .ok()
    });
    wait_keys_at_most(&mut con, "pg_cache:users:*", 0);
    let log = redis.log();
    assert!(
        log.contains("replication slot pgcache is gone")
            && log.contains("dropping every cached row"),
        "{log}"
    );
    wait_streaming(&mut con);
    cache_users(&mut con, 1..=1);
    pg.execute("UPDATE users SET name = 'x' WHERE id = 1");
    wait_gone(&mut con, &key(1));
}

#[test]
fn while_only_other_tables_change_the_slot_keeps_no_log() {
    let (pg, redis) = streaming(&[]);
    pg.execute("CREATE TABLE other (id serial PRIMARY KEY, v text)");
    let mut con = redis.connection();
    cache_users(&mut con, 1..=3);
    let position_writes = |con: &mut redis::Connection| {
        let set = info_value(con, "commandstats", "cmdstat_set").unwrap_or_default();
        set.split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .map_or(0, |calls| calls.parse::<u64>().unwrap())
    };
    let (writes_before, started) = (position_writes(&mut con), std::time::Instant::now());
    let mut client = pg.client();
    // Each commit flushed: PostgreSQL then tells the stream's new end after every one.
    client.batch_execute("SET synchronous_commit = on").unwrap();
    for i in 0..200 {
        client
            .execute("INSERT INTO other (v) VALUES ($1)", &[&i.to_string()])
            .unwrap();
    }
    let mut admin = pg.superuser();
    let written: String = admin
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    wait_for(
        "the slot confirmed past the writes",
        Duration::from_secs(20),
        || {
            let confirmed: String = admin
                .query_one(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots \
                 WHERE slot_name = 'pgcache'",
                    &[],
                )
                .unwrap()
                .get(0);
            (lsn(&confirmed) >= lsn(&written)).then_some(())
        },
    );
    for id in 1..=3 {
        assert!(exists(&mut con, &key(id)), "entry {id} untouched");
    }
    // The position moved on with every commit, and was written every 100 ms or so (once
    // per look at the server and once per apply, at most), not once per move: each write is
    // a SET in the AOF and to the replicas.
    let writes = position_writes(&mut con) - writes_before;
    let bound = 2 + 2 * started.elapsed().as_millis() as u64 / 100;
    assert!(
        writes <= bound,
        "{writes} position writes, more than {bound}"
    );
}

#[test]
fn auto_streams_where_postgresql_allows_it() {
    let stack = Stack::start_with(
        &format!("{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'replication');"),
        &["invalidation_source", "auto"],
    );
    let mut con = stack.con();
    assert_eq!(health_text(&mut con, "invalidation_source"), "replication");
    let health = map_reply(&mut con, "PGCACHE.HEALTH");
    assert_eq!(health["warnings"], redis::Value::Array(vec![]));
    read_until_cached(&mut con, "users", r#"{"id":2}"#);
    stack.pg.execute("UPDATE users SET name = 'x' WHERE id = 2");
    wait_gone(&mut con, &key(2));
}

#[test]
fn auto_uses_notify_with_a_warning_when_the_role_may_not_replicate() {
    let pg = Pg::start();
    pg.execute(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'notify');"
    ));
    pg.superuser()
        .batch_execute("ALTER ROLE app NOREPLICATION")
        .unwrap();
    let mut args = pg.module_args();
    args.extend(["invalidation_source", "auto"].map(String::from));
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    wait_streaming(&mut con);
    assert_eq!(health_text(&mut con, "invalidation_source"), "notify");
    let health = map_reply(&mut con, "PGCACHE.HEALTH");
    let warnings: Vec<String> = redis::from_redis_value(health["warnings"].clone()).unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].contains("auto uses NOTIFY"),
        "{warnings:?}"
    );
    assert_eq!(health_text(&mut con, "status"), "ok");
    assert!(redis.log().contains("invalidation_source auto uses NOTIFY"));
    read_until_cached(&mut con, "users", r#"{"id":3}"#);
    pg.execute("UPDATE users SET name = 'x' WHERE id = 3");
    wait_gone(&mut con, &key(3));
}

/// The position PostgreSQL's log has reached, as an application takes it after its commit
/// (the tests' PostgreSQL runs with synchronous_commit off: the insert position, see docs/invalidation.md, Read your writes).
fn current_lsn(client: &mut postgres::Client) -> String {
    client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0)
}

#[test]
fn after_a_write_to_another_table_the_cached_row_is_served_once_applied() {
    let (pg, redis) = streaming(&[]);
    pg.execute("CREATE TABLE other (id serial PRIMARY KEY, v text)");
    let mut con = redis.connection();
    cache_users(&mut con, 7..=7);
    let mut client = pg.client();
    client
        .execute("INSERT INTO other (v) VALUES ('x')", &[])
        .unwrap();
    let written = current_lsn(&mut client);
    wait_applied(&mut con, &written);
    let hits = stats_figure(&mut con, "hits");
    let row: Option<String> = redis::cmd("PGCACHE.READ")
        .arg("users")
        .arg(r#"{"id":7}"#)
        .arg("AFTER")
        .arg(&written)
        .query(&mut con)
        .unwrap();
    assert_eq!(json(&row.unwrap())["id"], 7);
    assert_eq!(
        stats_figure(&mut con, "hits"),
        hits + 1,
        "served from the cache"
    );
}

/// A read AFTER a position the cache has not reached waits (`after_wait_ms`) on a worker,
/// not on the event loop, and once the stream applies that position it is answered from
/// the cache: here the cache holds a row PostgreSQL does not (PGCACHE.WRITE), so the reply
/// shows where it came from. READ, GET, MGET and MULTIREAD in turn.
#[test]
fn a_read_after_a_position_about_to_be_applied_waits_for_it_and_is_served_from_the_cache() {
    let pg = Pg::start();
    pg.execute(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'replication');"
    ));
    let mut args = pg.module_args();
    args.extend(["after_wait_ms", "1000"].map(String::from));
    args.extend(REPLICATION.map(String::from));
    let redis = Redis::start_with(&args, &[], &[]).unwrap();
    let mut con = redis.connection();
    wait_streaming(&mut con);
    let mut writer = pg.client();
    writer.batch_execute("SET synchronous_commit = on").unwrap();
    for command in [
        "PGCACHE.READ",
        "PGCACHE.GET",
        "PGCACHE.MGET",
        "PGCACHE.MULTIREAD",
    ] {
        let data = r#"{"id":7,"name":"cached"}"#;
        write(&mut con, "users", r#"{"id":7}"#, data).unwrap();
        // Just past the log's end: no change applied yet reaches it.
        let end = lsn(&current_lsn(&mut writer)) + 1;
        let next = format!("{:X}/{:X}", end >> 32, end & 0xFFFF_FFFF);
        let mut read = redis::cmd(command);
        match command {
            "PGCACHE.READ" => read.arg("users").arg(r#"{"id":7}"#),
            "PGCACHE.MULTIREAD" => read.arg("users").arg(r#"[{"id":7}]"#),
            _ => read.arg(key(7)),
        };
        read.arg("AFTER").arg(&next);
        let port = redis.port;
        let reader = std::thread::spawn(move || read.query::<redis::Value>(&mut connect(port)));
        wait_blocked(&mut con, 1);
        assert_eq!(
            redis::cmd("PING").query::<String>(&mut con).unwrap(),
            "PONG"
        );
        let hits = stats_figure(&mut con, "hits");
        writer
            .execute("UPDATE users SET email = email WHERE id = 8", &[])
            .unwrap();
        let row: String = match reader.join().unwrap().unwrap() {
            redis::Value::Array(mut rows) => redis::from_redis_value(rows.remove(0)),
            row => redis::from_redis_value(row),
        }
        .unwrap();
        assert_eq!(json(&row)["name"], "cached", "{command}: {row}");
        assert_eq!(stats_figure(&mut con, "hits"), hits + 1, "{command}");
    }
}

/// 32 writers take the machine's cores: `make soak` runs this alone
/// (`cargo test --test integration -- --ignored`).
#[test]
#[ignore]
fn after_its_own_write_a_client_never_reads_the_old_row_under_32_writers() {
    const TRIES: usize = 10_000;
    const CHECKERS: usize = 4;
    let (pg, redis) = streaming(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 32 clients keep writing rows 100..=200 (and so the log), none of the checked rows.
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let mut client = pg.client();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(w as u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = 100 + (rng.next_u64() % 101) as i32;
                    client
                        .execute("UPDATE users SET email = email WHERE id = $1", &[&id])
                        .unwrap();
                }
            })
        })
        .collect();
    let checkers: Vec<_> = (0..CHECKERS)
        .map(|c| {
            let mut client = pg.client();
            // Flushed at commit, so the stream usually applies a write within the read's
            // wait (`after_wait_ms`), and the read then looks in the cache first.
            client.batch_execute("SET synchronous_commit = on").unwrap();
            let mut con = redis.connection();
            std::thread::spawn(move || {
                let id = 1 + c as i32;
                for version in 0..TRIES / CHECKERS {
                    let name = format!("v{version}");
                    client
                        .execute("UPDATE users SET name = $1 WHERE id = $2", &[&name, &id])
                        .unwrap();
                    let written = current_lsn(&mut client);
                    let pk = format!(r#"{{"id":{id}}}"#);
                    // READ, GET, MGET and MULTIREAD in turn, AFTER the write.
                    let mut read = match version % 4 {
                        0 => {
                            let mut read = redis::cmd("PGCACHE.READ");
                            read.arg("users").arg(&pk);
                            read
                        }
                        1 => {
                            let mut read = redis::cmd("PGCACHE.GET");
                            read.arg(key(id));
                            read
                        }
                        2 => {
                            let mut read = redis::cmd("PGCACHE.MGET");
                            read.arg(key(id));
                            read
                        }
                        _ => {
                            let mut read = redis::cmd("PGCACHE.MULTIREAD");
                            read.arg("users").arg(format!("[{pk}]"));
                            read
                        }
                    };
                    read.arg("AFTER").arg(&written);
                    let row: String = match read.query::<redis::Value>(&mut con).unwrap() {
                        redis::Value::Array(mut rows) => redis::from_redis_value(rows.remove(0)),
                        v => redis::from_redis_value(v),
                    }
                    .unwrap();
                    assert_eq!(
                        json(&row)["name"],
                        name.as_str(),
                        "try {version} of row {id}"
                    );
                }
            })
        })
        .collect();
    for checker in checkers {
        checker.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
}

#[test]
fn health_shows_the_slot_and_names_a_served_table_no_publication_covers() {
    let (pg, redis) = streaming(&[]);
    pg.execute(
        "CREATE TABLE loose (id integer PRIMARY KEY, v text); INSERT INTO loose VALUES (1, 'a');",
    );
    let mut con = redis.connection();
    cache_users(&mut con, 1..=1);
    read_until_cached(&mut con, "loose", r#"{"id":1}"#);
    let warnings = wait_for(
        "the unpublished table named",
        Duration::from_secs(20),
        || {
            let health = map_reply(&mut con, "PGCACHE.HEALTH");
            let warnings: Vec<String> = redis::from_redis_value(health["warnings"].clone()).ok()?;
            (!warnings.is_empty()).then_some(warnings)
        },
    );
    assert!(
        warnings.len() == 1 && warnings[0].contains("loose") && !warnings[0].contains("users"),
        "{warnings:?}"
    );
    assert_eq!(health_text(&mut con, "status"), "ok");
    assert_eq!(slot_wal_status(&mut con), "reserved");
    let health = map_reply(&mut con, "PGCACHE.HEALTH");
    let retained: i64 =
        redis::from_redis_value(health["replication_retained_bytes"].clone()).unwrap();
    assert!((0..64 << 20).contains(&retained), "{retained}");
    let log = redis.log();
    assert_eq!(log.matches("table loose is served but").count(), 1, "{log}");
    let info: String = redis::cmd("INFO").arg("pgcache").query(&mut con).unwrap();
    assert!(info.contains("replication_retained_bytes:"), "{info}");
}

#[test]
fn a_promoted_replica_continues_its_primarys_slot_and_keeps_unchanged_rows() {
    let (pg, mut primary) = streaming(&[]);
    // The replica leaves the choice to `auto`: it stands by until it is promoted.
    let mut args = pg.module_args();
    args.extend(["invalidation_source", "auto"].map(String::from));
    let port = primary.port.to_string();
    let replica = Redis::start_with(&args, &["--replicaof", "127.0.0.1", &port], &[]).unwrap();
    let mut con = primary.connection();
    cache_users(&mut con, 1..=10);
    wait_position_stored(&pg, &mut con);
    let position: String = redis::cmd("GET")
        .arg("pgcache:replication:position")
        .query(&mut con)
        .unwrap();
    let mut rcon = replica.connection();
    wait_for(
        "the entries and the position on the replica",
        Duration::from_secs(20),
        || {
            let copied: Option<String> = redis::cmd("GET")
                .arg("pgcache:replication:position")
                .query(&mut rcon)
                .unwrap();
            (copied.as_deref() == Some(position.as_str()) && cache_entries(&mut rcon) == 10)
                .then_some(())
        },
    );
    assert_eq!(
        stats_figure(&mut rcon, "listener_connected"),
        1,
        "standing by"
    );
    primary.shutdown();
    pg.execute("UPDATE users SET name = 'changed-after-failover' WHERE id = 4");
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut rcon)
        .unwrap();
    wait_gone(&mut rcon, &key(4));
    for id in (1..=3).chain(5..=10) {
        assert!(
            exists(&mut rcon, &key(id)),
            "entry {id} survives the failover"
        );
    }
    assert_eq!(stats_figure(&mut rcon, "flushes"), 0);
    let row = read(&mut rcon, "users", r#"{"id":4}"#).unwrap().unwrap();
    assert_eq!(json(&row)["name"], "changed-after-failover");
    assert!(
        replica
            .log()
            .contains("streaming invalidations from slot pgcache "),
        "{}",
        replica.log()
    );
}

#[test]
fn a_slot_postgresql_gave_up_while_pgcache_was_away_starts_over_with_a_flush() {
    let (pg, mut redis) = streaming(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut con = redis.connection();
    cache_users(&mut con, 1..=3);
    wait_position_stored(&pg, &mut con);
    redis.shutdown();
    let mut admin = pg.superuser();
    admin
        .batch_execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    pg.execute("UPDATE users SET name = 'changed while the slot was lost' WHERE id = 2");
    // More log than the slot may keep, then checkpoints until PostgreSQL gives it up.
    pg.execute(
        "CREATE TABLE filler AS SELECT g, repeat('x', 500) AS v FROM generate_series(1, 100000) g",
    );
    wait_for("the slot lost", Duration::from_secs(60), || {
        admin.batch_execute("SELECT pg_switch_wal()").unwrap();
        admin.batch_execute("CHECKPOINT").unwrap();
        let status: Option<String> = admin
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgcache'",
                &[],
            )
            .unwrap()
            .get(0);
        (status.as_deref() == Some("lost")).then_some(())
    });
    redis.start_again();
    let mut con = redis.connection();
    wait_streaming(&mut con);
    wait_keys_at_most(&mut con, "pg_cache:users:*", 0);
    let row = read(&mut con, "users", r#"{"id":2}"#).unwrap().unwrap();
    assert_eq!(json(&row)["name"], "changed while the slot was lost");
    let log = redis.log();
    assert!(
        log.contains("lost log it still needed") && log.contains("dropping every cached row"),
        "{log}"
    );
    assert_eq!(slot_wal_status(&mut con), "reserved");
}
