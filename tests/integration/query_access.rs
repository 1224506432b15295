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
