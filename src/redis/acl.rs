//! What a Redis ACL user may do with a key or a channel. Hooks write streams and publish
//! on behalf of the user who added them: the module's own calls bypass ACLs, so pgcache
//! asks Redis itself before every such write.

mod pattern;

use crate::error::Error;
use crate::redis::keyspace::Key;
use redis_module::{CallOptionsBuilder, CallReply, CallResult, Context, raw};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

/// The user who owns hooks defined without `BY` (and every hook of configuration files
/// written before hooks had owners).
pub const DEFAULT_USER: &str = "default";

/// What a hook does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// XADD: adds entries.
    Append,
    /// XADD with MAXLEN: adds entries and trims old ones.
    AppendAndTrim,
    /// PUBLISH on a channel.
    Publish,
}

/// The user of the client running the current command, or None when no client user is
/// attached (the primary's replication stream, the AOF being loaded: they run what a user
/// was already allowed to do).
pub fn current_user(ctx: &Context) -> Option<String> {
    // SAFETY: a command context; the returned string is ours to free.
    unsafe {
        let name = raw::RedisModule_GetCurrentUserName.unwrap()(ctx.ctx);
        if name.is_null() {
            return None;
        }
        let mut len = 0;
        let bytes = raw::RedisModule_StringPtrLen.unwrap()(name, &mut len);
        let user =
            String::from_utf8_lossy(std::slice::from_raw_parts(bytes.cast::<u8>(), len)).into();
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
        Some(user)
    }
}

/// Whether the user of the client running the current command may read `key` (true when
/// no client user is attached: replication and the AOF run what was allowed). READ and
/// MULTIREAD derive their keys, so Redis cannot check them itself. Main thread.
pub fn may_read(ctx: &Context, key: Key) -> bool {
    if !reads_may_be_refused(ctx) {
        return true;
    }
    stop_watching(ctx);
    // SAFETY: a command context; the user name and handle are freed before returning.
    unsafe {
        let user_name = raw::RedisModule_GetCurrentUserName.unwrap()(ctx.ctx);
        if user_name.is_null() {
            return true;
        }
        let user = raw::RedisModule_GetModuleUserFromUserName.unwrap()(user_name);
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, user_name);
        if user.is_null() {
            return false;
        }
        let status = raw::RedisModule_ACLCheckKeyPermissions.unwrap()(
            user,
            key.as_ptr(),
            raw::REDISMODULE_CMD_KEY_ACCESS as c_int,
        );
        raw::RedisModule_FreeModuleUser.unwrap()(user);
        status == raw::REDISMODULE_OK as c_int
    }
}

// Asking Redis costs a READ hit about a quarter of its instructions (the user is looked up
// by name and copied on every call), while most servers have no user that key patterns
// restrict. So the users are read once (ACL LIST), and any ACL command seen afterwards (a
// command filter watches for them) turns the full check on for good.
const UNKNOWN: u8 = 0;
const ALL_READ_EVERYTHING: u8 = 1;
const SOME_MAY_NOT: u8 = 2;
static USERS: AtomicU8 = AtomicU8::new(UNKNOWN);
/// The filter, while it is needed (every command pays for it): until the check is on.
static FILTER: AtomicPtr<raw::RedisModuleCommandFilter> = AtomicPtr::new(std::ptr::null_mut());

/// Watches for ACL commands (any client, script or module call). Called at load.
pub fn watch(ctx: &Context) {
    USERS.store(UNKNOWN, Ordering::Relaxed);
    // SAFETY: OnLoad context; Redis removes the filter when the module unloads. NOSELF:
    // pgcache's own ACL LIST is not a change.
    unsafe {
        if let Some(register) = raw::RedisModule_RegisterCommandFilter {
            let filter = register(
                ctx.ctx,
                Some(on_command),
                raw::REDISMODULE_CMDFILTER_NOSELF as c_int,
            );
            FILTER.store(filter, Ordering::Relaxed);
        }
    }
}

