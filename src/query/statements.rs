//! The statement table: a statement's text as clients send it → what was learned of it, so a
//! hit finds its statement with one hash lookup and never parses SQL. Every spelling has its
//! own entry (all of a statement's spellings share the learned `Statement` they map to by
//! its canonical text). Bounded by `query_max_statements`: past it, the least recently used
//! spelling is forgotten (learned again, one catalog round, when it comes back).
//!
//! One table per source (`of`): the same text read in two databases is two statements.

use crate::config::current;
use crate::model::source::{PartRef, Parts, SourceId};
use crate::query::Statement;
use crate::stats;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A statement's spellings.
type Spellings = HashSet<Box<[u8]>, foldhash::fast::RandomState>;

/// One remembered spelling, in the recency list (`prev` more recent, `next` less).
struct Node {
    text: Box<[u8]>,
    statement: Arc<Statement>,
    prev: Option<usize>,
    next: Option<usize>,
}

/// The spellings, least recently used last, with every operation the hit path or a
/// learning worker takes the lock for in constant time (a hit never waits on a scan): a
/// map to slots of a list linked through their indexes, and each canonical text's
/// spellings, so a new spelling finds its statement and a statement is forgotten without
/// visiting the others.
#[derive(Default)]
struct Table {
    by_text: HashMap<Box<[u8]>, usize, foldhash::fast::RandomState>,
    by_canonical: HashMap<String, Spellings, foldhash::fast::RandomState>,
    slots: Vec<Option<Node>>,
    free: Vec<usize>,
    most_recent: Option<usize>,
    least_recent: Option<usize>,
}

impl Table {
    fn node(&self, slot: usize) -> &Node {
        self.slots[slot]
            .as_ref()
            .expect("a linked slot holds a node")
    }

    fn node_mut(&mut self, slot: usize) -> &mut Node {
        self.slots[slot]
            .as_mut()
            .expect("a linked slot holds a node")
    }

    fn unlink(&mut self, slot: usize) {
        let (prev, next) = {
            let node = self.node(slot);
            (node.prev, node.next)
        };
        match prev {
            Some(p) => self.node_mut(p).next = next,
            None => self.most_recent = next,
        }
        match next {
            Some(n) => self.node_mut(n).prev = prev,
            None => self.least_recent = prev,
        }
    }

    fn link_first(&mut self, slot: usize) {
        let first = self.most_recent;
        {
            let node = self.node_mut(slot);
            node.prev = None;
            node.next = first;
        }
        match first {
            Some(f) => self.node_mut(f).prev = Some(slot),
            None => self.least_recent = Some(slot),
        }
        self.most_recent = Some(slot);
    }

    /// The statement `text` names, now the most recently used.
    fn touch(&mut self, text: &[u8]) -> Option<Arc<Statement>> {
        let slot = *self.by_text.get(text)?;
        self.unlink(slot);
        self.link_first(slot);
        Some(self.node(slot).statement.clone())
    }

    fn insert(&mut self, text: &[u8], statement: Arc<Statement>) {
        if self.by_text.contains_key(text) {
            self.remove(text);
        }
        let canonical = statement.canonical.clone();
        let node = Node {
            text: text.into(),
            statement,
            prev: None,
            next: None,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(node);
                slot
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        };
        self.link_first(slot);
        self.by_text.insert(text.into(), slot);
        self.by_canonical
            .entry(canonical)
            .or_default()
            .insert(text.into());
    }

    fn remove(&mut self, text: &[u8]) -> Option<Arc<Statement>> {
        let slot = self.by_text.remove(text)?;
        self.unlink(slot);
        let node = self.slots[slot].take().expect("a mapped slot holds a node");
        self.free.push(slot);
        if let Some(texts) = self.by_canonical.get_mut(&node.statement.canonical) {
            texts.remove(text);
            if texts.is_empty() {
                self.by_canonical.remove(&node.statement.canonical);
            }
        }
        Some(node.statement)
    }

