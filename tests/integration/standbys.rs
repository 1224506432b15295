//! What misses from standbys (issue #53, design/53 §3) take from PostgreSQL, checked on a
//! real primary and its streaming standby before pgcache builds on it: a standby answers as
//! of the log it has replayed, `pg_last_wal_replay_lsn()` says how far that is, and a read
//! made after that check in the same session sees at least what the check saw. A primary
//! has no replay position, which is how a promoted standby is told apart.
use pgcache_testkit::*;
use std::time::Duration;

#[test]
fn a_standby_answers_as_of_the_log_it_replayed_which_a_check_before_the_read_bounds() {
    let primary = Pg::start();
    primary.execute(
        "CREATE TABLE t (id integer PRIMARY KEY, v integer NOT NULL);
         INSERT INTO t VALUES (1, 1);",
    );
    let standby = primary.start_standby();
    standby.wait_replayed(primary.log_position());
    let mut reader = standby.client();
    let read_v = |reader: &mut postgres::Client| -> i32 {
        reader
            .query_one("SELECT v FROM t WHERE id = 1", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(read_v(&mut reader), 1);
    let writes = reader.batch_execute("UPDATE t SET v = 0").unwrap_err();
    assert_eq!(
        writes.code(),
        Some(&postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );

    // Replay paused: the standby still answers, from before the commit.
    standby.pause_replay();
    primary.execute("UPDATE t SET v = 2 WHERE id = 1");
    let committed = primary.log_position();
    let replayed = |reader: &mut postgres::Client| -> u64 {
        let text: String = reader
            .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
            .unwrap()
            .get(0);
        lsn(&text)
    };
    assert!(replayed(&mut reader) < committed);
    assert_eq!(read_v(&mut reader), 1, "a paused standby's answer");

    // Replayed through the commit: the check says so, and the read after it in the same
    // session sees the commit.
    standby.resume_replay();
    wait_for(
        "the reader's check to pass the commit",
        Duration::from_secs(60),
        || (replayed(&mut reader) >= committed).then_some(()),
    );
    assert_eq!(read_v(&mut reader), 2);

    // A primary has no replay position.
    let none: Option<String> = primary
        .client()
        .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(none, None);
}

/// HEALTH's `standbys`: each standby's fields by name.
fn standbys_seen(
    con: &mut redis::Connection,
) -> Vec<std::collections::HashMap<String, redis::Value>> {
    let health = map_reply(con, "PGCACHE.HEALTH");
    let list: Vec<redis::Value> = redis::from_redis_value(health["standbys"].clone()).unwrap();
    list.iter().map(nested).collect()
}

fn field(seen: &std::collections::HashMap<String, redis::Value>, name: &str) -> Option<String> {
    redis::from_redis_value(seen[name].clone()).unwrap()
}

fn warnings(con: &mut redis::Connection) -> Vec<String> {
    redis::from_redis_value(map_reply(con, "PGCACHE.HEALTH")["warnings"].clone()).unwrap()
}

/// A primary with the app's `users`, a streaming standby of it, and a server whose default
/// source lists the standby and an address nothing listens on, in replication mode.
fn primary_standby_and_server(extra: &[&str]) -> (Pg, Pg, u16, Redis) {
    let primary = Pg::start();
    primary.execute(&crate::sources::default_sql());
    let standby = primary.start_standby();
    let nobody = free_port();
    let listed = format!("127.0.0.1:{},127.0.0.1:{nobody}", standby.port);
    let redis = Redis::start(&streaming_with_standbys(&primary, &listed, extra));
    (primary, standby, nobody, redis)
}

/// The module's arguments for `primary` in replication mode, its misses' standbys `listed`.
fn streaming_with_standbys(primary: &Pg, listed: &str, extra: &[&str]) -> Vec<String> {
    let mut args = primary.module_args();
    args.extend(
        ["invalidation_source", "replication", "standbys", listed]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
    );
    args
}

#[test]
fn health_lists_each_standby_its_state_and_how_far_it_replayed() {
    let (primary, standby, nobody, redis) = primary_standby_and_server(&[]);
    let mut con = redis.connection();
    let serving = format!("127.0.0.1:{}", standby.port);
    let dead = format!("127.0.0.1:{nobody}");
    wait_for("both standbys probed", Duration::from_secs(30), || {
        let seen = standbys_seen(&mut con);
        (field(&seen[0], "state").as_deref() == Some("serving")
            && field(&seen[1], "state").as_deref() == Some("failing"))
        .then_some(seen)
    });
    let seen = standbys_seen(&mut con);
    assert_eq!(field(&seen[0], "address"), Some(serving.clone()));
    assert!(field(&seen[0], "replay_lsn").is_some(), "{seen:?}");
    assert_eq!(field(&seen[0], "why"), None);
    assert_eq!(field(&seen[1], "address"), Some(dead.clone()));
    assert!(field(&seen[1], "why").is_some(), "{seen:?}");
    let warned = warnings(&mut con);
    assert!(
        warned
            .iter()
            .any(|w| w.contains(&dead) && w.contains("failing")),
        "{warned:?}"
    );
    assert!(!warned.iter().any(|w| w.contains(&serving)), "{warned:?}");

    // Replay paused while the cache applies a change: the standby falls behind, by bytes.
    standby.pause_replay();
    primary.execute("UPDATE users SET name = 'moved' WHERE id = 1");
    wait_for("the standby seen behind", Duration::from_secs(30), || {
        let behind: Option<i64> =
            redis::from_redis_value(standbys_seen(&mut con)[0]["behind_bytes"].clone()).unwrap();
        (behind.unwrap_or(0) > 0).then_some(())
    });
    standby.resume_replay();
    wait_for("the standby caught up", Duration::from_secs(60), || {
        let behind: Option<i64> =
            redis::from_redis_value(standbys_seen(&mut con)[0]["behind_bytes"].clone()).unwrap();
        (behind == Some(0)).then_some(())
    });
}

#[test]
fn a_stopped_standby_is_failing_then_serving_and_a_promoted_one_refused() {
    let (_primary, mut standby, _nobody, redis) = primary_standby_and_server(&[]);
    let mut con = redis.connection();
    let state = |con: &mut redis::Connection| field(&standbys_seen(con)[0], "state");
    wait_for("the standby serving", Duration::from_secs(30), || {
        (state(&mut con).as_deref() == Some("serving")).then_some(())
    });
    standby.stop();
    wait_for(
        "the stopped standby failing",
        Duration::from_secs(30),
        || (state(&mut con).as_deref() == Some("failing")).then_some(()),
    );
    // The source's own PostgreSQL is fine: no outage of it.
    let health = map_reply(&mut con, "PGCACHE.HEALTH");
    let circuit: String = redis::from_redis_value(health["postgres_circuit"].clone()).unwrap();
    assert_eq!(circuit, "closed", "{health:?}");
    standby.restart();
    wait_for("the standby serving again", Duration::from_secs(60), || {
        (state(&mut con).as_deref() == Some("serving")).then_some(())
    });
    standby
        .superuser()
        .batch_execute("SELECT pg_promote()")
        .unwrap();
    wait_for(
        "the promoted standby refused",
        Duration::from_secs(60),
        || (state(&mut con).as_deref() == Some("refused")).then_some(()),
    );
    assert_eq!(field(&standbys_seen(&mut con)[0], "replay_lsn"), None);
}

#[test]
fn standbys_need_the_log_s_positions() {
    let primary = Pg::start();
    let mut args = primary.module_args();
    args.extend(
        [
            "invalidation_source",
            "notify",
            "standbys",
            "127.0.0.1:5999",
        ]
        .map(String::from),
    );
    let log = Redis::start_with(&args, &[], &[]).map(|_| ()).unwrap_err();
    assert!(
        log.contains("standbys") && log.contains("invalidation_source replication or auto"),
        "{log}"
    );
    let mut bad = primary.module_args();
    bad.extend(["standbys", "127.0.0.1:0"].map(String::from));
    let log = Redis::start_with(&bad, &[], &[]).map(|_| ()).unwrap_err();
    assert!(log.contains("is not `host` or `host:port`"), "{log}");
}

/// `position` (a `Pg::log_position`) as PostgreSQL writes an LSN.
fn lsn_text(position: u64) -> String {
    format!("{:X}/{:X}", position >> 32, position & 0xffff_ffff)
}

/// The name of `users` row `id` as PostgreSQL says it is now.
fn name_in(pg: &Pg, id: i32) -> String {
    pg.client()
        .query_one("SELECT name FROM users WHERE id = $1", &[&id])
        .unwrap()
        .get(0)
}

/// QUERY of row `id`'s name.
fn query_name(con: &mut redis::Connection, id: i32) -> String {
    let reply: String = redis::cmd("PGCACHE.QUERY")
        .arg("SELECT name FROM users WHERE id = $1")
        .arg(1)
        .arg(id)
        .query(con)
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&reply).unwrap();
    rows[0]["name"].as_str().unwrap().to_string()
}

/// A primary whose app statements are logged, its streaming standby, and a server whose
/// default source lists the standby, in replication mode (`users` published whatever the
/// tests' mode); returns once a miss went to the standby (row 200 read so).
fn serving_standby() -> (Pg, Pg, Redis) {
    serving_standby_with(&[])
}

/// `serving_standby` with more module arguments.
fn serving_standby_with(extra: &[&str]) -> (Pg, Pg, Redis) {
    let primary = Pg::start();
    primary.execute(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'replication');"
    ));
    primary.log_app_statements();
    let standby = primary.start_standby();
    let listed = format!("127.0.0.1:{}", standby.port);
    let redis = Redis::start(&streaming_with_standbys(&primary, &listed, extra));
    let mut con = redis.connection();
    wait_for(
        "a miss answered by the standby",
        Duration::from_secs(30),
        || {
            let _ = redis::cmd("PGCACHE.INVALIDATE")
                .arg("users")
                .arg(r#"{"id":200}"#)
                .query::<i64>(&mut con);
            crate::sources::read_name(&mut con, None, 200);
            (stats_figure(&mut con, "misses_on_standbys") > 0).then_some(())
        },
    );
    // A read that timed out for its client (a busy machine) is still counted when its
    // worker ends: the tests' counts start once every fill is done.
    wait_for("no fill in flight", Duration::from_secs(30), || {
        (stats_figure(&mut con, "fills_in_flight") == 0).then_some(())
    });
    (primary, standby, redis)
}

#[test]
fn misses_go_to_a_caught_up_standby() {
    let metrics_port = free_port();
    let (primary, standby, redis) =
        serving_standby_with(&["metrics_port", &metrics_port.to_string()]);
    let mut con = redis.connection();
    // The statement learned (on the primary) before the count starts.
    assert_eq!(query_name(&mut con, 199), "user199");
    let on_standbys = stats_figure(&mut con, "misses_on_standbys");
    let rerouted = stats_figure(&mut con, "standby_rerouted");
    let primary_reads = primary.logged_statements("users");
    let standby_reads = standby.logged_statements("users");
    for id in 1..=20 {
        let read = crate::sources::read_name(&mut con, None, id);
        assert_eq!(read.as_deref(), Some(format!("user{id}").as_str()));
        assert_eq!(
            query_name(&mut con, 100 + id as i32),
            format!("user{}", 100 + id)
        );
    }
    let rows: Vec<Option<String>> = redis::cmd("PGCACHE.MULTIREAD")
        .arg("users")
        .arg(r#"[{"id":50},{"id":51},{"id":52}]"#)
        .query(&mut con)
        .unwrap();
    assert!(rows[2].as_deref().unwrap().contains("user52"), "{rows:?}");
    let rows: Vec<Option<String>> = redis::cmd("PGCACHE.MGET")
        .arg(r#"pg_cache:users:{"id":60}"#)
        .arg(r#"pg_cache:users:{"id":61}"#)
        .query(&mut con)
        .unwrap();
    assert!(rows[1].as_deref().unwrap().contains("user61"), "{rows:?}");
    let answered = stats_figure(&mut con, "misses_on_standbys") - on_standbys;
    if stats_figure(&mut con, "standby_rerouted") == rerouted {
        // Nothing on the primary moved the position past the standby meanwhile.
        assert_eq!(answered, 45, "every miss answered by the caught-up standby");
        assert_eq!(
            primary.logged_statements("users"),
            primary_reads,
            "the primary read none of them"
        );
    } else {
        // Other WAL on the primary (autovacuum, say) moved the position a check found the
        // standby short of: those misses and the next 10 ms' went to the primary.
        assert!(answered >= 30, "{answered} of 45 on the standby");
    }
    assert!(standby.logged_statements("users") >= standby_reads + 30);
    let seen = standbys_seen(&mut con);
    let misses: i64 = redis::from_redis_value(seen[0]["misses"].clone()).unwrap();
    // Its only standby answered every miss STATS counts on standbys (some of them went to
    // the primary above when other WAL moved the position).
    assert_eq!(
        misses,
        stats_figure(&mut con, "misses_on_standbys"),
        "{seen:?}"
    );
    assert!(misses >= answered, "{seen:?}");
    let scraped = crate::metrics::scrape(metrics_port);
    let address = format!("127.0.0.1:{}", standby.port);
    let labelled = Some(("standby", address.as_str()));
    assert_eq!(
        crate::metrics::counter(&scraped, "pgcache_standby_misses_total", labelled),
        misses as f64
    );
    let rerouted: i64 = redis::from_redis_value(seen[0]["rerouted"].clone()).unwrap();
    assert_eq!(
        crate::metrics::counter(&scraped, "pgcache_standby_rerouted_total", labelled),
        rerouted as f64
    );
    // Hits stay hits: nothing more goes anywhere.
    for id in 1..=20 {
        crate::sources::read_name(&mut con, None, id);
    }
    assert!(standby.logged_statements("users") < standby_reads + 60);
}

#[test]
fn replay_paused_sends_misses_to_the_primary() {
    let (primary, standby, redis) = serving_standby();
    let mut con = redis.connection();
    assert_eq!(query_name(&mut con, 1), "user1");
    standby.pause_replay();
    primary.execute("UPDATE users SET name = 'moved' WHERE id IN (5, 6)");
    wait_applied(&mut con, &lsn_text(primary.log_position()));
    let on_standbys = stats_figure(&mut con, "misses_on_standbys");
    // The standby would answer 'user5': it has not replayed what the cache applied.
    assert_eq!(
        crate::sources::read_name(&mut con, None, 5).as_deref(),
        Some("moved")
    );
    assert_eq!(query_name(&mut con, 6), "moved");
    // Every miss now needs what the standby has not replayed, rows changed or not.
    assert_eq!(
        crate::sources::read_name(&mut con, None, 7).as_deref(),
        Some("user7")
    );
    assert_eq!(stats_figure(&mut con, "misses_on_standbys"), on_standbys);
    let warned_lag: Option<i64> =
        redis::from_redis_value(standbys_seen(&mut con)[0]["behind_bytes"].clone()).unwrap();
    assert!(warned_lag.unwrap_or(0) > 0);
    // HEALTH says it lags: found short of what a miss needed, not seen past it since.
    let seen = standbys_seen(&mut con);
    assert_eq!(field(&seen[0], "state").as_deref(), Some("lagging"));
    assert!(field(&seen[0], "why").unwrap().contains("short of"));

    standby.resume_replay();
    wait_for(
        "misses on the standby again",
        Duration::from_secs(60),
        || {
            let _ = redis::cmd("PGCACHE.INVALIDATE")
                .arg("users")
                .arg(r#"{"id":5}"#)
                .query::<i64>(&mut con);
            assert_eq!(
                crate::sources::read_name(&mut con, None, 5).as_deref(),
                Some("moved")
            );
            (stats_figure(&mut con, "misses_on_standbys") > on_standbys).then_some(())
        },
    );
    wait_for("the standby serving again", Duration::from_secs(30), || {
        (field(&standbys_seen(&mut con)[0], "state").as_deref() == Some("serving")).then_some(())
    });
}

#[test]
fn after_beyond_the_standby_goes_to_the_primary() {
    let (primary, standby, redis) = serving_standby();
    let mut con = redis.connection();
    let sent = |con: &mut redis::Connection| {
        stats_figure(con, "misses_on_standbys") + stats_figure(con, "standby_rerouted")
    };
    let before = sent(&mut con);
    standby.pause_replay();
    primary.execute("UPDATE users SET name = 'written' WHERE id = 8");
    let committed = lsn_text(primary.log_position());
    let mut read = redis::cmd("PGCACHE.READ");
    read.arg("users")
        .arg(r#"{"id":8}"#)
        .arg("AFTER")
        .arg(&committed);
    let row: String = read.query(&mut con).unwrap();
    assert!(row.contains(r#""name":"written""#), "{row}");
    let mut query = redis::cmd("PGCACHE.QUERY");
    query
        .arg("SELECT name FROM users WHERE id = $1")
        .arg(1)
        .arg(8)
        .arg("AFTER")
        .arg(&committed);
    let reply: String = query.query(&mut con).unwrap();
    assert!(reply.contains("written"), "{reply}");
    assert_eq!(sent(&mut con), before, "AFTER reads never go to a standby");
    standby.resume_replay();
}

#[test]
fn a_standby_that_stops_leaves_its_misses_to_the_primary() {
    let (_primary, mut standby, redis) = serving_standby();
    let mut con = redis.connection();
    standby.stop();
    // Misses picked for it before a probe saw it stop fail there and go to the primary;
    // none fails for the client.
    for id in 1..=30 {
        assert_eq!(
            crate::sources::read_name(&mut con, None, id).as_deref(),
            Some(format!("user{id}").as_str())
        );
        assert_eq!(
            query_name(&mut con, 100 + id as i32),
            format!("user{}", 100 + id)
        );
    }
    wait_for(
        "the stopped standby failing",
        Duration::from_secs(30),
        || {
            (field(&standbys_seen(&mut con)[0], "state").as_deref() == Some("failing"))
                .then_some(())
        },
    );
    let on_standbys = stats_figure(&mut con, "misses_on_standbys");
    assert_eq!(
        crate::sources::read_name(&mut con, None, 150).as_deref(),
        Some("user150")
    );
    assert_eq!(stats_figure(&mut con, "misses_on_standbys"), on_standbys);
}

#[test]
fn a_standby_of_another_postgresql_is_refused() {
    let primary = Pg::start();
    primary.execute(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'replication');"
    ));
    // Another PostgreSQL with the same table and other rows, and its standby: replayed as
    // far as any position, it must never answer for the source.
    let other = Pg::start_another_system();
    other.execute(
        "CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL, email text);
         INSERT INTO users SELECT g, 'other' || g, NULL FROM generate_series(1, 200) g;",
    );
    let stranger = other.start_standby();
    let listed = format!("127.0.0.1:{}", stranger.port);
    let redis = Redis::start(&streaming_with_standbys(&primary, &listed, &[]));
    let mut con = redis.connection();
    let seen = wait_for("the stranger refused", Duration::from_secs(30), || {
        let seen = standbys_seen(&mut con);
        (field(&seen[0], "state").as_deref() == Some("refused")).then_some(seen)
    });
    let why = field(&seen[0], "why").unwrap();
    assert!(why.contains("system identifier"), "{why}");
    for id in 1..=10 {
        assert_eq!(
            crate::sources::read_name(&mut con, None, id).as_deref(),
            Some(format!("user{id}").as_str())
        );
    }
    assert_eq!(stats_figure(&mut con, "misses_on_standbys"), 0);
}

/// The model: rows written on the primary, the standby's replay paused and resumed at random,
/// entries dropped so that reads miss, every READ and QUERY checked against the primary once
/// the cache applied the last write (an answer from a standby short of it would be stale).
#[test]
fn a_random_model_with_replay_paused_at_random() {
    let seed = seed_from_env(0x5717_2026);
    let mut rng = Rng::new(seed);
    let (primary, standby, redis) = serving_standby();
    let mut con = redis.connection();
    let mut paused = false;
    let on_standbys = stats_figure(&mut con, "misses_on_standbys");
    let mut checked = 0;
    for step in 0..150 {
        let id = 1 + rng.below(12) as i32;
        match rng.below(8) {
            0 => {
                primary.execute(&format!(
                    "UPDATE users SET name = 'v{step}' WHERE id = {id}"
                ));
                wait_applied(&mut con, &lsn_text(primary.log_position()));
            }
            1 => {
                if paused {
                    standby.resume_replay();
                } else {
                    standby.pause_replay();
                }
                paused = !paused;
            }
            2 => {
                let _ = redis::cmd("PGCACHE.INVALIDATE")
                    .arg("users")
                    .arg(format!(r#"{{"id":{id}}}"#))
                    .query::<i64>(&mut con);
            }
            6 => {
                let other = 1 + id % 12;
                let rows: Vec<Option<String>> = redis::cmd("PGCACHE.MULTIREAD")
                    .arg("users")
                    .arg(format!(r#"[{{"id":{id}}},{{"id":{other}}}]"#))
                    .query(&mut con)
                    .unwrap();
                for (row, of) in rows.iter().zip([id, other]) {
                    let row: serde_json::Value =
                        serde_json::from_str(row.as_deref().unwrap()).unwrap();
                    assert_eq!(
                        row["name"],
                        name_in(&primary, of).as_str(),
                        "seed {seed} step {step}"
                    );
                }
                checked += 1;
            }
            3 | 4 => {
                let read = crate::sources::read_name(&mut con, None, id as i64);
                assert_eq!(read, Some(name_in(&primary, id)), "seed {seed} step {step}");
                checked += 1;
            }
            _ => {
                let answer = query_name(&mut con, id);
                assert_eq!(answer, name_in(&primary, id), "seed {seed} step {step}");
                checked += 1;
            }
        }
    }
    if paused {
        standby.resume_replay();
    }
    assert!(checked > 50);
    assert!(
        stats_figure(&mut con, "misses_on_standbys") > on_standbys,
        "the standby answered some misses (seed {seed})"
    );
}

/// After a failover, a standby that went on replaying the old primary's log is on another
/// timeline: its positions pass the cache's while it lacks the new primary's history. It is
/// refused, and misses read the new primary's rows.
#[test]
fn a_standby_left_on_the_old_timeline_is_refused() {
    let old = Pg::start();
    old.execute(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'replication');"
    ));
    let left_behind = old.start_standby();
    let new = old.start_standby();
    new.superuser()
        .batch_execute("SELECT pg_promote()")
        .unwrap();
    wait_for("the promotion", Duration::from_secs(60), || {
        let recovering: bool = new
            .superuser()
            .query_one("SELECT pg_is_in_recovery()", &[])
            .unwrap()
            .get(0);
        (!recovering).then_some(())
    });
    // The old primary goes on (a split brain, or commits its standby got before the new
    // primary did), and the standby left behind replays it, far past the fork.
    for _ in 0..100 {
        old.execute("UPDATE users SET name = 'forked' || id WHERE id <= 20");
    }
    left_behind.wait_replayed(old.log_position());
    let listed = format!("127.0.0.1:{}", left_behind.port);
    let redis = Redis::start(&streaming_with_standbys(&new, &listed, &[]));
    let mut con = redis.connection();
    let seen = wait_for("the standby refused", Duration::from_secs(30), || {
        let seen = standbys_seen(&mut con);
        (field(&seen[0], "state").as_deref() == Some("refused")).then_some(seen)
    });
    let why = field(&seen[0], "why").unwrap();
    assert!(why.contains("timeline 1") && why.contains("on 2"), "{why}");
    for id in 1..=20 {
        assert_eq!(
            crate::sources::read_name(&mut con, None, id).as_deref(),
            Some(format!("user{id}").as_str())
        );
    }
    assert_eq!(stats_figure(&mut con, "misses_on_standbys"), 0);
}