/// Runs before every command: notes ACL SETUSER, DELUSER and LOAD, which change users. A
/// panic must not unwind into Redis; if one happened, the check is turned on to be safe.
unsafe extern "C" fn on_command(filter: *mut raw::RedisModuleCommandFilterCtx) {
    let noted = crate::error::panic::catch(|| {
        // SAFETY: forwarded unchanged from Redis.
        unsafe { note_acl_change(filter) }
    });
    if noted.is_err() {
        USERS.store(SOME_MAY_NOT, Ordering::Relaxed);
    }
}

/// `on_command`'s work.
///
/// # Safety
/// `filter` must be the live filter context Redis passed.
unsafe fn note_acl_change(filter: *mut raw::RedisModuleCommandFilterCtx) {
    // SAFETY: Redis passes a live filter context; arguments 0 and 1 are live if present.
    let argument = |i| unsafe {
        let arg = raw::RedisModule_CommandFilterArgGet.unwrap()(filter, i);
        (!arg.is_null()).then(|| crate::redis::args::string_bytes(arg))
    };
    if argument(0).is_some_and(|name| name.eq_ignore_ascii_case(b"acl"))
        && argument(1).is_some_and(|sub| {
            [&b"setuser"[..], b"deluser", b"load"]
                .iter()
                .any(|change| sub.eq_ignore_ascii_case(change))
        })
    {
        USERS.store(SOME_MAY_NOT, Ordering::Relaxed);
    }
}

/// Whether some ACL user's key patterns may refuse it a read.
#[inline]
pub fn reads_may_be_refused(ctx: &Context) -> bool {
    match USERS.load(Ordering::Relaxed) {
        ALL_READ_EVERYTHING => false,
        SOME_MAY_NOT => true,
        _ => learn_whether_reads_may_be_refused(ctx),
    }
}

/// `reads_may_be_refused`'s first call: reads ACL LIST (out of line, so the check every
/// READ makes stays a load and a compare).
#[cold]
#[inline(never)]
fn learn_whether_reads_may_be_refused(ctx: &Context) -> bool {
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let users: CallResult = ctx.call_ext("ACL", &options, &["LIST"]);
    let every_user_reads_everything = match users {
        Ok(CallReply::Array(lines)) => lines.iter().all(|line| match line {
            Ok(CallReply::String(s)) => s.to_string().is_some_and(|l| reads_all_keys(&l)),
            _ => false,
        }),
        _ => false,
    };
    let state = if every_user_reads_everything {
        ALL_READ_EVERYTHING
    } else {
        SOME_MAY_NOT
    };
    // An ACL command seen meanwhile wins.
    let _ = USERS.compare_exchange(UNKNOWN, state, Ordering::Relaxed, Ordering::Relaxed);
    let refused = USERS.load(Ordering::Relaxed) != ALL_READ_EVERYTHING;
    if refused {
        stop_watching(ctx);
    }
    refused
}

/// Once the check is on for good, nothing needs watching: the filter goes, and with it its
/// cost on every command. Main thread.
fn stop_watching(ctx: &Context) {
    let filter = FILTER.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if filter.is_null() {
        return;
    }
    // SAFETY: the filter registered by `watch`, unregistered once.
    unsafe {
        if let Some(unregister) = raw::RedisModule_UnregisterCommandFilter {
            unregister(ctx.ctx, filter);
        }
    }
}

/// Whether an ACL LIST line's own rules (before any selector) let the user read every key.
fn reads_all_keys(rules: &str) -> bool {
    rules
        .split_whitespace()
        .take_while(|rule| !rule.starts_with('('))
        .any(|rule| matches!(rule, "~*" | "allkeys" | "%R~*" | "%RW~*"))
}

