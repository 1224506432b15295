//! PGCACHE.SLOWLOG: slow calls, with the part that was slow (PostgreSQL or the queue).
use pgcache_testkit::*;
use std::time::Duration;

/// One slowlog entry: id, unix time, duration µs, command, table, key, rows, slow part,
/// queue µs, PostgreSQL µs.
#[derive(Debug)]
struct Entry {
    id: i64,
    unix_time: i64,
    duration_us: i64,
    command: String,
    table: String,
    key: String,
    rows: i64,
    slow_part: String,
    queue_us: i64,
    postgres_us: i64,
}

fn slowlog_get(con: &mut redis::Connection, count: i64) -> Vec<Entry> {
    let entries: Vec<redis::Value> = redis::cmd("PGCACHE.SLOWLOG")
        .arg("GET")
        .arg(count)
        .query(con)
        .unwrap();
    entries
        .into_iter()
        .map(|e| {
            let f: Vec<redis::Value> = redis::from_redis_value(e).unwrap();
            let int = |i: usize| redis::from_redis_value::<i64>(f[i].clone()).unwrap();
            let text = |i: usize| redis::from_redis_value::<String>(f[i].clone()).unwrap();
            Entry {
                id: int(0),
                unix_time: int(1),
                duration_us: int(2),
                command: text(3),
                table: text(4),
                key: text(5),
                rows: int(6),
                slow_part: text(7),
                queue_us: int(8),
                postgres_us: int(9),
            }
        })
        .collect()
}

fn slowlog(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    redis::cmd("PGCACHE.SLOWLOG").arg(args).query(con)
}

const SLOW_VIEW_SQL: &str = "
    CREATE VIEW slow_users AS SELECT u.*, pg_sleep(0.3) IS NULL AS slept FROM users u;
";

#[test]
fn slow_calls_are_logged_with_the_slow_part() {
    let stack = Stack::start_with(&format!("{USERS_SQL}{SLOW_VIEW_SQL}"), &["workers", "1"]);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap(); // connects and learns the table
    config_set(&mut con, "pgcache.slowlog_threshold_us", "100000").unwrap();
    slowlog(&mut con, &["RESET"]).unwrap();

    // A slow query occupies the only worker; a fast read queued behind it waits.
    let mut other = stack.redis.connection();
    let slow = std::thread::spawn(move || {
        read(&mut other, "slow_users", r#"{"id":2}"#)
            .unwrap()
            .unwrap();
    });
    wait_for("the slow query to run", Duration::from_secs(10), || {
        let running: i64 = stack
            .pg
            .superuser()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%slow_users%' \
                 AND state = 'active' AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        (running > 0).then_some(())
    });
    read(&mut con, "users", r#"{"id":5}"#).unwrap().unwrap();
    slow.join().unwrap();

    let entries = slowlog_get(&mut con, -1);
    let by_table = |table: &str| entries.iter().find(|e| e.table == table).unwrap();
    let view = by_table("slow_users");
    assert_eq!(view.command, "read");
    assert_eq!(view.key, r#"{"id":2}"#);
    assert_eq!(view.rows, 1);
    assert_eq!(view.slow_part, "postgres", "{view:?}");
    assert!(view.duration_us >= 300_000, "{view:?}");
    assert!(view.postgres_us >= 300_000, "{view:?}");
    let queued = by_table("users");
    assert_eq!(queued.key, r#"{"id":5}"#);
    assert_eq!(queued.slow_part, "queue", "{queued:?}");
    assert!(queued.queue_us > queued.postgres_us, "{queued:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - 60..=now + 1).contains(&view.unix_time), "{view:?}");
}

#[test]
fn get_len_reset_and_the_settings_behave_like_redis() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    config_set(&mut con, "pgcache.slowlog_threshold_us", "0").unwrap();
    slowlog(&mut con, &["RESET"]).unwrap();
    for id in 1..=3 {
        write(&mut con, "users", &format!(r#"{{"id":{id}}}"#), "{}").unwrap();
    }
    let len: i64 = redis::cmd("PGCACHE.SLOWLOG")
        .arg("LEN")
        .query(&mut con)
        .unwrap();
    assert_eq!(len, 3);
    let newest = slowlog_get(&mut con, 2);
    assert_eq!(newest.len(), 2);
    assert!(newest[0].id > newest[1].id, "newest first");
    assert_eq!(newest[0].key, r#"{"id":3}"#);
    assert_eq!(newest[0].command, "write");
    assert_eq!(newest[0].slow_part, "redis", "no PostgreSQL involved");
    assert_eq!((newest[0].queue_us, newest[0].postgres_us), (0, 0));

    // A long key is cut like Redis cuts long arguments (this one is also refused: the
    // entry shows the arguments as sent).
    let long = format!(r#"{{"id":"{}"}}"#, "1".repeat(300));
    write(&mut con, "users", &long, "{}").unwrap_err();
    let cut = &slowlog_get(&mut con, 1)[0];
    assert!(cut.key.ends_with("more bytes)"), "{cut:?}");

    config_set(&mut con, "pgcache.slowlog_max_len", "2").unwrap();
    assert_eq!(slowlog_get(&mut con, -1).len(), 2);
    config_set(&mut con, "pgcache.slowlog_threshold_us", "-1").unwrap();
    read(&mut con, "users", r#"{"id":9}"#).unwrap();
    assert_eq!(slowlog_get(&mut con, -1)[0].key, cut.key, "-1 logs nothing");
    slowlog(&mut con, &["RESET"]).unwrap();
    assert!(slowlog_get(&mut con, 10).is_empty());

    for (args, needle) in [
        (vec!["GET", "x"], "count must be an integer"),
        (vec!["LEN", "1"], "usage: PGCACHE.SLOWLOG"),
        (vec!["FROB"], "usage: PGCACHE.SLOWLOG"),
    ] {
        let e = slowlog(&mut con, &args).unwrap_err().to_string();
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    let e = config_set(&mut con, "pgcache.slowlog_max_len", "-5")
        .unwrap_err()
        .to_string();
    assert!(e.contains("slowlog_max_len"), "{e}");
}
