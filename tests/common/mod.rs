//! Real servers for integration tests: a private PostgreSQL (copied from an initdb template,
//! own port) and a private redis-server or valkey-server with the built module loaded. Each
//! guard stops its process by PID and removes its directory when dropped.
// Each test crate uses part of these helpers.
#![allow(dead_code, unused_imports)]

mod cluster;
mod commands;
mod figures;
mod pg;
mod servers;

pub use cluster::*;
pub use commands::*;
pub use figures::*;
pub use pg::*;
pub use servers::*;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "pgcache-test-{tag}-{}-{n}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