/// Whether the ACL user named `user` may read the key `key` (false for a user gone). For
/// work a client asked for and a worker does: the client's context is not at hand there.
/// Main thread.
pub fn user_may_read(ctx: &Context, user: &str, key: &str) -> bool {
    let user_name = ctx.create_string(user);
    let key_name = ctx.create_string(key);
    // SAFETY: main thread; the user handle is freed before returning.
    unsafe {
        let handle = raw::RedisModule_GetModuleUserFromUserName.unwrap()(user_name.inner);
        if handle.is_null() {
            return false;
        }
        let status = raw::RedisModule_ACLCheckKeyPermissions.unwrap()(
            handle,
            key_name.inner,
            raw::REDISMODULE_CMD_KEY_ACCESS as c_int,
        );
        raw::RedisModule_FreeModuleUser.unwrap()(handle);
        status == raw::REDISMODULE_OK as c_int
    }
}

/// `may_read` for a key given by name.
pub fn may_read_key(ctx: &Context, key: &str) -> bool {
    crate::redis::keyspace::with_name(ctx, key.as_bytes(), |key| may_read(ctx, key))
}

/// What a command that changes the cache does to the key it derives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// WRITE: sets the entry (new or replaced).
    Set,
    /// INVALIDATE: deletes the entry.
    Delete,
}

const KEY_REFUSED: raw::RedisModuleACLLogEntryReason =
    raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_KEY;

/// Runs `check` with the module user of the client running the current command; Ok when
/// no client user is attached (the primary's stream, the AOF: they run what a user was
/// already allowed to do), NOPERM-worded `refusal` when the check says no or the user is
/// gone. Main thread.
fn check_current_user(
    ctx: &Context,
    check: impl FnOnce(*mut raw::RedisModuleUser) -> bool,
    logged: (raw::RedisModuleACLLogEntryReason, &str),
    refusal: impl FnOnce() -> Error,
) -> Result<(), Error> {
    // SAFETY: a command or reply-callback context; the user name and handle are freed
    // before returning.
    let allowed = unsafe {
        let user_name = raw::RedisModule_GetCurrentUserName.unwrap()(ctx.ctx);
        if user_name.is_null() {
            return Ok(());
        }
        let user = raw::RedisModule_GetModuleUserFromUserName.unwrap()(user_name);
        let allowed = !user.is_null() && check(user);
        if !allowed && !user.is_null() {
            // As Redis does for its own refusals: ACL LOG shows who was refused what.
            let (reason, object) = logged;
            let object = ctx.create_string(object);
            raw::RedisModule_ACLAddLogEntry.unwrap()(ctx.ctx, user, object.inner, reason);
        }
        if !user.is_null() {
            raw::RedisModule_FreeModuleUser.unwrap()(user);
        }
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, user_name);
        allowed
    };
    if allowed { Ok(()) } else { Err(refusal()) }
}

/// Whether the current user may `change` the cache entry `key`, which WRITE and
/// INVALIDATE derive (so Redis cannot check it itself). Main thread.
pub fn may_change(ctx: &Context, key: &str, change: Change) -> Result<(), Error> {
    let flags = match change {
        Change::Set => raw::REDISMODULE_CMD_KEY_INSERT | raw::REDISMODULE_CMD_KEY_UPDATE,
        Change::Delete => raw::REDISMODULE_CMD_KEY_DELETE,
    } as c_int;
    let name = ctx.create_string(key);
    check_current_user(
        ctx,
        // SAFETY: a live user handle and string.
        |user| unsafe {
            raw::RedisModule_ACLCheckKeyPermissions.unwrap()(user, name.inner, flags)
                == raw::REDISMODULE_OK as c_int
        },
        (KEY_REFUSED, key),
        || {
            Error::redis_reply(format!(
                "NOPERM this user has no permissions to write the key {key:?}"
            ))
        },
    )
}

