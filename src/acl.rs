//! What a Redis ACL user may do with a key or a channel. Hooks write streams and publish
//! on behalf of the user who added them: the module's own calls bypass ACLs, so pgcache
//! asks Redis itself before every such write.

use crate::error::Error;
use redis_module::{Context, raw};
use std::os::raw::c_int;

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

/// Whether `user` may do `access` to `target` (a stream key or a channel), with the reason
/// when not: no such user, or its ACL rules refuse it.
pub fn check(ctx: &Context, user: &str, target: &str, access: Access) -> Result<(), Error> {
    let user_name = ctx.create_string(user);
    let target_name = ctx.create_string(target);
    // SAFETY: main thread; the user handle is freed before returning.
    unsafe {
        let handle = raw::RedisModule_GetModuleUserFromUserName.unwrap()(user_name.inner);
        if handle.is_null() {
            return Err(format!("ACL user {user:?} does not exist").into());
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
        Access::Publish => {
            format!("ACL user {user:?} may not publish on channel {target:?}").into()
        }
        Access::Append => format!("ACL user {user:?} may not write to stream {target:?}").into(),
        Access::AppendAndTrim => {
            format!("ACL user {user:?} may not write to (and trim, for MAXLEN) stream {target:?}")
                .into()
        }
    })
}
