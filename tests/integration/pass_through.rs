//! Pass-through: a QUERY statement whose cached results, or a table whose READ rows, are
//! dropped before anyone reads them answers its misses from PostgreSQL without caching them,
//! and is filled again once its entries live.
use crate::query::{postgres_answer, query, query_until_cached};
use pgcache_testkit::*;
use std::collections::HashMap;
use std::time::Duration;

const COUNTERS_SQL: &str = "
    CREATE TABLE counters (id integer PRIMARY KEY, n integer NOT NULL);
    INSERT INTO counters SELECT g, 0 FROM generate_series(1, 50) g;
";
const BY_ID: &str = "SELECT n FROM counters WHERE id = $1";

fn counters() -> Stack {
    let stack = Stack::start(&format!(
        "{COUNTERS_SQL} {TRIGGER_SQL}
         CREATE TABLE marker (id integer PRIMARY KEY, v integer NOT NULL);
         INSERT INTO marker VALUES (1, 0);"
    ));
    stack
        .pg
        .execute("SELECT pgcache_watch('counters'); SELECT pgcache_watch('marker')");
    stack
}

/// The statement's line of PGCACHE.QUERIES.
fn line(con: &mut redis::Connection) -> HashMap<String, redis::Value> {
    let listed: Vec<redis::Value> = redis::cmd("PGCACHE.QUERIES").query(con).unwrap();
    listed
        .iter()
        .map(nested)
        .find(|m| redis::from_redis_value::<String>(m["statement"].clone()).unwrap() == BY_ID)
        .expect("the statement is listed")
}

fn int(line: &HashMap<String, redis::Value>, name: &str) -> i64 {
    redis::from_redis_value(line[name].clone()).unwrap()
}

/// The counters table's figure `name` in PGCACHE.STATS.
fn table_figure(con: &mut redis::Connection, name: &str) -> i64 {
    let stats = map_reply(con, "PGCACHE.STATS");
    figure(&nested(&nested(&stats["tables"])["counters"]), name)
}