    fn evict_least_recently_used(&mut self, source: SourceId) {
        if let Some(slot) = self.least_recent {
            let text = self.node(slot).text.clone();
            self.remove(&text);
            stats::of(source).query_statements_evicted.inc();
        }
    }

    /// Each statement once, with one of its spellings' statements (all share it).
    fn statements(&self) -> impl Iterator<Item = &Arc<Statement>> {
        self.by_canonical
            .values()
            .filter_map(|texts| texts.iter().next())
            .filter_map(|text| self.by_text.get(text))
            .map(|&slot| &self.node(slot).statement)
    }
}

/// Every source's statements; the default source's inline, so a hit finds its statement as
/// it did in the static before.
static STATEMENTS: Parts<Statements> = Parts::new(Statements::new(SourceId::DEFAULT));

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    STATEMENTS.install(id, Statements::new(id));
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    STATEMENTS.forget_named(id);
}

/// The statements of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Statements> {
    STATEMENTS.of(id)
}

/// One source's statements.
pub struct Statements {
    /// Whose: its settings bound the table and say which precision is wanted.
    source: SourceId,
    /// Touched by the main thread (lookups) and workers (statements learned).
    table: Mutex<Option<Table>>,
    /// Bumped (under the table's lock) whenever every statement is forgotten: a statement
    /// learned from the catalog before then may read what the catalog no longer says.
    epoch: AtomicU64,
}

impl Statements {
    /// None yet (const, so a `static` holds the default source's).
    pub const fn new(source: SourceId) -> Statements {
        Statements {
            source,
            table: Mutex::new(None),
            epoch: AtomicU64::new(0),
        }
    }

