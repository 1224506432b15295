//! Sources (issue #53) are isolated: one database's outage leaves another's reads alone, and
//! is told as that source's.
use pgcache_testkit::*;
use std::time::Duration;

fn read(con: &mut redis::Connection, id: i64, source: Option<&str>) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd("PGCACHE.READ");
    cmd.arg("users").arg(format!(r#"{{"id":{id}}}"#));
    if let Some(source) = source {
        cmd.arg("SOURCE").arg(source);
    }
    cmd.query(con)
}

/// A named source on a PostgreSQL of its own, which stops: the default source's misses and
/// hits go on as before; the named source's cached rows answer within `stale_if_error_ms`
/// and its misses fail fast, and the announcement of its stale hits gives its own outage
/// (before, the default source's: no reason at all).
#[test]
fn a_named_source_s_outage_leaves_the_default_served() {
    const BOUND_MS: u64 = 300;
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let mut other = Pg::start();
    other.execute(USERS_SQL);
    let mut args = pg.module_args();
    args.extend(["max_staleness_ms".into(), BOUND_MS.to_string()]);
    args.push("source".into());
    args.push("analytics".into());
    let mut other_args = other.module_args();
    other_args.extend(["max_staleness_ms".into(), BOUND_MS.to_string()]);
    args.extend(other_args);
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    wait_for("both feeds", Duration::from_secs(10), || {
        (read(&mut con, 1, None).is_ok() && read(&mut con, 1, Some("analytics")).is_ok())
            .then_some(())
    });
    for id in 1..=3 {
        read(&mut con, id, Some("analytics")).unwrap();
    }
    let mut sub = redis.connection();
    let mut events = subscribe(&mut sub, "pg_cache_events");
    other.stop();
    // A miss of the named source finds its database gone and opens its circuit.
    let refused = wait_for(
        "the named source's miss to fail",
        Duration::from_secs(15),
        || read(&mut con, 9, Some("analytics")).err(),
    );
    assert!(refused.to_string().contains("PostgreSQL"), "{refused}");
    std::thread::sleep(Duration::from_millis(BOUND_MS + 100));
    // Its cached rows still answer, past the freshness bound.
    for id in 1..=3 {
        assert_eq!(
            json(&read(&mut con, id, Some("analytics")).unwrap())["name"],
            format!("user{id}")
        );
    }
    // The default source is untouched: misses and hits answer from its PostgreSQL.
    for id in 4..=6 {
        assert_eq!(
            json(&read(&mut con, id, None).unwrap())["name"],
            format!("user{id}")
        );
    }
    let health = map_reply(&mut con, "PGCACHE.HEALTH");
    assert_eq!(
        redis::from_redis_value::<String>(health["postgres_circuit"].clone()).unwrap(),
        "closed",
        "the default source's circuit"
    );
    // The default's report stays ok and says the named source is degraded; the named one's
    // own report tells why.
    let text = |value: &redis::Value| redis::from_redis_value::<String>(value.clone()).unwrap();
    assert_eq!(text(&health["status"]), "ok", "{health:?}");
    assert_eq!(text(&nested(&health["sources"])["analytics"]), "degraded");
    let named: redis::Value = redis::cmd("PGCACHE.HEALTH")
        .arg(&["SOURCE", "analytics"])
        .query(&mut con)
        .unwrap();
    let named = nested(&named);
    assert_eq!(text(&named["status"]), "degraded", "{named:?}");
    assert_eq!(text(&named["postgres"]), "unreachable");
    assert!(
        text(&named["postgres_circuit"]).starts_with("open"),
        "{named:?}"
    );
    let announced = wait_for("the cache_stale event", Duration::from_secs(10), || {
        let event = next_event(&mut events);
        (event["type"] == "cache_stale").then_some(event)
    });
    let reason = announced["reason"].as_str().unwrap();
    assert!(
        reason.contains(&other.port.to_string()),
        "the stale hits' announcement gives the named source's outage: {announced}"
    );
    assert!(
        redis
            .log()
            .contains("PostgreSQL (source analytics) cannot be reached")
    );
}

/// One source's flood of invalidations does not hold up another's: a change set longer than
/// the main thread's 2 ms slice (four tables' 4,000 deletions each, one transaction, under
/// `BULK_KEYS` so they stay deletions) is applied in slices, and the next slice starts with the
/// other source's feed, so a change in the named database takes effect while the default's
/// flood is still being applied: its invalidation event comes before the flood's last. (Before,
/// each slice started with the default's feed: in replication mode, where the flood is one
/// change set, the named change waited for all of it.)
#[test]
fn one_source_s_flood_of_invalidations_does_not_hold_up_another_s() {
    const TABLES: usize = 4;
    const ROWS: usize = 4_000;
    let mut sql = TRIGGER_SQL.to_string();
    for t in 0..TABLES {
        sql.push_str(&format!(
            "CREATE TABLE t{t} (id integer PRIMARY KEY, v integer NOT NULL);
             INSERT INTO t{t} SELECT g, 0 FROM generate_series(1, {ROWS}) g;
             SELECT pgcache_watch('t{t}');"
        ));
    }
    let named_sql = format!("{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users');");
    let stack = Stack::start_with_sources(
        &sql,
        &[("analytics", &named_sql)],
        &["debug_commands", "yes"],
    );
    let mut con = stack.con();
    wait_for("the named feed", Duration::from_secs(20), || {
        read(&mut con, 1, Some("analytics")).ok()
    });
    let mut sub = stack.con();
    let mut events = subscribe(&mut sub, "pg_cache_events");

    debug(&mut con, "INVALIDATIONS", "HOLD");
    let mut flood = String::from("BEGIN;");
    for t in 0..TABLES {
        flood.push_str(&format!("UPDATE t{t} SET v = v + 1;"));
    }
    flood.push_str("COMMIT;");
    stack.pg.execute(&flood);
    let pending = |con: &mut redis::Connection| -> usize {
        debug(con, "INVALIDATIONS", "PENDING").parse().unwrap()
    };
    wait_for("the flood handed over", Duration::from_secs(30), || {
        (pending(&mut con) >= TABLES * ROWS).then_some(())
    });
    stack.pg.execute_in(
        "analytics",
        "UPDATE users SET name = 'changed' WHERE id = 1",
    );
    wait_for(
        "the named change handed over",
        Duration::from_secs(30),
        || (pending(&mut con) > TABLES * ROWS).then_some(()),
    );
    debug(&mut con, "INVALIDATIONS", "RELEASE");
    let (mut before, mut after, mut named) = (0, 0, false);
    while before + after < TABLES * ROWS || !named {
        let event = next_event(&mut events);
        if event["type"] != "cache_invalidate" {
            continue;
        }
        match (event["table"].as_str().unwrap(), named) {
            ("users", _) => named = true,
            (_, false) => before += 1,
            (_, true) => after += 1,
        }
    }
    assert!(
        after > 0,
        "the named change waited for the default source's whole flood ({before} deletions)"
    );
}

/// Sends `signal` (`-STOP`, `-CONT`) to every process of `pg`.
fn signal(pg: &Pg, signal: &str) {
    for pid in pg.pids() {
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// A named source whose PostgreSQL freezes (no reset, no answer: a hung host) with more of its
/// misses waiting than there are workers: the default source answers every read, misses and
/// hits, right, and without an error (a cap per source keeps a worker for it).
#[test]
fn a_frozen_source_leaves_the_default_answering() {
    const WAITING: usize = 12;
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let other = Pg::start();
    other.execute(USERS_SQL);
    let mut args = pg.module_args();
    // Every miss goes to the workers (none to the event loop's own connections), so the two
    // sources compete for them: 4 workers, of which the frozen source may hold 3.
    let on_workers = ["pool_size", "4", "loop_connections", "0"].map(String::from);
    args.extend(["workers".into(), "4".into()]);
    args.extend(on_workers.clone());
    args.extend(["source".into(), "analytics".into()]);
    args.extend(other.module_args());
    args.extend(on_workers);
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    wait_for("both feeds", Duration::from_secs(10), || {
        (read(&mut con, 1, None).is_ok() && read(&mut con, 1, Some("analytics")).is_ok())
            .then_some(())
    });
    signal(&other, "-STOP");
    let port = redis.port;
    let frozen: Vec<_> = (100..100 + WAITING as i64)
        .map(|id| std::thread::spawn(move || read(&mut connect(port), id, Some("analytics"))))
        .collect();
    wait_blocked(&mut con, WAITING as i64);
    // The frozen source holds as many workers as its cap lets it, each on a connection,
    // until its circuit opens (a second of silence: then its requests fail at once and hold
    // none). On a busy machine the workers may take its jobs only after that.
    let named_figure = |con: &mut redis::Connection, name: &str| {
        let named: redis::Value = redis::cmd("PGCACHE.STATS")
            .arg(&["SOURCE", "analytics"])
            .query(con)
            .unwrap();
        figure(&nested(&named), name)
    };
    let in_use = |con: &mut redis::Connection| named_figure(con, "pool_in_use");
    wait_for(
        "the frozen source at its cap, or its circuit open",
        Duration::from_secs(10),
        || {
            (in_use(&mut con) == 3 || named_figure(&mut con, "postgres_circuit_open") == 1)
                .then_some(())
        },
    );
    for id in 2..=60 {
        for _ in 0..2 {
            let row = read(&mut con, id, None)
                .unwrap_or_else(|e| panic!("the default source's read of {id}: {e}"));
            assert_eq!(json(&row)["name"], format!("user{id}"));
        }
        assert!(in_use(&mut con) <= 3, "never past its cap");
    }
    signal(&other, "-CONT");
    for read in frozen {
        // Answered once PostgreSQL wakes, or failed by its deadline: either is the named
        // source's own affair.
        let _ = read.join().unwrap();
    }
}

/// `PGCACHE.DRAIN ... SOURCE <name>` drains one source: its misses are refused (its hits still
/// served), the reply counts its own waiting clients only, HEALTH tells, and the default
/// source's misses go on; `DRAIN 0 SOURCE <name>` ends it.
#[test]
fn a_drain_of_one_source_leaves_the_others_served() {
    use crate::sources::{A, analytics_sql, default_sql};
    let stack = Stack::start_with_sources(
        &default_sql(),
        &[(A, &analytics_sql())],
        &["debug_commands", "yes", "loop_connections", "0"],
    );
    let mut con = stack.con();
    let drain = |con: &mut redis::Connection, args: &[&str]| -> i64 {
        redis::cmd("PGCACHE.DRAIN").arg(args).query(con).unwrap()
    };
    wait_for("the named row cached", Duration::from_secs(20), || {
        read(&mut con, 1, Some(A)).unwrap();
        exists(&mut con, r#"pg_cache:@analytics:users:{"id":1}"#).then_some(())
    });
    // A named miss held on its worker: the drain's reply counts it, a default one's does not.
    let mut locked = stack.con();
    debug(&mut locked, "FILLS", "HOLD");
    let port = stack.redis.port;
    let waiting = std::thread::spawn(move || read(&mut connect(port), 2, Some("analytics")));
    wait_blocked(&mut con, 1);
    assert_eq!(drain(&mut con, &["30", "SOURCE", A]), 1);
    debug(&mut locked, "FILLS", "RELEASE");
    assert_eq!(
        json(&waiting.join().unwrap().unwrap())["name"],
        "analytics2"
    );
    assert_eq!(drain(&mut con, &["30", "SOURCE", A]), 0);

    let refused = read(&mut con, 3, Some(A)).unwrap_err().to_string();
    assert!(
        refused.contains(r#"source "analytics" is draining"#),
        "{refused}"
    );
    assert_eq!(
        json(&read(&mut con, 1, Some(A)).unwrap())["name"],
        "analytics1"
    );
    assert_eq!(json(&read(&mut con, 3, None).unwrap())["name"], "user3");

    let health = map_reply(&mut con, "PGCACHE.HEALTH");
    let text = |value: &redis::Value| redis::from_redis_value::<String>(value.clone()).unwrap();
    assert_eq!(text(&health["status"]), "ok", "{health:?}");
    assert_eq!(text(&nested(&health["sources"])[A]), "degraded");

    assert_eq!(drain(&mut con, &["0", "SOURCE", A]), 0);
    assert_eq!(
        json(&read(&mut con, 3, Some(A)).unwrap())["name"],
        "analytics3"
    );
    let e = redis::cmd("PGCACHE.DRAIN")
        .arg(&["5", "6"])
        .query::<i64>(&mut con)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[SOURCE name]"), "{e}");
}
