//! DDL at the edges (issue 50): what pgcache_watch and the DDL event trigger do for
//! partitions and inheritance children (never make PostgreSQL refuse a write, never miss a
//! child's rows), and relations renamed away and replaced, schemas renamed, and a table
//! that comes to shadow another on the search path (never serve the old relation's rows).
use crate::query::{commit_and_position, postgres_answer, query, query_after, query_until_cached};
use pgcache_testkit::*;
use std::time::Duration;

/// Waits until `sql` answers as PostgreSQL does, failing after a deadline.
fn until_postgres_answers(stack: &Stack, con: &mut redis::Connection, sql: &str) {
    let expected = postgres_answer(stack, sql, &[]);
    wait_for(
        &format!("{sql} to answer {expected}"),
        Duration::from_secs(10),
        || (json(&query(con, sql, &[]).unwrap()) == expected).then_some(()),
    );
}

/// Waits until READ of `table` `pk` gives `expected`.
fn until_read(con: &mut redis::Connection, table: &str, pk: &str, expected: Option<&str>) {
    wait_for(
        &format!("READ {table} {pk} to be {expected:?}"),
        Duration::from_secs(10),
        || (read(con, table, pk).unwrap().as_deref() == expected).then_some(()),
    );
}

const KEYLESS_SQL: &str = "
    CREATE TABLE meas (region text NOT NULL, v integer NOT NULL) PARTITION BY LIST (region);
    CREATE TABLE meas_eu PARTITION OF meas FOR VALUES IN ('eu');
    INSERT INTO meas VALUES ('eu', 1);
    CREATE TABLE person (name text NOT NULL, v integer NOT NULL);
    CREATE TABLE student (school text) INHERITS (person);
    INSERT INTO student VALUES ('ann', 1, 'x');
    CREATE TABLE base (id integer PRIMARY KEY, v integer NOT NULL);
    CREATE TABLE base_child (extra text) INHERITS (base);
    INSERT INTO base_child VALUES (1, 1, 'x');
";

/// Updates and deletes a row of each of `tables` (a `v` column each): PostgreSQL must
/// accept them.
fn writes_are_accepted(stack: &Stack, tables: &[&str]) {
    let mut pg = stack.pg.client();
    for table in tables {
        for write in [
            format!("UPDATE {table} SET v = v + 1"),
            format!("DELETE FROM {table} WHERE v < 0"),
        ] {
            if let Err(e) = pg.batch_execute(&write) {
                panic!("PostgreSQL refused `{write}` after pgcache_watch: {e}");
            }
        }
    }
}

#[test]
fn watching_a_parent_never_makes_postgresql_refuse_writes_to_its_partitions_or_children() {
    let stack = Stack::start(&format!("{KEYLESS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute(
        "SELECT pgcache_watch('meas', 'replication'), pgcache_watch('person', 'replication'),
                pgcache_watch('base', 'replication')",
    );
    writes_are_accepted(&stack, &["meas_eu", "student", "base_child"]);
    // Partitions and children created or attached later (the DDL event trigger).
    stack.pg.execute(
        "CREATE TABLE meas_us PARTITION OF meas FOR VALUES IN ('us');
         INSERT INTO meas VALUES ('us', 1);
         CREATE TABLE meas_asia (region text NOT NULL, v integer NOT NULL);
         INSERT INTO meas_asia VALUES ('asia', 1);
         ALTER TABLE meas ATTACH PARTITION meas_asia FOR VALUES IN ('asia');
         CREATE TABLE teacher () INHERITS (person);
         INSERT INTO teacher VALUES ('bob', 1);
         CREATE TABLE base_kid () INHERITS (base);
         INSERT INTO base_kid VALUES (2, 1);
         CREATE TABLE grandkid () INHERITS (base_kid);
         INSERT INTO grandkid VALUES (3, 1);",
    );
    writes_are_accepted(
        &stack,
        &["meas_us", "meas_asia", "teacher", "base_kid", "grandkid"],
    );
}

#[test]
fn a_keyless_partitioned_table_is_not_watched_where_its_new_partitions_would_refuse_writes() {
    let stack = Stack::start(&format!("{KEYLESS_SQL} {TRIGGER_SQL}"));
    stack
        .pg
        .superuser_of("app")
        .batch_execute("ALTER EVENT TRIGGER pgcache_ddl DISABLE")
        .unwrap();
    let refused = stack
        .pg
        .client()
        .batch_execute("SELECT pgcache_watch('meas', 'replication')")
        .expect_err("watched without the DDL trigger");
    let message = refused.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("partitioned and has no primary key"),
        "{message}"
    );
    // Nothing was published: the partition's writes go on.
    writes_are_accepted(&stack, &["meas_eu"]);
}

