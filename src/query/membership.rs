//! The index of row-precise results (`precision`): for each cached result, its parameters
//! and the primary keys of the rows it was built from (its members), so that a change
//! finds the results it can affect: those built from the changed row, and those its new
//! values may enter. Per table: results by member, and per statement and side (a join
//! reads several tables, a self-join one table twice) by the values its conditions pin a
//! column to (`Pred::pinned`) or the bound they put on one (`Pred::ranged`), so a row is
//! weighed only against the results of its own value; a side with neither weighs it
//! against each result, and a side whose rows enter only with a member's foreign key
//! (`SideMatch::enters`) against none. A join's result is indexed under each table it
//! reads, and leaves every one of them when a change to any drops it. Main thread only
//! (fills land and changes are applied there). Its memory is counted and bounded
//! (`query_index_max_bytes`); a result leaves it when it is dropped, expires or is evicted.
//! Which results a row may enter, and where they are filed, is the rules' (`pgcache_rules::
//! precision`: `SideMatch::keys`, `bound` and `lookup`, `RowMatch::admits`); the index holds
//! them, on the main thread.

use crate::config::current;
use crate::model::source::{PartRef, Parts, SourceId};
use crate::query::Statement;
use crate::query::precision::Written;
use crate::query::predicate::{Lookup, OrdKey};
use crate::redis::main_thread::Task;
use compact_str::CompactString;
use redis_module::Context;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A result: the DB it lives in and its key.
pub type ResultId = (i32, Arc<str>);

/// Bytes an entry costs beside its strings (maps, vectors, the statement's handle): an
/// estimate, so the bound holds within a small factor.
const ENTRY_OVERHEAD: usize = 160;
const MEMBER_OVERHEAD: usize = 48;

/// A result's part under one table.
struct Entry {
    statement: Arc<Statement>,
    /// Its parameters, canonical.
    params: Vec<String>,
    /// The statement's sides on this table, and where each files the result.
    sides: Vec<Filed>,
    /// The table's rows it was built from.
    members: Vec<CompactString>,
    /// A full page's last row's sort key (values as text, None for NULL).
    boundary: Option<Vec<Option<String>>>,
    bytes: usize,
    /// This is the first table the statement reads (where the result is counted).
    first: bool,
    /// Which indexing of the result this is (every table's part of one bears the same).
    serial: u64,
}

/// Where a side files a result: by the keys of the values its conditions pin a column to
/// (None: not pinned, or a value not read), else by the bound they put on a column.
struct Filed {
    side: usize,
    keys: Option<Vec<String>>,
    bound: Option<OrdKey>,
}

#[derive(Default)]
struct SideResults {
    /// By the key of a value the side's pinned column holds in them.
    by_key: HashMap<String, Vec<ResultId>>,
    /// By the bound of the side's ranged column in them.
    by_bound: BTreeMap<OrdKey, Vec<ResultId>>,
    /// Those with neither: weighed against every row.
    unkeyed: HashSet<ResultId>,
    /// Every result of the statement.
    all: HashSet<ResultId>,
}

/// A statement's side: the statement's address (its results hold it, so it is not reused
/// meanwhile: a statement learned again, its table altered, may match on other columns,
/// and its results are kept apart from the former's) and the side's position.
type SideId = (usize, usize);

/// One table's part: dropped whole when the table changes as a whole.
#[derive(Default)]
struct TableIndex {
    entries: HashMap<ResultId, Entry>,
    by_member: HashMap<CompactString, Vec<ResultId>>,
    by_side: HashMap<SideId, SideResults>,
    bytes: usize,
    /// Results whose first table this is (each result is counted once).
    results: usize,
}

/// By table key prefix.
type Index = HashMap<String, TableIndex>;

/// Every source's index; the default source's inline.
static MEMBERSHIPS: Parts<Membership> = Parts::new(Membership::new(SourceId::DEFAULT));

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    MEMBERSHIPS.install(id, Membership::new(id));
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    MEMBERSHIPS.forget_named(id);
}

/// The index of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Membership> {
    MEMBERSHIPS.of(id)
}

