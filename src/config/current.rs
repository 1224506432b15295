//! The current values of the settings the hit path, the workers and the commands read, held
//! where they read them without locks (atomics), or behind a lock that only misses and events
//! take. `module::parameters` installs them at load and on every CONFIG SET; their defaults are the
//! table's (`config::table`), so the zeros here are never read.

use crate::config::Settings;
use crate::model::event::EventMask;
use crate::model::ident::QualifiedName;
use crate::model::pass_through::Policy;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

static DEFAULT_TTL: AtomicU64 = AtomicU64::new(0);
static NEGATIVE_TTL: AtomicU64 = AtomicU64::new(0);
static REQUEST_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);
static STATEMENT_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);
static MULTIREAD_MAX: AtomicU64 = AtomicU64::new(0);
static LOOP_CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static AFTER_WAIT_MS: AtomicU64 = AtomicU64::new(0);
static MAX_STALENESS_MS: AtomicI64 = AtomicI64::new(0);
static STALE_IF_ERROR_MS: AtomicI64 = AtomicI64::new(0);
static QUERY_MAX_ROWS: AtomicU64 = AtomicU64::new(0);
static QUERY_MAX_BYTES: AtomicU64 = AtomicU64::new(0);
static QUERY_MAX_STATEMENTS: AtomicU64 = AtomicU64::new(0);
static PASS_THROUGH: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
static QUERY_ROW_PRECISION: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
static QUERY_INDEX_MAX_BYTES: AtomicU64 = AtomicU64::new(0);
static EVENTS: AtomicU32 = AtomicU32::new(0);
static EVENT_CHANNEL: RwLock<String> = RwLock::new(String::new());
static TABLES: RwLock<Vec<QualifiedName>> = RwLock::new(Vec::new());
static CACHE_PREFIX: RwLock<String> = RwLock::new(String::new());
static LISTEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
static SOURCE: RwLock<crate::config::InvalidationSource> =
    RwLock::new(crate::config::InvalidationSource::Auto);
/// Bumped whenever the `tables` allowlist is installed, so what was checked against it can
/// tell it is current with one load.
static TABLES_VERSION: AtomicU64 = AtomicU64::new(1);

/// Installs the values of `s`.
pub fn init(s: &Settings) {
    DEFAULT_TTL.store(s.default_ttl, Relaxed);
    NEGATIVE_TTL.store(s.negative_ttl, Relaxed);
    REQUEST_TIMEOUT_MS.store(s.request_timeout_ms, Relaxed);
    STATEMENT_TIMEOUT_MS.store(s.statement_timeout_ms, Relaxed);
    MULTIREAD_MAX.store(s.multiread_max as u64, Relaxed);
    LOOP_CONNECTIONS.store(s.loop_connections as u64, Relaxed);
    AFTER_WAIT_MS.store(s.after_wait_ms, Relaxed);
    MAX_STALENESS_MS.store(s.max_staleness_ms, Relaxed);
    STALE_IF_ERROR_MS.store(s.stale_if_error_ms, Relaxed);
    QUERY_MAX_ROWS.store(s.query_max_rows, Relaxed);
    QUERY_MAX_BYTES.store(s.query_max_bytes, Relaxed);
    QUERY_MAX_STATEMENTS.store(s.query_max_statements, Relaxed);
    // Notifications name keys, never new values: per table is all they allow.
    QUERY_ROW_PRECISION.store(
        s.query_row_precision && s.invalidation_source != crate::config::InvalidationSource::Notify,
        Relaxed,
    );
    QUERY_INDEX_MAX_BYTES.store(s.query_index_max_bytes, Relaxed);
    PASS_THROUGH.store(s.pass_through as u8, Relaxed);
    EVENTS.store(s.events.0, Relaxed);
    *EVENT_CHANNEL.write().unwrap() = s.event_channel.clone();
    *TABLES.write().unwrap() = s.tables.clone();
    TABLES_VERSION.fetch_add(1, std::sync::atomic::Ordering::Release);
    *SOURCE.write().unwrap() = s.invalidation_source;
    *CACHE_PREFIX.write().unwrap() = s.cache_prefix.clone();
    LISTEN.store(s.listen, Relaxed);
}

