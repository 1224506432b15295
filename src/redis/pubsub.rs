//! PUBLISH through the module API: no command lookup, no reply to parse.

use redis_module::{Context, RedisString, raw};
use std::cell::RefCell;

thread_local! {
    // The last channel asked for (every miss publishes on the same one), kept between
    // calls. Main thread only.
    static LAST: RefCell<Option<(String, RedisString)>> = const { RefCell::new(None) };
}

/// A channel's name as Redis holds it, for one or more messages. Main thread only.
pub fn channel(ctx: &Context, name: &str) -> RedisString {
    LAST.with_borrow_mut(|last| {
        if let Some((kept, channel)) = last.as_ref()
            && kept == name
        {
            return channel.safe_clone(ctx);
        }
        let channel = RedisString::create_from_slice(std::ptr::null_mut(), name.as_bytes());
        let handed = channel.safe_clone(ctx);
        *last = Some((name.to_string(), channel));
        handed
    })
}

/// Publishes `message` on `channel`. Main thread only.
pub fn publish(ctx: &Context, channel: &RedisString, message: &str) {
    let message = RedisString::create_from_slice(ctx.ctx, message.as_bytes());
    // SAFETY: main thread; both strings live through the call.
    unsafe { raw::RedisModule_PublishMessage.unwrap()(ctx.ctx, channel.inner, message.inner) };
}
