//! What the change feed must follow for READ, MULTIREAD and QUERY to stay exact beyond row
//! changes of plain tables: TRUNCATE, partitioned tables (changes reported under a
//! partition's name, rows moving between partitions), and DDL that changes what a statement
//! reads (a partition created or attached later, a view replaced). Both invalidation modes.
use crate::query::{postgres_answer, query, query_until_cached, watched};
use pgcache_testkit::*;
use std::time::Duration;

/// Queries `sql` until its answer is PostgreSQL's (the change reached the cache), failing
/// after a deadline.
fn until_postgres_answers(stack: &Stack, con: &mut redis::Connection, sql: &str, params: &[&str]) {
    let expected = postgres_answer(stack, sql, params);
    wait_for(
        &format!("{sql} to answer as PostgreSQL does"),
        Duration::from_secs(10),
        || (json(&query(con, sql, params).unwrap()) == expected).then_some(()),
    );
}

#[test]
fn truncate_drops_every_result_that_read_the_table() {
    let stack = watched();
    let mut con = stack.con();
    let statements = [
        (
            "SELECT id, total FROM orders WHERE user_id = $1 ORDER BY id",
            vec!["2"],
        ),
        (
            "SELECT u.name, count(*) AS n FROM orders o JOIN users u ON u.id = o.user_id \
             WHERE u.id = $1 GROUP BY u.name",
            vec!["2"],
        ),
        ("SELECT count(*) AS n, sum(total) AS s FROM orders", vec![]),
    ];
    for (sql, params) in &statements {
        query_until_cached(&mut con, sql, params);
    }
    let users = "SELECT name FROM users WHERE id = $1";
    query_until_cached(&mut con, users, &["2"]);
    stack.pg.execute("TRUNCATE orders");
    for (sql, params) in &statements {
        until_postgres_answers(&stack, &mut con, sql, params);
    }
    // The other table's results stay.
    let hits = stats_figure(&mut con, "query_hits");
    query(&mut con, users, &["2"]).unwrap();
    assert_eq!(stats_figure(&mut con, "query_hits"), hits + 1);
}
