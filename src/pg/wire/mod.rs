//! PostgreSQL's frontend/backend protocol without IO: bytes in, messages and events out;
//! requests in, bytes out. No sockets, no Redis, no runtime, so the Redis event loop can
//! speak PostgreSQL on non-blocking sockets it owns (issue #52) and every rule of the
//! protocol is tested against any chunking of the stream.
//! - `backend`: the messages PostgreSQL sends, taken whole from a buffer; a length peek.
//! - `frontend`: the messages a query connection sends (Parse, Bind, Execute, Sync...).
//! - `auth`: start-up and authentication (cleartext, md5, SCRAM-SHA-256) as a state machine;
//!   the replication connection drives it today.
//! - `conn`: one query connection's pipeline: prepared names, the READ ONLY wrap, each
//!   request's rows or refusal, what breaks the connection.

pub mod auth;
pub mod backend;
pub mod conn;
pub mod frontend;

#[cfg(test)]
mod server;
