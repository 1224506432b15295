//! QUERY misses the event loop sends to PostgreSQL itself (`loop_connections`): answered
//! as a worker answers them, pipelined without mixing answers up, moved to the workers when
//! a connection breaks, and every connection closed by CONFIG SET, PGCACHE.DRAIN and MODULE
//! UNLOAD.
use crate::query::{postgres_answer, query};
use pgcache_testkit::*;
use std::time::Duration;

const ITEMS_SQL: &str = "
    CREATE TABLE items (id integer PRIMARY KEY, owner integer NOT NULL, price numeric NOT NULL,
                        tags text[] NOT NULL DEFAULT '{}');
    INSERT INTO items SELECT g, g % 7, g * 1.25, ARRAY['t' || (g % 3)] FROM generate_series(1, 200) g;
";

const BY_OWNER: &str = "SELECT id, price, tags FROM items WHERE owner = $1 ORDER BY id";

fn loop_stack(connections: &str) -> Stack {
    Stack::start_with(
        ITEMS_SQL,
        &[
            "loop_connections",
            connections,
            "request_timeout_ms",
            "30000",
            "debug_commands",
            "yes",
        ],
    )
}

/// Item `id`'s row as PostgreSQL reads it (what READ answers), as JSON.
fn item_row(pg: &mut postgres::Client, id: i32) -> Option<serde_json::Value> {
    pg.query_opt(
        "SELECT row_to_json(t.*)::text FROM items t WHERE id = $1",
        &[&id],
    )
    .unwrap()
    .map(|row| json(row.get(0)))
}

/// The event loop's sessions as PostgreSQL lists them.
fn loop_sessions(pg: &Pg) -> Vec<i32> {
    pg.client()
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgcache-loop'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn wait_loop_sessions(pg: &Pg, n: usize) -> Vec<i32> {
    wait_for(
        &format!("{n} event-loop sessions"),
        Duration::from_secs(30),
        || {
            let pids = loop_sessions(pg);
            (pids.len() == n).then_some(pids)
        },
    )
}

/// Misses of a known statement (another parameter each: a statement's first call is
/// learned on a worker) until the loop has its connections (the first misses open them and
/// go to the workers meanwhile); every answer checked against PostgreSQL's.
fn misses_until(
    stack: &Stack,
    con: &mut redis::Connection,
    what: &str,
    done: impl Fn(&[i32]) -> bool,
) {
    let sql = "SELECT count(*), sum(price) FROM items WHERE owner = $1 AND id > $2";
    let mut n = 0;
    wait_for(what, Duration::from_secs(30), || {
        n += 1;
        let params = ["1".to_string(), n.to_string()];
        let params = [params[0].as_str(), params[1].as_str()];
        let got = json(&query(con, sql, &params).unwrap());
        assert_eq!(got, postgres_answer(stack, sql, &params));
        done(&loop_sessions(&stack.pg)).then_some(())
    });
}

/// Every statement's misses may go out from the loop, whatever their runs took (on a
/// loaded machine a one-row read is timed at milliseconds, and it would go to a worker).
fn warm_up(stack: &Stack, con: &mut redis::Connection, connections: usize) {
    debug(con, "PIPELINE", "ALWAYS");
    misses_until(stack, con, "the loop's connections", |pids| {
        pids.len() == connections
    });
}

#[test]
fn misses_sent_from_the_event_loop_answer_as_postgresql_does() {
    let stack = loop_stack("2");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 2);
    let before = stats_figure(&mut con, "misses_on_loop");
    for owner in 0..7 {
        let owner = owner.to_string();
        let got = json(&query(&mut con, BY_OWNER, &[&owner]).unwrap());
        assert_eq!(got, postgres_answer(&stack, BY_OWNER, &[&owner]));
        // The same call again is a hit, with the same answer.
        let again = json(&query(&mut con, BY_OWNER, &[&owner]).unwrap());
        assert_eq!(again, got);
    }
    // The statement's first call is learned on a worker; the other six went out from the
    // event loop.
    assert_eq!(stats_figure(&mut con, "misses_on_loop") - before, 6);
    // A statement PostgreSQL refuses is refused with its words, and the connection goes on.
    let refused = query(&mut con, "SELECT 1 / $1::integer AS x", &["0"]).unwrap_err();
    assert!(
        refused.to_string().contains("division by zero"),
        "{refused}"
    );
    let sql = "SELECT sum(price) FROM items WHERE owner = $1";
    assert_eq!(
        json(&query(&mut con, sql, &["3"]).unwrap()),
        postgres_answer(&stack, sql, &["3"])
    );
    assert_eq!(loop_sessions(&stack.pg).len(), 2);
}

