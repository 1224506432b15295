//! PostgreSQL's frontend/backend protocol without IO: bytes in, messages and events out;
//! requests in, bytes out. No sockets, no Redis, no runtime, so the Redis event loop can
//! speak PostgreSQL on non-blocking sockets it owns (issue #52) and every rule of the
//! protocol is tested against any chunking of the stream.
//! - `backend`: the messages PostgreSQL sends, taken whole from a buffer; a length peek.
//! - `auth`: start-up and authentication (cleartext, md5, SCRAM-SHA-256) as a state machine;
//!   the replication connection drives it today.

pub mod auth;
pub mod backend;

#[cfg(test)]
mod server;
