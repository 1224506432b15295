//! Section 18, sources standing alone (issue #53): the default source's READ hit p99 and miss
//! p50 while a named source's PostgreSQL (a server of its own) is frozen (SIGSTOP: no reset,
//! no answer, its misses waiting), against the same with both up, rounds alternating in one
//! run, and the paired ratio of each round (the issue's target: at most 1.10).

use super::median;
use pgcache_testkit::*;
use std::time::{Duration, Instant};

const ROUNDS: usize = 6;
/// Hits timed per round (of rows cached before), and misses (rows never read before).
const HITS: usize = 5_000;
const MISSES: usize = 300;
/// The frozen source's misses waiting while the default's are timed.
const FROZEN_WAITING: usize = 8;
const TABLE_SQL: &str = "CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL);
    INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 200000) g;";

fn pk(id: usize) -> String {
    format!(r#"{{"id":{id}}}"#)
}

/// Sends `signal` (`-STOP`, `-CONT`) to every process of `pg`.
fn signal(pg: &Pg, signal: &str) {
    for pid in pg.pids() {
        let _ = std::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status();
    }
}

/// The `p`th percentile of `durations`, in microseconds.
fn percentile_us(mut durations: Vec<Duration>, p: f64) -> f64 {
    durations.sort();
    let at = ((durations.len() as f64 - 1.0) * p).round() as usize;
    durations[at].as_secs_f64() * 1e6
}

/// The default source's hit p99 and miss p50 (µs), its misses the next `MISSES` ids.
fn measure(con: &mut redis::Connection, next_miss: &mut usize) -> (f64, f64) {
    let mut hits = Vec::with_capacity(HITS);
    for i in 0..HITS {
        let started = Instant::now();
        read(con, "users", &pk(1 + i % 1000)).unwrap();
        hits.push(started.elapsed());
    }
    let mut misses = Vec::with_capacity(MISSES);
    for _ in 0..MISSES {
        let started = Instant::now();
        read(con, "users", &pk(*next_miss)).unwrap();
        misses.push(started.elapsed());
        *next_miss += 1;
    }
    (percentile_us(hits, 0.99), percentile_us(misses, 0.5))
}

pub fn isolation() {
    println!("\n## 18. One source's PostgreSQL frozen: the other source's hits and misses\n");
    let pg = Pg::start();
    pg.execute(TABLE_SQL);
    let other = Pg::start();
    other.execute(TABLE_SQL);
    let mut args = pg.module_args();
    args.extend(["source".to_string(), "analytics".to_string()]);
    args.extend(other.module_args());
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    for id in 1..=1000 {
        read_until_cached(&mut con, "users", &pk(id));
    }
    let mut next_miss = 1001;
    let mut next_frozen = 1;
    println!(
        "| round | hit p99 µs, both up | one frozen | ratio | miss p50 µs, both up | one frozen | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (mut hit_ratios, mut miss_ratios) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let up = measure(&mut con, &mut next_miss);
        signal(&other, "-STOP");
        let port = redis.port;
        let waiting: Vec<_> = (0..FROZEN_WAITING)
            .map(|_| {
                next_frozen += 1;
                let id = next_frozen;
                std::thread::spawn(move || {
                    let mut cmd = redis::cmd("PGCACHE.READ");
                    cmd.arg("users").arg(pk(id)).arg("SOURCE").arg("analytics");
                    let _ = cmd.query::<redis::Value>(&mut connect(port));
                })
            })
            .collect();
        // Its misses wait, or (once they timed out) its circuit is open: frozen either way.
        wait_for(
            "the frozen source's misses",
            Duration::from_secs(30),
            || {
                let waiting = blocked_clients(&mut con) >= FROZEN_WAITING as i64;
                let stats: redis::Value = redis::cmd("PGCACHE.STATS")
                    .arg(&["SOURCE", "analytics"])
                    .query(&mut con)
                    .unwrap();
                (waiting || figure(&nested(&stats), "postgres_circuit_open") == 1).then_some(())
            },
        );
        let frozen = measure(&mut con, &mut next_miss);
        signal(&other, "-CONT");
        for thread in waiting {
            thread.join().unwrap();
        }
        let (hit, miss) = (frozen.0 / up.0, frozen.1 / up.1);
        hit_ratios.push(hit);
        miss_ratios.push(miss);
        println!(
            "| {round} | {:.0} | {:.0} | {hit:.2} | {:.0} | {:.0} | {miss:.2} |",
            up.0, frozen.0, up.1, frozen.1
        );
    }
    println!(
        "\nMedian ratio, one source frozen over both up: hit p99 {:.2}, miss p50 {:.2} (target: at most 1.10)",
        median(hit_ratios),
        median(miss_ratios)
    );
}
