//! Concurrent READ misses are fetched in batches; a batch never mixes up or loses results.
//!
//! A test that needs misses queued behind a busy worker holds the only worker on a lock
//! (`Gate`) until every miss is seen waiting: the order is forced, whatever the machine's load
//! (a `pg_sleep` of a second or two let the worker go before the misses, spawned under load,
//! had all arrived).
use pgcache_testkit::*;
use std::time::Duration;

/// A table whose row lookups wait while the test holds it locked, and the settings that let
/// a client wait on it for as long as the test takes under load.
const GATE_SQL: &str = "CREATE TABLE gate (kind text PRIMARY KEY, n integer);
                        INSERT INTO gate VALUES ('open', 1);";
/// (These tests are of the workers' queue: misses stay off the event loop's connections.)
const ONE_WORKER_HELD: [&str; 10] = [
    "workers",
    "1",
    "pool_size",
    "1",
    "request_timeout_ms",
    "60000",
    "statement_timeout_ms",
    "60000",
    "loop_connections",
    "0",
];

/// `gate` locked by the test (ACCESS EXCLUSIVE, in an open transaction): a worker reading
/// its row waits until `open`.
struct Gate(postgres::Client);

impl Gate {
    /// Locks `gate` (whose schema must be known already, or learning it would wait too).
    fn close(pg: &Pg) -> Gate {
        let mut locker = pg.client();
        locker
            .batch_execute("BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        Gate(locker)
    }

    fn open(mut self) {
        self.0.batch_execute("ROLLBACK").unwrap();
    }
}

/// Occupies the only worker: a READ of `gate`'s row, waiting in PostgreSQL for the closed
/// `gate` (seen there, so whether its client has timed out meanwhile does not matter).
fn hold_the_worker(
    stack: &Stack,
) -> (
    Gate,
    std::thread::JoinHandle<redis::RedisResult<Option<String>>>,
) {
    let gate = Gate::close(&stack.pg);
    let held = spawn_read(stack.redis.port, "gate", r#"{"kind":"open"}"#);
    let mut watcher = stack.pg.client();
    wait_for(
        "the worker to wait for the gate",
        Duration::from_secs(30),
        || {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                    &[],
                )
                .unwrap()
                .get(0);
            (waiting == 1).then_some(())
        },
    );
    (gate, held)
}

#[test]
fn queued_misses_share_one_query_and_a_bad_key_fails_only_its_own_request() {
    let stack = Stack::start_with(
        &format!(
            "CREATE TABLE events (kind text, n integer);
             INSERT INTO events VALUES ('a', 1), ('b', 2), ('b', 3), ('c', 4); {GATE_SQL}"
        ),
        &ONE_WORKER_HELD,
    );
    stack.pg.log_app_statements();
    let mut con = stack.con();
    // Learn both schemas, then occupy the only worker with a held lookup.
    read(&mut con, "events", r#"{"kind":"c"}"#).unwrap();
    read(&mut con, "gate", r#"{"kind":"zzz"}"#).unwrap();
    let port = stack.redis.port;
    let (gate, held) = hold_the_worker(&stack);
    let queued = [
        spawn_read(port, "events", r#"{"kind":"a"}"#),
        spawn_read(port, "events", r#"{"kind":"b"}"#),
        spawn_read(port, "events", r#"{"kind":"zzz"}"#),
        spawn_read(port, "events", r#"{"kind":"a"}"#),
    ];
    wait_blocked(&mut con, 5);
    gate.open();
    assert!(held.join().unwrap().unwrap().is_some());
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

#[test]
fn queued_query_misses_of_different_statements_share_one_round_trip_and_fail_alone() {
    let stack = Stack::start_with(
        &format!(
            "CREATE TABLE a (id integer PRIMARY KEY, v text);
         CREATE TABLE b (id integer PRIMARY KEY, v text);
         INSERT INTO a VALUES (1, 'a1'), (2, 'a2'), (3, 'a3');
         INSERT INTO b VALUES (1, 'b1'), (2, 'b2'), (3, 'b3');
         {GATE_SQL}"
        ),
        &[&ONE_WORKER_HELD[..], &["debug_commands", "yes"]].concat(),
    );
    const OF_A: &str = "SELECT v FROM a WHERE id = $1";
    const OF_B: &str = "SELECT v FROM b WHERE id = $1";
    const RATIO: &str = "SELECT v, 10 / $1::integer AS tenth FROM a WHERE id = 1";
    let mut con = stack.con();
    // Each statement's runs may share a round trip however long the machine's load made
    // them take so far (measured slow, a statement is sent alone).
    debug(&mut con, "PIPELINE", "ALWAYS");
    // Learn every statement (a statement seen for the first time is learned alone), then
    // occupy the only worker with a held lookup.
    for (sql, param) in [(OF_A, "1"), (OF_B, "1"), (RATIO, "5")] {
        crate::query::query(&mut con, sql, &[param]).unwrap();
    }
    read(&mut con, "gate", r#"{"kind":"zzz"}"#).unwrap();
    let before = stats_figure(&mut con, "query_pipelined");
    let port = stack.redis.port;
    let (gate, held) = hold_the_worker(&stack);
    let spawn_query = |sql: &'static str, param: &'static str| {
        std::thread::spawn(move || crate::query::query(&mut connect(port), sql, &[param]))
    };
    let queued = [
        spawn_query(OF_A, "2"),
        spawn_query(OF_B, "3"),
        spawn_query(RATIO, "0"),
        spawn_query(OF_A, "3"),
        spawn_query(RATIO, "2"),
    ];
    // Every miss queued (and the second of each statement joined its first) before the
    // worker is let go.
    wait_blocked(&mut con, 6);
    gate.open();
    held.join().unwrap().unwrap();
    let answers: Vec<Result<String, String>> = queued
        .into_iter()
        .map(|t| t.join().unwrap().map_err(|e| e.to_string()))
        .collect();
    let answer = |i: usize| json(answers[i].as_ref().unwrap());
    assert_eq!(answer(0), serde_json::json!([{"v": "a2"}]));
    assert_eq!(answer(1), serde_json::json!([{"v": "b3"}]));
    assert!(
        answers[2]
            .as_ref()
            .unwrap_err()
            .contains("division by zero"),
        "{answers:?}"
    );
    assert_eq!(answer(3), serde_json::json!([{"v": "a3"}]));
    assert_eq!(answer(4), serde_json::json!([{"v": "a1", "tenth": 5}]));
    // The three statements' jobs (the second miss of each joined its statement's) went to
    // PostgreSQL in one round trip, and the one that failed failed alone.
    assert_eq!(stats_figure(&mut con, "query_pipelined") - before, 3);
}

#[test]
fn a_statement_whose_queued_miss_timed_out_is_answered_afterwards() {
    let stack = Stack::start_with(
        &format!(
            "CREATE TABLE a (id integer PRIMARY KEY, v text);
             INSERT INTO a VALUES (1, 'a1'), (2, 'a2'), (3, 'a3'); {GATE_SQL}"
        ),
        &ONE_WORKER_HELD,
    );
    const OF_A: &str = "SELECT v FROM a WHERE id = $1";
    let mut con = stack.con();
    crate::query::query(&mut con, OF_A, &["1"]).unwrap();
    read(&mut con, "gate", r#"{"kind":"zzz"}"#).unwrap();
    // A miss, and one that joins it, time out in the queue behind a held lookup.
    let port = stack.redis.port;
    let (gate, held) = hold_the_worker(&stack);
    config_set(&mut con, "pgcache.request_timeout_ms", "600").unwrap();
    let spawn_query = |param: &'static str| {
        std::thread::spawn(move || crate::query::query(&mut connect(port), OF_A, &[param]))
    };
    let queued = [spawn_query("2"), spawn_query("3")];
    for miss in queued {
        let e = miss.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
    }
    // Once the worker is free, the statement's misses are answered again.
    config_set(&mut con, "pgcache.request_timeout_ms", "60000").unwrap();
    gate.open();
    assert!(held.join().unwrap().unwrap().is_some(), "the held lookup");
    // A miss of a key whose timed-out job is still queued joins that job's fill, and is
    // told to retry when the worker drops the job; a retry is answered.
    for (param, v) in [("2", "a2"), ("3", "a3")] {
        let answer =
            wait_for(
                "a miss answered",
                Duration::from_secs(30),
                || match crate::query::query(&mut con, OF_A, &[param]) {
                    Ok(answer) => Some(answer),
                    Err(e) if e.to_string().contains("abandoned") => None,
                    Err(e) => panic!("{e}"),
                },
            );
        assert_eq!(json(&answer), serde_json::json!([{ "v": v }]));
    }
}

#[test]
fn a_miss_that_joined_a_queued_miss_which_timed_out_is_still_answered() {
    let stack = Stack::start_with(
        &format!(
            "CREATE TABLE a (id integer PRIMARY KEY, v text);
             INSERT INTO a VALUES (1, 'a1'), (2, 'a2'), (3, 'a3'); {GATE_SQL}"
        ),
        &ONE_WORKER_HELD,
    );
    const OF_A: &str = "SELECT v FROM a WHERE id = $1";
    let mut con = stack.con();
    crate::query::query(&mut con, OF_A, &["1"]).unwrap();
    read(&mut con, "gate", r#"{"kind":"zzz"}"#).unwrap();
    // The only worker waits on a lock the test holds, until the test lets it go.
    let port = stack.redis.port;
    let (gate, held) = hold_the_worker(&stack);
    let spawn_query = |param: &'static str| {
        std::thread::spawn(move || crate::query::query(&mut connect(port), OF_A, &[param]))
    };
    // A miss queues a job of the statement and times out in the queue...
    config_set(&mut con, "pgcache.request_timeout_ms", "1000").unwrap();
    let first = spawn_query("2").join().unwrap().unwrap_err().to_string();
    assert!(first.contains("timed out"), "{first}");
    // ... and a miss that joins the job afterwards, with time left (all the time the test
    // needs under load), is answered once the worker takes the job.
    config_set(&mut con, "pgcache.request_timeout_ms", "60000").unwrap();
    let joined = spawn_query("3");
    wait_blocked(&mut con, 2);
    gate.open();
    assert!(held.join().unwrap().unwrap().is_some(), "the held lookup");
    assert_eq!(
        json(&joined.join().unwrap().unwrap()),
        serde_json::json!([{"v": "a3"}])
    );
}

/// Misses of one statement batched together, four of them slow and one quick, past
/// `statement_timeout` together though not alone: each is answered as it would be alone
/// (issue #70 item 4: all five were told the statement was canceled).
#[test]
fn a_batch_canceled_for_its_time_runs_each_set_alone() {
    let stack = Stack::start_with(
        &format!(
            "CREATE TABLE t (id integer PRIMARY KEY);
             INSERT INTO t SELECT generate_series(1, 10);
             CREATE FUNCTION slow_for(n integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
               AS $$ BEGIN IF n > 1 THEN PERFORM pg_sleep(0.6); END IF; RETURN true; END $$;
             {GATE_SQL}"
        ),
        &[&ONE_WORKER_HELD[..], &["statement_timeout_ms", "1000"]].concat(),
    );
    const SLOW: &str = "SELECT id FROM t WHERE id = $1 AND slow_for($1)";
    stack.pg.log_app_statements();
    let mut con = stack.con();
    crate::query::query(&mut con, SLOW, &["1"]).unwrap();
    read(&mut con, "gate", r#"{"kind":"zzz"}"#).unwrap();
    let port = stack.redis.port;
    let (gate, held) = hold_the_worker(&stack);
    let queued: Vec<_> = ["2", "3", "4", "5", "6"]
        .into_iter()
        .map(|id| std::thread::spawn(move || crate::query::query(&mut connect(port), SLOW, &[id])))
        .collect();
    wait_blocked(&mut con, 6);
    gate.open();
    held.join().unwrap().unwrap();
    for (id, answer) in (2..).zip(queued) {
        let answer = answer
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(json(&answer), serde_json::json!([{ "id": id }]));
    }
    assert!(
        stack.pg.logged_statements("pgcache_params") >= 1,
        "they were batched first"
    );
}

/// Misses of a statement of several parameters batched together run as one statement that
/// PostgreSQL accepts: each set's values in a column of their own (the batch named
/// `pg_catalog.unnest(a, b)`, which PostgreSQL takes for a function of two arrays that does
/// not exist, so every such batch failed and each set ran again alone).
#[test]
fn misses_of_a_statement_of_several_parameters_run_as_one_batch() {
    let stack = Stack::start_with(
        &format!(
            "CREATE TABLE t (id integer PRIMARY KEY, label text);
             INSERT INTO t SELECT n, 'l' || n FROM generate_series(1, 10) AS n;
             {GATE_SQL}"
        ),
        &ONE_WORKER_HELD,
    );
    const TWO: &str = "SELECT id FROM t WHERE id = $1 AND label = $2";
    stack.pg.log_app_statements();
    let mut con = stack.con();
    crate::query::query(&mut con, TWO, &["1", "l1"]).unwrap();
    read(&mut con, "gate", r#"{"kind":"zzz"}"#).unwrap();
    let port = stack.redis.port;
    let (gate, held) = hold_the_worker(&stack);
    let queued: Vec<_> = (2..=6)
        .map(|id| {
            std::thread::spawn(move || {
                let label = if id == 4 {
                    "other".to_string()
                } else {
                    format!("l{id}")
                };
                crate::query::query(&mut connect(port), TWO, &[&id.to_string(), &label])
            })
        })
        .collect();
    wait_blocked(&mut con, 6);
    gate.open();
    held.join().unwrap().unwrap();
    for (id, answer) in (2..).zip(queued) {
        let answer = answer
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let expected = if id == 4 {
            serde_json::json!([])
        } else {
            serde_json::json!([{ "id": id }])
        };
        assert_eq!(json(&answer), expected, "{id}");
    }
    let log = std::fs::read_to_string(stack.pg.log_path()).unwrap();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("ERROR:")).collect();
    assert!(refused.is_empty(), "PostgreSQL refused: {refused:?}");
    assert!(
        stack.pg.logged_statements("pgcache_params") >= 1,
        "they were batched"
    );
}

/// Batched misses of a statement comparing a `bit(4)` column with a parameter keep every bit
/// of each set's value: the batch cast it to `bit`, which in a cast means `bit(1)` and cut
/// `1111` to `1`, so every set matched nothing (found by the differential fuzzer, issue #70,
/// seed 21016).
#[test]
fn batched_misses_of_a_bit_string_parameter_keep_every_bit() {
    let stack = Stack::start_with(
        &format!(
            "CREATE TABLE t (id integer PRIMARY KEY, flags bit(4));
             INSERT INTO t VALUES (1, '1111'), (2, '1010'), (3, '0001'), (4, '1111');
             {GATE_SQL}"
        ),
        &ONE_WORKER_HELD,
    );
    const FLAGS: &str = "SELECT id FROM t WHERE flags = $1 ORDER BY id";
    let mut con = stack.con();
    crate::query::query(&mut con, FLAGS, &["0000"]).unwrap();
    read(&mut con, "gate", r#"{"kind":"zzz"}"#).unwrap();
    let port = stack.redis.port;
    let (gate, held) = hold_the_worker(&stack);
    let flags = ["1111", "1010", "0001", "1"];
    let queued: Vec<_> = flags
        .into_iter()
        .map(|f| std::thread::spawn(move || crate::query::query(&mut connect(port), FLAGS, &[f])))
        .collect();
    wait_blocked(&mut con, 5);
    gate.open();
    held.join().unwrap().unwrap();
    for (f, answer) in flags.into_iter().zip(queued) {
        let answer = answer
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let expected = crate::query::postgres_answer(&stack, FLAGS, &[f]);
        assert_eq!(json(&answer), expected, "{f}");
    }
}

/// The same on the event loop: misses held there unsent (`PGCACHE.DEBUG SENDS HOLD`) join
/// one job, as those of one turn do, and go out as one batch; canceled, it is split, and
/// each set is answered as it would be alone.
#[test]
fn a_batch_canceled_for_its_time_on_the_event_loop_runs_each_set_alone() {
    let stack = Stack::start_with(
        "CREATE TABLE t (id integer PRIMARY KEY);
         INSERT INTO t SELECT generate_series(1, 10);
         CREATE FUNCTION slow_for(n integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE
           AS $$ BEGIN IF n > 1 THEN PERFORM pg_sleep(0.6); END IF; RETURN true; END $$;",
        &[
            "loop_connections",
            "1",
            "statement_timeout_ms",
            "1000",
            "request_timeout_ms",
            "60000",
            "debug_commands",
            "yes",
        ],
    );
    const SLOW: &str = "SELECT id FROM t WHERE id = $1 AND slow_for($1)";
    stack.pg.log_app_statements();
    let mut con = stack.con();
    // Sent from the loop however long the machine's load made its first run take, once the
    // loop has its connection (quick misses open it, and go to the workers meanwhile).
    debug(&mut con, "PIPELINE", "ALWAYS");
    let mut pg = stack.pg.client();
    let mut quick = 0;
    wait_for("the loop's connection", Duration::from_secs(30), || {
        quick -= 1;
        crate::query::query(&mut con, SLOW, &[&quick.to_string()]).unwrap();
        let sessions: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgcache-loop'",
                &[],
            )
            .unwrap()
            .get(0);
        (sessions == 1).then_some(())
    });
    let on_loop = stats_figure(&mut con, "misses_on_loop");
    let port = stack.redis.port;
    debug(&mut con, "SENDS", "HOLD");
    let queued: Vec<_> = ["2", "3", "4", "5", "6"]
        .into_iter()
        .map(|id| std::thread::spawn(move || crate::query::query(&mut connect(port), SLOW, &[id])))
        .collect();
    wait_blocked(&mut con, 5);
    debug(&mut con, "SENDS", "RELEASE");
    for (id, answer) in (2..).zip(queued) {
        let answer = answer
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(json(&answer), serde_json::json!([{ "id": id }]));
    }
    assert!(
        stats_figure(&mut con, "misses_on_loop") > on_loop,
        "sent from the loop"
    );
    assert_eq!(
        stack.pg.logged_statements("pgcache_params"),
        1,
        "batched once, on the loop, then each set alone"
    );
}
