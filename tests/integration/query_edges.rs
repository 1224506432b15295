//! Row precision at its edges (issue 50): a change's new values weighed against a statement's
//! WHERE exactly as PostgreSQL weighs them (casts that round, composite NULLs, oid's unsigned
//! order, the text the feed spells values in under any session settings), and a page's
//! members exactly the rows of the answer it stores, ties included. Each test caches a
//! result, commits a write that changes PostgreSQL's answer, and reads the result after the
//! write's position (replication mode; in notify mode, results are dropped per table and the
//! read waits for the write to be applied).
use crate::query::{commit_and_position, postgres_answer, query, query_after, query_until_cached};
use pgcache_testkit::*;
use std::time::Duration;

/// PGCACHE.QUERY's answer to `sql` once the write committed at `lsn` is applied: AFTER it
/// in replication mode; in notify mode, which has no positions, once the answer is
/// PostgreSQL's (`expected`), failing after a deadline.
fn answer_after(
    con: &mut redis::Connection,
    sql: &str,
    params: &[&str],
    lsn: &str,
    expected: &serde_json::Value,
) -> serde_json::Value {
    if invalidation_source() == "replication" {
        json(&query_after(con, sql, params, lsn).unwrap())
    } else {
        wait_for(
            &format!("{sql} {params:?} to answer {expected}"),
            Duration::from_secs(10),
            || {
                let answer = json(&query(con, sql, params).unwrap());
                (answer == *expected).then_some(answer)
            },
        )
    }
}

/// Caches `sql`'s result, commits `write`, and asserts the result read after it is
/// PostgreSQL's answer; returns it.
fn stays_exact_through(
    stack: &Stack,
    con: &mut redis::Connection,
    sql: &str,
    params: &[&str],
    write: &str,
) -> serde_json::Value {
    // A read AFTER a position not applied yet waits for it, and is answered from the cache.
    config_set(con, "pgcache.after_wait_ms", "1000").unwrap();
    let before = json(&query_until_cached(con, sql, params));
    let lsn = commit_and_position(stack, write);
    let expected = postgres_answer(stack, sql, params);
    assert_ne!(
        before, expected,
        "the write `{write}` must change PostgreSQL's answer, or the test proves nothing"
    );
    let answer = answer_after(con, sql, params, &lsn, &expected);
    assert_eq!(answer, expected, "{sql} {params:?} after `{write}`");
    answer
}

#[test]
fn a_cast_that_rounds_is_weighed_as_postgresql_rounds() {
    let stack = Stack::start(&format!(
        "CREATE TABLE pay (id integer PRIMARY KEY, amount numeric NOT NULL, f double precision);
         INSERT INTO pay VALUES (1, 2.0, 2), (2, 3.4, 3.4);
         {TRIGGER_SQL} SELECT pgcache_watch('pay');"
    ));
    let mut con = stack.con();
    // numeric -> integer rounds half away from zero: 1.50 is 2.
    let by_amount = "SELECT id FROM pay WHERE amount::integer = $1 ORDER BY id";
    stays_exact_through(
        &stack,
        &mut con,
        by_amount,
        &["2"],
        "INSERT INTO pay VALUES (10, 1.50, 0)",
    );
    stays_exact_through(
        &stack,
        &mut con,
        by_amount,
        &["-3"],
        "INSERT INTO pay VALUES (11, -2.5, 0)",
    );
    // A numeric parameter cast to an integer type rounds too.
    let by_param = "SELECT id FROM pay WHERE amount = $1::numeric::smallint ORDER BY id";
    stays_exact_through(
        &stack,
        &mut con,
        by_param,
        &["6.5"],
        "INSERT INTO pay VALUES (12, 7, 0)",
    );
    // A cast whose value pgcache does not compute (float -> integer rounds half to even)
    // leaves the row free to enter.
    let by_float = "SELECT id FROM pay WHERE f::integer = $1 ORDER BY id";
    stays_exact_through(
        &stack,
        &mut con,
        by_float,
        &["2"],
        "INSERT INTO pay VALUES (13, 0, 2.5)",
    );
}