/// One source's index, and its memory, bounded by its own `query_index_max_bytes`: one
/// source's results never take another's room.
pub struct Membership {
    /// Whose: its settings bound the index.
    source: SourceId,
    index: Mutex<Option<Index>>,
    bytes: AtomicU64,
    results: AtomicU64,
    serial: AtomicU64,
    /// Orphans wait here to leave the other tables a slice at a time (`SWEEP`), so a TRUNCATE
    /// under many joins' results does not hold the event loop for the lot. Meanwhile they are
    /// unreachable (the table's row generation ended with the change), and a change that meets
    /// one drops a key that is gone already.
    orphans: Mutex<VecDeque<Orphan>>,
}

/// A join's result dropped with a table that changed as a whole, still filed under the
/// other tables it read.
struct Orphan {
    others: Arc<[String]>,
    id: ResultId,
    serial: u64,
}

static SWEEP: Task = Task::new("taking dropped join results out of the index", sweep);
/// How long one turn of the event loop sweeps orphans for.
const SWEEP_SLICE: Duration = Duration::from_millis(2);

/// The cost of one table's part of a result of `params` built from `members` (that
/// table's): its parameters once, and the keys they pin twice (in the entry and the
/// lookup).
fn part_cost(key: &str, params: &[String], members: &[CompactString]) -> usize {
    ENTRY_OVERHEAD
        + 3 * key.len()
        + params.iter().map(|v| 3 * v.len() + 32).sum::<usize>()
        + members
            .iter()
            .map(|m| 2 * m.len() + MEMBER_OVERHEAD)
            .sum::<usize>()
}

/// A result of `params` built from `members` (each side's), the cost it would add to the
/// index.
pub fn cost(key: &str, params: &[String], members: &[Vec<CompactString>]) -> usize {
    members.iter().map(|m| part_cost(key, params, m)).sum()
}

impl Membership {
    /// Empty (const, so a `static` holds the default source's).
    pub const fn new(source: SourceId) -> Membership {
        Membership {
            source,
            index: Mutex::new(None),
            bytes: AtomicU64::new(0),
            results: AtomicU64::new(0),
            serial: AtomicU64::new(0),
            orphans: Mutex::new(VecDeque::new()),
        }
    }

    fn with_index<R>(&self, f: impl FnOnce(&mut Index) -> R) -> R {
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let index = guard.get_or_insert_with(Index::default);
        let r = f(index);
        self.results.store(
            index.values().map(|t| t.results as u64).sum(),
            Ordering::Relaxed,
        );
        self.bytes.store(
            index.values().map(|t| t.bytes as u64).sum(),
            Ordering::Relaxed,
        );
        r
    }

    /// Results indexed now.
    pub fn results(&self) -> u64 {
        self.results.load(Ordering::Relaxed)
    }

    /// Bytes the index takes now (an estimate).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether a result costing `cost` fits under `query_index_max_bytes`.
    pub fn has_room(&self, cost: usize) -> bool {
        self.bytes() + cost as u64 <= current::of(self.source).query_index_max_bytes()
    }

    /// Indexes the result `id` of `statement` (row-precise), cached just now, built from
    /// `members` (each side's rows).
    pub fn add(
        &self,
        id: ResultId,
        statement: Arc<Statement>,
        params: Vec<String>,
        members: Vec<Vec<CompactString>>,
        boundary: Option<Vec<Option<String>>>,
    ) {
        let Some(m) = statement.precision.row() else {
            return;
        };
        let head = Arc::as_ptr(&statement) as usize;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let mut parts = Vec::new();
        for table in m.tables() {
            let mut sides = Vec::new();
            let mut rows: Vec<CompactString> = Vec::new();
            for (n, side) in m.sides.iter().enumerate() {
                if side.table.key_prefix != table.key_prefix {
                    continue;
                }
                sides.push(Filed {
                    side: n,
                    keys: side.keys(&params),
                    bound: side.bound(&params),
                });
                for member in members.get(n).into_iter().flatten() {
                    if !rows.contains(member) {
                        rows.push(member.clone());
                    }
                }
            }
            let bytes = part_cost(&id.1, &params, &rows)
                + boundary
                    .iter()
                    .flatten()
                    .map(|v| v.as_ref().map_or(0, String::len) + 24)
                    .sum::<usize>();
            parts.push((table.key_prefix.clone(), sides, rows, bytes));
        }
        self.with_index(|index| {
            for (n, (table, sides, rows, bytes)) in parts.into_iter().enumerate() {
                let t = index.entry(table).or_default();
                t.remove(&id);
                for member in &rows {
                    t.by_member
                        .entry(member.clone())
                        .or_default()
                        .push(id.clone());
                }
                for filed in &sides {
                    let s = t.by_side.entry((head, filed.side)).or_default();
                    match (&filed.keys, &filed.bound) {
                        (Some(keys), _) => {
                            for key in keys {
                                s.by_key.entry(key.clone()).or_default().push(id.clone());
                            }
                        }
                        (None, Some(bound)) => s
                            .by_bound
                            .entry(bound.clone())
                            .or_default()
                            .push(id.clone()),
                        (None, None) => {
                            s.unkeyed.insert(id.clone());
                        }
                    }
                    s.all.insert(id.clone());
                }
                t.bytes += bytes;
                t.results += usize::from(n == 0);
                t.entries.insert(
                    id.clone(),
                    Entry {
                        statement: statement.clone(),
                        params: params.clone(),
                        sides,
                        members: rows,
                        boundary: boundary.clone(),
                        bytes,
                        first: n == 0,
                        serial,
                    },
                );
            }
        });
    }

