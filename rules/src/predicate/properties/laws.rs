//! The rules alone, held to laws that need no server: generated WHEREs (`generate`) parsed,
//! shaped, decided (`precision::decide`) and weighed on generated rows, thousands of cases a
//! second. Whatever PostgreSQL would answer:
//! - weighing never panics, whatever a row holds (any text, NULLs, columns not carried);
//! - three-valued logic holds of the verdicts: `NOT NOT p` is `p`, `NOT (a AND b)` is
//!   `NOT a OR NOT b` and `NOT (a OR b)` is `NOT a AND NOT b`, AND and OR commute;
//! - the decision binds a WHERE as the table's scope does;
//! - an index never hides a result from a row that may enter it: where a side admits a row,
//!   the lookup by the row's value (`SideMatch::lookup`) finds the result as its parameters
//!   filed it (`SideMatch::keys`, `SideMatch::bound`), as `membership` files and finds them;
//! - a key decides what a result's members are, not which new rows may enter it: the same
//!   table without a primary key is decided row by row too, bound alike, and admits exactly
//!   the rows the keyed one admits (an insert into it keeps the results it cannot enter);
//! - a page's statement with its ties broken and its rows (`shape::tie_broken`) parse and
//!   deparse to themselves.
//!
//! `PROPTEST_CASES` sets how many cases (`make fuzz` runs many); `PGCACHE_LAWS_SEED`
//! repeats a run.

use super::super::*;
use super::generate::{Built, COLUMNS, Columns, condition, numbered, values};
use crate::kind::column_kind;
use crate::precision::{Collations, Column, Facts, Learned, Precision, Table};
use crate::shape::Shaped;
use pgcache_testkit::Rng;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Instant;

/// Rows each case weighs.
const ROWS: usize = 8;

/// The generated table `t`, as the catalog would describe it.
struct Generated {
    columns: Vec<Column>,
    primary_key: Vec<String>,
}

impl Generated {
    /// `t` without its primary key.
    fn keyless(&self) -> Generated {
        Generated {
            columns: self.columns.clone(),
            primary_key: Vec::new(),
        }
    }

    fn new() -> Generated {
        let column = |name: &str, ty: &str, kind| Column {
            name: name.into(),
            cast_type: ty.into(),
            kind,
            row_valued: name == "p",
        };
        let mut columns = vec![column("rid", "integer", column_kind("int4", false))];
        // As the catalog's columns are read: oid by its key kind.
        columns.extend(COLUMNS.iter().map(|(c, ty)| {
            column(
                c,
                ty,
                column_kind(if *ty == "oid" { "oid" } else { ty }, false),
            )
        }));
        Generated {
            columns,
            primary_key: vec!["rid".into()],
        }
    }
}

impl Table for Generated {
    fn key(&self) -> &str {
        "t"
    }
    fn schema(&self) -> &str {
        "public"
    }
    fn name(&self) -> &str {
        "t"
    }
    fn display(&self) -> &str {
        "t"
    }
    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
    fn primary_key(&self) -> &[String] {
        &self.primary_key
    }
}

/// The text columns' collations and the database's default, as the catalog may answer:
/// bytewise, English, Turkish or ICU.
fn collations(rng: &mut Rng) -> Collations {
    let mut collations = Collations::default();
    for column in [Some("name"), Some("code"), None] {
        let (provider, locale) = rng.pick(&[
            ("c", "C"),
            ("c", "en_US.UTF-8"),
            ("c", "tr_TR.UTF-8"),
            ("i", "und"),
        ]);
        let deterministic = !rng.chance(10);
        collations.add(
            column.map(String::from),
            deterministic,
            Some(provider.into()),
            Some(locale.into()),
            Some(locale.into()),
        );
    }
    collations
}

