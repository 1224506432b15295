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
    let mut args = primary.module_args();
    let listed = format!("127.0.0.1:{},127.0.0.1:{nobody}", standby.port);
    args.extend(
        ["invalidation_source", "replication", "standbys", &listed]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
    );
    let redis = Redis::start(&args);
    (primary, standby, nobody, redis)
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
