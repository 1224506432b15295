//! PGCACHE.SOURCE ADD <name> [setting value ...], SET <name> setting value [...], DEL <name>,
//! LIST, and SYNC <definitions> (what a primary sends its replicas: makes the named sources
//! exactly those). A source added here is served at once and is configuration: the change
//! replicates (to replicas and the AOF) and is saved by CONFIG REWRITE as `pgcache.sources`,
//! which a restarted server reads before it starts any source. No password is ever part of
//! it: a source added here finds its password in `PGCACHE_<NAME>_PG_PASSWORD` or a passfile,
//! or keeps the one its module arguments' block gave.

use crate::commands::docs::{Arg, Command, Keys, Params};
use crate::commands::utf8;
use crate::config::{self, NamedSource, current};
use crate::error::Error;
use crate::module::parameters;
use crate::requests::reply::Reply;
use crate::source;
use redis_module::{Context, ContextFlags};

pub static SOURCE: Command = Command {
    name: "pgcache.source",
    entry: super::command_fn!(SOURCE),
    handler: source_command,
    tracked: None,
    flags: "admin may-replicate",
    summary: "Adds, changes, removes or lists the named sources (PostgreSQL databases)",
    since: "0.2.0",
    complexity: "O(S) for S sources; ADD, SET and DEL start or stop one source's connections",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[
        Arg::text("ADD | SET | DEL | LIST | SYNC"),
        Arg::text("definition").optional().multiple(),
    ]),
};

/// Most named sources one server serves: each has its threads and connections (design/53 §6).
pub const MAX_SOURCES: usize = 16;

const USAGE: &str = "usage: PGCACHE.SOURCE ADD <name> [<setting> <value> ...] | SET <name> <setting> <value> \
                     [...] | DEL <name> | LIST";

fn source_command(ctx: &Context, args: &[&[u8]]) -> Reply {
    let words: Vec<&str> = match args[2..].iter().map(|a| utf8(a, "argument")).collect() {
        Ok(words) => words,
        Err(e) => return e.into(),
    };
    let result = match (args[1].to_ascii_uppercase().as_slice(), words.as_slice()) {
        (b"LIST", []) => return list(),
        (b"ADD", [name, rest @ ..]) => {
            pairs(rest).and_then(|p| changing(ctx, || add(ctx, name, p)))
        }
        (b"SET", [name, rest @ ..]) if !rest.is_empty() => {
            pairs(rest).and_then(|p| changing(ctx, || set(ctx, name, p)))
        }
        (b"DEL", [name]) => changing(ctx, || del(ctx, name)),
        (b"SYNC", [] | [_]) => {
            if !from_primary_or_aof(ctx) {
                return Error::invalid(
                    "SOURCE SYNC is what a primary sends its replicas; change sources with \
                     PGCACHE.SOURCE ADD, SET and DEL",
                )
                .into();
            }
            changing(ctx, || sync(ctx, words.first().copied().unwrap_or("")))
        }
        _ => Err(Error::invalid(USAGE)),
    };
    match result {
        Ok(()) => Reply::Ok,
        Err(e) => e.into(),
    }
}

/// `setting value` pairs, the setting's name in lower case.
fn pairs(words: &[&str]) -> Result<Vec<(String, String)>, Error> {
    if !words.len().is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "{:?} has no value: settings come in pairs, `setting value` ({USAGE})",
            words[words.len() - 1]
        )));
    }
    Ok((words.chunks(2))
        .map(|pair| (pair[0].to_lowercase(), pair[1].to_string()))
        .collect())
}

