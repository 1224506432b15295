//! Everything that asks PostgreSQL: connections, row and catalog queries, key spellings, and
//! the replication stream, and the protocol itself without IO (`wire`).
//! Queries run on worker threads and the invalidation listener's thread, never on the Redis
//! event loop, which only reads the in-memory schema cache.

pub mod circuit;
pub mod errors;
pub mod fetch;
pub mod normalise;
pub mod pool;
pub mod prepared;
pub mod query;
pub mod replication;
pub mod schema;
pub mod session;
pub mod settings;
pub mod text_value;
// Parts are used by cache/onloop (issue #52); until then only the replication connection
// uses the framing and the start-up.
#[allow(dead_code)] // used by cache/onloop (issue #52)
pub mod wire;