#[test]
fn a_composite_whose_fields_are_all_null_is_null() {
    let stack = Stack::start(&format!(
        "CREATE TYPE pair AS (a integer, b integer);
         CREATE DOMAIN pair_d AS pair;
         CREATE TABLE comp (id integer PRIMARY KEY, p pair, q pair_d);
         INSERT INTO comp VALUES (1, NULL, NULL), (2, ROW(1, 2), ROW(1, 2));
         {TRIGGER_SQL} SELECT pgcache_watch('comp');"
    ));
    let mut con = stack.con();
    stays_exact_through(
        &stack,
        &mut con,
        "SELECT id FROM comp WHERE p IS NULL AND id > $1 ORDER BY id",
        &["0"],
        "INSERT INTO comp VALUES (3, ROW(NULL, NULL), NULL)",
    );
    stays_exact_through(
        &stack,
        &mut con,
        "SELECT id FROM comp WHERE q IS NULL AND id > $1 ORDER BY id",
        &["0"],
        "INSERT INTO comp VALUES (4, ROW(1, 1), ROW(NULL, NULL))",
    );
}

#[test]
fn oids_compare_unsigned() {
    let stack = Stack::start(&format!(
        "CREATE TABLE objs (id integer PRIMARY KEY, o oid NOT NULL);
         INSERT INTO objs VALUES (1, 4294967295);
         {TRIGGER_SQL} SELECT pgcache_watch('objs');"
    ));
    let mut con = stack.con();
    // -1 reads as the oid 4294967295, above every other.
    stays_exact_through(
        &stack,
        &mut con,
        "SELECT id FROM objs WHERE o < -1 AND id > $1 ORDER BY id",
        &["0"],
        "INSERT INTO objs VALUES (2, 5)",
    );
}

#[test]
fn the_feed_spells_values_exactly_whatever_the_server_sets() {
    // Every session of the database (the feed's too, unless it sets its own) rounds floats
    // to 15 digits and spells dates day first.
    let stack = Stack::start(&format!(
        "ALTER DATABASE app SET extra_float_digits = 0;
         ALTER DATABASE app SET DateStyle = 'SQL, DMY';
         CREATE TABLE m (id integer PRIMARY KEY, d double precision NOT NULL, day date NOT NULL);
         INSERT INTO m VALUES (1, 0.5, '2024-01-02');
         {TRIGGER_SQL} SELECT pgcache_watch('m');"
    ));
    let mut con = stack.con();
    // 0.1 + 0.2 is 0.30000000000000004: above 0.3, though it prints as 0.3 with 15 digits.
    stays_exact_through(
        &stack,
        &mut con,
        "SELECT id FROM m WHERE d > $1 ORDER BY id",
        &["0.3"],
        "INSERT INTO m VALUES (2, 0.1::float8 + 0.2::float8, '2024-01-02')",
    );
    // 2024-03-02 printed as 02/03/2024 must not be read as February the 3rd.
    stays_exact_through(
        &stack,
        &mut con,
        "SELECT id FROM m WHERE day > $1 ORDER BY id",
        &["2024-02-15"],
        "INSERT INTO m VALUES (3, 0, '2024-03-02')",
    );
    // A row's JSON holds the float itself, not its 15-digit rounding.
    let row = json(&query(&mut con, "SELECT d FROM m WHERE id = $1", &["2"]).unwrap());
    assert_eq!(row[0]["d"].to_string(), "0.30000000000000004");
}

