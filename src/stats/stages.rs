//! Where a call that waited for a worker (a miss) spent its time, stage by stage, so that a
//! user sees why a miss was slow: waiting for a worker (and for the batch it joined to
//! start), the worker's PostgreSQL work, the wake-up of the main thread, the fill of the
//! cache, and the reply. The stages follow one another, so their sums add up to `total`'s
//! but for the few microseconds between one clock reading and the next.

use super::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Queue,
    Postgres,
    Wakeup,
    Fill,
    Reply,
    Total,
}

/// What a stage is called in the figures that report it.
pub struct Named {
    pub stage: Stage,
    /// The metrics endpoint's `stage` label.
    pub label: &'static str,
    pub p50: &'static str,
    pub p99: &'static str,
    pub avg: &'static str,
    pub help: &'static str,
}

pub const STAGES: [Named; 6] = [
    Named {
        stage: Stage::Queue,
        label: "queue",
        p50: "miss_queue_p50_us",
        p99: "miss_queue_p99_us",
        avg: "miss_queue_avg_us",
        help: "from the call blocking to its request going out: a worker taking it up (waiting for a worker, and for the job a batched miss joined to start), or the event loop sending it at the end of the turn",
    },
    Named {
        stage: Stage::Postgres,
        label: "postgres",
        p50: "miss_postgres_p50_us",
        p99: "miss_postgres_p99_us",
        avg: "miss_postgres_avg_us",
        help: "PostgreSQL's part: on a worker a connection, the round trips (learning a new statement's catalog too) and the rows made JSON; on the event loop from the request sent to its answer read, after the requests ahead of it on the connection",
    },
    Named {
        stage: Stage::Wakeup,
        label: "wakeup",
        p50: "miss_wakeup_p50_us",
        p99: "miss_wakeup_p99_us",
        avg: "miss_wakeup_avg_us",
        help: "from the answer handed to Redis (by a worker, or by the event loop's read callback) to the main thread taking it up (the event loop's other work meanwhile)",
    },
    Named {
        stage: Stage::Fill,
        label: "fill",
        p50: "miss_fill_p50_us",
        p99: "miss_fill_p99_us",
        avg: "miss_fill_avg_us",
        help: "on the main thread: caching the answer (and indexing a row-precise result) and answering the fill's other waiters",
    },
    Named {
        stage: Stage::Reply,
        label: "reply",
        p50: "miss_reply_p50_us",
        p99: "miss_reply_p99_us",
        avg: "miss_reply_avg_us",
        help: "writing the reply to the client's buffer",
    },
    Named {
        stage: Stage::Total,
        label: "total",
        p50: "miss_total_p50_us",
        p99: "miss_total_p99_us",
        avg: "miss_total_avg_us",
        help: "the whole miss, from the call blocking to its reply written",
    },
];

/// One source's misses, a histogram per stage.
pub struct Stages([Histogram; STAGES.len()]);

impl Stages {
    /// All empty (const, so a source's figures can be a `static`).
    pub const fn new() -> Stages {
        Stages([const { Histogram::new() }; STAGES.len()])
    }

    /// Notes that one miss spent `us` microseconds in `stage`.
    pub fn record(&self, stage: Stage, us: u64) {
        self.histogram(stage).record(us);
    }

    /// The figures of `stage`, for STATS, INFO and the metrics endpoint.
    pub fn histogram(&self, stage: Stage) -> &Histogram {
        &self.0[stage as usize]
    }

    /// Every stage back to empty (PGCACHE.STATS RESET).
    pub fn reset(&self) {
        self.0.iter().for_each(Histogram::reset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_is_named_in_its_own_place() {
        for (n, named) in STAGES.iter().enumerate() {
            assert_eq!(named.stage as usize, n);
            assert!(named.p50.contains(named.label) && named.avg.contains(named.label));
        }
    }
}
