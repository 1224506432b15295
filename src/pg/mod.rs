//! Everything that asks PostgreSQL: connections, row and catalog queries, key spellings, and
//! the replication stream; the protocol itself without IO (`wire`), and the non-blocking
//! sockets the event loop speaks it on (`socket`).
//! Queries run on worker threads, the invalidation listener's thread and, for the misses the
//! event loop sends itself (`cache::onloop`), on the event loop through `socket` and `wire`,
//! which never wait.

pub mod circuit;
pub mod errors;
pub mod fetch;
pub mod normalise;
pub mod pool;
pub mod prepared;
pub mod query;
pub mod replication;
pub mod row;
pub mod schema;
pub mod session;
pub mod settings;
pub mod shortage;
pub mod socket;
pub mod standby;
pub mod text_value;
pub mod tls;
pub mod undo;
pub mod wire;
