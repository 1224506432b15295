//! Whether clients are paused (CLIENT PAUSE WRITE or ALL, a manual failover). The server
//! then forbids every write that would reach its replicas or its AOF, and stops itself (an
//! assertion when it propagates) if a module's callback makes one. So pgcache writes
//! nothing while they are: its main-thread work waits for the pause to end
//! (`main_thread`), and fills are answered without being cached (`cache::admission`).

use redis_module::raw;

/// Whether a write now would be one the server forbids. Main thread only.
pub fn writes_paused() -> bool {
    // SAFETY: a plain query of the server's state, on its main thread.
    unsafe { raw::RedisModule_AvoidReplicaTraffic.is_some_and(|paused| paused() != 0) }
}
