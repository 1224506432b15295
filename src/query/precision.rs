//! How precisely a statement's results are dropped. `Table`: any change to a table it reads
//! drops every result (joins, subqueries, notify mode). `Row`: the statement
//! has a row shape (`shape`) over one plain table with a primary key, and a change drops
//! only the results it can affect: those its new values may enter (the WHERE, bound to the
//! result's parameters, may be TRUE on them: `predicate`) and those built from the changed
//! row (a member: leaving, or changing inside). A value the change did not carry (an
//! unchanged TOASTed value, a column nobody watched when it was read) and a piece of the
//! WHERE not decided here may match: never fewer drops.

use crate::config::current;
use crate::error::Result;
use crate::model::key::KeyKind;
use crate::pg::errors::statement_error;
use crate::pg::pool::Connection;
use crate::pg::schema::TableSchema;
use crate::query::catalog::{Learned, ParamType};
use crate::query::predicate::order::{self, SortKey};
use crate::query::predicate::{Collation, Pinned, Pred, Ranged, Scope, SqlType};
use crate::query::shape::{Count, Page, Shape};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use crate::query::predicate::{EnteringRow, NewValue};

pub enum Precision {
    /// Why not row by row.
    Table(String),
    Row(Box<RowMatch>),
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
    /// Its WHERE, bound to the table's column types.
    pub filter: Pred,
    /// A column its WHERE pins to values, to find a row's results by its value.
    pub pinned: Option<Pinned>,
    /// Else a column its WHERE bounds on one side, to find them by an ordered range.
    pub ranged: Option<Ranged>,
    /// Its ORDER BY ... LIMIT, when its results are pages of the table's rows.
    pub page: Option<PageMatch>,
}

/// A page: its sort keys, typed, and its LIMIT and OFFSET.
pub struct PageMatch {
    pub keys: Vec<SortKey>,
    pub limit: Count,
    pub offset: Option<Count>,
}

impl PageMatch {
    /// How many rows a full page of `params` is built from (`offset + limit`).
    pub fn rows(&self, params: &[String]) -> Option<u64> {
        let offset = match &self.offset {
            Some(offset) => offset.value(params)?,
            None => 0,
        };
        offset.checked_add(self.limit.value(params)?)
    }
}

impl RowMatch {
    /// Whether `row` may enter a result of `params` (canonical) that, if it is a full page,
    /// ends at `boundary`.
    pub fn admits(
        &self,
        params: &[String],
        boundary: Option<&[Option<String>]>,
        row: &EnteringRow,
    ) -> bool {
        let after = match (&self.page, boundary) {
            (Some(page), Some(last)) => order::sorts_after(&page.keys, last, row),
            _ => false,
        };
        !after && self.filter.eval(row, params).may_be_true()
    }

    /// The columns its WHERE decides on.
    pub fn exact_on(&self) -> Vec<String> {
        self.filter.columns()
    }
}

/// The collation of each text column, and the database's default. The default collation
/// is the database's, whose provider is ICU on PostgreSQL 15+ when `datlocprovider` says
/// so (read through to_jsonb: older servers have no such column).
pub(crate) const COLLATIONS_SQL: &str = "WITH db AS (SELECT d.datcollate::text AS collate, \
       d.datctype::text AS ctype, \
       coalesce(pg_catalog.to_jsonb(d) ->> 'datlocprovider', 'c') AS provider \
     FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()) \
   SELECT a.attname::text, c.collisdeterministic, \
       CASE WHEN c.collprovider = 'd' THEN db.provider ELSE c.collprovider::text END, \
       CASE WHEN c.collprovider = 'd' THEN db.collate ELSE c.collcollate::text END, \
       CASE WHEN c.collprovider = 'd' THEN db.ctype ELSE c.collctype::text END \
   FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation \
   CROSS JOIN db WHERE a.attrelid = $1::text::pg_catalog.regclass AND a.attnum > 0 \
     AND NOT a.attisdropped \
   UNION ALL SELECT NULL, true, db.provider, db.collate, db.ctype FROM db";

/// What a collation decides as pgcache computes it: bytes order only under libc's "C" and
/// "POSIX"; ASCII folds as ASCII under those, `C.*` and English locales (not under a
/// Turkic one, nor ICU, which are not checked here).
pub(crate) fn collation(
    deterministic: bool,
    provider: &str,
    collate: &str,
    ctype: &str,
) -> Collation {
    let libc = provider == "c";
    let plain = |name: &str| name == "C" || name == "POSIX";
    Collation {
        deterministic,
        bytewise: libc && plain(collate),
        ascii_folding: libc
            && (plain(ctype) || ctype.starts_with("C.") || ctype.starts_with("en_")),
    }
}

/// The type a value of type `name` compares as: its own, or for a domain over a boolean,
/// an integer or a uuid (compared by its base type's operators), that base type.
fn base_type(name: &str, kind: KeyKind) -> String {
    let base = match kind {
        KeyKind::Bool => "boolean",
        KeyKind::Integer { .. } => "bigint",
        KeyKind::Uuid => "uuid",
        _ => return name.to_string(),
    };
    match SqlType::named(name, Collation::UNKNOWN) {
        SqlType::Unresolved => base.to_string(),
        _ => name.to_string(),
    }
}

/// The table's columns and the statement's parameters, as binding reads them.
struct Bindings<'a> {
    table: &'a TableSchema,
    collations: HashMap<String, Collation>,
    default: Collation,
    params: &'a [ParamType],
}

