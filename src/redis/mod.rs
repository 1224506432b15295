//! The Redis API edge: what pgcache asks of the server it runs in, below everything that
//! knows about rows. A command's arguments (`args`), the server's replication role (`role`),
//! the ACL checks Redis makes for its own commands (`acl`), where a key's slot is served in a
//! cluster (`cluster`), and running work on the main thread from anywhere (`main_thread`,
//! woken through `wake`).

pub mod acl;
pub mod args;
pub mod cluster;
pub mod main_thread;
pub mod role;
pub mod wake;
