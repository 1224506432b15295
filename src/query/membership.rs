//! The index of row-precise results (`precision`): for each cached result, the values its
//! conditions admit and the primary keys of the rows it was built from (its members), so
//! that a change finds the results it can affect: those built from the changed row, and
//! those its new values enter. Per table: results by member, and per statement by the
//! value its first exact condition admits. Main thread only (fills land and changes are
//! applied there). Its memory is counted and bounded (`query_index_max_bytes`); a result
//! leaves it when it is dropped, expires or is evicted.

use crate::config::current;
use crate::query::Statement;
use crate::query::precision::EnteringRow;
use crate::query::precision::NewValue;
use compact_str::CompactString;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A result: the DB it lives in and its key.
pub type ResultId = (i32, Arc<str>);

/// Bytes an entry costs beside its strings (maps, vectors, the statement's handle): an
/// estimate, so the bound holds within a small factor.
const ENTRY_OVERHEAD: usize = 160;
const MEMBER_OVERHEAD: usize = 48;

struct Entry {
    statement: Arc<Statement>,
    bound: Vec<Vec<String>>,
    members: Vec<CompactString>,
    table: String,
    bytes: usize,
}

#[derive(Default)]
struct StatementResults {
    /// By the value the first exact condition admits (every result, when it has one).
    by_first: HashMap<String, Vec<ResultId>>,
    /// Every result of the statement.
    all: HashSet<ResultId>,
}

#[derive(Default)]
struct TableIndex {
    by_member: HashMap<CompactString, Vec<ResultId>>,
    /// By the statement's key head.
    by_statement: HashMap<Arc<str>, StatementResults>,
}

#[derive(Default)]
struct Index {
    entries: HashMap<ResultId, Entry>,
    /// By table key prefix.
    tables: HashMap<String, TableIndex>,
}

static INDEX: Mutex<Option<Index>> = Mutex::new(None);
static BYTES: AtomicU64 = AtomicU64::new(0);
static RESULTS: AtomicU64 = AtomicU64::new(0);

fn with_index<R>(f: impl FnOnce(&mut Index) -> R) -> R {
    let mut guard = INDEX.lock().unwrap_or_else(|p| p.into_inner());
    let index = guard.get_or_insert_with(Index::default);
    let r = f(index);
    RESULTS.store(index.entries.len() as u64, Ordering::Relaxed);
    r
}

/// Results indexed now.
pub fn results() -> u64 {
    RESULTS.load(Ordering::Relaxed)
}

/// Bytes the index takes now (an estimate).
pub fn bytes() -> u64 {
    BYTES.load(Ordering::Relaxed)
}

/// A result built from `members` and admitting `bound` (`RowMatch::bound`), the cost it
/// would add to the index.
pub fn cost(key: &str, bound: &[Vec<String>], members: &[CompactString]) -> usize {
    ENTRY_OVERHEAD
        + 3 * key.len()
        + bound
            .iter()
            .flatten()
            .map(|v| 2 * v.len() + 32)
            .sum::<usize>()
        + members
            .iter()
            .map(|m| 2 * m.len() + MEMBER_OVERHEAD)
            .sum::<usize>()
}

/// Whether a result costing `cost` fits under `query_index_max_bytes`.
pub fn has_room(cost: usize) -> bool {
    bytes() + cost as u64 <= current::query_index_max_bytes()
}

/// Indexes the result `id` of `statement` (row-precise), cached just now.
pub fn add(
    id: ResultId,
    statement: Arc<Statement>,
    bound: Vec<Vec<String>>,
    members: Vec<CompactString>,
) {
    let Some(row) = statement.precision.row() else {
        return;
    };
    let table = row.table.key_prefix.clone();
    let head: Arc<str> = statement.key_head.as_str().into();
    let bytes = cost(&id.1, &bound, &members);
    with_index(|index| {
        remove_entry(index, &id);
        let t = index.tables.entry(table.clone()).or_default();
        for member in &members {
            t.by_member
                .entry(member.clone())
                .or_default()
                .push(id.clone());
        }
        let s = t.by_statement.entry(head).or_default();
        if let Some(first) = bound.first() {
            for value in first {
                s.by_first
                    .entry(value.clone())
                    .or_default()
                    .push(id.clone());
            }
        }
        s.all.insert(id.clone());
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
        index.entries.insert(
            id,
            Entry {
                statement,
                bound,
                members,
                table,
                bytes,
            },
        );
    });
}

/// The result `id` is gone (expired, evicted, deleted): its entries go too.
pub fn remove(id: &ResultId) {
    with_index(|index| {
        remove_entry(index, id);
    });
}

