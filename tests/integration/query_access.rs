//! Who may read what through QUERY: a Redis user reads only results over tables its key
//! permissions cover, checked before PostgreSQL runs anything of the statement (a refused
//! user learns nothing from an answer, an error or how long either took); every permitted
//! caller gets the answer, however many miss it at once; the `tables` allowlist holds for
//! QUERY as for READ, and what changed while a table was outside it is never served.
use crate::query::{postgres_answer, query, query_until_cached, watched};
use pgcache_testkit::*;
use std::sync::{Arc, Barrier};
use std::time::Duration;

#[test]
fn a_user_who_may_not_read_a_table_makes_postgresql_run_nothing() {
    let stack = watched();
    stack
        .pg
        .execute("CREATE VIEW order_totals AS SELECT id, total FROM orders");
    stack.pg.log_app_statements();
    let mut admin = stack.con();
    add_acl_user(&mut admin, "users_only", &["~pg_cache:users:*", "+@all"]);
    let mut con = connect_as(stack.redis.port, "users_only", "pw");
    // The issue's probe: its answer's timing would tell whether an order's total passes $1.
    let probe = "SELECT count(*) FROM generate_series(1, CASE WHEN \
                 (SELECT total FROM orders WHERE id = 1) > $1 THEN 4000000 ELSE 1 END)";
    for (sql, params) in [
        (probe, &["0"][..]),
        (
            "SELECT count(*) FROM generate_series(1, CASE WHEN \
             (SELECT total FROM public.order_totals WHERE id = 1) > $1 THEN 4000000 ELSE 1 END)",
            &["0"],
        ),
        // A statement the catalog would refuse: the refusal is NOPERM, not what is wrong.
        ("SELECT no_such_column FROM orders WHERE id = $1", &["1"]),
        (
            "SELECT u.name FROM users u JOIN orders o ON o.user_id = u.id",
            &[],
        ),
    ] {
        let e = query(&mut con, sql, params).unwrap_err().to_string();
        assert!(
            e.contains("no permissions") && e.contains("pg_cache:orders:"),
            "{sql}: {e}"
        );
    }
    assert_eq!(
        stack.pg.logged_statements("generate_series"),
        0,
        "PostgreSQL saw none of the probes"
    );
    assert_eq!(stack.pg.logged_statements("no_such_column"), 0);
    // What it may read is answered.
    let sql = "SELECT name FROM users WHERE id = $1";
    assert_eq!(
        query(&mut con, sql, &["3"]).unwrap(),
        r#"[{"name":"user3"}]"#
    );
    // A user allowed everything learns the probe as before.
    assert_eq!(
        query(&mut admin, probe, &["1000000"]).unwrap(),
        r#"[{"count":1}]"#
    );
}

