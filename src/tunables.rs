//! The current values of the settings that can change while the server runs, held where the
//! hit path and the workers read them without locks (atomics), or behind a lock that only
//! misses and events take. Load-time-only settings live in `config::Settings`; the CONFIG
//! SET table that changes these is `settings`.

use crate::config::Settings;
use crate::event::EventMask;
use crate::ident::QualifiedName;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

static DEFAULT_TTL: AtomicU64 = AtomicU64::new(3600);
static NEGATIVE_TTL: AtomicU64 = AtomicU64::new(30);
static REQUEST_TIMEOUT_MS: AtomicU64 = AtomicU64::new(5000);
static STATEMENT_TIMEOUT_MS: AtomicU64 = AtomicU64::new(3000);
static MULTIREAD_MAX: AtomicU64 = AtomicU64::new(1000);
static EVENTS: AtomicU32 = AtomicU32::new(0);
static EVENT_CHANNEL: RwLock<String> = RwLock::new(String::new());
static TABLES: RwLock<Vec<QualifiedName>> = RwLock::new(Vec::new());
static CACHE_PREFIX: RwLock<String> = RwLock::new(String::new());
static LOAD_TIME: RwLock<Vec<(&'static str, String)>> = RwLock::new(Vec::new());
static LISTEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Installs the load-time values.
pub fn init(s: &Settings) {
    DEFAULT_TTL.store(s.default_ttl, Relaxed);
    NEGATIVE_TTL.store(s.negative_ttl, Relaxed);
    REQUEST_TIMEOUT_MS.store(s.request_timeout_ms, Relaxed);
    STATEMENT_TIMEOUT_MS.store(s.statement_timeout_ms, Relaxed);
    MULTIREAD_MAX.store(s.multiread_max as u64, Relaxed);
    EVENTS.store(s.events.0, Relaxed);
    *EVENT_CHANNEL.write().unwrap() = s.event_channel.clone();
    *TABLES.write().unwrap() = s.tables.clone();
    *CACHE_PREFIX.write().unwrap() = s.cache_prefix.clone();
    *LOAD_TIME.write().unwrap() = s.effective();
    LISTEN.store(s.listen, Relaxed);
}

/// The load-time settings (password redacted), as HEALTH shows them.
pub fn load_time() -> Vec<(String, String)> {
    LOAD_TIME
        .read()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub fn set_default_ttl(seconds: u64) {
    DEFAULT_TTL.store(seconds, Relaxed);
}
pub fn set_negative_ttl(seconds: u64) {
    NEGATIVE_TTL.store(seconds, Relaxed);
}
pub fn set_request_timeout_ms(ms: u64) {
    REQUEST_TIMEOUT_MS.store(ms, Relaxed);
}
pub fn set_statement_timeout_ms(ms: u64) {
    STATEMENT_TIMEOUT_MS.store(ms, Relaxed);
}
pub fn set_multiread_max(keys: usize) {
    MULTIREAD_MAX.store(keys as u64, Relaxed);
}
pub fn set_events(mask: EventMask) {
    EVENTS.store(mask.0, Relaxed);
}
pub fn set_event_channel(channel: String) {
    *EVENT_CHANNEL.write().unwrap() = channel;
}
pub fn set_tables(tables: Vec<QualifiedName>) {
    *TABLES.write().unwrap() = tables;
}

/// The allowlist as the `tables` setting writes it.
pub fn tables_setting() -> String {
    TABLES
        .read()
        .unwrap()
        .iter()
        .map(|t| t.display())
        .collect::<Vec<_>>()
        .join(",")
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
pub fn multiread_max() -> usize {
    MULTIREAD_MAX.load(Relaxed) as usize
}
pub fn events() -> EventMask {
    EventMask(EVENTS.load(Relaxed))
}
pub fn event_channel() -> String {
    EVENT_CHANNEL.read().unwrap().clone()
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
