//! How precisely a statement's results are dropped. `Table`: any change to a table it reads
//! drops every result (joins, subqueries, notify mode). `Row`: the statement
//! has a row shape (`shape`) over plain tables, and a change drops only the results it can
//! affect: those its new values may enter (the WHERE, bound to the result's parameters, may
//! be TRUE on them: `predicate`) and those built from the changed row (a member: leaving,
//! or changing inside). A value the change did not carry (an unchanged TOASTed value, a
//! column nobody watched when it was read) and a piece of the WHERE not decided here may
//! match: never fewer drops.
//!
//! A table without a primary key (`keyless`) has no members: nothing names the rows a
//! result was built from. A new row is weighed as any (an insert's row was in no result),
//! so its results stay through the inserts their WHERE cannot admit; a change to a row it
//! had (an UPDATE, a DELETE) changes the table as a whole, and every result that read it
//! goes. Nor are its pages bounded by their last row: ties in its ORDER BY cannot be broken
//! by a key, so every row the WHERE admits may enter.
//!
//! Decided in two pure steps around the catalog: `needs` says what the catalog must be
//! asked of a statement's tables (their collations, the foreign keys between them), and
//! `decide` weighs the statement's shape, what the catalog learned of it and those `Facts`.

use crate::kind::KeyKind;
use crate::predicate::order::{self, SortKey};
use crate::predicate::{Collation, Lookup, OrdKey, Pinned, Pred, Ranged, Scope, SqlType};
use crate::shape::{Count, Join, Page, Shape, Shaped};
use std::collections::HashMap;
use std::sync::Arc;

pub use crate::predicate::{EnteringRow, NewValue};

/// A table as the rules read it.
pub trait Table {
    /// What tells it from every other table (pgcache: its key prefix).
    fn key(&self) -> &str;
    /// Its schema and name, as the catalog spells them.
    fn schema(&self) -> &str;
    fn name(&self) -> &str;
    /// Its name as messages show it.
    fn display(&self) -> &str;
    fn column(&self, name: &str) -> Option<&Column>;
    /// Its primary key's columns (none: it has no primary key).
    fn primary_key(&self) -> &[String];
}

impl<T: Table + ?Sized> Table for Arc<T> {
    fn key(&self) -> &str {
        (**self).key()
    }
    fn schema(&self) -> &str {
        (**self).schema()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn display(&self) -> &str {
        (**self).display()
    }
    fn column(&self, name: &str) -> Option<&Column> {
        (**self).column(name)
    }
    fn primary_key(&self) -> &[String] {
        (**self).primary_key()
    }
}

/// A table's column, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The type a text parameter is cast to when comparing with this column.
    pub cast_type: String,
    pub kind: KeyKind,
    /// Its values are rows (a composite type, or a domain that may be over one): `IS NULL`
    /// is TRUE of one whose every field is NULL too.
    pub row_valued: bool,
}

/// What the catalog learned of a statement, as the decision reads it.
pub struct Learned<'a, T> {
    /// The tables whose changes can change its result.
    pub tables: &'a [T],
    /// Its parameters' types: as SQL spells them, and how their values are read.
    pub params: Vec<(&'a str, KeyKind)>,
    /// It reads plain tables only, as written (no view, partition or inheritance child, no
    /// row-level security).
    pub plain: bool,
    /// It calls aggregate or window functions.
    pub aggregates: bool,
    /// The functions it calls that are not PostgreSQL's own, shown.
    pub own_functions: &'a [String],
}

/// What the catalog must be asked before a statement's precision is decided (`needs`).
pub struct Needs<'a, T> {
    /// The tables it reads, each once: their columns' collations (`COLLATIONS_SQL`).
    pub tables: Vec<&'a T>,
    /// `(referencing, referenced)`: the validated foreign keys of the one to the other.
    pub foreign_keys: Vec<(&'a T, &'a T)>,
}

/// What the catalog answered to `Needs`.
#[derive(Debug, Default)]
pub struct Facts {
    /// By table key.
    pub collations: HashMap<String, Collations>,
    /// The validated foreign keys found.
    pub foreign_keys: Vec<ForeignKey>,
}

