//! QUERY results over tables without a primary key (pgbench_history: every transaction
//! inserts). In replication mode an INSERT's new row is weighed as any table's: the results
//! its WHERE cannot admit stay; an UPDATE or a DELETE (no row identity) drops every result
//! that read the table. In notify mode every change drops them all. Either way every answer
//! is PostgreSQL's.

use crate::query::{commit_and_position, postgres_answer, query_after, read_after};
use crate::query_rows::{dropped_among, row_precision};
use pgcache_testkit::*;

const HISTORY_SQL: &str = "
    CREATE TABLE history (aid integer, delta integer, mtime timestamptz);
    INSERT INTO history SELECT 1 + g % 3, g, '2024-05-01T10:00:00Z'::timestamptz + g * interval '1 minute'
      FROM generate_series(1, 30) g;
";

/// A stack with `setup` run and `tables` watched, whose reads AFTER a position wait for the
/// feed to apply it. In replication mode the watch's own DDL (a keyless table gets REPLICA
/// IDENTITY FULL) is applied before anything is cached: it would drop every result.
fn stack(setup: &str, tables: &[&str]) -> (Stack, redis::Connection) {
    let stack = Stack::start(&format!("{TRIGGER_SQL} {setup}"));
    for table in tables {
        stack
            .pg
            .execute(&format!("SELECT pgcache_watch('{table}')"));
    }
    let mut con = stack.con();
    config_set(&mut con, "pgcache.after_wait_ms", "1000").unwrap();
    if row_precision() {
        let watched = commit_and_position(&stack, "SELECT 1");
        wait_applied(&mut con, &watched);
    }
    (stack, con)
}

#[test]
fn an_insert_into_a_keyless_table_keeps_the_results_it_cannot_enter() {
    let (stack, mut con) = stack(HISTORY_SQL, &["history"]);
    let sum = "SELECT sum(delta) FROM history WHERE aid = $1";
    let sets: Vec<&[&str]> = vec![&["1"], &["2"]];
    let latest = "SELECT aid, delta FROM history WHERE aid = $1 ORDER BY mtime DESC LIMIT 2";
    let count = "SELECT count(*) AS n FROM history";
    // (statement, parameter sets, [(write, the sets it drops in replication mode)]).
    let cases: Vec<crate::query_rows::Case> = vec![
        (
            sum,
            sets.clone(),
            vec![
                // aid 2's rows: aid 1's sum stays.
                (
                    "INSERT INTO history VALUES (2, 5, now()), (2, -3, now())",
                    vec![1],
                ),
                // A NULL aid is no aid's; another aid's row is neither's.
                ("INSERT INTO history VALUES (NULL, 7, now())", vec![]),
                ("INSERT INTO history VALUES (3, 7, now())", vec![]),
                // A statement of several inserts: each weighed.
                (
                    "BEGIN; INSERT INTO history VALUES (1, 1, now()); \
                     INSERT INTO history VALUES (3, 1, now()); COMMIT",
                    vec![0],
                ),
                // Rows that were there before have no identity: every result goes.
                ("UPDATE history SET delta = 0 WHERE aid = 3", vec![0, 1]),
                ("DELETE FROM history WHERE aid = 3", vec![0, 1]),
                (
                    "BEGIN; INSERT INTO history VALUES (3, 1, now()); \
                     DELETE FROM history WHERE aid IS NULL; COMMIT",
                    vec![0, 1],
                ),
                ("TRUNCATE history", vec![0, 1]),
            ],
        ),
        (
            latest,
            sets.clone(),
            vec![
                // A page has no boundary here: a row its WHERE admits enters it, however old.
                (
                    "INSERT INTO history VALUES (1, 9, '2000-01-01T00:00:00Z')",
                    vec![0],
                ),
                ("INSERT INTO history VALUES (3, 9, now())", vec![]),
            ],
        ),
        // No WHERE: every insert changes it.
        (
            count,
            vec![&[]],
            vec![("INSERT INTO history VALUES (3, 1, now())", vec![0])],
        ),
    ];
    for (sql, sets, writes) in cases {
        let explained: redis::Value = redis::cmd("PGCACHE.EXPLAIN")
            .arg(sql)
            .query(&mut con)
            .unwrap();
        let explained = nested(&explained);
        let precision: String = redis::from_redis_value(explained["precision"].clone()).unwrap();
        let row = row_precision() && sql != count;
        assert_eq!(
            precision,
            if row { "row" } else { "table" },
            "{sql}: {explained:?}"
        );
        for (write, expected) in writes {
            let dropped = dropped_among(&stack, &mut con, sql, &sets, write);
            if row_precision() {
                assert_eq!(dropped, expected, "`{sql}` after `{write}`");
            } else {
                assert_eq!(dropped.len(), sets.len(), "notify mode drops per table");
            }
        }
    }
}