/// Whether the current user may delete every key that starts with `prefix` (FLUSH of a
/// table: every key under its prefix). Redis 8 and Valkey 9 answer that themselves; before
/// them, pgcache reads the user's key patterns (ACL GETUSER) and needs one that allows
/// writing and matches whatever follows the prefix. A user with selectors is refused there,
/// since which of its rule sets allowed the command cannot be told. Main thread.
pub fn may_change_every_key(ctx: &Context, prefix: &str) -> Result<(), Error> {
    let pattern = format!("{prefix}*");
    let refusal = || {
        Error::redis_reply(format!(
            "NOPERM this user has no permissions to write every key of this table \
                 ({pattern}); FLUSH needs a key pattern such as ~{pattern}"
        ))
    };
    let flags = raw::REDISMODULE_CMD_KEY_DELETE;
    let logged = (KEY_REFUSED, pattern.as_str());
    match prefix_check() {
        PrefixCheck::Valkey(check) => check_current_user(
            ctx,
            // SAFETY: a live user handle; the prefix outlives the call.
            |user| unsafe {
                check(user, prefix.as_ptr().cast(), prefix.len(), flags)
                    == raw::REDISMODULE_OK as c_int
            },
            logged,
            refusal,
        ),
        PrefixCheck::Redis(check) => {
            let name = ctx.create_string(prefix);
            check_current_user(
                ctx,
                // SAFETY: a live user handle and string.
                |user| unsafe {
                    check(user, name.inner, flags as c_int) == raw::REDISMODULE_OK as c_int
                },
                logged,
                refusal,
            )
        }
        PrefixCheck::Patterns => {
            let Some(user) = current_user(ctx) else {
                return Ok(());
            };
            check_current_user(ctx, |_| patterns_cover(ctx, &user, prefix), logged, refusal)
        }
    }
}

type RedisPrefixCheck =
    unsafe extern "C" fn(*mut raw::RedisModuleUser, *mut raw::RedisModuleString, c_int) -> c_int;
type ValkeyPrefixCheck = unsafe extern "C" fn(
    *mut raw::RedisModuleUser,
    *const std::os::raw::c_char,
    usize,
    std::os::raw::c_uint,
) -> c_int;

/// How this server tells whether a user may at every key under a prefix.
enum PrefixCheck {
    /// Redis 8+: `(user, prefix string, flags)`.
    Redis(RedisPrefixCheck),
    /// Valkey 9+: `(user, bytes, length, flags)`. Valkey exports it under the Redis name
    /// too, with its own arguments, so the Redis name must not be called there.
    Valkey(ValkeyPrefixCheck),
    /// Neither: pgcache reads the user's patterns itself.
    Patterns,
}

fn prefix_check() -> PrefixCheck {
    let mut valkey: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: GetApi writes the function's address, or nothing, into `valkey`; the
    // address found under Valkey's name has Valkey's signature.
    unsafe {
        let found = raw::RedisModule_GetApi.unwrap()(
            c"ValkeyModule_ACLCheckKeyPrefixPermissions".as_ptr(),
            (&mut valkey as *mut *mut std::ffi::c_void).cast(),
        );
        if found == raw::REDISMODULE_OK as c_int && !valkey.is_null() {
            return PrefixCheck::Valkey(std::mem::transmute::<
                *mut std::ffi::c_void,
                ValkeyPrefixCheck,
            >(valkey));
        }
        match raw::RedisModule_ACLCheckKeyPrefixPermissions {
            Some(check) => PrefixCheck::Redis(check),
            None => PrefixCheck::Patterns,
        }
    }
}

/// Whether `user`'s own key patterns (it has no selectors) let it write every key under
/// `prefix`, from ACL GETUSER.
fn patterns_cover(ctx: &Context, user: &str, prefix: &str) -> bool {
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let reply: CallResult = ctx.call_ext("ACL", &options, &["GETUSER", user]);
    let Ok(CallReply::Array(fields)) = reply else {
        return false;
    };
    let fields: Vec<_> = fields.iter().collect();
    let mut keys = None;
    let mut no_selectors = false;
    for pair in fields.chunks(2) {
        let [Ok(CallReply::String(name)), Ok(value)] = pair else {
            continue;
        };
        match (name.to_string().as_deref(), value) {
            (Some("keys"), CallReply::String(patterns)) => keys = patterns.to_string(),
            (Some("selectors"), CallReply::Array(selectors)) => no_selectors = selectors.len() == 0,
            _ => {}
        }
    }
    no_selectors
        && keys.is_some_and(|keys| {
            pattern::writable_patterns(&keys)
                .any(|p| pattern::covers_prefix(p.as_bytes(), prefix.as_bytes()))
        })
}

