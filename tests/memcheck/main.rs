//! valgrind memcheck over a short mixed workload: hits, misses, errors, timeouts,
//! invalidations, hooks, an UNLOAD and a LOAD, then SHUTDOWN. Run by `make memcheck`
//! (scripts/memcheck.sh), which builds a Redis with libc malloc and names a valgrind wrapper
//! in PGCACHE_TEST_SERVER: ignored by a plain `cargo test`.
use pgcache_testkit::*;
use std::time::Duration;

/// valgrind's loss records of definitely lost blocks: (bytes, whether a frame is pgcache's,
/// the record).
fn definitely_lost(log: &str) -> Vec<(u64, bool, String)> {
    let mut records = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(at) = line.find(" bytes in ") else {
            continue;
        };
        if !line.contains("definitely lost in loss record") {
            continue;
        }
        // "==1== 48 (32 direct, 16 indirect) bytes in 1 blocks are definitely lost ..."
        let head = line[..at].split("== ").nth(1).unwrap_or("");
        let bytes = head
            .split_whitespace()
            .next()
            .and_then(|n| n.replace(',', "").parse().ok())
            .unwrap_or(0);
        let mut stack = String::from(line);
        while let Some(frame) = lines.next_if(|l| l.contains(" at 0x") || l.contains(" by 0x")) {
            stack.push('\n');
            stack.push_str(frame);
        }
        // Redis is C: a frame in a Rust source file is pgcache's or a crate it links.
        let ours = stack.contains(".rs:") || stack.contains("libpgcache");
        records.push((bytes, ours, stack));
    }
    records
}

#[test]
#[ignore = "run by make memcheck under valgrind"]
fn a_mixed_workload_loses_no_memory_in_pgcache() {
    let dir = std::env::temp_dir().join(format!("pgcache-memcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("valgrind.log");
    let pg = Pg::start();
    pg.execute(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users');
         CREATE VIEW slow_users AS SELECT u.*, pg_sleep(0.5)::text AS slept FROM users u;"
    ));
    let mut args = pg.module_args();
    args.extend(
        [
            "hooks",
            "audit ON write,invalidate,expire XADD audit MAXLEN ~ 100; ops ON error PUBLISH ops",
            "statement_timeout_ms",
            "200",
        ]
        .map(String::from),
    );
    let mut redis = Redis::start_with(
        &args,
        &[],
        &[("PGCACHE_VALGRIND_LOG", log_path.to_str().unwrap())],
    )
    .unwrap();
    let mut con = redis.connection();
    let workload = |con: &mut redis::Connection| {
        for id in 1..=40 {
            let pk = format!(r#"{{"id":{id}}}"#);
            read(con, "users", &pk).unwrap(); // miss, then fill
            read(con, "users", &pk).unwrap(); // hit
        }
        let _ = multiread(con, "users", &id_array(1..=60));
        let _ = read(con, "no_such_table", r#"{"id":1}"#); // error
        let _ = read(con, "users", "not json"); // error
        let _ = read(con, "slow_users", r#"{"id":1}"#); // statement timeout
        write(con, "users", r#"{"id":1000}"#, r#"{"id":1000}"#).unwrap();
        invalidate(con, "users", r#"{"id":1000}"#).unwrap();
        let _: Option<String> = redis::cmd("PGCACHE.GET")
            .arg(r#"pg_cache:users:{"id":2}"#)
            .query(con)
            .unwrap();
        let _: redis::Value = redis::cmd("PGCACHE.STATS").query(con).unwrap();
        for _ in 0..3 {
            let _ = config_get(con, "pgcache.*");
            config_set(con, "pgcache.default_ttl", "600").unwrap();
            let _ = config_set(con, "pgcache.default_ttl", "not a number");
        }
    };
    workload(&mut con);
    pg.execute("UPDATE users SET name = name || '!' WHERE id <= 20");
    wait_gone(&mut con, r#"pg_cache:users:{"id":1}"#);
    // Unload and load again, then the same work with the new instance.
    wait_for("DRAIN, then MODULE UNLOAD", Duration::from_secs(60), || {
        let waiting: i64 = redis::cmd("PGCACHE.DRAIN").arg(5).query(&mut con).ok()?;
        (waiting == 0)
            .then(|| {
                redis::cmd("MODULE")
                    .arg(&["UNLOAD", "pgcache"])
                    .query::<()>(&mut con)
                    .ok()
            })
            .flatten()
    });
    let _: () = redis::cmd("MODULE")
        .arg("LOAD")
        .arg(module_path().to_str().unwrap())
        .arg(&args)
        .query(&mut con)
        .unwrap();
    workload(&mut con);
    redis.shutdown();

    let log = std::fs::read_to_string(&log_path).unwrap();
    let summary: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("definitely lost:")
                || l.contains("indirectly lost:")
                || l.contains("ERROR SUMMARY")
        })
        .collect();
    println!("memcheck: {}", summary.join("\nmemcheck: "));
    let records = definitely_lost(&log);
    let ours: Vec<&(u64, bool, String)> = records.iter().filter(|r| r.1).collect();
    let ours_bytes: u64 = ours.iter().map(|r| r.0).sum();
    let all_bytes: u64 = records.iter().map(|r| r.0).sum();
    println!(
        "memcheck: definitely lost {all_bytes} bytes in {} records; {ours_bytes} bytes in pgcache's frames",
        records.len()
    );
    for record in &records {
        println!("{}\n", record.2);
    }
    assert_eq!(ours_bytes, 0, "definitely lost in pgcache: {:?}", ours);
    // Invalid reads and writes and uses of uninitialised memory, wherever they are, and the
    // definite losses (scripts/memcheck.sh counts no other leak kind as an error).
    let errors = log
        .lines()
        .find_map(|l| l.split("ERROR SUMMARY: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse::<u64>().ok())
        .expect("valgrind's ERROR SUMMARY");
    assert_eq!(errors, records.len() as u64, "memory errors:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