#[test]
fn every_permitted_caller_missing_one_result_at_once_gets_it() {
    let stack = Stack::start_with(&format!("{USERS_SQL} {TRIGGER_SQL}"), &["workers", "1"]);
    stack.pg.execute("SELECT pgcache_watch('users')");
    let mut admin = stack.con();
    add_acl_user(&mut admin, "users_only", &["~pg_cache:users:*", "+@all"]);
    let sql = "SELECT name, email FROM users WHERE id = $1";
    let callers = 8;
    let rounds = 40usize;
    let barrier = Arc::new(Barrier::new(callers));
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let barrier = barrier.clone();
            let mut con = connect_as(stack.redis.port, "users_only", "pw");
            std::thread::spawn(move || {
                for id in 1..=rounds {
                    barrier.wait();
                    let answer = query(&mut con, sql, &[&id.to_string()])
                        .unwrap_or_else(|e| panic!("id {id}: {e}"));
                    assert_eq!(
                        answer,
                        format!(r#"[{{"name":"user{id}","email":"user{id}@example.com"}}]"#)
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(
        stats_figure(&mut admin, "coalesced") > 0,
        "callers waited for a fill in flight"
    );
}

#[test]
fn the_tables_allowlist_holds_for_query_and_nothing_changed_outside_it_is_served() {
    let stack = watched();
    let mut con = stack.con();
    let by_user = "SELECT id, total FROM orders WHERE user_id = $1 ORDER BY id";
    // Order 2 is user 3's.
    let before = query_until_cached(&mut con, by_user, &["3"]);
    let row = read_until_cached(&mut con, "orders", r#"{"id":2}"#);
    config_set(&mut con, "pgcache.tables", "users").unwrap();
    // Learned before the change, or new, in any spelling: refused at once, like READ.
    for sql in [
        by_user,
        "select ID, TOTAL from ORDERS where USER_ID = ? order by ID",
        "SELECT id FROM public.orders WHERE id = $1",
        "SELECT o.id FROM \"orders\" o JOIN users u ON u.id = o.user_id WHERE u.id = $1",
    ] {
        let e = query(&mut con, sql, &["3"]).unwrap_err().to_string();
        assert!(e.contains("allowlist"), "{sql}: {e}");
    }
    let e = read(&mut con, "orders", r#"{"id":2}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("allowlist"), "{e}");
    let explained = nested(
        &redis::cmd("PGCACHE.EXPLAIN")
            .arg("SELECT id FROM orders WHERE id = $1")
            .query(&mut con)
            .unwrap(),
    );
    assert_eq!(figure(&explained, "cacheable"), 0);
    let reason: String = redis::from_redis_value(explained["reason"].clone()).unwrap();
    assert!(reason.contains("allowlist"), "{reason}");
    let users = "SELECT name FROM users WHERE id = $1";
    assert_eq!(
        query(&mut con, users, &["2"]).unwrap(),
        r#"[{"name":"user2"}]"#
    );
    // Changed while outside the list; allowed again, it is served as it is now.
    stack
        .pg
        .execute("UPDATE orders SET total = 777 WHERE id = 2");
    let applied = stats_figure(&mut con, "invalidations_by_postgres");
    wait_for("the change applied", Duration::from_secs(10), || {
        (stats_figure(&mut con, "invalidations_by_postgres") > applied).then_some(())
    });
    config_set(&mut con, "pgcache.tables", "").unwrap();
    let after = query(&mut con, by_user, &["3"]).unwrap();
    assert_ne!(after, before);
    assert_eq!(json(&after), postgres_answer(&stack, by_user, &["3"]));
    let now = read(&mut con, "orders", r#"{"id":2}"#).unwrap().unwrap();
    assert_ne!(now, row);
    assert!(now.contains("777"), "{now}");
}

/// pgcache connected as a least-privilege role (docs/security.md's), to which `docs`' row-level
/// security policy applies; the policy reads another table.
fn behind_a_policy() -> Stack {
    let pg = Pg::start();
    pg.execute(&format!(
        "CREATE TABLE docs (id integer PRIMARY KEY, team text NOT NULL, body text NOT NULL);
         CREATE TABLE team_visible (team text PRIMARY KEY);
         INSERT INTO docs VALUES (1, 'red', 'a'), (2, 'blue', 'b'), (3, 'red', 'c');
         INSERT INTO team_visible VALUES ('red');
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
         CREATE POLICY visible ON docs USING (team IN (SELECT team FROM team_visible));
         CREATE VIEW teams AS SELECT team FROM team_visible;
         -- A policy for another role: it never applies to pgcache's, and is not judged.
         CREATE POLICY theirs ON docs TO app USING (body = current_user);
         {TRIGGER_SQL}
         SELECT pgcache_watch('docs'), pgcache_watch('team_visible');"
    ));
    pg.superuser_of("app")
        .batch_execute(
            "CREATE ROLE reader LOGIN REPLICATION PASSWORD 'reader-pw';
             GRANT SELECT ON docs, team_visible, teams TO reader;",
        )
        .unwrap();
    let mut args = pg.module_args();
    for (name, value) in [("pg_user", "reader"), ("pg_password", "reader-pw")] {
        let at = args.iter().position(|a| a == name).unwrap();
        args[at + 1] = value.into();
    }
    let redis = Redis::start(&args);
    Stack { redis, pg }
}

#[test]
fn rows_behind_a_policy_that_reads_another_table_follow_that_table() {
    let stack = behind_a_policy();
    let mut con = stack.con();
    let all = "SELECT id, body FROM docs ORDER BY id";
    assert_eq!(
        query_until_cached(&mut con, all, &[]),
        r#"[{"id":1,"body":"a"},{"id":3,"body":"c"}]"#
    );
    let by_team = "SELECT count(*) AS n FROM docs WHERE team = $1";
    assert_eq!(
        query_until_cached(&mut con, by_team, &["blue"]),
        r#"[{"n":0}]"#
    );
    // A user who may read docs reads them, whatever tables their policy reads.
    add_acl_user(&mut con, "docs_only", &["~pg_cache:docs:*", "+@all"]);
    let mut docs_only = connect_as(stack.redis.port, "docs_only", "pw");
    assert_eq!(
        query(&mut docs_only, by_team, &["red"]).unwrap(),
        r#"[{"n":2}]"#
    );
    // The policy's table read as data (through a view) needs its own permission.
    let e = query(
        &mut docs_only,
        "SELECT d.id, t.team FROM docs d JOIN teams t ON t.team = d.team WHERE d.id = $1",
        &["1"],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("pg_cache:team_visible:"), "{e}");
    read_until_cached(&mut con, "docs", r#"{"id":1}"#);
    // pgcache's role cannot see row 2: remembered as absent.
    wait_for("the absence cached", Duration::from_secs(10), || {
        read(&mut con, "docs", r#"{"id":2}"#).unwrap();
        exists(&mut con, r#"pg_cache:docs:{"id":2}"#).then_some(())
    });
    assert_eq!(read(&mut con, "docs", r#"{"id":2}"#).unwrap(), None);

    // The policy's table changes: what pgcache's role sees of docs changes with it.
    stack.pg.execute("INSERT INTO team_visible VALUES ('blue')");
    wait_for("row 2 to be seen", Duration::from_secs(10), || {
        (read(&mut con, "docs", r#"{"id":2}"#).unwrap().as_deref()
            == Some(r#"{"id":2,"team":"blue","body":"b"}"#))
        .then_some(())
    });
    wait_for("the results to follow", Duration::from_secs(10), || {
        (query(&mut con, all, &[]).unwrap()
            == r#"[{"id":1,"body":"a"},{"id":2,"body":"b"},{"id":3,"body":"c"}]"#
            && query(&mut con, by_team, &["blue"]).unwrap() == r#"[{"n":1}]"#)
            .then_some(())
    });
    read_until_cached(&mut con, "docs", r#"{"id":1}"#);
    stack
        .pg
        .execute("DELETE FROM team_visible WHERE team = 'red'");
    wait_for("row 1 to be hidden", Duration::from_secs(10), || {
        read(&mut con, "docs", r#"{"id":1}"#)
            .unwrap()
            .is_none()
            .then_some(())
    });
    wait_for("the result to follow", Duration::from_secs(10), || {
        (query(&mut con, all, &[]).unwrap() == r#"[{"id":2,"body":"b"}]"#).then_some(())
    });
}

/// A constant in a statement may be someone's secret: QUERIES, the slowlog and the
/// `query_invalidated` events show statements as `pg_stat_statements` does, constants as
/// `$n`.
#[test]
fn statements_are_shown_to_others_without_their_constants() {
    let stack = watched();
    let mut con = stack.con();
    config_set(&mut con, "pgcache.slowlog_threshold_us", "0").unwrap();
    let sql = "SELECT name FROM users WHERE email = 'user7@example.com' AND id = $1";
    query_until_cached(&mut con, sql, &["7"]);
    let shown = "SELECT name FROM users WHERE email = $2 AND id = $1";
    let listed: Vec<redis::Value> = redis::cmd("PGCACHE.QUERIES").query(&mut con).unwrap();
    let statements: Vec<String> = listed
        .iter()
        .map(|line| redis::from_redis_value(nested(line)["statement"].clone()).unwrap())
        .collect();
    assert_eq!(statements, [shown]);
    let log: String = redis::cmd("PGCACHE.SLOWLOG")
        .arg("GET")
        .arg(100)
        .query::<redis::Value>(&mut con)
        .map(|v| format!("{v:?}"))
        .unwrap();
    assert!(!log.contains("user7@example.com"), "{log}");
    assert!(log.contains("email = $2"), "{log}");
    let mut events = stack.redis.connection();
    let mut pubsub = subscribe(&mut events, "pg_cache_events");
    stack.pg.execute("UPDATE users SET name = 'x' WHERE id = 7");
    let event = wait_for("a query_invalidated event", Duration::from_secs(10), || {
        let event = next_event(&mut pubsub);
        (event["type"] == "query_invalidated").then_some(event)
    });
    assert_eq!(event["key"], shown);
}
