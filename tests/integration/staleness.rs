//! Bounded staleness (#31): a hit is served only while the change feed vouched for the
//! cache within `max_staleness_ms` (or the call's `MAXSTALE`); past that, reads go to
//! PostgreSQL, and while PostgreSQL cannot be reached the cache answers within
//! `stale_if_error_ms`. Runs in the suite's invalidation mode (the feed is the walsender in
//! replication mode, the listener's session in notify mode).

use pgcache_testkit::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const BOUND_MS: u64 = 500;

fn watched_users(extra: &[&str]) -> Stack {
    let mut args = vec!["max_staleness_ms", "500"];
    args.extend_from_slice(extra);
    Stack::start_with(
        &format!("{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users');"),
        &args,
    )
}

fn pk(id: i32) -> String {
    format!(r#"{{"id":{id}}}"#)
}

fn cached(con: &mut redis::Connection, id: i32) -> bool {
    redis::cmd("EXISTS")
        .arg(format!("pg_cache:users:{}", pk(id)))
        .query(con)
        .unwrap()
}

fn name_of(con: &mut redis::Connection, id: i32, options: &[&str]) -> redis::RedisResult<String> {
    let row: Option<String> = redis::cmd("PGCACHE.READ")
        .arg("users")
        .arg(pk(id))
        .arg(options)
        .query(con)?;
    Ok(json(&row.expect("a row"))["name"]
        .as_str()
        .unwrap()
        .to_string())
}

/// A PostgreSQL with `users` (and what `more_sql` makes) published, and the module
/// arguments of a server that streams it with a bound of `BOUND_MS`, whatever mode the suite
/// runs in.
fn streaming_users(more_sql: &str) -> (Pg, Vec<String>) {
    let pg = Pg::start();
    pg.execute(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'replication'); {more_sql}"
    ));
    let mut args = pg.module_args();
    args.extend(["invalidation_source", "replication", "max_staleness_ms"].map(String::from));
    args.push(BOUND_MS.to_string());
    (pg, args)
}

/// READ of row 5 with `options` (WITHAGE among them): the row and its age.
fn with_age(con: &mut redis::Connection, options: &[&str]) -> (String, i64) {
    redis::cmd("PGCACHE.READ")
        .arg("users")
        .arg(pk(5))
        .arg(options)
        .query(con)
        .unwrap()
}

fn health(con: &mut redis::Connection) -> HashMap<String, redis::Value> {
    map_reply(con, "PGCACHE.HEALTH")
}

fn text(map: &HashMap<String, redis::Value>, field: &str) -> String {
    redis::from_redis_value(map[field].clone()).unwrap()
}

