//! What a QUERY result may depend on: nothing but the rows of the tables it reads. Whatever
//! else a statement reads (the clock, the session, where rows are stored) is refused with
//! the reason, wherever it hides: in the statement, a view, a function's body or defaults, a
//! constant or a parameter. Each refusal leaves the cache and PostgreSQL's data untouched.
use crate::query::{postgres_answer, query, query_until_cached};
use pgcache_testkit::*;
use std::time::Duration;

const EVENTS_SQL: &str = "
    CREATE TABLE events (id integer PRIMARY KEY, at timestamptz NOT NULL, day date,
                         note text, attrs jsonb NOT NULL DEFAULT '{}');
    INSERT INTO events SELECT g, '2024-05-01T10:00:00Z'::timestamptz + g * interval '1 day',
        '2024-05-01'::date + g, 'note ' || g, jsonb_build_object('k' || (g % 3), g)
      FROM generate_series(1, 20) g;
    CREATE DOMAIN moment AS timestamptz;
";

fn events() -> Stack {
    let stack = Stack::start(&format!("{EVENTS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute("SELECT pgcache_watch('events')");
    stack
}

/// Every call of `sql` is refused with a reason holding `reason`.
fn refused(con: &mut redis::Connection, sql: &str, params: &[&str], reason: &str) {
    let e = query(con, sql, params)
        .err()
        .unwrap_or_else(|| panic!("{sql} {params:?} was answered"))
        .to_string();
    assert!(e.contains(reason), "{sql} {params:?}: {e}");
}

#[test]
fn sql_value_functions_are_refused_in_the_statement_and_in_the_views_it_reads() {
    let stack = events();
    let mut con = stack.con();
    for (n, (function, name)) in [
        ("CURRENT_DATE", "CURRENT_DATE"),
        ("CURRENT_TIME", "CURRENT_TIME"),
        ("CURRENT_TIME(2)", "CURRENT_TIME"),
        ("CURRENT_TIMESTAMP", "CURRENT_TIMESTAMP"),
        ("CURRENT_TIMESTAMP(3)", "CURRENT_TIMESTAMP"),
        ("LOCALTIME", "LOCALTIME"),
        ("LOCALTIME(1)", "LOCALTIME"),
        ("LOCALTIMESTAMP", "LOCALTIMESTAMP"),
        ("LOCALTIMESTAMP(2)", "LOCALTIMESTAMP"),
        ("CURRENT_ROLE", "CURRENT_ROLE"),
        ("CURRENT_USER", "CURRENT_USER"),
        ("USER", "USER"),
        ("SESSION_USER", "SESSION_USER"),
        ("CURRENT_CATALOG", "CURRENT_CATALOG"),
        ("CURRENT_SCHEMA", "CURRENT_SCHEMA"),
    ]
    .into_iter()
    .enumerate()
    {
        refused(
            &mut con,
            &format!("SELECT id, {function} AS v FROM events WHERE id = $1"),
            &["1"],
            &format!("{name} is STABLE"),
        );
        let view = format!("v_{n}");
        stack.pg.execute(&format!(
            "CREATE VIEW {view} AS SELECT id, {function}::text AS v FROM events"
        ));
        refused(
            &mut con,
            &format!("SELECT id FROM {view} WHERE id = $1"),
            &["1"],
            &format!("{name} is STABLE (in view \"public\".\"{view}\")"),
        );
    }
    // The issue's own: a view of the events still to come.
    stack.pg.execute(
        "CREATE VIEW upcoming AS SELECT id FROM events WHERE at > CURRENT_TIMESTAMP;
         CREATE VIEW upcoming_soon AS SELECT id FROM upcoming WHERE id < 10",
    );
    refused(
        &mut con,
        "SELECT id FROM upcoming",
        &[],
        "CURRENT_TIMESTAMP is STABLE",
    );
    refused(
        &mut con,
        "SELECT id FROM upcoming_soon",
        &[],
        "CURRENT_TIMESTAMP is STABLE",
    );
    let results: Vec<String> = redis::cmd("KEYS")
        .arg("pg_cache:~q:*")
        .query(&mut con)
        .unwrap();
    assert!(results.is_empty(), "nothing cached: {results:?}");
}

#[test]
fn the_clock_s_date_inputs_are_refused_as_constants_and_as_parameters() {
    let stack = events();
    let mut con = stack.con();
    for sql in [
        "SELECT id FROM events WHERE at > 'now'::timestamptz",
        "SELECT id FROM events WHERE at > 'now'",
        "SELECT id FROM events WHERE at > timestamptz ' NOW '",
        "SELECT id FROM events WHERE day = 'today'::date",
        "SELECT id FROM events WHERE day < 'Tomorrow'",
        "SELECT id FROM events WHERE at < 'yesterday 10:00'",
        "SELECT id FROM events WHERE at = ANY('{now,2024-01-01}'::timestamptz[])",
        "SELECT id FROM events WHERE at <@ '[today,)'::tstzrange",
        "SELECT id FROM events WHERE at > 'now'::moment",
        "SELECT id, 'now'::timestamp AS t FROM events",
    ] {
        refused(&mut con, sql, &[], "reads as the current time");
    }
    // The same words as text are text.
    for sql in [
        "SELECT id FROM events WHERE note = 'now'",
        "SELECT id FROM events WHERE note LIKE '%today%'",
        "SELECT id, 'tomorrow' AS word FROM events WHERE id = 1",
    ] {
        assert_eq!(
            json(&query_until_cached(&mut con, sql, &[])),
            postgres_answer(&stack, sql, &[]),
            "{sql}"
        );
    }
    // Passing the time as a parameter is the advice; the clock words are refused there too,
    // every call (a statement learned with another value included).
    let sql = "SELECT id FROM events WHERE at > $1 ORDER BY id LIMIT 3";
    let answer = query_until_cached(&mut con, sql, &["2024-05-10T00:00:00Z"]);
    assert_eq!(answer, r#"[{"id":9},{"id":10},{"id":11}]"#);
    for now in ["now", "NOW", " today ", "tomorrow 10:00", "yesterday"] {
        refused(&mut con, sql, &[now], "reads as the current time");
    }
    for (sql, value) in [
        ("SELECT id FROM events WHERE day = $1", "today"),
        ("SELECT id FROM events WHERE at = ANY($1)", "{now}"),
        ("SELECT id FROM events WHERE at > $1::moment", "now"),
        (
            "SELECT id FROM events WHERE at > $1::text::timestamptz",
            "now",
        ),
    ] {
        let reason = if sql.contains("::text::") {
            "converts text to timestamp with time zone"
        } else {
            "reads as the current time"
        };
        refused(&mut con, sql, &[value], reason);
    }
    // A text parameter spelled so is text.
    let sql = "SELECT id FROM events WHERE note = $1";
    assert_eq!(query(&mut con, sql, &["now"]).unwrap(), "[]");
}

#[test]
fn function_bodies_and_defaults_are_read_for_the_clock_and_the_tables_they_read() {
    let stack = events();
    stack.pg.execute(
        "CREATE FUNCTION days_left(at timestamptz) RETURNS interval IMMUTABLE LANGUAGE sql
           AS $$ SELECT at - now() $$;
         CREATE FUNCTION days_left_atomic(at timestamptz) RETURNS interval IMMUTABLE
           LANGUAGE sql RETURN at - now();
         CREATE FUNCTION after_today(at timestamptz) RETURNS boolean IMMUTABLE LANGUAGE sql
           AS $$ SELECT at > 'today'::timestamptz $$;
         CREATE FUNCTION later(at timestamptz, since timestamptz DEFAULT now())
           RETURNS boolean IMMUTABLE LANGUAGE sql AS $$ SELECT at > since $$;
         CREATE FUNCTION from_text(t text) RETURNS timestamptz IMMUTABLE LANGUAGE sql
           AS $$ SELECT t::timestamptz $$;
         CREATE TABLE labels (id integer PRIMARY KEY, label text NOT NULL);
         INSERT INTO labels VALUES (1, 'one'), (2, 'two');
         CREATE FUNCTION label_of(n integer) RETURNS text IMMUTABLE LANGUAGE sql
           AS $$ SELECT label FROM labels WHERE id = n $$;
         SELECT pgcache_watch('labels');",
    );
    let mut con = stack.con();
    for (sql, reason) in [
        ("SELECT days_left(at) AS d FROM events", "now() is STABLE"),
        (
            "SELECT days_left_atomic(at) AS d FROM events",
            "now() is STABLE",
        ),
        (
            "SELECT id FROM events WHERE after_today(at)",
            "\"public\".\"after_today\"() holds the constant 'today'",
        ),
        ("SELECT id FROM events WHERE later(at)", "now() is STABLE"),
        (
            "SELECT id FROM events WHERE from_text(note) > $1",
            "converts text to timestamp with time zone",
        ),
    ] {
        let params: &[&str] = if sql.contains("$1") {
            &["2024-01-01"]
        } else {
            &[]
        };
        refused(&mut con, sql, params, reason);
    }
    // A function that reads a table (marked IMMUTABLE, as lookup functions often are): the
    // table counts as read, and its changes drop the results.
    let sql = "SELECT id, label_of(id) AS label FROM events WHERE id = $1";
    let before = query_until_cached(&mut con, sql, &["1"]);
    assert_eq!(before, r#"[{"id":1,"label":"one"}]"#);
    stack
        .pg
        .execute("UPDATE labels SET label = 'uno' WHERE id = 1");
    wait_for("the new label", Duration::from_secs(10), || {
        (query(&mut con, sql, &["1"]).unwrap() == r#"[{"id":1,"label":"uno"}]"#).then_some(())
    });
}

/// A function's body is read by compiling a copy of it, which must never run anything of
/// the body's own: a body that closes the copy's block early (`END;`) is refused, and what
/// follows it never runs.
#[test]
fn a_function_body_cannot_run_anything_as_pgcache() {
    let stack = events();
    stack.pg.execute(
        "CREATE TABLE loot (n integer);
         CREATE FUNCTION sneaky() RETURNS integer LANGUAGE sql IMMUTABLE
           AS 'SELECT 1; END; INSERT INTO loot VALUES (1); SELECT 1';",
    );
    let mut con = stack.con();
    refused(
        &mut con,
        "SELECT sneaky() AS n FROM events WHERE id = $1",
        &["1"],
        "cannot read",
    );
    let looted: i64 = stack
        .pg
        .client()
        .query_one("SELECT count(*) FROM loot", &[])
        .unwrap()
        .get(0);
    assert_eq!(looted, 0);
}

#[test]
fn samples_system_columns_sequences_and_stable_operators_anywhere_are_refused() {
    let stack = events();
    stack.pg.execute(
        "CREATE SEQUENCE tickets;
         CREATE DOMAIN future AS timestamptz CHECK (VALUE > now());",
    );
    let mut con = stack.con();
    for (sql, params, reason) in [
        (
            "SELECT id FROM events TABLESAMPLE BERNOULLI (50)",
            &[][..],
            "TABLESAMPLE",
        ),
        (
            "SELECT id FROM events TABLESAMPLE SYSTEM (50) REPEATABLE (7)",
            &[],
            "TABLESAMPLE",
        ),
        ("SELECT ctid, id FROM events", &[], "system column ctid"),
        (
            "SELECT id FROM events WHERE xmax <> '0'",
            &[],
            "system column xmax",
        ),
        ("SELECT cmin, id FROM events", &[], "system column cmin"),
        ("SELECT cmax, id FROM events", &[], "system column cmax"),
        (
            "SELECT id FROM events WHERE (at, 0) < ($1::date, 1)",
            &["2024-05-10"],
            "is STABLE",
        ),
        (
            "SELECT id, count(*) OVER (ORDER BY at RANGE BETWEEN '1 day' PRECEDING AND CURRENT ROW) \
             AS n FROM events",
            &[],
            "in_range() is STABLE",
        ),
        ("SELECT last_value FROM tickets", &[], "sequence"),
        (
            "SELECT id FROM events WHERE at::future > $1",
            &["2024-01-01"],
            "now() is STABLE",
        ),
    ] {
        refused(&mut con, sql, params, reason);
    }
    // Outside the row comparison, the same comparison was always refused.
    refused(
        &mut con,
        "SELECT id FROM events WHERE at < $1::date",
        &["2024-05-10"],
        "is STABLE",
    );
    // xmin (a new row version each change) and tableoid follow the feed: cached.
    let sql = "SELECT id, tableoid::regclass::text AS t FROM events WHERE id = $1";
    assert_eq!(
        query_until_cached(&mut con, sql, &["2"]),
        r#"[{"id":2,"t":"events"}]"#
    );
    let sql = "SELECT id, xmin::text <> '' AS has FROM events WHERE id = $1";
    assert_eq!(
        query_until_cached(&mut con, sql, &["2"]),
        r#"[{"id":2,"has":true}]"#
    );
}

#[test]
fn the_jsonb_question_mark_operators_sit_beside_numbered_parameters() {
    let stack = events();
    let mut con = stack.con();
    for (sql, params) in [
        (
            "SELECT id FROM events WHERE attrs ? $1 ORDER BY id",
            &["k1"][..],
        ),
        (
            "SELECT id FROM events WHERE attrs ?| $1 ORDER BY id",
            &["{k0,k2}"],
        ),
        (
            "SELECT id FROM events WHERE attrs ?& $1 AND id > $2 ORDER BY id",
            &["{k1}", "10"],
        ),
        (
            "SELECT id FROM events WHERE attrs ? 'k2' AND id < $1 ORDER BY id",
            &["9"],
        ),
    ] {
        assert_eq!(
            json(&query_until_cached(&mut con, sql, params)),
            postgres_answer(&stack, sql, params),
            "{sql}"
        );
    }
    // Where `?` are the placeholders, `??` is the operator, as before.
    let sql = "SELECT id FROM events WHERE attrs ?? 'k0' AND id < ? ORDER BY id";
    assert_eq!(
        query_until_cached(&mut con, sql, &["7"]),
        r#"[{"id":3},{"id":6}]"#
    );
}

#[test]
fn misses_batched_together_answer_each_its_own_even_when_the_statement_names_the_batch() {
    let stack = Stack::start_with(&format!("{USERS_SQL} {TRIGGER_SQL}"), &["workers", "1"]);
    stack.pg.execute("SELECT pgcache_watch('users')");
    stack.pg.log_app_statements();
    let sql = "SELECT pgcache_v1 AS v, id FROM (SELECT 1 AS pgcache_v1, id FROM users) \
               AS pgcache_params WHERE id = $1";
    query(&mut stack.con(), sql, &["1"]).unwrap();
    let callers: Vec<_> = (0..6u64)
        .map(|t| {
            let mut con = stack.con();
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let id = 1 + (t * 40 + i) % 200;
                    let answer = query(&mut con, sql, &[&id.to_string()]).unwrap();
                    assert_eq!(answer, format!(r#"[{{"v":1,"id":{id}}}]"#));
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    assert!(
        stack.pg.logged_statements("pgcache_params_1") > 0,
        "some misses ran as a batch"
    );
}

#[test]
fn a_statement_nested_too_deep_to_parse_is_an_error_not_a_crash() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    // About 60 KB, under the statement limit: PostgreSQL's parser writes its tree out
    // recursively, as deep as the sum is long.
    let sum = vec!["1"; 30_000].join("+");
    let sql = format!("SELECT id FROM users WHERE id = {sum}");
    let e = query(&mut con, &sql, &[]).unwrap_err().to_string();
    assert!(e.contains("nested too deeply"), "{e}");
    // As deep as the statement limit lets a statement be: one operator per two bytes.
    let deepest = format!("SELECT id FROM users WHERE id = {}1", "- ".repeat(32_000));
    assert!(query(&mut con, &deepest, &[]).is_err());
    let explained: redis::Value = redis::cmd("PGCACHE.EXPLAIN")
        .arg(&sql)
        .query(&mut con)
        .unwrap();
    let explained = nested(&explained);
    let reason: String = redis::from_redis_value(explained["reason"].clone()).unwrap();
    assert!(reason.contains("nested too deeply"), "{reason}");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

/// Every statement runs in a READ ONLY transaction, also after a function it called turned
/// the session's default (what pgcache relies on to run a statement without a BEGIN) off.
#[test]
fn statements_run_read_only_even_after_a_function_turned_the_session_default_off() {
    let stack = Stack::start_with(
        &format!("{EVENTS_SQL} {TRIGGER_SQL}"),
        &["workers", "1", "pool_size", "1"],
    );
    stack.pg.execute(
        "SELECT pgcache_watch('events');
         CREATE FUNCTION read_write_from_now_on(n integer) RETURNS integer LANGUAGE plpgsql
           IMMUTABLE AS $$ BEGIN
             PERFORM set_config('default_transaction_read_only', 'off', false);
             RETURN n;
           END $$;
         CREATE FUNCTION read_only_now(n integer) RETURNS text LANGUAGE plpgsql IMMUTABLE
           AS $$ BEGIN RETURN current_setting('transaction_read_only'); END $$;",
    );
    let mut con = stack.con();
    const READ_ONLY: &str = "SELECT read_only_now(id) AS ro FROM events WHERE id = $1";
    assert_eq!(
        json(&query(&mut con, READ_ONLY, &["1"]).unwrap()),
        serde_json::json!([{"ro": "on"}])
    );
    query(
        &mut con,
        "SELECT read_write_from_now_on(id) AS n FROM events WHERE id = $1",
        &["1"],
    )
    .unwrap();
    // The same (only) connection, its default now off: the next miss still runs read-only.
    assert_eq!(
        json(&query(&mut con, READ_ONLY, &["2"]).unwrap()),
        serde_json::json!([{"ro": "on"}])
    );
}