#[test]
fn an_insert_into_a_keyless_table_drops_its_rows_read_by_any_column() {
    let (stack, mut con) = stack(HISTORY_SQL, &["history"]);
    let sum = "SELECT sum(delta) FROM history WHERE aid = $1";
    // No row of aid 9 yet, READ by its aid; a result of aid 1 to keep.
    assert_eq!(read(&mut con, "history", r#"{"aid":9}"#).unwrap(), None);
    assert_eq!(read(&mut con, "history", r#"{"aid":9}"#).unwrap(), None);
    let kept = dropped_among(
        &stack,
        &mut con,
        sum,
        &[&["1"]],
        "INSERT INTO history VALUES (9, 4, now())",
    );
    if row_precision() {
        assert!(kept.is_empty(), "aid 1's sum stays");
    }
    // The insert was applied (the read AFTER it waited for that): the row READ by a column
    // the new row matches is PostgreSQL's, not the absence cached before.
    let aid_9 = |con: &mut redis::Connection| match read(con, "history", r#"{"aid":9}"#) {
        Ok(row) => row.map(|row| json(&row)["delta"].to_string()),
        Err(e) => Some(e.to_string()),
    };
    settled(&mut con, aid_9, |row| row.as_deref() == Some("4"));
    let lsn = commit_and_position(&stack, "INSERT INTO history VALUES (9, 5, now())");
    query_after(&mut con, sum, &["1"], &lsn).unwrap();
    settled(&mut con, aid_9, |row| {
        row.as_deref()
            .is_some_and(|e| e.contains("more than one row"))
    });
}

/// What `read` answers, which must pass `check`: at once in replication mode (a read AFTER
/// the change waited for it to be applied), in notify mode once the notification is.
fn settled<T: std::fmt::Debug>(
    con: &mut redis::Connection,
    mut read: impl FnMut(&mut redis::Connection) -> T,
    check: impl Fn(&T) -> bool,
) {
    if row_precision() {
        let answer = read(con);
        assert!(check(&answer), "{answer:?}");
    } else {
        wait_for(
            "the change to reach READ",
            std::time::Duration::from_secs(10),
            || check(&read(con)).then_some(()),
        );
    }
}

/// A value for a generated row or statement: small ranges, so rows and predicates meet.
fn int(rng: &mut Rng, nulls: bool) -> String {
    if nulls && rng.chance(12) {
        "NULL".into()
    } else {
        rng.below(6).to_string()
    }
}

/// A generated write of one or two keyless tables: mostly inserts, sometimes updates,
/// deletes and transactions mixing them.
fn write(rng: &mut Rng) -> String {
    let one = |rng: &mut Rng| -> String {
        let table = rng.pick(&["k1", "k2"]);
        match rng.below(20) {
            0..=12 => {
                let rows: Vec<String> = (0..1 + rng.below(3))
                    .map(|_| match table {
                        "k1" => format!(
                            "({}, {}, {})",
                            int(rng, true),
                            int(rng, true),
                            rng.pick(&["NULL", "'a'", "'ab'", "'b'", "'ba'"])
                        ),
                        _ => format!("({}, {})", int(rng, true), int(rng, true)),
                    })
                    .collect();
                format!("INSERT INTO {table} VALUES {}", rows.join(", "))
            }
            13..=16 => {
                let column = if table == "k1" { "b" } else { "c" };
                format!(
                    "UPDATE {table} SET {column} = {} WHERE a = {}",
                    int(rng, true),
                    int(rng, false)
                )
            }
            _ => format!("DELETE FROM {table} WHERE a = {}", int(rng, false)),
        }
    };
    if rng.chance(20) {
        format!("BEGIN; {}; {}; COMMIT", one(rng), one(rng))
    } else {
        one(rng)
    }
}

/// The generated tables' columns, and whether each is text.
const K1: &[(&str, bool)] = &[("a", false), ("b", false), ("t", true)];
const K2: &[(&str, bool)] = &[("a", false), ("c", false)];

/// A generated WHERE over `columns` (each written after `prefix`), its parameters pushed
/// onto `params` as `$n`: comparisons, IN, BETWEEN, LIKE and IS NULL under AND, OR and NOT.
fn predicate(
    rng: &mut Rng,
    columns: &[(&str, bool)],
    prefix: &str,
    depth: usize,
    params: &mut Vec<String>,
) -> String {
    if depth > 0 && rng.chance(60) {
        let left = predicate(rng, columns, prefix, depth - 1, params);
        return match rng.below(3) {
            0 => format!("NOT ({left})"),
            n => {
                let right = predicate(rng, columns, prefix, depth - 1, params);
                let joiner = if n == 1 { "AND" } else { "OR" };
                format!("({left} {joiner} {right})")
            }
        };
    }
    let (column, text) = rng.pick(columns);
    let column = format!("{prefix}{column}");
    let mut param = |rng: &mut Rng| {
        params.push(if text {
            rng.pick(&["a", "b", "ab", "a%", "b%", "%a"]).to_string()
        } else {
            int(rng, false)
        });
        format!("${}", params.len())
    };
    match rng.below(8) {
        0 => format!("{column} IS NULL"),
        1 => format!("{column} IS NOT NULL"),
        2 if text => format!("{column} LIKE {}", param(rng)),
        2 | 3 => format!("{column} = {}", param(rng)),
        4 => format!("{column} <> {}", param(rng)),
        5 => format!("{column} IN ({}, {})", param(rng), param(rng)),
        6 if !text => format!("{column} BETWEEN {} AND {}", param(rng), param(rng)),
        _ => format!(
            "{column} {} {}",
            rng.pick(&["<", "<=", ">", ">="]),
            param(rng)
        ),
    }
}

#[test]
fn keyless_results_answer_as_postgresql_under_generated_writes() {
    let seed = seed_from_env(525);
    let mut rng = Rng::new(seed);
    let setup = "
        CREATE TABLE k1 (a integer, b integer, t text);
        CREATE TABLE k2 (a integer, c integer);
        INSERT INTO k1 SELECT g % 6, g % 4, CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' END
          FROM generate_series(1, 20) g;
        INSERT INTO k2 SELECT g % 5, g % 3 FROM generate_series(1, 12) g;
    ";
    let (stack, mut con) = stack(setup, &["k1", "k2"]);
    // Statements of generated WHEREs, ordered down to every column they show (PostgreSQL's
    // answer is one), each drawn twice.
    let mut reads: Vec<(String, Vec<String>)> = Vec::new();
    for _ in 0..2 {
        for shape in 0..13 {
            let mut params = Vec::new();
            let sql = match shape {
                0 => format!(
                    "SELECT a, b, t FROM k1 WHERE {} ORDER BY a, b, t",
                    predicate(&mut rng, K1, "", 2, &mut params)
                ),
                1 => format!(
                    "SELECT count(*) AS n, sum(b) AS s FROM k1 WHERE {}",
                    predicate(&mut rng, K1, "", 2, &mut params)
                ),
                2 => format!(
                    "SELECT a, b FROM k1 WHERE {} ORDER BY b DESC NULLS LAST, a LIMIT 3",
                    predicate(&mut rng, K1, "", 2, &mut params)
                ),
                3 => format!(
                    "SELECT c, count(*) AS n FROM k2 WHERE {} GROUP BY c ORDER BY c",
                    predicate(&mut rng, K2, "", 2, &mut params)
                ),
                4 => format!(
                    "SELECT k1.a, k1.b, k2.c FROM k1 JOIN k2 ON k2.a = k1.a WHERE {} AND {} \
                     ORDER BY 1, 2, 3",
                    predicate(&mut rng, K1, "k1.", 1, &mut params),
                    predicate(&mut rng, K2, "k2.", 1, &mut params)
                ),
                5 => format!(
                    "SELECT count(*) AS n FROM k1 WHERE {} AND a IN (SELECT a FROM k2 WHERE {})",
                    predicate(&mut rng, K1, "", 1, &mut params),
                    predicate(&mut rng, K2, "", 1, &mut params)
                ),
                6 => format!(
                    "SELECT a, b FROM k1 WHERE {} AND NOT EXISTS \
                     (SELECT 1 FROM k2 WHERE k2.a = k1.a AND {}) ORDER BY a, b",
                    predicate(&mut rng, K1, "k1.", 1, &mut params),
                    predicate(&mut rng, K2, "k2.", 1, &mut params)
                ),
                // The nullable side keyless, its condition in the ON.
                7 => format!(
                    "SELECT k1.a, k1.b, k2.c FROM k1 LEFT JOIN k2 ON k2.a = k1.a AND {} \
                     WHERE {} ORDER BY 1, 2, 3 NULLS FIRST",
                    predicate(&mut rng, K2, "k2.", 1, &mut params),
                    predicate(&mut rng, K1, "k1.", 1, &mut params)
                ),
                8 => format!(
                    "SELECT a FROM k1 WHERE {} EXCEPT SELECT a FROM k2 WHERE {} ORDER BY 1",
                    predicate(&mut rng, K1, "", 1, &mut params),
                    predicate(&mut rng, K2, "", 1, &mut params)
                ),
                // An uncorrelated NOT EXISTS: a row entering k2 can empty the result.
                9 => format!(
                    "SELECT count(*) AS n FROM k1 WHERE {} AND NOT EXISTS \
                     (SELECT 1 FROM k2 WHERE {})",
                    predicate(&mut rng, K1, "", 1, &mut params),
                    predicate(&mut rng, K2, "", 1, &mut params)
                ),
                10 => format!(
                    "SELECT x.a, y.a AS ya FROM k1 x JOIN k1 y ON x.b < y.b \
                     WHERE {} AND {} ORDER BY 1, 2",
                    predicate(&mut rng, K1, "x.", 1, &mut params),
                    predicate(&mut rng, K1, "y.", 1, &mut params)
                ),
                11 => format!(
                    "SELECT a, (SELECT count(*) FROM k2 WHERE k2.a = k1.a) AS n FROM k1 \
                     WHERE {} ORDER BY a, n",
                    predicate(&mut rng, K1, "k1.", 1, &mut params)
                ),
                _ => "SELECT count(*) AS n FROM k1".to_string(),
            };
            if !reads.contains(&(sql.clone(), params.clone())) {
                reads.push((sql, params));
            }
        }
    }
    // Every result cached (and checked) before the first write, and again after each write
    // by the reads that missed.
    let mut write = "SELECT 1".to_string();
    let (mut kept, mut inserts) = (0, 0);
    for round in 0..=60 {
        let lsn = commit_and_position(&stack, &write);
        let insert_only = !write.contains("UPDATE") && !write.contains("DELETE");
        inserts += usize::from(round > 0 && insert_only);
        for (sql, params) in &reads {
            let sql = sql.as_str();
            let params: Vec<&str> = params.iter().map(String::as_str).collect();
            let (hit, answer) = read_after(&mut con, sql, &params, &lsn);
            assert_eq!(
                json(&answer),
                postgres_answer(&stack, sql, &params),
                "seed {seed}, round {round}: `{sql}` with {params:?} after `{write}`"
            );
            // A result over a table the write only inserted into, kept.
            let wrote_its_table = ["k1", "k2"]
                .iter()
                .any(|t| write.contains(t) && sql.contains(t));
            kept += usize::from(round > 0 && hit && insert_only && wrote_its_table);
        }
        write = self::write(&mut rng);
    }
    eprintln!(
        "keyless: seed {seed}, {} reads, {kept} results kept across the {inserts} inserts \
         into their tables",
        reads.len()
    );
    assert!(
        inserts > 20,
        "seed {seed}: only {inserts} insert-only writes"
    );
    if row_precision() {
        assert!(
            kept > inserts,
            "seed {seed}: {kept} results kept across the {inserts} inserts into their tables"
        );
    } else {
        assert_eq!(kept, 0, "notify mode drops per table");
    }
}
