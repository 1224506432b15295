//! PostgreSQL is the oracle: random WHEREs over a table of random rows, each row's verdict
//! asked of PostgreSQL and weighed here on the row's values as the change feed spells them.
//! Where PostgreSQL says TRUE, pgcache never says "not TRUE"; where pgcache decides one
//! value (TRUE, FALSE or NULL), it is PostgreSQL's. `PROPTEST_CASES` sets how many WHEREs
//! (`make fuzz` runs many); `PGCACHE_ORACLE_SEED` repeats a run.

use super::*;
use pgcache_testkit::{Pg, Rng};
use std::collections::HashMap;

/// The table's columns and how a value of each is spelled in SQL.
const COLUMNS: &[(&str, &str)] = &[
    ("id", "integer"),
    ("big", "bigint"),
    ("price", "numeric"),
    ("name", "text"),
    ("code", "character varying"),
    ("active", "boolean"),
    ("doc", "jsonb"),
    ("at", "timestamp with time zone"),
    ("day", "date"),
    ("seen", "timestamp without time zone"),
    ("f", "double precision"),
    ("u", "uuid"),
    ("o", "oid"),
    ("p", "pair"),
];

/// The statement's set-up: the composite type `pair` of column `p`.
const TYPES_SQL: &str = "CREATE TYPE pair AS (a integer, b integer);";

