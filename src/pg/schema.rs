//! Table descriptions read from the catalog, cached in memory so the hit path can
//! canonicalise keys without asking PostgreSQL. An entry is dropped when a query says the
//! table changed, when the allowlist changes, and by PGCACHE.INVALIDATE of a whole table.

use crate::config::current;
use crate::error::{Error, Result};
use crate::model::ident::{QualifiedName, parse_table};
use crate::model::key::{KeyColumn, KeyColumns, KeyKind, cache_key};
use crate::model::source::{PartRef, Parts, SourceId};
use crate::pg::errors::catalog_error;
use crate::pg::pool::Connection;
use crate::pg::query::{self, KeyParam};
use crate::pg::session::Failure;
use crate::pg::undo::Effects;
use pgcache_rules::kind::column_kind;
pub use pgcache_rules::precision::Column;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

#[derive(Debug, PartialEq, Eq)]
pub struct TableSchema {
    /// The source whose database holds the table: whose pool reads its rows, whose
    /// descriptions hold it.
    pub source: SourceId,
    pub name: QualifiedName,
    /// The name in cache keys and events (see `QualifiedName::display`).
    pub display: String,
    /// `"schema"."name"` for SQL.
    pub sql_name: String,
    pub columns: Vec<Column>,
    /// Primary-key column names sorted by name; empty for views and tables without one.
    pub primary_key: Vec<String>,
    /// `<cache_prefix><display>:` — a cache key is this followed by the canonical pk.
    pub key_prefix: String,
    /// Whether many keys may be fetched in one joined query. Not for views: PostgreSQL may
    /// not push a join into a view (one with volatile expressions, say) and would then
    /// compute the whole view; keys of a view are looked up one by one.
    pub batchable: bool,
    /// The lookups by primary key, built once (empty without a primary key).
    primary_key_sql: (String, String),
    /// The table's figures for PGCACHE.STATS, shared by every schema of the table.
    pub stats: Arc<crate::stats::TableStats>,
    /// The tables whose rows a change to this one changes as well, quoted: its partition
    /// and inheritance ancestors (a read of a parent reads its children's rows), and, for
    /// a partitioned table, every partition below it (a change reported under the root,
    /// `publish_via_partition_root`, is a change of one of them).
    pub related: Vec<String>,
    /// UNLOGGED: PostgreSQL's log never holds its changes.
    pub unlogged: bool,
    /// Its oid when it was read.
    pub oid: u32,
    /// Row-level security applies to pgcache's role on it: what a read returns depends on
    /// its policies, and on whatever they read.
    pub row_security: bool,
    /// Why its rows are never cached, if they are not: DDL that no change reports could
    /// change them (a view replaced, a partition or child created) and DDL is not followed
    /// (`DDL_FOLLOWED_SQL`, when the table was read). Its reads are answered by PostgreSQL.
    pub uncached: Option<String>,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The key parameters for a canonical key's columns, in the same order.
    pub fn key_params<'a>(&'a self, columns: &'a [KeyColumn]) -> Vec<KeyParam<'a>> {
        columns
            .iter()
            .map(|(name, _)| KeyParam {
                column: name,
                cast_type: &self
                    .column(name)
                    .expect("canonical keys name real columns")
                    .cast_type,
            })
            .collect()
    }

    fn is_primary_key(&self, columns: &[KeyColumn]) -> bool {
        !self.primary_key.is_empty()
            && columns.len() == self.primary_key.len()
            && columns
                .iter()
                .zip(&self.primary_key)
                .all(|((c, _), p)| c == p)
    }

    pub fn select_one_sql(&self, columns: &[KeyColumn]) -> Cow<'_, str> {
        if self.is_primary_key(columns) {
            Cow::Borrowed(&self.primary_key_sql.0)
        } else {
            let keys = self.key_params(columns);
            Cow::Owned(query::select_one(&self.sql_name, &keys))
        }
    }

    /// What a lookup's run must undo of its session (`pg::undo`): a view, or a row-level
    /// security policy, may call functions of the database's own; a table's lookup calls
    /// none. (`batchable` is false for views alone.)
    pub fn effects(&self) -> Effects {
        if self.batchable && !self.row_security {
            Effects::None
        } else {
            Effects::Undone
        }
    }

    pub fn select_many_sql(&self, columns: &[KeyColumn]) -> Cow<'_, str> {
        if self.is_primary_key(columns) {
            Cow::Borrowed(&self.primary_key_sql.1)
        } else {
            let keys = self.key_params(columns);
            Cow::Owned(query::select_many(&self.sql_name, &keys))
        }
    }
}