/// Whether the command comes from this server's primary or from its AOF.
fn from_primary_or_aof(ctx: &Context) -> bool {
    ctx.get_flags()
        .intersects(ContextFlags::REPLICATED | ContextFlags::LOADING)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// ADD: declares the source as a `source` block would and starts it. Adding one that exists
/// with the same definition is a no-op (a replayed AOF, a retried ADD); with another, an
/// error (SET changes it), unless it comes from the primary or the AOF, whose word is
/// taken.
fn add(ctx: &Context, name: &str, pairs: Vec<(String, String)>) -> Result<(), Error> {
    let server = parameters::settings();
    if let Some(existing) = server.named.iter().find(|n| n.name == name) {
        if config::same_pairs(&existing.definition, &pairs) {
            return Ok(());
        }
        if from_primary_or_aof(ctx) {
            return replace(ctx, existing, pairs);
        }
        return Err(Error::invalid(format!(
            "source {name} exists ({}); change it with PGCACHE.SOURCE SET, or DEL it first",
            render(existing)
        )));
    }
    if server.named.len() >= MAX_SOURCES {
        return Err(Error::invalid(format!(
            "{MAX_SOURCES} named sources are served already, the most one server serves; \
             DEL one first"
        )));
    }
    let named = config::declare(&server, name, pairs, Vec::new(), &env)?;
    let mut next = server.named.clone();
    next.push(named.clone());
    config::refuse_shared_slots_of(&server, &next)?;
    source::add(ctx, &named)?;
    parameters::set_named(next);
    Ok(())
}

/// SET: the source's definition with `pairs` over it; the source restarts on it (its
/// clients drained first, as DEL needs).
fn set(ctx: &Context, name: &str, pairs: Vec<(String, String)>) -> Result<(), Error> {
    let server = parameters::settings();
    let existing = (server.named.iter())
        .find(|n| n.name == name)
        .ok_or_else(|| crate::model::source::unknown(name.as_bytes()))?;
    let mut definition = existing.definition.clone();
    for (setting, value) in pairs {
        match definition.iter_mut().find(|(s, _)| *s == setting) {
            Some(given) => given.1 = value,
            None => definition.push((setting, value)),
        }
    }
    if config::same_pairs(&definition, &existing.definition) {
        return Ok(());
    }
    replace(ctx, existing, definition)
}

/// Restarts `existing` on `definition`: stopped, then started anew under its name. If the new
/// one cannot start, the old one is started again and the error says why.
fn replace(
    ctx: &Context,
    existing: &NamedSource,
    definition: Vec<(String, String)>,
) -> Result<(), Error> {
    let server = parameters::settings();
    let name = existing.name.as_str();
    let named = config::declare(&server, name, definition, existing.secret.clone(), &env)?;
    let next: Vec<NamedSource> = (server.named.iter())
        .map(|n| {
            if n.name == name {
                named.clone()
            } else {
                n.clone()
            }
        })
        .collect();
    config::refuse_shared_slots_of(&server, &next)?;
    source::remove(
        current::named(name.as_bytes())?,
        name,
        from_primary_or_aof(ctx),
    )?;
    if let Err(e) = source::add(ctx, &named) {
        let restored = source::add(ctx, existing).is_ok();
        if !restored {
            let others: Vec<NamedSource> = (server.named.iter())
                .filter(|n| n.name != name)
                .cloned()
                .collect();
            parameters::set_named(others);
            // Served nowhere now: replicas, the AOF and redis.conf must say so too.
            ctx.replicate("PGCACHE.SOURCE", &["DEL", name][..]);
            if !ctx.get_flags().contains(ContextFlags::LOADING) {
                save(ctx);
            }
        }
        return Err(Error::invalid(format!(
            "{}; {}",
            e.message(),
            if restored {
                "the source runs on its earlier settings"
            } else {
                "its earlier settings did not start either: it is not served (ADD it again)"
            }
        )));
    }
    parameters::set_named(next);
    Ok(())
}

/// DEL: stops the source; its entries stay in the keyspace, unserved (an ADD under the name
/// serves them again, as after a restart: resumed from its log position, or dropped).
fn del(ctx: &Context, name: &str) -> Result<(), Error> {
    let id = current::named(name.as_bytes())?;
    source::remove(id, name, from_primary_or_aof(ctx))?;
    let others: Vec<NamedSource> = (parameters::settings().named.into_iter())
        .filter(|n| n.name != name)
        .collect();
    parameters::set_named(others);
    Ok(())
}

/// SYNC: makes the named sources those `definitions` (the `sources` setting's text) define.
fn sync(ctx: &Context, definitions: &str) -> Result<(), Error> {
    let mut wanted = parameters::settings();
    config::redeclare(&mut wanted, definitions, &env)?;
    let served = parameters::settings().named;
    for gone in served
        .iter()
        .filter(|n| !wanted.named.iter().any(|w| w.name == n.name))
    {
        del(ctx, &gone.name)?;
    }
    for named in &wanted.named {
        let existing = parameters::settings()
            .named
            .into_iter()
            .find(|n| n.name == named.name);
        match existing {
            Some(existing) if config::same_pairs(&existing.definition, &named.definition) => {}
            Some(existing) => replace(ctx, &existing, named.definition.clone())?,
            None => add(ctx, &named.name, named.definition.clone())?,
        }
    }
    Ok(())
}

/// Applies a change of the sources: refused on a replica unless it comes from its primary
/// (or the AOF); then replicated as sent and saved with CONFIG REWRITE.
fn changing(ctx: &Context, change: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
    let flags = ctx.get_flags();
    if flags.contains(ContextFlags::SLAVE) && !flags.contains(ContextFlags::REPLICATED) {
        return Err(Error::invalid(
            "this server is a replica: change sources on its primary, which passes them on",
        ));
    }
    change()?;
    ctx.replicate_verbatim();
    if !flags.contains(ContextFlags::LOADING) {
        save(ctx);
    }
    Ok(())
}

/// Writes `pgcache.sources` to redis.conf, so the sources survive a restart.
fn save(ctx: &Context) {
    if let Err(why) = crate::redis::config::rewrite(ctx) {
        ctx.log_warning(&format!(
            "pgcache: sources changed but not saved ({why}): they last until redis-server \
             stops; run it with a configuration file, or declare them in the module arguments"
        ));
    }
}

fn render(named: &NamedSource) -> String {
    config::render_definitions(&[named.declared()])
}

/// LIST: each named source's name, definition, database and change feed.
fn list() -> Reply {
    let entries = (parameters::settings().named.iter())
        .filter_map(|named| {
            let id = current::named(named.name.as_bytes()).ok()?;
            let values = current::of(id);
            let feed = if !values.listening() {
                "off"
            } else if values.feed_is_notify() {
                "notify"
            } else {
                "replication"
            };
            let field = |name: &str, value: String| (name.to_string(), Reply::Bulk(value));
            Some(Reply::Map(vec![
                field("name", named.name.clone()),
                field("definition", render(named)),
                field("postgres", named.settings.pg.describe()),
                field("feed", feed.to_string()),
            ]))
        })
        .collect();
    Reply::Array(entries)
}
