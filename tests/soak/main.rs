//! Endurance at steady load: clients read, write and invalidate while writers change rows
//! in PostgreSQL, entries expire and hooks deliver events, for `PGCACHE_SOAK_SECONDS` (60 by
//! default; `make soak` runs 30 minutes). Every interval prints the server's RSS and the
//! requests' latency percentiles; afterwards RSS growth after the warm-up stays within a few
//! percent, and PGCACHE.STATS counts exactly the calls and errors the clients saw.

use pgcache_testkit::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROWS: i64 = 3000;
const CLIENTS: u64 = 8;
/// RSS may grow this much from the end of the warm-up to the end of the run.
const RSS_GROWTH_LIMIT: f64 = 0.05;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one client sent and saw.
#[derive(Default)]
struct Sent {
    /// Calls per command as STATS names it.
    calls: BTreeMap<&'static str, u64>,
    /// Error replies (every one of them pgcache's).
    errors: u64,
    /// Latencies of this interval, in µs.
    latencies: Vec<u64>,
}

/// A reply missing this long is a hang: the run fails instead of waiting for it.
const HANG: Duration = Duration::from_secs(10);

/// One request of the mix; returns the command's STATS name and whether it was an error.
/// Panics on a request that got no reply.
fn one_request(con: &mut redis::Connection, rng: &mut Rng) -> (&'static str, bool) {
    let id = (rng.next_u64() % ROWS as u64) as i64;
    let pk = format!(r#"{{"id":{id}}}"#);
    let failed = |r: redis::RedisResult<redis::Value>| match r {
        Err(e) if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() => {
            panic!("soak: a request got no reply: {e}")
        }
        r => r.is_err(),
    };
    match rng.next_u64() % 100 {
        0..=49 => (
            "read",
            failed(
                redis::cmd("PGCACHE.READ")
                    .arg("items")
                    .arg(&pk)
                    .arg(3)
                    .query(con),
            ),
        ),
        50..=64 => (
            "get",
            failed(
                redis::cmd("PGCACHE.GET")
                    .arg(format!("pg_cache:items:{pk}"))
                    .query(con),
            ),
        ),
        65..=74 => {
            let ids: Vec<i64> = (0..10).map(|i| (id + i * 97) % ROWS).collect();
            (
                "multiread",
                failed(
                    redis::cmd("PGCACHE.MULTIREAD")
                        .arg("items")
                        .arg(id_array(ids))
                        .query(con),
                ),
            )
        }
        75..=84 => (
            "write",
            failed(
                redis::cmd("PGCACHE.WRITE")
                    .arg("items")
                    .arg(&pk)
                    .arg(format!(r#"{{"id":{id},"version":-1,"note":"written"}}"#))
                    .arg(2)
                    .query(con),
            ),
        ),
        85..=97 => (
            "invalidate",
            failed(
                redis::cmd("PGCACHE.INVALIDATE")
                    .arg("items")
                    .arg(&pk)
                    .query(con),
            ),
        ),
        // A table that does not exist: an error reply, counted as one.
        _ => (
            "read",
            failed(
                redis::cmd("PGCACHE.READ")
                    .arg("no_such_table")
                    .arg(&pk)
                    .query(con),
            ),
        ),
    }
}

#[test]
fn steady_load_keeps_memory_and_latency_flat_and_the_counters_exact() {
    let seconds = env_number("PGCACHE_SOAK_SECONDS", 60);
    let interval = Duration::from_secs((seconds / 6).clamp(5, 60));
    let stack = Stack::start_with(
        &format!(
            "CREATE TABLE items (id integer PRIMARY KEY, version integer NOT NULL, note text);
             INSERT INTO items SELECT i, 0, repeat('x', 200) FROM generate_series(0, {ROWS}) i;
             {TRIGGER_SQL}
             SELECT pgcache_watch('items');"
        ),
        &[
            "default_ttl",
            "3",
            "hooks",
            "audit ON write,invalidate XADD soak:audit MAXLEN ~ 1000; ops ON error PUBLISH soak-ops",
        ],
    );
    let mut con = stack.con();
    let pid = stack.redis.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Vec<Arc<Mutex<Sent>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let mut threads = Vec::new();
    for (i, sent) in sent.iter().enumerate() {
        let (port, stop, sent) = (stack.redis.port, stop.clone(), sent.clone());
        threads.push(std::thread::spawn(move || {
            let mut con = connect(port);
            con.set_read_timeout(Some(HANG)).unwrap();
            con.set_write_timeout(Some(HANG)).unwrap();
            let mut rng = Rng::new(i as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (command, failed) = one_request(&mut con, &mut rng);
                let took = started.elapsed().as_micros() as u64;
                let mut sent = sent.lock().unwrap();
                *sent.calls.entry(command).or_default() += 1;
                sent.errors += u64::from(failed);
                sent.latencies.push(took);
            }
        }));
    }
    let writer = {
        let (pg_port, stop) = (stack.pg.port, stop.clone());
        std::thread::spawn(move || {
            let mut pg = connect_pg(pg_port);
            let mut rng = Rng::new(99);
            let mut updates = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = (rng.next_u64() % ROWS as u64) as i32;
                pg.execute(
                    "UPDATE items SET version = version + 1 WHERE id = $1",
                    &[&id],
                )
                .unwrap();
                updates += 1;
                // Pacing, not synchronisation: a steady trickle of changes.
                std::thread::sleep(Duration::from_millis(2));
            }
            updates
        })
    };

    println!("soak: {seconds} s, {CLIENTS} clients, one line per {interval:?}");
    println!(
        "| at s | RSS MiB | requests | p50 µs | p99 µs | p99.9 µs |\n|---|---|---|---|---|---|"
    );
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(interval);
        let mut latencies: Vec<u64> = Vec::new();
        for s in &sent {
            latencies.append(&mut s.lock().unwrap().latencies);
        }
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        let rss = rss_kib(pid);
        println!(
            "| {:.0} | {:.1} | {} | {} | {} | {} |",
            started.elapsed().as_secs_f64(),
            rss as f64 / 1024.0,
            latencies.len(),
            at(0.5),
            at(0.99),
            at(0.999)
        );
        samples.push(rss);
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let updates = writer.join().unwrap();

    // Memory: the first interval is the warm-up (the cache fills, pools open).
    let warm = samples[1.min(samples.len() - 1)];
    let last = *samples.last().unwrap();
    let growth = (last as f64 - warm as f64) / warm as f64;
    println!(
        "soak: RSS {warm} KiB after warm-up, {last} KiB at the end ({:+.1} %); {updates} updates",
        growth * 100.0
    );
    assert!(
        growth <= RSS_GROWTH_LIMIT,
        "RSS grew {:.1} % after the warm-up",
        growth * 100.0
    );

    // The counters: each command's calls and the errors, exactly as the clients sent and saw.
    let stats = map_reply(&mut con, "PGCACHE.STATS");
    let commands = nested(&stats["commands"]);
    let mut total_errors = 0;
    let mut calls: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &sent {
        let s = s.lock().unwrap();
        total_errors += s.errors;
        for (command, n) in &s.calls {
            *calls.entry(command).or_default() += n;
        }
    }
    for (command, n) in calls {
        let counted: u64 =
            redis::from_redis_value(nested(&commands[command])["calls"].clone()).unwrap();
        assert_eq!(counted, n, "{command} calls");
    }
    let errors: u64 = redis::from_redis_value(stats["errors"].clone()).unwrap();
    assert_eq!(errors, total_errors, "error replies");
    assert!(!stack.redis.log().contains("internal error"));
}

fn connect_pg(port: u16) -> postgres::Client {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("app")
        .password(PG_PASSWORD)
        .dbname("app")
        .connect_timeout(HANG)
        .connect(postgres::NoTls)
        .unwrap()
}
