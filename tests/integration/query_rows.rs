//! PGCACHE.QUERY's row precision: in replication mode a change drops only the results of a
//! single-table statement it can affect (rows entering by their new values, members leaving
//! or changing), and keeps the others; in notify mode every result over the table goes.

use crate::query::{
    commit_and_position, postgres_answer, query, query_after, query_until_cached, read_after,
    watched,
};
use pgcache_testkit::*;
use std::time::Duration;

const BY_USER: &str = "SELECT id, total FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT 3";

pub(crate) fn row_precision() -> bool {
    invalidation_source() == "replication"
}

/// A stack whose reads AFTER a position wait for the feed to apply it (long enough for
/// this machine), so they are answered from the cache when it holds the result.
pub(crate) fn stack() -> (Stack, redis::Connection) {
    let stack = watched();
    let mut con = stack.con();
    config_set(&mut con, "pgcache.after_wait_ms", "1000").unwrap();
    (stack, con)
}

/// Caches BY_USER for users 1..=5, commits `write`, and returns which users' results were
/// dropped by it (each checked against PostgreSQL's own answer).
fn dropped_by(stack: &Stack, con: &mut redis::Connection, write: &str) -> Vec<u32> {
    for user in 1..=5 {
        query_until_cached(con, BY_USER, &[&user.to_string()]);
    }
    let lsn = commit_and_position(stack, write);
    let mut dropped = Vec::new();
    for user in 1..=5u32 {
        let param = user.to_string();
        let (hit, answer) = read_after(con, BY_USER, &[&param], &lsn);
        assert_eq!(
            json(&answer),
            postgres_answer(stack, BY_USER, &[&param]),
            "after `{write}`: user {user}"
        );
        if !hit {
            dropped.push(user);
        }
    }
    dropped
}

#[test]
fn a_change_drops_only_the_results_it_can_affect() {
    let (stack, mut con) = stack();
    let every = vec![1, 2, 3, 4, 5];
    // Order n belongs to user 1 + n % 5: user 4's newest three are 48, 43, 38.
    let cases = [
        ("UPDATE orders SET total = 1 WHERE id = 48", vec![4]),
        // An older order of user 3, outside its full page of the newest three, and still
        // sorting after its last row: nothing.
        ("UPDATE orders SET total = 2 WHERE id = 2", vec![]),
        // A row enters user 2's result.
        (
            "INSERT INTO orders (id, user_id, total) VALUES (2001, 2, 5)",
            vec![2],
        ),
        // A row leaves user 5's result and enters user 1's.
        ("UPDATE orders SET user_id = 1 WHERE id = 49", vec![1, 5]),
        // A row is deleted from user 2's.
        ("DELETE FROM orders WHERE id = 2001", vec![2]),
        // A row of no user cached.
        (
            "INSERT INTO orders (id, user_id, total) VALUES (2002, 99, 5)",
            vec![],
        ),
        // A change to another table.
        ("UPDATE users SET name = 'x' WHERE id = 1", vec![]),
    ];
    for (write, expected) in cases {
        let dropped = dropped_by(&stack, &mut con, write);
        if row_precision() {
            assert_eq!(dropped, expected, "`{write}`");
        } else if write.contains("orders") {
            assert_eq!(dropped, every, "`{write}`: notify mode drops per table");
        }
    }
    // TRUNCATE drops every result over the table.
    let dropped = dropped_by(&stack, &mut con, "TRUNCATE orders");
    assert_eq!(dropped, every);
    if row_precision() {
        assert!(stats_figure(&mut con, "query_index_results") >= 1);
        assert!(stats_figure(&mut con, "query_index_bytes") > 0);
    }
}

