//! pgcache: a read-through cache for PostgreSQL rows inside Redis / Valkey.
//!
//! This file is wiring: the modules, and what happens at load and unload, in named steps.
//! Each command describes itself beside its handler (`commands`), each setting in one table
//! (`config::table`); the Layout section of docs/how-it-works.md draws the layers the modules form. The rules
//! (what a statement is and what a change does to its results: `predicate`, `shape`,
//! `precision`) are a crate of their own, `pgcache-rules` in `rules/`, with neither Redis nor
//! PostgreSQL; `query` re-exports and applies them.

mod cache;
mod commands;
mod config;
mod error;
mod events;
mod invalidation;
mod model;
mod module;
mod pg;
mod query;
mod redis;
mod report;
mod requests;
mod source;
#[cfg(test)]
mod source_tree;
mod stall;
mod stats;

use error::Error;
use model::source::SourceId;
use redis_module::{Context, RedisString, Status, redis_module};

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

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    std::panic::set_hook(Box::new(|info| {
        redis_module::logging::log_warning(format!("pgcache: internal error: {info}"));
    }));
    match start(ctx, args) {
        Ok(()) => Status::Ok,
        Err(e) => {
            ctx.log_warning(&format!("pgcache: {e}"));
            Status::Err
        }
    }
}

/// Loads the module, step by step; what failed, as the log should say it.
fn start(ctx: &Context, args: &[RedisString]) -> Result<(), Error> {
    let settings = load_settings(args)?;
    warn_of_undeclared_sources(ctx, &settings);
    register_commands(ctx, settings.debug_commands)?;
    // A drain ends with the unload it prepared; a library Redis kept mapped keeps statics.
    cache::drain::open_for(0);
    redis::acl::watch(ctx);
    redis::cluster::init(ctx);
    redis::clock::init(ctx);
    module::parameters::register(ctx)?;
    // redis.conf's `pgcache.sources`, applied by `register`, may have declared the named
    // sources anew.
    let settings = module::parameters::settings();
    report::info::register(ctx);
    module::server_events::subscribe(ctx);
    let named = source::register(&settings.named).inspect_err(|_| source::unregister_all())?;
    if let Err(e) = start_threads(ctx, &settings, &named) {
        source::unregister_all();
        return Err(e);
    }
    if let Err(e) = source::start_all(ctx, &settings, &named) {
        let _ = cache::worker::stop();
        stop_threads();
        source::unregister_all();
        return Err(e);
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
    for source in &settings.named {
        ctx.log_notice(&format!(
            "pgcache: source {}: PostgreSQL {}, pool {}",
            source.name,
            source.settings.pg.describe(),
            source.settings.pool_size
        ));
    }
    Ok(())
}

/// Module arguments, then environment, checked and installed.
fn load_settings(args: &[RedisString]) -> Result<config::Settings, Error> {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    let settings = config::load(&args, &|name| std::env::var(name).ok())?;
    if settings.pg.password().is_some_and(config::is_masked) {
        return Err(Error::setting(
            "pg_password",
            "the value is the mask an earlier pgcache version left in the module arguments \
             (CONFIG REWRITE saved it); put the real password back in the loadmodule line, or \
             give it through PGPASSWORD, PGCACHE_PG_PASSWORD or a passfile",
        ));
    }
    module::parameters::init(&settings)?;
    Ok(settings)
}

/// Logs each environment variable that reads as a setting of a source no one declared: it is
/// ignored, which its author would not guess.
fn warn_of_undeclared_sources(ctx: &Context, settings: &config::Settings) {
    let variables: Vec<String> = (std::env::vars_os())
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    for (variable, name) in
        config::undeclared_source_variables(settings, variables.iter().map(String::as_str))
    {
        ctx.log_warning(&format!(
            "pgcache: {variable} is ignored: it reads as a setting of a source \"{name}\", which \
             is not declared; name it in PGCACHE_SOURCES or give a `source {name}` block"
        ));
    }
}

/// Every command, as each describes itself; PGCACHE.DEBUG only with `debug_commands yes`.
fn register_commands(ctx: &Context, debug_commands: bool) -> Result<(), Error> {
    let debug = debug_commands.then_some(&commands::debug::DEBUG);
    let categories = commands::docs::add_category(ctx);
    for command in commands::ALL.into_iter().chain(debug) {
        commands::docs::register(ctx, command)?;
        if categories {
            commands::docs::set_category(ctx, command.name);
        }
    }
    Ok(())
}

/// The threads every source's requests go through: the deadline thread, the workers (with
/// queues for the default source and each of `named`), the metrics endpoint and the
/// main-thread hand-over; on a failure, what was started is
/// stopped again.
fn start_threads(
    ctx: &Context,
    settings: &config::Settings,
    named: &[SourceId],
) -> Result<(), Error> {
    requests::blocked::start_deadlines()
        .map_err(|e| Error::internal(format!("cannot start the deadline thread: {e}")))?;
    let pools: Vec<(SourceId, usize)> = std::iter::once((SourceId::DEFAULT, settings.pool_size))
        .chain((named.iter().zip(&settings.named)).map(|(&id, n)| (id, n.settings.pool_size)))
        .collect();
    if let Err(e) = cache::worker::start(settings.workers, &pools, settings.queue_size) {
        requests::blocked::stop_deadlines();
        return Err(Error::internal(format!("cannot start worker threads: {e}")));
    }
    if settings.metrics_port != 0
        && let Err(e) = report::metrics::start(&settings.metrics_bind, settings.metrics_port)
    {
        let _ = cache::worker::stop();
        requests::blocked::stop_deadlines();
        return Err(Error::setting(
            "metrics_port",
            format!(
                "cannot listen on {}:{}: {e}",
                settings.metrics_bind, settings.metrics_port
            ),
        ));
    }
    if let Err(e) = redis::main_thread::init(ctx) {
        report::metrics::stop();
        let _ = cache::worker::stop();
        requests::blocked::stop_deadlines();
        return Err(Error::internal(format!(
            "cannot set up the hand-over to the main thread: {e}"
        )));
    }
    Ok(())
}

/// Stops what `start_threads` started but the workers (stopped first, where an unload may
/// still be refused).
fn stop_threads() {
    redis::main_thread::deinit();
    report::metrics::stop();
    requests::blocked::stop_deadlines();
}

fn deinit(ctx: &Context) -> Status {
    if redis::main_thread::pending() {
        ctx.log_warning(
            "pgcache: refusing to unload while work for the main thread is queued (a flush, \
             invalidations, hook deliveries or the index epoch); retry shortly",
        );
        return Status::Err;
    }
    if let Err(e) = source::may_stop().and_then(|()| cache::worker::stop()) {
        ctx.log_warning(&format!("pgcache: refusing to unload: {e}"));
        return Status::Err;
    }
    source::stop_all();
    stop_threads();
    source::unregister_all();
    // Loaded again, the module may find entries stored while it was away.
    cache::emptied::forget_all();
    module::parameters::deinit();
    stats::forget();
    stats::slowlog::forget();
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
