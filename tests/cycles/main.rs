//! A hundred MODULE UNLOAD / LOAD cycles under light load: once unloaded, the server has as
//! many threads and file descriptors as before them, and as much memory.
use pgcache_testkit::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const CYCLES: usize = 100;
/// Cycles before the baseline: the C library and the allocator keep caches (freed thread
/// stacks, arenas) that grow over the first few dozen loads and then stay flat.
const WARM_UP: usize = 30;
/// RSS may differ from the baseline by this fraction (the allocator's caches breathe: runs of
/// one build on Redis 7.0 measured from -7 % to +6.5 %, on Valkey within 0.3 %). A leak of a
/// thread stack's worth per cycle still grows it by far more over the 100 cycles. (Purging
/// the allocator's cache before each sample, MEMORY PURGE, steadied Redis 7.0 but made
/// Valkey 9 jump by 12 % in one run of two.)
const RSS_SLACK: f64 = 0.10;

/// Growth of used_memory over a third of the cycles that is not yet a leak: under it in
/// either later third, no cycle leaves as much as 1 KB / 33 = 31 bytes behind. Measured with
/// the keyspace emptied, a third moves by tens of bytes on Valkey 9 and Redis 7.0, whose
/// used_memory also steps up once by 0.5-1.5 KB in some runs (in one third: the other stays
/// flat), in both invalidation modes. At 4 KB, a string leaked at every look at INFO while
/// the replication source streamed (75-115 bytes a cycle) passed.
const STEADY_GROWTH: i64 = 1024;

/// A one-off step of used_memory that is not a leak: a map pgcache keeps across loads (the
/// library stays mapped) grows its table once to the most entries it ever held together,
/// and a table keeps its capacity. Since several sources' parts came (#53 steps 6b-7),
/// used_memory steps up once by 64 KiB (65,536 or 65,792 bytes) in about half the runs, in
/// whichever third the load's timing makes it, and is flat after it (2 runs of 4 on
/// c2fb0d3, 1 of 3 with named sources served). A leak grows in every third, which
/// `STEADY_GROWTH` catches.
const ONE_OFF_STEP: f64 = 128.0 * 1024.0;

fn count_entries(dir: String) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// used_memory with the module unloaded and the keyspace emptied. The light load's reads
/// leave up to 50 rows cached (each read after its own INVALIDATE, the next INVALIDATE of
/// its id 50 reads later): how many are there when memory is measured depends on the
/// machine's timing, some 220 bytes each. Unloaded, no read fills a row meanwhile.
fn used_memory_unloaded(con: &mut redis::Connection) -> i64 {
    let _: () = redis::cmd("FLUSHALL").arg("SYNC").query(con).unwrap();
    info_int(con, "memory", "used_memory")
}

/// DRAIN until nothing waits, then UNLOAD.
fn unload(con: &mut redis::Connection) {
    wait_for("DRAIN, then MODULE UNLOAD", Duration::from_secs(20), || {
        let waiting: i64 = redis::cmd("PGCACHE.DRAIN").arg(5).query(con).ok()?;
        (waiting == 0)
            .then(|| {
                redis::cmd("MODULE")
                    .arg(&["UNLOAD", "pgcache"])
                    .query::<()>(con)
                    .ok()
            })
            .flatten()
    });
}

fn load(con: &mut redis::Connection, args: &[String]) {
    let _: () = redis::cmd("MODULE")
        .arg("LOAD")
        .arg(module_path().to_str().unwrap())
        .arg(args)
        .query(con)
        .unwrap();
}

/// Threads, file descriptors and RSS (KiB) of the server `pid` once pgcache's threads exited.
fn unloaded_figures(pid: u32) -> (usize, usize, u64) {
    wait_for("pgcache's threads to exit", Duration::from_secs(20), || {
        (pgcache_threads(pid) == 0).then_some(())
    });
    (
        count_entries(format!("/proc/{pid}/task")),
        count_entries(format!("/proc/{pid}/fd")),
        rss_kib(pid),
    )
}

/// Reads (each after INVALIDATE, so most go to PostgreSQL) until `stop`; how many got a row.
fn light_load(mut con: redis::Connection, stop: Arc<AtomicBool>) -> u64 {
    let (mut id, mut answered) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        id = (id + 1) % 50;
        let pk = format!(r#"{{"id":{id}}}"#);
        let _ = invalidate(&mut con, "users", &pk);
        answered += u64::from(matches!(read(&mut con, "users", &pk), Ok(Some(_))));
        // Pacing: light load, not a flood.
        std::thread::sleep(Duration::from_millis(1));
    }
    answered
}

