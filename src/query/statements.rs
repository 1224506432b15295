//! The statement table: a statement's text as clients send it → what was learned of it, so a
//! hit finds its statement with one hash lookup and never parses SQL. Every spelling has its
//! own entry (all of a statement's spellings share the learned `Statement` they map to by
//! its canonical text). Bounded by `query_max_statements`: past it, the least recently used
//! spelling is forgotten (learned again, one catalog round, when it comes back).

use crate::config::current;
use crate::query::Statement;
use crate::stats;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

struct Entry {
    statement: Arc<Statement>,
    /// `Table::clock` at its last use.
    used: u64,
}

#[derive(Default)]
struct Table {
    by_text: HashMap<Box<[u8]>, Entry, foldhash::fast::RandomState>,
    clock: u64,
}

/// Touched by the main thread (lookups) and workers (statements learned).
static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Table::default))
}

/// The statement `text` names, if it was learned, under the `query_precision` in effect,
/// and not forgotten since.
pub fn get(text: &[u8]) -> Option<Arc<Statement>> {
    let row_wanted = current::query_row_precision();
    with_table(|table| {
        table.clock += 1;
        let clock = table.clock;
        let entry = table.by_text.get_mut(text)?;
        entry.used = clock;
        (entry.statement.row_wanted == row_wanted).then(|| entry.statement.clone())
    })
}

/// The statement learned under another spelling with this canonical text, if any: a new
/// spelling of it needs no catalog round.
pub fn with_canonical(canonical: &str) -> Option<Arc<Statement>> {
    let row_wanted = current::query_row_precision();
    with_table(|table| {
        table
            .by_text
            .values()
            .find(|e| e.statement.canonical == canonical && e.statement.row_wanted == row_wanted)
            .map(|e| e.statement.clone())
    })
}

/// Remembers `statement` under the spelling `text`.
pub fn remember(text: &[u8], statement: Arc<Statement>) {
    let limit = current::query_max_statements().max(1);
    with_table(|table| {
        table.clock += 1;
        let used = table.clock;
        while table.by_text.len() >= limit && !table.by_text.contains_key(text) {
            evict_least_recently_used(table);
        }
        table.by_text.insert(text.into(), Entry { statement, used });
    })
}

fn evict_least_recently_used(table: &mut Table) {
    let oldest = table
        .by_text
        .iter()
        .min_by_key(|(_, e)| e.used)
        .map(|(text, _)| text.clone());
    if let Some(text) = oldest {
        table.by_text.remove(&text);
        stats::QUERY_STATEMENTS_EVICTED.inc();
    }
}

/// Every statement remembered, once each however many spellings it has, in the order
/// their canonical texts sort.
pub fn all() -> Vec<Arc<Statement>> {
    let mut statements: Vec<Arc<Statement>> = with_table(|table| {
        table
            .by_text
            .values()
            .map(|e| e.statement.clone())
            .collect()
    });
    statements.sort_by(|a, b| a.canonical.cmp(&b.canonical));
    statements.dedup_by(|a, b| Arc::ptr_eq(a, b));
    statements
}

/// How many spellings are remembered.
pub fn count() -> usize {
    with_table(|table| table.by_text.len())
}

/// Forgets every spelling of the statement spelled `canonical` (a table it reads changed
/// under it): the next call learns it again from the catalog.
pub fn forget(canonical: &str) {
    with_table(|table| {
        table
            .by_text
            .retain(|_, e| e.statement.canonical != canonical)
    });
}

/// Forgets every statement (MODULE UNLOAD: the settings they were learned under, the cache
/// prefix among them, may differ at the next load).
pub fn forget_all() {
    with_table(|table| *table = Table::default());
}

/// The statements (each once) holding results filled since one of their tables last
/// changed, among those that read the table whose keys start with `prefix` (None: every
/// statement). One pass over the table and an atomic load per spelling: this runs on the
/// event loop for every table a batch of changes touches.
pub fn with_live_results(prefix: Option<&str>) -> Vec<Arc<Statement>> {
    with_table(|table| {
        let mut found: Vec<Arc<Statement>> = Vec::new();
        for entry in table.by_text.values() {
            let statement = &entry.statement;
            if statement.figures.has_live()
                && prefix.is_none_or(|p| statement.tables.iter().any(|t| t.key_prefix == p))
                && !found.iter().any(|f| Arc::ptr_eq(f, statement))
            {
                found.push(statement.clone());
            }
        }
        found
    })
}
