//! PGCACHE.STATS and the pgcache INFO section (first part of the production-visibility work).
use pgcache_testkit::*;
use std::collections::HashMap;
use std::time::Duration;

fn stats(con: &mut redis::Connection) -> HashMap<String, redis::Value> {
    map_reply(con, "PGCACHE.STATS")
}

#[test]
fn counters_histograms_info_and_reset() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap(); // miss + fill
    read(&mut con, "users", r#"{"id":1}"#).unwrap(); // hit
    read(&mut con, "users", r#"{"id":999999}"#).unwrap(); // miss, absent
    read(&mut con, "users", r#"{"id":999999}"#).unwrap(); // negative hit
    let _ = read(&mut con, "nosuch", r#"{"id":1}"#); // error
    write(&mut con, "users", r#"{"id":2}"#, "{}").unwrap();
    invalidate(&mut con, "users", r#"{"id":2}"#).unwrap();
    multiread(&mut con, "users", &id_array([1, 3])).unwrap();

    let s = stats(&mut con);
    assert_eq!(figure(&s, "hits"), 2, "READ hit and MULTIREAD hit");
    assert_eq!(figure(&s, "negative_hits"), 1);
    assert_eq!(figure(&s, "misses"), 3);
    assert_eq!(figure(&s, "fills"), 3);
    assert_eq!(figure(&s, "writes"), 1);
    assert_eq!(figure(&s, "invalidations_by_command"), 1);
    assert_eq!(figure(&s, "errors"), 1);
    wait_for("the listener", Duration::from_secs(10), || {
        let listener: String =
            redis::from_redis_value(stats(&mut con)["listener"].clone()).unwrap();
        (listener == "connected").then_some(())
    });
    // The stall probe: the misses' replies ran in callbacks on the event loop.
    assert!(figure(&s, "longest_callback_us") > 0, "{s:?}");
    let read_figures = nested(&nested(&s["commands"])["read"]);
    assert_eq!(figure(&read_figures, "calls"), 5);

    // Per table: 2 READ misses + 1 READ hit + 1 negative hit + WRITE + INVALIDATE + 1
    // MULTIREAD (one hit, one miss) = 7 calls; the 5 that waited or wrote are timed.
    let users = nested(&nested(&s["tables"])["users"]);
    assert_eq!(figure(&users, "calls"), 7, "{users:?}");
    assert_eq!(figure(&users, "hits"), 3, "{users:?}");
    assert_eq!(figure(&users, "misses"), 3, "{users:?}");
    assert_eq!(figure(&users, "timed_calls"), 5, "{users:?}");
    assert!(
        figure(&users, "p99_us") >= figure(&users, "p50_us"),
        "{users:?}"
    );
    assert!(
        !nested(&s["tables"]).contains_key("nosuch"),
        "unknown tables have no figures"
    );

    // The same figures in INFO, as pgcache_<name>.
    assert_eq!(
        info_value(&mut con, "pgcache", "pgcache_hits").as_deref(),
        Some("2")
    );
    assert_eq!(
        info_value(&mut con, "pgcache", "pgcache_read_calls").as_deref(),
        Some("5")
    );
    assert!(info_value(&mut con, "pgcache", "pgcache_read_p99_us").is_some());
    assert!(info_value(&mut con, "pgcache", "pgcache_longest_callback_us").is_some());
    let table_line = info_value(&mut con, "pgcache", "pgcache_table_users").unwrap();
    assert!(
        table_line.starts_with(
            "calls=7,hits=3,misses=3,pass_through=0,passed_through=0,rows_too_long_for_loop=0,timed_calls=5,avg_us="
        ),
        "{table_line}"
    );
    let everything: String = redis::cmd("INFO")
        .arg("everything")
        .query(&mut con)
        .unwrap();
    assert!(everything.contains("pgcache_misses:3"));

    let ok: String = redis::cmd("PGCACHE.STATS")
        .arg("RESET")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    let s = stats(&mut con);
    assert_eq!(
        (
            figure(&s, "hits"),
            figure(&s, "misses"),
            figure(&s, "errors")
        ),
        (0, 0, 0)
    );
    assert_eq!(figure(&nested(&nested(&s["tables"])["users"]), "calls"), 0);
}

fn count_of(entries: &[HashMap<String, String>], kind: &str) -> usize {
    entries.iter().filter(|e| e["type"] == kind).count()
}

#[test]
fn real_expirations_and_evictions_are_counted_and_reach_hooks() {
    let stack = Stack::start_with(USERS_SQL, &["negative_ttl", "0"]);
    let mut con = stack.con();
    let _: String = redis::cmd("PGCACHE.HOOK")
        .arg(&["ADD", "gone", "ON", "expire,evict", "XADD", "gone"])
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("PGCACHE.READ")
        .arg("users")
        .arg(r#"{"id":1}"#)
        .arg(1)
        .query(&mut con)
        .unwrap();
    wait_for("the entry to expire", Duration::from_secs(10), || {
        // Touching the key makes Redis expire it as soon as its time is up.
        let _: Option<String> = redis::cmd("GET")
            .arg(r#"pg_cache:users:{"id":1}"#)
            .query(&mut con)
            .unwrap();
        (figure(&stats(&mut con), "expirations") == 1).then_some(())
    });
    // The hook's XADD runs from a timer after the notification (no writes inside one).
    let expired = wait_for("the expire event", Duration::from_secs(10), || {
        let entries = stream_entries(&mut con, "gone");
        (!entries.is_empty()).then_some(entries)
    });
    assert_eq!(expired[0]["type"], "cache_expire");
    assert_eq!(expired[0]["table"], "users");
    assert_eq!(expired[0]["key"], r#"{"id":1}"#);

    // Only entries with a TTL (the cache's) are evicted, not the hook's stream.
    config_set(&mut con, "maxmemory-policy", "volatile-lru").unwrap();
    let used: String = redis::cmd("INFO").arg("memory").query(&mut con).unwrap();
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    config_set(&mut con, "maxmemory", used + 20_000).unwrap();
    multiread(&mut con, "users", &id_array(1..=200)).unwrap();
    let evicted = figure(&stats(&mut con), "evictions");
    assert!(
        evicted > 0,
        "filling past maxmemory evicts entries: {evicted}"
    );
    config_set(&mut con, "maxmemory", "0").unwrap();
    wait_for(
        "an evict event per eviction",
        Duration::from_secs(10),
        || {
            let entries = stream_entries(&mut con, "gone");
            (count_of(&entries, "cache_evict") as i64 == figure(&stats(&mut con), "evictions"))
                .then_some(())
        },
    );
    let entries = stream_entries(&mut con, "gone");
    let evict = entries.iter().find(|e| e["type"] == "cache_evict").unwrap();
    assert_eq!(evict["table"], "users");
    assert!(evict["key"].starts_with(r#"{"id":"#), "{evict:?}");
}

fn health(con: &mut redis::Connection) -> HashMap<String, redis::Value> {
    map_reply(con, "PGCACHE.HEALTH")
}

fn text(map: &HashMap<String, redis::Value>, name: &str) -> String {
    redis::from_redis_value(map[name].clone()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn health_names_every_problem_and_hides_the_password() {
    let mut stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    wait_for("the listener", Duration::from_secs(10), || {
        listener_pid(&stack.pg)
    });
    let h = wait_for("a healthy report", Duration::from_secs(10), || {
        let h = health(&mut con);
        (text(&h, "status") == "ok").then_some(h)
    });
    let problems: Vec<String> = redis::from_redis_value(h["problems"].clone()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(text(&h, "postgres"), "reachable");
    assert!(figure(&h, "postgres_rtt_us") > 0);
    assert_eq!(text(&h, "listener"), "connected");
    assert_eq!(text(&h, "cluster"), "no");
    let config = format!("{:?}", h["config"]);
    assert!(
        config.contains("(set)") && !config.contains(PG_PASSWORD),
        "{config}"
    );
    assert!(
        config.contains("default_ttl"),
        "runtime settings are shown too: {config}"
    );

    stack.pg.stop();
    let h = wait_for("a degraded report", Duration::from_secs(20), || {
        let h = health(&mut con);
        (text(&h, "status") == "degraded" && text(&h, "listener") == "disconnected").then_some(h)
    });
    let problems: Vec<String> = redis::from_redis_value(h["problems"].clone()).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("PostgreSQL is unreachable")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("listener is disconnected")),
        "{problems:?}"
    );
    assert_eq!(text(&h, "postgres"), "unreachable");

    // A miss now fails, and counts once as a PostgreSQL error.
    let e = read(&mut con, "users", r#"{"id":77}"#).unwrap_err();
    assert!(e.to_string().contains("PostgreSQL unavailable"), "{e}");
    let s = stats(&mut con);
    assert_eq!(
        (figure(&s, "errors"), figure(&s, "errors_postgres")),
        (1, 1)
    );
}

/// The stages a miss goes through follow one another: their averages add up to the whole
/// miss's.
#[test]
fn a_miss_is_timed_stage_by_stage_and_the_stages_add_up() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    for id in 1..=40 {
        read(&mut con, "users", &format!(r#"{{"id":{id}}}"#)).unwrap();
    }
    for id in 1..=20 {
        let _: String = redis::cmd("PGCACHE.QUERY")
            .arg("SELECT id, name FROM users WHERE id = $1")
            .arg(1)
            .arg(id)
            .query(&mut con)
            .unwrap();
    }
    let s = stats(&mut con);
    let stages = ["queue", "postgres", "wakeup", "fill", "reply"];
    for stage in stages.iter().chain(&["total"]) {
        let (p50, p99) = (
            figure(&s, &format!("miss_{stage}_p50_us")),
            figure(&s, &format!("miss_{stage}_p99_us")),
        );
        assert!(p99 >= p50, "{stage}: {s:?}");
    }
    assert!(figure(&s, "miss_postgres_avg_us") > 0, "{s:?}");
    let total = figure(&s, "miss_total_avg_us");
    let parts: i64 = stages
        .iter()
        .map(|stage| figure(&s, &format!("miss_{stage}_avg_us")))
        .sum();
    // Each stage ends where the next starts: only truncation to whole microseconds (five
    // stages, one total) and each average's rounding part them.
    assert!(
        (total - parts).abs() <= 8,
        "stages {parts} µs, whole miss {total} µs: {s:?}"
    );
    assert!(
        info_value(&mut con, "pgcache", "pgcache_miss_total_p50_us").is_some(),
        "INFO has the stages"
    );
    let _: () = redis::cmd("PGCACHE.STATS")
        .arg("RESET")
        .query(&mut con)
        .unwrap();
    assert_eq!(figure(&stats(&mut con), "miss_total_avg_us"), 0);
}
