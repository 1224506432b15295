//! The current values of the settings the hit path, the workers and the commands read, held
//! where they read them without locks (atomics), or behind a lock that only misses and events
//! take. `module::parameters` installs them at load and on every CONFIG SET; their defaults are the
//! table's (`config::table`), so the zeros here are never read.
//!
//! Most settings belong to a source (design/53 §1.1): each source has its own `Values`, reached
//! by its number (`of`). The few that are the server's (one deadline thread, one default hook
//! channel, one key root) stay free functions.

use crate::config::{InvalidationSource, Settings};
use crate::error::Error;
use crate::model::event::EventMask;
use crate::model::ident::QualifiedName;
use crate::model::pass_through::Policy;
use crate::model::source::{self, PartRef, Parts, Scope, SourceId};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

static REQUEST_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);
static MULTIREAD_MAX: AtomicU64 = AtomicU64::new(0);
static EVENTS: AtomicU32 = AtomicU32::new(0);
static EVENT_CHANNEL: RwLock<String> = RwLock::new(String::new());
static CACHE_PREFIX: RwLock<String> = RwLock::new(String::new());

/// Every source's settings; the default source's inline, so reading one costs the hit path
/// what reading a static did.
static VALUES: Parts<Values> = Parts::new(Values::new());

/// The settings of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Values> {
    VALUES.of(id)
}

/// Installs the values of `s`: the server's, and the default source's (a named source's come
/// with `add_named`).
pub fn init(s: &Settings) {
    REQUEST_TIMEOUT_MS.store(s.request_timeout_ms, Relaxed);
    MULTIREAD_MAX.store(s.multiread_max as u64, Relaxed);
    EVENTS.store(s.events.0, Relaxed);
    *EVENT_CHANNEL.write().unwrap() = s.event_channel.clone();
    *CACHE_PREFIX.write().unwrap() = s.cache_prefix.clone();
    of(SourceId::DEFAULT).install(s);
}

pub fn request_timeout_ms() -> u64 {
    REQUEST_TIMEOUT_MS.load(Relaxed)
}
pub fn multiread_max() -> usize {
    MULTIREAD_MAX.load(Relaxed) as usize
}
pub fn events() -> EventMask {
    EventMask(EVENTS.load(Relaxed))
}
pub fn event_channel() -> String {
    with_event_channel(str::to_string)
}
/// `f` of the event channel's name, without copying it (every miss publishes on it).
pub fn with_event_channel<R>(f: impl FnOnce(&str) -> R) -> R {
    f(&EVENT_CHANNEL.read().unwrap())
}
/// The key root of every source (`key_prefix` and `scope` build a source's keys on it):
/// taken as is only where a key under any source is meant (a test keeps it so:
/// `cache_prefix_only_where_every_source_is_meant`).
pub fn cache_prefix() -> String {
    CACHE_PREFIX.read().unwrap().clone()
}

/// Named sources' names, at their number minus one (`None` where one was removed). A number
/// is not handed out again while the module is loaded: a job, a token or a statement still
/// carrying an old one must not reach another source's parts.
static NAMES: RwLock<Vec<Option<Named>>> = RwLock::new(Vec::new());

struct Named {
    name: String,
    /// False once PGCACHE.SOURCE DEL stopped it: its name no longer resolves, but its number
    /// keeps it (and its parts), so that what still carries the number writes only its own
    /// keys (`@<name>:`) and finds a part, never the default source's.
    served: bool,
}

/// Registers the named source `name` with its settings `s` and returns its number, not
/// served yet: its other layers' parts are installed by `source::parts`, then `serve_named`
/// lists it and lets its name resolve. Numbers are not reused within a load, so they can run
/// out (65,535 sources added, changed or removed).
pub fn add_named(name: &str, s: &Settings) -> Result<SourceId, Error> {
    let mut names = NAMES.write().unwrap();
    let number = u16::try_from(names.len() + 1).map_err(|_| {
        Error::invalid(
            "65,535 sources were added, changed or removed since pgcache was loaded: a source's \
             number is not reused while the module is loaded; MODULE UNLOAD and LOAD it (or \
             restart the server) to add more",
        )
    })?;
    names.push(Some(Named {
        name: name.to_string(),
        served: false,
    }));
    let id = SourceId::numbered(number);
    VALUES.install(id, Values::new());
    of(id).install(s);
    Ok(id)
}

