//! QUERY's statements per source (issue #53 step 8): PGCACHE.QUERIES and EXPLAIN take
//! `SOURCE name`, and a source's figures are its own.

use pgcache_testkit::*;
use std::collections::HashMap;
use std::time::Duration;

/// The named source of these tests, and the database it reads (of the same name).
const A: &str = "analytics";

const SQL: &str = "SELECT name FROM users WHERE id = $1";

/// The named database: `users` with other rows than the default's, and a table `events`
/// that only it has.
fn analytics_sql() -> String {
    format!(
        "CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL, email text);
         INSERT INTO users SELECT g, 'analytics' || g, NULL FROM generate_series(1, 200) g;
         CREATE TABLE events (id integer PRIMARY KEY, kind text NOT NULL);
         {TRIGGER_SQL} SELECT pgcache_watch('users'); SELECT pgcache_watch('events');"
    )
}

fn two_sources() -> Stack {
    Stack::start_with_sources(
        &format!("{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users');"),
        &[(A, &analytics_sql())],
        &[],
    )
}

/// `cmd` with `SOURCE source` appended when a source is given.
fn sourced(mut cmd: redis::Cmd, source: Option<&str>) -> redis::Cmd {
    if let Some(name) = source {
        cmd.arg("SOURCE").arg(name);
    }
    cmd
}

fn query_of(con: &mut redis::Connection, source: Option<&str>, id: &str) -> String {
    let mut cmd = redis::cmd("PGCACHE.QUERY");
    cmd.arg(SQL).arg(1).arg(id);
    query_through_interrupts(&sourced(cmd, source), con).unwrap()
}

/// `source`'s QUERIES line of `SQL` (None when it is not listed), as name -> integer figure.
fn line_of(con: &mut redis::Connection, source: Option<&str>) -> Option<HashMap<String, i64>> {
    let listed: Vec<redis::Value> = sourced(redis::cmd("PGCACHE.QUERIES"), source)
        .query(con)
        .unwrap();
    let lines: Vec<_> = listed
        .iter()
        .map(nested)
        .filter(|m| redis::from_redis_value::<String>(m["statement"].clone()).unwrap() == SQL)
        .collect();
    assert!(lines.len() <= 1, "listed once: {lines:?}");
    lines.first().map(|m| {
        m.iter()
            .filter_map(|(k, v)| Some((k.clone(), redis::from_redis_value::<i64>(v.clone()).ok()?)))
            .collect()
    })
}

/// Queries `SQL` on `source` until a call of it is a hit; its QUERIES line then.
fn until_hit(con: &mut redis::Connection, source: Option<&str>) -> HashMap<String, i64> {
    wait_for("a hit", Duration::from_secs(10), || {
        query_of(con, source, "7");
        line_of(con, source).filter(|line| line["hits"] >= 1)
    })
}

fn explain(
    con: &mut redis::Connection,
    sql: &str,
    source: Option<&str>,
) -> HashMap<String, redis::Value> {
    let mut cmd = redis::cmd("PGCACHE.EXPLAIN");
    cmd.arg(sql);
    let reply: redis::Value = sourced(cmd, source).query(con).unwrap();
    nested(&reply)
}

