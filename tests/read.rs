//! PGCACHE.READ against a real PostgreSQL and a real server.
mod common;
use common::*;

#[test]
fn miss_then_hit_returns_the_row_and_caches_it_with_the_ttl() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let row = read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap();
    assert_eq!(
        json(&row),
        serde_json::json!({"id": 7, "name": "user7", "email": "user7@example.com"})
    );
    let key = r#"pg_cache:users:{"id":7}"#;
    let cached: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
    assert_eq!(cached.as_deref(), Some(row.as_str()));
    let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut con).unwrap();
    assert!((3590..=3600).contains(&ttl), "default TTL, got {ttl}");

    // A hit comes from the cache: change the row behind the cache's back and see the old one.
    stack
        .pg
        .execute("UPDATE users SET name = 'changed' WHERE id = 7");
    let again = read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap();
    assert_eq!(again, row);
}

#[test]
fn absent_row_is_nil_and_not_cached() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    assert_eq!(read(&mut con, "users", r#"{"id":999999}"#).unwrap(), None);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pg_cache:*")
        .query(&mut con)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[test]
fn explicit_ttl_is_used() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let _: Option<String> = redis::cmd("PGCACHE.READ")
        .arg("users")
        .arg(r#"{"id":3}"#)
        .arg(60)
        .query(&mut con)
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(r#"pg_cache:users:{"id":3}"#)
        .query(&mut con)
        .unwrap();
    assert!((58_000..=60_000).contains(&pttl), "{pttl}");
}
