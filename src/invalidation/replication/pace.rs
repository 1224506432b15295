//! When the replication stream is busy: under a steady stream of small transactions, waking
//! the thread (and then the main thread) for each one costs more than handling it, so a busy
//! stream lets a few gather before the next read (measured: at 10,000 UPDATEs/s the commit to
//! entry gone p99 went from 9 to 3 ms on the project's 2-core VM, BENCHMARKS.md).

use std::time::Duration;

/// How long a busy stream lets transactions gather after handing some over.
pub const COALESCE: Duration = Duration::from_micros(1000);

/// A stream is busy while the next message arrives within this, on average, of a read.
const BUSY_WAIT: Duration = Duration::from_micros(300);

/// How long reads have waited for the stream's next message, on average (recent ones weigh
/// most): short waits mean a steady stream, whose messages are worth gathering; a quiet one
/// is read at once.
#[derive(Default)]
pub struct Pace {
    average_wait_us: u64,
}

impl Pace {
    /// A read waited `wait` for its message (or for nothing, that long).
    pub fn waited(&mut self, wait: Duration) {
        let wait_us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.average_wait_us = (self.average_wait_us * 7 + wait_us.min(1_000_000)) / 8;
    }

    pub fn busy(&self) -> bool {
        u128::from(self.average_wait_us) < BUSY_WAIT.as_micros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_busy_while_messages_keep_arriving_at_once() {
        let mut pace = Pace::default();
        for _ in 0..20 {
            pace.waited(Duration::from_micros(50));
        }
        assert!(pace.busy());
        // A quiet stream (a message every few milliseconds) is read at once again.
        for _ in 0..5 {
            pace.waited(Duration::from_millis(5));
        }
        assert!(!pace.busy());
        // A read that found nothing counts as a long wait.
        let mut pace = Pace::default();
        pace.waited(Duration::from_millis(50));
        assert!(!pace.busy());
    }
}