#[test]
fn concurrent_misses_pipelined_on_the_loop_never_get_each_other_s_answers() {
    let stack = loop_stack("1");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 1);
    let statements = [
        "SELECT id FROM items WHERE owner = $1 AND id > $2 ORDER BY id",
        "SELECT count(*), max(price) FROM items WHERE owner = $1 AND id <= $2",
        "SELECT array_agg(id ORDER BY id) FROM items WHERE owner = $1 AND price > $2::numeric",
    ];
    let expected: Vec<(String, [String; 2], serde_json::Value)> = statements
        .iter()
        .flat_map(|sql| (0..7).map(move |owner| (sql, owner)))
        .map(|(sql, owner)| {
            let params = [owner.to_string(), (owner * 20).to_string()];
            let answer = postgres_answer(&stack, sql, &[&params[0], &params[1]]);
            (sql.to_string(), params, answer)
        })
        .collect();
    let port = stack.redis.port;
    std::thread::scope(|scope| {
        for chunk in expected.chunks(3) {
            scope.spawn(move || {
                let mut con = connect(port);
                for (sql, params, answer) in chunk {
                    let got = json(&query(&mut con, sql, &[&params[0], &params[1]]).unwrap());
                    assert_eq!(&got, answer, "{sql} with {params:?}");
                }
            });
        }
    });
    assert!(stats_figure(&mut con, "misses_on_loop") >= expected.len() as i64 / 2);
}

#[test]
fn a_loop_connection_ended_by_postgresql_moves_its_misses_to_the_workers_and_is_replaced() {
    let stack = loop_stack("2");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 2);
    let old = loop_sessions(&stack.pg);
    let mut admin = stack.pg.superuser();
    for pid in &old {
        admin
            .execute("SELECT pg_terminate_backend($1)", &[pid])
            .unwrap();
    }
    // Every call is answered, whatever the state of the connections it met.
    for owner in 0..7 {
        let sql = "SELECT id, tags FROM items WHERE owner = $1 AND id % 2 = 0 ORDER BY id";
        let owner = owner.to_string();
        assert_eq!(
            json(&query(&mut con, sql, &[&owner]).unwrap()),
            postgres_answer(&stack, sql, &[&owner])
        );
    }
    misses_until(&stack, &mut con, "new event-loop sessions", |now| {
        now.len() == 2 && now.iter().all(|pid| !old.contains(pid))
    });
}

#[test]
fn config_set_and_unload_close_every_loop_connection() {
    let stack = loop_stack("2");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 2);
    config_set(&mut con, "pgcache.loop_connections", "1").unwrap();
    // A connection retires when the next miss looks at the fleet.
    misses_until(&stack, &mut con, "one event-loop session", |pids| {
        pids.len() == 1
    });
    unload(&mut con);
    wait_loop_sessions(&stack.pg, 0);
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_drain_closes_every_loop_connection_and_its_end_lets_them_open_again() {
    let stack = loop_stack("2");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 2);
    let waiting: i64 = redis::cmd("PGCACHE.DRAIN").arg(30).query(&mut con).unwrap();
    assert_eq!(waiting, 0);
    // No miss comes (they are refused): the connections close all the same.
    wait_loop_sessions(&stack.pg, 0);
    let refused = query(&mut con, BY_OWNER, &["3"]).unwrap_err().to_string();
    assert!(refused.contains("draining"), "{refused}");
    let _: i64 = redis::cmd("PGCACHE.DRAIN").arg(0).query(&mut con).unwrap();
    misses_until(&stack, &mut con, "the loop's connections again", |pids| {
        pids.len() == 2
    });
}

