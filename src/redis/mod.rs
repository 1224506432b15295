//! The Redis API edge: what pgcache asks of the server it runs in, below everything that
//! knows about rows, and the only place with `unsafe`: every raw module-API call is made
//! here, behind a safe function or type (as redismodule-rs fences its raw calls).
//!
//! Commands: registering them with their COMMAND INFO (`command`), the arguments of a call
//! (`args`), replies (`reply`), blocking a client and answering it from any thread
//! (`blocking`). Data: the keyspace (`keyspace`), PUBLISH (`pubsub`). The server: INFO
//! sections (`info`), CONFIG parameters (`config`), its own events (`server_events`), the
//! replication role (`role`), the ACL checks Redis makes for its own commands (`acl`), where a
//! key's slot is served in a cluster (`cluster`), and running work on the main thread from
//! anywhere (`main_thread`, woken through `wake`), sockets the event loop watches for
//! pgcache (`fds`).

pub mod acl;
pub mod args;
pub mod blocking;
pub mod clock;
pub mod cluster;
pub mod command;
pub mod config;
pub mod fds;
pub mod info;
pub mod keyspace;
pub mod main_thread;
pub mod paused;
pub mod persistence;
pub mod pubsub;
pub mod reply;
pub mod role;
pub mod server_events;
pub mod wake;