impl Scope for Bindings<'_> {
    fn column(&self, name: &str) -> Option<(String, Collation)> {
        // A `name` column is not one of the types read (`value`): its input is cut at 63
        // bytes, so a longer parameter equals a shorter value.
        let column = self.table.column(name)?;
        let collation = self
            .collations
            .get(&column.name)
            .copied()
            .unwrap_or(Collation::UNKNOWN);
        Some((base_type(&column.cast_type, column.kind), collation))
    }

    fn param(&self, n: usize) -> Option<String> {
        let param = self.params.get(n.checked_sub(1)?)?;
        Some(base_type(&param.cast, param.kind))
    }

    fn default_collation(&self) -> Collation {
        self.default
    }
}

/// The precision of a statement whose shape is `shape` (if the grammar saw one), of which
/// the catalog `learned` what it reads and calls. Worker.
pub fn decide(
    client: &mut Connection,
    shape: Option<&Shape>,
    learned: &Learned,
) -> Result<Precision> {
    let (tables, plain, params) = (&learned.tables, learned.plain, &learned.params);
    if !current::query_row_precision() {
        return Ok(Precision::Table(
            "query_precision is table, or invalidations come from notifications, which carry no \
             new values"
                .into(),
        ));
    }
    let Some(shape) = shape else {
        return Ok(Precision::Table(
            "it has no WHERE, or it reads more than one table: a join, a subquery, a set \
             operation or a CTE"
                .into(),
        ));
    };
    if let Some(function) = learned.own_functions.first() {
        return Ok(Precision::Table(format!(
            "it calls {function}, which is not PostgreSQL's own: an operator or a function of \
             its WHERE may be it, and pgcache evaluates only PostgreSQL's"
        )));
    }
    let ([table], true) = (tables.as_slice(), plain) else {
        return Ok(Precision::Table(
            "it reads a view, a partitioned table, inheritance children or a table under \
             row-level security"
                .into(),
        ));
    };
    let keys_exact = !table.primary_key.is_empty()
        && table.primary_key.iter().all(|name| {
            table.column(name).is_some_and(|c| {
                matches!(
                    c.kind,
                    KeyKind::Integer { .. } | KeyKind::Text | KeyKind::Uuid | KeyKind::Bool
                )
            })
        });
    if !keys_exact {
        return Ok(Precision::Table(
            "the table has no primary key, or one of a type compared by more than its text".into(),
        ));
    }
    let mut collations = HashMap::new();
    let mut default = Collation::UNKNOWN;
    for row in client
        .query(COLLATIONS_SQL, &[&table.sql_name])
        .map_err(|e| statement_error(&e))?
    {
        let found = collation(
            row.get(1),
            row.get::<_, Option<String>>(2).as_deref().unwrap_or(""),
            row.get::<_, Option<String>>(3).as_deref().unwrap_or(""),
            row.get::<_, Option<String>>(4).as_deref().unwrap_or(""),
        );
        match row.get::<_, Option<String>>(0) {
            Some(column) => {
                collations.insert(column, found);
            }
            None => default = found,
        }
    }
    let bindings = Bindings {
        table,
        collations,
        default,
        params,
    };
    let filter = shape.filter.clone().bind(&bindings);
    let page = match &shape.page {
        Some(page) if !learned.aggregates => page_match(page, &bindings),
        _ => None,
    };
    if page.is_none() {
        if let Some(why) = filter.undecided() {
            return Ok(Precision::Table(format!(
                "pgcache cannot tell which rows its WHERE admits: {why}"
            )));
        }
        if shape.filter == Pred::And(Vec::new()) {
            return Ok(Precision::Table(
                "it has no WHERE and is not a page of the table's rows (ORDER BY columns with \
                 a LIMIT): any change may change it"
                    .into(),
            ));
        }
    }
    let mut columns = filter.columns();
    columns.extend(
        page.iter()
            .flat_map(|p| p.keys.iter().map(|k| k.column.clone())),
    );
    watch(table, &columns);
    let pinned = filter.pinned();
    Ok(Precision::Row(Box::new(RowMatch {
        table: table.clone(),
        ranged: pinned.is_none().then(|| filter.ranged()).flatten(),
        pinned,
        filter,
        page,
    })))
}

/// A page whose every sort key compares exactly, typed; None otherwise (its results are
/// then dropped by every row their WHERE may admit).
fn page_match(page: &Page, scope: &Bindings) -> Option<PageMatch> {
    let keys = page
        .keys
        .iter()
        .map(|(column, descending, nulls_first)| {
            let (type_name, collation) = scope.column(column)?;
            let ty = SqlType::named(&type_name, collation);
            order::orderable(ty).then(|| SortKey {
                column: column.clone(),
                ty,
                descending: *descending,
                nulls_first: *nulls_first,
            })
        })
        .collect::<Option<Vec<SortKey>>>()?;
    Some(PageMatch {
        keys,
        limit: page.limit.clone(),
        offset: page.offset.clone(),
    })
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

    #[test]
    fn collations_decide_order_and_case_folding() {
        let c = collation(true, "c", "C", "C");
        assert!(c.deterministic && c.bytewise && c.ascii_folding);
        let en = collation(true, "c", "en_US.UTF-8", "en_US.UTF-8");
        assert!(!en.bytewise && en.ascii_folding);
        let tr = collation(true, "c", "tr_TR.UTF-8", "tr_TR.UTF-8");
        assert!(!tr.bytewise && !tr.ascii_folding);
        let icu = collation(true, "i", "C", "C");
        assert!(!icu.bytewise && !icu.ascii_folding);
        assert!(!collation(false, "i", "", "").deterministic);
    }
}