/// A table's columns' collations, and the database's default.
#[derive(Debug, Clone)]
pub struct Collations {
    pub columns: HashMap<String, Collation>,
    pub default: Collation,
}

impl Default for Collations {
    fn default() -> Collations {
        Collations {
            columns: HashMap::new(),
            default: Collation::UNKNOWN,
        }
    }
}

impl Collations {
    /// A row of `COLLATIONS_SQL`: a column's collation (`column` None: the default's), its
    /// provider, LC_COLLATE and LC_CTYPE (None: not said).
    pub fn add(
        &mut self,
        column: Option<String>,
        deterministic: bool,
        provider: Option<String>,
        collate: Option<String>,
        ctype: Option<String>,
    ) {
        let said = |s: &Option<String>| s.as_deref().unwrap_or("").to_string();
        let found = collation(
            deterministic,
            &said(&provider),
            &said(&collate),
            &said(&ctype),
        );
        match column {
            Some(column) => {
                self.columns.insert(column, found);
            }
            None => self.default = found,
        }
    }
}

/// A validated foreign key: its tables' keys, and its column pairs `(referencing column,
/// referenced column)` in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    pub referencing: String,
    pub referenced: String,
    pub pairs: Vec<(String, String)>,
}

impl Facts {
    /// Whether a validated foreign key of `referencing` to `referenced` is exactly `pairs`
    /// (referencing column, referenced column): every row of the one then has its row in
    /// the other, and a row of the other that no member referenced is referenced by no row
    /// that could be one.
    fn foreign_key(
        &self,
        referencing: &impl Table,
        referenced: &impl Table,
        pairs: &[(String, String)],
    ) -> bool {
        self.foreign_keys.iter().any(|fk| {
            fk.referencing == referencing.key()
                && fk.referenced == referenced.key()
                && fk.pairs.len() == pairs.len()
                && fk.pairs.iter().all(|p| pairs.contains(p))
                && pairs.iter().all(|p| fk.pairs.contains(p))
        })
    }
}

/// A row a change wrote (inserted, or updated to), by the columns row-precise results match
/// on, and whether its key is new to its table (an insert, or an update that changed the
/// key): only such a row can complete a join row whose foreign key named no row before (a
/// reference written without the key's check, under `session_replication_role = replica`).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub values: EnteringRow,
    pub new_key: bool,
}

pub enum Precision<T> {
    /// Why not row by row.
    Table(String),
    Row(Box<RowMatch<T>>),
}

impl<T> Precision<T> {
    pub fn name(&self) -> &'static str {
        match self {
            Precision::Table(_) => "table",
            Precision::Row(_) => "row",
        }
    }

    pub fn row(&self) -> Option<&RowMatch<T>> {
        match self {
            Precision::Row(m) => Some(m),
            Precision::Table(_) => None,
        }
    }
}

/// What a row-precise statement's results are matched on.
pub struct RowMatch<T> {
    /// The tables it reads, one side each, in FROM's order (a table joined to itself is
    /// two sides).
    pub sides: Vec<SideMatch<T>>,
    /// Its ORDER BY ... LIMIT, when its results are pages of its one table's rows.
    pub page: Option<PageMatch>,
}

/// One table a row-precise statement reads, and what its rows are matched on.
pub struct SideMatch<T> {
    pub table: T,
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

impl<T> SideMatch<T> {
    /// The keys of the values a result of `params` pins the side's column to (None: filed
    /// under no key).
    pub fn keys(&self, params: &[String]) -> Option<Vec<String>> {
        self.pinned.as_ref().and_then(|p| p.keys(params))
    }

    /// The bound a result of `params` puts on the side's ranged column (None: filed under
    /// no bound).
    pub fn bound(&self, params: &[String]) -> Option<OrdKey> {
        self.ranged.as_ref().and_then(|r| r.key(params))
    }

    /// Where the results that `row` may enter are filed: by its value of the pinned
    /// column, else of the bounded one; else every result of the side.
    pub fn lookup(&self, row: &EnteringRow) -> Lookup {
        if let Some(p) = &self.pinned {
            p.row_key(row)
        } else if let Some(r) = &self.ranged {
            r.range(row)
        } else {
            Lookup::Everywhere
        }
    }
}

impl<T> RowMatch<T> {
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

