use super::*;

/// A scope of columns `(name, type)` under the "C" collation, and parameters' types.
struct Table {
    columns: Vec<(&'static str, &'static str)>,
    params: Vec<&'static str>,
    collation: Collation,
}

const C: Collation = Collation {
    deterministic: true,
    bytewise: true,
    ascii_folding: true,
};

impl Scope for Table {
    fn column(&self, name: &str) -> Option<(String, Collation)> {
        self.columns
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(_, t)| (t.to_string(), self.collation))
    }
    fn row_valued(&self, name: &str) -> bool {
        self.columns
            .iter()
            .any(|(c, t)| *c == name && t.starts_with("pair"))
    }
    fn param(&self, n: usize) -> Option<String> {
        self.params.get(n - 1).map(|p| p.to_string())
    }
    fn default_collation(&self) -> Collation {
        self.collation
    }
}

fn table(params: Vec<&'static str>) -> Table {
    Table {
        columns: vec![
            ("id", "integer"),
            ("price", "numeric"),
            ("name", "text"),
            ("active", "boolean"),
            ("doc", "jsonb"),
            ("at", "timestamp with time zone"),
            ("seen", "timestamp without time zone"),
            ("shape", "point"),
        ],
        params,
        collation: C,
    }
}

fn pred(sql_where: &str, scope: &Table) -> Pred {
    let tree = pg_query::parse(&format!("SELECT * FROM t WHERE {sql_where}")).unwrap();
    crate::shape::of(&tree.protobuf)
        .unwrap()
        .unwrap()
        .sides
        .remove(0)
        .filter
        .bind(scope)
}

fn row(values: &[(&str, Option<&str>)]) -> EnteringRow {
    values
        .iter()
        .map(|(c, v)| {
            (
                c.to_string(),
                v.map_or(NewValue::Null, |t| NewValue::Text(t.into())),
            )
        })
        .collect()
}

