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
use crate::query::shape::{Count, Join, Page, Shape, Shaped};
use pgcache_rules::precision::{COLLATIONS_SQL, base_type, collation};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use crate::query::predicate::{EnteringRow, NewValue};

/// A row a change wrote (inserted, or updated to), by the columns row-precise results match
/// on, and whether its key is new to its table (an insert, or an update that changed the
/// key): only such a row can complete a join row whose foreign key named no row before (a
/// reference written without the key's check, under `session_replication_role = replica`).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub values: EnteringRow,
    pub new_key: bool,
}

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
    /// The tables it reads, one side each, in FROM's order (a table joined to itself is
    /// two sides).
    pub sides: Vec<SideMatch>,
    /// Its ORDER BY ... LIMIT, when its results are pages of its one table's rows.
    pub page: Option<PageMatch>,
}

/// One table a row-precise statement reads, and what its rows are matched on.
pub struct SideMatch {
    pub table: Arc<TableSchema>,
    /// How the statement refers to it (its alias, else its name).
    pub reference: String,
    /// The conditions each of its rows in a result passed, bound to its column types.
    pub filter: Pred,
    /// A column its conditions pin to values, to find a row's results by its value.
    pub pinned: Option<Pinned>,
    /// Else a column they bound on one side, to find them by an ordered range.
    pub ranged: Option<Ranged>,
    /// Whether a row that is none of a result's members may enter it. Not for a side whose
    /// rows come into the join only through another side's foreign key to them, and that no
    /// other condition names: a row the result did not hold no member referenced.
    pub enters: bool,
    /// For a side that does not enter: the side whose foreign key brings its rows in, and
    /// the column pairs (that side's, this side's) the key joins on.
    pub through: Option<Through>,
}

/// How a side's rows come into a join only through another side's foreign key.
pub struct Through {
    pub side: usize,
    /// `(referencing column, referenced column)`.
    pub pairs: Vec<(String, String)>,
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
    /// Whether `row`, of side `side`'s table, may enter a result of `params` (canonical)
    /// that, if it is a full page, ends at `boundary`.
    pub fn admits(
        &self,
        side: usize,
        params: &[String],
        boundary: Option<&[Option<String>]>,
        row: &EnteringRow,
    ) -> bool {
        let after = match (&self.page, boundary) {
            (Some(page), Some(last)) => order::sorts_after(&page.keys, last, row),
            _ => false,
        };
        !after && self.sides[side].filter.eval(row, params).may_be_true()
    }

    /// Whether `row`, of side `side`'s table, which enters results only through another
    /// side's foreign key, and whose key is new to its table, may enter a result of
    /// `params`: a row of the referencing side may reference it (a reference written
    /// without the key's check, as under `session_replication_role = replica`, may have
    /// named it before it was there). That side's conditions are weighed on its foreign key
    /// holding the new key: `o.user_id = $1` admits user 500 only into the results of 500.
    pub fn may_be_referenced(&self, side: usize, params: &[String], row: &EnteringRow) -> bool {
        let Some(through) = &self.sides[side].through else {
            return true;
        };
        let referencing: EnteringRow = through
            .pairs
            .iter()
            .filter_map(|(theirs, mine)| {
                let (_, value) = row.iter().find(|(c, _)| c == mine)?;
                Some((theirs.clone(), value.clone()))
            })
            .collect();
        self.sides[through.side]
            .filter
            .eval(&referencing, params)
            .may_be_true()
    }

    /// The columns its conditions decide on (`reference.column` in a join).
    pub fn exact_on(&self) -> Vec<String> {
        match self.sides.as_slice() {
            [side] => side.filter.columns(),
            sides => sides
                .iter()
                .flat_map(|s| {
                    s.filter
                        .columns()
                        .into_iter()
                        .map(|c| format!("{}.{c}", s.reference))
                })
                .collect(),
        }
    }