#[test]
fn an_inheritance_child_created_later_is_followed() {
    let stack = Stack::start(&format!("{KEYLESS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute("SELECT pgcache_watch('base')");
    let mut con = stack.con();
    let sum = "SELECT count(*) AS n, sum(v) AS s FROM base";
    query_until_cached(&mut con, sum, &[]);
    stack.pg.execute(
        "CREATE TABLE base_kid () INHERITS (base);
         INSERT INTO base_kid VALUES (2, 5);",
    );
    until_postgres_answers(&stack, &mut con, sum);
    query_until_cached(&mut con, sum, &[]);
    // Its later writes too.
    stack.pg.execute("UPDATE base_kid SET v = 50 WHERE id = 2");
    until_postgres_answers(&stack, &mut con, sum);
    assert_eq!(
        json(&query(&mut con, sum, &[]).unwrap()),
        json(r#"[{"n":2,"s":51}]"#)
    );
}

const ITEMS_SQL: &str = "
    CREATE TABLE items (id integer PRIMARY KEY, v integer NOT NULL);
    INSERT INTO items SELECT g, g FROM generate_series(1, 3) g;
    CREATE VIEW items_v AS SELECT id, v FROM items;
    CREATE SCHEMA s;
    CREATE TABLE s.items (id integer PRIMARY KEY, v integer NOT NULL);
    INSERT INTO s.items SELECT g, g FROM generate_series(1, 3) g;
";

/// Caches READ, MULTIREAD and QUERY of `table`'s row 1 and count.
fn cache_all_of(con: &mut redis::Connection, table: &str) -> String {
    // Its rows may have been written just now: the cache may still hold their absence.
    until_read(con, table, r#"{"id":1}"#, Some(r#"{"id":1,"v":1}"#));
    read_until_cached(con, table, r#"{"id":1}"#);
    multiread(con, table, r#"[{"id":1},{"id":2}]"#).unwrap();
    let count = format!("SELECT count(*) AS n FROM {table}");
    query_until_cached(con, &count, &[]);
    count
}

#[test]
fn a_table_renamed_away_and_replaced_serves_none_of_its_old_rows() {
    let stack = Stack::start(&format!("{ITEMS_SQL} {TRIGGER_SQL}"));
    stack
        .pg
        .execute("SELECT pgcache_watch('items'), pgcache_watch('s.items')");
    let mut con = stack.con();
    for (table, replace) in [
        (
            "items",
            "ALTER TABLE items RENAME TO items_2025;
             CREATE TABLE items (LIKE items_2025 INCLUDING ALL);
             SELECT pgcache_watch('items');",
        ),
        // Moved to another schema, and replaced.
        (
            "items",
            "CREATE SCHEMA archive;
             ALTER TABLE items SET SCHEMA archive;
             CREATE TABLE items (LIKE archive.items INCLUDING ALL);
             INSERT INTO items VALUES (7, 7);
             SELECT pgcache_watch('items');",
        ),
        (
            "items_v",
            "ALTER VIEW items_v RENAME TO items_v_2025;
             CREATE VIEW items_v AS SELECT id, v FROM items WHERE id > 5;",
        ),
    ] {
        // Each round replaces the table the last one made, empty: it gets rows to cache.
        stack.pg.execute(
            "INSERT INTO items SELECT g, g FROM generate_series(1, 3) g ON CONFLICT DO NOTHING",
        );
        let count = cache_all_of(&mut con, table);
        stack.pg.execute(replace);
        until_postgres_answers(&stack, &mut con, &count);
        until_read(&mut con, table, r#"{"id":1}"#, None);
        let rows = multiread(&mut con, table, r#"[{"id":1},{"id":2}]"#).unwrap();
        assert_eq!(rows, [None, None], "MULTIREAD {table} after `{replace}`");
    }
}

#[test]
fn a_schema_renamed_away_and_replaced_serves_none_of_its_old_rows() {
    let stack = Stack::start(&format!("{ITEMS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute("SELECT pgcache_watch('s.items')");
    let mut con = stack.con();
    let count = cache_all_of(&mut con, "s.items");
    stack.pg.execute(
        "ALTER SCHEMA s RENAME TO s_2025;
         CREATE SCHEMA s;
         CREATE TABLE s.items (id integer PRIMARY KEY, v integer NOT NULL);
         SELECT pgcache_watch('s.items');",
    );
    until_postgres_answers(&stack, &mut con, &count);
    until_read(&mut con, "s.items", r#"{"id":1}"#, None);
    let rows = multiread(&mut con, "s.items", r#"[{"id":1},{"id":2}]"#).unwrap();
    assert_eq!(rows, [None, None]);
}

#[test]
fn a_table_that_comes_first_on_the_search_path_is_what_a_statement_reads() {
    let stack = Stack::start(&format!("{ITEMS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute("SELECT pgcache_watch('items')");
    let mut con = stack.con();
    // pgcache's role is `app`: "$user" puts schema app before public.
    let count = "SELECT count(*) AS n FROM items";
    assert_eq!(query_until_cached(&mut con, count, &[]), r#"[{"n":3}]"#);
    // In one transaction with rows of its own (the feed brings the report and the rows
    // together).
    let position = commit_and_position(
        &stack,
        "BEGIN;
         CREATE SCHEMA app;
         CREATE TABLE app.items (LIKE public.items INCLUDING ALL);
         INSERT INTO app.items SELECT * FROM public.items WHERE id = 3;
         SELECT pgcache_watch('app.items');
         COMMIT;",
    );
    if invalidation_source() == "replication" {
        // Read after the DDL's position: the statement known before it is learned again.
        config_set(&mut con, "pgcache.after_wait_ms", "1000").unwrap();
        let after = query_after(&mut con, count, &[], &position).unwrap();
        assert_eq!(after, r#"[{"n":1}]"#, "read AFTER the DDL");
    }
    until_postgres_answers(&stack, &mut con, count);
    assert_eq!(
        query(&mut con, count, &[]).unwrap(),
        r#"[{"n":1}]"#,
        "the statement reads app.items now"
    );
}

#[test]
fn without_the_ddl_trigger_what_ddl_could_change_unseen_is_answered_by_postgresql() {
    let stack = Stack::start(&format!(
        "{ITEMS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('items');
         CREATE FUNCTION doubled(integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';"
    ));
    stack
        .pg
        .superuser_of("app")
        .batch_execute("ALTER EVENT TRIGGER pgcache_ddl DISABLE")
        .unwrap();
    let mut con = stack.con();
    let over_view = "SELECT count(*) AS n FROM items_v";
    let calling = "SELECT doubled(v) AS d FROM items WHERE id = $1";
    // A plain table's statement is cached as ever.
    query_until_cached(&mut con, "SELECT v FROM items WHERE id = $1", &["1"]);
    let hits = stats_figure(&mut con, "query_hits");
    for _ in 0..3 {
        assert_eq!(query(&mut con, over_view, &[]).unwrap(), r#"[{"n":3}]"#);
        assert_eq!(query(&mut con, calling, &["2"]).unwrap(), r#"[{"d":4}]"#);
        assert_eq!(
            read(&mut con, "items_v", r#"{"id":1}"#).unwrap().as_deref(),
            Some(r#"{"id":1,"v":1}"#)
        );
    }
    assert!(
        !exists(&mut con, r#"pg_cache:items_v:{"id":1}"#),
        "a view's row is not kept"
    );
    assert_eq!(
        stats_figure(&mut con, "query_hits"),
        hits,
        "nothing was cached"
    );
    // DDL nobody reports: the next answer is PostgreSQL's.
    stack.pg.execute(
        "CREATE OR REPLACE VIEW items_v AS SELECT id, v FROM items WHERE id > 1;
         CREATE OR REPLACE FUNCTION doubled(integer) RETURNS integer LANGUAGE sql IMMUTABLE
           AS 'SELECT $1 * 3';",
    );
    assert_eq!(query(&mut con, over_view, &[]).unwrap(), r#"[{"n":2}]"#);
    assert_eq!(query(&mut con, calling, &["2"]).unwrap(), r#"[{"d":6}]"#);
    assert_eq!(read(&mut con, "items_v", r#"{"id":1}"#).unwrap(), None);
    // EXPLAIN says why.
    let explained: std::collections::HashMap<String, redis::Value> = redis::cmd("PGCACHE.EXPLAIN")
        .arg(over_view)
        .query(&mut con)
        .unwrap();
    let reason: String = redis::from_redis_value(explained["uncached_reason"].clone()).unwrap();
    assert!(reason.contains("DDL is not followed"), "{reason}");
}

/// Found by the differential fuzzer (seed 7024). A statement learned again after its
/// column was retyped (its parameter is text now) must not run as the statement the pool's
/// connections prepared before, whose parameter was an integer (`text = integer`): once it
/// is answered, every miss is answered as PostgreSQL answers it.
#[test]
fn a_column_retyped_under_a_prepared_statement_is_answered_as_postgresql_answers() {
    let stack = Stack::start(&format!(
        "CREATE TABLE scored (id integer PRIMARY KEY, score integer);
         INSERT INTO scored SELECT g, g FROM generate_series(1, 40) g;
         {TRIGGER_SQL} SELECT pgcache_watch('scored');"
    ));
    let mut con = stack.con();
    let sql = "SELECT id FROM scored WHERE score = $1";
    // Misses enough for every connection of the pool to prepare it.
    for score in 1..=20 {
        query(&mut con, sql, &[&score.to_string()]).unwrap();
    }
    stack
        .pg
        .execute("ALTER TABLE scored ALTER COLUMN score TYPE text USING score::text");
    // The DDL applied, the statement is learned again (EXPLAIN learns it), and not run.
    wait_for(
        "the statement learned again with a text parameter",
        Duration::from_secs(10),
        || {
            let explained: std::collections::HashMap<String, redis::Value> =
                redis::cmd("PGCACHE.EXPLAIN")
                    .arg(sql)
                    .query(&mut con)
                    .ok()?;
            let params: Vec<String> =
                redis::from_redis_value(explained.get("parameters")?.clone()).ok()?;
            (params == ["text"]).then_some(())
        },
    );
    for score in 21..=40 {
        let score = score.to_string();
        assert_eq!(
            query(&mut con, sql, &[&score]).map(|a| json(&a)),
            Ok(postgres_answer(&stack, sql, &[&score])),
            "{sql} {score} after the column became text"
        );
    }
}

/// Without the DDL trigger, a statement over a view is answered by PostgreSQL, and must be
/// answered as a fresh call would be: a function created since as a better match for its
/// call (here `lower(bpchar)` for a `char` column) changes no object a prepared statement
/// used, so PostgreSQL would not re-parse one pgcache kept prepared.
fn unfollowed_ddl_is_seen_by_every_connection(extra: &[&str]) {
    let stack = Stack::start_with(
        &format!(
            "{TRIGGER_SQL} CREATE TABLE codes (id integer PRIMARY KEY, code char(3) NOT NULL);
             INSERT INTO codes VALUES (1, 'ab'), (2, 'cd');
             CREATE VIEW codes_v AS SELECT id, code FROM codes;
             SELECT pgcache_watch('codes');"
        ),
        extra,
    );
    stack
        .pg
        .superuser_of("app")
        .batch_execute("ALTER EVENT TRIGGER pgcache_ddl DISABLE")
        .unwrap();
    let mut con = stack.con();
    let sql = "SELECT id, lower(code) AS l FROM codes_v WHERE id >= $1 ORDER BY id";
    let params = ["0", "1", "2"];
    for _ in 0..20 {
        for p in params {
            query(&mut con, sql, &[p]).unwrap();
        }
    }
    stack.pg.execute(
        "CREATE FUNCTION public.lower(bpchar) RETURNS text LANGUAGE sql IMMUTABLE
           AS $$ SELECT 'f:' || $1::text $$",
    );
    for round in 0..20 {
        for p in params {
            assert_eq!(
                json(&query(&mut con, sql, &[p]).unwrap()),
                postgres_answer(&stack, sql, &[p]),
                "{sql} with {p}, call {round} after lower(bpchar) was created"
            );
        }
    }
}

/// Every miss from a worker, on two connections each prepares statements on.
const WORKERS_ONLY: &[&str] = &["loop_connections", "0", "workers", "2", "pool_size", "2"];

#[test]
fn without_the_ddl_trigger_the_workers_answer_as_a_fresh_call_would() {
    unfollowed_ddl_is_seen_by_every_connection(WORKERS_ONLY);
}

#[test]
fn without_the_ddl_trigger_the_event_loop_answers_as_a_fresh_call_would() {
    unfollowed_ddl_is_seen_by_every_connection(&["loop_connections", "2"]);
}

/// A table created in a schema already on the search path comes to shadow the table a
/// statement reads. PostgreSQL does not re-parse a statement a session prepared before
/// (its PREPARE page says so: no object it used changed), so every connection pgcache
/// prepared it on, the event loop's and the workers', must prepare it again.
fn a_shadowing_table_is_read_by_every_connection(extra: &[&str]) {
    let stack = Stack::start_with(
        &format!("{ITEMS_SQL} {TRIGGER_SQL} CREATE SCHEMA app;"),
        extra,
    );
    stack.pg.execute("SELECT pgcache_watch('items')");
    let mut con = stack.con();
    config_set(&mut con, "pgcache.after_wait_ms", "1000").unwrap();
    let sql = "SELECT id FROM items WHERE id > $1 ORDER BY id";
    let params = ["0", "1", "2"];
    // Each connection prepares the statement: the misses of many writes' turns.
    for n in 0..20 {
        let position = commit_and_position(&stack, &format!("UPDATE items SET v = {n}"));
        for p in params {
            query_after(&mut con, sql, &[p], &position).unwrap();
        }
    }
    let mut position = commit_and_position(
        &stack,
        "BEGIN;
         CREATE TABLE app.items (LIKE public.items INCLUDING ALL);
         INSERT INTO app.items VALUES (3, 3), (7, 7);
         SELECT pgcache_watch('app.items');
         COMMIT;",
    );
    for n in 10..30 {
        for p in params {
            let expected = postgres_answer(&stack, sql, &[p]);
            let what = format!(
                "{sql} with {p}, {} writes after the shadowing table",
                n - 10
            );
            if invalidation_source() == "replication" {
                let answer = query_after(&mut con, sql, &[p], &position).unwrap();
                assert_eq!(json(&answer), expected, "{what}");
            } else {
                // Notify mode has no positions: the answer must come within a deadline.
                wait_for(&what, Duration::from_secs(10), || {
                    (json(&query(&mut con, sql, &[p]).unwrap()) == expected).then_some(())
                });
            }
        }
        position = commit_and_position(&stack, &format!("INSERT INTO app.items VALUES ({n}, {n})"));
    }
}

#[test]
fn a_table_that_comes_to_shadow_another_is_read_by_the_workers_connections() {
    a_shadowing_table_is_read_by_every_connection(WORKERS_ONLY);
}

#[test]
fn a_table_that_comes_to_shadow_another_is_read_by_the_event_loop_s_connections() {
    a_shadowing_table_is_read_by_every_connection(&["loop_connections", "2"]);
}

/// A table comes to shadow the one a statement reads while the feed has not applied its DDL
/// (the main thread held back here; behind a long script, or a PostgreSQL restart, in the
/// field). A read the cache cannot answer goes to PostgreSQL: AFTER the table's commit once
/// the wait for the feed runs out, or past its freshness bound. It is PostgreSQL's answer
/// now, so its statement is parsed afresh, not run as a connection prepared it before the
/// table existed, which would still read the shadowed one (found by the differential fuzzer,
/// issue #70, seed 7001).
fn a_read_past_the_cache_reads_a_table_its_feed_has_not_reported(extra: &[&str]) {
    let stack = Stack::start_with(
        &format!("{ITEMS_SQL} {TRIGGER_SQL} CREATE SCHEMA app;"),
        &[extra, &["debug_commands", "yes"]].concat(),
    );
    stack.pg.execute("SELECT pgcache_watch('items')");
    let mut con = stack.con();
    let replication = invalidation_source() == "replication";
    let sql = "SELECT id FROM items WHERE id > $1 ORDER BY id";
    let params = ["0", "1", "2"];
    // Each connection prepares the statement: the misses of many parameters.
    for p in -40..0 {
        query(&mut con, sql, &[&p.to_string()]).unwrap();
    }
    config_set(&mut con, "pgcache.after_wait_ms", "10").unwrap();
    debug(&mut con, "INVALIDATIONS", "HOLD");
    let position = commit_and_position(
        &stack,
        "BEGIN;
         CREATE TABLE app.items (LIKE public.items INCLUDING ALL);
         INSERT INTO app.items VALUES (3, 3), (7, 7);
         COMMIT;",
    );
    for p in params {
        let expected = postgres_answer(&stack, sql, &[p]);
        if replication {
            let answer = query_after(&mut con, sql, &[p], &position).unwrap();
            assert_eq!(
                json(&answer),
                expected,
                "AFTER the shadowing table, with {p}"
            );
        }
        // Past a bound of 1 ms the feed stopped vouching for (the main thread applies
        // nothing), PostgreSQL answers.
        wait_for(
            &format!("MAXSTALE 1 with {p} to read the shadowing table"),
            Duration::from_secs(10),
            || {
                let answer: String = redis::cmd("PGCACHE.QUERY")
                    .arg(sql)
                    .arg(1)
                    .arg(p)
                    .arg(&["MAXSTALE", "1"])
                    .query(&mut con)
                    .unwrap();
                (json(&answer) == expected).then_some(())
            },
        );
    }
    debug(&mut con, "INVALIDATIONS", "RELEASE");
}

#[test]
fn a_read_past_the_cache_reads_a_table_its_feed_has_not_reported_on_the_workers() {
    a_read_past_the_cache_reads_a_table_its_feed_has_not_reported(WORKERS_ONLY);
}

#[test]
fn a_read_past_the_cache_reads_a_table_its_feed_has_not_reported_on_the_event_loop() {
    a_read_past_the_cache_reads_a_table_its_feed_has_not_reported(&["loop_connections", "2"]);
}