/// Stops (SIGSTOP) or resumes (SIGCONT) the PostgreSQL backend that feeds pgcache its
/// changes: the walsender of its slot, or the listener's session.
fn signal_feed(pg: &Pg, signal: i32) {
    let pid = listener_pid(pg).expect("the feed's backend");
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Reads user 5's name (`name`) for twice the bound after its change to "changed in the
/// stall" was committed while the feed stalls: no read past the bound may answer another.
fn assert_nothing_stale_past_the_bound(mut name: impl FnMut() -> String) {
    let committed = Instant::now();
    // One probe interval (100 ms) past the bound, and a margin for this machine.
    let bound = Duration::from_millis(BOUND_MS + 100 + 150);
    let mut stale_after_the_bound = 0;
    let mut reads = 0;
    while committed.elapsed() < Duration::from_millis(2 * BOUND_MS + 500) {
        let asked = committed.elapsed();
        let answer = name();
        reads += 1;
        if asked > bound && answer != "changed in the stall" {
            stale_after_the_bound += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        stale_after_the_bound, 0,
        "{stale_after_the_bound} of {reads} reads served the old value past the bound"
    );
}

#[test]
fn a_stalled_feed_bounds_every_hit_and_reads_go_to_postgres_until_it_resumes() {
    let stack = watched_users(&[]);
    let mut con = stack.con();
    for id in 1..=20 {
        read_until_cached(&mut con, "users", &pk(id));
    }
    signal_feed(&stack.pg, libc::SIGSTOP);
    stack
        .pg
        .execute("UPDATE users SET name = 'changed in the stall' WHERE id = 5");
    assert_nothing_stale_past_the_bound(|| name_of(&mut con, 5, &[]).unwrap());
    // The cache still holds the old row: only the bound keeps it from being served. A call
    // may loosen the bound (MAXSTALE -1) or tighten it.
    assert!(cached(&mut con, 5), "the stalled feed deleted nothing");
    assert_eq!(
        name_of(&mut con, 5, &["MAXSTALE", "-1"]).unwrap(),
        "user5",
        "MAXSTALE -1 reads the cache whatever its age"
    );
    assert_eq!(
        name_of(&mut con, 5, &["MAXSTALE", "0"]).unwrap(),
        "changed in the stall"
    );
    // WITHAGE says where each answer came from: PostgreSQL now (0), the cache at its age.
    let (row, age) = with_age(&mut con, &["WITHAGE"]);
    assert_eq!(
        (json(&row)["name"].as_str(), age),
        (Some("changed in the stall"), 0)
    );
    let (row, age) = with_age(&mut con, &["MAXSTALE", "-1", "WITHAGE"]);
    assert_eq!(json(&row)["name"], "user5");
    assert!(age > BOUND_MS as i64, "{age}");
    let row: Option<String> = redis::cmd("PGCACHE.GET")
        .arg(format!("pg_cache:users:{}", pk(5)))
        .query(&mut con)
        .unwrap();
    assert_eq!(json(&row.unwrap())["name"], "changed in the stall");
    let mget: Vec<Option<String>> = redis::cmd("PGCACHE.MGET")
        .arg(format!("pg_cache:users:{}", pk(5)))
        .arg("MAXSTALE")
        .arg("100")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        json(mget[0].as_ref().unwrap())["name"],
        "changed in the stall"
    );
    let rows: Vec<Option<String>> = redis::cmd("PGCACHE.MULTIREAD")
        .arg("users")
        .arg(id_array([5, 6]))
        .query(&mut con)
        .unwrap();
    assert_eq!(
        json(rows[0].as_ref().unwrap())["name"],
        "changed in the stall"
    );
    // Nothing is filled while the feed cannot vouch for the cache.
    assert!(!cached(&mut con, 150));
    read(&mut con, "users", &pk(150)).unwrap();
    assert!(
        !cached(&mut con, 150),
        "a read past the bound filled the cache"
    );
    assert!(stats_figure(&mut con, "bypassed_stale") >= 1);
    assert_eq!(stats_figure(&mut con, "hits_served"), 0);
    let h = health(&mut con);
    assert_eq!(text(&h, "hits"), "bypassed");
    assert_eq!(text(&h, "status"), "degraded");
    let problems: Vec<String> = redis::from_redis_value(h["problems"].clone()).unwrap();
    assert!(
        problems.iter().any(|p| p.contains("has not vouched")),
        "{problems:?}"
    );
    let age: f64 = redis::from_redis_value(h["freshness_age_ms"].clone()).unwrap();
    assert!(age > BOUND_MS as f64, "the horizon's age grows: {age}");
    if invalidation_source() == "replication" {
        let lag: f64 = redis::from_redis_value(h["replication_lag_ms"].clone()).unwrap();
        assert!(
            lag > BOUND_MS as f64,
            "replication_lag_ms is the horizon's age: {lag}"
        );
    }

    signal_feed(&stack.pg, libc::SIGCONT);
    let resumed = Instant::now();
    wait_hits_served(&mut con);
    let back = resumed.elapsed();
    assert!(back < Duration::from_secs(1), "hits again after {back:?}");
    assert_eq!(name_of(&mut con, 5, &[]).unwrap(), "changed in the stall");
    // Unchanged rows kept their entries through the stall, and hits are hits again.
    let hits = stats_figure(&mut con, "hits");
    for id in (1..=4).chain(7..=20) {
        assert!(cached(&mut con, id), "entry {id} kept");
        assert_eq!(name_of(&mut con, id, &[]).unwrap(), format!("user{id}"));
    }
    assert_eq!(stats_figure(&mut con, "hits"), hits + 18);
}

/// PGCACHE.QUERY's name of user 5 with `options`, and whether it was a hit.
fn query_name(con: &mut redis::Connection, options: &[&str]) -> (String, bool) {
    let hits = stats_figure(con, "query_hits");
    let answer: String = redis::cmd("PGCACHE.QUERY")
        .arg("SELECT name FROM users WHERE id = $1")
        .arg(1)
        .arg(5)
        .arg(options)
        .query(con)
        .unwrap();
    let name = json(&answer)[0]["name"].as_str().unwrap().to_string();
    (name, stats_figure(con, "query_hits") > hits)
}

#[test]
fn query_hits_obey_the_bound_while_the_feed_stalls() {
    let stack = watched_users(&[]);
    let mut con = stack.con();
    wait_for("the result cached", Duration::from_secs(10), || {
        query_name(&mut con, &[]).1.then_some(())
    });
    signal_feed(&stack.pg, libc::SIGSTOP);
    stack
        .pg
        .execute("UPDATE users SET name = 'changed in the stall' WHERE id = 5");
    assert_nothing_stale_past_the_bound(|| query_name(&mut con, &[]).0);
    // The old result is still cached: only the bound keeps it from being served.
    assert_eq!(
        query_name(&mut con, &["MAXSTALE", "-1"]),
        ("user5".to_string(), true)
    );
    assert_eq!(
        query_name(&mut con, &["MAXSTALE", "0"]),
        ("changed in the stall".to_string(), false)
    );
    signal_feed(&stack.pg, libc::SIGCONT);
    wait_for("the change applied", Duration::from_secs(10), || {
        let (name, hit) = query_name(&mut con, &[]);
        assert_eq!(name, "changed in the stall", "after the feed resumed");
        hit.then_some(())
    });
}

#[test]
fn through_a_postgresql_outage_cached_rows_answer_within_stale_if_error_ms_and_misses_fail_fast() {
    let mut stack = watched_users(&["stale_if_error_ms", "3000"]);
    let mut con = stack.con();
    for id in 1..=5 {
        read_until_cached(&mut con, "users", &pk(id));
    }
    let mut sub = stack.redis.connection();
    let mut events = subscribe(&mut sub, "pg_cache_events");
    stack.pg.stop();
    let stopped = Instant::now();
    // Past the freshness bound, the cached rows still answer: PostgreSQL cannot.
    wait_for("the circuit to open", Duration::from_secs(10), || {
        (stats_figure(&mut con, "postgres_circuit_open") == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(BOUND_MS + 100));
    for id in 1..=5 {
        assert_eq!(name_of(&mut con, id, &[]).unwrap(), format!("user{id}"));
    }
    assert!(stats_figure(&mut con, "served_stale") >= 5);
    // Announced once, on the event channel.
    let announced = wait_for("the cache_stale event", Duration::from_secs(10), || {
        let event = next_event(&mut events);
        (event["type"] == "cache_stale").then_some(event)
    });
    assert!(
        announced["age_ms"].as_u64().unwrap() > BOUND_MS,
        "{announced}"
    );
    assert!(!announced["reason"].as_str().unwrap().is_empty());
    let h = health(&mut con);
    assert_eq!(text(&h, "hits"), "served stale");
    assert!(text(&h, "postgres_circuit").starts_with("open"));
    // A call's own bound caps it: no row older than MAXSTALE.
    let e = name_of(&mut con, 1, &["MAXSTALE", "100"]).unwrap_err();
    assert!(e.to_string().contains("MAXSTALE"), "{e}");
    // A read AFTER a position the cache has not applied asks for that position: no stale
    // hit is one, and PostgreSQL cannot answer.
    let e = name_of(&mut con, 1, &["AFTER", "FFFF/0"]).unwrap_err();
    assert!(e.to_string().contains("AFTER's position FFFF/0"), "{e}");
    // Misses fail at once, saying why and since when.
    let asked = Instant::now();
    let e = read(&mut con, "users", &pk(50)).unwrap_err().to_string();
    assert!(asked.elapsed() < Duration::from_millis(500));
    assert!(e.contains("PostgreSQL unavailable for"), "{e}");
    assert!(stats_figure(&mut con, "refused_outage") >= 1);
    // Past stale_if_error_ms, the cache no longer answers either.
    wait_for("stale_if_error_ms to pass", Duration::from_secs(10), || {
        name_of(&mut con, 1, &[]).err()
    });
    assert!(stopped.elapsed() >= Duration::from_millis(2500));
    let e = name_of(&mut con, 1, &[]).unwrap_err().to_string();
    assert!(e.contains("stale_if_error_ms"), "{e}");

    stack.pg.restart();
    wait_circuit_closed(&mut con);
    wait_hits_served(&mut con);
    assert!(read(&mut con, "users", &pk(50)).unwrap().is_some());
    assert_eq!(text(&health(&mut con), "postgres_circuit"), "closed");
}

#[test]
fn maxstale_is_checked_and_ends_mget_s_keys() {
    let stack = watched_users(&[]);
    let mut con = stack.con();
    for bad in [
        &["MAXSTALE"][..],
        &["MAXSTALE", "-2"],
        &["MAXSTALE", "soon"],
    ] {
        let e = name_of(&mut con, 1, bad).unwrap_err().to_string();
        assert!(e.contains("MAXSTALE"), "{e}");
    }
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("PGCACHE.MGET")
        .arg("a")
        .arg("b")
        .arg("MAXSTALE")
        .arg("10")
        .arg("after")
        .arg("0/1")
        .query(&mut con)
        .unwrap();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(
        name_of(&mut con, 1, &["MAXSTALE", "60000"]).unwrap(),
        "user1"
    );
}

#[test]
fn withage_replies_the_answer_and_how_far_behind_postgresql_it_may_be() {
    let stack = watched_users(&[]);
    let mut con = stack.con();
    let key = |id: i32| format!("pg_cache:users:{}", pk(id));
    // A miss is PostgreSQL's answer of now; once cached, a hit is at most the bound behind.
    let (row, age) = with_age(&mut con, &["WITHAGE"]);
    assert_eq!((json(&row)["id"].as_i64(), age), (Some(5), 0));
    assert!(cached(&mut con, 5), "a WITHAGE miss fills the cache");
    let (_, age) = with_age(&mut con, &["withage"]);
    assert!((0..=BOUND_MS as i64).contains(&age), "{age}");
    let reply: (Option<String>, i64) = redis::cmd("PGCACHE.GET")
        .arg(key(6))
        .arg("WITHAGE")
        .query(&mut con)
        .unwrap();
    assert_eq!(reply.1, 0);
    let reply: (Option<String>, i64) = redis::cmd("PGCACHE.GET")
        .arg(key(6))
        .arg("WITHAGE")
        .query(&mut con)
        .unwrap();
    assert!(reply.0.is_some() && (0..=BOUND_MS as i64).contains(&reply.1));
    // No row: nil beside its age. The plain reply is unchanged.
    let reply: (Option<String>, i64) = redis::cmd("PGCACHE.READ")
        .arg("users")
        .arg(pk(9999))
        .arg("WITHAGE")
        .query(&mut con)
        .unwrap();
    assert_eq!(reply, (None, 0));
    assert!(read(&mut con, "users", &pk(5)).unwrap().is_some());
    // A multi-row read has no single age.
    for cmd in [
        redis::cmd("PGCACHE.MULTIREAD")
            .arg("users")
            .arg(id_array([5]))
            .arg("WITHAGE")
            .clone(),
        redis::cmd("PGCACHE.MGET")
            .arg(key(5))
            .arg("WITHAGE")
            .clone(),
    ] {
        let e = cmd.query::<redis::Value>(&mut con).unwrap_err().to_string();
        assert!(
            e.contains("WITHAGE") || e.contains("not a pgcache key"),
            "{e}"
        );
    }
}

#[test]
fn without_a_change_feed_a_hit_has_no_bound() {
    let stack = Stack::start_with(USERS_SQL, &["listen", "no"]);
    let mut con = stack.con();
    read(&mut con, "users", &pk(5)).unwrap();
    let (_, age) = with_age(&mut con, &["WITHAGE"]);
    assert_eq!(age, -1);
    assert_eq!(stats_figure(&mut con, "freshness_age_ms"), -1);
    assert_eq!(stats_figure(&mut con, "hits_served"), 1);
}

#[test]
fn a_replica_bounds_its_hits_by_the_position_its_primary_replicates() {
    let (pg, args) = streaming_users("");
    let primary = Redis::start_with(&args, &[], &[]).unwrap();
    let mut con = primary.connection();
    wait_hits_served(&mut con);
    let port = primary.port.to_string();
    let replica = Redis::start_with(&args, &["--replicaof", "127.0.0.1", &port], &[]).unwrap();
    let mut on_replica = replica.connection();
    for id in 1..=3 {
        read_until_cached(&mut con, "users", &pk(id));
    }
    wait_for(
        "the entries on the replica",
        Duration::from_secs(20),
        || {
            (cached(&mut on_replica, 3) && stats_figure(&mut on_replica, "hits_served") == 1)
                .then_some(())
        },
    );
    let hits = stats_figure(&mut on_replica, "hits");
    assert_eq!(name_of(&mut on_replica, 2, &[]).unwrap(), "user2");
    assert_eq!(
        stats_figure(&mut on_replica, "hits"),
        hits + 1,
        "a hit on the replica"
    );
    let (_, age) = redis::cmd("PGCACHE.READ")
        .arg("users")
        .arg(pk(2))
        .arg("WITHAGE")
        .query::<(String, i64)>(&mut on_replica)
        .unwrap();
    assert!((0..=BOUND_MS as i64).contains(&age), "{age}");

    // The primary's feed stalls: the replica's entries are not vouched for either.
    signal_feed(&pg, libc::SIGSTOP);
    pg.execute("UPDATE users SET name = 'changed in the stall' WHERE id = 2");
    let row = wait_for(
        "the replica to read PostgreSQL",
        Duration::from_secs(5),
        || {
            let name = name_of(&mut on_replica, 2, &[]).unwrap();
            (name == "changed in the stall").then_some(name)
        },
    );
    assert_eq!(row, "changed in the stall");
    assert!(cached(&mut on_replica, 2), "nothing deleted it yet");
    assert!(stats_figure(&mut on_replica, "bypassed_stale") >= 1);
    signal_feed(&pg, libc::SIGCONT);
    wait_hits_served(&mut on_replica);
    wait_for(
        "the change to reach the replica",
        Duration::from_secs(10),
        || (!cached(&mut on_replica, 2)).then_some(()),
    );
    assert_eq!(
        name_of(&mut on_replica, 2, &[]).unwrap(),
        "changed in the stall"
    );
}

/// Every process of a PostgreSQL stopped (SIGSTOP) until dropped: a server that takes
/// connections and queries and answers none, as behind a network that drops packets.
struct Frozen(Vec<i32>);

impl Frozen {
    fn freeze(pg: &Pg) -> Frozen {
        let pids = pg.pids();
        for pid in &pids {
            unsafe { libc::kill(*pid, libc::SIGSTOP) };
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            unsafe { libc::kill(*pid, libc::SIGCONT) };
        }
    }
}

#[test]
fn a_frozen_postgresql_opens_the_circuit_after_at_most_the_first_miss_and_closes_it_after() {
    let stack = watched_users(&["request_timeout_ms", "3000"]);
    let mut con = stack.con();
    for id in 1..=5 {
        read_until_cached(&mut con, "users", &pk(id));
    }
    let frozen = Frozen::freeze(&stack.pg);
    let port = stack.redis.port;
    let first = std::thread::spawn(move || read(&mut connect(port), "users", &pk(60)));
    wait_for("the circuit to open", Duration::from_secs(10), || {
        (stats_figure(&mut con, "postgres_circuit_open") == 1).then_some(())
    });
    // From now on no client waits for PostgreSQL's silence.
    for id in 61..=70 {
        let asked = Instant::now();
        let e = read(&mut con, "users", &pk(id)).unwrap_err().to_string();
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "a miss waited {:?}",
            asked.elapsed()
        );
        assert!(e.contains("PostgreSQL unavailable for"), "{e}");
    }
    // The cached rows still answer, past the freshness bound.
    std::thread::sleep(Duration::from_millis(BOUND_MS + 100));
    for id in 1..=5 {
        assert_eq!(name_of(&mut con, id, &[]).unwrap(), format!("user{id}"));
    }
    let h = health(&mut con);
    assert!(text(&h, "postgres_circuit").starts_with("open"), "{h:?}");
    drop(frozen);
    let _ = first.join().unwrap();
    wait_circuit_closed(&mut con);
    assert!(read(&mut con, "users", &pk(61)).unwrap().is_some());
}

/// 16 clients read cached rows and a few uncached ones while PostgreSQL is stopped for
/// `PGCACHE_OUTAGE_SECONDS` (30): every cached row is answered, every miss fails without
/// waiting; once PostgreSQL is back, misses are answered again. Takes the machine's cores:
/// `make soak` runs it alone.
#[test]
#[ignore]
fn sixteen_clients_through_a_postgresql_outage_get_every_cached_row() {
    const CLIENTS: usize = 16;
    const CACHED: i64 = 200;
    let seconds: u64 = std::env::var("PGCACHE_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut stack = watched_users(&[]);
    let mut con = stack.con();
    let rows: Vec<Option<String>> = multiread(&mut con, "users", &id_array(1..=CACHED)).unwrap();
    assert!(rows.iter().all(Option::is_some));
    wait_for("every row cached", Duration::from_secs(10), || {
        (cache_entries(&mut con) == CACHED as usize).then_some(())
    });
    stack.pg.stop();
    let stopped = Instant::now();
    let port = stack.redis.port;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut con = connect(port);
                let mut rng = Rng::new(c as u64 + 1);
                let (mut answered, mut failed_misses) = (0u64, Vec::new());
                while stopped.elapsed() < Duration::from_secs(seconds) {
                    let id = 1 + rng.below_i64(CACHED);
                    let row = read(&mut con, "users", &pk(id as i32))
                        .unwrap_or_else(|e| panic!("cached row {id} not answered: {e}"))
                        .unwrap();
                    assert_eq!(json(&row)["name"], format!("user{id}"));
                    answered += 1;
                    if rng.chance(5) {
                        let asked = Instant::now();
                        let miss = read(&mut con, "users", &pk(1000 + id as i32));
                        assert!(miss.is_err(), "a miss answered while PostgreSQL is down");
                        failed_misses.push(asked.elapsed());
                    }
                }
                (answered, failed_misses)
            })
        })
        .collect();
    let mut answered = 0;
    let mut misses: Vec<Duration> = Vec::new();
    for client in clients {
        let (n, m) = client.join().unwrap();
        answered += n;
        misses.extend(m);
    }
    misses.sort();
    let p99 = misses[misses.len() * 99 / 100];
    println!(
        "outage of {seconds} s, {CLIENTS} clients: {answered} cached rows answered, {} misses \
         failed, median {:?}, p99 {p99:?}, slowest {:?}",
        misses.len(),
        misses[misses.len() / 2],
        misses.last().unwrap()
    );
    // None waited for a timeout (request_timeout_ms is 5 s); the first may wait for the
    // connect's own failure.
    assert!(misses[misses.len() - 2] < Duration::from_secs(1));
    assert!(stats_figure(&mut con, "served_stale") > 0);
    stack.pg.restart();
    let back = Instant::now();
    let answer = wait_for("misses answered again", Duration::from_secs(10), || {
        read(&mut con, "users", &pk(1001)).ok()
    });
    assert_eq!(answer, None, "no such row");
    println!(
        "PostgreSQL back: misses answered after {:?}",
        back.elapsed()
    );
}

