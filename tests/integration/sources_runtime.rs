//! Sources added, changed and removed while the server runs (issue #53 step 10):
//! PGCACHE.SOURCE ADD / SET / DEL / LIST, persisted by CONFIG REWRITE as `pgcache.sources`,
//! replicated, and never holding a password.
use crate::sources::{A, analytics_sql, default_sql, read_name};
use pgcache_testkit::*;
use std::time::Duration;

/// `PGCACHE.SOURCE <args>`'s reply, or its error's text.
fn source(con: &mut redis::Connection, args: &[&str]) -> Result<redis::Value, String> {
    redis::cmd("PGCACHE.SOURCE")
        .arg(args)
        .query(con)
        .map_err(|e| e.to_string())
}

/// The settings that connect a source to database `A` on `pg`, without the password (which a
/// source added at run time finds in its environment variable).
fn analytics_settings(pg: &Pg) -> Vec<String> {
    let args = pg.source_args(A, A);
    let pairs: Vec<&[String]> = args[2..].chunks(2).collect();
    pairs
        .into_iter()
        .filter(|pair| pair[0] != "pg_password")
        .flat_map(|pair| pair.iter().cloned())
        .collect()
}

fn add_analytics(con: &mut redis::Connection, pg: &Pg, extra: &[&str]) -> Result<(), String> {
    let mut args = vec!["ADD".to_string(), A.to_string()];
    args.extend(analytics_settings(pg));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    source(con, &args).map(|_| ())
}

/// The names LIST shows, and each one's definition.
fn listed(con: &mut redis::Connection) -> Vec<(String, String)> {
    let reply = source(con, &["LIST"]).unwrap();
    let redis::Value::Array(entries) = reply else {
        panic!("LIST replied {reply:?}");
    };
    entries
        .into_iter()
        .map(|entry| {
            let map: std::collections::HashMap<String, String> =
                redis::from_redis_value(entry).unwrap();
            (map["name"].clone(), map["definition"].clone())
        })
        .collect()
}

/// A server serving only the default source, from a configuration file (CONFIG REWRITE saves
/// there), whose environment holds the password of a source `analytics` added later; the
/// database `analytics` exists on the same PostgreSQL.
fn one_source_server(extra: &[&str]) -> (Pg, Redis) {
    let pg = Pg::start();
    pg.execute(&default_sql());
    pg.create_database(A, &analytics_sql());
    let mut args = pg.module_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let redis = Redis::start_configured(&args, &[("PGCACHE_ANALYTICS_PG_PASSWORD", PG_PASSWORD)]);
    (pg, redis)
}