/// The ids of a JSON array of rows.
fn ids(rows: &serde_json::Value) -> Vec<i64> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn a_page_with_ties_never_serves_a_deleted_row() {
    let stack = Stack::start(&format!(
        "CREATE TABLE t (id integer PRIMARY KEY, score integer NOT NULL, pad text NOT NULL);
         INSERT INTO t SELECT g, g % 4, repeat('x', 300 + g % 7) FROM generate_series(1, 120000) g;
         ANALYZE t;
         {TRIGGER_SQL} SELECT pgcache_watch('t');"
    ));
    let mut con = stack.con();
    let page = "SELECT id, score, pad FROM t ORDER BY score DESC LIMIT $1";
    config_set(&mut con, "pgcache.after_wait_ms", "1000").unwrap();
    for round in 0..10 {
        let cached = json(&query_until_cached(&mut con, page, &["600"]));
        // Two rows of the page PostgreSQL could have left out (ties at its last score).
        let page_ids = ids(&cached);
        let gone = [page_ids[page_ids.len() - 1], page_ids[page_ids.len() - 2]];
        let lsn = commit_and_position(
            &stack,
            &format!("DELETE FROM t WHERE id IN ({}, {})", gone[0], gone[1]),
        );
        let expected = postgres_answer(&stack, page, &["600"]);
        let holds_gone = |answer: &serde_json::Value| {
            let answer_ids = ids(answer);
            answer_ids.contains(&gone[0]) || answer_ids.contains(&gone[1])
        };
        // Another choice among ties is as good as PostgreSQL's: in notify mode (no
        // positions) the read waits for the deleted rows to leave, not for that answer.
        let answer = if invalidation_source() == "replication" {
            answer_after(&mut con, page, &["600"], &lsn, &expected)
        } else {
            wait_for("the deleted rows to leave", Duration::from_secs(10), || {
                let answer = json(&query(&mut con, page, &["600"]).unwrap());
                (!holds_gone(&answer)).then_some(answer)
            })
        };
        assert!(
            !holds_gone(&answer),
            "round {round}: the page still holds deleted rows {gone:?}"
        );
        // Any choice among ties is PostgreSQL's to make; the scores are not.
        let scores = |rows: &serde_json::Value| -> Vec<i64> {
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| r["score"].as_i64().unwrap())
                .collect()
        };
        assert_eq!(scores(&answer), scores(&expected), "round {round}");
    }
}

#[test]
fn a_join_trusts_no_foreign_key_a_bulk_load_did_not_check() {
    let stack = Stack::start(&format!(
        "CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL);
         CREATE TABLE orders (id integer PRIMARY KEY, user_id integer NOT NULL REFERENCES users,
                              status text NOT NULL);
         INSERT INTO users VALUES (1, 'ann');
         INSERT INTO orders VALUES (1, 1, 'new');
         {TRIGGER_SQL} SELECT pgcache_watch('users'), pgcache_watch('orders');"
    ));
    let mut con = stack.con();
    let joined = "SELECT o.id, u.name FROM orders o JOIN users u ON u.id = o.user_id \
                  WHERE o.status = $1 ORDER BY o.id";
    // An order of a user who does not exist yet, loaded without the foreign key's check.
    stack
        .pg
        .superuser_of("app")
        .batch_execute(
            "SET session_replication_role = replica;
             INSERT INTO orders VALUES (2, 99, 'new');",
        )
        .unwrap();
    // users enters this statement's results only through the foreign key.
    let explained: std::collections::HashMap<String, redis::Value> = redis::cmd("PGCACHE.EXPLAIN")
        .arg(joined)
        .query(&mut con)
        .unwrap();
    let members_only: Vec<String> =
        redis::from_redis_value(explained["members_only"].clone()).unwrap();
    if invalidation_source() == "replication" {
        assert_eq!(members_only, ["u"]);
    }
    // The user arrives: the order joins it.
    stays_exact_through(
        &stack,
        &mut con,
        joined,
        &["new"],
        "INSERT INTO users VALUES (99, 'bob')",
    );
}