#[test]
fn a_row_too_long_for_the_loop_sends_its_table_s_and_statement_s_misses_to_the_workers() {
    let stack = loop_stack("1");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 1);
    // Rows past the loop's cap on one row (64 MiB): it breaks its connection rather than
    // buffer the row.
    stack.pg.execute(
        "CREATE TABLE docs (id integer PRIMARY KEY, body text NOT NULL);
         INSERT INTO docs VALUES (1, 'small'), (2, repeat('x', 67200000)), (3, repeat('y', 67200000));",
    );
    // The table learned on a worker; then a miss of it goes out from the loop.
    read(&mut con, "docs", r#"{"id":1}"#).unwrap().unwrap();
    assert_eq!(docs_figure(&mut con, "rows_too_long_for_loop"), 0);
    let on_loop = stats_figure(&mut con, "misses_on_loop");
    assert_eq!(read(&mut con, "docs", r#"{"id":9}"#).unwrap(), None);
    assert_eq!(stats_figure(&mut con, "misses_on_loop"), on_loop + 1);

    // The long row breaks the loop's connection; its miss is answered by a worker.
    let row = read(&mut con, "docs", r#"{"id":2}"#).unwrap().unwrap();
    assert_eq!(json(&row)["body"].as_str().map(str::len), Some(67_200_000));
    misses_until(&stack, &mut con, "the loop's connection again", |pids| {
        pids.len() == 1
    });
    // The table's next misses go to the workers: no other connection breaks on them.
    let on_loop = stats_figure(&mut con, "misses_on_loop");
    let row = read(&mut con, "docs", r#"{"id":3}"#).unwrap().unwrap();
    assert_eq!(json(&row)["body"].as_str().map(str::len), Some(67_200_000));
    assert_eq!(read(&mut con, "docs", r#"{"id":8}"#).unwrap(), None);
    assert_eq!(stats_figure(&mut con, "misses_on_loop"), on_loop);
    assert_eq!(
        docs_figure(&mut con, "rows_too_long_for_loop"),
        1,
        "STATS says why"
    );
    // Other tables' misses still go out from the loop.
    let row = read(&mut con, "items", r#"{"id":77}"#).unwrap().unwrap();
    assert_eq!(json(&row)["id"], 77);
    assert_eq!(stats_figure(&mut con, "misses_on_loop"), on_loop + 1);

    // A statement that once answered a row too long stays with the workers, whatever its
    // later results' sizes (another parameter may bring the long row again).
    let by_id = "SELECT id, body FROM docs WHERE id = $1";
    query(&mut con, by_id, &["1"]).unwrap(); // learned on a worker
    let on_loop = stats_figure(&mut con, "misses_on_loop");
    assert_eq!(query(&mut con, by_id, &["11"]).unwrap(), "[]");
    assert_eq!(stats_figure(&mut con, "misses_on_loop"), on_loop + 1);
    assert_eq!(misses_from(&mut con, by_id), "event loop");
    assert!(query(&mut con, by_id, &["2"]).unwrap().len() > 67_200_000);
    misses_until(&stack, &mut con, "the loop's connection again", |pids| {
        pids.len() == 1
    });
    let on_loop = stats_figure(&mut con, "misses_on_loop");
    assert_eq!(query(&mut con, by_id, &["12"]).unwrap(), "[]");
    assert!(query(&mut con, by_id, &["3"]).unwrap().len() > 67_200_000);
    assert_eq!(stats_figure(&mut con, "misses_on_loop"), on_loop);
    let from = misses_from(&mut con, by_id);
    assert!(
        from.starts_with("workers: a row of one of its results"),
        "{from}"
    );
}

/// The docs table's figure `name` in PGCACHE.STATS.
fn docs_figure(con: &mut redis::Connection, name: &str) -> i64 {
    let stats = map_reply(con, "PGCACHE.STATS");
    figure(&nested(&nested(&stats["tables"])["docs"]), name)
}

/// Where PGCACHE.QUERIES says the misses of `sql` go from.
fn misses_from(con: &mut redis::Connection, sql: &str) -> String {
    let listed: Vec<redis::Value> = redis::cmd("PGCACHE.QUERIES").query(con).unwrap();
    let line = listed
        .iter()
        .map(nested)
        .find(|m| redis::from_redis_value::<String>(m["statement"].clone()).unwrap() == sql)
        .expect("the statement is listed");
    redis::from_redis_value(line["misses_from"].clone()).unwrap()
}

#[test]
fn read_misses_go_out_from_the_event_loop_and_fill_the_cache() {
    let stack = loop_stack("1");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 1);
    // The table's first READ learns its schema on a worker.
    read(&mut con, "items", r#"{"id":1}"#).unwrap();
    let before = stats_figure(&mut con, "misses_on_loop");
    let mut pg = stack.pg.client();
    for id in [2, 3, 150, 999] {
        let got = read(&mut con, "items", &format!(r#"{{"id":{id}}}"#)).unwrap();
        assert_eq!(got.map(|g| json(&g)), item_row(&mut pg, id), "id {id}");
    }
    assert_eq!(stats_figure(&mut con, "misses_on_loop") - before, 4);
    // Filled: the next READ is a hit.
    let hits = stats_figure(&mut con, "hits");
    read(&mut con, "items", r#"{"id":150}"#).unwrap();
    assert_eq!(stats_figure(&mut con, "hits") - hits, 1);
}

#[test]
fn a_statement_with_large_results_is_read_by_the_workers_not_the_event_loop() {
    let stack = loop_stack("1");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 1);
    // Some 400 KiB of JSON per call: past what one read callback of the loop takes.
    let sql = "SELECT g, repeat(md5(g::text), 20) AS filler FROM generate_series(1, $1::integer) g";
    let first = query(&mut con, sql, &["600"]).unwrap();
    assert!(first.len() > 256 << 10, "{} bytes", first.len());
    let before = stats_figure(&mut con, "misses_on_loop");
    let got = json(&query(&mut con, sql, &["601"]).unwrap());
    assert_eq!(got, postgres_answer(&stack, sql, &["601"]));
    assert_eq!(
        stats_figure(&mut con, "misses_on_loop"),
        before,
        "read by a worker"
    );
    // A small one of the same connection still goes out from the loop.
    let small = "SELECT count(*) FROM items WHERE owner = $1 AND price > $2::numeric";
    query(&mut con, small, &["1", "1"]).unwrap();
    query(&mut con, small, &["1", "2"]).unwrap();
    assert_eq!(stats_figure(&mut con, "misses_on_loop"), before + 1);
}

#[test]
fn concurrent_read_misses_share_statements_and_a_bad_key_fails_only_its_own_read() {
    let stack = loop_stack("1");
    // The loop's session is opened after this: its statements are logged.
    stack.pg.log_app_statements();
    let mut con = stack.con();
    warm_up(&stack, &mut con, 1);
    read(&mut con, "items", r#"{"id":1}"#).unwrap(); // the schema, learned on a worker
    let before = stack.pg.logged_statements("unnest(");
    let expected: std::collections::HashMap<i32, Option<serde_json::Value>> = {
        let mut pg = stack.pg.client();
        (2..=260).map(|id| (id, item_row(&mut pg, id))).collect()
    };
    let port = stack.redis.port;
    // 16 clients at once: misses read in one turn of the event loop share one statement
    // (each client waits for its answer, so only misses of different clients can).
    std::thread::scope(|scope| {
        for t in 0..16 {
            let expected = &expected;
            scope.spawn(move || {
                let mut con = connect(port);
                for id in (2..=260).filter(|id| id % 16 == t) {
                    let got = read(&mut con, "items", &format!(r#"{{"id":{id}}}"#)).unwrap();
                    assert_eq!(got.map(|g| json(&g)), expected[&id], "id {id}");
                    // A key PostgreSQL refuses fails its own READ alone.
                    let bad = read(&mut con, "items", r#"{"id":"99999999999"}"#);
                    assert!(bad.is_err(), "{bad:?}");
                }
            });
        }
    });
    assert!(
        stack.pg.logged_statements("unnest(") > before,
        "some misses of different clients were read in one statement"
    );
}

#[test]
fn a_multiread_s_missed_keys_go_out_from_the_event_loop_in_one_statement() {
    let stack = loop_stack("1");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 1);
    read(&mut con, "items", r#"{"id":1}"#).unwrap(); // the schema, learned on a worker
    let ids: Vec<i64> = vec![3, 4, 5000, 3, 150, 77];
    let before = stats_figure(&mut con, "misses_on_loop");
    let rows = multiread(&mut con, "items", &id_array(ids.clone())).unwrap();
    assert_eq!(
        stats_figure(&mut con, "misses_on_loop") - before,
        1,
        "one job"
    );
    let mut pg = stack.pg.client();
    for (id, got) in ids.iter().zip(&rows) {
        assert_eq!(
            got.as_deref().map(json),
            item_row(&mut pg, *id as i32),
            "id {id}"
        );
    }
    // Filled: the same keys again are hits.
    let hits = stats_figure(&mut con, "hits");
    assert_eq!(multiread(&mut con, "items", &id_array(ids)).unwrap(), rows);
    assert!(stats_figure(&mut con, "hits") - hits >= 4);
}

#[test]
fn misses_do_not_queue_behind_a_request_postgresql_holds_on_a_loop_connection() {
    let stack = Stack::start_with(
        &format!(
            "{ITEMS_SQL} CREATE TABLE gate (id integer PRIMARY KEY); INSERT INTO gate VALUES (1), (2);"
        ),
        &[
            "loop_connections",
            "1",
            "request_timeout_ms",
            "60000",
            "statement_timeout_ms",
            "60000",
            "debug_commands",
            "yes",
        ],
    );
    let mut con = stack.con();
    warm_up(&stack, &mut con, 1);
    // Both tables' schemas learned (on a worker), then `gate` locked by the test.
    read(&mut con, "gate", r#"{"id":1}"#).unwrap();
    read(&mut con, "items", r#"{"id":1}"#).unwrap();
    let mut locker = stack.pg.client();
    locker
        .batch_execute("BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let held = spawn_read(stack.redis.port, "gate", r#"{"id":2}"#);
    // The loop's request waits for the lock, and has waited past what makes a connection
    // stuck (20 ms).
    let mut watcher = stack.pg.client();
    wait_for(
        "the loop's read to wait on the lock",
        Duration::from_secs(30),
        || {
            let n: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgcache-loop' \
                 AND wait_event_type = 'Lock' \
                 AND clock_timestamp() - query_start > interval '25 milliseconds'",
                    &[],
                )
                .unwrap()
                .get(0);
            (n == 1).then_some(())
        },
    );
    // Another miss is answered while the lock is still held: not queued behind it.
    let row = read(&mut con, "items", r#"{"id":7}"#).unwrap().unwrap();
    assert_eq!(json(&row)["id"], 7);
    locker.batch_execute("ROLLBACK").unwrap();
    let gate = held.join().unwrap().unwrap().unwrap();
    assert_eq!(json(&gate)["id"], 2);
}

#[test]
fn a_loop_connection_postgresql_went_silent_on_is_closed_though_no_other_miss_comes() {
    let pg = Pg::start();
    pg.execute(ITEMS_SQL);
    let proxy = SilentProxy::start(pg.port);
    let args = proxy.module_args(
        &pg,
        &[
            "loop_connections",
            "1",
            "statement_timeout_ms",
            "300",
            "request_timeout_ms",
            "60000",
            "listen",
            "no",
        ],
    );
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    // Misses until one went out from the loop (the first learns the table on a worker and
    // has the loop's connection opened).
    let mut id = 0;
    wait_for(
        "a miss from the event loop",
        Duration::from_secs(30),
        || {
            id += 1;
            assert_eq!(
                json(
                    &read(&mut con, "items", &format!(r#"{{"id":{id}}}"#))
                        .unwrap()
                        .unwrap()
                )["id"],
                id
            );
            (stats_figure(&mut con, "misses_on_loop") > 0).then_some(())
        },
    );
    assert!(proxy.silence(Silence::All) >= 1);

    // The one miss goes out on the silent connection, and no miss comes after it: the
    // connection is closed all the same (statement_timeout + 2 s), and the miss answered by
    // a worker on a new connection, not failed at its own 60 s timeout.
    let row = read(&mut con, "items", r#"{"id":150}"#).unwrap().unwrap();
    assert_eq!(json(&row)["id"], 150);
    assert!(stats_figure(&mut con, "pg_silent_connections") >= 1);
}

#[test]
fn a_loop_connection_opened_across_a_new_statement_timeout_is_retired() {
    let pg = Pg::start();
    pg.execute(ITEMS_SQL);
    let proxy = SilentProxy::start(pg.port);
    let args = proxy.module_args(
        &pg,
        &[
            "loop_connections",
            "0",
            "statement_timeout_ms",
            "60000",
            "request_timeout_ms",
            "20000",
            "listen",
            "no",
        ],
    );
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    read(&mut con, "items", r#"{"id":1}"#).unwrap().unwrap();
    // The loop's connection starts opening with statement_timeout 60 s, and the setting
    // changes while it opens.
    proxy.delay_new_connections(Duration::from_millis(1500));
    config_set(&mut con, "pgcache.loop_connections", "1").unwrap();
    read(&mut con, "items", r#"{"id":2}"#).unwrap().unwrap();
    config_set(&mut con, "pgcache.statement_timeout_ms", "400").unwrap();
    wait_for("the loop's connection", Duration::from_secs(30), || {
        (stats_figure(&mut con, "loop_connections_opened") == 1).then_some(())
    });
    // Its session still has 60 s: it must not take a miss (the miss goes to a worker, whose
    // session has the new 400 ms: held on a lock, it is cancelled then).
    let mut locker = pg.client();
    locker
        .batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let e = read(&mut con, "items", r#"{"id":3}"#)
        .unwrap_err()
        .to_string();
    assert_eq!(stats_figure(&mut con, "misses_on_loop"), 0);
    assert!(e.contains("statement_timeout_ms"), "{e}");
    locker.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        json(&read(&mut con, "items", r#"{"id":3}"#).unwrap().unwrap())["id"],
        3
    );
}

#[test]
fn a_panic_while_the_event_loop_sends_misses_leaves_them_to_the_workers() {
    let stack = loop_stack("1");
    let mut con = stack.con();
    warm_up(&stack, &mut con, 1);
    read(&mut con, "items", r#"{"id":1}"#).unwrap();
    let to_workers = stats_figure(&mut con, "misses_loop_to_workers");
    let mut pg = stack.pg.client();
    debug(&mut con, "PANIC", "SEND");
    // The miss was queued for the loop when its send panicked: the workers answer it (a
    // dropped job would leave its client waiting for the 30 s request timeout, then an
    // error).
    let got = read(&mut con, "items", r#"{"id":2}"#).unwrap();
    assert_eq!(got.map(|g| json(&g)), item_row(&mut pg, 2));
    assert_eq!(
        stats_figure(&mut con, "misses_loop_to_workers") - to_workers,
        1
    );
    assert!(
        stack
            .redis
            .log()
            .contains("panic while sending misses from the event loop")
    );
    // The loop goes on sending the next misses itself.
    let on_loop = stats_figure(&mut con, "misses_on_loop");
    let got = read(&mut con, "items", r#"{"id":3}"#).unwrap();
    assert_eq!(got.map(|g| json(&g)), item_row(&mut pg, 3));
    assert_eq!(stats_figure(&mut con, "misses_on_loop") - on_loop, 1);
    assert_eq!(
        stats_figure(&mut con, "misses_loop_to_workers") - to_workers,
        1
    );
}