fn values(column: &str) -> &'static [&'static str] {
    match column {
        "id" | "big" => &["-3", "0", "1", "2", "3", "7", "2147483647"],
        "price" => &[
            "0", "1.5", "1.50", "-2", "10", "0.001", "NaN", "Infinity", "-1e3",
        ],
        "name" | "code" => &[
            "", "a", "ab", "abc", "B", "b%", "é", "A_c", "aBc", "x\\y", "it's",
        ],
        "active" => &["true", "false"],
        "doc" => &[
            "{}",
            r#"{"a": 1}"#,
            r#"{"a": 1.0, "b": [1, 2]}"#,
            r#"[1, "a"]"#,
            r#""a""#,
            "1",
            "null",
            r#"{"a": {"b": 1}}"#,
            r#"{"b": null, "c": "a"}"#,
        ],
        "at" => &[
            "2024-01-01 00:00:00+00",
            "2024-01-01 05:30:00+05:30",
            "2023-12-31 23:00:00-01",
            "infinity",
            "2024-06-01 12:00:00.5+00",
            "0044-03-15 12:00:00+00 BC",
        ],
        "day" => &[
            "2024-01-01",
            "2023-12-31",
            "2024-02-29",
            "-infinity",
            "2024-01-02",
        ],
        "seen" => &[
            "2024-01-01 00:00:00",
            "2024-01-01 10:00:00.25",
            "2023-12-31 23:59:59",
            "2021-01-01 10:00:00",
            "2024-05-15 13:45:30.123456",
            "0044-03-15 12:00:00 BC",
            "infinity",
        ],
        "f" => &["0", "-0", "1.5", "NaN", "Infinity", "1e-300", "-2"],
        "o" => &[
            "0",
            "1",
            "7",
            "2147483648",
            "4294967295",
            "-1",
            "-2147483648",
        ],
        "p" => &["(,)", "(1,)", "(,2)", "(1,2)"],
        "u" => &[
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12",
            "00000000-0000-0000-0000-000000000000",
        ],
        _ => &[],
    }
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A WHERE being built: its text, with `$?` for each parameter, and their values in order.
struct Built {
    sql: String,
    params: Vec<String>,
}

fn atom(rng: &mut Rng) -> Built {
    let (column, _) = rng.pick(COLUMNS);
    let mut params = Vec::new();
    let value = |rng: &mut Rng, params: &mut Vec<String>| -> String {
        let v = rng.pick(values(column)).to_string();
        if rng.chance(50) {
            params.push(v);
            "$?".into()
        } else if matches!(column, "id" | "big") && !rng.chance(20) {
            v
        } else if rng.chance(5) {
            "NULL".into()
        } else {
            quoted(&v)
        }
    };
    let op = rng.pick(&["=", "<>", "<", "<=", ">", ">="]);
    let sql = match (column, rng.below(9)) {
        ("active", 0) => "active".into(),
        ("active", 1) => "NOT active".into(),
        ("active", 2) => format!(
            "active IS {}",
            rng.pick(&[
                "TRUE",
                "NOT TRUE",
                "FALSE",
                "NOT FALSE",
                "UNKNOWN",
                "NOT UNKNOWN"
            ])
        ),
        ("doc", 0..=2) => {
            let keys = ["a", "b", "c", "x"];
            match rng.below(4) {
                0 => {
                    params.push(rng.pick(&keys).into());
                    "doc ? $?".into()
                }
                1 => format!("doc ? {}", quoted(rng.pick(&keys))),
                2 => {
                    params.push(format!("{{{},{}}}", rng.pick(&keys), rng.pick(&keys)));
                    format!("doc {} $?", rng.pick(&["?|", "?&"]))
                }
                _ => {
                    params.push(rng.pick(values("doc")).into());
                    format!("doc {} $?", rng.pick(&["@>", "<@"]))
                }
            }
        }
        ("doc", 3) => {
            params.push(
                rng.pick(&["1", "1.0", "null", r#""a""#, r#"{"b": 1}"#, "[1, 2]"])
                    .into(),
            );
            format!(
                "doc -> {} = $?",
                quoted(rng.pick(&["a", "b", "c", "0", "-1"]))
            )
        }
        ("doc", 4) => format!(
            "doc ->> {} {} {}",
            quoted(rng.pick(&["a", "b", "c"])),
            rng.pick(&["=", "<>"]),
            quoted(rng.pick(&["a", "1", "true", ""]))
        ),
        ("doc", _) => format!("doc IS {}NULL", rng.pick(&["", "NOT "])),
        ("p", _) => format!("p IS {}NULL", rng.pick(&["", "NOT "])),
        // Casts to an integer type round numeric half away from zero, and floats half to
        // even; to numeric they keep an integer's value.
        ("price" | "f" | "id" | "big", 8) => {
            let to = rng.pick(&["integer", "smallint", "bigint", "numeric"]);
            let v = if rng.chance(50) {
                params.push(rng.pick(&["-3", "0", "2", "1.5", "-2.5"]).into());
                "$?".to_string()
            } else {
                rng.pick(&["-3", "0", "2", "10", "2147483647"]).to_string()
            };
            format!("({column})::{to} {op} {v}")
        }
        ("name" | "code", 0..=2) => {
            let patterns = ["a%", "%b%", "_", "%", "A\\_c", "%c", "ab", "é%", "b\\%"];
            let pattern = rng.pick(&patterns).to_string();
            let like = rng.pick(&["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]);
            match rng.below(4) {
                0 => format!("{column} {like} {}", quoted(&pattern)),
                1 => {
                    params.push(pattern);
                    format!("{column} {like} $?")
                }
                2 => {
                    params.push(rng.pick(&["a", "B", "c", "é"]).into());
                    format!("{column} {like} '%' || $? || '%'")
                }
                _ => {
                    params.push(pattern);
                    format!("UPPER({column}::text) LIKE UPPER($?)")
                }
            }
        }
        ("name" | "code", 3) => {
            let f = rng.pick(&["lower", "upper"]);
            format!("{f}({column}) {op} {}", value(rng, &mut params))
        }
        (_, 0) => format!("{column} IS {}NULL", rng.pick(&["", "NOT "])),
        (_, 1) => {
            let (a, b) = (value(rng, &mut params), value(rng, &mut params));
            let how = rng.pick(&["BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC"]);
            format!("{column} {how} {a} AND {b}")
        }
        (_, 2) => {
            let (a, b) = (value(rng, &mut params), value(rng, &mut params));
            format!("{column} {}IN ({a}, {b})", rng.pick(&["", "NOT "]))
        }
        (_, 3) if column != "active" => {
            let items: Vec<String> = (0..rng.below(3))
                .map(|_| {
                    if rng.chance(15) {
                        "NULL".to_string()
                    } else {
                        let v = rng.pick(values(column));
                        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                })
                .collect();
            params.push(format!("{{{}}}", items.join(",")));
            let (quantifier, op) = if rng.chance(50) {
                ("ANY", rng.pick(&["=", "<", ">="]))
            } else {
                ("ALL", rng.pick(&["<>", ">"]))
            };
            format!("{column} {op} {quantifier}($?)")
        }
        ("name" | "code", 4) => {
            let patterns = [
                "^a", "b$", "^(a|b)", "a.c", "[A-Z]", "^[a-c]+$", "b{1,2}", "%", "\\d", "é",
            ];
            let op = rng.pick(&["~", "~*", "!~", "!~*"]);
            if rng.chance(50) {
                params.push(rng.pick(&patterns).into());
                format!("{column} {op} $?")
            } else {
                format!("{column} {op} {}", quoted(rng.pick(&patterns)))
            }
        }
        ("seen", 5) => {
            let unit = rng.pick(&[
                "microseconds",
                "ms",
                "second",
                "minute",
                "Hour",
                "day",
                "week",
                "month",
                "quarter",
                "year",
                "decade",
                "days",
            ]);
            let unit = if rng.chance(30) {
                params.push(unit.to_string());
                "$?".to_string()
            } else {
                quoted(unit)
            };
            format!("date_trunc({unit}, seen) {op} {}", value(rng, &mut params))
        }
        ("seen" | "at", 6) => {
            let zone = rng.pick(&[
                "UTC",
                "utc",
                "Etc/UTC",
                "GMT",
                "Europe/Paris",
                "Asia/Kolkata",
            ]);
            let zone = if rng.chance(50) {
                params.push(zone.to_string());
                "$?".to_string()
            } else {
                quoted(zone)
            };
            let other = if column == "seen" { "at" } else { "seen" };
            format!(
                "({column} AT TIME ZONE {zone}) {op} {}",
                quoted(rng.pick(values(other)))
            )
        }
        ("seen" | "at", 7) => {
            let day = quoted(rng.pick(values("day")));
            if column == "seen" {
                format!("seen::date {op} {day}")
            } else {
                format!("(at AT TIME ZONE 'UTC')::date {op} {day}")
            }
        }
        (_, 4) if rng.chance(50) => format!("{column} SIMILAR TO 'a'"),
        (_, 4) => {
            let (a, b) = (value(rng, &mut params), value(rng, &mut params));
            let (quantifier, op) = if rng.chance(50) {
                ("ANY", "=")
            } else {
                ("ALL", "<>")
            };
            format!("{column} {op} {quantifier}(ARRAY[{a}, {b}])")
        }
        _ => format!("{column} {op} {}", value(rng, &mut params)),
    };
    Built { sql, params }
}

fn condition(rng: &mut Rng, depth: usize) -> Built {
    if depth == 0 || rng.chance(35) {
        return atom(rng);
    }
    match rng.below(4) {
        0 => {
            let inner = condition(rng, depth - 1);
            Built {
                sql: format!("NOT ({})", inner.sql),
                params: inner.params,
            }
        }
        1 => {
            let inner = condition(rng, depth - 1);
            Built {
                sql: format!("({}) IS NOT TRUE", inner.sql),
                params: inner.params,
            }
        }
        n => {
            let (a, b) = (condition(rng, depth - 1), condition(rng, depth - 1));
            let joiner = if n == 2 { "AND" } else { "OR" };
            Built {
                sql: format!("({}) {joiner} ({})", a.sql, b.sql),
                params: [a.params, b.params].concat(),
            }
        }
    }
}

fn numbered(sql: &str) -> String {
    let mut out = String::new();
    for (n, piece) in sql.split("$?").enumerate() {
        if n > 0 {
            out.push_str(&format!("${n}"));
        }
        out.push_str(piece);
    }
    out
}

struct Oracle {
    columns: HashMap<String, Collation>,
    default: Collation,
    params: Vec<String>,
}

impl Scope for Oracle {
    fn column(&self, name: &str) -> Option<(String, Collation)> {
        let (_, ty) = COLUMNS.iter().find(|(c, _)| *c == name)?;
        let collation = self
            .columns
            .get(name)
            .copied()
            .unwrap_or(Collation::UNKNOWN);
        // As the catalog's columns are read (`precision::Bindings`): oid by its key kind.
        let kind = crate::kind::column_kind(if *ty == "oid" { "oid" } else { ty }, false);
        Some((crate::precision::base_type(ty, kind), collation))
    }
    fn row_valued(&self, name: &str) -> bool {
        name == "p"
    }
    fn param(&self, n: usize) -> Option<String> {
        self.params.get(n.checked_sub(1)?).cloned()
    }
    fn default_collation(&self) -> Collation {
        self.default
    }
}

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
        read.add(
            r.get(0),
            r.get(1),
            r.get::<_, Option<String>>(2).as_deref().unwrap_or(""),
            r.get::<_, Option<String>>(3).as_deref().unwrap_or(""),
            r.get::<_, Option<String>>(4).as_deref().unwrap_or(""),
        );
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
        let scope = Oracle {
            columns: collations.clone(),
            default,
            params: types,
        };
        let tree = pg_query::parse(&format!("SELECT * FROM t WHERE {sql}")).unwrap();
        let pred = crate::shape::of(&tree.protobuf)
            .unwrap()
            .unwrap()
            .sides
            .remove(0)
            .filter
            .bind(&scope);
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
