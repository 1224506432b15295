//! CLIENT PAUSE (and a manual failover, which pauses clients the same way): the server
//! forbids writes that would reach its replicas or its AOF while clients are paused, and
//! stops itself (an assertion) when a module's callback makes one. pgcache writes nothing
//! then: changes are applied, and fills cached, once the pause ends.
use pgcache_testkit::*;
use std::time::Duration;

fn paused_stack() -> (Stack, redis::Connection) {
    let stack = Stack::start(&format!("{USERS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute("SELECT pgcache_watch('users')");
    let mut admin = stack.con();
    // Writes are propagated only where something takes them: the AOF here.
    config_set(&mut admin, "appendonly", "yes").unwrap();
    (stack, admin)
}

/// CLIENT PAUSE for 1.5 s, of `mode` (`ALL` or `WRITE`).
fn pause(admin: &mut redis::Connection, mode: &str) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg(mode)
        .query(admin)
        .unwrap();
}

fn alive(con: &mut redis::Connection) {
    let pong: String = redis::cmd("PING").query(con).unwrap();
    assert_eq!(pong, "PONG", "the server must still answer");
}

#[test]
fn a_change_applied_while_clients_are_paused_waits_for_the_pause_to_end() {
    let (stack, mut admin) = paused_stack();
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":7}"#);
    pause(&mut admin, "ALL");
    stack
        .pg
        .execute("UPDATE users SET name = 'seven' WHERE id = 7");
    // The change reaches pgcache during the pause; the server must outlive it.
    let mut after = stack.con();
    alive(&mut after);
    wait_for("the change applied", Duration::from_secs(10), || {
        let row = read(&mut after, "users", r#"{"id":7}"#).unwrap()?;
        (json(&row)["name"] == "seven").then_some(())
    });
}

#[test]
fn a_miss_answered_while_writes_are_paused_is_not_cached_then() {
    let (stack, mut admin) = paused_stack();
    pause(&mut admin, "WRITE");
    let mut con = stack.con();
    let row = read(&mut con, "users", r#"{"id":8}"#).unwrap().unwrap();
    assert_eq!(json(&row)["id"], 8);
    let rows: String = redis::cmd("PGCACHE.QUERY")
        .arg("SELECT id FROM users WHERE id = $1")
        .arg(1)
        .arg(9)
        .query(&mut con)
        .unwrap();
    assert_eq!(rows, r#"[{"id":9}]"#);
    alive(&mut con);
    // Once the pause ends, misses are cached again.
    read_until_cached(&mut con, "users", r#"{"id":8}"#);
}

#[test]
fn a_read_after_a_change_made_while_clients_are_paused_never_answers_from_before_it() {
    let (stack, mut admin) = paused_stack();
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":5}"#);
    // WRITE pauses writes only: reads, AFTER's among them, still run.
    pause(&mut admin, "WRITE");
    let mut pg = stack.pg.client();
    pg.batch_execute("UPDATE users SET name = 'five' WHERE id = 5")
        .unwrap();
    let position: String = pg
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    // The change is not applied before the pause ends: the read goes to PostgreSQL, or
    // waits for it to be applied; either way it answers the new row, never the cached one.
    let row: String = redis::cmd("PGCACHE.READ")
        .arg("users")
        .arg(r#"{"id":5}"#)
        .arg("AFTER")
        .arg(&position)
        .query(&mut con)
        .unwrap();
    assert_eq!(json(&row)["name"], "five", "{row}");
    alive(&mut con);
}
