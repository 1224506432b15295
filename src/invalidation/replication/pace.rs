//! When the replication stream is busy: under a steady stream of small transactions, waking
//! the thread (and then the main thread) for each one costs more than handling it, so a busy
//! stream lets a few gather before the next read (measured: at 10,000 UPDATEs/s the commit to
//! entry gone p99 went from 9 to 3 ms on the project's 2-core VM, BENCHMARKS.md).
//!
//! Busy is judged from the commit times PostgreSQL sends, not from how long reads wait: those
//! waits shrink once the thread pauses, which would keep a stream that slowed down "busy".

use std::time::Duration;

/// How long a busy stream lets transactions gather after handing some over.
pub const COALESCE: Duration = Duration::from_micros(1000);

/// A stream is busy while its transactions commit this close together, on average (more
/// than about 6,500 a second).
const BUSY_INTERVAL_US: i64 = 150;

/// How far apart the stream's transactions committed, on average (recent ones weigh most).
#[derive(Default)]
pub struct Pace {
    last_commit_us: Option<i64>,
    average_interval_us: Option<i64>,
}

impl Pace {
    /// A transaction committed at `commit_time_us` (PostgreSQL's clock, microseconds).
    pub fn committed(&mut self, commit_time_us: i64) {
        if let Some(last) = self.last_commit_us {
            let interval = (commit_time_us - last).clamp(0, 1_000_000);
            self.average_interval_us = Some(match self.average_interval_us {
                Some(average) => (average * 7 + interval) / 8,
                None => interval,
            });
        }
        self.last_commit_us = Some(commit_time_us);
    }

    pub fn busy(&self) -> bool {
        self.average_interval_us
            .is_some_and(|average| average < BUSY_INTERVAL_US)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(pace: &mut Pace, from: i64, every_us: i64, count: i64) -> i64 {
        for n in 0..count {
            pace.committed(from + n * every_us);
        }
        from + count * every_us
    }

    #[test]
    fn a_stream_is_busy_while_its_transactions_commit_close_together() {
        let mut pace = Pace::default();
        assert!(!pace.busy());
        let at = commits(&mut pace, 0, 100, 50);
        assert!(pace.busy(), "10,000 commits a second");
        // Slower again (one writer committing every 300 us): read at once.
        commits(&mut pace, at, 300, 20);
        assert!(!pace.busy());
        let mut pace = Pace::default();
        commits(&mut pace, 0, 300, 50);
        assert!(!pace.busy(), "3,300 commits a second");
    }
}
