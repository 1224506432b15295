//! pgcache: a read-through cache for PostgreSQL rows inside Redis / Valkey.
//!
//! This file is the table of contents: the commands, the settings CONFIG can change, and
//! what happens at load and unload. The work is in the modules below.

pub mod acl;
pub mod args;
pub mod blocked;
pub mod bypass;
pub mod cache;
pub mod commands;
pub mod config;
pub mod error;
pub mod event;
pub mod events;
pub mod fill;
pub mod flush;
pub mod hooks;
pub mod ident;
pub mod invalidation;
pub mod key;
pub mod main_thread;
pub mod metrics;
pub mod pg;
pub mod reply;
pub mod requests;
pub mod role;
pub mod settings;
pub mod slowlog;
pub mod stall;
pub mod stats;
pub mod tunables;
pub mod wake;
pub mod worker;

use redis_module::configuration::{
    ConfigurationContext, ConfigurationFlags, ConfigurationValue, register_string_configuration,
};
use redis_module::{Context, RedisError, RedisString, Status, raw, redis_module};
use std::ffi::CString;
use std::time::Duration;

// Redis's allocator in the module; the system allocator in unit tests, which run without
// a server.
#[cfg(not(test))]
type Alloc = redis_module::alloc::RedisAlloc;
#[cfg(not(test))]
const ALLOC: Alloc = redis_module::alloc::RedisAlloc;
#[cfg(test)]
type Alloc = std::alloc::System;
#[cfg(test)]
const ALLOC: Alloc = std::alloc::System;

const fn parse_version_part(s: &str) -> i32 {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while i < bytes.len() {
        n = n * 10 + (bytes[i] - b'0') as i32;
        i += 1;
    }
    n
}

/// MODULE LIST shows the version as major*10000 + minor*100 + patch.
const MODULE_VERSION: i32 = parse_version_part(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
    + parse_version_part(env!("CARGO_PKG_VERSION_MINOR")) * 100
    + parse_version_part(env!("CARGO_PKG_VERSION_PATCH"));

/// The commands: name, handler (with its index in `stats::COMMANDS` when its latency is
/// tracked), Redis command flags.
fn commands() -> [(&'static str, raw::RedisModuleCmdFunc, &'static str); 9] {
    [
        (
            "pgcache.read",
            Some(command_fn!(commands::read::read, Some(0))),
            "readonly",
        ),
        (
            "pgcache.multiread",
            Some(command_fn!(commands::multiread::multiread, Some(1))),
            "readonly",
        ),
        (
            "pgcache.write",
            Some(command_fn!(commands::write::write, Some(2))),
            "write deny-oom",
        ),
        (
            "pgcache.invalidate",
            Some(command_fn!(commands::write::invalidate, Some(3))),
            "write",
        ),
        (
            "pgcache.flush",
            Some(command_fn!(commands::write::flush, Some(4))),
            "write",
        ),
        (
            "pgcache.stats",
            Some(command_fn!(commands::admin::stats)),
            "readonly fast",
        ),
        (
            "pgcache.health",
            Some(command_fn!(commands::admin::health)),
            "readonly",
        ),
        (
            "pgcache.slowlog",
            Some(command_fn!(commands::slowlog::slowlog)),
            "admin",
        ),
        (
            "pgcache.hook",
            Some(command_fn!(commands::hook::hook)),
            "admin may-replicate",
        ),
    ]
}

/// The `pgcache` INFO section: the PGCACHE.STATS figures, nested ones flattened
/// (`read_p99_us`), each shown by Redis as `pgcache_<name>`.
extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: std::os::raw::c_int) {
    error::guard("the INFO section", || info_section(ctx));
}

fn info_section(ctx: *mut raw::RedisModuleInfoCtx) {
    fn add(ctx: *mut raw::RedisModuleInfoCtx, name: &str, value: &reply::Reply) {
        let field = CString::new(name).expect("no NUL");
        // SAFETY: Redis's info context for this call.
        unsafe {
            match value {
                reply::Reply::Int(n) => {
                    raw::RedisModule_InfoAddFieldLongLong.unwrap()(ctx, field.as_ptr(), *n);
                }
                reply::Reply::Double(d) => {
                    raw::RedisModule_InfoAddFieldDouble.unwrap()(ctx, field.as_ptr(), *d);
                }
                reply::Reply::Bulk(s) => {
                    let text = CString::new(s.as_str()).expect("no NUL");
                    raw::RedisModule_InfoAddFieldCString.unwrap()(
                        ctx,
                        field.as_ptr(),
                        text.as_ptr(),
                    );
                }
                reply::Reply::Map(entries) => {
                    for (inner, v) in entries {
                        add(ctx, &format!("{name}_{inner}"), v);
                    }
                }
                _ => {}
            }
        }
    }
    // SAFETY: Redis's info context for this call.
    unsafe { raw::RedisModule_InfoAddSection.unwrap()(ctx, std::ptr::null()) };
    for (name, value) in commands::admin::report() {
        match &value {
            reply::Reply::Map(tables) if name == "tables" => {
                for (table, figures) in tables {
                    add_table(ctx, table, figures);
                }
            }
            reply::Reply::Map(entries) => {
                for (inner, v) in entries {
                    add(ctx, inner, v);
                }
            }
            _ => add(ctx, &name, &value),
        }
    }
}

