//! The SQL pgcache puts around an application's statement (the run, the batch of parameter
//! sets, the members' read) answers what the statement answers, whatever its columns and
//! aliases are called (issue #70 item 1: a column named `q` was taken for the wrapper's
//! subquery alias). Every answer is checked against the statement run as written
//! (`assert_answers_as_postgres`), never against SQL that wraps it.
use crate::query::{assert_answers_as_postgres, query, query_until_cached};
use pgcache_testkit::*;
use std::time::Duration;

/// Tables whose columns are called as the names pgcache's own SQL uses.
const NAMED_SQL: &str = "
    CREATE TABLE t (id integer PRIMARY KEY, label text NOT NULL);
    INSERT INTO t SELECT g, 'label' || g FROM generate_series(1, 40) g;
    CREATE TABLE named (id integer PRIMARY KEY, q text, json text, n integer, m integer,
                        s text, pgcache_results text, pgcache_params integer);
    INSERT INTO named SELECT g, 'q' || g % 3, '{\"j\":' || g || '}', g * 10, g % 4, 's' || g,
                             'r' || g, g FROM generate_series(1, 40) g;
";

fn stack(extra: &[&str]) -> Stack {
    let stack = Stack::start_with(&format!("{NAMED_SQL} {TRIGGER_SQL}"), extra);
    stack
        .pg
        .execute("SELECT pgcache_watch('t'); SELECT pgcache_watch('named')");
    stack
}

/// Statements whose columns or aliases are the names of pgcache's wrapping SQL, each with a
/// parameter, and whether a change to the row with that id changes it.
const STATEMENTS: &[&str] = &[
    "SELECT id, ROW(id, label) AS q FROM t WHERE id = $1",
    "SELECT id, label AS q FROM t WHERE id = $1",
    "SELECT * FROM named WHERE id = $1",
    "SELECT q.* FROM named AS q WHERE q.id = $1",
    "SELECT id, label AS q FROM t WHERE id <= $1 ORDER BY id DESC LIMIT 3",
    "SELECT t.id, named.q, named.m, named.json FROM t JOIN named ON named.id = t.id WHERE t.id = $1",
    "SELECT q, count(*) AS n, min(id) AS m FROM named WHERE id <= $1 GROUP BY q ORDER BY q",
    "SELECT id AS label, label AS id FROM t WHERE id <= $1 ORDER BY id LIMIT 3",
    "SELECT id, label AS sortkey FROM t WHERE id <= $1 ORDER BY sortkey DESC LIMIT 3",
    "SELECT id, m, s FROM named WHERE id <= $1 ORDER BY 2 DESC, 3 LIMIT 4",
    "SELECT id, pgcache_results, pgcache_params FROM named WHERE pgcache_params = $1",
];

/// Each statement's miss, its hit, and its answer after a change to its rows: PostgreSQL's.
fn every_statement_answers_as_written(stack: &Stack) {
    let mut con = stack.con();
    for sql in STATEMENTS {
        let reply = query(&mut con, sql, &["7"]).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_answers_as_postgres(stack, sql, &["7"], &reply);
        let cached = query_until_cached(&mut con, sql, &["7"]);
        assert_answers_as_postgres(stack, sql, &["7"], &cached);
    }
    stack.pg.execute(
        "UPDATE t SET label = 'changed' WHERE id = 7; UPDATE named SET q = 'z', m = 9 WHERE id = 6",
    );
    for sql in STATEMENTS {
        wait_for(
            &format!("{sql} to answer the change"),
            Duration::from_secs(10),
            || {
                let reply = query(&mut con, sql, &["7"]).unwrap();
                let want = crate::query::postgres_answer(stack, sql, &["7"]);
                (json(&reply) == want).then_some(())
            },
        );
        let reply = query(&mut con, sql, &["7"]).unwrap();
        assert_answers_as_postgres(stack, sql, &["7"], &reply);
    }
}

#[test]
fn a_statement_answers_as_written_whatever_its_columns_are_called() {
    every_statement_answers_as_written(&stack(&[]));
}

#[test]
fn a_statement_answers_as_written_whatever_its_columns_are_called_from_the_workers() {
    every_statement_answers_as_written(&stack(&["loop_connections", "0"]));
}

/// Misses of one statement queued together run as one batch (`pgcache_params`): each caller
/// gets its own parameters' answer, whatever the statement's columns are called.
#[test]
fn batched_misses_answer_as_written_whatever_the_columns_are_called() {
    let stack = stack(&["workers", "1", "loop_connections", "0"]);
    stack.pg.log_app_statements();
    for sql in [
        "SELECT id, ROW(id, label) AS q FROM t WHERE id = $1",
        "SELECT * FROM named WHERE id = $1",
    ] {
        query(&mut stack.con(), sql, &["1"]).unwrap();
        let answers: Vec<(String, String)> = std::thread::scope(|scope| {
            let callers: Vec<_> = (0..6u64)
                .map(|t| {
                    let mut con = stack.con();
                    scope.spawn(move || {
                        (0..20u64)
                            .map(|i| {
                                let id = (1 + (t * 20 + i) % 40).to_string();
                                let reply = query(&mut con, sql, &[&id]).unwrap();
                                (id, reply)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            callers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect()
        });
        for (id, reply) in answers {
            assert_answers_as_postgres(&stack, sql, &[&id], &reply);
        }
    }
    assert!(
        stack.pg.logged_statements("pgcache_params") > 0,
        "some misses ran as a batch"
    );
}