#[cfg(test)]
impl TableSchema {
    /// A schema as the catalog would describe a table in `public`.
    pub fn for_tests(
        name: &str,
        columns: Vec<Column>,
        mut primary_key: Vec<String>,
    ) -> TableSchema {
        primary_key.sort();
        let name = QualifiedName {
            schema: "public".into(),
            name: name.into(),
        };
        TableSchema {
            source: SourceId::DEFAULT,
            stats: crate::stats::of(SourceId::DEFAULT).table(&name.display()),
            display: name.display(),
            sql_name: name.quoted(),
            key_prefix: cache_key("pg_cache:", &name.display(), ""),
            name,
            columns,
            primary_key,
            primary_key_sql: (String::new(), String::new()),
            batchable: true,
            related: Vec::new(),
            unlogged: false,
            oid: 0,
            row_security: false,
            uncached: None,
        }
    }
}

impl KeyColumns for TableSchema {
    fn kind_of(&self, column: &str) -> Option<KeyKind> {
        self.column(column).map(|c| c.kind)
    }
    fn required(&self) -> Option<&[String]> {
        (!self.primary_key.is_empty()).then_some(self.primary_key.as_slice())
    }
    fn table_name(&self) -> &str {
        &self.display
    }
}

/// Whether pgcache's DDL event trigger (examples/ddl_trigger.sql) is installed and enabled:
/// DDL reaches the cache through its feed, in commit order.
pub const DDL_FOLLOWED_SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger \
     WHERE evtname = 'pgcache_ddl' AND evtenabled <> 'D')";

/// Schemas pgcache never reads, whatever the allowlist says.
pub fn is_system_schema(schema: &str) -> bool {
    matches!(schema, "pg_catalog" | "information_schema" | "pg_toast")
        || schema.starts_with("pg_temp")
        || schema.starts_with("pg_toast_temp")
}

/// Why an unlogged table is not served in replication mode.
pub fn unlogged(display: &str) -> Error {
    Error::invalid(format!(
        "table {display} is UNLOGGED: PostgreSQL writes none of its changes to the log, so \
         the replication feed never sees them; make it logged (ALTER TABLE ... SET LOGGED) \
         or run pgcache with invalidation_source notify"
    ))
}

fn not_allowed(name: &QualifiedName) -> Error {
    Error::invalid(format!(
        "table {} is not in the pgcache.tables allowlist",
        name.display()
    ))
}

/// Most table spellings remembered. Every spelling a client sends (`Users`, `public.users`,
/// `PUBLIC.USERS`, ...) gets its own entry, so the hit path finds a table without parsing
/// its name; past this many, the spellings other than tables' display names are forgotten
/// (they come back, one catalog-free lookup each, when used again).
pub const MAX_SPELLINGS: usize = 1024;

/// A fast hasher for the hit path's lookup of short table names (FxHash's mixing step):
/// the map is bounded and its keys are not secret, so SipHash's flood resistance buys
/// nothing there.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Spellings = HashMap<Box<[u8]>, Arc<TableSchema>, std::hash::BuildHasherDefault<FxHasher>>;

/// Schemas by a name. Most deployments have a handful of tables, and comparing a few names
/// is cheaper on the hit path than hashing one; past `FEW` a map is used.
enum Lookup {
    Few(Vec<(Box<[u8]>, Arc<TableSchema>)>),
    Many(Arc<Spellings>),
}

const FEW: usize = 8;

