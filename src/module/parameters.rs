//! The `pgcache.*` CONFIG parameters and the settings in effect. At load the settings are
//! installed into the modules whose state they are (`config::current`, the slowlog, the
//! hooks, the schema cache) and every runtime one is registered with Redis, which then calls
//! `get` and `set` here directly for CONFIG GET and CONFIG SET; a SET is checked as the
//! module argument is, with the table's validation. Wiring, like `lib.rs`: it reaches every
//! module a setting changes.
//! (`redis::config` registers them without boxing anything: the crate's helper boxed one
//! value per parameter, and nothing freed it at unload; valgrind counted it.)

use crate::config::current;
use crate::config::table::Owner;
use crate::config::{self, NamedSource, SETTINGS, Setting, Settings};
use crate::error::{self, Error};
use crate::events::hooks;
use crate::model::source::SourceId;
use crate::pg::schema;
use crate::redis;
use crate::redis::main_thread::Task;
use crate::stats::slowlog;
use redis_module::Context;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

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
    current::init(s);
    slowlog::set_threshold_us(s.slowlog_threshold_us);
    slowlog::set_max_len(s.slowlog_max_len);
    *CURRENT.lock().unwrap() = Some(s.clone());
}

/// Whether Redis is applying redis.conf's `pgcache.*` lines (at load, before any source
/// starts): only then does `pgcache.sources` declare sources.
static READING_CONFIGURATION: AtomicBool = AtomicBool::new(false);

/// The settings in effect.
fn current() -> Settings {
    let mut s = CURRENT.lock().unwrap().clone().unwrap_or_default();
    s.hooks = hooks::setting();
    s
}

/// The settings in effect, with the named sources redis.conf's `pgcache.sources` declared (at
/// load, once `register` applied it).
pub fn settings() -> Settings {
    current()
}

/// Records the named sources served now (PGCACHE.SOURCE changed them), which CONFIG GET and
/// REWRITE show as `pgcache.sources` and HEALTH SOURCE reads.
pub fn set_named(named: Vec<NamedSource>) {
    if let Some(s) = CURRENT.lock().unwrap().as_mut() {
        s.named = named;
    }
}

/// Sends every replica the named sources (`PGCACHE.SOURCE SYNC`), after the hooks.
static SOURCES_SYNC: Task = Task::new("sending sources to replicas", replicate_sources);

/// A replica came online: an RDB transfer does not carry configuration, so every replica is
/// sent the named sources, from the main thread's timer (whose context replicates).
pub fn on_replica_online(ctx: &Context) {
    if redis::role::writable(ctx) {
        SOURCES_SYNC.request();
    }
}

fn replicate_sources(ctx: &Context) -> bool {
    let declared: Vec<_> = current().named.iter().map(NamedSource::declared).collect();
    let definitions = config::render_definitions(&declared);
    ctx.replicate("PGCACHE.SOURCE", &["SYNC", definitions.as_str()][..]);
    false
}

/// The settings in effect for `source`, as HEALTH shows them (the password as set or not): a named source's own
/// values, and the server's (which CONFIG SET may have changed since its block was read).
pub fn effective_of(source: SourceId) -> Vec<(&'static str, String)> {
    let s = current();
    let named = current::name(source)
        .and_then(|name| s.named.iter().find(|named| named.name == name).cloned());
    let Some(named) = named else {
        return s.shown();
    };
    // Both listings walk the table in its order, so they pair setting by setting.
    (s.shown().into_iter().zip(named.settings.shown()))
        .zip(SETTINGS.iter().filter(|setting| setting.show.is_some()))
        .map(|(((name, server), (_, own)), setting)| {
            (
                name,
                if setting.owner == Owner::Server {
                    server
                } else {
                    own
                },
            )
        })
        .collect()
}

/// What CONFIG GET pgcache.<name> shows.
fn value_of(setting: &Setting) -> String {
    setting
        .show
        .map(|show| show(&current()))
        .unwrap_or_default()
}

