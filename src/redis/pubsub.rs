//! PUBLISH through the module API: no command lookup, no reply to parse.

use redis_module::{Context, RedisString, raw};

/// Publishes `message` on `channel`. Main thread only.
pub fn publish(ctx: &Context, channel: &RedisString, message: &str) {
    let message = RedisString::create_from_slice(ctx.ctx, message.as_bytes());
    // SAFETY: main thread; both strings live through the call.
    unsafe { raw::RedisModule_PublishMessage.unwrap()(ctx.ctx, channel.inner, message.inner) };
}
