//! Connections the Redis event loop speaks PostgreSQL on (`cache::onloop`): the socket's
//! non-blocking bytes (`transport`) and the blocking set-up a worker does before handing
//! one over (`setup`). The protocol itself is `pg::wire`'s.

pub mod setup;
pub mod transport;
