//! Clients that joined another client's fill get PostgreSQL's answer whatever becomes of
//! that client (issue #70 item 3: when the client that started a QUERY's fill closed its
//! socket, every client waiting on the fill was told the request "was abandoned").
//!
//! The order is forced by a lock: the leader's run waits in PostgreSQL on a table the test
//! holds, the others join it (counted as `coalesced`), the leader leaves (its connection
//! is gone from CLIENT LIST), and only then is the table let go.
use crate::query::{assert_answers_as_postgres, query};
use pgcache_testkit::*;
use std::io::Write;
use std::time::Duration;

const SQL: &str = "
    CREATE TABLE t (id integer PRIMARY KEY, label text NOT NULL);
    INSERT INTO t SELECT g, 'label' || g FROM generate_series(1, 40) g;
";

const STATEMENT: &str = "SELECT id, label FROM t WHERE id = $1";

/// Sends `args` as one command on a connection of its own and closes it at once, without
/// reading the reply: a client that leaves while its request is in flight.
fn send_and_leave(port: u16, args: &[&str]) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes()).unwrap();
    stream.flush().unwrap();
    // Seen blocked before it goes (`blocked_clients`), so it led the fill.
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    wait_for("the leader to block", Duration::from_secs(10), || {
        (info_field(&mut con, "blocked_clients") >= 1).then_some(())
    });
    drop(stream);
}

fn info_field(con: &mut redis::Connection, name: &str) -> i64 {
    let info: String = redis::cmd("INFO").arg("clients").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `t` locked by the test: a run that reads it waits until the lock is let go.
fn lock_t(pg: &Pg) -> postgres::Client {
    let mut locker = pg.client();
    locker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    locker
}

/// A leader that leaves, and three waiters: each waiter is answered as PostgreSQL answers.
fn waiters_are_answered_when_the_leader_leaves(
    extra: &[&str],
    leader: &[&str],
    waiter: impl Fn(&mut redis::Connection) -> String + Sync,
    check: impl Fn(&Stack, &str),
) {
    let stack = Stack::start_with(
        &format!("{SQL} {TRIGGER_SQL}"),
        &[extra, &["request_timeout_ms", "60000"]].concat(),
    );
    stack.pg.execute("SELECT pgcache_watch('t')");
    let mut con = stack.con();
    // Learned (statement and table) before the lock: learning reads the table's catalog.
    query(&mut con, STATEMENT, &["1"]).unwrap();
    read(&mut con, "t", r#"{"id":1}"#).unwrap();
    let coalesced = stats_figure(&mut con, "coalesced");
    let locker = lock_t(&stack.pg);
    let clients = info_field(&mut con, "connected_clients");
    send_and_leave(stack.redis.port, leader);
    let answers: Vec<String> = std::thread::scope(|scope| {
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let mut con = stack.con();
                let waiter = &waiter;
                scope.spawn(move || waiter(&mut con))
            })
            .collect();
        wait_for(
            "three clients to join the fill",
            Duration::from_secs(30),
            || (stats_figure(&mut con, "coalesced") >= coalesced + 3).then_some(()),
        );
        wait_for("the leader to be gone", Duration::from_secs(10), || {
            (info_field(&mut con, "connected_clients") == clients + 3).then_some(())
        });
        locker.close().unwrap();
        waiters.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for answer in answers {
        check(&stack, &answer);
    }
}

fn a_query_s_waiters_are_answered(extra: &[&str]) {
    waiters_are_answered_when_the_leader_leaves(
        extra,
        &["PGCACHE.QUERY", STATEMENT, "1", "7"],
        |con| query(con, STATEMENT, &["7"]).unwrap_or_else(|e| panic!("a waiter: {e}")),
        |stack, answer| assert_answers_as_postgres(stack, STATEMENT, &["7"], answer),
    );
}

#[test]
fn a_query_s_waiters_are_answered_when_its_leader_leaves_on_the_event_loop() {
    a_query_s_waiters_are_answered(&[]);
}

#[test]
fn a_query_s_waiters_are_answered_when_its_leader_leaves_on_the_workers() {
    a_query_s_waiters_are_answered(&["loop_connections", "0"]);
}

#[test]
fn a_read_s_waiters_are_answered_when_its_leader_leaves() {
    for extra in [&[][..], &["loop_connections", "0"][..]] {
        waiters_are_answered_when_the_leader_leaves(
            extra,
            &["PGCACHE.READ", "t", r#"{"id":7}"#],
            |con| {
                read(con, "t", r#"{"id":7}"#)
                    .unwrap_or_else(|e| panic!("a waiter: {e}"))
                    .expect("the row")
            },
            |_, answer| assert_eq!(json(answer), json(r#"{"id":7,"label":"label7"}"#)),
        );
    }
}
