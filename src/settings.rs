//! The settings in effect while the server runs: installs them at load into the modules
//! whose state they are (`tunables`, `slowlog`, `hooks`, the schema cache), and serves
//! CONFIG GET / SET of the runtime ones (`pgcache.<name>`) with the table's validation.
//! Wiring, like `lib.rs`: it reaches every module a setting changes.

use crate::config::{self, Setting, Settings};
use crate::error::Error;
use crate::hooks;
use crate::pg::schema;
use crate::slowlog;
use crate::tunables;
use std::sync::Mutex;

/// The settings in effect (the `hooks` field aside: PGCACHE.HOOK changes hooks too, so the
/// hooks module holds them).
static CURRENT: Mutex<Option<Settings>> = Mutex::new(None);

/// Installs the load-time values of every setting.
pub fn init(s: &Settings) -> Result<(), Error> {
    hooks::set_all(&s.hooks).map_err(|e| Error::setting("hooks", e))?;
    install(s);
    Ok(())
}

fn install(s: &Settings) {
    tunables::init(s);
    slowlog::set_threshold_us(s.slowlog_threshold_us);
    slowlog::set_max_len(s.slowlog_max_len);
    *CURRENT.lock().unwrap() = Some(s.clone());
}

/// The settings in effect.
fn current() -> Settings {
    let mut s = CURRENT.lock().unwrap().clone().unwrap_or_default();
    s.hooks = hooks::setting();
    s
}

/// Every setting's value in effect, as HEALTH shows them (the password as set or not).
pub fn effective() -> Vec<(&'static str, String)> {
    current().shown()
}

/// The settings CONFIG SET may change.
pub fn runtime() -> impl Iterator<Item = &'static Setting> {
    config::SETTINGS.iter().filter(|s| s.runtime)
}

/// CONFIG GET pgcache.<name>.
pub fn get(setting: &Setting) -> String {
    setting
        .show
        .map(|show| show(&current()))
        .unwrap_or_default()
}

/// CONFIG SET pgcache.<name>: checked as the module argument is, then installed.
pub fn set(setting: &Setting, value: &str) -> Result<(), Error> {
    let mut next = current();
    setting.apply(&mut next, value)?;
    if setting.name == "hooks" {
        hooks::set_all(&next.hooks)?;
    }
    install(&next);
    if setting.name == "tables" {
        // Tables resolved under the old list must be checked again.
        schema::clear_cache();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CONFIG SET must accept exactly what the module arguments accept. (Hooks are left
    /// out: installing them reaches other global state.)
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
            "users,sales.orders",
            "miss,hit",
        ];
        for setting in runtime().filter(|t| t.name != "hooks") {
            let original = get(setting);
            for value in values {
                let at_load =
                    config::load(&[setting.name.to_string(), value.to_string()], &|_| None).is_ok();
                assert_eq!(
                    set(setting, value).is_ok(),
                    at_load,
                    "{} {value:?}",
                    setting.name
                );
            }
            set(setting, &original).unwrap();
        }
    }
}
