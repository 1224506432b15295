//! How precisely a statement's results are dropped. `Table`: any change to a table it reads
//! drops every result (joins, aggregates, ranges, subqueries, notify mode). `Row`: the
//! statement has a row shape (`shape`) over one plain table with a primary key, and a change
//! drops only the results it can affect: those whose bound values its new values match (a
//! row entering) and those built from the changed row (a member: leaving, or changing
//! inside). A condition matches a new value by its text, so only on columns whose equality
//! is equality of their text (integers, uuids, booleans, text under a deterministic
//! collation, enums); a condition on any other column matches every value (`exact` holds
//! the others). A value the change did not carry (an unchanged TOASTed value, a column
//! nobody watched when it was read, a notification) matches too: never fewer drops.

use crate::config::current;
use crate::error::Result;
use crate::model::key::{KeyKind, canonical_param};
use crate::pg::errors::statement_error;
use crate::pg::pool::Connection;
use crate::pg::schema::TableSchema;
use crate::query::catalog::ParamType;
use crate::query::shape::{Operand, Shape};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub enum Precision {
    /// Why not row by row.
    Table(&'static str),
    Row(RowMatch),
}

impl Precision {
    pub fn name(&self) -> &'static str {
        match self {
            Precision::Table(_) => "table",
            Precision::Row(_) => "row",
        }
    }

    pub fn row(&self) -> Option<&RowMatch> {
        match self {
            Precision::Row(m) => Some(m),
            Precision::Table(_) => None,
        }
    }
}

/// What a row-precise statement's results are matched on.
pub struct RowMatch {
    /// The one table it reads.
    pub table: Arc<TableSchema>,
    /// Its conditions on columns compared exactly, in the WHERE's order.
    pub exact: Vec<Exact>,
}

/// `column = any of values`, on a column compared exactly.
pub struct Exact {
    pub column: String,
    pub values: Vec<Bound>,
}

pub enum Bound {
    /// The parameter at this index (0-based), canonical as the key has it.
    Param(usize),
    /// A constant of the statement, canonical.
    Const(String),
}

/// A changed row's new value of a column, as the change carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewValue {
    Null,
    /// Canonical text (booleans as `true`/`false`).
    Text(String),
}

/// A row a change wrote (inserted, or updated to), by the columns some row-precise
/// statement matches on; a column not here is unknown, and matches.
pub type EnteringRow = Vec<(String, NewValue)>;

impl RowMatch {
    /// The values each exact condition admits, for a result of `params` (canonical).
    pub fn bound(&self, params: &[String]) -> Vec<Vec<String>> {
        self.exact
            .iter()
            .map(|c| {
                let mut values: Vec<String> = c
                    .values
                    .iter()
                    .filter_map(|v| match v {
                        Bound::Param(i) => params.get(*i).cloned(),
                        Bound::Const(text) => Some(text.clone()),
                    })
                    .collect();
                values.sort();
                values.dedup();
                values
            })
            .collect()
    }

    /// Whether `row` may enter a result whose conditions admit `bound`.
    pub fn admits(&self, bound: &[Vec<String>], row: &EnteringRow) -> bool {
        self.exact.iter().zip(bound).all(|(condition, values)| {
            match row.iter().find(|(column, _)| *column == condition.column) {
                None => true,
                Some((_, NewValue::Null)) => false,
                Some((_, NewValue::Text(text))) => values.contains(text),
            }
        })
    }

    /// The columns it is exact on.
    pub fn exact_on(&self) -> Vec<String> {
        self.exact.iter().map(|c| c.column.clone()).collect()
    }
}

/// Which kinds compare exactly by their canonical text.
fn exact_kind(kind: KeyKind) -> bool {
    matches!(
        kind,
        KeyKind::Integer { .. } | KeyKind::Text | KeyKind::Uuid | KeyKind::Bool
    )
}

/// Deterministic collations only: under a nondeterministic one, `'a' = 'A'` may hold.
const NONDETERMINISTIC_SQL: &str = "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation \
     WHERE a.attrelid = $1::text::pg_catalog.regclass AND a.attnum > 0 \
     AND NOT c.collisdeterministic";