/// Serves named source `id`, whose parts are all installed: its name resolves and it is
/// listed.
pub fn serve_named(id: SourceId) {
    if let Some(Some(named)) = NAMES.write().unwrap().get_mut(usize::from(id.number()) - 1) {
        named.served = true;
    }
}

/// Stops serving named source `id` (PGCACHE.SOURCE DEL, or a failed ADD): its name no longer
/// resolves and it is not listed; its number, name and settings stay until unload.
pub fn retire_named(id: SourceId) {
    let mut names = NAMES.write().unwrap();
    if let Some(Some(named)) = names.get_mut(usize::from(id.number()) - 1) {
        named.served = false;
    }
}

/// Every named source's number, served or retired (what unload forgets).
pub fn numbered_ids() -> Vec<SourceId> {
    let names = NAMES.read().unwrap();
    (names.iter().enumerate())
        .filter(|(_, name)| name.is_some())
        .map(|(at, _)| SourceId::numbered(at as u16 + 1))
        .collect()
}

/// Forgets named source `id`: its name no longer resolves, its settings are dropped.
pub fn remove_named(id: SourceId) {
    if let Some(name) = NAMES.write().unwrap().get_mut(usize::from(id.number()) - 1) {
        *name = None;
    }
    VALUES.forget_named(id);
}

/// Forgets every named source's number, once all are removed (at unload): a module loaded
/// again numbers its sources from 1.
pub fn forget_named_numbers() {
    NAMES.write().unwrap().clear();
}

/// The named sources served, in the order they were added.
pub fn named_ids() -> Vec<SourceId> {
    let names = NAMES.read().unwrap();
    (names.iter().enumerate())
        .filter(|(_, name)| name.as_ref().is_some_and(|n| n.served))
        .map(|(at, _)| SourceId::numbered(at as u16 + 1))
        .collect()
}

/// Whether named source `source` is no longer served (removed, or changed by a SET, which
/// serves it under a new number): what its jobs still running fetch answers no one asking
/// under its name now. The default source is never retired.
pub fn retired(source: SourceId) -> bool {
    if source == SourceId::DEFAULT {
        return false;
    }
    let names = NAMES.read().unwrap();
    !(names.get(usize::from(source.number()) - 1))
        .is_some_and(|named| named.as_ref().is_some_and(|n| n.served))
}

/// The name of `source`; None for the default source (it has none).
pub fn name(source: SourceId) -> Option<String> {
    if source == SourceId::DEFAULT {
        return None;
    }
    let names = NAMES.read().unwrap();
    let named = names.get(usize::from(source.number()) - 1)?.as_ref()?;
    Some(named.name.clone())
}

/// Where the keys of `source` start: the cache prefix for the default source, then
/// `@<name>:` for a named one (design/53 §0.2).
pub fn key_prefix(source: SourceId) -> String {
    source::key_prefix(&cache_prefix(), name(source).as_deref())
}

/// The source a command names with `SOURCE <name>`, or a key with its `@<name>:` segment.
pub fn named(name: &[u8]) -> Result<SourceId, Error> {
    let names = NAMES.read().unwrap();
    names
        .iter()
        .position(|n| {
            n.as_ref()
                .is_some_and(|n| n.served && n.name.as_bytes() == name)
        })
        .map(|at| SourceId::numbered(at as u16 + 1))
        .ok_or_else(|| source::unknown(name))
}

/// The source whose keys `key` is among: None when it is not a cache key, or names a source
/// not served.
pub fn source_of_key(key: &[u8]) -> Option<SourceId> {
    let prefix = CACHE_PREFIX.read().unwrap();
    let (name, _) = source::split(key.strip_prefix(prefix.as_bytes())?)?;
    match name {
        None => Some(SourceId::DEFAULT),
        Some(name) => named(name).ok(),
    }
}

/// Every key of `source`: for the default source, the cache prefix not followed by a
/// named source's `@` (a flush of everything the default source cached must spare the
/// named sources' keys nested under its prefix).
pub fn scope(source: SourceId) -> Scope {
    Scope::source(&cache_prefix(), name(source).as_deref())
}

