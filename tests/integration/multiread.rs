//! PGCACHE.MULTIREAD: order, nils, duplicates, one query for all misses.
use pgcache_testkit::*;

fn field(row: &Option<String>, name: &str) -> serde_json::Value {
    json(row.as_deref().expect("a row"))[name].clone()
}

#[test]
fn order_nils_duplicates_and_a_mix_of_hits_and_misses_in_one_query() {
    let stack = Stack::start(USERS_SQL);
    stack.pg.log_app_statements();
    let mut con = stack.con();
    // Warm the schema and cache ids 2 and 4.
    read(&mut con, "users", r#"{"id":2}"#).unwrap();
    read(&mut con, "users", r#"{"id":4}"#).unwrap();
    let before = stack.pg.logged_statements("unnest(");
    let rows = multiread(
        &mut con,
        "users",
        // Canonical keys and other spellings of them, with spaces anywhere JSON allows.
        r#" [{"id":5}, {"id":2} ,{"id":999999},{ "id" : "5" },{"id":4},{"id":1}] "#,
    )
    .unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(field(&rows[0], "id"), 5);
    assert_eq!(field(&rows[1], "id"), 2);
    assert_eq!(rows[2], None);
    assert_eq!(rows[3], rows[0]);
    assert_eq!(field(&rows[4], "id"), 4);
    assert_eq!(field(&rows[5], "name"), "user1");
    assert_eq!(
        stack.pg.logged_statements("unnest(") - before,
        1,
        "one query for all misses"
    );
    // The fetched rows are cached now: the same call needs no query at all.
    let again = multiread(&mut con, "users", r#"[{"id":5},{"id":1}]"#).unwrap();
    assert_eq!(again, vec![rows[0].clone(), rows[5].clone()]);
    assert_eq!(stack.pg.logged_statements("unnest(") - before, 1);
    let cached: Option<String> = redis::cmd("GET")
        .arg(r#"pg_cache:users:{"id":1}"#)
        .query(&mut con)
        .unwrap();
    assert_eq!(cached, rows[5]);
}

#[test]
fn each_slot_holds_the_row_of_its_key_for_numeric_text_and_composite_keys() {
    let stack = Stack::start(
        "CREATE TABLE prices (amount numeric(12,2) PRIMARY KEY, label text);
         INSERT INTO prices SELECT g / 4.0, 'p' || g FROM generate_series(1, 40) g;
         CREATE TABLE words (word text PRIMARY KEY, len integer);
         INSERT INTO words SELECT 'w' || g, length('w' || g) FROM generate_series(1, 40) g;
         CREATE TABLE stock (region text, sku integer, qty integer, PRIMARY KEY (region, sku));
         INSERT INTO stock SELECT r, g, g * 10 + length(r) FROM unnest(ARRAY['eu','us']) r, generate_series(1, 20) g;",
    );
    let mut con = stack.con();
    let rows = multiread(
        &mut con,
        "prices",
        r#"[{"amount":2.5},{"amount":"0.25"},{"amount":1.50},{"amount":99}]"#,
    )
    .unwrap();
    assert_eq!(field(&rows[0], "label"), "p10");
    assert_eq!(field(&rows[1], "label"), "p1");
    assert_eq!(field(&rows[2], "label"), "p6");
    assert_eq!(rows[3], None);
    // The key built by PostgreSQL's rendering (1.50) and by the client (1.5) are one entry.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pg_cache:prices:*")
        .query(&mut con)
        .unwrap();
    assert!(
        keys.contains(&r#"pg_cache:prices:{"amount":1.5}"#.to_string()),
        "{keys:?}"
    );

    let rows = multiread(
        &mut con,
        "words",
        r#"[{"word":"w17"},{"word":"nope"},{"word":"w3"}]"#,
    )
    .unwrap();
    assert_eq!(field(&rows[0], "word"), "w17");
    assert_eq!(rows[1], None);
    assert_eq!(field(&rows[2], "len"), 2);

    let rows = multiread(
        &mut con,
        "stock",
        r#"[{"region":"us","sku":7},{"sku":7,"region":"eu"},{"region":"eu","sku":99},{"region":"us","sku":1}]"#,
    )
    .unwrap();
    assert_eq!(field(&rows[0], "qty"), 72);
    assert_eq!(field(&rows[1], "qty"), 72);
    assert_eq!(field(&rows[1], "region"), "eu");
    assert_eq!(rows[2], None);
    assert_eq!(field(&rows[3], "qty"), 12);
}

#[test]
fn a_read_of_a_key_a_multiread_is_fetching_waits_for_that_fetch() {
    let stack = Stack::start(
        "CREATE TABLE items (id integer PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 3) g;
         CREATE VIEW slow_items AS SELECT id, v FROM items WHERE pg_sleep(0.3) IS NOT NULL;",
    );
    stack.pg.log_app_statements();
    let mut con = stack.con();
    read(&mut con, "slow_items", r#"{"id":3}"#).unwrap(); // schema known
    let before = stack.pg.logged_statements("slow_items");
    let mut other = stack.redis.connection();
    let fetching = std::thread::spawn(move || {
        multiread(&mut other, "slow_items", r#"[{"id":1},{"id":2}]"#).unwrap()
    });
    wait_blocked(&mut con, 1);
    let row = read(&mut con, "slow_items", r#"{"id":2}"#).unwrap();
    assert_eq!(field(&row, "v"), "v2");
    let rows = fetching.join().unwrap();
    assert_eq!(rows[1], row, "the READ got the MULTIREAD's row");
    assert_eq!(field(&rows[0], "v"), "v1");
    let stats = map_reply(&mut con, "PGCACHE.STATS");
    let coalesced: i64 = redis::from_redis_value(stats["coalesced"].clone()).unwrap();
    assert_eq!(coalesced, 1);
    assert_eq!(
        stack.pg.logged_statements("slow_items") - before,
        2,
        "the READ asked PostgreSQL nothing"
    );
}

#[test]
fn first_call_on_an_unknown_table_and_empty_arrays() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    assert!(multiread(&mut con, "users", "[]").unwrap().is_empty());
    let rows = multiread(&mut con, "users", r#"[{"id":3},{"id":3}]"#).unwrap();
    assert_eq!(field(&rows[0], "id"), 3);
    assert_eq!(rows[0], rows[1]);
    assert!(multiread(&mut con, "users", "[]").unwrap().is_empty());
    // An empty array names no table's rows, but a table that cannot be read is still an error
    // (found by the protocol fuzzer: it used to answer an empty array).
    for (table, why) in [
        ("userz", "does not exist"),
        ("\"unterminated", "unterminated"),
    ] {
        let e = multiread(&mut con, table, "[]").unwrap_err().to_string();
        assert!(e.contains(why), "{table}: {e}");
    }
}

#[test]
fn bad_arrays_are_errors() {
    let stack = Stack::start_with(USERS_SQL, &["multiread_max", "5"]);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    for (keys, expected) in [
        ("{", "not valid JSON"),
        (r#"{"id":1}"#, "JSON array"),
        (r#"[{"id":1},{"id":"x"}]"#, "key 2 of the array"),
        (r#"[{"id":1},7]"#, "key 2 of the array"),
        (
            r#"[{"id":1},{"id":2},{"id":3},{"id":4},{"id":5},{"id":6}]"#,
            "multiread_max",
        ),
    ] {
        let e = multiread(&mut con, "users", keys).unwrap_err().to_string();
        assert!(e.contains(expected), "{keys}: {e}");
    }
    let e = redis::cmd("PGCACHE.MULTIREAD")
        .arg("users")
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
    // CONFIG SET raises the cap at runtime.
    config_set(&mut con, "pgcache.multiread_max", "10").unwrap();
    assert_eq!(
        multiread(
            &mut con,
            "users",
            r#"[{"id":1},{"id":2},{"id":3},{"id":4},{"id":5},{"id":6}]"#
        )
        .unwrap()
        .len(),
        6
    );
}

#[test]
fn large_calls_are_fetched_in_parallel_parts_and_stay_in_order() {
    let stack = Stack::start_with(
        "CREATE TABLE nums (n integer PRIMARY KEY, sq bigint);
         INSERT INTO nums SELECT g, g::bigint * g FROM generate_series(1, 500) g;",
        &["workers", "4"],
    );
    stack.pg.log_app_statements();
    let mut con = stack.con();
    read(&mut con, "nums", r#"{"n":1}"#).unwrap(); // schema cached, n=1 cached
    let before = stack.pg.logged_statements("unnest(");
    // 160 keys: misses, a hit, duplicates and absent keys, shuffled.
    let ids: Vec<i64> = (0..160)
        .map(|i| (i * 37) % 600 + 1)
        .chain([1, 5, 5, 999])
        .collect();
    let keys: Vec<String> = ids.iter().map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let rows = multiread(&mut con, "nums", &format!("[{}]", keys.join(","))).unwrap();
    assert_eq!(rows.len(), ids.len());
    for (n, row) in ids.iter().zip(&rows) {
        if *n <= 500 {
            assert_eq!(field(row, "sq"), n * n, "slot for {n}");
        } else {
            assert_eq!(*row, None, "slot for {n}");
        }
    }
    let queries = stack.pg.logged_statements("unnest(") - before;
    assert!(
        (2..=4).contains(&queries),
        "split into parallel parts: {queries} queries"
    );
}
