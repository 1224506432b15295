//! Chaos under load: 50 clients mix every reading and writing command while writers change
//! the rows in PostgreSQL, and faults are injected one at a time, again and again:
//! PostgreSQL restarted and frozen, pgcache's connections terminated, statement timeouts,
//! Redis's memory limit under both eviction policies, MODULE UNLOAD + LOAD, a restart from
//! the AOF and a replica promoted. No crash, no request without a reply, no malformed reply;
//! every row served is a version PostgreSQL committed for that key, column for column, and
//! outside a fault not older than the version committed a second before the request; after
//! every fault's recovery the cache fills again, and the raw entries on the primary and on
//! its replica are no older than PostgreSQL's rows once notifications arrived.
//!
//! `PGCACHE_CHAOS_SECONDS` long (0, the default: every fault once, held briefly), with
//! `PGCACHE_CHAOS_CLIENTS` clients (50).
mod faults;
mod history;
mod load;
mod report;
mod verify;

use faults::{ALL, World};
use history::History;
use load::Tally;
use pgcache_testkit::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn faults_under_load_never_crash_hang_or_serve_a_wrong_or_stale_row() {
    let seconds = env_number("PGCACHE_CHAOS_SECONDS", 0);
    let clients = env_number("PGCACHE_CHAOS_CLIENTS", 50);
    let hold = Duration::from_millis(if seconds == 0 { 1500 } else { 5000 });
    let pg = Pg::start();
    pg.execute(&load::schema_sql());
    let module_args = pg.module_args();
    let redis = Redis::start_with(&module_args, &["--appendonly", "yes"], &[]).unwrap();
    let replica = Redis::start_with(
        &module_args,
        &["--replicaof", "127.0.0.1", &redis.port.to_string()],
        &[],
    )
    .unwrap();
    let rows = load::static_rows(&pg);
    let history = Arc::new(History::default());
    history.start(verify::rows_in_postgres(&pg), Instant::now());
    let mut world = World {
        pg,
        redis,
        replica,
        module_args,
        hold,
    };
    println!("chaos: {clients} clients, faults held {hold:?}, {seconds} s (0: every fault once)");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let pings: load::Pings = Arc::default();
    let port = world.redis.port;
    let mut threads = Vec::new();
    for i in 0..clients {
        let (tally, stop, rows) = (tally.clone(), stop.clone(), rows.clone());
        let history = history.clone();
        threads.push(std::thread::spawn(move || {
            load::client(port, 1 + i, tally, stop, rows, history)
        }));
    }
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let (pg_port, stop, history) = (world.pg.port, stop.clone(), history.clone());
            std::thread::spawn(move || load::writer(pg_port, 1000 + i, stop, history))
        })
        .collect();
    {
        let (pings, stop) = (pings.clone(), stop.clone());
        threads.push(std::thread::spawn(move || load::pinger(port, pings, stop)));
    }

    // A calm stretch first, for PING's latency without a fault.
    let calm_start = Instant::now();
    std::thread::sleep(hold);
    let baseline = (calm_start, Instant::now());
    let started = Instant::now();
    let mut windows = Vec::new();
    let mut crashes = 0;
    let mut stale = 0;
    let mut examples = Vec::new();
    'run: loop {
        for fault in ALL {
            let window = world.inject(fault);
            println!(
                "chaos: {} in {:.1} s, recovered: {:?}",
                fault.name(),
                (window.end - window.start).as_secs_f64(),
                window.recovery
            );
            windows.push(window);
            for server in [&mut world.redis, &mut world.replica] {
                if !server.alive() {
                    crashes += 1;
                    break 'run;
                }
            }
            let (n, e) = verify::stale_entries(
                &world.pg,
                world.redis.port,
                Some(world.replica.port),
                &history,
                fault.name(),
            );
            stale += n;
            examples.extend(e);
            if seconds > 0 && started.elapsed() > Duration::from_secs(seconds) {
                break 'run;
            }
        }
        if seconds == 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let committed: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    if crashes == 0 {
        let (n, e) = verify::stale_entries(
            &world.pg,
            world.redis.port,
            Some(world.replica.port),
            &history,
            "the run",
        );
        stale += n;
        examples.extend(e);
    }
    // Rows older than the bound are stale unless a fault that excuses them explains them
    // (PostgreSQL unreachable, the node replaced): a stalled feed or a lost listener does not.
    let old_rows = tally.old_rows.lock().unwrap().clone();
    let old_outside_faults = old_rows
        .iter()
        .filter(|sent| {
            !windows
                .iter()
                .any(|w| w.fault.excuses_old_rows() && w.covers(**sent))
        })
        .count() as u64;
    let findings = report::Findings {
        crashes,
        stale,
        committed,
        old: old_rows.len() as u64,
        old_outside_faults,
    };
    report::print(&tally, &windows, &pings, baseline, &findings);
    for example in &examples {
        println!("stale: {example}");
    }
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(crashes, 0, "a server crashed:\n{}", world.redis.log());
    assert_eq!(count(&tally.no_reply), 0, "requests without a reply");
    assert_eq!(count(&tally.malformed), 0, "malformed replies");
    assert_eq!(
        count(&tally.wrong_rows),
        0,
        "rows of another key, or never committed"
    );
    assert_eq!(
        old_outside_faults, 0,
        "rows older than the freshness bound allows, outside faults that excuse them"
    );
    assert_eq!(stale, 0, "stale entries: {examples:?}");
    assert!(
        windows.iter().all(|w| w.recovery.is_some()),
        "pgcache answered from PostgreSQL again after every fault"
    );
    for server in [&world.redis, &world.replica] {
        assert!(
            !server.log().contains("internal error"),
            "a contained panic:\n{}",
            server.log()
        );
    }
}
