//! PGCACHE.SLOWLOG: the calls that took longer than `slowlog_threshold_us`, newest first,
//! at most `slowlog_max_len` of them, shaped like Redis's SLOWLOG entries.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Like Redis's SLOWLOG, long arguments are cut to this many bytes.
const MAX_KEY_BYTES: usize = 128;

// Installed at load from the settings (`config::table` holds the defaults).
static THRESHOLD_US: AtomicI64 = AtomicI64::new(0);
static MAX_LEN: AtomicU64 = AtomicU64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static LOG: Mutex<VecDeque<Entry>> = Mutex::new(VecDeque::new());

/// Which part of a call took the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowPart {
    /// Waiting for a worker (the queue is backed up).
    Queue,
    /// The PostgreSQL work (connecting included).
    Postgres,
    /// The command itself on the main thread (no PostgreSQL involved).
    Redis,
}

impl SlowPart {
    pub fn name(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub unix_time: u64,
    pub duration_us: u64,
    pub command: &'static str,
    pub table: String,
    pub key: String,
    pub rows: u64,
    pub slow_part: SlowPart,
    pub queue_us: u64,
    pub postgres_us: u64,
    /// A named source's name; None for the default source's calls.
    pub source: Option<String>,
}

pub fn threshold_us() -> i64 {
    THRESHOLD_US.load(Relaxed)
}

pub fn max_len() -> u64 {
    MAX_LEN.load(Relaxed)
}

pub fn set_threshold_us(us: i64) {
    THRESHOLD_US.store(us, Relaxed);
}

pub fn set_max_len(len: u64) {
    MAX_LEN.store(len, Relaxed);
    LOG.lock().unwrap().truncate(len as usize);
}

/// Whether a call of this duration goes in the log.
pub fn is_slow(duration_us: u64) -> bool {
    let threshold = threshold_us();
    threshold >= 0 && duration_us >= threshold as u64
}

/// Cuts a key the way Redis's SLOWLOG cuts long arguments.
pub fn truncate_key(key: &str) -> String {
    if key.len() <= MAX_KEY_BYTES {
        return key.to_string();
    }
    let mut end = MAX_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes)", &key[..end], key.len() - end)
}

/// Adds an entry (its id and time are assigned here) and returns it.
pub fn add(mut entry: Entry) -> Entry {
    entry.id = NEXT_ID.fetch_add(1, Relaxed);
    entry.unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    entry.key = truncate_key(&entry.key);
    let mut log = LOG.lock().unwrap();
    log.push_front(entry.clone());
    log.truncate(max_len() as usize);
    entry
}

/// The newest `count` entries, newest first.
pub fn newest(count: usize) -> Vec<Entry> {
    LOG.lock().unwrap().iter().take(count).cloned().collect()
}

pub fn len() -> usize {
    LOG.lock().unwrap().len()
}

pub fn reset() {
    LOG.lock().unwrap().clear();
}

/// Drops the entries and restarts the ids at MODULE UNLOAD (why: `stats::forget`).
pub fn forget() {
    reset();
    NEXT_ID.store(0, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_cut_like_redis_arguments() {
        assert_eq!(truncate_key("{\"id\":1}"), "{\"id\":1}");
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate_key(&long);
        assert!(cut.starts_with(&"é".repeat(64)), "{cut}");
        assert!(cut.ends_with("... (72 more bytes)"), "{cut}");
    }
}