#[test]
fn add_set_del_at_runtime_and_restart_from_the_rewritten_configuration() {
    let (pg, mut redis) = one_source_server(&[]);
    let mut con = redis.connection();
    let before = source(&mut con, &["DEL", A]).unwrap_err();
    assert!(before.contains("no source named \"analytics\""), "{before}");
    assert!(listed(&mut con).is_empty());

    // A password is refused: what ADD declares goes into the configuration file.
    let mut with_password = analytics_settings(&pg);
    with_password.extend(["pg_password".to_string(), PG_PASSWORD.to_string()]);
    let mut args = vec!["ADD", A];
    args.extend(with_password.iter().map(String::as_str));
    let refused = source(&mut con, &args).unwrap_err();
    assert!(refused.contains("never written"), "{refused}");
    assert!(!refused.contains(PG_PASSWORD), "{refused}");
    assert!(listed(&mut con).is_empty());

    add_analytics(&mut con, &pg, &[]).unwrap();
    read_until_cached_of(&mut con, A, "users", r#"{"id":1}"#);
    assert_eq!(
        read_name(&mut con, Some(A), 1).as_deref(),
        Some("analytics1")
    );
    assert_eq!(read_name(&mut con, None, 1).as_deref(), Some("user1"));
    assert_eq!(
        read_name(&mut con, Some(A), 1000).as_deref(),
        Some("only in analytics")
    );
    // Its feed runs: a change in its database drops its entry.
    pg.execute_in(A, "UPDATE users SET name = 'changed' WHERE id = 1");
    wait_for("the named change applied", Duration::from_secs(20), || {
        (read_name(&mut con, Some(A), 1).as_deref() == Some("changed")).then_some(())
    });
    // Added again as it is: nothing to do (a retried ADD, a replayed AOF).
    add_analytics(&mut con, &pg, &[]).unwrap();
    let other = add_analytics(&mut con, &pg, &["default_ttl", "60"]).unwrap_err();
    assert!(other.contains("exists") && other.contains("SET"), "{other}");

    // SET restarts it on its definition with the new value over it.
    source(&mut con, &["SET", A, "default_ttl", "77"]).unwrap();
    let list = listed(&mut con);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].1.contains("default_ttl 77"), "{list:?}");
    assert!(list[0].1.contains("pg_database analytics"), "{list:?}");
    read_until_cached_of(&mut con, A, "users", r#"{"id":2}"#);
    let ttl: i64 = redis::cmd("TTL")
        .arg(r#"pg_cache:@analytics:users:{"id":2}"#)
        .query(&mut con)
        .unwrap();
    assert!((1..=77).contains(&ttl), "TTL {ttl}");

    // Saved without a password, and read back by a restarted server.
    let saved = config_get(&mut con, "pgcache.sources");
    assert!(saved[1].starts_with("analytics "), "{saved:?}");
    assert!(saved[1].contains("default_ttl 77"), "{saved:?}");
    let conf = std::fs::read_to_string(redis.dir.join("redis.conf")).unwrap();
    let line = conf
        .lines()
        .find(|l| l.starts_with("pgcache.sources"))
        .unwrap_or_else(|| panic!("no pgcache.sources in:\n{conf}"));
    assert!(!line.contains(PG_PASSWORD), "{line}");
    let refused = config_set(&mut con, "pgcache.sources", "")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("PGCACHE.SOURCE"), "{refused}");
    drop(con);
    redis.restart();
    let mut con = redis.connection();
    assert_eq!(listed(&mut con), list);
    assert_eq!(read_name(&mut con, Some(A), 1).as_deref(), Some("changed"));

    // DEL: no longer served; its entries stay, for an ADD under the name to serve again.
    // (Right after the restart a read may go to PostgreSQL uncached: the feed vouches first.)
    read_until_cached_of(&mut con, A, "users", r#"{"id":1}"#);
    source(&mut con, &["DEL", A]).unwrap();
    let gone = redis::cmd("PGCACHE.READ")
        .arg(&["users", r#"{"id":1}"#, "SOURCE", A])
        .query::<Option<String>>(&mut con)
        .unwrap_err()
        .to_string();
    assert!(gone.contains("no source named"), "{gone}");
    assert!(exists(&mut con, r#"pg_cache:@analytics:users:{"id":1}"#));
    assert!(listed(&mut con).is_empty());
    assert_eq!(config_get(&mut con, "pgcache.sources")[1], "");
    assert_eq!(read_name(&mut con, None, 2).as_deref(), Some("user2"));
    add_analytics(&mut con, &pg, &[]).unwrap();
    pg.execute_in(A, "UPDATE users SET name = 'again' WHERE id = 3");
    wait_for("the source added again", Duration::from_secs(20), || {
        (read_name(&mut con, Some(A), 3).as_deref() == Some("again")).then_some(())
    });
    // Removed while its event-loop connections are still being opened (a READ asked for
    // them): DEL does not wait for them, unload does.
    source(&mut con, &["DEL", A]).unwrap();
    add_analytics(&mut con, &pg, &[]).unwrap();
    assert_eq!(
        read_name(&mut con, Some(A), 4).as_deref(),
        Some("analytics4")
    );
    source(&mut con, &["DEL", A]).unwrap();
    // Unload forgets the numbers retired by SET and DEL.
    unload(&mut con);
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn del_is_refused_while_clients_wait_for_the_source() {
    let (pg, redis) = one_source_server(&["debug_commands", "yes", "loop_connections", "0"]);
    let mut con = redis.connection();
    add_analytics(&mut con, &pg, &["loop_connections", "0"]).unwrap();
    read_until_cached_of(&mut con, A, "users", r#"{"id":1}"#);
    // A named miss held on its worker.
    let mut locked = redis.connection();
    debug(&mut locked, "FILLS", "HOLD");
    let port = redis.port;
    let waiting = std::thread::spawn(move || read_name(&mut connect(port), Some(A), 5));
    wait_blocked(&mut con, 1);
    let refused = source(&mut con, &["DEL", A]).unwrap_err();
    assert!(
        refused.contains("1 clients are waiting")
            && refused.contains("PGCACHE.DRAIN 10 SOURCE analytics"),
        "{refused}"
    );
    assert_eq!(listed(&mut con).len(), 1);
    debug(&mut locked, "FILLS", "RELEASE");
    assert_eq!(waiting.join().unwrap().as_deref(), Some("analytics5"));
    source(&mut con, &["DEL", A]).unwrap();
    assert!(listed(&mut con).is_empty());
}

#[test]
fn sources_reach_replicas_and_a_replica_refuses_changes() {
    let (pg, redis) = one_source_server(&[]);
    let mut con = redis.connection();
    add_analytics(&mut con, &pg, &[]).unwrap();
    // A replica started afterwards gets the sources from its primary (SYNC on coming online).
    let replica = Redis::start_with(
        &pg.module_args(),
        &["--replicaof", "127.0.0.1", &redis.port.to_string()],
        &[("PGCACHE_ANALYTICS_PG_PASSWORD", PG_PASSWORD)],
    )
    .unwrap();
    let mut on_replica = replica.connection();
    wait_for(
        "the replica serving analytics",
        Duration::from_secs(30),
        || (listed(&mut on_replica).len() == 1).then_some(()),
    );
    let row: Option<String> = query_through_interrupts(
        redis::cmd("PGCACHE.READ").arg(&["users", r#"{"id":7}"#, "SOURCE", A]),
        &mut on_replica,
    )
    .unwrap();
    assert_eq!(json(&row.unwrap())["name"], "analytics7");
    let refused = source(&mut on_replica, &["DEL", A]).unwrap_err();
    assert!(refused.contains("replica"), "{refused}");
    let sync = source(&mut con, &["SYNC", ""]).unwrap_err();
    assert!(sync.contains("primary sends"), "{sync}");

    // Changes on the primary follow: SET, then DEL.
    source(&mut con, &["SET", A, "default_ttl", "42"]).unwrap();
    wait_for("SET replicated", Duration::from_secs(30), || {
        let list = listed(&mut on_replica);
        (list.len() == 1 && list[0].1.contains("default_ttl 42")).then_some(())
    });
    source(&mut con, &["DEL", A]).unwrap();
    wait_for("DEL replicated", Duration::from_secs(30), || {
        listed(&mut on_replica).is_empty().then_some(())
    });
}

/// QUERY's answer for user `id` of `A`: its name.
fn query_name(con: &mut redis::Connection, id: i64) -> String {
    let reply: String = query_through_interrupts(
        redis::cmd("PGCACHE.QUERY").arg(&[
            "SELECT id, name FROM users WHERE id = $1",
            "1",
            &id.to_string(),
            "SOURCE",
            A,
        ]),
        con,
    )
    .unwrap();
    json(&reply)[0]["name"].as_str().unwrap().to_string()
}

/// Waits until QUERY's answer for user 7 of `A` is a hit again (the source's feed vouches
/// for the cache), checking each answer on the way.
fn wait_query_hit(con: &mut redis::Connection, expected: &str) {
    let hits = |con: &mut redis::Connection| {
        let stats = nested(
            &redis::cmd("PGCACHE.STATS")
                .arg(&["SOURCE", A])
                .query(con)
                .unwrap(),
        );
        redis::from_redis_value::<i64>(stats["query_hits"].clone()).unwrap()
    };
    let before = hits(con);
    wait_for("the result hit again", Duration::from_secs(20), || {
        assert_eq!(query_name(con, 7), expected);
        (hits(con) > before).then_some(())
    });
}

/// User 7 of `A` renamed in its database: QUERY's answer follows.
fn change_reaches_the_result(pg: &Pg, con: &mut redis::Connection) {
    pg.execute_in(A, "UPDATE users SET name = 'fresh' WHERE id = 7");
    wait_for(
        "the change reaching the result",
        Duration::from_secs(20),
        || (query_name(con, 7) == "fresh").then_some(()),
    );
}

/// The same across MODULE UNLOAD and LOAD: the named source's index went with the module.
#[test]
fn query_results_of_a_named_source_cached_before_a_reload_follow_changes_after_it() {
    let (pg, redis) = one_source_server(&[]);
    let mut con = redis.connection();
    let mut args = pg.module_args();
    args.extend(pg.source_args(A, A));
    unload(&mut con);
    let load = |con: &mut redis::Connection| {
        let mut load = redis::cmd("MODULE");
        load.arg("LOAD")
            .arg(module_path().to_str().unwrap())
            .arg(&args);
        let _: String = load.query(con).unwrap();
    };
    load(&mut con);
    assert_eq!(query_name(&mut con, 7), "analytics7");
    wait_query_hit(&mut con, "analytics7");
    unload(&mut con);
    load(&mut con);
    wait_query_hit(&mut con, "analytics7");
    change_reaches_the_result(&pg, &mut con);
}

/// A source restarted by SET (a new number) keeps its entries and resumes its feed from its
/// log position; a row-precise result cached before must still be dropped by a change after.
/// (In notify mode the restart flushes the source; the replication mode run, `make test`'s
/// FEED_TESTS, is the one that resumes.)
#[test]
fn query_results_cached_before_a_set_follow_changes_after_it() {
    let (pg, redis) = one_source_server(&[]);
    let mut con = redis.connection();
    add_analytics(&mut con, &pg, &[]).unwrap();
    read_until_cached_of(&mut con, A, "users", r#"{"id":1}"#);
    assert_eq!(query_name(&mut con, 7), "analytics7");
    wait_query_hit(&mut con, "analytics7");
    source(&mut con, &["SET", A, "default_ttl", "77"]).unwrap();
    // Once the restarted source's feed vouches for the cache, the result is a hit again.
    wait_query_hit(&mut con, "analytics7");
    change_reaches_the_result(&pg, &mut con);
}

/// A source block's password stays with the block: a SET restarts the source with it, and a
/// server restarted from the rewritten configuration (whose `pgcache.sources` holds no
/// password) finds it in the block again.
#[test]
fn a_block_s_password_serves_a_set_and_a_restart_without_being_written() {
    let pg = Pg::start();
    pg.execute(&default_sql());
    pg.create_database(A, &analytics_sql());
    let mut args = pg.module_args();
    args.extend(pg.source_args(A, A));
    let mut redis = Redis::start_configured(&args, &[]);
    let mut con = redis.connection();
    read_until_cached_of(&mut con, A, "users", r#"{"id":1}"#);
    source(&mut con, &["SET", A, "default_ttl", "50"]).unwrap();
    assert_eq!(
        read_name(&mut con, Some(A), 8).as_deref(),
        Some("analytics8")
    );
    let saved = config_get(&mut con, "pgcache.sources");
    assert!(saved[1].contains("default_ttl 50"), "{saved:?}");
    assert!(!saved[1].contains(PG_PASSWORD), "{saved:?}");
    // CONFIG SET of the value it has is accepted (a tool writing back what it read).
    config_set(&mut con, "pgcache.sources", &saved[1]).unwrap();
    drop(con);
    redis.restart();
    let mut con = redis.connection();
    assert!(listed(&mut con)[0].1.contains("default_ttl 50"));
    assert_eq!(
        read_name(&mut con, Some(A), 9).as_deref(),
        Some("analytics9")
    );
}

/// Without a configuration file, the AOF carries the sources across a restart.
#[test]
fn the_aof_replays_sources_added_and_changed() {
    let pg = Pg::start();
    pg.execute(&default_sql());
    pg.create_database(A, &analytics_sql());
    let mut redis = Redis::start_with(
        &pg.module_args(),
        &["--appendonly", "yes", "--appendfsync", "always"],
        &[("PGCACHE_ANALYTICS_PG_PASSWORD", PG_PASSWORD)],
    )
    .unwrap();
    let mut con = redis.connection();
    add_analytics(&mut con, &pg, &[]).unwrap();
    source(&mut con, &["SET", A, "default_ttl", "66"]).unwrap();
    drop(con);
    redis.restart();
    let mut con = redis.connection();
    let list = listed(&mut con);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].1.contains("default_ttl 66"), "{list:?}");
    assert_eq!(
        read_name(&mut con, Some(A), 3).as_deref(),
        Some("analytics3")
    );
}

#[test]
fn at_most_sixteen_named_sources() {
    let (pg, redis) = one_source_server(&[]);
    let mut con = redis.connection();
    for n in 0..16 {
        let name = format!("s{n}");
        let mut args = vec!["ADD".to_string(), name];
        args.extend(analytics_settings(&pg));
        args.extend(["listen", "no"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        source(&mut con, &args).unwrap();
    }
    let mut args = vec!["ADD".to_string(), "s16".to_string()];
    args.extend(analytics_settings(&pg));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = source(&mut con, &args).unwrap_err();
    assert!(refused.contains("16 named sources"), "{refused}");
    source(&mut con, &["DEL", "s3"]).unwrap();
    source(&mut con, &args).unwrap();
    assert_eq!(listed(&mut con).len(), 16);
}

/// A fill of a source's old database that comes back after a SET serves nobody who asked
/// after the SET and caches nothing: a READ of the same key after it reads the new database.
/// (The fill's own client timed out, so the SET was not refused for a waiting client.)
#[test]
fn a_fill_from_before_a_set_serves_no_read_after_it() {
    let (pg, redis) = one_source_server(&["loop_connections", "0"]);
    let mut con = redis.connection();
    let held_for_long = [
        "loop_connections",
        "0",
        "listen",
        "no",
        "statement_timeout_ms",
        "60000",
    ];
    add_analytics(&mut con, &pg, &held_for_long).unwrap();
    assert_eq!(
        read_name(&mut con, Some(A), 1).as_deref(),
        Some("analytics1")
    );
    // The old database's fill of row 5 waits on a lock past its client's deadline.
    let mut locker = pg.client_of(A);
    locker
        .batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    config_set(&mut con, "pgcache.request_timeout_ms", "500").unwrap();
    let timed_out = redis::cmd("PGCACHE.READ")
        .arg(&["users", r#"{"id":5}"#, "SOURCE", A])
        .query::<Option<String>>(&mut con)
        .unwrap_err();
    assert!(timed_out.to_string().contains("timed out"), "{timed_out}");
    assert_eq!(stats_figure(&mut con, "fills_in_flight"), 1);
    config_set(&mut con, "pgcache.request_timeout_ms", "30000").unwrap();
    source(&mut con, &["SET", A, "pg_database", "app"]).unwrap();
    // The new database's table is known, so the next READ of row 5 is decided on the
    // event loop, where the old fill is still in flight.
    assert_eq!(read_name(&mut con, Some(A), 2).as_deref(), Some("user2"));
    let port = redis.port;
    let reader = std::thread::spawn(move || read_name(&mut connect(port), Some(A), 5));
    // It joins the old fill (the defect: it waits for the lock) or reads the new database.
    wait_for(
        "the READ answered or waiting",
        Duration::from_secs(20),
        || (reader.is_finished() || blocked_clients(&mut con) == 1).then_some(()),
    );
    locker.batch_execute("ROLLBACK").unwrap();
    assert_eq!(reader.join().unwrap().as_deref(), Some("user5"));
    wait_for("the fills to end", Duration::from_secs(10), || {
        (stats_figure(&mut con, "fills_in_flight") == 0).then_some(())
    });
    assert_eq!(read_name(&mut con, Some(A), 5).as_deref(), Some("user5"));
}

/// A SET that points a source at another database of the same PostgreSQL, with a slot of
/// its own (a slot belongs to one database: the old one's is refused, as the log says):
/// its feed follows the new database, and the cache serves it.
#[test]
fn a_set_to_another_database_of_the_server_follows_it() {
    let (pg, redis) = one_source_server(&[]);
    let mut con = redis.connection();
    add_analytics(&mut con, &pg, &[]).unwrap();
    read_until_cached_of(&mut con, A, "users", r#"{"id":1}"#);
    if invalidation_source() == "replication" {
        source(&mut con, &["SET", A, "pg_database", "app"]).unwrap();
        wait_for("HEALTH to name the slot", Duration::from_secs(20), || {
            let health = nested(
                &redis::cmd("PGCACHE.HEALTH")
                    .arg(&["SOURCE", A])
                    .query(&mut con)
                    .unwrap(),
            );
            let problems: Vec<String> =
                redis::from_redis_value(health["problems"].clone()).unwrap();
            problems
                .iter()
                .any(|p| p.contains("pgcache_analytics exists but is not a pgoutput slot"))
                .then_some(())
        });
    }
    let moved = [
        "SET",
        A,
        "pg_database",
        "app",
        "replication_slot",
        "pgcache_analytics_app",
    ];
    source(&mut con, &moved).unwrap();
    read_until_cached_of(&mut con, A, "users", r#"{"id":3}"#);
    assert_eq!(read_name(&mut con, Some(A), 3).as_deref(), Some("user3"));
    pg.execute("UPDATE users SET name = 'fresh' WHERE id = 3");
    wait_for(
        "the change reaching the cache",
        Duration::from_secs(20),
        || (read_name(&mut con, Some(A), 3).as_deref() == Some("fresh")).then_some(()),
    );
}
