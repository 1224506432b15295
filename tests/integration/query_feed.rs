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

const MEAS_SQL: &str = "
    CREATE TABLE meas (id integer NOT NULL, region text NOT NULL, v integer NOT NULL,
                       PRIMARY KEY (id, region)) PARTITION BY LIST (region);
    CREATE TABLE meas_eu PARTITION OF meas FOR VALUES IN ('eu');
    CREATE TABLE meas_us PARTITION OF meas FOR VALUES IN ('us');
    INSERT INTO meas SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g * 10
      FROM generate_series(1, 20) g;
    CREATE TABLE base (id integer PRIMARY KEY, v integer NOT NULL);
    CREATE TABLE base_child (extra text) INHERITS (base);
    INSERT INTO base VALUES (1, 1);
    INSERT INTO base_child VALUES (2, 2, 'x');
";

fn measured() -> Stack {
    let stack = Stack::start(&format!("{USERS_SQL} {MEAS_SQL} {TRIGGER_SQL}"));
    stack
        .pg
        .execute("SELECT pgcache_watch('users'), pgcache_watch('meas'), pgcache_watch('base')");
    stack
}

/// Reads until `read` gives `expected`.
fn until_read(con: &mut redis::Connection, table: &str, pk: &str, expected: Option<&str>) {
    wait_for(
        &format!("READ {table} {pk} to be {expected:?}"),
        Duration::from_secs(10),
        || (read(con, table, pk).unwrap().as_deref() == expected).then_some(()),
    );
}

