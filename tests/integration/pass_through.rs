//! Pass-through: a statement whose cached results are dropped before anyone reads them
//! answers its misses from PostgreSQL without caching them, and is filled again once its
//! results live.
use crate::query::{postgres_answer, query, query_until_cached};
use pgcache_testkit::*;
use std::collections::HashMap;
use std::time::Duration;

const COUNTERS_SQL: &str = "
    CREATE TABLE counters (id integer PRIMARY KEY, n integer NOT NULL);
    INSERT INTO counters SELECT g, 0 FROM generate_series(1, 50) g;
";
const BY_ID: &str = "SELECT n FROM counters WHERE id = $1";

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

fn random_id(rng: &mut Rng) -> String {
    (1 + rng.below(50)).to_string()
}

#[test]
fn a_statement_whose_results_die_unread_passes_through_until_its_table_stops_changing() {
    let stack = Stack::start(&format!("{COUNTERS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute("SELECT pgcache_watch('counters')");
    let mut con = stack.con();
    let mut pg = stack.pg.client();
    let mut rng = Rng::new(0x39_0003);
    query_until_cached(&mut con, BY_ID, &["1"]);
    assert_eq!(int(&line(&mut con), "pass_through"), 0);
    assert_eq!(line(&mut con)["pass_through_judged_on"], redis::Value::Nil);

    // Every row changes before each read: no result lives to be hit.
    wait_for(
        "the statement to pass through",
        Duration::from_secs(60),
        || {
            for _ in 0..50 {
                pg.batch_execute("UPDATE counters SET n = n + 1").unwrap();
                query(&mut con, BY_ID, &[&random_id(&mut rng)]).unwrap();
            }
            (int(&line(&mut con), "pass_through") == 1).then_some(())
        },
    );
    let judged = nested(&line(&mut con)["pass_through_judged_on"]);
    let hits_per_fill: f64 = redis::from_redis_value(judged["hits_per_fill"].clone()).unwrap();
    let hit_ratio: f64 = redis::from_redis_value(judged["hit_ratio"].clone()).unwrap();
    assert!(hits_per_fill < 0.05 && hit_ratio < 0.05, "{judged:?}");

    // Its answers are PostgreSQL's, passed through.
    let passed = int(&line(&mut con), "passed_through");
    for id in 1..=50 {
        let id = id.to_string();
        let expected = postgres_answer(&stack, BY_ID, &[&id]);
        wait_for(
            &format!("id {id}'s answer"),
            Duration::from_secs(10),
            || (json(&query(&mut con, BY_ID, &[&id]).unwrap()) == expected).then_some(()),
        );
    }
    assert!(int(&line(&mut con), "passed_through") > passed);

    // The table stopped changing: the results filled now and then live to be hit, and the
    // statement is filled again.
    wait_for(
        "the statement to be filled again",
        Duration::from_secs(60),
        || {
            for _ in 0..100 {
                query(&mut con, BY_ID, &[&random_id(&mut rng)]).unwrap();
            }
            (int(&line(&mut con), "pass_through") == 0).then_some(())
        },
    );
    let judged = nested(&line(&mut con)["pass_through_judged_on"]);
    let hits_per_fill: f64 = redis::from_redis_value(judged["hits_per_fill"].clone()).unwrap();
    assert!(hits_per_fill >= 0.25, "{judged:?}");
    let passed = int(&line(&mut con), "passed_through");
    for id in 1..=50 {
        query_until_cached(&mut con, BY_ID, &[&id.to_string()]);
    }
    assert_eq!(int(&line(&mut con), "passed_through"), passed);

    // The setting overrides the judgement.
    config_set(&mut con, "pgcache.query_pass_through", "always").unwrap();
    assert_eq!(int(&line(&mut con), "pass_through"), 1);
    config_set(&mut con, "pgcache.query_pass_through", "never").unwrap();
    assert_eq!(int(&line(&mut con), "pass_through"), 0);
}