impl Lookup {
    fn of(map: Arc<Spellings>) -> Lookup {
        if map.len() > FEW {
            return Lookup::Many(map);
        }
        Lookup::Few(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    #[inline]
    fn get(&self, name: &[u8]) -> Option<&Arc<TableSchema>> {
        match self {
            Lookup::Few(names) => names.iter().find(|(k, _)| **k == *name).map(|(_, v)| v),
            Lookup::Many(map) => map.get(name),
        }
    }
}

/// A thread's view of the cache: schemas by the table argument as clients spell it, and by
/// the entry prefix of their cache keys (`<cache_prefix><table>:`), for PGCACHE.GET.
struct View {
    spellings: Lookup,
    entry_prefixes: Lookup,
}

impl View {
    const EMPTY: View = View {
        spellings: Lookup::Few(Vec::new()),
        entry_prefixes: Lookup::Few(Vec::new()),
    };

    fn of(cache: Option<&Arc<Spellings>>) -> View {
        let Some(spellings) = cache else {
            return View::EMPTY;
        };
        let entry_prefixes: Spellings = spellings
            .values()
            .map(|s| (s.key_prefix.as_bytes().into(), s.clone()))
            .collect();
        View {
            spellings: Lookup::of(spellings.clone()),
            entry_prefixes: Lookup::of(Arc::new(entry_prefixes)),
        }
    }
}

/// Every source's table descriptions; the default source's inline, so the hit path reaches
/// them as it reached the statics before.
static SCHEMAS: Parts<Schemas> = Parts::new(Schemas::new(SourceId::DEFAULT));

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    SCHEMAS.install(id, Schemas::new(id));
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    SCHEMAS.forget_named(id);
}

/// The table descriptions of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Schemas> {
    SCHEMAS.of(id)
}

/// One source's table descriptions: the same name in two databases is two tables, and
/// oids collide across databases, so nothing here is shared between sources.
pub struct Schemas {
    /// Whose tables these are: what their schemas carry, and whose allowlist admits them.
    source: SourceId,
    /// Keyed by the table argument exactly as clients send it. Replaced whole on every
    /// change (copy on write, bounded by MAX_SPELLINGS), so readers share it without
    /// copying.
    cache: RwLock<Option<Arc<Spellings>>>,
    /// Set to a new `GENERATIONS` number on every change of `cache`; 0 while it was never
    /// changed (empty). Threads keep a snapshot and refresh it when this moves.
    generation: AtomicU64,
    /// Bumped (under the cache's locks) whenever descriptions are dropped: one read from
    /// the catalog before then is not kept (`remember`).
    clears: AtomicU64,
    /// The ancestors (partitioned parents, inheritance parents) every table was seen with,
    /// by the table as PostgreSQL's `quote_ident` spells it (`public.meas_2024`). Kept
    /// through clears of the descriptions: a dropped partition is reported after the
    /// catalog forgot its parent, whose rows were its own. Bounded: past `MOST_ANCESTRIES`
    /// tables it starts over.
    ancestors: Mutex<Option<HashMap<String, Vec<String>>>>,
    /// Schemas of tables outside the allowlist, which the change feed and the tables a
    /// QUERY reads only for their changes (partitions, tables a policy reads) still need:
    /// never consulted by a read of a table. Bounded like the spellings; cleared with them.
    unlisted: Mutex<Vec<Arc<TableSchema>>>,
}

/// Numbers every change of any source's descriptions, so that a generation names one
/// state of one `Schemas`: a thread's snapshot, built at a generation, is of that source's
/// descriptions and current while that source's generation is still the same.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

const MOST_ANCESTRIES: usize = 100_000;

thread_local! {
    // The hit path runs on the main thread for every request: the cache read without locks
    // or shared-counter traffic (one relaxed load to see whether the view is current). One
    // view: of the source last read on this thread (design/53 step 7 keeps one per source).
    static SNAPSHOT: RefCell<(u64, View)> = const { RefCell::new((0, View::EMPTY)) };
}

impl Schemas {
    /// No table described yet (const, so a `static` holds the default source's).
    pub const fn new(source: SourceId) -> Schemas {
        Schemas {
            source,
            cache: RwLock::new(None),
            generation: AtomicU64::new(0),
            clears: AtomicU64::new(0),
            ancestors: Mutex::new(None),
            unlisted: Mutex::new(Vec::new()),
        }
    }

    /// The `<table>` argument as a client sent it, checked to be UTF-8 and admitted
    /// (`admit`).
    pub fn admit_arg(&self, table_arg: &[u8]) -> Result<String> {
        let table = std::str::from_utf8(table_arg)
            .map_err(|_| Error::invalid("table name is not valid UTF-8"))?;
        self.admit(table)?;
        Ok(table.to_string())
    }