/// Caches `sql` for each parameter set of `sets`, commits `write`, and returns which sets'
/// results were dropped by it (each checked against PostgreSQL's own answer).
pub(crate) fn dropped_among(
    stack: &Stack,
    con: &mut redis::Connection,
    sql: &str,
    sets: &[&[&str]],
    write: &str,
) -> Vec<usize> {
    for params in sets {
        query_until_cached(con, sql, params);
    }
    let lsn = commit_and_position(stack, write);
    let mut dropped = Vec::new();
    for (n, params) in sets.iter().enumerate() {
        let (hit, answer) = read_after(con, sql, params, &lsn);
        assert_eq!(
            json(&answer),
            postgres_answer(stack, sql, params),
            "`{sql}` with {params:?} after `{write}`"
        );
        if !hit {
            dropped.push(n);
        }
    }
    dropped
}

/// A statement, its parameter sets, and writes with the sets each drops.
pub(crate) type Case<'a> = (&'a str, Vec<&'a [&'a str]>, Vec<(&'a str, Vec<usize>)>);

#[test]
fn ranges_patterns_nulls_or_and_aggregates_keep_what_no_change_can_affect() {
    let (stack, mut con) = stack();
    // (statement, parameter sets, [(write, the sets it drops)]). Order n has total n × 1.10,
    // user 1 + n % 5 and was placed n hours after 2024-05-01 10:00 UTC.
    let between = "SELECT id FROM orders WHERE total BETWEEN $1 AND $2 ORDER BY id";
    let since = "SELECT id FROM orders WHERE placed >= $1 AND NOT user_id IN (3, 4) \
                 ORDER BY placed DESC";
    let either = "SELECT id FROM orders WHERE user_id = ANY($1) OR total > $2 ORDER BY id";
    let named = "SELECT id FROM users WHERE name LIKE $1 OR email IS NULL ORDER BY id";
    let pattern = "SELECT id FROM users WHERE name ~ $1 ORDER BY id";
    let upper = r#"SELECT id FROM users WHERE UPPER("users"."name"::text) LIKE UPPER($1)"#;
    let counts = "SELECT user_id, count(*) AS n, sum(total) AS s FROM orders \
                  WHERE user_id IN ($1, $2) GROUP BY user_id HAVING count(*) > 0 ORDER BY user_id";
    let ranked = "SELECT id, rank() OVER (ORDER BY total DESC) AS r FROM orders \
                  WHERE user_id = $1 ORDER BY id";
    let cases: Vec<Case> = vec![
        (
            between,
            vec![&["0", "5"], &["40", "45"]],
            vec![
                ("UPDATE orders SET user_id = 2 WHERE id = 20", vec![]),
                (
                    "INSERT INTO orders (id, user_id, total) VALUES (3001, 1, 4.9)",
                    vec![0],
                ),
                ("UPDATE orders SET total = 41 WHERE id = 25", vec![1]),
                ("UPDATE orders SET total = 100 WHERE id = 2", vec![0]),
            ],
        ),
        (
            since,
            vec![&["2024-05-03T00:00:00Z"], &["2024-05-03T00:00:00+02:00"]],
            vec![
                // Placed before either bound.
                (
                    "INSERT INTO orders (id, user_id, total) VALUES (3002, 1, 1)",
                    vec![],
                ),
                // Between the two bounds: only the earlier bound's result.
                (
                    "INSERT INTO orders (id, user_id, total, placed) \
                     VALUES (3003, 1, 1, '2024-05-02T23:00:00Z')",
                    vec![1],
                ),
                // After both, but of user 3.
                (
                    "INSERT INTO orders (id, user_id, total, placed) \
                     VALUES (3004, 3, 1, '2024-06-01T00:00:00Z')",
                    vec![],
                ),
            ],
        ),
        (
            either,
            vec![&["{1,2}", "1000"], &["{4}", "50"]],
            vec![
                (
                    "INSERT INTO orders (id, user_id, total) VALUES (3005, 3, 10)",
                    vec![],
                ),
                (
                    "INSERT INTO orders (id, user_id, total) VALUES (3006, 2, 10)",
                    vec![0],
                ),
                (
                    "INSERT INTO orders (id, user_id, total) VALUES (3007, 3, 60)",
                    vec![1],
                ),
            ],
        ),
        (
            named,
            vec![&["user1%"], &["user2%"]],
            vec![
                ("UPDATE users SET name = 'user150x' WHERE id = 150", vec![0]),
                ("INSERT INTO users VALUES (500, 'user25', 'x@y')", vec![1]),
                ("INSERT INTO users VALUES (501, 'zed', NULL)", vec![0, 1]),
                ("INSERT INTO users VALUES (502, 'zed', 'z@z')", vec![]),
            ],
        ),
        (
            pattern,
            vec![&["^user1[0-9]$"], &["7$"]],
            vec![
                ("INSERT INTO users VALUES (505, 'user17x', NULL)", vec![]),
                ("INSERT INTO users VALUES (506, 'user19', NULL)", vec![0]),
                ("INSERT INTO users VALUES (507, 'zzz7', NULL)", vec![1]),
            ],
        ),
        (
            counts,
            vec![&["1", "2"], &["3", "4"]],
            vec![
                ("UPDATE orders SET total = total + 1 WHERE id = 5", vec![0]),
                (
                    "INSERT INTO orders (id, user_id, total) VALUES (3010, 4, 1)",
                    vec![1],
                ),
                (
                    "INSERT INTO orders (id, user_id, total) VALUES (3011, 5, 1)",
                    vec![],
                ),
            ],
        ),
        (
            ranked,
            vec![&["2"], &["3"]],
            vec![
                ("UPDATE orders SET total = 0 WHERE id = 7", vec![1]),
                ("DELETE FROM orders WHERE id = 3011", vec![]),
            ],
        ),
        (
            upper,
            vec![&["%R3%"], &["%9"]],
            vec![
                ("INSERT INTO users VALUES (503, 'USER3000', NULL)", vec![0]),
                ("INSERT INTO users VALUES (504, 'nobody', NULL)", vec![]),
            ],
        ),
    ];
    for (sql, sets, writes) in cases {
        for (write, expected) in writes {
            let dropped = dropped_among(&stack, &mut con, sql, &sets, write);
            if row_precision() {
                assert_eq!(dropped, expected, "`{sql}` after `{write}`");
            } else {
                assert_eq!(dropped.len(), sets.len(), "notify mode drops per table");
            }
        }
        let explained: redis::Value = redis::cmd("PGCACHE.EXPLAIN")
            .arg(sql)
            .query(&mut con)
            .unwrap();
        let precision = nested(&explained)["precision"].clone();
        assert_eq!(
            redis::from_redis_value::<String>(precision).unwrap(),
            if row_precision() { "row" } else { "table" },
            "{sql}"
        );
    }
}

#[test]
fn a_full_page_keeps_the_rows_that_sort_after_its_last() {
    let (stack, mut con) = stack();
    let top = "SELECT id, total FROM orders WHERE total > $1 ORDER BY total DESC, id LIMIT $2";
    // The first set's page is full (3 of 50 rows); the second's is not.
    let sets: Vec<&[&str]> = vec![&["0", "3"], &["0", "200"]];
    let cases = [
        // Sorts after the first page's last row: only the page that is not full goes.
        (
            "INSERT INTO orders (id, user_id, total) VALUES (4001, 1, 1)",
            vec![1],
        ),
        // Sorts before it.
        (
            "INSERT INTO orders (id, user_id, total) VALUES (4002, 1, 1000)",
            vec![0, 1],
        ),
        // A row off the first page changes and stays after it.
        ("UPDATE orders SET total = 2 WHERE id = 10", vec![1]),
        // A row of the first page leaves it.
        ("UPDATE orders SET total = 0.5 WHERE id = 50", vec![0, 1]),
        // The last row's total (52.8, order 48's), a smaller id: it sorts before, and is
        // the last row now.
        ("UPDATE orders SET total = 52.8 WHERE id = 5", vec![0, 1]),
        // The same total, a larger id: after.
        (
            "INSERT INTO orders (id, user_id, total) VALUES (4003, 1, 52.80)",
            vec![1],
        ),
    ];
    for (write, expected) in cases {
        let dropped = dropped_among(&stack, &mut con, top, &sets, write);
        if row_precision() {
            assert_eq!(dropped, expected, "`{write}`");
        } else {
            assert_eq!(dropped, [0, 1], "notify mode drops per table");
        }
    } // A page deeper than 1,000 rows is answered, never cached at row precision.
    if row_precision() {
        let deep = ["0", "1001"];
        for _ in 0..2 {
            let hits = stats_figure(&mut con, "query_hits");
            let answer = query(&mut con, top, &deep).unwrap();
            assert_eq!(json(&answer), postgres_answer(&stack, top, &deep));
            assert_eq!(
                stats_figure(&mut con, "query_hits"),
                hits,
                "a deep page is not cached"
            );
        }
    }
}

#[test]
fn explain_names_the_piece_that_keeps_a_statement_per_table() {
    let (stack, mut con) = stack();
    stack.pg.execute(
        "CREATE FUNCTION twice(integer) RETURNS integer IMMUTABLE LANGUAGE sql \
         AS 'SELECT $1 * 2'",
    );
    for (sql, why) in [
        // An operator of its own could stand behind any symbol of the WHERE.
        (
            "SELECT twice(id) FROM users WHERE id = $1",
            "not PostgreSQL's own",
        ),
        (
            "SELECT id FROM users WHERE name SIMILAR TO $1",
            "SIMILAR TO",
        ),
        (
            "SELECT id FROM users WHERE id = 1 OR length(name) = $1",
            "a call of length",
        ),
        (
            "SELECT u.id, (SELECT max(o.total) FROM orders o WHERE o.user_id = u.id) \
             FROM users u WHERE u.id = $1",
            "correlated subquery",
        ),
    ] {
        let explained: redis::Value = redis::cmd("PGCACHE.EXPLAIN")
            .arg(sql)
            .query(&mut con)
            .unwrap();
        let explained = nested(&explained);
        assert_eq!(
            redis::from_redis_value::<String>(explained["precision"].clone()).unwrap(),
            "table",
            "{sql}"
        );
        if row_precision() {
            let reason: String =
                redis::from_redis_value(explained["precision_reason"].clone()).unwrap();
            assert!(reason.contains(why), "{sql}: {reason}");
        }
    }
}

#[test]
fn an_unchanged_toasted_value_counts_as_a_match() {
    let (stack, mut con) = stack();
    stack.pg.execute(
        "CREATE TABLE docs (id integer PRIMARY KEY, tag text NOT NULL, hits integer NOT NULL);
         ALTER TABLE docs ALTER COLUMN tag SET STORAGE EXTERNAL;
         INSERT INTO docs VALUES (1, 'short', 0),
           (2, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g), 0);
         SELECT pgcache_watch('docs');",
    );
    let sql = "SELECT id, hits FROM docs WHERE tag = $1";
    query_until_cached(&mut con, sql, &["short"]);
    // Row 2's tag is stored out of line and unchanged: the change does not carry it, so
    // it may be `short` for all pgcache knows.
    let lsn = commit_and_position(&stack, "UPDATE docs SET hits = 1 WHERE id = 2");
    let (hit, answer) = read_after(&mut con, sql, &["short"], &lsn);
    assert!(!hit, "dropped");
    assert_eq!(json(&answer), serde_json::json!([{"id": 1, "hits": 0}]));
}