/// One table's figures as a dict field, the way Redis shows `db0:keys=1,expires=0`:
/// `pgcache_table_users:calls=3,hits=2,...` (characters other than letters, digits, `.`,
/// `-` and `_` in the name become `_`).
fn add_table(ctx: *mut raw::RedisModuleInfoCtx, table: &str, figures: &reply::Reply) {
    let name: String = table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let Ok(field) = CString::new(format!("table_{name}")) else {
        return;
    };
    let reply::Reply::Map(figures) = figures else {
        return;
    };
    // SAFETY: Redis's info context for this call; the strings outlive each call.
    unsafe {
        raw::RedisModule_InfoBeginDictField.unwrap()(ctx, field.as_ptr());
        for (figure, value) in figures {
            let figure = CString::new(figure.as_str()).expect("no NUL");
            match value {
                reply::Reply::Int(n) => {
                    raw::RedisModule_InfoAddFieldLongLong.unwrap()(ctx, figure.as_ptr(), *n);
                }
                reply::Reply::Double(d) => {
                    raw::RedisModule_InfoAddFieldDouble.unwrap()(ctx, figure.as_ptr(), *d);
                }
                _ => {}
            }
        }
        raw::RedisModule_InfoEndDictField.unwrap()(ctx);
    }
}

/// Counts expirations and evictions of pgcache's entries, from Redis's own keyspace events,
/// and raises the `expire` and `evict` events.
unsafe extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    event_type: std::os::raw::c_int,
    _event: *const std::os::raw::c_char,
    key: *mut raw::RedisModuleString,
) -> std::os::raw::c_int {
    error::guard("a keyspace event", || keyspace_event(ctx, event_type, key));
    raw::REDISMODULE_OK as std::os::raw::c_int
}

fn keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    event_type: std::os::raw::c_int,
    key: *mut raw::RedisModuleString,
) {
    let mut len = 0usize;
    // SAFETY: Redis passes a live key name.
    let name = unsafe {
        let ptr = raw::RedisModule_StringPtrLen.unwrap()(key, &mut len);
        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
    };
    let prefix = tunables::cache_prefix();
    let Some(entry) = name.strip_prefix(prefix.as_bytes()) else {
        return;
    };
    let kind = if event_type & raw::REDISMODULE_NOTIFY_EVICTED != 0 {
        stats::EVICTIONS.inc();
        event::EventKind::Evict
    } else {
        stats::EXPIRATIONS.inc();
        event::EventKind::Expire
    };
    if events::wanted(kind) {
        let entry = String::from_utf8_lossy(entry);
        let (table, key) = cache::split_entry_name(&entry);
        let context = Context::new(ctx);
        hooks::in_notification(|| events::publish(&context, kind, table, key));
    }
}

/// Sends the hooks to replicas when one comes online.
unsafe extern "C" fn on_replica_change(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut std::os::raw::c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_REPLICA_CHANGE_ONLINE {
        error::guard("a replica coming online", || {
            hooks::on_replica_online(&Context::new(ctx))
        });
    }
}

/// CONFIG GET / SET of a `pgcache.*` setting. Redis calls these directly: a panic must not
/// unwind into it, and a value with a NUL byte must still make a valid string.
impl ConfigurationValue<RedisString> for settings::Tunable {
    fn get(&self, _: &ConfigurationContext) -> RedisString {
        let value = error::guard("reading a setting", || (self.get)());
        RedisString::create_from_slice(std::ptr::null_mut(), value.as_bytes())
    }
    fn set(&self, _: &ConfigurationContext, value: RedisString) -> Result<(), RedisError> {
        let text = value.try_as_str()?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.set)(text)))
            .unwrap_or_else(|_| Err("internal error; the setting was not changed".into()))
            .map_err(|e| {
                RedisError::String(format!("pgcache.{}: {}", self.name, e.replace('\0', "\\0")))
            })
    }
}

