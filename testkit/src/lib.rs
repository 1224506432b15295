//! What pgcache's tests share: real servers (a private PostgreSQL copied from an initdb
//! template, a private redis-server or valkey-server with the built module loaded, a Redis
//! Cluster, a proxy that can go silent), each stopped by PID and its directory removed when
//! its guard drops; the commands and figures tests read; a seeded generator; a process's
//! threads and memory. The integration suite and the reliability runs use it alike.

mod cluster;
mod commands;
mod figures;
pub mod oracle;
mod pg;
mod process;
mod proxy;
mod rng;
mod servers;

pub use cluster::*;
pub use commands::*;
pub use figures::*;
pub use pg::*;
pub use process::*;
pub use proxy::*;
pub use rng::*;
pub use servers::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository's root (this crate lives in its `testkit/`).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

pub const PG_PASSWORD: &str = "app-s3cret-pw";
const SUPERUSER_PASSWORD: &str = "super-s3cret-pw";

/// Polls `check` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port for a server to listen on: one nothing listens on now, from below Linux's
/// ephemeral range (32768 and up), and never one this process handed out before.
///
/// A port the kernel picks for `bind(0)` comes from the ephemeral range, the same range it
/// takes the local ports of outgoing connections from; between our releasing it and the
/// server binding it, a client connection of a test running alongside could take it
/// ("Address already in use"). Below that range only listeners compete, and the bind check
/// sees those.
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::Mutex;
    const FIRST: u16 = 20_000;
    const LAST: u16 = 32_000;
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let random = RandomState::new();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    (0u32..100_000)
        .map(|attempt| FIRST + (random.hash_one(attempt) % u64::from(LAST - FIRST)) as u16)
        .find(|port| !handed_out.contains(port) && TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .inspect(|port| {
            handed_out.insert(*port);
        })
        .unwrap_or_else(|| panic!("no free port left in {FIRST}..{LAST}"))
}

fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "pgcache-test-{tag}-{}-{n}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