fn remove_entry(index: &mut Index, id: &ResultId) -> Option<Entry> {
    let entry = index.entries.remove(id)?;
    BYTES.fetch_sub(entry.bytes as u64, Ordering::Relaxed);
    if let Some(t) = index.tables.get_mut(&entry.table) {
        for member in &entry.members {
            if let Some(ids) = t.by_member.get_mut(member) {
                ids.retain(|i| i != id);
                if ids.is_empty() {
                    t.by_member.remove(member);
                }
            }
        }
        let head = entry.statement.key_head.as_str();
        if let Some(s) = t.by_statement.get_mut(head) {
            s.all.remove(id);
            if let Some(first) = entry.bound.first() {
                for value in first {
                    if let Some(ids) = s.by_first.get_mut(value) {
                        ids.retain(|i| i != id);
                        if ids.is_empty() {
                            s.by_first.remove(value);
                        }
                    }
                }
            }
            if s.all.is_empty() {
                t.by_statement.remove(head);
            }
        }
        if t.by_member.is_empty() && t.by_statement.is_empty() {
            index.tables.remove(&entry.table);
        }
    }
    Some(entry)
}

/// What a change dropped: each result, with its statement.
pub type Dropped = Vec<(ResultId, Arc<Statement>)>;

/// Rows of the table whose keys start with `table` changed: `members` are their primary
/// keys (old and new), `entering` their new values (None: not known, as from a
/// notification). Takes out of the index, and returns, every result they can affect.
pub fn changed(
    table: &str,
    members: &[CompactString],
    entering: Option<&[EnteringRow]>,
) -> Dropped {
    with_index(|index| {
        let Some(t) = index.tables.get(table) else {
            return Vec::new();
        };
        let mut hit: HashSet<ResultId> = HashSet::new();
        for member in members {
            if let Some(ids) = t.by_member.get(member) {
                hit.extend(ids.iter().cloned());
            }
        }
        for s in t.by_statement.values() {
            let Some(rows) = entering else {
                hit.extend(s.all.iter().cloned());
                continue;
            };
            for row in rows {
                entered(index, s, row, &mut hit);
            }
        }
        hit.into_iter()
            .filter_map(|id| remove_entry(index, &id).map(|e| (id, e.statement)))
            .collect()
    })
}

/// Adds to `hit` the results of `s` that `row` enters.
fn entered(index: &Index, s: &StatementResults, row: &EnteringRow, hit: &mut HashSet<ResultId>) {
    let Some(any) = s.all.iter().next() else {
        return;
    };
    let Some(m) = index
        .entries
        .get(any)
        .and_then(|e| e.statement.precision.row())
    else {
        return;
    };
    let first = m
        .exact
        .first()
        .and_then(|c| row.iter().find(|(column, _)| *column == c.column));
    let candidates: Box<dyn Iterator<Item = &ResultId>> = match first {
        Some((_, NewValue::Null)) => return,
        Some((_, NewValue::Text(value))) => match s.by_first.get(value) {
            Some(ids) => Box::new(ids.iter()),
            None => return,
        },
        None => Box::new(s.all.iter()),
    };
    for id in candidates {
        if !hit.contains(id)
            && index
                .entries
                .get(id)
                .is_some_and(|e| m.admits(&e.bound, row))
        {
            hit.insert(id.clone());
        }
    }
}

/// The results of DB `db` whose keys hold the row generation `generation` leave the index:
/// nobody builds their keys any more.
pub fn drop_generation(db: i32, generation: &str) {
    let part = format!(":{generation}:");
    with_index(|index| {
        let ids: Vec<ResultId> = index
            .entries
            .keys()
            .filter(|(d, key)| *d == db && key.contains(&part))
            .cloned()
            .collect();
        for id in ids {
            remove_entry(index, &id);
        }
    });
}

/// Every result of the table whose keys start with `table` (every table: None) leaves the
/// index (the table changed as a whole); the number dropped of each statement.
pub fn drop_table(table: Option<&str>) -> Vec<(Arc<Statement>, u64)> {
    with_index(|index| {
        let ids: Vec<ResultId> = index
            .entries
            .iter()
            .filter(|(_, e)| table.is_none_or(|t| e.table == t))
            .map(|(id, _)| id.clone())
            .collect();
        let mut counts: Vec<(Arc<Statement>, u64)> = Vec::new();
        for id in ids {
            if let Some(e) = remove_entry(index, &id) {
                match counts
                    .iter_mut()
                    .find(|(s, _)| Arc::ptr_eq(s, &e.statement))
                {
                    Some((_, n)) => *n += 1,
                    None => counts.push((e.statement, 1)),
                }
            }
        }
        counts
    })
}