/// A transaction of `PGCACHE_BULK_ROWS` (1,000,000) rows keeps the decoder busy while single
/// rows commit behind it: no read of those rows is staler than the bound (plain reads), and
/// none predates its own commit (`AFTER`). Replication mode, where the log is decoded in
/// commit order. Takes the machine's cores: run alone, after the suite.
#[test]
#[ignore]
fn single_row_commits_behind_a_huge_transaction_are_never_served_past_the_bound() {
    let rows: i64 = std::env::var("PGCACHE_BULK_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (pg, args) = streaming_users(&format!(
        "CREATE TABLE bulk (id integer PRIMARY KEY, v integer NOT NULL);
         INSERT INTO bulk SELECT g, 0 FROM generate_series(1, {rows}) g;
         SELECT pgcache_watch('bulk', 'replication');"
    ));
    let redis = Redis::start_with(&args, &[], &[]).unwrap();
    let mut con = redis.connection();
    wait_hits_served(&mut con);
    for id in 1..=20 {
        read_until_cached(&mut con, "users", &pk(id));
    }
    let mut writer = pg.client();
    writer.batch_execute("SET synchronous_commit = on").unwrap();
    writer.batch_execute("UPDATE bulk SET v = v + 1").unwrap();
    // Behind it in the log: one row at a time, each read back at once and then until fresh.
    let bound = Duration::from_millis(BOUND_MS + 100 + 150);
    let (mut stale_plain, mut stale_after, mut reads) = (0, 0, 0);
    let mut bypassed_while_decoding = false;
    for id in 1..=20 {
        let name = format!("behind the bulk {id}");
        writer
            .execute("UPDATE users SET name = $1 WHERE id = $2", &[&name, &id])
            .unwrap();
        let committed = Instant::now();
        let lsn: String = writer
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .unwrap()
            .get(0);
        let after = name_of(&mut con, id, &["AFTER", &lsn]).unwrap();
        stale_after += usize::from(after != name);
        let asked = committed.elapsed();
        let plain = name_of(&mut con, id, &[]).unwrap();
        reads += 2;
        if asked > bound && plain != name {
            stale_plain += 1;
        }
        bypassed_while_decoding |= stats_figure(&mut con, "hits_served") == 0;
    }
    assert_eq!((stale_plain, stale_after), (0, 0), "of {reads} reads");
    println!(
        "{rows}-row transaction: hits bypassed while it was decoded: {bypassed_while_decoding}"
    );
    // The stream takes its time over a million changes on this machine.
    wait_for("the feed to vouch again", Duration::from_secs(120), || {
        (stats_figure(&mut con, "hits_served") == 1).then_some(())
    });
    // Within the bound of the last commit, every row reads its last version.
    std::thread::sleep(bound);
    for id in 1..=20 {
        assert_eq!(
            name_of(&mut con, id, &[]).unwrap(),
            format!("behind the bulk {id}")
        );
    }
}