    /// The result `id` is gone (expired, evicted): its entries go too, under every table.
    pub fn remove(&self, id: &ResultId) {
        self.with_index(|index| {
            for t in index.values_mut() {
                t.remove(id);
            }
            index.retain(|_, t| !t.entries.is_empty());
        });
    }

    /// Rows of the table whose keys start with `table` changed: `members` are their primary
    /// keys (old and new), `entering` their new values (None: not known, as from a
    /// notification). Takes out of the index, and returns, every result they can affect.
    pub fn changed(
        &self,
        table: &str,
        members: &[CompactString],
        entering: Option<&[Written]>,
    ) -> Dropped {
        self.with_index(|index| {
            let Some(t) = index.get_mut(table) else {
                return Vec::new();
            };
            let mut hit: HashSet<ResultId> = HashSet::new();
            for member in members {
                if let Some(ids) = t.by_member.get(member) {
                    hit.extend(ids.iter().cloned());
                }
            }
            for (&(_, side), s) in &t.by_side {
                // Members named for a side decided over the table without a key: the table has
                // a key now (a DDL not followed), and those results kept none to be found by.
                if !members.is_empty() && t.keyless_side(side, s) {
                    hit.extend(s.all.iter().cloned());
                    continue;
                }
                match entering {
                    Some(rows) => t.entered(side, s, rows, &mut hit),
                    None => hit.extend(s.all.iter().cloned()),
                }
            }
            let dropped: Dropped = hit
                .into_iter()
                .filter_map(|id| t.remove(&id).map(|e| (id, e.statement)))
                .collect();
            if t.entries.is_empty() {
                index.remove(table);
            }
            leave_other_tables(index, table, dropped.iter().map(|(id, s)| (id, s)));
            dropped
        })
    }

    fn lock_orphans(&self) -> std::sync::MutexGuard<'_, VecDeque<Orphan>> {
        self.orphans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes orphans out of the tables they are still filed under until `deadline`; whether
    /// some are left.
    fn sweep_until(&self, deadline: Instant) -> bool {
        self.with_index(|index| {
            let mut orphans = self.lock_orphans();
            let mut swept = 0usize;
            while let Some(orphan) = orphans.pop_front() {
                // Only the part filed by the indexing that was dropped: the same key filed again
                // since (never, but for 64 random bits of generation repeating) stays.
                for table in orphan.others.iter() {
                    if let Some(t) = index.get_mut(table)
                        && t.entries
                            .get(&orphan.id)
                            .is_some_and(|e| e.serial == orphan.serial)
                    {
                        t.remove(&orphan.id);
                        if t.entries.is_empty() {
                            index.remove(table);
                        }
                    }
                }
                swept += 1;
                if swept.is_multiple_of(64) && Instant::now() >= deadline {
                    break;
                }
            }
            !orphans.is_empty()
        })
    }

