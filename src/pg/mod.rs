//! Everything that talks to PostgreSQL: connections, row and catalog queries, key spellings
//! and the invalidation listener. Queries run on worker threads and the listener's thread,
//! never on the Redis event loop, which only reads the in-memory schema cache.

pub mod errors;
pub mod fetch;
pub mod listener;
pub mod normalise;
pub mod pool;
pub mod query;
pub mod schema;
