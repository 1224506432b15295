//! The circuit to PostgreSQL opens for PostgreSQL's state only, and closes as soon as
//! PostgreSQL answers again (issue #70 items 5 and 6).
use crate::query::{assert_answers_as_postgres, query};
use pgcache_testkit::*;
use std::time::Duration;

const SQL: &str = "
    CREATE TABLE t (id integer PRIMARY KEY, label text NOT NULL);
    INSERT INTO t SELECT g, 'label' || g FROM generate_series(1, 2000) g;
";

const BY_ID: &str = "SELECT id, label FROM t WHERE id = $1";

/// Sets process `pid`'s open-files limit (its soft limit: raising a hard limit again takes a
/// privilege the test may not have) to `n`; returns the limit it had.
fn set_open_files_limit(pid: u32, n: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reading the limit into a valid rlimit.
    let read = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(read, 0, "prlimit: {}", std::io::Error::last_os_error());
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit with a valid rlimit and no old value asked for.
    let done = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(done, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// With no file descriptor left to redis-server, the event loop cannot open its
/// connections: that is no outage of PostgreSQL. The circuit stays closed, and every miss
/// is answered by the worker on the connection it already has (issue #70 item 5: misses
/// failed with "PostgreSQL unavailable ... (os error 24)").
#[test]
fn running_out_of_file_descriptors_is_not_postgresql_being_down() {
    let stack = Stack::start_with(
        &format!("{SQL} {TRIGGER_SQL}"),
        &[
            "workers",
            "1",
            "pool_size",
            "1",
            "loop_connections",
            "0",
            "request_timeout_ms",
            "30000",
            "debug_commands",
            "yes",
        ],
    );
    stack.pg.execute("SELECT pgcache_watch('t')");
    let mut con = stack.con();
    // Misses may go out from the loop however long the machine's load makes them take.
    debug(&mut con, "PIPELINE", "ALWAYS");
    // The worker's connection is open; from here on redis-server can open no file at all
    // (no descriptor is free below a limit of none), the test's connections stay.
    query(&mut con, BY_ID, &["1"]).unwrap();
    let limit = set_open_files_limit(stack.redis.pid(), 0);
    config_set(&mut con, "pgcache.loop_connections", "2").unwrap();
    // (Redis opens its log file for each line: nothing is logged while the limit holds.)
    let mut id = 1;
    wait_for(
        "the event loop to fail to open its connections",
        Duration::from_secs(30),
        || {
            id += 1;
            let param = id.to_string();
            let reply = query(&mut con, BY_ID, &[&param]).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_answers_as_postgres(&stack, BY_ID, &[&param], &reply);
            (stats_figure(&mut con, "pg_connects_short") > 0).then_some(())
        },
    );
    for id in id + 1..id + 300 {
        let param = id.to_string();
        let reply = query(&mut con, BY_ID, &[&param]).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_answers_as_postgres(&stack, BY_ID, &[&param], &reply);
    }
    assert_eq!(stats_figure(&mut con, "postgres_circuit_open"), 0);
    assert_eq!(stats_figure(&mut con, "errors"), 0);
    // Files can be opened again: the event loop opens its connections, and logs why it
    // could not before.
    set_open_files_limit(stack.redis.pid(), limit);
    wait_for("the loop's connections", Duration::from_secs(30), || {
        id += 1;
        query(&mut con, BY_ID, &[&id.to_string()]).unwrap();
        (stats_figure(&mut con, "loop_connections_opened") == 2).then_some(())
    });
    let log = stack.redis.log();
    assert!(!log.contains("PostgreSQL cannot be reached"), "{log}");
}

/// After an outage long enough for the prober to check only every second, PostgreSQL back is
/// found by the requests: once the circuit's last check is 100 ms old, the next miss goes to
/// PostgreSQL as the check, so no miss is refused with a check older than that (issue #70
/// item 6: misses failed for up to the prober's second after PostgreSQL was back).
#[test]
fn postgresql_back_is_found_by_the_next_miss_not_the_prober_s_next_probe() {
    let mut stack = Stack::start_with(&format!("{SQL} {TRIGGER_SQL}"), &[]);
    stack.pg.execute("SELECT pgcache_watch('t')");
    let mut con = stack.con();
    query(&mut con, BY_ID, &["1"]).unwrap();
    stack.pg.stop();
    let mut id = 1;
    wait_for("the circuit to open", Duration::from_secs(30), || {
        id += 1;
        query(&mut con, BY_ID, &[&id.to_string()])
            .err()
            .filter(|e| e.to_string().contains("PostgreSQL unavailable for"))
    });
    // The outage lasts two seconds, with no request: the prober's pauses grow to a second.
    std::thread::sleep(Duration::from_secs(2));
    stack.pg.restart();
    let answered = wait_for("a miss answered", Duration::from_secs(30), || {
        id += 1;
        match query(&mut con, BY_ID, &[&id.to_string()]) {
            Ok(reply) => Some(reply),
            Err(e) => {
                let e = e.to_string();
                let checked: f64 = e
                    .split("last checked ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("not the circuit's refusal: {e}"));
                assert!(
                    checked <= 0.1,
                    "refused with PostgreSQL back and its last check {checked} s old: {e}"
                );
                None
            }
        }
    });
    assert_answers_as_postgres(&stack, BY_ID, &[&id.to_string()], &answered);
}