    /// Every result of the table whose keys start with `table` (every table: None) leaves the
    /// index (the table changed as a whole); the number dropped of each statement. The parts
    /// dropped are freed on a thread of their own: a table's may hold many results, and the
    /// event loop only detaches it; the joins' results leave the other tables they read a
    /// slice at a time (`sweep`). Main thread.
    pub fn drop_table(&self, table: Option<&str>) -> Vec<(Arc<Statement>, u64)> {
        let detached: Vec<(String, TableIndex)> = self.with_index(|index| match table {
            Some(table) => index.remove_entry(table).into_iter().collect(),
            None => index.drain().collect(),
        });
        // With every table dropped, no other is left to sweep.
        let orphans: Vec<Orphan> = match table {
            Some(_) => detached
                .iter()
                .flat_map(|(t, part)| orphans(t, part))
                .collect(),
            None => Vec::new(),
        };
        if !orphans.is_empty() {
            self.lock_orphans().extend(orphans);
            SWEEP.request();
        }
        let mut counts: Vec<(Arc<Statement>, u64)> = Vec::new();
        for (_, t) in &detached {
            for (&(head, _), s) in &t.by_side {
                let Some(entry) = s.all.iter().next().and_then(|id| t.entries.get(id)) else {
                    continue;
                };
                match counts
                    .iter_mut()
                    .find(|(c, _)| Arc::as_ptr(c) as usize == head)
                {
                    // A self-join files each result under two sides.
                    Some((_, n)) => *n = (*n).max(s.all.len() as u64),
                    None => counts.push((entry.statement.clone(), s.all.len() as u64)),
                }
            }
        }
        if !detached.is_empty() {
            let freed = std::thread::Builder::new()
                .name("pgcache-free".into())
                .spawn(move || drop(detached));
            // Without a thread, the event loop frees it: slower, never wrong.
            drop(freed);
        }
        counts
    }
}

impl TableIndex {
    fn remove(&mut self, id: &ResultId) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.bytes -= entry.bytes;
        self.results -= usize::from(entry.first);
        for member in &entry.members {
            if let Some(ids) = self.by_member.get_mut(member) {
                ids.retain(|i| i != id);
                if ids.is_empty() {
                    self.by_member.remove(member);
                }
            }
        }
        let head = Arc::as_ptr(&entry.statement) as usize;
        for filed in &entry.sides {
            let side = (head, filed.side);
            let Some(s) = self.by_side.get_mut(&side) else {
                continue;
            };
            s.all.remove(id);
            s.unkeyed.remove(id);
            for key in filed.keys.iter().flatten() {
                if let Some(ids) = s.by_key.get_mut(key) {
                    ids.retain(|i| i != id);
                    if ids.is_empty() {
                        s.by_key.remove(key);
                    }
                }
            }
            if let Some(bound) = &filed.bound
                && let Some(ids) = s.by_bound.get_mut(bound)
            {
                ids.retain(|i| i != id);
                if ids.is_empty() {
                    s.by_bound.remove(bound);
                }
            }
            if s.all.is_empty() {
                self.by_side.remove(&side);
            }
        }
        Some(entry)
    }

    /// Adds to `hit` the results of side `side` that `rows` may enter: those of a row's
    /// value of the pinned column (or whose bound it passes) and the unkeyed ones; every
    /// result when the value is not known; none when the side's rows enter only with a
    /// member's foreign key. Past `WEIGH_BUDGET` weighings in one change it stops weighing
    /// and takes every result of the side: more drops, but a bounded turn of the event
    /// loop.
    /// Whether `side`'s results were decided over this table without a primary key.
    fn keyless_side(&self, side: usize, s: &SideResults) -> bool {
        s.all
            .iter()
            .next()
            .and_then(|any| self.entries.get(any))
            .and_then(|e| e.statement.precision.row())
            .and_then(|m| m.sides.get(side))
            .is_some_and(|matched| pgcache_rules::precision::keyless(matched.table.as_ref()))
    }

    fn entered(&self, side: usize, s: &SideResults, rows: &[Written], hit: &mut HashSet<ResultId>) {
        let Some(m) = s
            .all
            .iter()
            .next()
            .and_then(|any| self.entries.get(any))
            .and_then(|e| e.statement.precision.row())
        else {
            return;
        };
        let matched = &m.sides[side];
        let mut weighed = 0usize;
        for written in rows {
            // A side whose rows enter only with a member's foreign key: a row no member
            // references stays out, unless its key is new, which a reference written
            // without the key's check (`session_replication_role = replica`) may name.
            if !matched.enters && !written.new_key {
                continue;
            }
            let row = &written.values;
            let admitted = |e: &Entry| {
                if matched.enters {
                    m.admits(side, &e.params, e.boundary.as_deref(), row)
                } else {
                    m.may_be_referenced(side, &e.params, row)
                }
            };
            let candidates: Box<dyn Iterator<Item = &ResultId>> = match matched.lookup(row) {
                // NULL equals nothing and passes no bound: no result's condition holds.
                Lookup::Nowhere => continue,
                Lookup::Key(key) => Box::new(
                    s.by_key
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .chain(s.unkeyed.iter()),
                ),
                Lookup::Range(range) => Box::new(
                    s.by_bound
                        .range(range)
                        .flat_map(|(_, ids)| ids)
                        .chain(s.unkeyed.iter()),
                ),
                Lookup::Everywhere => Box::new(s.all.iter()),
            };
            for id in candidates {
                weighed += 1;
                if !hit.contains(id) && self.entries.get(id).is_some_and(admitted) {
                    hit.insert(id.clone());
                }
            }
            if weighed > WEIGH_BUDGET {
                hit.extend(s.all.iter().cloned());
                return;
            }
        }
    }
}