#[test]
fn explain_and_queries_per_source() {
    let stack = two_sources();
    let mut con = stack.con();
    assert_eq!(query_of(&mut con, None, "7"), r#"[{"name":"user7"}]"#);
    assert_eq!(
        query_of(&mut con, Some(A), "7"),
        r#"[{"name":"analytics7"}]"#
    );

    let default = until_hit(&mut con, None);
    let named = until_hit(&mut con, Some(A));
    // The default's figures did not move with the named source's calls.
    let default_after = line_of(&mut con, None).unwrap();
    assert_eq!(default["hits"], default_after["hits"], "{default_after:?}");
    assert_eq!(
        default["calls"], default_after["calls"],
        "{default_after:?}"
    );
    assert!(named["misses"] >= 1 && named["hits"] >= 1, "{named:?}");

    // RESET with SOURCE resets that source's only.
    let reset: String = redis::cmd("PGCACHE.QUERIES")
        .arg("RESET")
        .arg("SOURCE")
        .arg(A)
        .query(&mut con)
        .unwrap();
    assert_eq!(reset, "OK");
    let named = line_of(&mut con, Some(A)).expect("still listed after RESET");
    assert_eq!((named["calls"], named["hits"]), (0, 0), "{named:?}");
    let default_after = line_of(&mut con, None).unwrap();
    assert_eq!(
        default["calls"], default_after["calls"],
        "{default_after:?}"
    );

    // EXPLAIN reads the source's catalog: `events` is the named database's only.
    let events = "SELECT kind FROM events WHERE id = ?";
    let there = explain(&mut con, events, Some(A));
    assert_eq!(
        redis::from_redis_value::<i64>(there["cacheable"].clone()).unwrap(),
        1,
        "{there:?}"
    );
    assert_eq!(
        redis::from_redis_value::<Vec<String>>(there["tables"].clone()).unwrap(),
        ["events"]
    );
    let not_here = explain(&mut con, events, None);
    assert_eq!(
        redis::from_redis_value::<i64>(not_here["cacheable"].clone()).unwrap(),
        0,
        "{not_here:?}"
    );

    // An unknown source is refused by both.
    for mut cmd in [redis::cmd("PGCACHE.QUERIES"), redis::cmd("PGCACHE.EXPLAIN")] {
        if cmd.get_packed_command().ends_with(b"EXPLAIN\r\n") {
            cmd.arg(SQL);
        }
        let refused = cmd
            .arg("SOURCE")
            .arg("nosuch")
            .query::<redis::Value>(&mut con);
        assert!(refused.is_err(), "{refused:?}");
    }
}

/// The model's schema (query.rs's `watched()` and its model's additions), the same in both
/// databases.
fn model_schema() -> String {
    use crate::query::{MODEL_SQL, ORDERS_SQL};
    format!(
        "{USERS_SQL} {ORDERS_SQL} {TRIGGER_SQL}
         SELECT pgcache_watch('users'); SELECT pgcache_watch('orders');
         ALTER TABLE orders ADD COLUMN memo text;
         ALTER TABLE orders ALTER COLUMN memo SET STORAGE EXTERNAL;
         UPDATE orders SET memo = CASE WHEN id % 3 = 0 THEN 'a' WHEN id % 3 = 1 THEN 'b' END;
         {MODEL_SQL}"
    )
}

/// query.rs's random model over two sources with the same schema and different rows: after
/// each random write to one of them, every statement read on both must answer its own
/// database's answer (AFTER the write's position on the source written to, in replication
/// mode; once equal, in notify mode). `PGCACHE_QUERY_MODEL_STEPS` sets the writes (default 60).
#[test]
fn a_random_model_over_two_sources() {
    use crate::query::{MODEL_STATEMENTS, answer_of, model_params, model_write};
    let steps: usize = std::env::var("PGCACHE_QUERY_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let positions = invalidation_source() == "replication";
    let schema = model_schema();
    let stack = Stack::start_with_sources(&schema, &[(A, &schema)], &[]);
    // Different rows: writes applied to the named database only, before the model starts.
    let mut rng = Rng::new(0x5eed_0053);
    let mut attached = [false, false];
    {
        let mut pg = stack.pg.client_of(A);
        for _ in 0..200 {
            pg.batch_execute(&model_write(&mut rng, &mut attached[1]))
                .unwrap();
        }
    }
    let mut con = stack.con();
    config_set(&mut con, "pgcache.after_wait_ms", "1000").unwrap();
    let sources = [None, Some(A)];
    let read = |con: &mut redis::Connection,
                source: Option<&str>,
                sql: &str,
                refs: &[&str],
                lsn: Option<&str>| {
        let mut call = redis::cmd("PGCACHE.QUERY");
        call.arg(sql).arg(refs.len()).arg(refs);
        if let Some(lsn) = lsn {
            call.arg("AFTER").arg(lsn);
        }
        let call = sourced(call, source);
        // The model replaces a view now and then: a statement learned while that DDL reaches
        // the cache again and again is refused with "try again", as a client would be.
        let mut answer = query_through_interrupts::<String>(&call, con);
        for _ in 0..5 {
            match &answer {
                Err(e) if e.to_string().contains("kept changing (DDL)") => {
                    answer = query_through_interrupts(&call, con);
                }
                _ => break,
            }
        }
        serde_json::from_str::<serde_json::Value>(&answer.unwrap()).unwrap()
    };
    let mut differing = 0;
    for step in 0..steps {
        let written = rng.below(2);
        let write = model_write(&mut rng, &mut attached[written]);
        let mut pg = match sources[written] {
            None => stack.pg.client(),
            Some(name) => stack.pg.client_of(name),
        };
        pg.batch_execute(&write).unwrap();
        let lsn: String = pg
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .unwrap()
            .get(0);
        for (i, sql) in MODEL_STATEMENTS.iter().enumerate() {
            let params = model_params(&mut rng, i);
            let refs: Vec<&str> = params.iter().map(String::as_str).collect();
            let pg_sql = sql.replace('?', "$1");
            let expected = [
                answer_of(stack.pg.client(), &pg_sql, &refs),
                answer_of(stack.pg.client_of(A), &pg_sql, &refs),
            ];
            differing += usize::from(expected[0] != expected[1]);
            for (s, source) in sources.iter().enumerate() {
                let what = format!(
                    "step {step}, after `{write}` on {:?}: {sql} {refs:?} SOURCE {source:?}",
                    sources[written]
                );
                // Positions are per source: AFTER goes with the source written to only.
                let after = (positions && s == written).then_some(lsn.as_str());
                if positions {
                    assert_eq!(
                        read(&mut con, *source, sql, &refs, after),
                        expected[s],
                        "{what}"
                    );
                } else {
                    wait_for(
                        &format!("{what} to answer {}", expected[s]),
                        Duration::from_secs(10),
                        || (read(&mut con, *source, sql, &refs, None) == expected[s]).then_some(()),
                    );
                }
            }
        }
    }
    assert!(differing > 0, "the two databases' answers differ somewhere");
    for source in sources {
        let listed: Vec<redis::Value> = sourced(redis::cmd("PGCACHE.QUERIES"), source)
            .query(&mut con)
            .unwrap();
        let hits: i64 = listed
            .iter()
            .map(|line| redis::from_redis_value::<i64>(nested(line)["hits"].clone()).unwrap())
            .sum();
        assert!(
            hits > 0,
            "the model read results of {source:?} from the cache"
        );
    }
}