#[test]
fn a_char_array_parameter_keeps_its_values_whole() {
    let stack = Stack::start(&format!(
        "CREATE TABLE codes (id integer PRIMARY KEY, ch char(3) NOT NULL);
         INSERT INTO codes VALUES (1, 'a'), (2, 'ab'), (3, 'abc');
         {TRIGGER_SQL} SELECT pgcache_watch('codes');"
    ));
    let mut con = stack.con();
    // `{"ab"}` as character[] would be char(1)[], `{a}`: the row of 'a', not of 'ab'.
    for (sql, param) in [
        (
            "SELECT id FROM codes WHERE ch = ANY($1) ORDER BY id",
            r#"{"ab"}"#,
        ),
        (
            "SELECT id FROM codes WHERE ch <> ALL($1) ORDER BY id",
            r#"{"ab","abc"}"#,
        ),
    ] {
        assert_eq!(
            json(&query(&mut con, sql, &[param]).unwrap()),
            postgres_answer(&stack, sql, &[param]),
            "{sql} {param}"
        );
    }
    stays_exact_through(
        &stack,
        &mut con,
        "SELECT id FROM codes WHERE ch = ANY($1) ORDER BY id",
        &[r#"{"ab"}"#],
        "INSERT INTO codes VALUES (4, 'ab')",
    );
}

/// Found by the differential fuzzer (seed 7024). The members pgcache reads beside a
/// row-precise result are its own reading: a subquery's rows read whole, where the
/// statement's plan looks up only the rows its outer side names, may meet a value the
/// subquery's cast refuses (`'NaN'::numeric::integer`). PostgreSQL answers the statement;
/// so must pgcache.
#[test]
fn a_value_only_the_members_read_would_refuse_does_not_fail_the_statement() {
    let stack = Stack::start(&format!(
        "CREATE TABLE box (id integer PRIMARY KEY);
         CREATE TABLE item (id integer PRIMARY KEY, amount numeric);
         INSERT INTO box VALUES (2);
         INSERT INTO item SELECT n, n FROM generate_series(2, 5000) AS n;
         INSERT INTO item VALUES (1, 'NaN');
         ANALYZE box; ANALYZE item;
         {TRIGGER_SQL} SELECT pgcache_watch('box'); SELECT pgcache_watch('item');"
    ));
    let mut con = stack.con();
    let sql = "SELECT b.id FROM box b \
               WHERE b.id IN (SELECT i.id FROM item i WHERE i.amount::integer = $1)";
    assert_eq!(
        postgres_answer(&stack, sql, &["2"]),
        serde_json::json!([{"id": 2}])
    );
    for _ in 0..2 {
        assert_eq!(
            query(&mut con, sql, &["2"]).map(|a| json(&a)),
            Ok(serde_json::json!([{"id": 2}])),
            "{sql}"
        );
    }
}

/// Found by the differential fuzzer (seed 9003). PostgreSQL evaluates a WHERE's conditions
/// in the order its planner costs them, and the cost of `bi3 = ANY($1)` depends on whether
/// the planner sees the array: bound as an expression it cannot see into, or planned
/// generically after a prepared statement's fifth run, it is evaluated after the cast, and
/// the cast refuses a row the application's own read never casts.
#[test]
fn parameters_are_planned_as_the_values_an_application_sends() {
    let stack = Stack::start(&format!(
        "CREATE TABLE reading (id integer PRIMARY KEY, num numeric, batch bigint);
         INSERT INTO reading VALUES (1, 'NaN', 5), (2, 0.5, 1), (3, 2, 1), (4, 7, 2);
         {TRIGGER_SQL} SELECT pgcache_watch('reading');"
    ));
    let mut con = stack.con();
    let sql = "SELECT id FROM reading WHERE batch = ANY($1) AND num::integer < $2 ORDER BY id";
    // Eight misses: past the fifth run of a prepared statement, where PostgreSQL may plan
    // it generically.
    for most in 1..=8 {
        let most = most.to_string();
        let params = ["{1,2}", most.as_str()];
        let expected = postgres_answer(&stack, sql, &params);
        assert_eq!(
            query(&mut con, sql, &params).map(|a| json(&a)),
            Ok(expected),
            "{sql} {params:?}"
        );
    }
}