/// One source's settings in effect.
pub struct Values {
    default_ttl: AtomicU64,
    negative_ttl: AtomicU64,
    statement_timeout_ms: AtomicU64,
    loop_connections: AtomicU64,
    after_wait_ms: AtomicU64,
    max_staleness_ms: AtomicI64,
    stale_if_error_ms: AtomicI64,
    query_max_rows: AtomicU64,
    query_max_bytes: AtomicU64,
    query_max_statements: AtomicU64,
    pass_through: AtomicU8,
    query_row_precision: AtomicBool,
    query_index_max_bytes: AtomicU64,
    tables: RwLock<Vec<QualifiedName>>,
    /// Bumped whenever the `tables` allowlist is installed, so what was checked against it
    /// can tell it is current with one load.
    tables_version: AtomicU64,
    listen: AtomicBool,
    invalidation_source: RwLock<InvalidationSource>,
    /// `invalidation_source auto` uses NOTIFY (PostgreSQL cannot stream to pgcache).
    fell_back_to_notify: AtomicBool,
}

impl Values {
    /// Zeros until `install` (const, so a `static` holds the default source's).
    pub const fn new() -> Values {
        Values {
            default_ttl: AtomicU64::new(0),
            negative_ttl: AtomicU64::new(0),
            statement_timeout_ms: AtomicU64::new(0),
            loop_connections: AtomicU64::new(0),
            after_wait_ms: AtomicU64::new(0),
            max_staleness_ms: AtomicI64::new(0),
            stale_if_error_ms: AtomicI64::new(0),
            query_max_rows: AtomicU64::new(0),
            query_max_bytes: AtomicU64::new(0),
            query_max_statements: AtomicU64::new(0),
            pass_through: AtomicU8::new(0),
            query_row_precision: AtomicBool::new(false),
            query_index_max_bytes: AtomicU64::new(0),
            tables: RwLock::new(Vec::new()),
            tables_version: AtomicU64::new(1),
            listen: AtomicBool::new(true),
            invalidation_source: RwLock::new(InvalidationSource::Auto),
            fell_back_to_notify: AtomicBool::new(false),
        }
    }

    /// Installs this source's values of `s`.
    fn install(&self, s: &Settings) {
        self.default_ttl.store(s.default_ttl, Relaxed);
        self.negative_ttl.store(s.negative_ttl, Relaxed);
        self.statement_timeout_ms
            .store(s.statement_timeout_ms, Relaxed);
        self.loop_connections
            .store(s.loop_connections as u64, Relaxed);
        self.after_wait_ms.store(s.after_wait_ms, Relaxed);
        self.max_staleness_ms.store(s.max_staleness_ms, Relaxed);
        self.stale_if_error_ms.store(s.stale_if_error_ms, Relaxed);
        self.query_max_rows.store(s.query_max_rows, Relaxed);
        self.query_max_bytes.store(s.query_max_bytes, Relaxed);
        self.query_max_statements
            .store(s.query_max_statements, Relaxed);
        // Notifications name keys, never new values: per table is all they allow.
        self.query_row_precision.store(
            s.query_row_precision && s.invalidation_source != InvalidationSource::Notify,
            Relaxed,
        );
        self.query_index_max_bytes
            .store(s.query_index_max_bytes, Relaxed);
        self.pass_through.store(s.pass_through as u8, Relaxed);
        *self.tables.write().unwrap() = s.tables.clone();
        self.tables_version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        *self.invalidation_source.write().unwrap() = s.invalidation_source;
        self.listen.store(s.listen, Relaxed);
    }

    /// Says whether `auto` fell back to NOTIFY (the replication source decides, at its start).
    pub fn fell_back_to_notify(&self, yes: bool) {
        self.fell_back_to_notify.store(yes, Relaxed);
    }

    /// Whether the change feed in use is NOTIFY: notify mode, or `auto` fallen back to it.
    /// (Until `auto` has decided, the log is assumed.)
    pub fn feed_is_notify(&self) -> bool {
        match *self.invalidation_source.read().unwrap() {
            InvalidationSource::Notify => true,
            InvalidationSource::Replication => false,
            InvalidationSource::Auto => self.fell_back_to_notify.load(Relaxed),
        }
    }