fn init(ctx: &Context, args_raw: &[RedisString]) -> Status {
    std::panic::set_hook(Box::new(|info| {
        redis_module::logging::log_warning(format!("pgcache: internal error: {info}"));
    }));
    let args: Vec<String> = args_raw.iter().map(|a| a.to_string_lossy()).collect();
    let settings = match config::load(&args, &|name| std::env::var(name).ok()) {
        Ok(s) => s,
        Err(e) => {
            ctx.log_warning(&e.to_string());
            return Status::Err;
        }
    };
    if settings.pg.password().is_some_and(config::is_masked) {
        ctx.log_warning(
            "pgcache: setting pg_password: the value is the mask an earlier pgcache version \
             left in the module arguments (CONFIG REWRITE saved it); put the real password \
             back in the loadmodule line, or give it through PGPASSWORD, PGCACHE_PG_PASSWORD or a passfile",
        );
        return Status::Err;
    }
    if let Err(e) = settings::init(&settings) {
        ctx.log_warning(&e.to_string());
        return Status::Err;
    }
    pg::schema::clear_cache();

    let pool = match pg::pool::Pool::new(settings.pg.clone(), settings.pool_size) {
        Ok(p) => std::sync::Arc::new(p),
        Err(e) => {
            ctx.log_warning(&format!("pgcache: cannot set up TLS to PostgreSQL: {e}"));
            return Status::Err;
        }
    };
    let debug: Option<(&str, raw::RedisModuleCmdFunc, &str)> = settings.debug_commands.then(|| {
        (
            "pgcache.debug",
            Some(command_fn!(commands::debug::debug)),
            "admin",
        )
    });
    for (name, handler, flags) in commands().into_iter().chain(debug) {
        let c_name = CString::new(name).expect("no NUL");
        let c_flags = CString::new(flags).expect("no NUL");
        // SAFETY: called from OnLoad with its context.
        let status = unsafe {
            raw::RedisModule_CreateCommand.unwrap()(
                ctx.ctx,
                c_name.as_ptr(),
                handler,
                c_flags.as_ptr(),
                0,
                0,
                0,
            )
        };
        if status != raw::REDISMODULE_OK as i32 {
            ctx.log_warning(&format!("pgcache: could not register {name}"));
            return Status::Err;
        }
    }
    for tunable in settings::RUNTIME.iter() {
        let current = (tunable.get)();
        register_string_configuration(
            ctx,
            tunable.name,
            tunable,
            &current,
            ConfigurationFlags::DEFAULT,
            None,
        );
    }
    // SAFETY: OnLoad context; the callbacks live as long as the module.
    unsafe {
        raw::RedisModule_RegisterInfoFunc.unwrap()(ctx.ctx, Some(info));
        raw::RedisModule_SubscribeToKeyspaceEvents.unwrap()(
            ctx.ctx,
            raw::REDISMODULE_NOTIFY_EXPIRED | raw::REDISMODULE_NOTIFY_EVICTED,
            Some(on_keyspace_event),
        );
        raw::RedisModule_SubscribeToServerEvent.unwrap()(
            ctx.ctx,
            raw::RedisModuleEvent {
                id: raw::REDISMODULE_EVENT_REPLICA_CHANGE,
                dataver: 1,
            },
            Some(on_replica_change),
        );
    }
    // SAFETY: OnLoad context; applies `pgcache.*` lines of redis.conf, if any.
    if unsafe { raw::RedisModule_LoadConfigs.unwrap()(ctx.ctx) } != raw::REDISMODULE_OK as i32 {
        ctx.log_warning("pgcache: a pgcache.* setting in the Redis configuration is invalid");
        return Status::Err;
    }
    if let Err(e) = worker::start(settings.workers, settings.queue_size, pool.clone()) {
        ctx.log_warning(&format!("pgcache: cannot start worker threads: {e}"));
        return Status::Err;
    }
    if settings.metrics_port != 0
        && let Err(e) = metrics::start(&settings.metrics_bind, settings.metrics_port)
    {
        ctx.log_warning(&format!(
            "pgcache: setting metrics_port: cannot listen on {}:{}: {e}",
            settings.metrics_bind, settings.metrics_port
        ));
        let _ = worker::stop();
        return Status::Err;
    }
    if let Err(e) = main_thread::init(ctx) {
        ctx.log_warning(&format!(
            "pgcache: cannot set up the hand-over to the main thread: {e}"
        ));
        metrics::stop();
        let _ = worker::stop();
        return Status::Err;
    }
    invalidation::init(ctx, settings.listen);
    if settings.listen
        && let Err(e) = invalidation::listener::start(pool, settings.invalidation_channel.clone())
    {
        ctx.log_warning(&format!(
            "pgcache: cannot start the invalidation listener: {e}"
        ));
        invalidation::deinit();
        main_thread::deinit();
        metrics::stop();
        let _ = worker::stop();
        return Status::Err;
    }
    if settings.listen {
        invalidation::listener::wait_for_first_attempt(
            settings.pg.connect_timeout + Duration::from_millis(500),
        );
    }
    ctx.log_notice(&format!(
        "pgcache {} loaded: PostgreSQL {}, {} workers, pool {}, queue {}, default TTL {} s",
        env!("CARGO_PKG_VERSION"),
        settings.pg.describe(),
        settings.workers,
        settings.pool_size,
        settings.queue_size,
        settings.default_ttl
    ));
    Status::Ok
}

fn deinit(ctx: &Context) -> Status {
    if main_thread::pending() {
        ctx.log_warning(
            "pgcache: refusing to unload while work for the main thread is queued (a flush, \
             invalidations or hook deliveries); retry shortly",
        );
        return Status::Err;
    }
    if let Err(e) = worker::stop() {
        ctx.log_warning(&format!("pgcache: refusing to unload: {e}"));
        return Status::Err;
    }
    invalidation::listener::stop();
    metrics::stop();
    invalidation::deinit();
    main_thread::deinit();
    pg::schema::clear_cache();
    Status::Ok
}

redis_module! {
    name: "pgcache",
    version: MODULE_VERSION,
    allocator: (Alloc, ALLOC),
    data_types: [],
    init: init,
    deinit: deinit,
    commands: [],
}
