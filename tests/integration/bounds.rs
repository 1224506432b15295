//! Every queue, map and list that input can grow has a bound; each test here pushes past
//! one. (The schema cache's spellings and the slowlog have theirs tested in robustness.rs
//! and slowlog.rs.)
use pgcache_testkit::*;
use std::time::Duration;

#[test]
fn a_storm_of_flushes_runs_one_flush_per_table_that_still_drops_every_entry() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let mut fill = redis::pipe();
    for id in 0..20_000 {
        fill.cmd("PGCACHE.WRITE")
            .arg("users")
            .arg(format!(r#"{{"id":{id}}}"#))
            .arg(format!(r#"{{"id":{id},"name":"w"}}"#))
            .ignore();
    }
    let _: () = fill.query(&mut con).unwrap();
    // A thousand FLUSHes, a WRITE between two of them, then the number of flushes running,
    // all in one pipeline: no timer runs in between, so every FLUSH finds the first under way.
    let mut storm = redis::pipe();
    for i in 0..1000 {
        storm.cmd("PGCACHE.FLUSH").arg("users").ignore();
        if i == 500 {
            storm
                .cmd("PGCACHE.WRITE")
                .arg("users")
                .arg(r#"{"id":-1}"#)
                .arg(r#"{"id":-1,"name":"between"}"#)
                .ignore();
        }
    }
    storm.cmd("INFO").arg("pgcache");
    let (info,): (String,) = storm.query(&mut con).unwrap();
    assert!(
        info.contains("pgcache_flushes_running:1\r"),
        "one flush for the table: {}",
        info.lines()
            .find(|l| l.contains("flushes_running"))
            .unwrap_or("")
    );
    wait_keys_at_most(&mut con, "pg_cache:users:*", 0);
    assert_eq!(stats_figure(&mut con, "flushes_running"), 0);
    assert_eq!(
        stats_figure(&mut con, "flushes"),
        1000,
        "every FLUSH counted"
    );
}

#[test]
fn an_invalidation_backlog_past_its_bound_becomes_flushes_of_its_tables() {
    const TABLES: usize = 26;
    const ROWS: usize = 4_000; // under BULK_KEYS, so each table's keys stay deletions
    let mut sql = TRIGGER_SQL.to_string();
    for t in 0..TABLES {
        sql.push_str(&format!(
            "CREATE TABLE t{t} (id integer PRIMARY KEY, v integer NOT NULL);
             INSERT INTO t{t} SELECT g, 0 FROM generate_series(1, {ROWS}) g;
             SELECT pgcache_watch('t{t}');"
        ));
    }
    let stack = Stack::start_with(&sql, &["debug_commands", "yes"]);
    let mut con = stack.con();
    for t in 0..TABLES {
        read(&mut con, &format!("t{t}"), r#"{"id":1}"#).unwrap();
    }
    // While the main thread applies nothing (as behind a long script, whatever the time the
    // transaction and its notifications take on a loaded machine), one transaction names
    // 104,000 keys, more than the backlog's 100,000.
    debug(&mut con, "INVALIDATIONS", "HOLD");
    let mut update = String::from("BEGIN;");
    for t in 0..TABLES {
        update.push_str(&format!("UPDATE t{t} SET v = v + 1;"));
    }
    update.push_str("COMMIT;");
    stack.pg.execute(&update);
    wait_for(
        "the backlog to become flushes",
        Duration::from_secs(60),
        || (stats_figure(&mut con, "invalidation_backlog_flushes") == 1).then_some(()),
    );
    debug(&mut con, "INVALIDATIONS", "RELEASE");
    wait_keys_at_most(&mut con, "pg_cache:t*", 0);
    for t in 0..TABLES {
        let row = read(&mut con, &format!("t{t}"), r#"{"id":1}"#)
            .unwrap()
            .unwrap();
        assert_eq!(json(&row)["v"], 1, "t{t}");
    }
    assert!(stack.redis.log().contains("flushing their tables instead"));
}

#[test]
fn deliveries_raised_in_one_command_past_their_bound_are_dropped_and_counted() {
    const ROWS: usize = 12_000;
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let mut args = pg.module_args();
    args.extend([
        "hooks".to_string(),
        "exp ON expire XADD expired".to_string(),
    ]);
    let redis = Redis::start_with(&args, &["--enable-debug-command", "yes"], &[]).unwrap();
    let mut con = redis.connection();
    // Entries expire only when read, so one MGET expires them all inside one command.
    let _: () = redis::cmd("DEBUG")
        .arg(&["SET-ACTIVE-EXPIRE", "0"])
        .query(&mut con)
        .unwrap();
    let keys: Vec<String> = (0..ROWS)
        .map(|id| format!(r#"pg_cache:users:{{"id":{id}}}"#))
        .collect();
    let mut fill = redis::pipe();
    for id in 0..ROWS {
        fill.cmd("PGCACHE.WRITE")
            .arg("users")
            .arg(format!(r#"{{"id":{id}}}"#))
            .arg(format!(r#"{{"id":{id}}}"#))
            .arg(1)
            .ignore();
    }
    let _: () = fill.query(&mut con).unwrap();
    wait_for("the entries to expire", Duration::from_secs(10), || {
        // The last one written expires last.
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&keys[ROWS - 1])
            .query(&mut con)
            .unwrap();
        (ttl == -2).then_some(())
    });
    let _: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys[..ROWS - 1])
        .query(&mut con)
        .unwrap();
    let delivered = 1 + 10_000; // the PTTL's expiry, then the bound's worth from the MGET
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let len: usize = redis::cmd("XLEN").arg("expired").query(&mut con).unwrap();
        if len == delivered {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{len} delivered, {} expirations, {} hook errors",
            stats_figure(&mut con, "expirations"),
            stats_figure(&mut con, "hook_errors")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stats_figure(&mut con, "expirations"), ROWS as i64);
    assert_eq!(
        stats_figure(&mut con, "hook_errors"),
        (ROWS - delivered) as i64
    );
    assert!(redis.log().contains("deliveries raised in one command"));
}

#[test]
fn misses_past_the_queue_are_refused_and_leave_no_fill_behind() {
    let stack = Stack::start_with(
        USERS_SQL,
        &["debug_commands", "yes", "workers", "1", "queue_size", "4"],
    );
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    debug(&mut con, "FILLS", "HOLD");
    // 60 clients miss 60 different keys while the one worker holds what it fetched.
    let readers: Vec<_> = (2..62)
        .map(|id| spawn_read(stack.redis.port, "users", format!(r#"{{"id":{id}}}"#)))
        .collect();
    wait_for(
        "every miss answered or waiting",
        Duration::from_secs(10),
        || {
            let refused = stats_figure(&mut con, "errors_queue_full");
            let waiting = blocked_clients(&mut con);
            (refused + waiting == 60 && waiting > 0).then_some(())
        },
    );
    let refused = stats_figure(&mut con, "errors_queue_full");
    assert!(
        refused > 0,
        "60 misses, one held worker and a queue of 4: some must be refused"
    );
    let in_flight = stats_figure(&mut con, "fills_in_flight");
    assert_eq!(
        in_flight,
        blocked_clients(&mut con),
        "one fill per waiting client, no fill for a refused one"
    );
    debug(&mut con, "FILLS", "RELEASE");
    let replies: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let answered = replies.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    assert_eq!(
        answered as i64, in_flight,
        "the waiting ones got their rows"
    );
    let refusals = replies
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.to_string().contains("queue")))
        .count();
    assert_eq!(
        refusals as i64, refused,
        "the others were told the queue is full"
    );
    wait_for("no fill left", Duration::from_secs(10), || {
        (stats_figure(&mut con, "fills_in_flight") == 0).then_some(())
    });
}

#[test]
fn hooks_past_their_bound_are_refused() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let add = |con: &mut redis::Connection, i: usize| {
        redis::cmd("PGCACHE.HOOK")
            .arg(&[
                "ADD",
                &format!("h{i}"),
                "ON",
                "write",
                "PUBLISH",
                &format!("c{i}"),
            ])
            .query::<String>(con)
    };
    let added = (0..100).take_while(|i| add(&mut con, *i).is_ok()).count();
    assert_eq!(added, 64, "hooks added before the first refusal");
    let e = add(&mut con, added).unwrap_err().to_string();
    assert!(e.contains("at most 64 hooks"), "{e}");
    let _: String = redis::cmd("PGCACHE.HOOK")
        .arg(&["DEL", "h0"])
        .query(&mut con)
        .unwrap();
    add(&mut con, 1000).unwrap();
}
