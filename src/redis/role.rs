//! What this server is in its replication set, for what pgcache may write.

use redis_module::{Context, ContextFlags};

/// Whether this server may write cache entries: a replica serves misses without caching
/// them, since its dataset is its primary's to write.
#[inline]
pub fn writable(ctx: &Context) -> bool {
    !ctx.get_flags().contains(ContextFlags::SLAVE)
}