#[test]
fn expired_results_leave_the_index_and_a_full_index_caches_nothing_more() {
    if !row_precision() {
        return;
    }
    let stack = watched();
    let mut con = stack.con();
    for user in 1..=3 {
        let _: String = redis::cmd("PGCACHE.QUERY")
            .arg(BY_USER)
            .arg(1)
            .arg(user)
            .arg("TTL")
            .arg(1)
            .query(&mut con)
            .unwrap();
    }
    wait_for("results indexed", Duration::from_secs(10), || {
        (stats_figure(&mut con, "query_index_results") >= 1).then_some(())
    });
    wait_for(
        "expired results gone from the index",
        Duration::from_secs(10),
        || {
            // Expired keys are removed when touched or by Redis's active expiry.
            let _: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
            (stats_figure(&mut con, "query_index_results") == 0
                && stats_figure(&mut con, "query_index_bytes") == 0)
                .then_some(())
        },
    );
    config_set(&mut con, "pgcache.query_index_max_bytes", "0").unwrap();
    let full = stats_figure(&mut con, "query_index_full");
    for _ in 0..3 {
        let answer = query(&mut con, BY_USER, &["2"]).unwrap();
        assert_eq!(json(&answer), postgres_answer(&stack, BY_USER, &["2"]));
    }
    assert!(stats_figure(&mut con, "query_index_full") > full);
    assert_eq!(stats_figure(&mut con, "query_index_results"), 0);
}

