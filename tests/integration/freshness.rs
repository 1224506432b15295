//! No stale fills, one query per key under load, and negative caching undone by INSERT.
use pgcache_testkit::*;
use std::time::Duration;

fn held(con: &mut redis::Connection) -> usize {
    debug(con, "FILLS", "HELD").parse().unwrap()
}

/// A server over a watched `items` table (row 1 holds v1), its schema already known, with
/// the debug commands and only `invalidate` events.
fn items_stack() -> Stack {
    let stack = Stack::start_with(
        &format!(
            "{TRIGGER_SQL}
             CREATE TABLE items (id integer PRIMARY KEY, v text);
             INSERT INTO items VALUES (1, 'v1'), (2, 'other');
             SELECT pgcache_watch('items');"
        ),
        &["debug_commands", "yes", "events", "invalidate"],
    );
    read(&mut stack.con(), "items", r#"{"id":2}"#).unwrap();
    stack
}

/// A READ of row 1 whose fill read v1 and is held; then v2 commits and its invalidation is
/// applied while that fill is in flight. Returns the held READ.
fn hold_a_fill_of_v1_then_commit_v2(
    stack: &Stack,
    con: &mut redis::Connection,
    events: &mut redis::PubSub,
) -> std::thread::JoinHandle<Option<String>> {
    debug(con, "FILLS", "HOLD");
    let mut other = stack.redis.connection();
    let reader = std::thread::spawn(move || read(&mut other, "items", r#"{"id":1}"#).unwrap());
    wait_for("the fill to be held", Duration::from_secs(10), || {
        (held(con) == 1).then_some(())
    });
    stack.pg.execute("UPDATE items SET v = 'v2' WHERE id = 1");
    let event = next_event(events);
    assert_eq!(
        (event["type"].as_str(), event["key"].as_str()),
        (Some("cache_invalidate"), Some(r#"{"id":1}"#))
    );
    reader
}

#[test]
fn an_invalidation_during_a_fill_keeps_the_old_row_out_of_the_cache() {
    let stack = items_stack();
    let mut con = stack.con();
    let mut sub = stack.redis.connection();
    let mut events = subscribe(&mut sub, "pg_cache_events");
    // 1. A miss reads v1, and its fill is held before it reaches the cache; 2. v2 commits
    //    and its invalidation is applied while the fill is in flight.
    let reader = hold_a_fill_of_v1_then_commit_v2(&stack, &mut con, &mut events);
    // 3. The fill completes: its reader gets v1 (it asked before the commit), the cache
    //    must not keep it.
    debug(&mut con, "FILLS", "RELEASE");
    assert_eq!(json(&reader.join().unwrap().unwrap())["v"], "v1");
    let cached: bool = redis::cmd("EXISTS")
        .arg(r#"pg_cache:items:{"id":1}"#)
        .query(&mut con)
        .unwrap();
    assert!(!cached, "the stale v1 was cached");
    assert_eq!(
        json(&read(&mut con, "items", r#"{"id":1}"#).unwrap().unwrap())["v"],
        "v2"
    );
}

#[test]
fn a_thousand_concurrent_reads_of_one_cold_key_make_one_query() {
    let stack = Stack::start_with(USERS_SQL, &["debug_commands", "yes"]);
    stack.pg.log_app_statements();
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap(); // schema known
    let before = stack.pg.logged_statements("row_to_json");
    debug(&mut con, "FILLS", "HOLD");
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", stack.redis.port)).unwrap();
    let mut readers: Vec<redis::Connection> = (0..1000)
        .map(|_| client.get_connection().unwrap())
        .collect();
    let mut request = redis::cmd("PGCACHE.READ");
    request.arg("users").arg(r#"{"id":42}"#);
    let packed = request.get_packed_command();
    for reader in readers.iter_mut() {
        reader.send_packed_command(&packed).unwrap();
    }
    wait_blocked(&mut con, 1000);
    debug(&mut con, "FILLS", "RELEASE");
    for reader in readers.iter_mut() {
        let row: Option<String> = redis::from_redis_value(reader.recv_response().unwrap()).unwrap();
        assert_eq!(json(&row.unwrap())["id"], 42);
    }
    assert_eq!(
        stack.pg.logged_statements("row_to_json") - before,
        1,
        "one query for 1000 reads"
    );
    let stats = map_reply(&mut con, "PGCACHE.STATS");
    let users = nested(&nested(&stats["tables"])["users"]);
    let calls: i64 = redis::from_redis_value(users["calls"].clone()).unwrap();
    assert_eq!(calls, 1001, "the waiting reads count for their table too");
}

#[test]
fn first_reads_of_a_table_spelling_not_seen_before_share_the_fill_in_flight() {
    let stack = Stack::start_with(USERS_SQL, &["debug_commands", "yes", "workers", "3"]);
    stack.pg.log_app_statements();
    let mut con = stack.con();
    let before = stack.pg.logged_statements("row_to_json");
    debug(&mut con, "FILLS", "HOLD");
    // The table's first READ: the worker reads its schema, then leads the fill of the key.
    let first = spawn_read(stack.redis.port, "users", r#"{"id":3}"#);
    wait_for("the first fill to be held", Duration::from_secs(10), || {
        (held(&mut con) == 1).then_some(())
    });
    // Another spelling of the table, never seen: only a worker can tell its key, and once
    // it can, the READ waits for the fill in flight instead of querying again.
    let second = spawn_read(stack.redis.port, "public.users", r#"{ "id": "3" }"#);
    wait_for(
        "the second READ to join the fill",
        Duration::from_secs(10),
        || {
            let stats = map_reply(&mut con, "PGCACHE.STATS");
            let coalesced: i64 = redis::from_redis_value(stats["coalesced"].clone()).unwrap();
            (coalesced == 1).then_some(())
        },
    );
    assert_eq!(held(&mut con), 1, "no second fill");
    debug(&mut con, "FILLS", "RELEASE");
    for reader in [first, second] {
        assert_eq!(json(&reader.join().unwrap().unwrap().unwrap())["id"], 3);
    }
    assert_eq!(
        stack.pg.logged_statements("row_to_json") - before,
        1,
        "one query for both READs"
    );
}

#[test]
fn an_insert_replaces_a_remembered_absence() {
    let stack = Stack::start(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users');"
    ));
    let mut con = stack.con();
    assert_eq!(read(&mut con, "users", r#"{"id":5000}"#).unwrap(), None);
    stack
        .pg
        .execute("INSERT INTO users VALUES (5000, 'late', NULL)");
    wait_gone(&mut con, r#"pg_cache:users:{"id":5000}"#);
    assert_eq!(
        json(&read(&mut con, "users", r#"{"id":5000}"#).unwrap().unwrap())["name"],
        "late"
    );
}

#[test]
fn a_read_after_an_invalidation_does_not_share_a_fill_that_started_before_it() {
    let stack = items_stack();
    let mut con = stack.con();
    let mut sub = stack.redis.connection();
    let mut events = subscribe(&mut sub, "pg_cache_events");
    // A fill reads v1 and is held; then v2 commits and its invalidation is applied.
    let early = hold_a_fill_of_v1_then_commit_v2(&stack, &mut con, &mut events);

    // A read that starts now must not be handed the v1 the held fill read: it makes its
    // own query.
    let mut second = stack.redis.connection();
    let late = std::thread::spawn(move || read(&mut second, "items", r#"{"id":1}"#).unwrap());
    wait_for("a second fill of its own", Duration::from_secs(10), || {
        (held(&mut con) == 2).then_some(())
    });
    debug(&mut con, "FILLS", "RELEASE");
    assert_eq!(json(&early.join().unwrap().unwrap())["v"], "v1");
    assert_eq!(json(&late.join().unwrap().unwrap())["v"], "v2");
}