    /// Checks a table argument before asking the catalog: syntax, system schemas, the
    /// source's allowlist.
    pub fn admit(&self, table_arg: &str) -> Result<QualifiedName> {
        let name = parse_table(table_arg)?;
        crate::model::key::brace_free("table", &name.display())?;
        if is_system_schema(&name.schema) {
            return Err(Error::invalid(format!(
                "{} is in a system schema; pgcache never reads pg_catalog or information_schema",
                name.display()
            )));
        }
        if !current::of(self.source).table_allowed(&name) {
            return Err(not_allowed(&name));
        }
        Ok(name)
    }

    /// Calls `f` with the cached schema for a table argument (None if not resolved yet).
    #[inline]
    pub fn with_cached<R>(
        &self,
        table_arg: &[u8],
        f: impl FnOnce(Option<&Arc<TableSchema>>) -> R,
    ) -> R {
        self.with_view(|view| f(view.spellings.get(table_arg)))
    }

    /// Calls `f` with the cached schema a cache key belongs to (its entry prefix,
    /// `<cache_prefix><table>:`, is followed by the pk's opening brace), if one is cached.
    #[inline]
    pub fn with_key_owner<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&Arc<TableSchema>>) -> R,
    ) -> R {
        self.with_view(|view| match &view.entry_prefixes {
            // A handful of tables: compare their prefixes with the key's start.
            Lookup::Few(prefixes) => f(prefixes
                .iter()
                .find(|(p, _)| key.get(p.len()) == Some(&b'{') && key.starts_with(p))
                .map(|(_, schema)| schema)),
            // Many: the prefix ends before the key's first brace (prefixes and table names
            // hold none).
            Lookup::Many(map) => f(key
                .iter()
                .position(|&b| b == b'{')
                .and_then(|brace| map.get(&key[..brace]))),
        })
    }

    /// `try_with`, not `with_borrow_mut`: its closure then inlines into the hit path, where
    /// `with_borrow_mut`'s stayed a call of its own (+34 instructions a PGCACHE.GET hit,
    /// measured at #53 step 3).
    #[inline]
    fn with_view<R>(&self, f: impl FnOnce(&View) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        SNAPSHOT
            .try_with(|snapshot| {
                let (seen, view) = &mut *snapshot.borrow_mut();
                if *seen != generation {
                    *view = self.view();
                    *seen = generation;
                }
                f(view)
            })
            .expect("a thread reads its snapshot only while it lives")
    }

    /// A thread's view of the descriptions as they are now. Out of line: the hit path
    /// inlines `with_view`, which rebuilds its view only after a change.
    #[cold]
    #[inline(never)]
    fn view(&self) -> View {
        View::of(self.cache.read().unwrap().as_ref())
    }

    /// The cached schema for a table argument, if it was resolved before.
    pub fn cached(&self, table_arg: &[u8]) -> Option<Arc<TableSchema>> {
        self.with_cached(table_arg, |s| s.cloned())
    }

    /// Replaces the cache with `change` applied to a copy of it.
    fn update(&self, change: impl FnOnce(&mut Spellings)) {
        let mut guard = self.cache.write().unwrap();
        let mut spellings: Spellings = guard.as_deref().cloned().unwrap_or_default();
        change(&mut spellings);
        *guard = Some(Arc::new(spellings));
        self.changed();
    }

    /// A new generation for a change of the cache, set while its lock is held (so that
    /// generations follow changes in order).
    fn changed(&self) {
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Release);
    }

    /// Forgets every description (DDL, a new allowlist, unload).
    pub fn clear(&self) {
        let mut cache = self.cache.write().unwrap();
        let mut unlisted = self.unlisted.lock().unwrap();
        *cache = None;
        unlisted.clear();
        self.clears.fetch_add(1, Ordering::SeqCst);
        drop(unlisted);
        self.changed();
    }

    /// Forgets one table, under every spelling it was cached as.
    pub fn forget(&self, name: &QualifiedName) {
        let mut unlisted = self.unlisted.lock().unwrap();
        unlisted.retain(|schema| schema.name != *name);
        self.clears.fetch_add(1, Ordering::SeqCst);
        drop(unlisted);
        self.update(|spellings| spellings.retain(|_, schema| schema.name != *name));
    }

    /// A table already known under another spelling (no catalog query for a new spelling).
    fn known(&self, name: &QualifiedName) -> Option<Arc<TableSchema>> {
        let guard = self.cache.read().unwrap();
        let spellings = guard.as_ref()?;
        spellings
            .get(name.display().as_bytes())
            .filter(|schema| schema.name == *name)
            .cloned()
    }

    /// Remembers `schema` under `table_arg`, if the allowlist still admits it; whether it
    /// does. The check runs under the cache's lock: a CONFIG SET of `tables` installs the
    /// new list before it clears the cache, so a schema admitted under the old list and
    /// stored after the change would otherwise stay readable until the next clear.
    /// A schema read before the descriptions were last cleared (DDL) is not kept: it may
    /// describe the table as it was (`clears`: `clears` when it was read).
    fn remember(&self, table_arg: &str, schema: Arc<TableSchema>, clears: u64) -> bool {
        let mut admitted = false;
        self.update(|spellings| {
            admitted = current::of(self.source).table_allowed(&schema.name);
            if !admitted || self.clears.load(Ordering::SeqCst) != clears {
                return;
            }
            if spellings.len() + 2 > MAX_SPELLINGS {
                spellings.retain(|spelling, schema| **spelling == *schema.display.as_bytes());
            }
            spellings.insert(table_arg.as_bytes().into(), schema.clone());
            spellings.insert(schema.display.as_bytes().into(), schema);
        });
        admitted
    }

    /// Notes the ancestors of `table`, and that its descendants have it and them as theirs.
    fn remember_ancestors(&self, table: &str, ancestors: &[String], descendants: &[String]) {
        let mut guard = self.ancestors.lock().unwrap();
        let map = guard.get_or_insert_with(HashMap::new);
        if map.len() > MOST_ANCESTRIES {
            map.clear();
        }
        let mut add = |child: &str, parents: &mut dyn Iterator<Item = &String>| {
            let known = map.entry(child.to_string()).or_default();
            for parent in parents {
                if !known.contains(parent) {
                    known.push(parent.clone());
                }
            }
        };
        add(table, &mut ancestors.iter());
        let mut with_table = ancestors.to_vec();
        with_table.push(table.to_string());
        for descendant in descendants {
            add(descendant, &mut with_table.iter());
        }
    }

    /// The ancestors `quoted` (as `quote_ident` spells it) was ever seen with.
    pub fn ancestors_seen(&self, quoted: &str) -> Vec<String> {
        self.ancestors
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|map| map.get(quoted).cloned())
            .unwrap_or_default()
    }

    /// The cached tables that row-level security applies to.
    pub fn with_row_security(&self) -> Vec<Arc<TableSchema>> {
        let guard = self.cache.read().unwrap();
        let unlisted = self.unlisted.lock().unwrap();
        let mut found: Vec<Arc<TableSchema>> = Vec::new();
        for schema in guard
            .iter()
            .flat_map(|spellings| spellings.values())
            .chain(unlisted.iter())
        {
            if schema.row_security && !found.iter().any(|f| f.name == schema.name) {
                found.push(schema.clone());
            }
        }
        found
    }

    /// The tables (not views) whose schemas are cached: the ones pgcache serves or follows.
    pub fn served_tables(&self) -> Vec<QualifiedName> {
        let guard = self.cache.read().unwrap();
        let unlisted = self.unlisted.lock().unwrap();
        let mut names: Vec<QualifiedName> = guard
            .iter()
            .flat_map(|spellings| spellings.values())
            // Tables read only for their changes (a QUERY's partitions, the tables policies
            // read) need the feed as much.
            .chain(unlisted.iter())
            .filter(|schema| schema.batchable)
            .map(|schema| schema.name.clone())
            .collect();
        names.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        names.dedup();
        names
    }

    /// How many spellings are remembered (bounded by MAX_SPELLINGS).
    pub fn remembered(&self) -> usize {
        self.cache.read().unwrap().as_ref().map_or(0, |s| s.len())
    }

    /// The schema of `table_arg`, from the cache or the catalog, read on `client` (a
    /// connection to this source's database). Worker threads only.
    pub fn resolve(&self, client: &mut Connection, table_arg: &str) -> Result<Arc<TableSchema>> {
        if let Some(schema) = self.cached(table_arg.as_bytes()) {
            return Ok(schema);
        }
        let name = self.admit(table_arg)?;
        let clears = self.clears.load(Ordering::SeqCst);
        let schema = match self.known(&name) {
            Some(schema) => schema,
            None => Arc::new(self.load(client, name)?),
        };
        if schema.unlogged && !current::of(self.source).feed_is_notify() {
            return Err(unlogged(&schema.display));
        }
        if !self.remember(table_arg, schema.clone(), clears) {
            return Err(not_allowed(&schema.name));
        }
        Ok(schema)
    }

    /// The schema of `table_arg` whatever the allowlist says (system schemas aside): what
    /// following its changes needs. Worker threads only.
    pub fn resolve_any(
        &self,
        client: &mut Connection,
        table_arg: &str,
    ) -> Result<Arc<TableSchema>> {
        if let Some(schema) = self.cached(table_arg.as_bytes()) {
            return Ok(schema);
        }
        let name = parse_table(table_arg)?;
        if current::of(self.source).table_allowed(&name) {
            return self.resolve(client, table_arg);
        }
        if is_system_schema(&name.schema) {
            return Err(Error::invalid(format!(
                "{} is in a system schema; pgcache never reads pg_catalog or information_schema",
                name.display()
            )));
        }
        let clears = self.clears.load(Ordering::SeqCst);
        if let Some(schema) = self
            .unlisted
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.name == name)
            .cloned()
        {
            return Ok(schema);
        }
        let schema = Arc::new(self.load(client, name)?);
        let mut unlisted = self.unlisted.lock().unwrap();
        if unlisted.len() >= MAX_SPELLINGS {
            unlisted.clear();
        }
        if self.clears.load(Ordering::SeqCst) == clears {
            unlisted.push(schema.clone());
        }
        Ok(schema)
    }
}