/// Most results one change weighs a side's conditions against, row by row, before it
/// drops all of that side's results instead (about a millisecond of the event loop).
const WEIGH_BUDGET: usize = 20_000;

/// What a change dropped: each result, with its statement.
pub type Dropped = Vec<(ResultId, Arc<Statement>)>;

/// The joins' results of `part`, dropped with `table`, as orphans of the other tables they
/// read.
fn orphans<'a>(table: &'a str, part: &'a TableIndex) -> impl Iterator<Item = Orphan> + 'a {
    part.by_side.values().flat_map(move |side| {
        let statement = side
            .all
            .iter()
            .next()
            .and_then(|id| part.entries.get(id))
            .map(|e| &e.statement);
        let others: Arc<[String]> = statement
            .and_then(|s| s.precision.row())
            .map(|m| {
                m.tables()
                    .iter()
                    .filter(|other| other.key_prefix != table)
                    .map(|other| other.key_prefix.clone())
                    .collect()
            })
            .unwrap_or_default();
        let ids = if others.is_empty() {
            None
        } else {
            Some(&side.all)
        };
        ids.into_iter().flatten().filter_map(move |id| {
            Some(Orphan {
                others: others.clone(),
                id: id.clone(),
                serial: part.entries.get(id)?.serial,
            })
        })
    })
}

/// Takes orphans out of the tables they are still filed under, every source's index in
/// turn, for one slice in all; whether some are left.
fn sweep(_ctx: &Context) -> bool {
    let until = Instant::now() + SWEEP_SLICE;
    let mut more = false;
    MEMBERSHIPS.each(|_, membership| more |= membership.sweep_until(until));
    more
}

/// Runs `f` on every installed source's index.
pub fn each(f: impl FnMut(SourceId, &Membership)) {
    MEMBERSHIPS.each(f);
}