    /// Each side's table and the columns whose new values a change of it must carry for
    /// the side to be weighed: its conditions', the page's sort keys, and, for a side that
    /// enters through a foreign key, the key's columns.
    pub fn watched(&self) -> impl Iterator<Item = (&T, Vec<String>)> {
        self.sides.iter().map(|side| {
            let mut columns = side.filter.columns();
            columns.extend(
                self.page
                    .iter()
                    .flat_map(|p| p.keys.iter().map(|k| k.column.clone())),
            );
            // A new row of a side that enters through a foreign key is weighed by its key.
            columns.extend(
                side.through
                    .iter()
                    .flat_map(|t| t.pairs.iter().map(|(_, mine)| mine.clone())),
            );
            (&side.table, columns)
        })
    }
}

impl<T: Table> RowMatch<T> {
    /// The tables it reads, each once, in FROM's order.
    pub fn tables(&self) -> Vec<&T> {
        let mut tables: Vec<&T> = Vec::new();
        for side in &self.sides {
            if !tables.iter().any(|t| t.key() == side.table.key()) {
                tables.push(&side.table);
            }
        }
        tables
    }
}

/// The collation of each text column, and the database's default: the catalog's question
/// whose rows `Collations::add` reads. The default collation is the database's, whose
/// provider is ICU on PostgreSQL 15+ when `datlocprovider` says so (read through to_jsonb:
/// older servers have no such column).
pub const COLLATIONS_SQL: &str = "WITH db AS (SELECT d.datcollate::text AS collate, \
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
fn collation(deterministic: bool, provider: &str, collate: &str, ctype: &str) -> Collation {
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
/// a signed integer or a uuid (compared by its base type's operators), that base type. An
/// oid is unsigned and reads a negative number as one above 2^31 (`o < -1` is
/// `o < 4294967295`): not compared here.
pub fn base_type(name: &str, kind: KeyKind) -> String {
    let base = match kind {
        KeyKind::Bool => "boolean",
        KeyKind::Integer { min, .. } if min < 0 => "bigint",
        KeyKind::Uuid => "uuid",
        _ => return name.to_string(),
    };
    match SqlType::named(name, Collation::UNKNOWN) {
        SqlType::Unresolved => base.to_string(),
        _ => name.to_string(),
    }
}

/// A table's columns and the statement's parameters, as binding reads them.
struct Bindings<'a, T> {
    table: &'a T,
    /// None: not known (the catalog was not asked).
    collations: Option<&'a Collations>,
    params: &'a [(&'a str, KeyKind)],
}

impl<'a, T: Table> Bindings<'a, T> {
    fn of(table: &'a T, learned: &'a Learned<'_, T>, facts: &'a Facts) -> Bindings<'a, T> {
        Bindings {
            table,
            collations: facts.collations.get(table.key()),
            params: &learned.params,
        }
    }
}

impl<T: Table> Scope for Bindings<'_, T> {
    fn column(&self, name: &str) -> Option<(String, Collation)> {
        // A `name` column is not one of the types read (`value`): its input is cut at 63
        // bytes, so a longer parameter equals a shorter value.
        let column = self.table.column(name)?;
        let collation = self
            .collations
            .and_then(|c| c.columns.get(&column.name))
            .copied()
            .unwrap_or(Collation::UNKNOWN);
        Some((base_type(&column.cast_type, column.kind), collation))
    }

    fn row_valued(&self, name: &str) -> bool {
        self.table.column(name).is_none_or(|c| c.row_valued)
    }

    fn param(&self, n: usize) -> Option<String> {
        let (cast, kind) = self.params.get(n.checked_sub(1)?)?;
        Some(base_type(cast, *kind))
    }

    fn default_collation(&self) -> Collation {
        self.collations.map_or(Collation::UNKNOWN, |c| c.default)
    }
}