const RELATION_SQL: &str = "SELECT c.oid, c.relkind::text, c.relpersistence = 'u', \
       c.relrowsecurity AND pg_catalog.row_security_active(c.oid), \
       pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2";

/// A table's ancestors through pg_inherits (partitions and inheritance alike), and, for a
/// partitioned table, every partition below it, quoted, each saying whether it is an
/// ancestor.
const RELATED_SQL: &str = "WITH RECURSIVE up(oid) AS ( \
         SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = $1 \
       UNION \
         SELECT i.inhparent FROM up JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.oid \
     ), down(oid) AS ( \
         SELECT i.inhrelid FROM pg_catalog.pg_inherits i \
         JOIN pg_catalog.pg_class p ON p.oid = i.inhparent \
         WHERE i.inhparent = $1 AND p.relkind = 'p' \
       UNION \
         SELECT i.inhrelid FROM down JOIN pg_catalog.pg_inherits i ON i.inhparent = down.oid \
     ) \
     SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), \
            r.up \
     FROM (SELECT oid, true AS up FROM up UNION SELECT oid, false FROM down) AS r \
     JOIN pg_catalog.pg_class c ON c.oid = r.oid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1";

/// The first system object `$1` reads, if any: following views (and materialized views)
/// through their rewrite rules, every relation and function their definitions use, and the
/// relation itself. The rules' stored query trees are read rather than pg_depend, which
/// records no dependency on the objects initdb created (`pg_authid`, `pg_stat_get_activity`). System objects are the relations in the system schemas, the relations and
/// set-returning functions an extension installed (`pg_stat_statements` is a view over such a
/// function, in `public`), and the system schemas' functions through which a view reads the
/// same data: their set-returning `pg_*` ones (`pg_stat_get_activity`, `pg_ls_dir`,
/// `pg_show_all_settings`) and every `pg_stat_*`, `pg_get_*`, `pg_read_*` and `pg_ls_*` one
/// (`pg_get_userbyid`, `pg_read_file`). Scalar extension functions (PostGIS's
/// `ST_AsGeoJSON`), ordinary built-ins (`lower`, `now`, `count`) and harmless `pg_*` ones
/// (`pg_sleep`, `pg_typeof`, `pg_size_pretty`) stay usable in views.
const SYSTEM_READ_SQL: &str = "WITH RECURSIVE reads(relid) AS ( \
         SELECT $1::pg_catalog.oid \
       UNION \
         SELECT m[1]::pg_catalog.oid FROM reads r \
         JOIN pg_catalog.pg_rewrite w ON w.ev_class = r.relid, \
         LATERAL pg_catalog.regexp_matches(w.ev_action::text, ':relid ([0-9]+)', 'g') AS m \
     ), used(classid, objid) AS ( \
         SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, relid FROM reads \
       UNION \
         SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid, m[2]::pg_catalog.oid \
         FROM reads r \
         JOIN pg_catalog.pg_rewrite w ON w.ev_class = r.relid, \
         LATERAL pg_catalog.regexp_matches(w.ev_action::text, \
                 ':(funcid|opfuncid|aggfnoid|winfnoid) ([0-9]+)', 'g') AS m \
     ), named(classid, objid, schema, name, what, returns_rows) AS ( \
         SELECT u.classid, u.objid, n.nspname::text, c.relname::text, 'relation', true \
         FROM used u \
         JOIN pg_catalog.pg_class c ON c.oid = u.objid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE u.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
       UNION ALL \
         SELECT u.classid, u.objid, n.nspname::text, p.proname::text, 'function', p.proretset \
         FROM used u \
         JOIN pg_catalog.pg_proc p ON p.oid = u.objid \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE u.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
     ) \
     SELECT what || ' ' || pg_catalog.quote_ident(schema) || '.' || pg_catalog.quote_ident(name) \
     FROM named \
     WHERE (what = 'relation' AND (schema IN ('pg_catalog', 'information_schema') \
                                   OR schema LIKE 'pg\\_toast%' OR schema LIKE 'pg\\_temp%')) \
        OR (what = 'function' AND schema IN ('pg_catalog', 'information_schema') \
            AND ((returns_rows AND (name LIKE 'pg\\_%' OR name LIKE '\\_pg\\_%')) \
                 OR name LIKE 'pg\\_stat\\_%' OR name LIKE 'pg\\_get\\_%' \
                 OR name LIKE 'pg\\_read\\_%' OR name LIKE 'pg\\_ls\\_%')) \
        OR (returns_rows AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend e \
                   WHERE e.classid = named.classid AND e.objid = named.objid AND e.deptype = 'e')) \
     ORDER BY what DESC, schema, name LIMIT 1";