/// Results of joins dropped under `table` leave the index under the other tables they
/// read too.
fn leave_other_tables<'a>(
    index: &mut Index,
    table: &str,
    dropped: impl Iterator<Item = (&'a ResultId, &'a Arc<Statement>)>,
) {
    for (id, statement) in dropped {
        let Some(m) = statement.precision.row() else {
            continue;
        };
        for other in m.tables() {
            if other.key_prefix == table {
                continue;
            }
            if let Some(t) = index.get_mut(&other.key_prefix) {
                t.remove(id);
                if t.entries.is_empty() {
                    index.remove(&other.key_prefix);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::schema::TableSchema;
    use crate::query::precision::{NewValue, Precision, SideMatch};
    use crate::query::predicate::{Cmp, Expr, Pred, SqlType};
    use pgcache_rules::precision::{EnteringRow, RowMatch, Through};

    /// A row-precise statement over `table`, exact on customer_id = $1.
    fn statement(table: &str) -> Arc<Statement> {
        statement_on(table, Cmp::Eq)
    }

    /// A row-precise statement over `table` whose WHERE is `customer_id <op> $1`.
    fn statement_on(table: &str, op: Cmp) -> Arc<Statement> {
        let filter = Pred::Compare {
            op,
            left: Expr::Column("customer_id".into()),
            right: Expr::Param(1),
            ty: SqlType::Number,
        };
        joined(&[(table, filter, true)])
    }

    /// A row-precise statement over `sides`: each a table, its condition, and whether a
    /// row that is no member may enter.
    fn joined(sides: &[(&str, Pred, bool)]) -> Arc<Statement> {
        let sides: Vec<SideMatch> = sides
            .iter()
            .map(|(table, filter, enters)| SideMatch {
                table: Arc::new(TableSchema::for_tests(table, Vec::new(), vec!["id".into()])),
                reference: table.to_string(),
                ranged: filter.ranged(),
                pinned: filter.pinned(),
                filter: filter.clone(),
                enters: *enters,
                // A side that does not enter comes in through the first side's foreign
                // key `customer_id` to its `id`.
                through: (!*enters).then(|| Through {
                    side: 0,
                    pairs: vec![("customer_id".into(), "id".into())],
                }),
            })
            .collect();
        let mut tables: Vec<Arc<TableSchema>> = Vec::new();
        for side in &sides {
            if !tables.iter().any(|t| t.key_prefix == side.table.key_prefix) {
                tables.push(side.table.clone());
            }
        }
        Arc::new(Statement::new(
            SourceId::DEFAULT,
            "pg_cache:",
            format!("SELECT * FROM {}", tables[0].display),
            Vec::new(),
            Vec::new(),
            tables,
            Vec::new(),
            Precision::Row(Box::new(RowMatch { sides, page: None })),
            true,
            None,
            String::new(),
            None,
            None,
            crate::pg::undo::Effects::None,
        ))
    }

    fn prefix(s: &Statement, side: usize) -> String {
        s.precision.row().unwrap().sides[side]
            .table
            .key_prefix
            .clone()
    }

    fn id(key: &str) -> ResultId {
        (0, key.into())
    }

    fn member(n: u32) -> CompactString {
        format!("{{\"id\":{n}}}").into()
    }

    fn row(customer: &str) -> Written {
        written(vec![(
            "customer_id".into(),
            NewValue::Text(customer.into()),
        )])
    }

    fn written(values: EnteringRow) -> Written {
        Written {
            values,
            new_key: false,
        }
    }

    fn keys(dropped: Dropped) -> Vec<String> {
        let mut keys: Vec<String> = dropped
            .into_iter()
            .map(|(id, _)| id.1.to_string())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_change_takes_the_results_it_enters_or_was_built_from() {
        let s = statement("membership_a");
        let table = prefix(&s, 0);
        of(SourceId::DEFAULT).add(
            id("r7"),
            s.clone(),
            vec!["7".into()],
            vec![vec![member(1), member(2)]],
            None,
        );
        of(SourceId::DEFAULT).add(
            id("r8"),
            s.clone(),
            vec!["8".into()],
            vec![vec![member(3)]],
            None,
        );
        of(SourceId::DEFAULT).add(id("r9"), s.clone(), vec!["9".into()], vec![vec![]], None);
        // Row 3 (customer 8's) moves to customer 9: it leaves r8 and enters r9.
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(&table, &[member(3)], Some(&[row("9")]))),
            ["r8", "r9"]
        );
        // Another customer's new row: nothing.
        assert!(
            of(SourceId::DEFAULT)
                .changed(&table, &[member(50)], Some(&[row("5")]))
                .is_empty()
        );
        // A NULL enters nothing; a value the change did not carry enters everything.
        let null = written(vec![("customer_id".into(), NewValue::Null)]);
        assert!(
            of(SourceId::DEFAULT)
                .changed(&table, &[member(51)], Some(&[null]))
                .is_empty()
        );
        of(SourceId::DEFAULT).add(
            id("r8"),
            s.clone(),
            vec!["8".into()],
            vec![vec![member(3)]],
            None,
        );
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(
                &table,
                &[member(52)],
                Some(&[written(Vec::new())])
            )),
            ["r7", "r8"]
        );
        // Unknown new values (a notification): every result of the table.
        of(SourceId::DEFAULT).add(
            id("r7"),
            s.clone(),
            vec!["7".into()],
            vec![vec![member(1)]],
            None,
        );
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(&table, &[], None)),
            ["r7"]
        );
    }

    #[test]
    fn a_change_too_big_to_weigh_takes_every_result_of_the_statement() {
        let bounds = |s: &Arc<Statement>| {
            for n in 1..=3 {
                let bound = (100 * n).to_string();
                of(SourceId::DEFAULT).add(
                    id(&format!("c{n}")),
                    s.clone(),
                    vec![bound],
                    vec![vec![]],
                    None,
                );
            }
        };
        // customer_id <> $1 neither pins nor bounds: a row is weighed against each result.
        let s = statement_on("membership_c", Cmp::Ne);
        let table = prefix(&s, 0);
        bounds(&s);
        let rows: Vec<Written> = vec![row("100"); 10];
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(&table, &[], Some(&rows))),
            ["c2", "c3"]
        );
        // As many rows as take the budget: every result of the statement goes, unweighed.
        bounds(&s);
        let rows: Vec<Written> = vec![row("100"); WEIGH_BUDGET / 3 + 1];
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(&table, &[], Some(&rows))),
            ["c1", "c2", "c3"]
        );
        // customer_id > $1: ordered by bound, a row is weighed against the results whose
        // bound it passes, and only those.
        let s = statement_on("membership_d", Cmp::Gt);
        let table = prefix(&s, 0);
        bounds(&s);
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(&table, &[], Some(&[row("250")]))),
            ["c1", "c2"]
        );
        bounds(&s);
        assert!(
            of(SourceId::DEFAULT)
                .changed(&table, &[], Some(&[row("100")]))
                .is_empty()
        );
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(&table, &[], Some(&[row("101")]))),
            ["c1"]
        );
        let rows: Vec<Written> = vec![row("1"); WEIGH_BUDGET + 1];
        assert!(
            of(SourceId::DEFAULT)
                .changed(&table, &[], Some(&rows))
                .is_empty(),
            "none weighed"
        );
    }

    #[test]
    fn removed_and_dropped_results_leave_nothing_behind() {
        let s = statement("membership_b");
        let table = prefix(&s, 0);
        of(SourceId::DEFAULT).add(
            id("b1"),
            s.clone(),
            vec!["1".into()],
            vec![vec![member(1)]],
            None,
        );
        of(SourceId::DEFAULT).add(
            id("b2"),
            s.clone(),
            vec!["2".into()],
            vec![vec![member(2)]],
            None,
        );
        of(SourceId::DEFAULT).remove(&id("b1"));
        assert!(
            of(SourceId::DEFAULT)
                .changed(&table, &[member(1)], Some(&[]))
                .is_empty()
        );
        let counts = of(SourceId::DEFAULT).drop_table(Some(&table));
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].1, 1);
        assert!(
            of(SourceId::DEFAULT)
                .changed(&table, &[member(2)], None)
                .is_empty()
        );
        of(SourceId::DEFAULT).with_index(|index| assert!(!index.contains_key(&table)));
    }

    #[test]
    fn a_join_result_is_dropped_through_any_of_its_tables_and_leaves_them_all() {
        // orders (customer_id = $1) joined to customers, which only orders' foreign key
        // brings in, and to regions, which enter on their own (no condition).
        let s = joined(&[
            (
                "membership_orders",
                Pred::Compare {
                    op: Cmp::Eq,
                    left: Expr::Column("customer_id".into()),
                    right: Expr::Param(1),
                    ty: SqlType::Number,
                },
                true,
            ),
            ("membership_customers", Pred::And(vec![]), false),
            ("membership_regions", Pred::And(vec![]), true),
        ]);
        let (orders, customers, regions) = (prefix(&s, 0), prefix(&s, 1), prefix(&s, 2));
        let members = || vec![vec![member(1)], vec![member(7)], vec![member(3)]];
        of(SourceId::DEFAULT).add(id("j7"), s.clone(), vec!["7".into()], members(), None);
        of(SourceId::DEFAULT).add(
            id("j8"),
            s.clone(),
            vec!["8".into()],
            vec![vec![], vec![], vec![]],
            None,
        );
        // A customer no result holds enters none; one a result holds drops it.
        assert!(
            of(SourceId::DEFAULT)
                .changed(&customers, &[member(8)], Some(&[written(Vec::new())]))
                .is_empty()
        );
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(
                &customers,
                &[member(7)],
                Some(&[written(Vec::new())])
            )),
            ["j7"]
        );
        // A customer whose key is new (an insert) enters the results whose orders' condition
        // its key may pass: one an order loaded without the key's check may reference.
        of(SourceId::DEFAULT).add(id("j7"), s.clone(), vec!["7".into()], members(), None);
        of(SourceId::DEFAULT).add(
            id("j8"),
            s.clone(),
            vec!["8".into()],
            vec![vec![], vec![], vec![]],
            None,
        );
        let new_customer = |id: Option<&str>| Written {
            values: id
                .map(|id| vec![("id".to_string(), NewValue::Text(id.into()))])
                .unwrap_or_default(),
            new_key: true,
        };
        assert!(
            of(SourceId::DEFAULT)
                .changed(&customers, &[member(9)], Some(&[new_customer(Some("9"))]))
                .is_empty()
        );
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(
                &customers,
                &[member(8)],
                Some(&[new_customer(Some("8"))])
            )),
            ["j8"]
        );
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(
                &customers,
                &[member(10)],
                Some(&[new_customer(None)])
            )),
            ["j7"]
        );
        of(SourceId::DEFAULT).add(
            id("j8"),
            s.clone(),
            vec!["8".into()],
            vec![vec![], vec![], vec![]],
            None,
        );
        // Gone under every table: an order of customer 7 finds nothing more to drop.
        assert!(
            of(SourceId::DEFAULT)
                .changed(&orders, &[member(50)], Some(&[row("7")]))
                .is_empty()
        );
        // Any region may enter any result.
        of(SourceId::DEFAULT).add(id("j7"), s.clone(), vec!["7".into()], members(), None);
        assert_eq!(
            keys(of(SourceId::DEFAULT).changed(
                &regions,
                &[member(9)],
                Some(&[written(Vec::new())])
            )),
            ["j7", "j8"]
        );
        of(SourceId::DEFAULT).with_index(|index| {
            for table in [&orders, &customers, &regions] {
                assert!(!index.contains_key(table.as_str()), "{table}");
            }
        });
        // A table that changes as a whole takes the join's results out of the others.
        of(SourceId::DEFAULT).add(id("j7"), s.clone(), vec!["7".into()], members(), None);
        let counts = of(SourceId::DEFAULT).drop_table(Some(&customers));
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].1, 1);
        assert!(!of(SourceId::DEFAULT).sweep_until(Instant::now() + Duration::from_secs(60)));
        of(SourceId::DEFAULT).with_index(|index| assert!(!index.contains_key(orders.as_str())));
        // What was filed again since the drop is not swept.
        of(SourceId::DEFAULT).add(id("j7"), s.clone(), vec!["7".into()], members(), None);
        of(SourceId::DEFAULT).drop_table(Some(&customers));
        of(SourceId::DEFAULT).add(id("j7"), s.clone(), vec!["7".into()], members(), None);
        assert!(!of(SourceId::DEFAULT).sweep_until(Instant::now() + Duration::from_secs(60)));
        of(SourceId::DEFAULT)
            .with_index(|index| assert!(index[orders.as_str()].entries.contains_key(&id("j7"))));
    }

    /// Each source's index is its own: a change in one source's table finds none of
    /// another's results, and each counts its own memory against its own budget.
    #[test]
    fn sources_do_not_share_an_index() {
        let (a, b) = (
            Membership::new(SourceId::DEFAULT),
            Membership::new(SourceId::DEFAULT),
        );
        let s = statement("membership_sources");
        let table = prefix(&s, 0);
        a.add(
            id("s1"),
            s.clone(),
            vec!["7".into()],
            vec![vec![member(1)]],
            None,
        );
        assert_eq!((a.results(), b.results()), (1, 0));
        assert!(a.bytes() > 0 && b.bytes() == 0);
        assert!(b.changed(&table, &[member(1)], None).is_empty());
        assert_eq!(keys(a.changed(&table, &[member(1)], None)), ["s1"]);
    }
}