/// CONFIG SET pgcache.<name>'s value: checked as the module argument is, then installed.
fn set_value(setting: &Setting, value: &str) -> Result<(), Error> {
    let mut next = current();
    setting.apply(&mut next, value)?;
    if setting.name == "hooks" {
        hooks::set_all(&next.hooks)?;
    }
    if setting.name == "sources" {
        declare_sources(&mut next)?;
    }
    install(&next);
    if setting.name == "tables" {
        // Tables resolved under the old list must be checked again.
        schema::of(SourceId::DEFAULT).clear();
    }
    Ok(())
}

/// `pgcache.sources` as given: at load it declares the named sources (over the module
/// arguments' blocks); while the server runs, PGCACHE.SOURCE changes them (it starts and
/// stops their connections, and replicates), and a CONFIG SET of another value is refused.
fn declare_sources(next: &mut Settings) -> Result<(), Error> {
    let given = std::mem::take(&mut next.sources_given);
    if READING_CONFIGURATION.load(Ordering::SeqCst) {
        return config::redeclare(next, &given, &|name| std::env::var(name).ok());
    }
    let mut asked = next.clone();
    config::redeclare(&mut asked, &given, &|name| std::env::var(name).ok())?;
    let declared = |s: &Settings| -> Vec<_> { s.named.iter().map(NamedSource::declared).collect() };
    if declared(&asked) != declared(next) {
        return Err(Error::invalid(
            "sources are added, changed and removed with PGCACHE.SOURCE ADD, SET and DEL, \
             which start and stop their connections (this value is what they write)",
        ));
    }
    Ok(())
}

/// Registers every runtime setting as `pgcache.<name>`, then applies redis.conf's lines.
pub fn register(ctx: &Context) -> Result<(), Error> {
    for (index, setting) in SETTINGS.iter().enumerate().filter(|(_, s)| s.runtime) {
        redis::config::register::<Parameters>(ctx, setting.name, index, &value_of(setting))
            .map_err(|e| Error::internal(format!("pgcache.{}: {e}", setting.name)))?;
    }
    READING_CONFIGURATION.store(true, Ordering::SeqCst);
    let loaded = redis::config::load(ctx);
    READING_CONFIGURATION.store(false, Ordering::SeqCst);
    if !loaded {
        return Err(Error::invalid(
            "a pgcache.* setting in the Redis configuration is invalid",
        ));
    }
    Ok(())
}

/// Frees what CONFIG GET left with us. At unload, once Redis can call no getter.
pub fn deinit() {
    redis::config::forget();
}

/// CONFIG GET and SET of `pgcache.*`, by the setting's index in `SETTINGS`.
struct Parameters;

impl redis::config::Parameters for Parameters {
    /// A panic must not unwind into Redis.
    fn get(index: usize) -> String {
        error::panic::guard("reading a setting", || value_of(&SETTINGS[index]))
    }

    /// The error names the setting and what it accepts.
    fn set(index: usize, value: &[u8]) -> Result<(), String> {
        let setting = &SETTINGS[index];
        match std::str::from_utf8(value) {
            Ok(text) => error::panic::catch_result(|| set_value(setting, text)),
            Err(_) => Err(Error::invalid("the value is not valid UTF-8")),
        }
        .map_err(|e| format!("pgcache.{}: {e}", setting.name))
    }
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
        for setting in
            (SETTINGS.iter()).filter(|t| t.runtime && !["hooks", "sources"].contains(&t.name))
        {
            let original = value_of(setting);
            for value in values {
                let at_load =
                    crate::config::load(&[setting.name.to_string(), value.to_string()], &|_| None)
                        .is_ok();
                assert_eq!(
                    set_value(setting, value).is_ok(),
                    at_load,
                    "{} {value:?}",
                    setting.name
                );
            }
            set_value(setting, &original).unwrap();
        }
    }
}