    /// The tables it reads, each once, in FROM's order.
    pub fn tables(&self) -> Vec<&Arc<TableSchema>> {
        let mut tables: Vec<&Arc<TableSchema>> = Vec::new();
        for side in &self.sides {
            if !tables.iter().any(|t| t.key_prefix == side.table.key_prefix) {
                tables.push(&side.table);
            }
        }
        tables
    }
}

/// The table's columns and the statement's parameters, as binding reads them.
struct Bindings<'a> {
    table: Arc<TableSchema>,
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

    fn row_valued(&self, name: &str) -> bool {
        self.table.column(name).is_none_or(|c| c.row_valued)
    }

    fn param(&self, n: usize) -> Option<String> {
        let param = self.params.get(n.checked_sub(1)?)?;
        Some(base_type(&param.cast, param.kind))
    }

    fn default_collation(&self) -> Collation {
        self.default
    }
}

/// The precision of a statement of shape `shape` (or of none, for a reason), of which the
/// catalog `learned` what it reads and calls. Worker.
pub fn decide(client: &mut Connection, shape: &Shaped, learned: &Learned) -> Result<Precision> {
    if !current::query_row_precision() {
        return Ok(Precision::Table(
            "query_precision is table, or invalidations come from notifications, which carry no \
             new values"
                .into(),
        ));
    }
    let shape = match shape {
        Ok(shape) => shape,
        Err(why) => return Ok(Precision::Table(why.clone())),
    };
    if let Some(function) = learned.own_functions.first() {
        return Ok(Precision::Table(format!(
            "it calls {function}, which is not PostgreSQL's own: an operator or a function of \
             its WHERE may be it, and pgcache evaluates only PostgreSQL's"
        )));
    }
    if !learned.plain {
        return Ok(Precision::Table(
            "it reads a view, a partitioned table, inheritance children or a table under \
             row-level security"
                .into(),
        ));
    }
    let mut tables = Vec::with_capacity(shape.sides.len());
    for side in &shape.sides {
        let Some(table) = table_named(&learned.tables, &side.relation) else {
            return Ok(Precision::Table(format!(
                "pgcache could not tell which table {} is",
                side.relation.1
            )));
        };
        // A subquery's column its table does not have is the outer query's.
        if side.unqualified.iter().any(|c| table.column(c).is_none()) {
            return Ok(Precision::Table(
                "it has a correlated subquery (it names the outer query's columns)".into(),
            ));
        }
        if !keys_exact(table) {
            return Ok(Precision::Table(format!(
                "the table {} has no primary key, or one of a type compared by more than its \
                 text",
                table.display
            )));
        }
        tables.push(table.clone());
    }
    let mut collations: HashMap<String, (HashMap<String, Collation>, Collation)> = HashMap::new();
    for table in &tables {
        if !collations.contains_key(&table.key_prefix) {
            collations.insert(table.key_prefix.clone(), collations_of(client, table)?);
        }
    }
    let bindings = |table: &Arc<TableSchema>| {
        let (columns, default) = &collations[&table.key_prefix];
        Bindings {
            table: table.clone(),
            collations: columns.clone(),
            default: *default,
            params: &learned.params,
        }
    };
    // The side each side's rows enter only with (by its foreign key to them).
    let mut through = Vec::with_capacity(tables.len());
    for (n, table) in tables.iter().enumerate() {
        through.push(match referenced_through(shape, n) {
            Some((other, pairs)) if foreign_key(client, &tables[other], table, &pairs)? => {
                Some(Through { side: other, pairs })
            }
            _ => None,
        });
    }
    let mut sides = Vec::with_capacity(tables.len());
    for (n, (side, table)) in shape.sides.iter().zip(&tables).enumerate() {
        let filter = side.filter.clone().bind(&bindings(table));
        // Two sides that reference each other (foreign keys both ways, checked at the end
        // of a statement or a transaction) may gain two new rows together, neither a
        // member: both enter.
        let enters = match &through[n] {
            Some(t) => through[t.side].as_ref().is_some_and(|back| back.side == n),
            None => true,
        };
        let pinned = filter.pinned();
        sides.push(SideMatch {
            table: table.clone(),
            reference: side.reference.clone(),
            ranged: pinned.is_none().then(|| filter.ranged()).flatten(),
            pinned,
            filter,
            enters,
            through: None,
        });
    }
    for (side, through) in sides.iter_mut().zip(through) {
        if !side.enters {
            side.through = through;
        }
    }
    let page = match (&shape.page, sides.as_slice()) {
        (Some(page), [side]) if !learned.aggregates => page_match(page, &bindings(&side.table)),
        _ => None,
    };
    if page.is_none()
        && let Some(why) = unbound(&sides)
    {
        return Ok(Precision::Table(why));
    }
    for side in &sides {
        let mut columns = side.filter.columns();
        columns.extend(
            page.iter()
                .flat_map(|p| p.keys.iter().map(|k| k.column.clone())),
        );
        // A new row of a side that enters through a foreign key is weighed by its key.
        columns.extend(
            side.through
                .iter()
                .flat_map(|t| t.pairs.iter().map(|(_, mine)| mine.clone())),
        );
        watch(&side.table, &columns);
    }
    Ok(Precision::Row(Box::new(RowMatch { sides, page })))
}

