//! `AFTER <lsn>` on READ, GET, MGET and MULTIREAD, in whichever mode the suite runs: a
//! position pgcache has not applied is read from PostgreSQL; one it has (replication mode
//! only) is served from the cache; MGET's keys end before the word AFTER.
//!
//! The cache is made to disagree with PostgreSQL on purpose (PGCACHE.WRITE stores a row in
//! the cache only), so where a reply came from shows in the reply itself.

use pgcache_testkit::*;

/// Far past any position the tests' PostgreSQL reaches.
const UNREACHED: &str = "FFFFFFFF/FFFFFFFF";

fn key(id: i32) -> String {
    format!(r#"pg_cache:users:{{"id":{id}}}"#)
}

fn pk(id: i32) -> String {
    format!(r#"{{"id":{id}}}"#)
}

/// Stores a row for `id` in the cache only, named "cached", which PostgreSQL's row is not.
fn cache_a_row_postgresql_does_not_hold(con: &mut redis::Connection, id: i32) {
    let data = format!(r#"{{"id":{id},"name":"cached"}}"#);
    write(con, "users", &pk(id), &data).unwrap();
}

/// The `name` of each row of a reply: one row (READ, GET) or an array of them.
fn names(reply: redis::Value) -> Vec<String> {
    let rows: Vec<String> = match reply {
        redis::Value::Array(rows) => rows
            .into_iter()
            .map(|r| redis::from_redis_value(r).unwrap())
            .collect(),
        row => vec![redis::from_redis_value(row).unwrap()],
    };
    rows.iter()
        .map(|r| json(r)["name"].as_str().unwrap().to_string())
        .collect()
}

/// Each read command over rows 7 and 8 (READ and GET: row 7), with `AFTER <lsn>` when given.
fn every_read(after: Option<&str>) -> Vec<(&'static str, redis::Cmd)> {
    let mut reads = vec![
        ("READ", redis::cmd("PGCACHE.READ")),
        ("GET", redis::cmd("PGCACHE.GET")),
        ("MGET", redis::cmd("PGCACHE.MGET")),
        ("MULTIREAD", redis::cmd("PGCACHE.MULTIREAD")),
    ];
    reads[0].1.arg("users").arg(pk(7));
    reads[1].1.arg(key(7));
    reads[2].1.arg(key(7)).arg(key(8));
    reads[3]
        .1
        .arg("users")
        .arg(format!("[{},{}]", pk(7), pk(8)));
    if let Some(lsn) = after {
        for (_, read) in &mut reads {
            read.arg("AFTER").arg(lsn);
        }
    }
    reads
}

#[test]
fn a_position_not_applied_yet_is_read_from_postgresql_by_every_read_command() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    for (name, read) in every_read(None) {
        cache_a_row_postgresql_does_not_hold(&mut con, 7);
        cache_a_row_postgresql_does_not_hold(&mut con, 8);
        let cached = names(read.query(&mut con).unwrap());
        assert!(cached.iter().all(|n| n == "cached"), "{name}: {cached:?}");
    }
    for (name, read) in every_read(Some(UNREACHED)) {
        cache_a_row_postgresql_does_not_hold(&mut con, 7);
        cache_a_row_postgresql_does_not_hold(&mut con, 8);
        let fresh = names(read.query(&mut con).unwrap());
        assert_eq!(fresh[0], "user7", "{name}: {fresh:?}");
        assert!(fresh.iter().all(|n| n.starts_with("user")), "{name}");
    }
}

#[test]
fn a_position_already_applied_is_served_from_the_cache_in_replication_mode_only() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let from_cache = invalidation_source() == "replication";
    for (name, read) in every_read(Some("0/0")) {
        cache_a_row_postgresql_does_not_hold(&mut con, 7);
        cache_a_row_postgresql_does_not_hold(&mut con, 8);
        let rows = names(read.query(&mut con).unwrap());
        let expected = if from_cache { "cached" } else { "user7" };
        assert_eq!(rows[0], expected, "{name} AFTER 0/0: {rows:?}");
    }
}

#[test]
fn mgets_keys_end_before_after() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    for (call, expected) in [
        (vec!["a", "b", "AFTER", "0/1"], vec!["a", "b"]),
        (vec!["a", "b", "after", "0/1"], vec!["a", "b"]),
        (vec!["a", "AFTER", "0/1"], vec!["a"]),
        // No key before it: the word is taken as a key (and refused as no pgcache key).
        (vec!["AFTER", "0/1"], vec!["AFTER", "0/1"]),
        (vec!["a", "b"], vec!["a", "b"]),
    ] {
        let keys: Vec<String> = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg("PGCACHE.MGET")
            .arg(&call)
            .query(&mut con)
            .unwrap();
        assert_eq!(keys, expected, "{call:?}");
    }
    let e = redis::cmd("PGCACHE.MGET")
        .arg(key(7))
        .arg("AFTER")
        .arg("7")
        .query::<redis::Value>(&mut con)
        .unwrap_err();
    assert!(e.to_string().contains("WAL position"), "{e}");
    // A user may read only the keys before AFTER: the word and the position are no keys.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "reader", "on", "nopass", "+@all", "~pg_cache:*"])
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("AUTH")
        .arg("reader")
        .arg("x")
        .query(&mut con)
        .unwrap();
    let rows = names(
        redis::cmd("PGCACHE.MGET")
            .arg(key(7))
            .arg("AFTER")
            .arg(UNREACHED)
            .query(&mut con)
            .unwrap(),
    );
    assert_eq!(rows, vec!["user7"]);
}