/// A row as a change may carry it: each column a value of its own type, another's, any
/// text, NULL, or not carried.
fn row(rng: &mut Rng) -> EnteringRow {
    let mut row = EnteringRow::new();
    for (c, _) in COLUMNS {
        if rng.chance(10) {
            continue;
        }
        let value = if rng.chance(12) {
            NewValue::Null
        } else if rng.chance(5) {
            let (other, _) = rng.pick(COLUMNS);
            NewValue::Text(rng.pick(values(other)).to_string())
        } else if rng.chance(3) {
            let chars = ['a', '1', '-', '.', 'é', '{', '"', ' ', 'e', ':', '\\'];
            NewValue::Text((0..rng.below(6)).map(|_| rng.pick(&chars)).collect())
        } else {
            NewValue::Text(rng.pick(values(c)).to_string())
        };
        row.push((c.to_string(), value));
    }
    row
}

/// What the cases found: how many had a shape, verdicts weighed, laws of logic checked,
/// rows the index law looked up, pages spelled.
#[derive(Default)]
struct Count {
    cases: usize,
    verdicts: usize,
    logic: usize,
    indexed: usize,
    pages: usize,
}

/// One case: a WHERE weighed on rows, held to one law of logic (picked at random, against
/// a second WHERE where the law takes two), to the index law and, one case in four, to the
/// page law.
fn case(rng: &mut Rng, table: &Arc<Generated>, count: &mut Count) {
    let collations = collations(rng);
    let a = condition(rng, 3);
    let rows: Vec<EnteringRow> = (0..ROWS).map(|_| row(rng)).collect();
    let scope = |built: &Built| Columns {
        columns: collations.columns.clone(),
        default: collations.default,
        params: built.types.clone(),
    };
    let Some(Ok(shape)) = a.shaped() else {
        return;
    };
    let filter = shape.sides[0].filter.clone().bind(&scope(&a));
    let verdicts: Vec<Truth> = rows.iter().map(|r| filter.eval(r, &a.params)).collect();
    count.cases += 1;
    count.verdicts += verdicts.len();
    let weigh = |built: &Built| -> Option<Vec<Truth>> {
        let pred = built.filter(&scope(built))?;
        Some(rows.iter().map(|r| pred.eval(r, &built.params)).collect())
    };
    // Whether `left` and `right` are weighed alike on every row (false: one has no shape).
    let same = |law: &str, left: &Built, right: &Built| {
        let (Some(l), Some(r)) = (weigh(left), weigh(right)) else {
            return false;
        };
        for ((l, r), row) in l.iter().zip(&r).zip(&rows) {
            assert_eq!(
                l,
                r,
                "{law}: WHERE {} is {l:?} but WHERE {} is {r:?} on {row:?} with {:?} / {:?}",
                numbered(&left.sql),
                numbered(&right.sql),
                left.params,
                right.params
            );
        }
        true
    };
    let b = condition(rng, 3);
    let checked = match rng.below(5) {
        0 => {
            let twice = a.negated().negated();
            let again = weigh(&twice);
            if let Some(again) = &again {
                assert_eq!(
                    again,
                    &verdicts,
                    "NOT NOT p is p: WHERE {}",
                    numbered(&twice.sql)
                );
            }
            again.is_some()
        }
        1 => same(
            "De Morgan (AND)",
            &a.clone().joined("AND", b.clone()).negated(),
            &a.negated().joined("OR", b.negated()),
        ),
        2 => same(
            "De Morgan (OR)",
            &a.clone().joined("OR", b.clone()).negated(),
            &a.negated().joined("AND", b.negated()),
        ),
        n => {
            let joiner = if n == 3 { "AND" } else { "OR" };
            same(
                &format!("{joiner} commutes"),
                &a.clone().joined(joiner, b.clone()),
                &b.joined(joiner, a.clone()),
            )
        }
    };
    count.logic += usize::from(checked);
    index(&a, &Ok(shape), &filter, table, &collations, &rows, count);
    if rng.chance(25) {
        page(rng, &a, count);
    }
}

