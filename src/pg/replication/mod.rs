//! PostgreSQL's logical replication: a replication connection (`connection`, over the framing
//! and start-up of `pg::wire`), the stream's messages inside COPY data (`stream`), the
//! `pgoutput` plugin's messages (`pgoutput`), and what PostgreSQL says about the slot and the
//! publication (`slot`).

pub mod connection;
pub mod pgoutput;
pub mod slot;
pub mod stream;