fn truth(
    sql_where: &str,
    params: &[(&'static str, &str)],
    values: &[(&str, Option<&str>)],
) -> Truth {
    let scope = table(params.iter().map(|(t, _)| *t).collect());
    let p = pred(sql_where, &scope);
    let params: Vec<String> = params.iter().map(|(_, v)| v.to_string()).collect();
    p.eval(&row(values), &params)
}

#[test]
fn three_valued_logic_combines_sets() {
    assert_eq!(Truth::NULL.and(Truth::FALSE), Truth::FALSE);
    assert_eq!(Truth::NULL.or(Truth::TRUE), Truth::TRUE);
    assert_eq!(Truth::NULL.not(), Truth::NULL);
    assert_eq!(Truth::ANY.and(Truth::FALSE), Truth::FALSE);
    assert_eq!(Truth::ANY.not(), Truth::ANY);
    assert_eq!(Truth::ANY.or(Truth::FALSE), Truth::ANY);
}

#[test]
fn conditions_are_decided_on_new_values() {
    fn id(v: &str) -> [(&str, Option<&str>); 1] {
        [("id", Some(v))]
    }
    assert_eq!(truth("id > $1", &[("integer", "5")], &id("6")), Truth::TRUE);
    assert_eq!(
        truth("id > $1", &[("integer", "5")], &id("5")),
        Truth::FALSE
    );
    assert_eq!(
        truth("id > $1", &[("integer", "5")], &[("id", None)]),
        Truth::NULL
    );
    assert_eq!(truth("id > $1", &[("integer", "5")], &[]), Truth::ANY);
    assert_eq!(truth("id BETWEEN 2 AND 4", &[], &id("4")), Truth::TRUE);
    assert_eq!(truth("id NOT BETWEEN 2 AND 4", &[], &id("4")), Truth::FALSE);
    assert_eq!(
        truth("id BETWEEN SYMMETRIC 4 AND 2", &[], &id("3")),
        Truth::TRUE
    );
    assert_eq!(truth("id IN (1, 2)", &[], &id("2")), Truth::TRUE);
    assert_eq!(truth("id NOT IN (1, NULL)", &[], &id("2")), Truth::NULL);
    assert_eq!(
        truth("id = ANY($1)", &[("integer[]", "{1,3}")], &id("3")),
        Truth::TRUE
    );
    assert_eq!(
        truth("id <> ALL($1)", &[("integer[]", "{1,3}")], &id("3")),
        Truth::FALSE
    );
    assert_eq!(
        truth("id = ANY($1)", &[("integer[]", "{}")], &[("id", None)]),
        Truth::FALSE
    );
    assert_eq!(
        truth("price >= 1.5", &[], &[("price", Some("1.50"))]),
        Truth::TRUE
    );
    assert_eq!(
        truth(
            "price < $1",
            &[("numeric", "1e1")],
            &[("price", Some("9.99"))]
        ),
        Truth::TRUE
    );
    assert_eq!(truth("name IS NULL", &[], &[("name", None)]), Truth::TRUE);
    assert_eq!(
        truth("name IS NOT NULL", &[], &[("name", None)]),
        Truth::FALSE
    );
    assert_eq!(
        truth("NOT active", &[], &[("active", Some("false"))]),
        Truth::TRUE
    );
    assert_eq!(
        truth("active IS NOT TRUE", &[], &[("active", None)]),
        Truth::TRUE
    );
    assert_eq!(
        truth("(id > 1) IS UNKNOWN", &[], &[("id", None)]),
        Truth::TRUE
    );
    assert_eq!(
        truth("name < 'b'", &[], &[("name", Some("a"))]),
        Truth::TRUE
    );
    assert_eq!(
        truth("name LIKE 'ab%'", &[], &[("name", Some("abc"))]),
        Truth::TRUE
    );
    assert_eq!(
        truth(
            r#"UPPER("t"."name"::text) LIKE UPPER($1)"#,
            &[("text", "%B%")],
            &[("name", Some("abc"))]
        ),
        Truth::TRUE
    );
    assert_eq!(
        truth(
            "name ILIKE '%' || $1 || '%'",
            &[("text", "X")],
            &[("name", Some("abc"))]
        ),
        Truth::FALSE
    );
    assert_eq!(
        truth(
            "doc @> $1",
            &[("jsonb", r#"{"a": 1}"#)],
            &[("doc", Some(r#"{"a": 1.0, "b": 2}"#))]
        ),
        Truth::TRUE
    );
    assert_eq!(
        truth("doc ? 'b'", &[], &[("doc", Some(r#"{"a": 1}"#))]),
        Truth::FALSE
    );
    assert_eq!(
        truth(
            "doc ?| $1",
            &[("text[]", "{x,a}")],
            &[("doc", Some(r#"{"a": 1}"#))]
        ),
        Truth::TRUE
    );
    assert_eq!(
        truth(
            "doc ?& $1",
            &[("text[]", "{x,a}")],
            &[("doc", Some(r#"{"a": 1}"#))]
        ),
        Truth::FALSE
    );
    assert_eq!(
        truth(
            "at >= $1",
            &[("timestamp with time zone", "2024-01-01 00:00:00+00")],
            &[("at", Some("2024-01-01 01:00:00+02"))]
        ),
        Truth::FALSE
    );
    assert_eq!(
        truth("id = 1 OR name SIMILAR TO 'x'", &[], &[("id", Some("1"))]),
        Truth::TRUE
    );
    assert_eq!(
        truth("id = 1 OR name SIMILAR TO 'x'", &[], &[("id", Some("2"))]),
        Truth::ANY
    );
    assert_eq!(
        truth("id = 1 AND name SIMILAR TO 'x'", &[], &[("id", Some("2"))]),
        Truth::FALSE
    );
}

#[test]
fn what_is_not_decided_here_says_why() {
    let scope = table(vec!["text"]);
    let undecided = |w: &str| pred(w, &scope).undecided();
    assert!(
        undecided("name SIMILAR TO $1")
            .unwrap()
            .contains("SIMILAR TO")
    );
    assert!(undecided("shape IS NULL OR id = 1").is_none());
    assert!(undecided("shape ~= point(1,1)").is_some());
    assert!(undecided("id = 1 AND name SIMILAR TO $1").is_none());
    assert!(undecided("id = 1 OR name SIMILAR TO $1").is_some());
    assert!(undecided("name ~ $1").is_none());
    let linguistic = Table {
        collation: Collation {
            deterministic: true,
            bytewise: false,
            ascii_folding: false,
        },
        ..table(vec!["text"])
    };
    assert!(
        pred("name < $1", &linguistic)
            .undecided()
            .unwrap()
            .contains("collation")
    );
    assert!(
        pred("name ILIKE $1", &linguistic)
            .undecided()
            .unwrap()
            .contains("ILIKE")
    );
    assert!(pred("name LIKE $1", &linguistic).undecided().is_none());
}

#[test]
fn a_pinned_column_keys_results_and_rows_alike() {
    let scope = table(vec!["numeric", "integer[]"]);
    let p = pred("price = $1 AND name LIKE 'a%'", &scope)
        .pinned()
        .unwrap();
    assert_eq!(p.column, "price");
    let keys = p.keys(&["1.50".into()]).unwrap();
    assert_eq!(
        Lookup::Key(keys[0].clone()),
        p.row_key(&row(&[("price", Some("1.5"))]))
    );
    assert_eq!(Lookup::Nowhere, p.row_key(&row(&[("price", None)])));
    assert_eq!(Lookup::Everywhere, p.row_key(&row(&[])));
    let p = pred("id IN (1, 2) OR id = ANY($2)", &scope)
        .pinned()
        .unwrap();
    assert_eq!(p.keys(&["".into(), "{3,NULL}".into()]).unwrap().len(), 3);
    assert!(pred("id > 1", &scope).pinned().is_none());
    assert!(pred("id = 1 OR name = 'x'", &scope).pinned().is_none());
}

#[test]
fn a_bounded_column_orders_results_by_their_bound() {
    use std::ops::Bound;
    let scope = table(vec!["numeric", "numeric"]);
    let r = pred("price BETWEEN $1 AND $2 AND name LIKE 'a%'", &scope)
        .ranged()
        .unwrap();
    assert_eq!(r.column, "price");
    let bound = r.key(&["1.50".into(), "9".into()]).unwrap();
    assert_eq!(bound, r.key(&["1.5".into(), "0".into()]).unwrap());
    // price >= bound: results whose bound is at most the row's value.
    let Lookup::Range((low, high)) = r.range(&row(&[("price", Some("2"))])) else {
        panic!("a range");
    };
    assert_eq!(low, Bound::Unbounded);
    assert!(matches!(high, Bound::Included(ref v) if *v == r.key(&["2.0".into()]).unwrap()));
    assert_eq!(r.range(&row(&[("price", None)])), Lookup::Nowhere);
    assert_eq!(r.range(&row(&[])), Lookup::Everywhere);
    // A constant on the left: 5 < id is id > 5.
    let r = pred("5 < id", &scope).ranged().unwrap();
    let Lookup::Range((_, high)) = r.range(&row(&[("id", Some("7"))])) else {
        panic!("a range");
    };
    assert!(matches!(high, Bound::Excluded(_)));
    assert!(pred("id > price", &scope).ranged().is_none());
}

#[test]
fn dates_of_timestamps_are_decided_where_no_time_zone_decides_them() {
    let seen = |v| [("seen", Some(v))];
    let at = |v| [("at", Some(v))];
    let may = Truth::ANY;
    // Django's `__date` and `__trunc`, SQLAlchemy's `func.date_trunc`.
    assert_eq!(
        truth(
            "(at AT TIME ZONE $1)::date = $2",
            &[("text", "UTC"), ("date", "2024-04-30")],
            &at("2024-05-01 01:30:00+05:30")
        ),
        Truth::TRUE
    );
    assert_eq!(
        truth(
            "(at AT TIME ZONE $1)::date = $2",
            &[("text", "Europe/Paris"), ("date", "2024-04-30")],
            &at("2024-05-01 01:30:00+05:30")
        ),
        may
    );
    assert_eq!(
        truth(
            "date_trunc('month', seen) = $1",
            &[("timestamp without time zone", "2024-05-01 00:00:00")],
            &seen("2024-05-31 23:59:59.999999")
        ),
        Truth::TRUE
    );
    assert_eq!(
        truth(
            "seen::date > '2024-05-01'",
            &[],
            &seen("2024-05-01 23:00:00")
        ),
        Truth::FALSE
    );
    // A timestamptz's date, or its truncation, is the session's time zone's.
    assert_eq!(
        truth(
            "at::date = '2024-05-01'",
            &[],
            &at("2024-05-01 01:30:00+00")
        ),
        may
    );
    assert_eq!(
        truth(
            "date_trunc('day', at) = '2024-05-01'",
            &[],
            &at("2024-05-01 01:30:00+00")
        ),
        may
    );
}