#[test]
fn query_precision_table_drops_per_table_and_explain_says_why() {
    let (stack, mut con) = stack();
    config_set(&mut con, "pgcache.query_precision", "table").unwrap();
    assert!(config_set(&mut con, "pgcache.query_precision", "rows").is_err());
    let explained: redis::Value = redis::cmd("PGCACHE.EXPLAIN")
        .arg(BY_USER)
        .query(&mut con)
        .unwrap();
    let explained = nested(&explained);
    assert_eq!(
        redis::from_redis_value::<String>(explained["precision"].clone()).unwrap(),
        "table"
    );
    assert!(
        redis::from_redis_value::<String>(explained["precision_reason"].clone())
            .unwrap()
            .contains("query_precision")
    );
    let dropped = dropped_by(
        &stack,
        &mut con,
        "UPDATE orders SET total = 1 WHERE id = 48",
    );
    assert_eq!(dropped, vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_promoted_replica_serves_no_result_its_old_primary_could_not_drop() {
    let mut stack = watched();
    let replica = stack.start_replica();
    let mut con = stack.con();
    let mut on_replica = replica.connection();
    for user in 1..=5 {
        let user = user.to_string();
        query_until_cached(&mut con, BY_USER, &[&user]);
        query_until_cached(&mut on_replica, BY_USER, &[&user]);
    }
    stack.redis.shutdown();
    // Changed while no primary applies the feed: user 4's cached result is outdated.
    stack
        .pg
        .execute("UPDATE orders SET total = 4444 WHERE id = 48");
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut on_replica)
        .unwrap();
    // Once it serves from its cache again (the feed caught up), no result cached under the
    // old primary's index is served: user 4's would be stale.
    query_until_cached(&mut on_replica, BY_USER, &["1"]);
    for user in 1..=5 {
        let user = user.to_string();
        assert_eq!(
            json(&query(&mut on_replica, BY_USER, &[&user]).unwrap()),
            postgres_answer(&stack, BY_USER, &[&user]),
            "user {user}: an answer of the promoted replica"
        );
    }
    // It caches and drops results as a primary now.
    query_until_cached(&mut on_replica, BY_USER, &["4"]);
    stack
        .pg
        .execute("UPDATE orders SET total = 4445 WHERE id = 48");
    wait_for(
        "the promoted replica's new answer",
        Duration::from_secs(20),
        || {
            (json(&query(&mut on_replica, BY_USER, &["4"]).unwrap())
                == postgres_answer(&stack, BY_USER, &["4"]))
            .then_some(())
        },
    );
}

#[test]
fn a_promoted_replica_keeps_its_own_replicas() {
    let mut stack = watched();
    let replica = stack.start_replica();
    let chained = stack.start_replica_of(&replica);
    let mut con = stack.con();
    query_until_cached(&mut con, BY_USER, &["4"]);
    read_until_cached(&mut con, "users", r#"{"id":4}"#);
    let mut on_replica = replica.connection();
    let mut on_chained = chained.connection();
    wait_for(
        "the entry on the chained replica",
        Duration::from_secs(20),
        || exists(&mut on_chained, r#"pg_cache:users:{"id":4}"#).then_some(()),
    );
    stack.redis.shutdown();
    // What pgcache writes as the replica takes over (its new index epoch, the entries it
    // drops) must not carry the REPLICAOF NO ONE with it: the chained replica would obey it
    // and leave its new primary.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut on_replica)
        .unwrap();
    query_until_cached(&mut on_replica, BY_USER, &["4"]);
    let _: () = redis::cmd("SET")
        .arg("written-after-the-promotion")
        .arg("1")
        .query(&mut on_replica)
        .unwrap();
    wait_for(
        "a write of the promoted replica on its own replica",
        Duration::from_secs(20),
        || exists(&mut on_chained, "written-after-the-promotion").then_some(()),
    );
    let role: redis::Value = redis::cmd("ROLE").query(&mut on_chained).unwrap();
    let role: Vec<redis::Value> = redis::from_redis_value(role).unwrap();
    assert_eq!(
        redis::from_redis_value::<String>(role[0].clone()).unwrap(),
        "slave"
    );
    assert_eq!(
        redis::from_redis_value::<u16>(role[2].clone()).unwrap(),
        replica.port
    );
}

#[test]
fn replicas_serve_cached_results_again_after_a_flushdb_or_swapdb() {
    let stack = watched();
    let replica = stack.start_replica();
    let mut con = stack.con();
    let mut on_replica = replica.connection();
    for change in [&["FLUSHDB"][..], &["SWAPDB", "0", "1"], &["FLUSHALL"]] {
        query_until_cached(&mut con, BY_USER, &["4"]);
        query_until_cached(&mut on_replica, BY_USER, &["4"]);
        let _: () = redis::cmd(change[0])
            .arg(&change[1..])
            .query(&mut con)
            .unwrap();
        // What the primary writes of its index afterwards reaches the replica after the
        // change, not before it (where the change would delete it on the replica only).
        query_until_cached(&mut con, BY_USER, &["4"]);
        query_until_cached(&mut on_replica, BY_USER, &["4"]);
    }
}

#[test]
fn a_postgresql_restart_drops_what_changed_and_keeps_the_rest() {
    let (mut stack, mut con) = stack();
    for user in 1..=5 {
        query_until_cached(&mut con, BY_USER, &[&user.to_string()]);
    }
    // Committed just before PostgreSQL stops: the feed may not have applied it yet.
    stack
        .pg
        .execute("UPDATE orders SET total = 4444 WHERE id = 48");
    stack.pg.stop();
    stack.pg.restart();
    // User 3's older order, as soon as PostgreSQL is back, perhaps before pgcache is.
    let lsn = commit_and_position(&stack, "UPDATE orders SET total = 3333 WHERE id = 2");
    for user in 1..=5 {
        let user = user.to_string();
        // Read AFTER that write, which is past the one made before the stop: without it, a
        // hit may be up to max_staleness_ms behind the commits, or stale_if_error_ms while
        // pgcache has not seen PostgreSQL back. With it, a read fails at once until pgcache
        // has seen PostgreSQL back (at most a second).
        let answer = wait_for("an answer", Duration::from_secs(10), || {
            match query_after(&mut con, BY_USER, &[&user], &lsn) {
                Ok(answer) => Some(answer),
                Err(e) if e.to_string().contains("PostgreSQL unavailable") => None,
                Err(e) => panic!("user {user}: {e}"),
            }
        });
        assert_eq!(
            json(&answer),
            postgres_answer(&stack, BY_USER, &[&user]),
            "user {user}, right after the restart"
        );
    }
    if !row_precision() {
        // The listener's reconnect drops every result; they are cached again.
        query_until_cached(&mut con, BY_USER, &["1"]);
        return;
    }
    wait_for(
        "the feed past the write made after the restart",
        Duration::from_secs(30),
        || read_after(&mut con, BY_USER, &["1"], &lsn).0.then_some(()),
    );
    let mut kept = Vec::new();
    for user in 1..=5u32 {
        let param = user.to_string();
        let (hit, answer) = read_after(&mut con, BY_USER, &[&param], &lsn);
        assert_eq!(
            json(&answer),
            postgres_answer(&stack, BY_USER, &[&param]),
            "user {user}"
        );
        if hit {
            kept.push(user);
        }
    }
    // Users 3 and 4 may have been cached again by the reads right after the restart.
    assert!(
        [1, 2, 5].iter().all(|user| kept.contains(user)),
        "the results of unchanged rows stay cached: {kept:?}"
    );
}

#[test]
fn replicas_serve_no_result_their_restarted_primary_s_index_does_not_cover() {
    let mut stack = watched();
    let replica = stack.start_replica();
    let mut con = stack.con();
    let mut on_replica = replica.connection();
    query_until_cached(&mut con, BY_USER, &["4"]);
    query_until_cached(&mut on_replica, BY_USER, &["4"]);
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    stack.redis.shutdown();
    // Changed while the primary is down: when its feed resumes, the change reaches an index
    // that no longer holds user 4's result.
    stack
        .pg
        .execute("UPDATE orders SET total = 4444 WHERE id = 48");
    stack.redis.start_again();
    let mut con = stack.redis.connection();
    // Serving again (caught up), through another table: the orders' row generation is left
    // as the replica has it.
    query_until_cached(&mut con, "SELECT name FROM users WHERE id = $1", &["1"]);
    let _: () = redis::cmd("SET")
        .arg("marker")
        .arg("after the restart")
        .query(&mut con)
        .unwrap();
    wait_for(
        "the replica to follow the restarted primary",
        Duration::from_secs(30),
        || {
            let marker: Option<String> = redis::cmd("GET")
                .arg("marker")
                .query(&mut on_replica)
                .ok()?;
            marker.map(|_| ())
        },
    );
    // The replica serves hits again (its feed's bound vouches for them), so the answer below
    // is not PostgreSQL's merely because hits are bypassed.
    wait_for("the replica to serve hits", Duration::from_secs(30), || {
        let hits = stats_figure(&mut on_replica, "query_hits");
        query(
            &mut on_replica,
            "SELECT name FROM users WHERE id = $1",
            &["1"],
        )
        .ok()?;
        (stats_figure(&mut on_replica, "query_hits") > hits).then_some(())
    });
    assert_eq!(
        json(&query(&mut on_replica, BY_USER, &["4"]).unwrap()),
        postgres_answer(&stack, BY_USER, &["4"]),
        "the replica's answer"
    );
}

#[test]
fn booleans_of_a_domain_and_their_prefixes_match_as_postgresql_compares_them() {
    let (stack, mut con) = stack();
    stack.pg.execute(
        "CREATE DOMAIN flag AS boolean;
         CREATE TABLE flags (id integer PRIMARY KEY, active flag NOT NULL);
         INSERT INTO flags VALUES (1, true), (2, false);
         SELECT pgcache_watch('flags');",
    );
    let sql = "SELECT id FROM flags WHERE active = $1 ORDER BY id";
    query_until_cached(&mut con, sql, &["tr"]);
    query_until_cached(&mut con, sql, &["f"]);
    let lsn = commit_and_position(&stack, "INSERT INTO flags VALUES (3, true)");
    let (hit, answer) = read_after(&mut con, sql, &["tr"], &lsn);
    assert!(!hit, "a row entered the result of `tr`");
    assert_eq!(json(&answer), serde_json::json!([{"id": 1}, {"id": 3}]));
    let (hit, answer) = read_after(&mut con, sql, &["f"], &lsn);
    assert_eq!(
        hit,
        row_precision(),
        "the result of `f` is kept in replication mode"
    );
    assert_eq!(json(&answer), serde_json::json!([{"id": 2}]));
}