    fn with_table<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        let mut guard = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.get_or_insert_with(Table::default))
    }

    /// The statement `text` names, if it was learned, under the `query_precision` in effect,
    /// and not forgotten since.
    pub fn get(&self, text: &[u8]) -> Option<Arc<Statement>> {
        let row_wanted = current::of(self.source).query_row_precision();
        self.with_table(|table| table.touch(text))
            .filter(|s| s.row_wanted == row_wanted)
    }

    /// The statement learned under another spelling with this canonical text, if any: a new
    /// spelling of it needs no catalog round.
    pub fn with_canonical(&self, canonical: &str) -> Option<Arc<Statement>> {
        let row_wanted = current::of(self.source).query_row_precision();
        self.with_table(|table| {
            let text = table.by_canonical.get(canonical)?.iter().next()?.clone();
            let slot = *table.by_text.get(&text)?;
            Some(table.node(slot).statement.clone())
        })
        .filter(|s| s.row_wanted == row_wanted)
    }

    /// The epoch to learn a statement under (`remember`).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Remembers `statement`, learned from the catalog in `epoch`, under the spelling `text`;
    /// false (and nothing remembered) when every statement was forgotten since (DDL): the
    /// catalog may say otherwise now.
    pub fn remember(&self, epoch: u64, text: &[u8], statement: Arc<Statement>) -> bool {
        let limit = current::of(self.source).query_max_statements().max(1);
        self.with_table(|table| {
            if self.epoch.load(Ordering::SeqCst) != epoch {
                return false;
            }
            while table.by_text.len() >= limit && !table.by_text.contains_key(text) {
                table.evict_least_recently_used(self.source);
            }
            table.insert(text, statement);
            true
        })
    }

    /// Every statement remembered, once each however many spellings it has, in the order
    /// their canonical texts sort.
    pub fn all(&self) -> Vec<Arc<Statement>> {
        let mut statements: Vec<Arc<Statement>> =
            self.with_table(|table| table.statements().cloned().collect());
        statements.sort_by(|a, b| a.canonical.cmp(&b.canonical));
        statements
    }

    /// How many spellings are remembered.
    pub fn count(&self) -> usize {
        self.with_table(|table| table.by_text.len())
    }

    /// Forgets every spelling of the statement spelled `canonical` (a table it reads changed
    /// under it): the next call learns it again from the catalog.
    pub fn forget(&self, canonical: &str) {
        self.with_table(|table| {
            for text in table.by_canonical.remove(canonical).unwrap_or_default() {
                table.remove(&text);
            }
        });
    }

    /// Forgets every statement (MODULE UNLOAD: the settings they were learned under, the cache
    /// prefix among them, may differ at the next load; DDL: what they read may have changed).
    pub fn forget_all(&self) {
        self.with_table(|table| {
            *table = Table::default();
            self.epoch.fetch_add(1, Ordering::SeqCst);
        });
    }

    /// The statements (each once) holding results filled since one of their tables last
    /// changed, among those that read the table whose keys start with `prefix` (None: every
    /// statement). One pass over the table and an atomic load per spelling: this runs on the
    /// event loop for every table a batch of changes touches.
    pub fn with_live_results(&self, prefix: Option<&str>) -> Vec<Arc<Statement>> {
        self.with_table(|table| {
            table
                .statements()
                .filter(|statement| {
                    statement.figures.has_live()
                        && prefix.is_none_or(|p| statement.tables.iter().any(|t| t.key_prefix == p))
                })
                .cloned()
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::precision::Precision;

    fn statement(canonical: &str) -> Arc<Statement> {
        Arc::new(Statement::new(
            SourceId::DEFAULT,
            "pg_cache:",
            canonical.into(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Precision::Table("a test".into()),
            false,
            None,
            String::new(),
            None,
            None,
            crate::pg::undo::Effects::None,
        ))
    }

    #[test]
    fn the_least_recently_used_spelling_goes_first_and_spellings_share_their_statement() {
        let mut table = Table::default();
        let (a, b) = (statement("SELECT 1"), statement("SELECT 2"));
        table.insert(b"select 1", a.clone());
        table.insert(b"SELECT 1", a.clone());
        table.insert(b"select 2", b.clone());
        assert!(table.touch(b"select 1").is_some());
        table.evict_least_recently_used(SourceId::DEFAULT);
        assert!(table.touch(b"SELECT 1").is_none(), "the least recent went");
        assert!(table.touch(b"select 1").is_some());
        assert_eq!(table.statements().count(), 2);
        // A spelling learned again replaces itself; forgetting a statement takes every
        // spelling of it and nothing else.
        table.insert(b"select 1", a.clone());
        assert_eq!(table.by_text.len(), 2);
        for text in table.by_canonical.get("SELECT 1").cloned().unwrap() {
            table.remove(&text);
        }
        assert!(table.touch(b"select 1").is_none());
        assert!(Arc::ptr_eq(&table.touch(b"select 2").unwrap(), &b));
        table.evict_least_recently_used(SourceId::DEFAULT);
        table.evict_least_recently_used(SourceId::DEFAULT);
        assert_eq!(table.by_text.len(), 0);
        assert!(table.by_canonical.is_empty());
        assert_eq!(table.most_recent, None);
        assert_eq!(table.least_recent, None);
        // Freed slots are used again.
        table.insert(b"x", a);
        assert_eq!(table.slots.len(), 3);
    }

    /// Each source learns its own statements: the same text remembered in one is not
    /// known to another, nor forgotten with it.
    #[test]
    fn sources_do_not_share_statements() {
        let (a, b) = (
            Statements::new(SourceId::DEFAULT),
            Statements::new(SourceId::DEFAULT),
        );
        assert!(a.remember(a.epoch(), b"select 1", statement("SELECT 1")));
        assert_eq!((a.count(), b.count()), (1, 0));
        assert!(b.all().is_empty());
        let epoch = a.epoch();
        b.forget_all();
        assert_eq!(a.count(), 1);
        assert!(a.remember(epoch, b"select 1", statement("SELECT 1")));
        assert!(!b.remember(epoch, b"select 1", statement("SELECT 1")));
    }
}
