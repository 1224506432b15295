//! Concurrent READ misses are fetched in batches; a batch never mixes up or loses results.
use pgcache_testkit::*;
use std::time::Duration;

#[test]
fn queued_misses_share_one_query_and_a_bad_key_fails_only_its_own_request() {
    let stack = Stack::start_with(
        "CREATE TABLE events (kind text, n integer);
         INSERT INTO events VALUES ('a', 1), ('b', 2), ('b', 3), ('c', 4);
         CREATE VIEW slow_events AS SELECT kind, n, pg_sleep(1.5) IS NULL AS slept FROM events;",
        &["workers", "1", "pool_size", "1"],
    );
    stack.pg.log_app_statements();
    let mut con = stack.con();
    // Learn both schemas, then occupy the only worker with a slow lookup.
    read(&mut con, "events", r#"{"kind":"c"}"#).unwrap();
    read(&mut con, "slow_events", r#"{"kind":"zzz"}"#).unwrap();
    let port = stack.redis.port;
    let slow = spawn_read(port, "slow_events", r#"{"kind":"a"}"#);
    wait_for(
        "the slow lookup to hold the worker",
        Duration::from_secs(10),
        || (blocked_clients(&mut con) == 1).then_some(()),
    );
    let queued = [
        spawn_read(port, "events", r#"{"kind":"a"}"#),
        spawn_read(port, "events", r#"{"kind":"b"}"#),
        spawn_read(port, "events", r#"{"kind":"zzz"}"#),
        spawn_read(port, "events", r#"{"kind":"a"}"#),
    ];
    wait_for(
        "four lookups queued behind it",
        Duration::from_secs(10),
        || (blocked_clients(&mut con) == 5).then_some(()),
    );
    assert!(slow.join().unwrap().unwrap().is_some());
    let results: Vec<Result<Option<String>, String>> = queued
        .into_iter()
        .map(|t| t.join().unwrap().map_err(|e| e.to_string()))
        .collect();
    assert_eq!(json(results[0].as_ref().unwrap().as_ref().unwrap())["n"], 1);
    assert!(
        results[1]
            .as_ref()
            .unwrap_err()
            .contains("more than one row"),
        "{results:?}"
    );
    assert_eq!(results[2], Ok(None));
    assert_eq!(results[3], results[0]);
    // The four were tried as one batch before being retried one by one.
    assert!(stack.pg.logged_statements("unnest(") >= 1);
}

#[test]
fn many_concurrent_misses_all_get_their_own_rows() {
    let stack = Stack::start_with(USERS_SQL, &["workers", "2", "pool_size", "2"]);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    let port = stack.redis.port;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut con = connect(port);
                for i in 0..24 {
                    let id = 2 + t * 25 + i;
                    let row = read(&mut con, "users", &format!(r#"{{"id":{id}}}"#))
                        .unwrap()
                        .unwrap();
                    assert_eq!(json(&row)["id"], id);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let filled = cache_entries(&mut con);
    assert_eq!(filled, 1 + 8 * 24);
}
