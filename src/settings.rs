//! The settings CONFIG SET can change (`pgcache.<name>`): each one's name, how to read it,
//! and how to validate and apply a new value to the module that uses it, with the same
//! validation as the module arguments. Wiring, like `lib.rs`: it reaches the modules whose
//! state a setting is (`tunables`, `slowlog`, `hooks`, the schema cache).

use crate::config::{self, Settings};
use crate::event::EventMask;
use crate::hooks;
use crate::pg::schema;
use crate::slowlog;
use crate::tunables;

/// Installs the load-time values of every runtime setting.
pub fn init(s: &Settings) -> Result<(), config::ConfigError> {
    tunables::init(s);
    slowlog::set_threshold_us(s.slowlog_threshold_us);
    slowlog::set_max_len(s.slowlog_max_len);
    hooks::set_all(&s.hooks).map_err(|e| config::ConfigError {
        setting: "hooks".into(),
        message: e,
    })
}

/// The load-time settings (password redacted) followed by the runtime ones' current values.
pub fn effective() -> Vec<(String, String)> {
    let mut all = tunables::load_time();
    all.extend(RUNTIME.iter().map(|t| (t.name.to_string(), (t.get)())));
    all
}

/// One runtime setting: its CONFIG name, how to read it and how to validate and apply a value.
pub struct Tunable {
    pub name: &'static str,
    pub get: fn() -> String,
    pub set: fn(&str) -> Result<(), String>,
}

/// Every setting CONFIG SET can change, with the same validation as at load time.
pub static RUNTIME: [Tunable; 11] = [
    Tunable {
        name: "default_ttl",
        get: || tunables::default_ttl().to_string(),
        set: |v| {
            tunables::set_default_ttl(config::parse_ttl(v)?);
            Ok(())
        },
    },
    Tunable {
        name: "negative_ttl",
        get: || tunables::negative_ttl().to_string(),
        set: |v| {
            tunables::set_negative_ttl(config::parse_negative_ttl(v)?);
            Ok(())
        },
    },
    Tunable {
        name: "request_timeout_ms",
        get: || tunables::request_timeout_ms().to_string(),
        set: |v| {
            tunables::set_request_timeout_ms(config::parse_request_timeout_ms(v)?);
            Ok(())
        },
    },
    Tunable {
        name: "statement_timeout_ms",
        get: || tunables::statement_timeout_ms().to_string(),
        set: |v| {
            tunables::set_statement_timeout_ms(config::parse_statement_timeout_ms(v)?);
            Ok(())
        },
    },
    Tunable {
        name: "multiread_max",
        get: || tunables::multiread_max().to_string(),
        set: |v| {
            tunables::set_multiread_max(config::parse_multiread_max(v)?);
            Ok(())
        },
    },
    Tunable {
        name: "events",
        get: || tunables::events().render(),
        set: |v| {
            tunables::set_events(EventMask::parse(v)?);
            Ok(())
        },
    },
    Tunable {
        name: "event_channel",
        get: tunables::event_channel,
        set: |v| {
            tunables::set_event_channel(config::parse_event_channel(v)?);
            Ok(())
        },
    },
    Tunable {
        name: "tables",
        get: tunables::tables_setting,
        set: |v| {
            tunables::set_tables(config::parse_tables(v)?);
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
        for tunable in RUNTIME
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
