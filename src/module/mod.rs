//! pgcache as a module of the server: its settings, installed at load and changed through
//! CONFIG (`parameters`), and the server's own events it follows (`server_events`:
//! expirations, evictions, replicas, loads and promotions).

pub mod parameters;
pub mod server_events;