/// Whether the current user may reset pgcache's figures (STATS RESET): the right to reset
/// Redis's own (`CONFIG RESETSTAT`, an @admin command), which ACL rules name as
/// `+config|resetstat`. Main thread.
pub fn may_reset_figures(ctx: &Context) -> Result<(), Error> {
    let argv = [ctx.create_string("config"), ctx.create_string("resetstat")];
    let mut raw_argv: Vec<*mut raw::RedisModuleString> = argv.iter().map(|a| a.inner).collect();
    check_current_user(
        ctx,
        // SAFETY: a live user handle and argument strings.
        |user| unsafe {
            raw::RedisModule_ACLCheckCommandPermissions.unwrap()(
                user,
                raw_argv.as_mut_ptr(),
                raw_argv.len() as c_int,
            ) == raw::REDISMODULE_OK as c_int
        },
        (
            raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_CMD,
            "pgcache.stats|reset",
        ),
        || {
            Error::redis_reply(
                "NOPERM this user has no permissions to reset pgcache's figures: STATS RESET \
                 needs the right to run CONFIG RESETSTAT (ACL SETUSER <user> +config|resetstat)",
            )
        },
    )
}

/// The refusal of a derived key, worded as Redis words its own.
pub fn no_read_permission(key: &str) -> Error {
    Error::redis_reply(format!(
        "NOPERM this user has no permissions to read the key {key:?}"
    ))
}

/// Whether `user` may do `access` to `target` (a stream key or a channel), with the reason
/// when not: no such user, or its ACL rules refuse it.
pub fn check(ctx: &Context, user: &str, target: &str, access: Access) -> Result<(), Error> {
    let user_name = ctx.create_string(user);
    let target_name = ctx.create_string(target);
    // SAFETY: main thread; the user handle is freed before returning.
    unsafe {
        let handle = raw::RedisModule_GetModuleUserFromUserName.unwrap()(user_name.inner);
        if handle.is_null() {
            return Err(Error::invalid(format!("ACL user {user:?} does not exist")));
        }
        let status = match access {
            Access::Publish => {
                // 0: `target` is a channel name, not a pattern.
                raw::RedisModule_ACLCheckChannelPermissions.unwrap()(handle, target_name.inner, 0)
            }
            Access::Append | Access::AppendAndTrim => {
                let mut flags = raw::REDISMODULE_CMD_KEY_INSERT as c_int;
                if access == Access::AppendAndTrim {
                    flags |= raw::REDISMODULE_CMD_KEY_DELETE as c_int;
                }
                raw::RedisModule_ACLCheckKeyPermissions.unwrap()(handle, target_name.inner, flags)
            }
        };
        raw::RedisModule_FreeModuleUser.unwrap()(handle);
        if status == raw::REDISMODULE_OK as c_int {
            return Ok(());
        }
    }
    Err(match access {
        Access::Publish => Error::invalid(format!(
            "ACL user {user:?} may not publish on channel {target:?}"
        )),
        Access::Append => Error::invalid(format!(
            "ACL user {user:?} may not write to stream {target:?}"
        )),
        Access::AppendAndTrim => Error::invalid(format!(
            "ACL user {user:?} may not write to (and trim, for MAXLEN) stream {target:?}"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_reading_every_key_are_told_apart() {
        assert!(reads_all_keys(
            "user default on nopass sanitize-payload ~* &* +@all"
        ));
        assert!(reads_all_keys("user a on #ab allkeys +@all"));
        assert!(reads_all_keys("user a on #ab %R~* +@all"));
        assert!(!reads_all_keys(
            "user r on #ab ~pg_cache:users:* resetchannels +@all"
        ));
        assert!(!reads_all_keys("user r on #ab %W~* +@all"));
        assert!(
            !reads_all_keys("user r on #ab ~app:* +@all (~* +get)"),
            "a selector's rules are not the user's own"
        );
    }
}
