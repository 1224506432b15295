//! PostgreSQL's logical replication: a replication connection (`connection`, over the framing
//! of `wire`) and the `pgoutput` plugin's messages (`pgoutput`).

pub mod connection;
pub mod pgoutput;
pub mod wire;