    /// The allowlist's version: it changes whenever the allowlist may have.
    pub fn tables_version(&self) -> u64 {
        self.tables_version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the invalidation listener was asked for.
    pub fn listening(&self) -> bool {
        self.listen.load(Relaxed)
    }

    /// Seconds an entry lives when the call names no TTL.
    pub fn default_ttl(&self) -> u64 {
        self.default_ttl.load(Relaxed)
    }
    /// Seconds an absent row is remembered; 0: not at all.
    pub fn negative_ttl(&self) -> u64 {
        self.negative_ttl.load(Relaxed)
    }
    /// PostgreSQL's `statement_timeout` on this source's connections, in milliseconds.
    pub fn statement_timeout_ms(&self) -> u64 {
        self.statement_timeout_ms.load(Relaxed)
    }
    /// How long a read AFTER a position not applied yet waits for it.
    pub fn after_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.after_wait_ms.load(Relaxed))
    }
    /// Longest a hit may lag PostgreSQL's commits, in milliseconds; negative: unbounded.
    #[inline]
    pub fn max_staleness_ms(&self) -> i64 {
        self.max_staleness_ms.load(Relaxed)
    }
    /// How stale a hit may be while PostgreSQL cannot be reached; negative: unbounded.
    pub fn stale_if_error_ms(&self) -> i64 {
        self.stale_if_error_ms.load(Relaxed)
    }
    /// Most rows a PGCACHE.QUERY result may have to be cached.
    pub fn query_max_rows(&self) -> u64 {
        self.query_max_rows.load(Relaxed)
    }
    /// Most bytes a PGCACHE.QUERY result may have to be cached.
    pub fn query_max_bytes(&self) -> u64 {
        self.query_max_bytes.load(Relaxed)
    }
    /// Most statement spellings PGCACHE.QUERY remembers.
    pub fn query_max_statements(&self) -> usize {
        self.query_max_statements.load(Relaxed) as usize
    }
    /// Whether statements learned now are dropped row by row where their shape allows.
    pub fn query_row_precision(&self) -> bool {
        self.query_row_precision.load(Relaxed)
    }
    /// Most bytes the row-precision index may take.
    pub fn query_index_max_bytes(&self) -> u64 {
        self.query_index_max_bytes.load(Relaxed)
    }
    /// Whether statements and tables may pass their misses through.
    pub fn pass_through(&self) -> Policy {
        match self.pass_through.load(Relaxed) {
            x if x == Policy::Always as u8 => Policy::Always,
            x if x == Policy::Never as u8 => Policy::Never,
            _ => Policy::Auto,
        }
    }

    /// Whether the allowlist (empty: everything) admits this table.
    pub fn table_allowed(&self, name: &QualifiedName) -> bool {
        let tables = self.tables.read().unwrap();
        tables.is_empty() || tables.contains(name)
    }

    /// Whether the allowlist names this table itself (not just admits everything): the
    /// administrator's explicit word that it may be served, views over system catalogs
    /// included.
    pub fn table_listed(&self, name: &QualifiedName) -> bool {
        self.tables.read().unwrap().contains(name)
    }

    /// Connections the event loop keeps to send misses on itself.
    pub fn loop_connections(&self) -> usize {
        self.loop_connections.load(Relaxed) as usize
    }
}

#[cfg(test)]
mod tests {
    use crate::source_tree::rust_files;
    use std::path::Path;

    /// Where `cache_prefix()` may be read: here, where the sources' key prefixes and scopes
    /// are built on it; the hooks, whose targets are refused under any source's keys; and
    /// the sources' key layout.
    /// Where every source is meant: the settings, hooks, keys' sources, and
    /// `PGCACHE.INVALIDATE TAG` (a tag's entries in every source).
    const ALLOWED: &[&str] = &[
        "src/config/",
        "src/events/hooks/",
        "src/model/source.rs",
        "src/commands/write.rs",
    ];

    /// A grep gate (design/53 §6.2): a site that takes the cache prefix for "the whole
    /// cache" or builds keys on it would reach every named source's keys too (nested under
    /// it), or none of a named source's own. Such sites take their source's key prefix or
    /// scope (`key_prefix`, `scope`) instead.
    #[test]
    fn cache_prefix_only_where_every_source_is_meant() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut offending = Vec::new();
        for file in rust_files() {
            let relative = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if ALLOWED.iter().any(|allowed| relative.starts_with(allowed)) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.contains("cache_prefix()") {
                    offending.push(format!("{relative}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(
            offending.is_empty(),
            "current::cache_prefix() outside {ALLOWED:?}: take the source's key prefix or \
             scope (current::key_prefix, current::scope)\n{}",
            offending.join("\n")
        );
    }
}