/// The shape, and the table of each of its sides, of a statement whose results may be
/// dropped row by row as far as its shape and tables tell; else why not.
fn sides<'a, T: Table>(
    shape: &'a Shaped,
    learned: &Learned<'a, T>,
) -> Result<(&'a Shape, Vec<&'a T>), String> {
    let shape = shape.as_ref().map_err(Clone::clone)?;
    if let Some(function) = learned.own_functions.first() {
        return Err(format!(
            "it calls {function}, which is not PostgreSQL's own: an operator or a function of \
             its WHERE may be it, and pgcache evaluates only PostgreSQL's"
        ));
    }
    if !learned.plain {
        return Err(
            "it reads a view, a partitioned table, inheritance children or a table under \
             row-level security"
                .into(),
        );
    }
    let mut tables = Vec::with_capacity(shape.sides.len());
    for side in &shape.sides {
        let Some(table) = table_named(learned.tables, &side.relation) else {
            return Err(format!(
                "pgcache could not tell which table {} is",
                side.relation.1
            ));
        };
        // A subquery's column its table does not have is the outer query's.
        if side.unqualified.iter().any(|c| table.column(c).is_none()) {
            return Err("it has a correlated subquery (it names the outer query's columns)".into());
        }
        if !keyless(table) && !keys_exact(table) {
            return Err(format!(
                "the table {} has a primary key of a type compared by more than its text",
                table.display()
            ));
        }
        tables.push(table);
    }
    Ok((shape, tables))
}

/// What the catalog must be asked to decide the precision of a statement of shape `shape`
/// (or of none, for a reason), of which it `learned` what it reads and calls; or, when
/// nothing it could answer would make it row-precise, why not.
pub fn needs<'a, T: Table>(
    shape: &'a Shaped,
    learned: &Learned<'a, T>,
) -> Result<Needs<'a, T>, String> {
    let (shape, sides) = sides(shape, learned)?;
    let mut tables: Vec<&T> = Vec::new();
    for table in &sides {
        if !tables.iter().any(|t| t.key() == table.key()) {
            tables.push(table);
        }
    }
    let foreign_keys = (0..sides.len())
        .filter_map(|n| referenced_through(shape, n).map(|(other, _)| (sides[other], sides[n])))
        .collect();
    Ok(Needs {
        tables,
        foreign_keys,
    })
}