#[test]
fn partitioned_tables_and_inheritance_children_follow_every_change() {
    let stack = measured();
    let mut con = stack.con();
    let eu2 = r#"{"id":2,"region":"eu"}"#;
    read_until_cached(&mut con, "meas", eu2);
    read_until_cached(&mut con, "meas_eu", eu2);
    read_until_cached(&mut con, "meas", r#"{"id":4,"region":"eu"}"#);
    let pks = r#"[{"id":4,"region":"eu"},{"id":6,"region":"eu"}]"#;
    multiread(&mut con, "meas", pks).unwrap();
    let statements: [(&str, &[&str]); 3] = [
        ("SELECT v FROM meas WHERE id = $1", &["2"]),
        ("SELECT count(*) AS n FROM meas WHERE region = $1", &["us"]),
        ("SELECT sum(v) AS s FROM base", &[]),
    ];
    for (sql, params) in statements {
        query_until_cached(&mut con, sql, params);
    }
    // A user who may read the parent reads it whole, partitions included.
    add_acl_user(&mut con, "meas_only", &["~pg_cache:meas:*", "+@all"]);
    let mut meas_only = connect_as(stack.redis.port, "meas_only", "pw");
    assert_eq!(
        query(&mut meas_only, statements[0].0, statements[0].1).unwrap(),
        r#"[{"v":20}]"#
    );

    // Through the parent, and straight into a partition.
    stack.pg.execute("UPDATE meas SET v = 11 WHERE id = 2");
    let row = r#"{"id":2,"region":"eu","v":11}"#;
    until_read(&mut con, "meas", eu2, Some(row));
    until_read(&mut con, "meas_eu", eu2, Some(row));
    stack.pg.execute("UPDATE meas_eu SET v = 12 WHERE id = 4");
    wait_for("MULTIREAD to follow", Duration::from_secs(10), || {
        let rows: Vec<Option<String>> = multiread(&mut con, "meas", pks).unwrap();
        (rows[0].as_deref() == Some(r#"{"id":4,"region":"eu","v":12}"#)).then_some(())
    });
    until_postgres_answers(&stack, &mut con, statements[0].0, statements[0].1);

    // A row moving to another partition.
    stack
        .pg
        .execute("UPDATE meas SET region = 'us' WHERE id = 2");
    until_read(&mut con, "meas", eu2, None);
    until_read(
        &mut con,
        "meas",
        r#"{"id":2,"region":"us"}"#,
        Some(r#"{"id":2,"region":"us","v":11}"#),
    );
    until_postgres_answers(&stack, &mut con, statements[1].0, statements[1].1);

    // An inheritance child's rows are read through its parent.
    stack
        .pg
        .execute("INSERT INTO base_child VALUES (3, 30, 'y')");
    until_postgres_answers(&stack, &mut con, statements[2].0, statements[2].1);

    // Covered: HEALTH names neither table.
    if invalidation_source() == "replication" {
        let health = map_reply(&mut con, "PGCACHE.HEALTH");
        let warnings: Vec<String> = redis::from_redis_value(health["warnings"].clone()).unwrap();
        assert!(
            !warnings
                .iter()
                .any(|w| w.contains("meas") || w.contains("base")),
            "{warnings:?}"
        );
    }
}

#[test]
fn ddl_reaches_the_cache_through_the_feed() {
    let stack = measured();
    let mut con = stack.con();
    let count = "SELECT count(*) AS n FROM meas";
    query_until_cached(&mut con, count, &[]);
    read_until_cached(&mut con, "users", r#"{"id":1}"#);

    // A partition created later: its rows, written through the parent or into it.
    stack.pg.execute(
        "CREATE TABLE meas_asia PARTITION OF meas FOR VALUES IN ('asia');
         INSERT INTO meas VALUES (100, 'asia', 1);",
    );
    until_postgres_answers(&stack, &mut con, count, &[]);
    query_until_cached(&mut con, count, &[]);
    stack
        .pg
        .execute("INSERT INTO meas_asia VALUES (101, 'asia', 1)");
    until_postgres_answers(&stack, &mut con, count, &[]);
    assert_eq!(query(&mut con, count, &[]).unwrap(), r#"[{"n":22}]"#);

    // A view replaced, over the same table and then over another.
    stack
        .pg
        .execute("CREATE VIEW chosen AS SELECT id FROM users WHERE id <= 10");
    let chosen = "SELECT count(*) AS n FROM chosen";
    assert_eq!(query_until_cached(&mut con, chosen, &[]), r#"[{"n":10}]"#);
    stack
        .pg
        .execute("CREATE OR REPLACE VIEW chosen AS SELECT id FROM users WHERE id <= 20");
    until_postgres_answers(&stack, &mut con, chosen, &[]);
    stack
        .pg
        .execute("CREATE OR REPLACE VIEW chosen AS SELECT id FROM meas WHERE v = 1");
    until_postgres_answers(&stack, &mut con, chosen, &[]);
    query_until_cached(&mut con, chosen, &[]);
    stack.pg.execute("INSERT INTO meas VALUES (102, 'asia', 1)");
    until_postgres_answers(&stack, &mut con, chosen, &[]);
    assert_eq!(query(&mut con, chosen, &[]).unwrap(), r#"[{"n":3}]"#);

    // DDL reaching more partitions than one notification can name: still followed (and
    // the DDL itself still succeeds).
    stack.pg.execute(
        "CREATE TABLE wide (id integer NOT NULL, k integer NOT NULL, PRIMARY KEY (id, k))
           PARTITION BY LIST (k);
         SELECT pgcache_watch('wide');
         DO $$ BEGIN FOR i IN 1..80 LOOP
           EXECUTE format('CREATE TABLE wide_partition_with_a_long_name_%s PARTITION OF wide
                           FOR VALUES IN (%s)', i, i);
         END LOOP; END $$;
         INSERT INTO wide VALUES (1, 7);",
    );
    let part = "wide_partition_with_a_long_name_7";
    read_until_cached(&mut con, part, r#"{"id":1,"k":7}"#);
    stack
        .pg
        .execute("ALTER TABLE wide ADD COLUMN note text NOT NULL DEFAULT 'new'");
    until_read(
        &mut con,
        part,
        r#"{"id":1,"k":7}"#,
        Some(r#"{"id":1,"k":7,"note":"new"}"#),
    );

    // A column added with a default, a column's values rewritten: READ's rows follow.
    stack
        .pg
        .execute("ALTER TABLE users ADD COLUMN age integer NOT NULL DEFAULT 42");
    until_read(
        &mut con,
        "users",
        r#"{"id":1}"#,
        Some(r#"{"id":1,"name":"user1","email":"user1@example.com","age":42}"#),
    );
    read_until_cached(&mut con, "users", r#"{"id":1}"#);
    stack
        .pg
        .execute("ALTER TABLE users ALTER COLUMN name TYPE text USING upper(name)");
    until_read(
        &mut con,
        "users",
        r#"{"id":1}"#,
        Some(r#"{"id":1,"name":"USER1","email":"user1@example.com","age":42}"#),
    );
}

/// An unlogged table's changes are in no log: replication mode refuses it (pgcache_watch,
/// READ, QUERY) with the reason; notify mode's triggers see its changes and serve it.
#[test]
fn unlogged_tables_are_served_only_where_the_feed_sees_them() {
    let stack = Stack::start(&format!(
        "CREATE UNLOGGED TABLE sessions (id integer PRIMARY KEY, who text NOT NULL);
         INSERT INTO sessions VALUES (1, 'ada');
         {TRIGGER_SQL}"
    ));
    let mut con = stack.con();
    let sql = "SELECT who FROM sessions WHERE id = $1";
    if invalidation_source() == "replication" {
        let e = stack
            .pg
            .client()
            .batch_execute("SELECT pgcache_watch('sessions')")
            .unwrap_err();
        let e = e.as_db_error().unwrap().message().to_string();
        assert!(e.contains("UNLOGGED"), "{e}");
        let e = read(&mut con, "sessions", r#"{"id":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("UNLOGGED"), "{e}");
        let e = query(&mut con, sql, &["1"]).unwrap_err().to_string();
        assert!(e.contains("unlogged"), "{e}");
        return;
    }
    stack.pg.execute("SELECT pgcache_watch('sessions')");
    read_until_cached(&mut con, "sessions", r#"{"id":1}"#);
    query_until_cached(&mut con, sql, &["1"]);
    stack
        .pg
        .execute("UPDATE sessions SET who = 'grace' WHERE id = 1");
    until_read(
        &mut con,
        "sessions",
        r#"{"id":1}"#,
        Some(r#"{"id":1,"who":"grace"}"#),
    );
    until_postgres_answers(&stack, &mut con, sql, &["1"]);
}

/// HEALTH says when the publication leaves out what pgcache needs.
#[test]
fn health_names_what_the_publication_leaves_out() {
    if invalidation_source() != "replication" {
        return;
    }
    let stack = watched();
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":1}"#);
    stack
        .pg
        .superuser_of("app")
        .batch_execute("ALTER PUBLICATION pgcache SET (publish = 'insert, update')")
        .unwrap();
    let warnings = wait_for(
        "the publication's gap named",
        Duration::from_secs(20),
        || {
            let health = map_reply(&mut con, "PGCACHE.HEALTH");
            let warnings: Vec<String> = redis::from_redis_value(health["warnings"].clone()).ok()?;
            warnings
                .iter()
                .any(|w| w.contains("does not publish delete, truncate"))
                .then_some(warnings)
        },
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}