/// The precision of a statement whose shape is `shape` (if the grammar saw one), that
/// reads `tables` and only them as plain tables (`plain`: no view, partition, child or
/// aggregate), with parameters `params`. Worker.
pub fn decide(
    client: &mut Connection,
    shape: Option<&Shape>,
    tables: &[Arc<TableSchema>],
    plain: bool,
    params: &[ParamType],
) -> Result<Precision> {
    if !current::query_row_precision() {
        return Ok(Precision::Table(
            "query_precision is table, or invalidations come from notifications, which carry no \
             new values",
        ));
    }
    let Some(shape) = shape else {
        return Ok(Precision::Table(
            "not one table filtered by a conjunction of column = value and column IN (...)",
        ));
    };
    let ([table], true) = (tables, plain) else {
        return Ok(Precision::Table(
            "it reads a view, a partitioned table or inheritance children, or calls an \
             aggregate or window function",
        ));
    };
    let keys_exact = !table.primary_key.is_empty()
        && table
            .primary_key
            .iter()
            .all(|name| table.column(name).is_some_and(|c| exact_kind(c.kind)));
    if !keys_exact {
        return Ok(Precision::Table(
            "the table has no primary key, or one of a type compared by more than its text",
        ));
    }
    let inexact: Vec<String> = client
        .query(NONDETERMINISTIC_SQL, &[&table.sql_name])
        .map_err(|e| statement_error(&e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let exact = shape
        .conditions
        .iter()
        .filter_map(|condition| {
            let column = table.column(&condition.column)?;
            // `name` input is cut at 63 bytes: a longer parameter equals a shorter value.
            if !exact_kind(column.kind)
                || inexact.contains(&column.name)
                || column.cast_type == "name"
            {
                return None;
            }
            let values = condition
                .operands
                .iter()
                .map(|operand| match operand {
                    Operand::Param(n) => {
                        let param = params.get(n.checked_sub(1)?)?;
                        (param.kind == column.kind).then_some(Bound::Param(n - 1))
                    }
                    Operand::Const(text) => {
                        canonical_param(column.kind, text).ok().map(Bound::Const)
                    }
                })
                .collect::<Option<Vec<Bound>>>()?;
            Some(Exact {
                column: column.name.clone(),
                values,
            })
        })
        .collect();
    watch(
        table,
        &shape
            .conditions
            .iter()
            .map(|c| c.column.clone())
            .collect::<Vec<_>>(),
    );
    Ok(Precision::Row(RowMatch {
        table: table.clone(),
        exact,
    }))
}

/// The columns whose new values the change feed carries, by table (`"schema"."name"`):
/// those some row-precise statement matches on. Read by the feed for every changed row.
static WATCHED: RwLock<Option<HashMap<String, Vec<String>>>> = RwLock::new(None);

fn watch(table: &TableSchema, columns: &[String]) {
    let mut watched = WATCHED.write().unwrap_or_else(|p| p.into_inner());
    let list = watched
        .get_or_insert_with(HashMap::new)
        .entry(table.sql_name.clone())
        .or_default();
    for column in columns {
        if !list.contains(column) {
            list.push(column.clone());
        }
    }
}

/// Calls `f` with the watched columns of `table` (`"schema"."name"`), if any are.
pub fn with_watched<R>(table: &str, f: impl FnOnce(&[String]) -> R) -> Option<R> {
    let watched = WATCHED.read().unwrap_or_else(|p| p.into_inner());
    watched.as_ref()?.get(table).map(|columns| f(columns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> Arc<TableSchema> {
        Arc::new(TableSchema::for_tests(
            "orders",
            Vec::new(),
            vec!["id".into()],
        ))
    }

    fn row_match() -> RowMatch {
        RowMatch {
            table: orders(),
            exact: vec![
                Exact {
                    column: "customer_id".into(),
                    values: vec![Bound::Param(0)],
                },
                Exact {
                    column: "status".into(),
                    values: vec![Bound::Const("open".into()), Bound::Param(1)],
                },
            ],
        }
    }

    fn text(s: &str) -> NewValue {
        NewValue::Text(s.into())
    }

    #[test]
    fn a_row_enters_where_every_exact_condition_admits_its_value() {
        let m = row_match();
        let bound = m.bound(&["7".into(), "paid".into()]);
        assert_eq!(
            bound,
            vec![vec!["7".to_string()], vec!["open".into(), "paid".into()]]
        );
        let row = |c: &str, s: NewValue| -> EnteringRow {
            vec![("customer_id".into(), text(c)), ("status".into(), s)]
        };
        assert!(m.admits(&bound, &row("7", text("open"))));
        assert!(m.admits(&bound, &row("7", text("paid"))));
        assert!(!m.admits(&bound, &row("8", text("open"))));
        assert!(!m.admits(&bound, &row("7", text("void"))));
        assert!(!m.admits(&bound, &row("7", NewValue::Null)));
        // What the change did not carry matches.
        assert!(m.admits(&bound, &vec![("customer_id".into(), text("7"))]));
        assert!(m.admits(&bound, &Vec::new()));
        assert_eq!(m.exact_on(), vec!["customer_id", "status"]);
    }
}
