//! Invalidation driven by PostgreSQL. `listener` LISTENs on a PostgreSQL connection of its own
//! and turns notifications into changes; `apply` applies them on the Redis main thread, and
//! decides when cached entries can be trusted at all.

pub mod apply;
pub mod listener;

pub use apply::{deinit, init};