/// Every row changes, and once the change feed applied that (a marker row changed in the
/// same transaction left the cache), each is read once: nothing cached lives to be hit. (A
/// feed running behind would leave results of the reads before to be hit.)
fn read_behind_changes(stack: &Stack, con: &mut redis::Connection, read: &mut impl FnMut(i32)) {
    const MARKER: &str = r#"pg_cache:marker:{"id":1}"#;
    read_until_cached(con, "marker", r#"{"id":1}"#);
    stack
        .pg
        .execute("BEGIN; UPDATE counters SET n = n + 1; UPDATE marker SET v = v + 1; COMMIT");
    wait_gone(con, MARKER);
    for id in 1..=50 {
        read(id);
    }
}

/// Reads of random rows while the table stands still.
fn read_still(rng: &mut Rng, read: &mut impl FnMut(i32)) {
    for _ in 0..100 {
        read(1 + rng.below(50) as i32);
    }
}

/// Each of the 50 rows is answered as PostgreSQL answers (`postgres`), once the change
/// feed has applied what came before.
fn answers_are_postgres_s(
    mut postgres: impl FnMut(i32) -> serde_json::Value,
    mut answered: impl FnMut(i32) -> serde_json::Value,
) {
    for id in 1..=50 {
        let expected = postgres(id);
        wait_for(
            &format!("id {id}'s answer"),
            Duration::from_secs(10),
            || (answered(id) == expected).then_some(()),
        );
    }
}

#[test]
fn a_statement_whose_results_die_unread_passes_through_until_its_table_stops_changing() {
    let stack = counters();
    let mut con = stack.con();
    let mut reader = stack.con();
    let mut read = |id: i32| {
        query(&mut reader, BY_ID, &[&id.to_string()]).unwrap();
    };
    query_until_cached(&mut con, BY_ID, &["1"]);
    assert_eq!(int(&line(&mut con), "pass_through"), 0);
    assert_eq!(line(&mut con)["pass_through_judged_on"], redis::Value::Nil);

    wait_for(
        "the statement to pass through",
        Duration::from_secs(60),
        || {
            read_behind_changes(&stack, &mut con, &mut read);
            (int(&line(&mut con), "pass_through") == 1).then_some(())
        },
    );
    let judged = nested(&line(&mut con)["pass_through_judged_on"]);
    let hits_per_miss: f64 = redis::from_redis_value(judged["hits_per_miss"].clone()).unwrap();
    let hit_ratio: f64 = redis::from_redis_value(judged["hit_ratio"].clone()).unwrap();
    assert!(hits_per_miss < 0.05 && hit_ratio < 0.05, "{judged:?}");
    let passed = int(&line(&mut con), "passed_through");
    read_behind_changes(&stack, &mut con, &mut read);
    assert!(int(&line(&mut con), "passed_through") > passed);
    answers_are_postgres_s(
        |id| postgres_answer(&stack, BY_ID, &[&id.to_string()]),
        |id| json(&query(&mut con, BY_ID, &[&id.to_string()]).unwrap()),
    );

    // The table stopped changing: the results filled now and then live to be hit, and the
    // statement is filled again.
    let mut rng = Rng::new(0x39_0003);
    wait_for(
        "the statement to be filled again",
        Duration::from_secs(60),
        || {
            read_still(&mut rng, &mut read);
            (int(&line(&mut con), "pass_through") == 0).then_some(())
        },
    );
    let judged = nested(&line(&mut con)["pass_through_judged_on"]);
    let hits_per_miss: f64 = redis::from_redis_value(judged["hits_per_miss"].clone()).unwrap();
    assert!(hits_per_miss >= 0.25, "{judged:?}");
    let passed = int(&line(&mut con), "passed_through");
    for id in 1..=50 {
        query_until_cached(&mut con, BY_ID, &[&id.to_string()]);
    }
    assert_eq!(int(&line(&mut con), "passed_through"), passed);

    // The setting overrides the judgement.
    config_set(&mut con, "pgcache.pass_through", "always").unwrap();
    assert_eq!(int(&line(&mut con), "pass_through"), 1);
    config_set(&mut con, "pgcache.pass_through", "never").unwrap();
    assert_eq!(int(&line(&mut con), "pass_through"), 0);
}

#[test]
fn a_table_whose_rows_change_faster_than_they_are_read_passes_read_misses_through() {
    let stack = counters();
    let mut con = stack.con();
    let mut reader = stack.con();
    let pk = |id: i32| format!(r#"{{"id":{id}}}"#);
    let mut read_row = |id: i32| {
        read(&mut reader, "counters", &pk(id)).unwrap();
    };
    read_until_cached(&mut con, "counters", &pk(1));
    assert_eq!(table_figure(&mut con, "pass_through"), 0);

    wait_for("the table to pass through", Duration::from_secs(60), || {
        read_behind_changes(&stack, &mut con, &mut read_row);
        (table_figure(&mut con, "pass_through") == 1).then_some(())
    });
    let passed = table_figure(&mut con, "passed_through");
    read_behind_changes(&stack, &mut con, &mut read_row);
    assert!(table_figure(&mut con, "passed_through") > passed);
    let mut pg = stack.pg.client();
    answers_are_postgres_s(
        |id| {
            let n: i32 = pg
                .query_one("SELECT n FROM counters WHERE id = $1", &[&id])
                .unwrap()
                .get(0);
            serde_json::json!(n)
        },
        |id| json(&read(&mut con, "counters", &pk(id)).unwrap().unwrap())["n"].clone(),
    );

    // The table stopped changing: the rows filled now and then live to be hit, and READ
    // caches them again.
    let mut rng = Rng::new(0x39_0004);
    wait_for(
        "the table to be filled again",
        Duration::from_secs(60),
        || {
            read_still(&mut rng, &mut read_row);
            (table_figure(&mut con, "pass_through") == 0).then_some(())
        },
    );
    let passed = table_figure(&mut con, "passed_through");
    for id in 1..=50 {
        read_until_cached(&mut con, "counters", &pk(id));
    }
    assert_eq!(table_figure(&mut con, "passed_through"), passed);
    assert!(exists(&mut con, r#"pg_cache:counters:{"id":50}"#));
}

/// A named source judges by its own `pass_through`: loaded with `always` beside a default
/// source left to judge, its READ and QUERY misses pass through (all but the one in 16 still
/// filled), and its reports say so, while the default source's fill as before.
#[test]
fn a_named_source_passes_through_by_its_own_setting() {
    use crate::sources::{A, analytics_sql, default_sql};
    let pg = Pg::start();
    pg.execute(&default_sql());
    pg.create_database(A, &analytics_sql());
    let mut args = pg.module_args();
    args.extend(pg.source_args(A, A));
    args.extend(["pass_through".to_string(), "always".to_string()]);
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    let statement = "SELECT name FROM users WHERE id = $1";
    let stats = |con: &mut redis::Connection, source: &[&str]| {
        let stats: redis::Value = redis::cmd("PGCACHE.STATS").arg(source).query(con).unwrap();
        nested(&stats)
    };
    // Misses pass through only while hits are served: before, nothing is cached anyway.
    for source in [&[][..], &["SOURCE", A]] {
        wait_for("hits served", Duration::from_secs(20), || {
            (figure(&stats(&mut con, source), "hits_served") == 1).then_some(())
        });
    }
    for id in 1..=17 {
        for source in [None, Some(A)] {
            let mut read = redis::cmd("PGCACHE.READ");
            read.arg("users").arg(format!(r#"{{"id":{id}}}"#));
            let mut query = redis::cmd("PGCACHE.QUERY");
            query.arg(statement).arg(1).arg(id);
            if let Some(name) = source {
                read.arg("SOURCE").arg(name);
                query.arg("SOURCE").arg(name);
            }
            let row: String = query_through_interrupts(&read, &mut con).unwrap();
            let wanted = match source {
                None => format!("user{id}"),
                Some(_) => format!("analytics{id}"),
            };
            assert_eq!(json(&row)["name"], wanted);
            let _: redis::Value = query_through_interrupts(&query, &mut con).unwrap();
        }
    }
    let count = |con: &mut redis::Connection, pattern: &str| {
        redis::cmd("KEYS")
            .arg(pattern)
            .query::<Vec<String>>(con)
            .unwrap()
            .len()
    };
    // One miss in 16 is filled under `always`: the 1st and the 17th.
    assert_eq!(count(&mut con, "pg_cache:@analytics:users:{*"), 2);
    assert_eq!(count(&mut con, "pg_cache:@analytics:~q:*"), 2);
    assert_eq!(count(&mut con, "pg_cache:users:{*"), 17);
    assert_eq!(count(&mut con, "pg_cache:~q:*"), 17);

    let users = |stats: &HashMap<String, redis::Value>| nested(&nested(&stats["tables"])["users"]);
    let named_users = users(&stats(&mut con, &["SOURCE", A]));
    assert_eq!(figure(&named_users, "pass_through"), 1);
    assert_eq!(figure(&named_users, "passed_through"), 15);
    let default_users = users(&stats(&mut con, &[]));
    assert_eq!(figure(&default_users, "pass_through"), 0);
    assert_eq!(figure(&default_users, "passed_through"), 0);

    let listed = |con: &mut redis::Connection, source: &[&str]| {
        let all: Vec<redis::Value> = redis::cmd("PGCACHE.QUERIES")
            .arg(source)
            .query(con)
            .unwrap();
        (all.iter().map(nested))
            .find(|m| {
                redis::from_redis_value::<String>(m["statement"].clone()).unwrap() == statement
            })
            .expect("the statement is listed")
    };
    assert_eq!(int(&listed(&mut con, &["SOURCE", A]), "pass_through"), 1);
    assert_eq!(int(&listed(&mut con, &[]), "pass_through"), 0);
}