/// SQL for the type a text parameter is cast to, for the type `$oid` of `pg_type` row `$t`:
/// its `format_type`, but for the types whose name without a length means a length of 1 in a
/// cast, which cuts a longer value short: bpchar and its array (`{"ab"}::character[]` is
/// `{a}`), the unbounded `bpchar`, `bpchar[]`; bit and its array (`'1111'::bit` is `1`),
/// `bit varying`, which keeps every bit and compares with a `bit(n)` as the value would.
macro_rules! cast_type_sql {
    ($t:literal, $oid:literal) => {
        concat!(
            "CASE ",
            $t,
            ".typname WHEN 'bpchar' THEN 'bpchar' WHEN '_bpchar' THEN 'bpchar[]' \
             WHEN 'bit' THEN 'bit varying' WHEN '_bit' THEN 'bit varying[]' \
             ELSE pg_catalog.format_type(",
            $oid,
            ", NULL) END"
        )
    };
}
pub(crate) use cast_type_sql;

const COLUMNS_SQL: &str = concat!(
    "SELECT a.attname::text, ",
    cast_type_sql!("t", "a.atttypid"),
    ", \
       CASE WHEN t.typtype = 'd' THEN bt.typname::text ELSE t.typname::text END, \
       COALESCE(a.attnum = ANY(i.indkey), false), \
       (CASE WHEN t.typtype = 'd' THEN bt.typtype ELSE t.typtype END) = 'e', \
       (CASE WHEN t.typtype = 'd' THEN bt.typtype ELSE t.typtype END) IN ('c', 'd') \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
     LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype \
     LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum"
);

