//! The settings that can change while the server runs (`CONFIG SET pgcache.<name>`), held
//! where the hit path and the workers read them without locks (atomics), or behind a lock
//! that only misses and events take. Load-time-only settings live in `config::Settings`.

use crate::config::{self, Settings};
use crate::event::EventMask;
use crate::hooks;
use crate::ident::QualifiedName;
use crate::pg::schema;
use crate::slowlog;
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
    slowlog::set_threshold_us(s.slowlog_threshold_us);
    slowlog::set_max_len(s.slowlog_max_len);
    // Validated by config::load.
    let _ = hooks::set_all(&s.hooks);
}

/// The load-time settings (password redacted) followed by the runtime ones' current values.
pub fn effective() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = LOAD_TIME
        .read()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    all.extend(TUNABLES.iter().map(|t| (t.name.to_string(), (t.get)())));
    all
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

/// One runtime setting: its CONFIG name, how to read it and how to validate and apply a value.
pub struct Tunable {
    pub name: &'static str,
    pub get: fn() -> String,
    pub set: fn(&str) -> Result<(), String>,
}

/// Stores a value its parse function accepted.
fn set_u64(target: &AtomicU64, parsed: Result<u64, String>) -> Result<(), String> {
    target.store(parsed?, Relaxed);
    Ok(())
}

/// Every setting CONFIG SET can change, with the same validation as at load time.
pub static TUNABLES: [Tunable; 11] = [
    Tunable {
        name: "default_ttl",
        get: || default_ttl().to_string(),
        set: |v| set_u64(&DEFAULT_TTL, config::parse_ttl(v)),
    },
    Tunable {
        name: "negative_ttl",
        get: || negative_ttl().to_string(),
        set: |v| set_u64(&NEGATIVE_TTL, config::parse_negative_ttl(v)),
    },
    Tunable {
        name: "request_timeout_ms",
        get: || request_timeout_ms().to_string(),
        set: |v| set_u64(&REQUEST_TIMEOUT_MS, config::parse_request_timeout_ms(v)),
    },
    Tunable {
        name: "statement_timeout_ms",
        get: || statement_timeout_ms().to_string(),
        set: |v| set_u64(&STATEMENT_TIMEOUT_MS, config::parse_statement_timeout_ms(v)),
    },
    Tunable {
        name: "multiread_max",
        get: || multiread_max().to_string(),
        set: |v| {
            set_u64(
                &MULTIREAD_MAX,
                config::parse_multiread_max(v).map(|n| n as u64),
            )
        },
    },
    Tunable {
        name: "events",
        get: || events().render(),
        set: |v| {
            EVENTS.store(EventMask::parse(v)?.0, Relaxed);
            Ok(())
        },
    },
    Tunable {
        name: "event_channel",
        get: event_channel,
        set: |v| {
            *EVENT_CHANNEL.write().unwrap() = config::parse_event_channel(v)?;
            Ok(())
        },
    },
    Tunable {
        name: "tables",
        get: || {
            let tables = TABLES.read().unwrap();
            tables
                .iter()
                .map(|t| t.display())
                .collect::<Vec<_>>()
                .join(",")
        },
        set: |v| {
            let parsed = config::parse_tables(v)?;
            *TABLES.write().unwrap() = parsed;
            // Tables resolved under the old list must be checked again.
            schema::clear_cache();
            Ok(())
        },
    },
    Tunable {
        name: "slowlog_threshold_us",
        get: || slowlog::threshold_us().to_string(),
        set: |v| {
            slowlog::set_threshold_us(slowlog::parse_threshold(v)?);
            Ok(())
        },
    },
    Tunable {
        name: "slowlog_max_len",
        get: || slowlog::max_len().to_string(),
        set: |v| {
            slowlog::set_max_len(slowlog::parse_max_len(v)?);
            Ok(())
        },
    },
    Tunable {
        name: "hooks",
        get: hooks::setting,
        set: hooks::set_all,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// CONFIG SET must accept exactly what the module arguments accept. (Hooks, tables
    /// and events are left out: setting them reaches other global state.)
    #[test]
    fn config_set_validates_like_the_module_arguments() {
        let values = [
            "",
            "0",
            "1",
            "9",
            "10",
            "-1",
            "abc",
            "1.5",
            "3600",
            "100000",
            "100001",
            "3600000",
            "3600001",
            "315360000",
            "315360001",
            "pg_cache_events",
        ];
        for tunable in TUNABLES
            .iter()
            .filter(|t| !["hooks", "tables", "events"].contains(&t.name))
        {
            let original = (tunable.get)();
            for value in values {
                let at_load =
                    config::load(&[tunable.name.to_string(), value.to_string()], &|_| None).is_ok();
                assert_eq!(
                    (tunable.set)(value).is_ok(),
                    at_load,
                    "{} {value:?}",
                    tunable.name
                );
            }
            // Without `init` (unit tests) the event channel starts empty, which CONFIG SET
            // refuses; that one keeps the last accepted value.
            let _ = (tunable.set)(&original);
        }
    }
}