/// The index law: decided as pgcache decides it, a side's lookup by a row it admits finds
/// the result of the case's parameters.
fn index(
    built: &Built,
    shaped: &Shaped,
    filter: &Pred,
    table: &Arc<Generated>,
    collations: &Collations,
    rows: &[EnteringRow],
    count: &mut Count,
) {
    let tables = [table.clone()];
    let learned = Learned {
        tables: &tables,
        params: built
            .types
            .iter()
            .map(|t| (t.as_str(), column_kind(t, false)))
            .collect(),
        plain: true,
        aggregates: false,
        own_functions: &[],
    };
    let mut facts = Facts::default();
    facts.collations.insert("t".into(), collations.clone());
    let Precision::Row(m) = crate::precision::decide(shaped, &learned, &facts) else {
        return;
    };
    let sql = numbered(&built.sql);
    let side = &m.sides[0];
    assert_eq!(
        &side.filter, filter,
        "WHERE {sql}: decided otherwise than bound"
    );
    let params = &built.params;
    let keyless = [Arc::new(table.keyless())];
    let without_key = Learned {
        tables: &keyless,
        params: learned.params.clone(),
        ..learned
    };
    let Precision::Row(k) = crate::precision::decide(shaped, &without_key, &facts) else {
        panic!("WHERE {sql}: row-precise over t with its key, not over t without one");
    };
    assert_eq!(
        k.sides[0].filter, side.filter,
        "WHERE {sql}: bound otherwise without a key"
    );
    let (keys, bound) = (side.keys(params), side.bound(params));
    for row in rows {
        assert_eq!(
            k.admits(0, params, None, row),
            m.admits(0, params, None, row),
            "WHERE {sql} with {params:?} on {row:?}: a key changed which rows enter"
        );
        if !m.admits(0, params, None, row) {
            continue;
        }
        count.indexed += 1;
        let found = match side.lookup(row) {
            Lookup::Nowhere => false,
            Lookup::Key(key) => keys.as_ref().is_none_or(|keys| keys.contains(&key)),
            Lookup::Range(range) => bound.as_ref().is_none_or(|b| range.contains(b)),
            Lookup::Everywhere => true,
        };
        assert!(
            found,
            "WHERE {sql} with {params:?} admits {row:?}, but its lookup {:?} misses the \
             result filed under {keys:?} / {bound:?}",
            side.lookup(row)
        );
    }
}

/// The page law: `SELECT * FROM t WHERE <a> ORDER BY ... LIMIT ...` with its ties broken
/// by `rid`, and its rows, are statements the parser spells as they are.
fn page(rng: &mut Rng, built: &Built, count: &mut Count) {
    let mut keys = Vec::new();
    for _ in 0..=rng.below(2) {
        let (column, _) = rng.pick(COLUMNS);
        let direction = rng.pick(&["", " DESC", " ASC NULLS FIRST", " DESC NULLS LAST"]);
        keys.push(format!("{column}{direction}"));
    }
    let limit = if rng.chance(50) {
        "$1".to_string()
    } else {
        rng.below(50).to_string()
    };
    let sql = format!(
        "SELECT * FROM t WHERE {} ORDER BY {} LIMIT {limit}",
        numbered(&built.sql),
        keys.join(", ")
    );
    let Ok(canonical) = pg_query::parse(&sql).and_then(|t| t.deparse()) else {
        return;
    };
    let (statement, ordered) = crate::shape::tie_broken(&canonical, "t", &["rid".into()])
        .unwrap_or_else(|e| panic!("{canonical}: {e}"));
    for spelled in [&statement, &ordered] {
        let again = pg_query::parse(spelled).and_then(|t| t.deparse());
        assert_eq!(again.as_ref(), Ok(spelled), "{canonical}");
    }
    count.pages += 1;
}

#[test]
fn properties_the_rules_keep_their_laws() {
    let seed: u64 = std::env::var("PGCACHE_LAWS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id().into());
    let cases: usize = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut rng = Rng::new(seed);
    let table = Arc::new(Generated::new());
    let mut count = Count::default();
    let started = Instant::now();
    for _ in 0..cases {
        case(&mut rng, &table, &mut count);
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "laws: {} cases ({} verdicts, {} laws of logic, {} admitted rows looked up, {} pages) \
         in {seconds:.2} s: {:.0} cases/s (seed {seed})",
        count.cases,
        count.verdicts,
        count.logic,
        count.indexed,
        count.pages,
        count.cases as f64 / seconds
    );
    assert!(
        count.cases * 10 > cases * 9,
        "seed {seed}: only {} of {cases} cases had a shape",
        count.cases
    );
}
