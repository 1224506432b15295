//! The generator both property tests share: WHEREs over one table `t` of many types, built
//! from atoms (comparisons, patterns, jsonb operators, casts, time zones, quantifiers, ...)
//! under NOT, IS NOT TRUE, AND and OR, with their parameters' values and types.

use super::super::*;
use pgcache_testkit::Rng;
use std::collections::HashMap;

/// The table's columns and how a value of each is spelled in SQL.
pub(super) const COLUMNS: &[(&str, &str)] = &[
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
pub(super) const TYPES_SQL: &str = "CREATE TYPE pair AS (a integer, b integer);";

pub(super) fn values(column: &str) -> &'static [&'static str] {
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

pub(super) fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A WHERE being built: its text, with `$?` for each parameter, their values in order, and
/// their types as PostgreSQL would infer them (`format_type`'s spelling; the oracle asks
/// PostgreSQL instead).
#[derive(Clone)]
pub(super) struct Built {
    pub sql: String,
    pub params: Vec<String>,
    pub types: Vec<String>,
}

/// Parameters being generated: values and their types.
#[derive(Default)]
struct Params {
    values: Vec<String>,
    types: Vec<String>,
}

impl Params {
    fn push(&mut self, value: impl Into<String>, ty: &str) {
        self.values.push(value.into());
        self.types.push(ty.to_string());
    }
}

fn atom(rng: &mut Rng) -> Built {
    let (column, column_type) = rng.pick(COLUMNS);
    let mut params = Params::default();
    let value = |rng: &mut Rng, params: &mut Params| -> String {
        let v = rng.pick(values(column)).to_string();
        if rng.chance(50) {
            params.push(v, column_type);
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
                    params.push(rng.pick(&keys), "text");
                    "doc ? $?".into()
                }
                1 => format!("doc ? {}", quoted(rng.pick(&keys))),
                2 => {
                    params.push(
                        format!("{{{},{}}}", rng.pick(&keys), rng.pick(&keys)),
                        "text[]",
                    );
                    format!("doc {} $?", rng.pick(&["?|", "?&"]))
                }
                _ => {
                    params.push(rng.pick(values("doc")), "jsonb");
                    format!("doc {} $?", rng.pick(&["@>", "<@"]))
                }
            }
        }
        ("doc", 3) => {
            params.push(
                rng.pick(&["1", "1.0", "null", r#""a""#, r#"{"b": 1}"#, "[1, 2]"]),
                "jsonb",
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
                params.push(rng.pick(&["-3", "0", "2", "1.5", "-2.5"]), to);
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
                    params.push(pattern, "text");
                    format!("{column} {like} $?")
                }
                2 => {
                    params.push(rng.pick(&["a", "B", "c", "é"]), "text");
                    format!("{column} {like} '%' || $? || '%'")
                }
                _ => {
                    params.push(pattern, "text");
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
            params.push(
                format!("{{{}}}", items.join(",")),
                &format!("{column_type}[]"),
            );
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
                params.push(rng.pick(&patterns), "text");
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
                params.push(unit, "text");
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
                params.push(zone, "text");
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
    Built {
        sql,
        params: params.values,
        types: params.types,
    }
}

/// A condition of atoms under NOT, IS NOT TRUE, AND and OR, `depth` deep at most.
pub(super) fn condition(rng: &mut Rng, depth: usize) -> Built {
    if depth == 0 || rng.chance(35) {
        return atom(rng);
    }
    match rng.below(4) {
        0 => {
            let inner = condition(rng, depth - 1);
            Built {
                sql: format!("NOT ({})", inner.sql),
                ..inner
            }
        }
        1 => {
            let inner = condition(rng, depth - 1);
            Built {
                sql: format!("({}) IS NOT TRUE", inner.sql),
                ..inner
            }
        }
        n => {
            let (a, b) = (condition(rng, depth - 1), condition(rng, depth - 1));
            a.joined(if n == 2 { "AND" } else { "OR" }, b)
        }
    }
}

/// `sql` with its `$?` numbered `$1`, `$2`, ...
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::new();
    for (n, piece) in sql.split("$?").enumerate() {
        if n > 0 {
            out.push_str(&format!("${n}"));
        }
        out.push_str(piece);
    }
    out
}

/// The table's columns with their collations, and a statement's parameters' types, as
/// binding reads them.
pub(super) struct Columns {
    pub columns: HashMap<String, Collation>,
    pub default: Collation,
    pub params: Vec<String>,
}

impl Scope for Columns {
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

impl Built {
    /// `(self) joiner (other)`.
    pub fn joined(self, joiner: &str, other: Built) -> Built {
        Built {
            sql: format!("({}) {joiner} ({})", self.sql, other.sql),
            params: [self.params, other.params].concat(),
            types: [self.types, other.types].concat(),
        }
    }

    /// `NOT (self)`.
    pub fn negated(&self) -> Built {
        Built {
            sql: format!("NOT ({})", self.sql),
            params: self.params.clone(),
            types: self.types.clone(),
        }
    }

    /// `SELECT * FROM t WHERE <self>`, shaped (None: the parser refused it).
    pub fn shaped(&self) -> Option<crate::shape::Shaped> {
        let sql = format!("SELECT * FROM t WHERE {}", numbered(&self.sql));
        crate::shape::of(&pg_query::parse(&sql).ok()?.protobuf).ok()
    }

    /// The WHERE of `SELECT * FROM t`, shaped and bound by `scope`; None where it has no
    /// shape.
    pub fn filter(&self, scope: &Columns) -> Option<Pred> {
        let mut shape = self.shaped()?.ok()?;
        Some(shape.sides.remove(0).filter.bind(scope))
    }
}
