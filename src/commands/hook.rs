//! PGCACHE.HOOK ADD <name> ON <events> [TABLE <table>] PUBLISH <channel> | XADD <stream>
//! [MAXLEN ~ n], PGCACHE.HOOK DEL <name>, PGCACHE.HOOK LIST, and PGCACHE.HOOK SYNC
//! <definitions> (what a primary sends its replicas: replaces every hook).
//! See the `hooks` module for how hooks persist and replicate.

use crate::commands::utf8;
use crate::error::Error;
use crate::hooks::{self, DEFAULT_HOOK, Hook, Target};
use crate::reply::Reply;
use crate::tunables;
use redis_module::{CallOptionsBuilder, CallResult, Context, ContextFlags, raw};

const USAGE: &str = "usage: PGCACHE.HOOK ADD <name> ON <event>[,<event>...] [TABLE <table>] \
                     PUBLISH <channel> | XADD <stream> [MAXLEN ~ <n>] | DEL <name> | LIST";

pub fn hook(ctx: &Context, args: &[&[u8]]) -> Reply {
    let Some(sub) = args.get(1) else {
        return Reply::WrongArity;
    };
    let words: Vec<&str> = match args[2..].iter().map(|a| utf8(a, "argument")).collect() {
        Ok(w) => w,
        Err(e) => return e.into(),
    };
    let result = match sub.to_ascii_uppercase().as_slice() {
        b"LIST" if words.is_empty() => return list(),
        b"ADD" => changing(ctx, || hooks::add(Hook::parse(&words)?)),
        b"DEL" if words.len() == 1 => changing(ctx, || {
            if hooks::remove(words[0]) {
                Ok(())
            } else if words[0] == DEFAULT_HOOK {
                Err(format!(
                    "{DEFAULT_HOOK:?} is the built-in hook: turn it off with CONFIG SET pgcache.events none"
                ))
            } else {
                Err(format!("no hook named {:?}", words[0]))
            }
        }),
        b"SYNC" if words.len() <= 1 => {
            changing(ctx, || hooks::set_all(words.first().copied().unwrap_or("")))
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => Reply::Ok,
        Err(e) => Error::new(e).into(),
    }
}

/// Applies a change of the hooks: refused on a replica unless it comes from its primary
/// (or the AOF); then replicated as sent and saved with CONFIG REWRITE.
fn changing(ctx: &Context, change: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let flags = ctx.get_flags();
    if flags.contains(ContextFlags::SLAVE) && !flags.contains(ContextFlags::REPLICATED) {
        return Err(
            "this server is a replica: change hooks on its primary, which passes them on".into(),
        );
    }
    change()?;
    // SAFETY: command context.
    unsafe { raw::RedisModule_ReplicateVerbatim.unwrap()(ctx.ctx) };
    if !flags.contains(ContextFlags::LOADING) {
        save(ctx);
    }
    Ok(())
}

/// Writes `pgcache.hooks` to redis.conf, so the hooks survive a restart.
fn save(ctx: &Context) {
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let result: CallResult = ctx.call_ext("CONFIG", &options, &["REWRITE"]);
    if let Err(e) = result {
        ctx.log_warning(&format!(
            "pgcache: hooks changed but not saved ({}): they last until redis-server stops; \
             run it with a configuration file, or put them in pgcache.hooks",
            e.to_utf8_string().unwrap_or_default()
        ));
    }
}

fn list() -> Reply {
    let default = Hook {
        name: DEFAULT_HOOK.into(),
        events: tunables::events(),
        table: None,
        target: Target::Publish(tunables::event_channel()),
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
        field("table", hook.table.clone().map_or(Reply::Nil, Reply::Bulk)),
        field("action", Reply::Bulk(action.into())),
        field("target", Reply::Bulk(target)),
        field("definition", Reply::Bulk(hook.render())),
    ])
}