#[test]
fn a_hundred_unload_load_cycles_leave_threads_descriptors_and_memory_as_they_were() {
    let stack = Stack::start(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users');"
    ));
    let args = stack.pg.module_args();
    let pid = stack.redis.pid();
    let mut con = stack.con();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        // Connected before the baseline is taken, so its descriptor is in both figures.
        let (reader, stop) = (stack.con(), stop.clone());
        std::thread::spawn(move || light_load(reader, stop))
    };
    // Redis's own SLOWLOG keeps every MODULE LOAD (each takes over 10 ms) until it holds 128
    // entries: its growth is not pgcache's.
    config_set(&mut con, "slowlog-max-len", "0").unwrap();
    unload(&mut con);
    // Every loaded instance answers a miss from PostgreSQL before it goes again; the row
    // leaves the keyspace again, so memory is measured with the keyspace as it was.
    let cycle = |con: &mut redis::Connection, n: usize| {
        load(con, &args);
        let id = 100 + n % 50;
        let pk = format!(r#"{{"id":{id}}}"#);
        let _ = invalidate(con, "users", &pk);
        let row = wait_for(
            "the loaded module to answer",
            Duration::from_secs(10),
            || read(con, "users", &pk).ok().flatten(),
        );
        assert_eq!(json(&row)["id"], id, "cycle {n}");
        let _ = invalidate(con, "users", &pk);
        unload(con);
    };
    for n in 0..WARM_UP {
        cycle(&mut con, n);
    }
    let first = unloaded_figures(pid);
    let used_before = used_memory_unloaded(&mut con);
    // used_memory a third and two thirds of the way.
    let mut used_between = [0i64; 2];
    for cycle in 0..CYCLES {
        load(&mut con, &args);
        // Every loaded instance answers a miss from PostgreSQL before it goes again.
        let pk = format!(r#"{{"id":{}}}"#, 100 + cycle % 50);
        let _ = invalidate(&mut con, "users", &pk);
        let row = wait_for(
            "the loaded module to answer",
            Duration::from_secs(10),
            || read(&mut con, "users", &pk).ok().flatten(),
        );
        assert_eq!(json(&row)["id"], 100 + cycle % 50, "cycle {cycle}");
        // The row leaves the keyspace again: memory is measured with the keyspace as it was.
        let _ = invalidate(&mut con, "users", &pk);
        unload(&mut con);
        for (third, used) in used_between.iter_mut().enumerate() {
            if cycle == CYCLES * (third + 1) / 3 - 1 {
                let _ = unloaded_figures(pid);
                *used = used_memory_unloaded(&mut con);
            }
        }
    }
    let last = unloaded_figures(pid);
    let used_after = used_memory_unloaded(&mut con);
    stop.store(true, Ordering::Relaxed);
    let answered = reader.join().unwrap();
    assert!(
        answered >= CYCLES as u64,
        "the load was answered between the cycles: {answered} reads in {CYCLES} cycles"
    );
    println!(
        "cycles: {CYCLES} unloads after {WARM_UP}: threads {} -> {}, descriptors {} -> {}, \
         RSS {} -> {} KiB, used_memory {used_before} -> {} -> {} -> {used_after} bytes",
        first.0, last.0, first.1, last.1, first.2, last.2, used_between[0], used_between[1]
    );
    assert_eq!(
        (last.0, last.1),
        (first.0, first.1),
        "threads and descriptors"
    );
    assert!(
        last.2 as f64 <= first.2 as f64 * (1.0 + RSS_SLACK),
        "RSS grew from {} KiB to {} KiB",
        first.2,
        last.2
    );
    // What Redis's allocator holds for live allocations, the module's included (its global
    // allocator is Redis's). Redis 7.0's grows by some 30-40 KB once in the first cycles
    // after the baseline, wherever the baseline is taken, and then not at all (200 cycles
    // probed every 10 stayed within 2 KB after the 20th). A leak grows with every cycle, so
    // in both later thirds: growth per cycle is what must be nil. (Measured before the
    // keyspace was emptied, two fresh-clone runs on a loaded machine failed here, growing
    // 5-7 KB a third: rows the light load left cached.)
    assert!(
        used_after as f64 <= used_before as f64 * 1.05 + ONE_OFF_STEP,
        "used_memory grew from {used_before} to {used_after} bytes"
    );
    let [third, two_thirds] = used_between;
    assert!(
        two_thirds - third <= STEADY_GROWTH || used_after - two_thirds <= STEADY_GROWTH,
        "used_memory still grows with every cycle: {third} bytes a third of the way, \
         {two_thirds} two thirds, {used_after} at the end"
    );
}