/// Why no side binds which of its rows may enter a result, if none does: every change to
/// any table it reads may then change any result (per table is as exact, and cheaper).
fn unbound(sides: &[SideMatch]) -> Option<String> {
    let binds =
        |s: &SideMatch| !s.enters || (s.filter.undecided().is_none() && !s.filter.is_true());
    if sides.iter().any(binds) {
        return None;
    }
    let undecided = sides.iter().find_map(|s| s.filter.undecided());
    Some(match (undecided, sides.len()) {
        (Some(why), _) => format!("pgcache cannot tell which rows its WHERE admits: {why}"),
        (None, 1) => "it has no WHERE and is not a page of the table's rows (ORDER BY columns \
                      with a LIMIT): any change may change it"
            .into(),
        (None, _) => "no condition binds the rows of one of its tables alone (a column written \
                      without its table is not placed), and no foreign key brings one in"
            .into(),
    })
}

/// The table of `tables` that `(schema, name)` names as FROM wrote it.
fn table_named<'a>(
    tables: &'a [Arc<TableSchema>],
    (schema, name): &(String, String),
) -> Option<&'a Arc<TableSchema>> {
    let mut found = tables
        .iter()
        .filter(|t| t.name.name == *name && (schema.is_empty() || t.name.schema == *schema));
    match (found.next(), found.next()) {
        (Some(table), None) => Some(table),
        _ => None,
    }
}

/// Whether a table's primary key reads exactly as its text (members are kept by it).
fn keys_exact(table: &TableSchema) -> bool {
    !table.primary_key.is_empty()
        && table.primary_key.iter().all(|name| {
            table.column(name).is_some_and(|c| {
                matches!(
                    c.kind,
                    KeyKind::Integer { .. } | KeyKind::Text | KeyKind::Uuid | KeyKind::Bool
                )
            })
        })
}

/// A table's columns' collations, and the database's default.
fn collations_of(
    client: &mut Connection,
    table: &TableSchema,
) -> Result<(HashMap<String, Collation>, Collation)> {
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
    Ok((collations, default))
}

/// The side whose rows side `n`'s rows enter a result with, and the column pairs
/// (theirs, `n`'s) they are joined on, when that is the only way they do: `n` is named by
/// nothing but equalities with that one side's columns, and every result row that holds a
/// row of `n` holds a row of the other that those equalities matched: the later of the two
/// comes in by an inner join, or `n` by a left join whose ON holds them.
fn referenced_through(shape: &Shape, n: usize) -> Option<(usize, Vec<(String, String)>)> {
    let side = &shape.sides[n];
    if shape.unplaced || side.mentioned {
        return None;
    }
    let mut other = None;
    let mut pairs = Vec::new();
    let mut on_all = true;
    for edge in &shape.edges {
        let (theirs, mine) = if edge.left.0 == n {
            (&edge.right, &edge.left)
        } else if edge.right.0 == n {
            (&edge.left, &edge.right)
        } else {
            continue;
        };
        if *other.get_or_insert(theirs.0) != theirs.0 {
            return None;
        }
        // An equality in another left join's ON filters nothing.
        if let Some(step) = edge.on
            && shape.sides[step].join == Join::Left
            && step != side.step
        {
            return None;
        }
        on_all &= edge.on == Some(side.step);
        pairs.push((theirs.1.clone(), mine.1.clone()));
    }
    let other = other?;
    let later = &shape.sides[side.step.max(shape.sides[other].step)];
    let through = match later.join {
        Join::Inner => true,
        Join::Left => later.step == side.step && on_all,
        Join::Base | Join::Semi => false,
    };
    through.then_some((other, pairs))
}