/// `invalidation_source auto` uses NOTIFY (PostgreSQL cannot stream to pgcache).
static FELL_BACK_TO_NOTIFY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Says whether `auto` fell back to NOTIFY (the replication source decides, at its start).
pub fn fell_back_to_notify(yes: bool) {
    FELL_BACK_TO_NOTIFY.store(yes, Relaxed);
}

/// Whether the change feed in use is NOTIFY: notify mode, or `auto` fallen back to it.
/// (Until `auto` has decided, the log is assumed.)
pub fn feed_is_notify() -> bool {
    match *SOURCE.read().unwrap() {
        crate::config::InvalidationSource::Notify => true,
        crate::config::InvalidationSource::Replication => false,
        crate::config::InvalidationSource::Auto => FELL_BACK_TO_NOTIFY.load(Relaxed),
    }
}

/// The allowlist's version: it changes whenever the allowlist may have.
pub fn tables_version() -> u64 {
    TABLES_VERSION.load(std::sync::atomic::Ordering::Acquire)
}

/// Whether the invalidation listener was asked for.
pub fn listening() -> bool {
    LISTEN.load(Relaxed)
}

pub fn default_ttl() -> u64 {
    DEFAULT_TTL.load(Relaxed)
}
/// Seconds an absent row is remembered; 0: not at all.
pub fn negative_ttl() -> u64 {
    NEGATIVE_TTL.load(Relaxed)
}
pub fn request_timeout_ms() -> u64 {
    REQUEST_TIMEOUT_MS.load(Relaxed)
}
pub fn statement_timeout_ms() -> u64 {
    STATEMENT_TIMEOUT_MS.load(Relaxed)
}
/// How long a read AFTER a position not applied yet waits for it.
pub fn after_wait() -> std::time::Duration {
    std::time::Duration::from_millis(AFTER_WAIT_MS.load(Relaxed))
}
/// Longest a hit may lag PostgreSQL's commits, in milliseconds; negative: unbounded.
#[inline]
pub fn max_staleness_ms() -> i64 {
    MAX_STALENESS_MS.load(Relaxed)
}
/// How stale a hit may be while PostgreSQL cannot be reached; negative: unbounded.
pub fn stale_if_error_ms() -> i64 {
    STALE_IF_ERROR_MS.load(Relaxed)
}
/// Most rows a PGCACHE.QUERY result may have to be cached.
pub fn query_max_rows() -> u64 {
    QUERY_MAX_ROWS.load(Relaxed)
}
/// Most bytes a PGCACHE.QUERY result may have to be cached.
pub fn query_max_bytes() -> u64 {
    QUERY_MAX_BYTES.load(Relaxed)
}
/// Most statement spellings PGCACHE.QUERY remembers.
pub fn query_max_statements() -> usize {
    QUERY_MAX_STATEMENTS.load(Relaxed) as usize
}
/// Whether statements learned now are dropped row by row where their shape allows.
pub fn query_row_precision() -> bool {
    QUERY_ROW_PRECISION.load(Relaxed)
}
/// Most bytes the row-precision index may take.
pub fn query_index_max_bytes() -> u64 {
    QUERY_INDEX_MAX_BYTES.load(Relaxed)
}
/// Whether statements and tables may pass their misses through.
pub fn pass_through() -> Policy {
    match PASS_THROUGH.load(Relaxed) {
        x if x == Policy::Always as u8 => Policy::Always,
        x if x == Policy::Never as u8 => Policy::Never,
        _ => Policy::Auto,
    }
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
pub fn cache_prefix() -> String {
    CACHE_PREFIX.read().unwrap().clone()
}

/// Whether the allowlist (empty: everything) admits this table.
pub fn table_allowed(name: &QualifiedName) -> bool {
    let tables = TABLES.read().unwrap();
    tables.is_empty() || tables.contains(name)
}

/// Whether the allowlist names this table itself (not just admits everything): the
/// administrator's explicit word that it may be served, views over system catalogs included.
pub fn table_listed(name: &QualifiedName) -> bool {
    TABLES.read().unwrap().contains(name)
}

/// Connections the event loop keeps to send misses on itself.
pub fn loop_connections() -> usize {
    LOOP_CONNECTIONS.load(Relaxed) as usize
}
