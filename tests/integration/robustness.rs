//! Never stall, never crash, never leak: PostgreSQL outages, slow queries, full queues,
//! timeouts, panics, unloading, and the password.
use pgcache_testkit::*;
use std::time::Duration;

const SLOW_SQL: &str = "
    CREATE TABLE items (id integer PRIMARY KEY, v text);
    INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 50) g;
    CREATE VIEW slow_items AS SELECT id, v, pg_sleep(0.8) IS NULL AS slept FROM items;
";

#[test]
fn slow_queries_block_only_their_clients() {
    let stack = Stack::start(SLOW_SQL);
    let mut con = stack.con();
    read(&mut con, "items", r#"{"id":1}"#).unwrap(); // cached
    let slow: Vec<_> = (1..=4)
        .map(|i| spawn_read(stack.redis.port, "slow_items", format!(r#"{{"id":{i}}}"#)))
        .collect();
    wait_blocked(&mut con, 4);
    // While all four wait on PostgreSQL, everyone else is served.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert!(read(&mut con, "items", r#"{"id":1}"#).unwrap().is_some());
    assert_eq!(
        info_int(&mut con, "clients", "blocked_clients"),
        4,
        "the slow reads were still waiting"
    );
    for t in slow {
        assert!(t.join().unwrap().unwrap().is_some());
    }
}

#[test]
fn a_full_queue_is_an_immediate_error() {
    let stack = Stack::start_with(
        SLOW_SQL,
        &["workers", "1", "pool_size", "1", "queue_size", "1"],
    );
    let mut con = stack.con();
    read(&mut con, "items", r#"{"id":1}"#).unwrap(); // schema cached
    let first = spawn_read(stack.redis.port, "slow_items", r#"{"id":2}"#);
    // Wait until the worker is running the first query, so the queue is empty again.
    let mut pg = stack.pg.client();
    wait_for(
        "the first slow query to run",
        Duration::from_secs(10),
        || {
            let n: i64 = pg
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%slow_items%' AND state = 'active' AND pid <> pg_backend_pid()", &[])
            .unwrap()
            .get(0);
            (n == 1).then_some(())
        },
    );
    let second = spawn_read(stack.redis.port, "slow_items", r#"{"id":3}"#);
    wait_blocked(&mut con, 2);
    let e = read(&mut con, "slow_items", r#"{"id":4}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("queue is full"), "{e}");
    assert!(first.join().unwrap().unwrap().is_some());
    assert!(second.join().unwrap().unwrap().is_some());
}

#[test]
fn a_timed_out_request_gets_exactly_one_reply() {
    let stack = Stack::start_with(SLOW_SQL, &["request_timeout_ms", "200"]);
    let mut con = stack.con();
    let e = read(&mut con, "slow_items", r#"{"id":5}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("timed out after 200 ms"), "{e}");
    // The worker finishes later; its result must not reach the client as a stray reply.
    wait_for("the slow query to finish", Duration::from_secs(10), || {
        let n: i64 = stack
            .pg
            .client()
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%slow_items%' AND state = 'active' AND pid <> pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    });
    for i in 0..5 {
        let echo: String = redis::cmd("ECHO").arg(i).query(&mut con).unwrap();
        assert_eq!(echo, i.to_string());
    }
}

#[test]
fn statement_timeout_cancels_slow_queries() {
    let stack = Stack::start_with(SLOW_SQL, &["statement_timeout_ms", "100"]);
    let mut con = stack.con();
    let e = read(&mut con, "slow_items", r#"{"id":6}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("statement_timeout_ms"), "{e}");
    // Raised at runtime, the same query now completes on the same pooled connection.
    config_set(&mut con, "pgcache.statement_timeout_ms", "5000").unwrap();
    assert!(
        read(&mut con, "slow_items", r#"{"id":6}"#)
            .unwrap()
            .is_some()
    );
}

#[test]
fn postgres_down_cached_rows_served_misses_fail_fast_and_recovery_is_automatic() {
    let mut stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let cached = read(&mut con, "users", r#"{"id":1}"#).unwrap();
    stack.pg.stop();
    assert_eq!(read(&mut con, "users", r#"{"id":1}"#).unwrap(), cached);
    for _ in 0..3 {
        let e = read(&mut con, "users", r#"{"id":2}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PostgreSQL unavailable"), "{e}");
        assert!(!e.contains(PG_PASSWORD));
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
    }
    stack.pg.restart();
    let row = wait_for("pgcache to reconnect", Duration::from_secs(20), || {
        read(&mut con, "users", r#"{"id":2}"#).ok()
    });
    assert_eq!(json(&row.unwrap())["id"], 2);
}

#[test]
fn unreachable_postgres_errors_within_the_connect_timeout() {
    // A listening socket that never accepts, its accept queue already full: the kernel
    // drops further connection attempts (SYNs), as a host that drops packets does, so only
    // the connect timeout can end them.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blackhole.local_addr().unwrap().port();
    {
        use std::os::fd::AsRawFd;
        assert_eq!(unsafe { libc::listen(blackhole.as_raw_fd(), 0) }, 0);
    }
    let _queued: Vec<std::net::TcpStream> = (0..2)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(
                &blackhole.local_addr().unwrap(),
                Duration::from_millis(200),
            )
            .ok()
        })
        .collect();
    let dropped = std::net::TcpStream::connect_timeout(
        &blackhole.local_addr().unwrap(),
        Duration::from_millis(300),
    );
    assert!(dropped.is_err(), "the accept queue should be full");
    let port = port.to_string();
    let args: Vec<String> = [
        "pg_host",
        "127.0.0.1",
        "pg_port",
        &port,
        "pg_connect_timeout_ms",
        "500",
        "request_timeout_ms",
        "20000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    let e = read(&mut con, "users", r#"{"id":1}"#)
        .unwrap_err()
        .to_string();
    // The connect timeout (500 ms) answered, not the request timeout (20 s).
    assert!(e.contains("PostgreSQL unavailable at 127.0.0.1"), "{e}");
    assert!(!e.contains("timed out after 20000 ms"), "{e}");
}

#[test]
fn panics_become_error_replies() {
    let stack = Stack::start_with(USERS_SQL, &["debug_commands", "yes"]);
    let mut con = stack.con();
    for place in ["MAIN", "WORKER", "REPLY"] {
        let e = redis::cmd("PGCACHE.DEBUG")
            .arg("PANIC")
            .arg(place)
            .query::<String>(&mut con)
            .unwrap_err();
        assert!(e.to_string().contains("internal error"), "{place}: {e}");
    }
    // A panic in a callback Redis makes (a timer here; also notifications, INFO) is
    // contained and logged: it must not unwind into Redis, which would abort the server.
    let ok: String = redis::cmd("PGCACHE.DEBUG")
        .arg("PANIC")
        .arg("TIMER")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    wait_for(
        "the timer's panic to be logged",
        Duration::from_secs(10),
        || {
            stack
                .redis
                .log()
                .contains("internal error in PGCACHE.DEBUG's timer")
                .then_some(())
        },
    );
    assert!(read(&mut con, "users", r#"{"id":1}"#).unwrap().is_some());
    assert!(stack.redis.log().contains("PGCACHE.DEBUG panic"));
    // Without the setting the command does not exist.
    let plain = Stack::start(USERS_SQL);
    let e = redis::cmd("PGCACHE.DEBUG")
        .arg("PANIC")
        .arg("MAIN")
        .query::<String>(&mut plain.con())
        .unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("unknown command"),
        "{e}"
    );
}

#[test]
fn module_unload_leaves_no_thread_and_it_loads_again() {
    let stack = Stack::start_with(USERS_SQL, &["workers", "3"]);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    let pid = stack.redis.pid();
    // The workers, the listener, the deadline thread and the freshness prober.
    assert_eq!(pgcache_threads(pid), 3 + 1 + 1 + 1);
    let _: String = redis::cmd("MODULE")
        .arg("UNLOAD")
        .arg("pgcache")
        .query(&mut con)
        .unwrap();
    wait_for("worker threads to exit", Duration::from_secs(5), || {
        (pgcache_threads(pid) == 0).then_some(())
    });
    let mut load = redis::cmd("MODULE");
    load.arg("LOAD").arg(module_path().to_str().unwrap());
    for a in stack.pg.module_args() {
        load.arg(a);
    }
    let _: String = load.query(&mut con).unwrap();
    assert_eq!(
        json(&read(&mut con, "users", r#"{"id":2}"#).unwrap().unwrap())["id"],
        2
    );
}

#[test]
fn the_password_never_shows() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    let _ = read(&mut con, "nosuch", r#"{"id":1}"#);
    let mut outputs = vec![stack.redis.log()];
    let info: String = redis::cmd("INFO")
        .arg("everything")
        .query(&mut con)
        .unwrap();
    outputs.push(info);
    let config = config_get(&mut con, "*");
    outputs.push(config.join(" "));
    let health: redis::Value = redis::cmd("PGCACHE.HEALTH").query(&mut con).unwrap();
    outputs.push(format!("{health:?}"));
    // MODULE LIST (an admin command) shows the loadmodule line as given, the way CONFIG GET
    // shows requirepass: pgcache no longer alters it, so a rewritten redis.conf still works.
    for out in outputs {
        assert!(!out.contains(PG_PASSWORD), "password leaked in: {out}");
    }
    // A wrong password is reported without echoing it.
    let mut args = stack.pg.module_args();
    let i = args.iter().position(|a| a == PG_PASSWORD).unwrap();
    args[i] = "wrong-pw-123".into();
    let other = Redis::start(&args);
    let e = read(&mut other.connection(), "users", r#"{"id":1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("wrong-pw-123") && !other.log().contains("wrong-pw-123"));
}

#[test]
fn invalid_settings_stop_the_load_naming_the_setting() {
    for (args, named) in [
        (vec!["pg_hots", "x"], "pg_hots"),
        (vec!["pg_port", "notaport"], "pg_port"),
        (vec!["default_ttl", "0"], "default_ttl"),
        (vec!["events", "everything"], "events"),
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let log = match Redis::start_with(&args, &[], &[]) {
            Ok(_) => panic!("{args:?} loaded"),
            Err(log) => log,
        };
        assert!(log.contains(&format!("setting {named}")), "{args:?}: {log}");
    }
}

#[test]
fn settings_from_the_environment_and_config_set() {
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let port = pg.port.to_string();
    let redis = Redis::start_with(
        &["default_ttl".to_string(), "100".to_string()],
        &[],
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port),
            ("PGDATABASE", "app"),
            ("PGCACHE_PG_USER", "app"),
            ("PGPASSWORD", PG_PASSWORD),
            ("PGCACHE_PG_SSLMODE", "disable"),
            ("PGCACHE_DEFAULT_TTL", "50"),
        ],
    )
    .unwrap();
    let mut con = redis.connection();
    read(&mut con, "users", r#"{"id":1}"#).unwrap().unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(r#"pg_cache:users:{"id":1}"#)
        .query(&mut con)
        .unwrap();
    assert!(
        (90..=100).contains(&ttl),
        "module args win over the environment: {ttl}"
    );

    config_set(&mut con, "pgcache.default_ttl", "30").unwrap();
    read(&mut con, "users", r#"{"id":2}"#).unwrap().unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(r#"pg_cache:users:{"id":2}"#)
        .query(&mut con)
        .unwrap();
    assert!((25..=30).contains(&ttl), "{ttl}");
    let got = config_get(&mut con, "pgcache.default_ttl");
    assert_eq!(got, vec!["pgcache.default_ttl", "30"]);
    let e = config_set(&mut con, "pgcache.default_ttl", "-1").unwrap_err();
    assert!(e.to_string().contains("TTL"), "{e}");
}

#[test]
fn the_allowlist_restricts_tables_at_runtime() {
    let stack = Stack::start_with(
        &format!(
            "{USERS_SQL} CREATE TABLE secrets (id integer PRIMARY KEY); INSERT INTO secrets VALUES (1);"
        ),
        &["tables", "users"],
    );
    let mut con = stack.con();
    assert!(read(&mut con, "users", r#"{"id":1}"#).unwrap().is_some());
    let e = read(&mut con, "secrets", r#"{"id":1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("allowlist"), "{e}");
    config_set(&mut con, "pgcache.tables", "public.secrets").unwrap();
    assert!(read(&mut con, "secrets", r#"{"id":1}"#).unwrap().is_some());
    let e = read(&mut con, "users", r#"{"id":1}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("allowlist"),
        "a cached table is checked again: {e}"
    );
}

/// `secrets` spelled `n` ways (case, schema, quotes): each spelling is resolved once.
fn spellings_of_secrets(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name: String = "secrets"
                .chars()
                .enumerate()
                .map(|(at, c)| {
                    if i >> at & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            if i >> 7 & 1 == 1 {
                format!("public.{name}")
            } else {
                name
            }
        })
        .collect()
}

#[test]
fn narrowing_the_allowlist_while_a_table_is_being_read_leaves_it_unreadable() {
    let stack = Stack::start_with(
        &format!(
            "{USERS_SQL} CREATE TABLE secrets (id integer PRIMARY KEY); INSERT INTO secrets VALUES (1);"
        ),
        &["workers", "4"],
    );
    let mut con = stack.con();
    let spellings = spellings_of_secrets(256);
    for round in 0..20 {
        config_set(&mut con, "pgcache.tables", "users,secrets").unwrap();
        // Readers resolve new spellings of the table while the list narrows under them.
        let readers: Vec<_> = spellings
            .chunks(64)
            .map(|chunk| {
                let (port, chunk) = (stack.redis.port, chunk.to_vec());
                std::thread::spawn(move || {
                    let mut con = connect(port);
                    for spelling in chunk {
                        let _ = read(&mut con, &spelling, r#"{"id":1}"#);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(round % 5));
        config_set(&mut con, "pgcache.tables", "users").unwrap();
        for reader in readers {
            reader.join().unwrap();
        }
        for spelling in spellings
            .iter()
            .step_by(7)
            .chain(["secrets".to_string()].iter())
        {
            let e = read(&mut con, spelling, r#"{"id":1}"#)
                .expect_err("the table left the allowlist")
                .to_string();
            assert!(e.contains("allowlist"), "round {round}, {spelling}: {e}");
        }
    }
}

#[test]
fn nul_bytes_are_refused_everywhere_and_config_stays_readable() {
    let stack = Stack::start_with(USERS_SQL, &[]);
    let replica = stack.start_replica();
    let mut con = stack.con();
    for target in ["PUBLISH", "XADD"] {
        let e = redis::cmd("PGCACHE.HOOK")
            .arg(&["ADD", "h", "ON", "miss", target])
            .arg(b"a\x00b".as_slice())
            .query::<String>(&mut con)
            .unwrap_err()
            .to_string();
        assert!(e.contains("control characters"), "{e}");
    }
    let e = redis::cmd("PGCACHE.HOOK")
        .arg(&["ADD", "h", "ON", "miss", "TABLE"])
        .arg(b"\"a\x00b\"".as_slice())
        .arg(&["PUBLISH", "c"])
        .query::<String>(&mut con)
        .unwrap_err()
        .to_string();
    assert!(e.contains("NUL"), "{e}");
    for setting in ["pgcache.event_channel", "pgcache.hooks"] {
        assert!(config_set(&mut con, setting, b"x\x00y".as_slice()).is_err());
    }
    let e = read(&mut con, "us\0ers", r#"{"id":1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("NUL"), "{e}");
    assert!(!config_get(&mut con, "pgcache.*").is_empty());
    let _: String = redis::cmd("CONFIG")
        .arg("REWRITE")
        .query(&mut con)
        .unwrap_or_default();
    let mut rcon = replica.connection();
    for c in [&mut con, &mut rcon] {
        let pong: String = redis::cmd("PING").query(c).unwrap();
        assert_eq!(pong, "PONG");
    }
}

#[test]
fn misses_are_answered_but_not_cached_over_maxmemory_under_noeviction() {
    let stack = Stack::start_with(USERS_SQL, &[]);
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":1}"#);
    let used: i64 = info_int(&mut con, "memory", "used_memory");
    config_set(&mut con, "maxmemory-policy", "noeviction").unwrap();
    config_set(&mut con, "maxmemory", (used - 1024).to_string()).unwrap();
    let row = read(&mut con, "users", r#"{"id":2}"#).unwrap().unwrap();
    assert_eq!(json(&row)["id"], 2);
    let rows = multiread(&mut con, "users", &id_array(3..=20)).unwrap();
    assert!(rows.iter().all(Option::is_some));
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pg_cache:*")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        keys,
        vec![r#"pg_cache:users:{"id":1}"#],
        "nothing cached past maxmemory"
    );
    let stats = map_reply(&mut con, "PGCACHE.STATS");
    let skipped: i64 = redis::from_redis_value(stats["fills_skipped_oom"].clone()).unwrap();
    assert_eq!(skipped, 19);
    // With room again, misses are cached as before.
    config_set(&mut con, "maxmemory", "0").unwrap();
    read_until_cached(&mut con, "users", r#"{"id":2}"#);
}

#[test]
fn oversized_arguments_are_refused_before_they_are_read() {
    let stack = Stack::start_with(USERS_SQL, &[]);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    let huge_keys = format!("[{}]", vec![r#"{"id":1}"#; 25_000_000].join(","));
    assert!(huge_keys.len() > 200_000_000);
    let e = multiread(&mut con, "users", &huge_keys)
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiread_max"), "{e}");
    drop(huge_keys);
    // Just past the limit in count, small in bytes: refused at key 1001, not after reading all.
    let e = multiread(&mut con, "users", &id_array(1..=1001))
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than 1000 keys"), "{e}");
    let huge_row = format!(r#"{{"id":1,"name":"{}"}}"#, "x".repeat(200_000_000));
    let e = write(&mut con, "users", r#"{"id":1}"#, &huge_row)
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than the 16777216"), "{e}");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn table_spellings_are_bounded_and_each_still_reads_its_table() {
    let stack = Stack::start_with(USERS_SQL, &[]);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    // Every mix of upper and lower case of "public.users" (2^11 spellings) names one table.
    let letters: Vec<char> = "publicusers".chars().collect();
    for mask in 0..2048u32 {
        let mut spelled: String = letters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if mask & (1 << i) != 0 {
                    c.to_ascii_uppercase()
                } else {
                    *c
                }
            })
            .collect();
        spelled.insert(6, '.');
        let row = read(&mut con, &spelled, r#"{"id":1}"#).unwrap().unwrap();
        assert_eq!(json(&row)["id"], 1, "{spelled}");
    }
    let health = map_reply(&mut con, "PGCACHE.HEALTH");
    let spellings: i64 = redis::from_redis_value(health["table_spellings"].clone()).unwrap();
    assert!((2..=1024).contains(&spellings), "{spellings}");
}

#[test]
fn a_drain_lets_module_unload_through_while_requests_keep_coming() {
    let stack = Stack::start_with(USERS_SQL, &["debug_commands", "yes"]);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    // A miss held on a worker: Redis refuses MODULE UNLOAD while a client waits on pgcache.
    debug(&mut con, "FILLS", "HOLD");
    let waiting = spawn_read(stack.redis.port, "users", r#"{"id":2}"#);
    wait_blocked(&mut con, 1);
    let unload = |con: &mut redis::Connection| {
        redis::cmd("MODULE")
            .arg(&["UNLOAD", "pgcache"])
            .query::<String>(con)
    };
    let e = unload(&mut con).unwrap_err().to_string();
    assert!(e.contains("blocked clients"), "{e}");

    let drain = |con: &mut redis::Connection, args: &[&str]| {
        redis::cmd("PGCACHE.DRAIN").arg(args).query::<i64>(con)
    };
    assert_eq!(
        drain(&mut con, &["30"]).unwrap(),
        1,
        "one request in flight"
    );
    // While draining, a hit is served and a miss is refused at once, saying why.
    assert!(read(&mut con, "users", r#"{"id":1}"#).unwrap().is_some());
    let e = read(&mut con, "users", r#"{"id":3}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("draining for MODULE UNLOAD"), "{e}");
    let health = map_reply(&mut con, "PGCACHE.HEALTH");
    assert_eq!(
        redis::from_redis_value::<String>(health["status"].clone()).unwrap(),
        "degraded"
    );
    for bad in ["-1", "x", "3601"] {
        let e = drain(&mut con, &[bad]).unwrap_err().to_string();
        assert!(e.contains("seconds from 0"), "{bad}: {e}");
    }
    // DRAIN 0 ends it: misses are fetched again.
    drain(&mut con, &["0"]).unwrap();
    debug(&mut con, "FILLS", "RELEASE");
    assert!(waiting.join().unwrap().unwrap().is_some());
    assert!(read(&mut con, "users", r#"{"id":3}"#).unwrap().is_some());

    // The operator's sequence under a steady stream of misses: DRAIN until 0, UNLOAD.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let (port, stop) = (stack.redis.port, stop.clone());
            std::thread::spawn(move || {
                let mut con = connect(port);
                let mut id = i;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    id = (id + 4) % 50;
                    let _ = invalidate(&mut con, "users", &format!(r#"{{"id":{id}}}"#));
                    let _ = read(&mut con, "users", &format!(r#"{{"id":{id}}}"#));
                }
            })
        })
        .collect();
    wait_for("DRAIN, then MODULE UNLOAD", Duration::from_secs(20), || {
        (drain(&mut con, &["5"]).unwrap() == 0 && unload(&mut con).is_ok()).then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    let mut load = redis::cmd("MODULE");
    load.arg("LOAD").arg(module_path().to_str().unwrap());
    load.arg(stack.pg.module_args());
    let _: String = load.query(&mut con).unwrap();
    // A new load starts without a drain.
    assert!(read(&mut con, "users", r#"{"id":4}"#).unwrap().is_some());
}

#[test]
fn pool_connections_that_go_silent_are_given_up_and_replaced() {
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let proxy = SilentProxy::start(pg.port);
    let args = proxy.module_args(
        &pg,
        &[
            "statement_timeout_ms",
            "1000",
            "request_timeout_ms",
            "2000",
            "listen",
            "no",
        ],
    );
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    for id in 1..=4 {
        read(&mut con, "users", &format!(r#"{{"id":{id}}}"#)).unwrap();
    }
    assert!(proxy.silence(Silence::All) >= 1);

    // A request on a silent connection fails at its timeout; the connection is given up,
    // and the next requests get new ones that answer.
    let rows = wait_for("misses answered again", Duration::from_secs(20), || {
        read(&mut con, "users", r#"{"id":10}"#).ok().flatten()
    });
    assert_eq!(json(&rows)["id"], 10);
    for id in 11..=20 {
        assert!(
            read(&mut con, "users", &format!(r#"{{"id":{id}}}"#))
                .unwrap()
                .is_some()
        );
    }
    assert!(stats_figure(&mut con, "pg_silent_connections") >= 1);
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_connection_slower_to_open_than_requests_wait_is_kept_and_postgres_not_called_down() {
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    // Opening a connection takes longer than a request waits (TLS and authentication far
    // away, say).
    let proxy = SilentProxy::start(pg.port);
    proxy.delay_new_connections(Duration::from_millis(1500));
    let args = proxy.module_args(
        &pg,
        &[
            "request_timeout_ms",
            "200",
            "pg_connect_timeout_ms",
            "5000",
            "listen",
            "no",
        ],
    );
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    // The requests that come while it opens time out, but PostgreSQL is not taken for
    // unreachable: the connection is kept for the next ones.
    let mut failures = Vec::new();
    let row = wait_for("a miss answered", Duration::from_secs(20), || {
        match read(&mut con, "users", r#"{"id":3}"#) {
            Ok(row) => row,
            Err(e) => {
                failures.push(e.to_string());
                None
            }
        }
    });
    assert_eq!(json(&row)["id"], 3);
    assert!(
        !failures.is_empty(),
        "the first request waited for the connection"
    );
    assert!(
        failures.iter().all(|e| !e.contains("unavailable")),
        "{failures:#?}"
    );
}

#[test]
fn only_one_connection_is_opened_past_its_requests_deadline_at_a_time() {
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    // PostgreSQL accepts so slowly that every connect outlives the request that started it.
    let proxy = SilentProxy::start(pg.port);
    proxy.delay_new_connections(Duration::from_millis(5000));
    let args = proxy.module_args(
        &pg,
        &[
            "request_timeout_ms",
            "200",
            "pg_connect_timeout_ms",
            "60000",
            "workers",
            "4",
            "listen",
            "no",
        ],
    );
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    // Misses of different rows, one after another, each timing out: one connect runs on to
    // its pg_connect_timeout_ms, the others wait for it instead of each holding a worker.
    for id in 1..=6 {
        assert!(read(&mut con, "users", &format!(r#"{{"id":{id}}}"#)).is_err());
    }
    assert_eq!(stats_figure(&mut con, "pool_in_use"), 1);
    assert_eq!(stats_figure(&mut con, "pool_open"), 1);
    // The one connection, once open, serves the next requests.
    let row = wait_for("a miss answered", Duration::from_secs(30), || {
        read(&mut con, "users", r#"{"id":3}"#).ok().flatten()
    });
    assert_eq!(json(&row)["id"], 3);
}

#[test]
fn requests_answered_at_their_deadline_still_get_exactly_one_reply() {
    let stack = Stack::start_with(
        USERS_SQL,
        &[
            "debug_commands",
            "yes",
            "request_timeout_ms",
            "300",
            "workers",
            "4",
        ],
    );
    let mut con = stack.con();
    debug(&mut con, "FILLS", "HOLD");
    // Held fills are handed back at their request's deadline, the moment Redis would time
    // the client out: the worker's answer and the timeout meet, round after round.
    for round in 0..5 {
        let clients: Vec<_> = (0..40)
            .map(|i| {
                let port = stack.redis.port;
                std::thread::spawn(move || {
                    let mut con = connect(port);
                    con.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let id = round * 100 + i + 1;
                    match read(&mut con, "users", &format!(r#"{{"id":{id}}}"#)) {
                        Ok(_) => Ok(()),
                        Err(e) if e.is_timeout() => Err(format!("no reply for id {id}")),
                        Err(e) => {
                            assert!(e.to_string().contains("timed out"), "{e}");
                            Ok(())
                        }
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap().unwrap();
        }
    }
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn after_postgres_restarts_reads_get_rows_not_errors() {
    let mut stack = Stack::start_with(USERS_SQL, &["pool_size", "8", "workers", "8"]);
    let read_concurrently = |port: u16, ids: std::ops::Range<i64>| -> Vec<String> {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let ids = ids.clone();
                std::thread::spawn(move || {
                    let mut con = connect(port);
                    ids.filter(|id| id % 8 == t)
                        .filter_map(|id| {
                            read(&mut con, "users", &format!(r#"{{"id":{id}}}"#))
                                .err()
                                .map(|e| format!("id {id}: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    };
    // Pooled connections opened, then idle.
    assert_eq!(
        read_concurrently(stack.redis.port, 1..400),
        Vec::<String>::new()
    );
    let mut con = stack.con();
    let open = stats_figure(&mut con, "pool_open");
    assert!(open >= 2, "{open} pooled connections");

    // A fast restart terminates every backend (FATAL 57P01 on each idle connection).
    stack.pg.stop();
    stack.pg.restart();
    // Misses fail at once while pgcache knows PostgreSQL is down; it finds it back within
    // a second, and from then on nothing a restart left behind makes a read fail.
    wait_circuit_closed(&mut con);
    let errors = read_concurrently(stack.redis.port, 1000..1400);
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(stats_figure(&mut con, "errors"), 0);
}

#[test]
fn fills_whose_leader_and_waiters_all_timed_out_are_let_go_without_stopping_the_server() {
    let stack = Stack::start_with(USERS_SQL, &["debug_commands", "yes", "workers", "2"]);
    let mut con = stack.con();
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The table's schema known first, under the default timeout: learning it can take more
    // than 300 ms under the suite's load, every time.
    if let Err(e) = read(&mut con, "users", r#"{"id":1000}"#) {
        // Valkey 8.0.1 left this read unanswered for 30 s in 2 of ~10 CI runs (#50; not
        // reproduced since): say what the server was doing, should it happen again.
        let mut other = stack.con();
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let info: String = redis::cmd("INFO")
            .arg("all")
            .query(&mut other)
            .unwrap_or_default();
        let stats = redis::cmd("PGCACHE.STATS")
            .query::<redis::Value>(&mut other)
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        panic!(
            "the first READ: {e}\nINFO:\n{info}\nPGCACHE.STATS: {stats}\nserver log:\n{}",
            stack.redis.log()
        );
    }
    config_set(&mut con, "pgcache.request_timeout_ms", "300").unwrap();
    let port = stack.redis.port;
    for round in 0..3 {
        debug(&mut con, "FILLS", "STALL");
        // A MULTIREAD leads the fills of 40 keys; READs of the same keys join them as
        // waiters. Every client times out while the rows are stalled; released, the
        // leader's answer comes back late and is dropped, answering waiters that were
        // answered already.
        let ids: Vec<i64> = (1..=40).map(|i| round * 40 + i).collect();
        let leader = {
            let ids = ids.clone();
            std::thread::spawn(move || multiread(&mut connect(port), "users", &id_array(ids)))
        };
        wait_for(
            "the leader's rows to be stalled",
            Duration::from_secs(5),
            || (debug(&mut con, "FILLS", "HELD") == "1").then_some(()),
        );
        let waiters: Vec<_> = ids
            .iter()
            .map(|id| spawn_read(port, "users", format!(r#"{{"id":{id}}}"#)))
            .collect();
        for waiter in waiters {
            let reply = waiter.join().unwrap();
            assert!(
                reply
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("timed out")),
                "round {round}: a waiter's reply: {reply:?}"
            );
        }
        let reply = leader.join().unwrap();
        assert!(
            reply
                .as_ref()
                .is_err_and(|e| e.to_string().contains("timed out")),
            "round {round}: the leader's reply: {reply:?}"
        );
        debug(&mut con, "FILLS", "RELEASE");
        wait_for(
            "the stalled fills to be let go",
            Duration::from_secs(5),
            || (stats_figure(&mut con, "fills_in_flight") == 0).then_some(()),
        );
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG", "round {round}: the server still answers");
    }
}

/// Redis keeps 256 bytes of a CONFIG SET error: a long one is cut by pgcache at a character,
/// so the reply stays text a client can read (the fuzzer found one cut inside a character).
#[test]
fn a_long_bad_setting_gets_a_readable_error() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let e = config_set(&mut con, "pgcache.slowlog_threshold_us", "é".repeat(300))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected a whole number of microseconds"), "{e}");
}