impl Schemas {
    /// Table `name` as the catalog describes it now, read on `client`.
    fn load(&self, client: &mut Connection, name: QualifiedName) -> Result<TableSchema> {
        let display = name.display();
        let failed = |e: Failure| catalog_error(&e, &display);
        let rows = client
            .query(RELATION_SQL, &[&name.schema, &name.name])
            .map_err(failed)?;
        let Some(row) = rows.first() else {
            return Err(Error::invalid(format!(
                "table {} does not exist",
                name.display()
            )));
        };
        let oid: tokio_postgres::types::Oid = row.get(0);
        let relkind: String = row.get(1);
        let unlogged: bool = row.get(2);
        let row_security: bool = row.get(3);
        let quoted: String = row.get(4);
        if !matches!(relkind.as_str(), "r" | "p" | "v" | "m" | "f") {
            return Err(Error::invalid(format!(
                "{} is not a table or view",
                name.display()
            )));
        }
        // Naming the relation in the allowlist is the administrator's explicit consent.
        if !current::of(self.source).table_listed(&name)
            && let Some(row) = client
                .query(SYSTEM_READ_SQL, &[&oid])
                .map_err(failed)?
                .first()
        {
            let system_object: String = row.get(0);
            return Err(Error::invalid(format!(
                "{} reads the {system_object}; pgcache serves no system catalogs or extension \
             objects, not even through a view: cache a table or a view over your own tables, \
             or name this one in the pgcache.tables allowlist to serve it anyway",
                name.display()
            )));
        }
        let mut columns = Vec::new();
        let mut primary_key = Vec::new();
        for row in client.query(COLUMNS_SQL, &[&oid]).map_err(failed)? {
            let column: String = row.get(0);
            let type_name: String = row.get(2);
            if row.get::<_, bool>(3) {
                primary_key.push(column.clone());
            }
            columns.push(Column {
                name: column,
                cast_type: row.get(1),
                kind: column_kind(&type_name, row.get(4)),
                // A domain over a domain is taken for one over a composite: not looked into.
                row_valued: row.get(5),
            });
        }
        primary_key.sort();
        let mut related: Vec<String> = Vec::new();
        let mut ancestors: Vec<String> = Vec::new();
        let mut descendants: Vec<String> = Vec::new();
        for row in client.query(RELATED_SQL, &[&oid]).map_err(failed)? {
            let quoted: String = row.get(0);
            if row.get::<_, bool>(1) {
                ancestors.push(quoted.clone());
            } else {
                descendants.push(quoted.clone());
            }
            related.push(quoted);
        }
        self.remember_ancestors(&quoted, &ancestors, &descendants);
        // What DDL alone changes: a view's or a materialized view's rows (replaced, refreshed),
        // a partitioned table's or a parent's (a partition or child created).
        let ddl_shaped = matches!(relkind.as_str(), "v" | "m" | "p") || !descendants.is_empty();
        let uncached = if ddl_shaped
            && !client
                .query(DDL_FOLLOWED_SQL, &[])
                .map_err(failed)?
                .first()
                .is_some_and(|r| r.get(0))
        {
            Some(format!(
                "{} is a view, a partitioned table or a parent, whose rows DDL could change \
             unseen, and DDL is not followed (run examples/ddl_trigger.sql as a superuser)",
                name.display()
            ))
        } else {
            None
        };
        let display = name.display();
        let mut schema = TableSchema {
            source: self.source,
            stats: crate::stats::of(self.source).table(&display),
            sql_name: name.quoted(),
            key_prefix: cache_key(&current::key_prefix(self.source), &display, ""),
            display,
            name,
            columns,
            primary_key,
            primary_key_sql: (String::new(), String::new()),
            batchable: relkind != "v",
            related,
            unlogged,
            oid,
            row_security,
            uncached,
        };
        if !schema.primary_key.is_empty() {
            let pk: Vec<KeyColumn> = schema
                .primary_key
                .iter()
                .map(|c| (c.into(), Default::default()))
                .collect();
            let params = schema.key_params(&pk);
            schema.primary_key_sql = (
                query::select_one(&schema.sql_name, &params),
                query::select_many(&schema.sql_name, &params),
            );
        }
        Ok(schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_schemas_are_refused() {
        for s in ["pg_catalog", "information_schema", "pg_toast", "pg_temp_3"] {
            assert!(is_system_schema(s), "{s}");
        }
        assert!(!is_system_schema("public"));
        assert!(
            of(SourceId::DEFAULT)
                .admit("pg_catalog.pg_authid")
                .unwrap_err()
                .message()
                .contains("system schema")
        );
        assert!(
            of(SourceId::DEFAULT)
                .admit("information_schema.tables")
                .is_err()
        );
    }
}