/// The precision of a statement of shape `shape` (or of none, for a reason), of which the
/// catalog `learned` what it reads and calls, and answered `facts` (`needs`).
pub fn decide<T: Table + Clone>(
    shape: &Shaped,
    learned: &Learned<'_, T>,
    facts: &Facts,
) -> Precision<T> {
    let (shape, tables) = match sides(shape, learned) {
        Ok(sides) => sides,
        Err(why) => return Precision::Table(why),
    };
    // The side each side's rows enter only with (by its foreign key to them).
    let through: Vec<Option<Through>> = tables
        .iter()
        .enumerate()
        .map(|(n, table)| match referenced_through(shape, n) {
            Some((other, pairs)) if facts.foreign_key(tables[other], *table, &pairs) => {
                Some(Through { side: other, pairs })
            }
            _ => None,
        })
        .collect();
    let mut sides = Vec::with_capacity(tables.len());
    for (n, (side, table)) in shape.sides.iter().zip(&tables).enumerate() {
        let filter = side
            .filter
            .clone()
            .bind(&Bindings::of(*table, learned, facts));
        // Two sides that reference each other (foreign keys both ways, checked at the end
        // of a statement or a transaction) may gain two new rows together, neither a
        // member: both enter.
        let enters = match &through[n] {
            Some(t) => through[t.side].as_ref().is_some_and(|back| back.side == n),
            None => true,
        };
        let pinned = filter.pinned();
        sides.push(SideMatch {
            table: (*table).clone(),
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
    // A keyless table's page has no key to break its ties: a row sorting after its last one
    // may still be one PostgreSQL would have picked among them.
    let page = match (&shape.page, sides.as_slice()) {
        (Some(page), [side]) if !learned.aggregates && !keyless(&side.table) => {
            page_match(page, &Bindings::of(&side.table, learned, facts))
        }
        _ => None,
    };
    if page.is_none()
        && let Some(why) = unbound(&sides)
    {
        return Precision::Table(why);
    }
    Precision::Row(Box::new(RowMatch { sides, page }))
}

/// Why no side binds which of its rows may enter a result, if none does: every change to
/// any table it reads may then change any result (per table is as exact, and cheaper).
fn unbound<T>(sides: &[SideMatch<T>]) -> Option<String> {
    let binds =
        |s: &SideMatch<T>| !s.enters || (s.filter.undecided().is_none() && !s.filter.is_true());
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
fn table_named<'a, T: Table>(tables: &'a [T], (schema, name): &(String, String)) -> Option<&'a T> {
    let mut found = tables
        .iter()
        .filter(|t| t.name() == name && (schema.is_empty() || t.schema() == schema));
    match (found.next(), found.next()) {
        (Some(table), None) => Some(table),
        _ => None,
    }
}

/// Whether a table has no primary key: its results keep no members, and a change to one of
/// its rows that was there before changes it as a whole.
pub fn keyless(table: &impl Table) -> bool {
    table.primary_key().is_empty()
}

/// Whether a table's primary key reads exactly as its text (members are kept by it).
fn keys_exact(table: &impl Table) -> bool {
    !table.primary_key().is_empty()
        && table.primary_key().iter().all(|name| {
            table.column(name).is_some_and(|c| {
                matches!(
                    c.kind,
                    KeyKind::Integer { .. } | KeyKind::Text | KeyKind::Uuid | KeyKind::Bool
                )
            })
        })
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

/// A page whose every sort key compares exactly, typed; None otherwise (its results are
/// then dropped by every row their WHERE may admit).
fn page_match(page: &Page, scope: &dyn Scope) -> Option<PageMatch> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shaped(sql: &str) -> Shaped {
        crate::shape::of(&pg_query::parse(sql).unwrap().protobuf).unwrap()
    }

    fn shape(sql: &str) -> Shape {
        shaped(sql).unwrap()
    }

    /// A table of integer columns, keyed by `id` (none: no primary key).
    struct Tab {
        name: &'static str,
        columns: Vec<Column>,
        primary_key: Vec<String>,
    }

    fn table(name: &'static str, columns: &[&str], keyed: bool) -> Arc<Tab> {
        let int4 = crate::kind::column_kind("int4", false);
        Arc::new(Tab {
            name,
            columns: columns
                .iter()
                .map(|c| Column {
                    name: c.to_string(),
                    cast_type: "integer".into(),
                    kind: int4,
                    row_valued: false,
                })
                .collect(),
            primary_key: if keyed { vec!["id".into()] } else { Vec::new() },
        })
    }

    impl Table for Tab {
        fn key(&self) -> &str {
            self.name
        }
        fn schema(&self) -> &str {
            "public"
        }
        fn name(&self) -> &str {
            self.name
        }
        fn display(&self) -> &str {
            self.name
        }
        fn column(&self, name: &str) -> Option<&Column> {
            self.columns.iter().find(|c| c.name == name)
        }
        fn primary_key(&self) -> &[String] {
            &self.primary_key
        }
    }

    fn learned(tables: &[Arc<Tab>]) -> Learned<'_, Arc<Tab>> {
        Learned {
            tables,
            params: vec![("integer", crate::kind::column_kind("int4", false))],
            plain: true,
            aggregates: false,
            own_functions: &[],
        }
    }

    #[test]
    fn domains_compare_as_their_signed_base_and_oids_not_at_all() {
        let int4 = KeyKind::Integer {
            min: i32::MIN.into(),
            max: i32::MAX.into(),
        };
        assert_eq!(base_type("positive", int4), "bigint");
        assert_eq!(base_type("integer", int4), "integer");
        let oid = crate::kind::column_kind("oid", false);
        assert_eq!(base_type("oid", oid), "oid");
        assert_eq!(
            SqlType::named(&base_type("oid", oid), Collation::UNKNOWN),
            SqlType::Unresolved
        );
    }

    #[test]
    fn a_side_enters_only_through_the_side_whose_key_references_it() {
        let s = shape(
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
        let s = shape("SELECT u.id FROM users u LEFT JOIN orders o ON o.user_id = u.id");
        assert_eq!(referenced_through(&s, 0), None);
        // An equality in a third table's LEFT JOIN ON filters nothing.
        let s = shape(
            "SELECT count(*) FROM users u CROSS JOIN orders o \
             LEFT JOIN extras x ON x.id = o.extra_id AND o.user_id = u.id WHERE o.status = $1",
        );
        assert_eq!(referenced_through(&s, 0), None);
    }

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

    #[test]
    fn a_join_enters_through_a_foreign_key_only_where_the_catalog_found_it() {
        let tables = [
            table("orders", &["id", "user_id", "status"], true),
            table("users", &["id"], true),
        ];
        let learned = learned(&tables);
        let s = shaped(
            "SELECT o.id FROM orders o JOIN users u ON o.user_id = u.id WHERE o.status = $1",
        );
        let needs = needs(&s, &learned).unwrap();
        let named = |t: &[&Arc<Tab>]| t.iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(named(&needs.tables), ["orders", "users"]);
        let asked: Vec<(&str, &str)> = needs
            .foreign_keys
            .iter()
            .map(|(from, to)| (from.name, to.name))
            .collect();
        assert_eq!(asked, [("orders", "users")]);
        // Without the key, users' rows enter on their own: no condition binds them, but
        // orders' does.
        let Precision::Row(m) = decide(&s, &learned, &Facts::default()) else {
            panic!("row-precise");
        };
        assert!(m.sides[1].enters && m.sides[1].through.is_none());
        let facts = Facts {
            foreign_keys: vec![ForeignKey {
                referencing: "orders".into(),
                referenced: "users".into(),
                pairs: vec![("user_id".into(), "id".into())],
            }],
            ..Facts::default()
        };
        let Precision::Row(m) = decide(&s, &learned, &facts) else {
            panic!("row-precise");
        };
        assert!(!m.sides[1].enters);
        let through = m.sides[1].through.as_ref().unwrap();
        assert_eq!(
            (through.side, &through.pairs[..]),
            (0, &facts.foreign_keys[0].pairs[..])
        );
        let watched: Vec<Vec<String>> = m.watched().map(|(_, columns)| columns).collect();
        assert_eq!(
            watched,
            [vec!["status".to_string()], vec!["id".to_string()]]
        );
        // A user whose key is new enters only the results whose orders' condition its key
        // may pass; o.user_id = $1 would bind it, o.status = $1 does not.
        let row = vec![("id".to_string(), NewValue::Text("7".into()))];
        assert!(m.may_be_referenced(1, &["1".into()], &row));
    }

    #[test]
    fn a_statement_is_row_precise_only_over_plain_tables_it_binds() {
        let keyed = [table("orders", &["id", "customer_id"], true)];
        let sql = "SELECT id FROM orders WHERE customer_id = $1";
        let Precision::Row(m) = decide(&shaped(sql), &learned(&keyed), &Facts::default()) else {
            panic!("row-precise");
        };
        assert_eq!(m.sides[0].pinned.as_ref().unwrap().column, "customer_id");
        let params = ["7".to_string()];
        let row = |v: &str| vec![("customer_id".to_string(), NewValue::Text(v.into()))];
        assert_eq!(
            m.sides[0].lookup(&row("7")),
            Lookup::Key(m.sides[0].keys(&params).unwrap()[0].clone())
        );
        assert!(m.admits(0, &params, None, &row("7")) && !m.admits(0, &params, None, &row("8")));
        let why = |sql: &str, tables: &[Arc<Tab>]| match decide(
            &shaped(sql),
            &learned(tables),
            &Facts::default(),
        ) {
            Precision::Table(why) => why,
            Precision::Row(_) => panic!("{sql} is row-precise"),
        };
        // A primary key compared by more than its text keeps no members; no key at all keeps
        // none either, and needs none for the rows its WHERE admits (`keyless`).
        let mut decimal = table("orders", &["id", "customer_id"], true);
        Arc::get_mut(&mut decimal).unwrap().columns[0].kind =
            crate::kind::column_kind("numeric", false);
        assert!(why(sql, &[decimal]).contains("compared by more than its text"));
        let unkeyed = [table("orders", &["id", "customer_id"], false)];
        assert!(
            decide(&shaped(sql), &learned(&unkeyed), &Facts::default())
                .row()
                .is_some()
        );
        assert!(why("SELECT id FROM orders", &keyed).contains("no WHERE"));
        assert!(why("SELECT id FROM others WHERE id = $1", &keyed).contains("which table others"));
        let mut views = learned(&keyed);
        views.plain = false;
        assert!(
            matches!(decide(&shaped(sql), &views, &Facts::default()), Precision::Table(w) if w.contains("view"))
        );
        assert!(matches!(needs(&shaped(sql), &views), Err(w) if w.contains("view")));
    }

    #[test]
    fn a_keyless_table_s_results_are_weighed_on_the_rows_an_insert_brings() {
        // pgbench_history: no primary key, every transaction inserts.
        let history = [table("history", &["aid", "delta", "mtime"], false)];
        let mut sums = learned(&history);
        sums.aggregates = true;
        let sql = "SELECT sum(delta) FROM history WHERE aid = $1";
        let Precision::Row(m) = decide(&shaped(sql), &sums, &Facts::default()) else {
            panic!("row-precise");
        };
        assert!(keyless(&m.sides[0].table));
        let row = |aid: Option<&str>| -> EnteringRow {
            let mut row = vec![("delta".to_string(), NewValue::Text("5".into()))];
            if let Some(aid) = aid {
                row.push(("aid".into(), NewValue::Text(aid.into())));
            }
            row
        };
        let (one, two) = (["1".to_string()], ["2".to_string()]);
        // aid 2's row changes aid 2's sum, not aid 1's; a NULL aid changes neither.
        assert!(m.admits(0, &two, None, &row(Some("2"))));
        assert!(!m.admits(0, &one, None, &row(Some("2"))));
        let null = vec![("aid".to_string(), NewValue::Null)];
        assert!(!m.admits(0, &one, None, &null));
        // A value the change did not carry may be anything.
        assert!(m.admits(0, &one, None, &row(None)));
        // Filed by the value it pins, as a keyed table's results are.
        assert_eq!(
            m.sides[0].lookup(&row(Some("2"))),
            Lookup::Key(m.sides[0].keys(&two).unwrap()[0].clone())
        );
        // Without a WHERE every insert changes it: per table.
        let count = decide(
            &shaped("SELECT count(*) FROM history"),
            &sums,
            &Facts::default(),
        );
        assert!(matches!(count, Precision::Table(why) if why.contains("no WHERE")));
        // A page: no key breaks its ties, so it has no boundary, and every row its WHERE
        // admits may enter it, however it sorts.
        let page = "SELECT * FROM history WHERE aid = $1 ORDER BY mtime DESC LIMIT 10";
        let Precision::Row(m) = decide(&shaped(page), &learned(&history), &Facts::default()) else {
            panic!("row-precise");
        };
        assert!(m.page.is_none());
        assert!(m.admits(0, &one, None, &row(Some("1"))));
        assert!(!m.admits(0, &one, None, &row(Some("2"))));
        let whole = "SELECT * FROM history ORDER BY mtime DESC LIMIT 10";
        assert!(
            decide(&shaped(whole), &learned(&history), &Facts::default())
                .row()
                .is_none()
        );
        // Joined to a keyed table: each side's rows weighed by its own conditions.
        let tables = [
            table("accounts", &["id", "bid"], true),
            table("history", &["aid", "delta", "mtime"], false),
        ];
        let join = "SELECT a.id, h.delta FROM accounts a JOIN history h ON h.aid = a.id \
                    WHERE h.aid = $1";
        let Precision::Row(m) = decide(&shaped(join), &learned(&tables), &Facts::default()) else {
            panic!("row-precise");
        };
        assert!(!keyless(&m.sides[0].table) && keyless(&m.sides[1].table));
        assert!(m.sides[1].enters);
        assert!(m.admits(1, &two, None, &row(Some("2"))));
        assert!(!m.admits(1, &one, None, &row(Some("2"))));
    }
}
