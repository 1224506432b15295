//! A randomized consistency run: writers change PostgreSQL while readers READ and MULTIREAD
//! through the cache and the listener's connection is killed now and then. Once writers stop
//! and the last invalidation is applied, every cached row must equal PostgreSQL's.
use pgcache_testkit::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const ROWS: i64 = 200;

/// A row id, 1 to ROWS.
fn id(rng: &mut Rng) -> i64 {
    rng.below_i64(ROWS) + 1
}

fn postgres_rows(pg: &Pg) -> std::collections::HashMap<i64, String> {
    pg.client()
        .query("SELECT id::int8, row_to_json(t)::text FROM accounts t", &[])
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn cached_rows_converge_to_postgres_under_random_writes_reads_and_listener_kills() {
    let seed = seed_from_env(0x9e37_79b9_7f4a_7c15);
    let stack = Stack::start(&format!(
        "{TRIGGER_SQL}
         CREATE TABLE accounts (id integer PRIMARY KEY, balance bigint NOT NULL, note text);
         INSERT INTO accounts SELECT g, 0, 'n' || g FROM generate_series(1, {ROWS}) g;
         SELECT pgcache_watch('accounts');"
    ));
    let port = stack.redis.port;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));

    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let mut pg = stack.pg.client();
            let ops = ops.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ ((w + 1) * 0x1234_5678));
                for _ in 0..600 {
                    let id = id(&mut rng);
                    match rng.next_u64() % 10 {
                        0 => {
                            pg.execute("DELETE FROM accounts WHERE id = $1", &[&(id as i32)]).unwrap();
                        }
                        1 => {
                            pg.execute(
                                "INSERT INTO accounts VALUES ($1, 0, 'back') ON CONFLICT (id) DO UPDATE SET note = 'upserted'",
                                &[&(id as i32)],
                            )
                            .unwrap();
                        }
                        2 => {
                            let low = id as i32;
                            pg.execute("UPDATE accounts SET balance = balance + 1 WHERE id BETWEEN $1 AND $1 + 4", &[&low]).unwrap();
                        }
                        _ => {
                            pg.execute("UPDATE accounts SET balance = balance + 1, note = md5(random()::text) WHERE id = $1", &[&(id as i32)])
                                .unwrap();
                        }
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let readers: Vec<_> = (0..6u64)
        .map(|r| {
            let stop = stop.clone();
            let ops = ops.clone();
            std::thread::spawn(move || {
                let mut con = connect(port);
                let mut rng = Rng::new(seed ^ ((r + 100) * 0x9876_5431));
                while !stop.load(Ordering::Relaxed) {
                    if rng.next_u64().is_multiple_of(4) {
                        let keys: Vec<String> = (0..10)
                            .map(|_| format!(r#"{{"id":{}}}"#, id(&mut rng)))
                            .collect();
                        let _: Vec<Option<String>> = redis::cmd("PGCACHE.MULTIREAD")
                            .arg("accounts")
                            .arg(format!("[{}]", keys.join(",")))
                            .query(&mut con)
                            .unwrap();
                    } else {
                        read(
                            &mut con,
                            "accounts",
                            &format!(r#"{{"id":{}}}"#, id(&mut rng)),
                        )
                        .unwrap();
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Kill the listener's session three times while the writers run.
    let mut kills = 0;
    let mut admin = stack.pg.superuser();
    for _ in 0..3 {
        let pid = wait_for("the listener", Duration::from_secs(20), || {
            listener_pid(&stack.pg)
        });
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        kills += 1;
        wait_for("the listener to reconnect", Duration::from_secs(20), || {
            listener_pid(&stack.pg).filter(|p| *p != pid)
        });
    }
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }

    // The invalidation lag has passed once a marker change made after the last write is
    // applied: notifications are handled in commit order.
    let mut con = stack.con();
    stack
        .pg
        .execute("INSERT INTO accounts VALUES (100000, 0, 'marker')");
    read(&mut con, "accounts", r#"{"id":100000}"#)
        .unwrap()
        .unwrap();
    stack
        .pg
        .execute("UPDATE accounts SET note = 'marker moved' WHERE id = 100000");
    wait_gone(&mut con, r#"pg_cache:accounts:{"id":100000}"#);

    let truth = postgres_rows(&stack.pg);
    // Raw entries: give a reconnect flush still under way a moment to finish; a stale entry
    // never heals by itself (TTL 3600 s), so waiting cannot hide one.
    let stale_entries = |con: &mut redis::Connection| -> Vec<String> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("pg_cache:accounts:*")
            .query(con)
            .unwrap();
        keys.into_iter()
            .filter(|key| {
                let id: i64 = key
                    .trim_start_matches(r#"pg_cache:accounts:{"id":"#)
                    .trim_end_matches('}')
                    .parse()
                    .unwrap();
                let cached: Option<String> = redis::cmd("GET").arg(key).query(con).unwrap();
                match (cached.as_deref(), truth.get(&id)) {
                    (None, _) => false,
                    (Some("null"), None) => false,
                    (Some(c), Some(t)) => c != t,
                    (Some(_), None) => true,
                }
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut stale = stale_entries(&mut con);
    while !stale.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        stale = stale_entries(&mut con);
    }
    // And what clients read now, for every id.
    let mut wrong_reads = 0;
    for id in 1..=ROWS {
        let got = read(&mut con, "accounts", &format!(r#"{{"id":{id}}}"#)).unwrap();
        if got.as_ref() != truth.get(&id) {
            wrong_reads += 1;
        }
    }
    println!(
        "consistency: seed {seed:#x}, {} operations, {kills} listener kills, {} stale entries, {wrong_reads} wrong reads",
        ops.load(Ordering::Relaxed),
        stale.len()
    );
    assert_eq!(
        (stale.len(), wrong_reads),
        (0, 0),
        "stale entries: {stale:?}"
    );
}