/// Whether a validated foreign key of `referencing` to `referenced` is exactly `pairs`
/// (referencing column, referenced column): every row of the one then has its row in the
/// other, and a row of the other that no member referenced is referenced by no row that
/// could be one.
fn foreign_key(
    client: &mut Connection,
    referencing: &TableSchema,
    referenced: &TableSchema,
    pairs: &[(String, String)],
) -> Result<bool> {
    let rows = client
        .query(
            FOREIGN_KEYS_SQL,
            &[&referencing.sql_name, &referenced.sql_name],
        )
        .map_err(|e| statement_error(&e))?;
    Ok(rows.iter().any(|row| {
        let from: Vec<String> = row.get(0);
        let to: Vec<String> = row.get(1);
        let key: Vec<(String, String)> = from.into_iter().zip(to).collect();
        key.len() == pairs.len()
            && key.iter().all(|p| pairs.contains(p))
            && pairs.iter().all(|p| key.contains(p))
    }))
}

/// A table's validated foreign keys to another, their columns paired in order; none whose
/// triggers (which enforce it) are disabled, and none in a database that subscribes to a
/// publication (its apply workers write as `session_replication_role = replica`, which
/// fires no such trigger).
const FOREIGN_KEYS_SQL: &str = "SELECT \
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY AS k(n, i) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n \
             ORDER BY k.i), \
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(c.confkey) WITH ORDINALITY AS k(n, i) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n \
             ORDER BY k.i) \
     FROM pg_catalog.pg_constraint c \
     WHERE c.contype = 'f' AND c.convalidated \
       AND c.conrelid = $1::text::pg_catalog.regclass \
       AND c.confrelid = $2::text::pg_catalog.regclass \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t \
                       WHERE t.tgconstraint = c.oid AND t.tgenabled = 'D') \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s \
                       JOIN pg_catalog.pg_database d ON d.oid = s.subdbid \
                       WHERE d.datname = pg_catalog.current_database())";

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

    fn shaped(sql: &str) -> Shape {
        crate::query::shape::of(&pg_query::parse(sql).unwrap().protobuf)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_side_enters_only_through_the_side_whose_key_references_it() {
        let s = shaped(
            "SELECT o.id FROM orders o JOIN users u ON o.user_id = u.id \
             LEFT JOIN products p ON p.id = o.product_id WHERE o.status = $1",
        );
        assert_eq!(
            referenced_through(&s, 1),
            Some((0, vec![("user_id".into(), "id".into())]))
        );
        assert_eq!(
            referenced_through(&s, 2),
            Some((0, vec![("product_id".into(), "id".into())]))
        );
        assert_eq!(referenced_through(&s, 0), None, "named by the WHERE");
        // The preserved side of a left join gains rows whatever the other side holds.
        let s = shaped("SELECT u.id FROM users u LEFT JOIN orders o ON o.user_id = u.id");
        assert_eq!(referenced_through(&s, 0), None);
        // An equality in a third table's LEFT JOIN ON filters nothing.
        let s = shaped(
            "SELECT count(*) FROM users u CROSS JOIN orders o \
             LEFT JOIN extras x ON x.id = o.extra_id AND o.user_id = u.id WHERE o.status = $1",
        );
        assert_eq!(referenced_through(&s, 0), None);
    }
}
