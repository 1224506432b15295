//! PGCACHE.HOOK ADD <name> ON <events> [TABLE <table>] PUBLISH <channel> | XADD <stream>
//! [MAXLEN ~ n], PGCACHE.HOOK DEL <name>, PGCACHE.HOOK LIST, and PGCACHE.HOOK SYNC
//! <definitions> (what a primary sends its replicas: replaces every hook).
//! See the `hooks` module for how hooks persist and replicate.

use crate::commands::docs::{Arg, Command, Keys, Params};
use crate::commands::utf8;
use crate::config::current;
use crate::error::Error;
use crate::events::hooks::{self, DEFAULT_HOOK, Hook, Target};
use crate::redis::acl;
use crate::requests::reply::Reply;
use redis_module::{Context, ContextFlags};

pub static HOOK: Command = Command {
    name: "pgcache.hook",
    entry: super::command_fn!(HOOK),
    handler: hook,
    tracked: None,
    flags: "admin may-replicate",
    summary: "Adds, removes or lists the hooks that deliver cache events",
    since: "0.1.0",
    complexity: "O(H) for H hooks",
    keys: Keys::None,
    tips: "",
    args: Params::new(&[
        Arg::text("ADD | DEL | LIST | SYNC"),
        Arg::text("definition").optional().multiple(),
    ]),
};

const USAGE: &str = "usage: PGCACHE.HOOK ADD <name> ON <event>[,<event>...] [SOURCE <name>] [TABLE <table>] \
                     PUBLISH <channel> | XADD <stream> [MAXLEN ~ <n>] [BY <user>] | DEL <name> | LIST";

pub fn hook(ctx: &Context, args: &[&[u8]]) -> Reply {
    let sub = args[1];
    let words: Vec<&str> = match args[2..].iter().map(|a| utf8(a, "argument")).collect() {
        Ok(w) => w,
        Err(e) => return e.into(),
    };
    let result = match sub.to_ascii_uppercase().as_slice() {
        b"LIST" if words.is_empty() => return list(),
        b"ADD" => add(ctx, &words),
        b"DEL" if words.len() == 1 => changing(ctx, || {
            if hooks::remove(words[0]) {
                Ok(())
            } else if words[0] == DEFAULT_HOOK {
                Err(Error::invalid(format!(
                    "{DEFAULT_HOOK:?} is the built-in hook: turn it off with CONFIG SET pgcache.events none"
                )))
            } else {
                Err(Error::invalid(format!("no hook named {:?}", words[0])))
            }
        }),
        b"SYNC" if words.len() <= 1 => {
            if !from_primary_or_aof(ctx) {
                return Error::invalid(
                    "HOOK SYNC is what a primary sends its replicas; to replace every hook, \
                     CONFIG SET pgcache.hooks",
                )
                .into();
            }
            changing(ctx, || hooks::set_all(words.first().copied().unwrap_or("")))
        }
        _ => Err(Error::invalid(USAGE)),
    };
    match result {
        Ok(()) => Reply::Ok,
        Err(e) => e.into(),
    }
}

/// Whether the command comes from this server's primary or from its AOF, which only carry
/// what a user was already allowed to do.
fn from_primary_or_aof(ctx: &Context) -> bool {
    ctx.get_flags()
        .intersects(ContextFlags::REPLICATED | ContextFlags::LOADING)
}

/// ADD: the hook acts for the ACL user who adds it, and only if that user may write its
/// stream (and trim it, with MAXLEN) or publish on its channel. It replicates with its
/// owner spelled out (`BY <user>`), since replicas and the AOF run it without a user.
fn add(ctx: &Context, args: &[&str]) -> Result<(), Error> {
    let words = hooks::definition::words_of_arguments(args)?;
    let mut hook = Hook::parse(&words.iter().map(String::as_str).collect::<Vec<_>>())?;
    // A source this server does not serve is a mistake worth saying at once (its events
    // would never come); the primary's and the AOF's word is taken as it is.
    if let Some(source) = &hook.source
        && !from_primary_or_aof(ctx)
    {
        current::named(source.as_bytes())?;
    }
    if !from_primary_or_aof(ctx)
        && let Some(user) = acl::current_user(ctx)
    {
        if hook.owner != acl::DEFAULT_USER && hook.owner != user {
            return Err(Error::invalid(format!(
                "hook {}: BY {} names another user; a hook acts for the user who adds it \
                 (here {user:?})",
                hook.name, hook.owner
            )));
        }
        hook.owner = user;
        hooks::owner_may_deliver(ctx, &hook).map_err(|refused| Error::invalid({
            format!(
                "hook {}: {refused}; a hook delivers with the ACL permissions of the user who adds it",
                hook.name
            )
        }))?;
    }
    let definition = hook.words();
    changing_as(ctx, Some(&definition), || hooks::add(hook))
}

/// Applies a change of the hooks: refused on a replica unless it comes from its primary
/// (or the AOF); then replicated as sent and saved with CONFIG REWRITE.
fn changing(ctx: &Context, change: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
    changing_as(ctx, None, change)
}

/// `changing`, replicating `HOOK ADD <definition's words>` instead of the command as sent
/// when a definition is given.
fn changing_as(
    ctx: &Context,
    definition: Option<&[String]>,
    change: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    let flags = ctx.get_flags();
    if flags.contains(ContextFlags::SLAVE) && !flags.contains(ContextFlags::REPLICATED) {
        return Err(Error::invalid(
            "this server is a replica: change hooks on its primary, which passes them on",
        ));
    }
    change()?;
    match definition {
        Some(definition) => {
            let args: Vec<&str> = std::iter::once("ADD")
                .chain(definition.iter().map(String::as_str))
                .collect();
            ctx.replicate("PGCACHE.HOOK", args.as_slice());
        }
        None => ctx.replicate_verbatim(),
    }
    if !flags.contains(ContextFlags::LOADING) {
        save(ctx);
    }
    Ok(())
}

/// Writes `pgcache.hooks` to redis.conf, so the hooks survive a restart.
fn save(ctx: &Context) {
    if let Err(why) = crate::redis::config::rewrite(ctx) {
        ctx.log_warning(&format!(
            "pgcache: hooks changed but not saved ({why}): they last until redis-server stops; \
             run it with a configuration file, or put them in pgcache.hooks"
        ));
    }
}

fn list() -> Reply {
    let default = Hook {
        name: DEFAULT_HOOK.into(),
        events: current::events(),
        source: None,
        table: None,
        target: Target::Publish(current::event_channel()),
        owner: acl::DEFAULT_USER.into(),
    };
    let mut entries = vec![describe(&default)];
    entries.extend(hooks::all().iter().map(|h| describe(h)));
    Reply::Array(entries)
}

fn describe(hook: &Hook) -> Reply {
    let (action, target) = match &hook.target {
        Target::Publish(channel) => ("publish", channel.clone()),
        Target::Xadd { stream, .. } => ("xadd", stream.clone()),
    };
    let field = |name: &str, value: Reply| (name.to_string(), value);
    Reply::Map(vec![
        field("name", Reply::Bulk(hook.name.clone())),
        field("events", Reply::Bulk(hook.events.render())),
        field(
            "source",
            hook.source.clone().map_or(Reply::Nil, Reply::Bulk),
        ),
        field("table", hook.table.clone().map_or(Reply::Nil, Reply::Bulk)),
        field("action", Reply::Bulk(action.into())),
        field("target", Reply::Bulk(target)),
        field("owner", Reply::Bulk(hook.owner.clone())),
        field("definition", Reply::Bulk(hook.render())),
    ])
}
