//! What a statement does to the session it runs in never reaches the next request on that
//! connection (issue #70 item 2): a function of the database's own, labelled IMMUTABLE, that
//! calls `set_config` or takes an advisory lock, on the workers' connections and on the
//! event loop's. Its run is rolled back and the session's advisory locks released
//! (`pg::undo`).
use crate::query::{assert_answers_as_postgres, query};
use pgcache_testkit::*;

const SQL: &str = "
    CREATE TABLE t (id integer PRIMARY KEY, x float8 NOT NULL, at timestamptz NOT NULL);
    INSERT INTO t SELECT g, 0.1 * g + 0.2, '2024-05-01T10:00:00Z'::timestamptz + g * interval '1 hour'
      FROM generate_series(1, 200) g;
    CREATE SCHEMA elsewhere;
    CREATE TABLE elsewhere.t (id integer PRIMARY KEY, x float8 NOT NULL, at timestamptz NOT NULL);
    -- A common mislabel: IMMUTABLE, yet it changes its session.
    CREATE FUNCTION meddle(n integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN
        PERFORM set_config('extra_float_digits', '0', false);
        PERFORM set_config('TimeZone', 'Asia/Kathmandu', false);
        PERFORM set_config('search_path', 'elsewhere', false);
        PERFORM set_config('default_transaction_read_only', 'off', false);
        PERFORM pg_advisory_lock(70);
        RETURN n;
      END $$;
    -- What the session a request runs in looks like.
    CREATE FUNCTION session_state(n integer) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN
        RETURN current_setting('extra_float_digits') || ' ' || current_setting('TimeZone')
          || ' ' || current_setting('search_path')
          || ' ' || current_setting('default_transaction_read_only')
          || ' locks ' || (SELECT count(*) FROM pg_locks
                           WHERE locktype = 'advisory' AND pid = pg_backend_pid());
      END $$;
";

const STATE: &str = "SELECT session_state(id) AS s FROM t WHERE id = $1";
const MEDDLE: &str = "SELECT meddle(id) AS n FROM t WHERE id = $1";
const FLOATS: &str = "SELECT x, at FROM t WHERE id = $1";
const UNQUALIFIED: &str = "SELECT count(*) AS n FROM t WHERE id <= $1";

/// With one connection on the path `extra` sends misses down: the state a miss after
/// `meddle` finds is the one before it, and the answers are PostgreSQL's.
fn a_meddling_statement_leaves_the_session_as_it_found_it(extra: &[&str]) {
    let stack = Stack::start_with(&format!("{SQL} {TRIGGER_SQL}"), extra);
    stack.pg.execute("SELECT pgcache_watch('t')");
    let mut con = stack.con();
    let state = |con: &mut redis::Connection, id: u32| -> String {
        let reply = query(con, STATE, &[&id.to_string()]).unwrap();
        json(&reply)[0]["s"].as_str().unwrap().to_string()
    };
    let before = state(&mut con, 1);
    assert!(before.ends_with("locks 0"), "{before}");
    for id in 2..6u32 {
        query(&mut con, MEDDLE, &[&id.to_string()]).unwrap();
        assert_eq!(state(&mut con, 100 + id), before, "after meddle({id})");
        for (sql, param) in [
            (FLOATS, id.to_string()),
            (UNQUALIFIED, (10 * id).to_string()),
        ] {
            let reply = query(&mut con, sql, &[&param]).unwrap();
            assert_answers_as_postgres(&stack, sql, &[&param], &reply);
        }
    }
    let mut other = stack.pg.client();
    let taken: bool = other
        .query_one("SELECT pg_try_advisory_lock(70)", &[])
        .unwrap()
        .get(0);
    assert!(
        taken,
        "pgcache's connection still holds the function's lock"
    );
}

#[test]
fn a_meddling_statement_leaves_a_worker_s_session_as_it_found_it() {
    a_meddling_statement_leaves_the_session_as_it_found_it(&[
        "workers",
        "1",
        "pool_size",
        "1",
        "loop_connections",
        "0",
    ]);
}

#[test]
fn a_meddling_statement_leaves_the_event_loop_s_session_as_it_found_it() {
    a_meddling_statement_leaves_the_session_as_it_found_it(&["loop_connections", "1"]);
}

/// A READ of a view that calls such a function: its lookup is undone too.
#[test]
fn a_read_of_a_meddling_view_leaves_the_session_as_it_found_it() {
    let stack = Stack::start_with(
        &format!("{SQL} CREATE VIEW meddling AS SELECT id, meddle(id) AS n FROM t; {TRIGGER_SQL}"),
        &["workers", "1", "pool_size", "1", "loop_connections", "0"],
    );
    stack.pg.execute("SELECT pgcache_watch('t')");
    let mut con = stack.con();
    let state = |con: &mut redis::Connection, id: u32| -> String {
        let reply = query(con, STATE, &[&id.to_string()]).unwrap();
        json(&reply)[0]["s"].as_str().unwrap().to_string()
    };
    let before = state(&mut con, 1);
    read(&mut con, "meddling", r#"{"id":3}"#).unwrap().unwrap();
    assert_eq!(state(&mut con, 2), before);
    let reply = query(&mut con, FLOATS, &["4"]).unwrap();
    assert_answers_as_postgres(&stack, FLOATS, &["4"], &reply);
}
