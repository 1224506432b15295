//! PostgreSQL is the oracle: random WHEREs over a table of random rows, each row's verdict
//! asked of PostgreSQL and weighed here on the row's values as the change feed spells them.
//! Where PostgreSQL says TRUE, pgcache never says "not TRUE"; where pgcache decides one
//! value (TRUE, FALSE or NULL), it is PostgreSQL's. `PROPTEST_CASES` sets how many WHEREs
//! (`make fuzz` runs many); `PGCACHE_ORACLE_SEED` repeats a run.

use super::super::*;
use super::generate::{COLUMNS, Columns, TYPES_SQL, condition, numbered, quoted, values};
use pgcache_testkit::{Pg, Rng};

#[test]
fn properties_where_verdicts_agree_with_postgresql() {
    let pg = Pg::start();
    let mut client = pg.client();
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(c, t)| match *c {
            "name" => format!("{c} {t} COLLATE \"C\""),
            _ => format!("{c} {t}"),
        })
        .collect();
    client
        .batch_execute(&format!(
            "SET TimeZone = 'Asia/Kolkata'; SET DateStyle = 'ISO, MDY'; {TYPES_SQL} \
             CREATE TABLE t (rid int PRIMARY KEY, {})",
            columns.join(", ")
        ))
        .unwrap();
    let seed: u64 = std::env::var("PGCACHE_ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id().into());
    let mut rng = Rng::new(seed);
    for rid in 0..40 {
        let vals: Vec<String> = COLUMNS
            .iter()
            .map(|(c, t)| {
                if rng.chance(12) {
                    "NULL".into()
                } else {
                    format!("{}::{t}", quoted(rng.pick(values(c))))
                }
            })
            .collect();
        client
            .batch_execute(&format!(
                "INSERT INTO t VALUES ({rid}, {})",
                vals.join(", ")
            ))
            .unwrap();
    }
    // The rows as the change feed spells them (booleans as true/false).
    let texts: Vec<String> = COLUMNS.iter().map(|(c, _)| format!("{c}::text")).collect();
    let rows: Vec<EnteringRow> = client
        .query(
            &format!("SELECT {} FROM t ORDER BY rid", texts.join(", ")),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            COLUMNS
                .iter()
                .enumerate()
                .map(|(i, (c, _))| {
                    let v = match r.get::<_, Option<String>>(i) {
                        None => NewValue::Null,
                        Some(t) if *c == "active" => NewValue::Text((t == "true").to_string()),
                        Some(t) => NewValue::Text(t),
                    };
                    (c.to_string(), v)
                })
                .collect()
        })
        .collect();
    let mut read = crate::precision::Collations::default();
    for r in client
        .query(crate::precision::COLLATIONS_SQL, &[&"public.t"])
        .unwrap()
    {
        read.add(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    }
    let (collations, default) = (read.columns, read.default);
    assert!(collations["name"].bytewise);
    let cases: usize = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (mut judged, mut decided) = (0usize, 0usize);
    for _ in 0..cases {
        let built = condition(&mut rng, 3);
        let sql = numbered(&built.sql);
        // What PostgreSQL refuses (a type it cannot infer, a value its type refuses) is
        // no case.
        if client
            .batch_execute(&format!(
                "DEALLOCATE ALL; PREPARE q AS SELECT ({sql}) FROM t ORDER BY rid"
            ))
            .is_err()
        {
            continue;
        }
        let types: Vec<String> = client
            .query_one(
                "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'q'",
                &[],
            )
            .unwrap()
            .get(0);
        let args: Vec<String> = built.params.iter().map(|p| quoted(p)).collect();
        let execute = if args.is_empty() {
            "EXECUTE q".to_string()
        } else {
            format!("EXECUTE q({})", args.join(", "))
        };
        let Ok(messages) = client.simple_query(&execute) else {
            continue;
        };
        let answers: Vec<Option<bool>> = messages
            .iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(|v| v == "t")),
                _ => None,
            })
            .collect();
        let scope = Columns {
            columns: collations.clone(),
            default,
            params: types,
        };
        let pred = built.filter(&scope).unwrap();
        for (row, answer) in rows.iter().zip(&answers) {
            let verdict = pred.eval(row, &built.params);
            judged += 1;
            let exact = match answer {
                Some(true) => Truth::TRUE,
                Some(false) => Truth::FALSE,
                None => Truth::NULL,
            };
            assert!(
                verdict.0 & exact.0 != 0,
                "seed {seed}: WHERE {sql} with {:?} on {row:?}: PostgreSQL says {answer:?}, \
                 pgcache {verdict:?}\n{pred:#?}",
                built.params
            );
            if verdict.each().count() == 1 {
                decided += 1;
            }
        }
    }
    eprintln!("oracle: {judged} verdicts, {decided} decided exactly (seed {seed})");
    assert!(
        decided * 2 > judged,
        "seed {seed}: too few verdicts decided ({decided} of {judged}): the test weighs little"
    );
}
