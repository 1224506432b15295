//! The protocol fuzzer: generated PGCACHE commands, with random, mutated and boundary
//! arguments and settings, against a live server with the module loaded. The server must
//! never die or contain a panic; every reply must be of the classes its command answers
//! (a row or nil, an array of them, a key, OK, a listing, a count) or an error that names
//! pgcache; malformed input must get an error (never nil); a reply missing for 5 s is a
//! hang; and PING is answered every 10 commands.
//!
//! `PGCACHE_FUZZ_COMMANDS` (default 100000) commands per run, `PGCACHE_FUZZ_SEED` to repeat
//! a run (the seed is printed; a failure prints the command that caused it).
mod generate;

use generate::{Expect, Generated, Rng};
use pgcache_testkit::*;
use std::time::{Duration, Instant};

const SCHEMA: &str = "
    CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL, born date);
    INSERT INTO users SELECT i, 'user' || i, DATE '2000-01-01' + i FROM generate_series(1, 50) i;
    CREATE TABLE things (code text, ref uuid, amount numeric,
                         PRIMARY KEY (code, ref, amount));
    INSERT INTO things VALUES ('a', '00000000-0000-0000-0000-000000000000', 1.5);
    CREATE TABLE events (at timestamp PRIMARY KEY, what text);
    INSERT INTO events VALUES ('2024-01-01 10:00', 'new year');
    CREATE VIEW v_users AS SELECT id, name FROM users;
";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A reply missing this long is a hang (requests time out after 3 s, see the stack).
const HANG: Duration = Duration::from_secs(5);

/// Whether an error reply is one a command of pgcache's may send: its own (`ERR pgcache:
/// ...`), Redis's arity error, or (CONFIG SET) Redis's refusal of a name or value.
fn expected_error(sent: &Generated, e: &redis::RedisError) -> bool {
    let detail = e.detail().unwrap_or("");
    let code = e.code().unwrap_or("");
    code == "ERR"
        && (detail.starts_with("pgcache:")
            || detail.starts_with("wrong number of arguments")
            || sent.expect == Expect::Config)
}

/// What a reply must not be, given what was sent.
fn check(sent: &Generated, reply: &redis::RedisResult<redis::Value>) -> Result<(), String> {
    let value = match reply {
        Err(e) if e.kind() == redis::ErrorKind::Io || e.is_connection_dropped() => {
            return Err(format!("no reply: {e}"));
        }
        Err(e) if e.is_timeout() => return Err(format!("no reply within {HANG:?}: {e}")),
        Err(e) => {
            let text = e.to_string();
            if text.contains(PG_PASSWORD) {
                return Err(format!("the error shows the password: {text}"));
            }
            if !expected_error(sent, e) {
                return Err(format!("an error that is not pgcache's: {text}"));
            }
            return Ok(());
        }
        Ok(value) => value,
    };
    let is_row = |v: &redis::Value| match v {
        redis::Value::Nil => true,
        redis::Value::BulkString(bytes) => {
            matches!(
                serde_json::from_slice(bytes),
                Ok(serde_json::Value::Object(_))
            )
        }
        _ => false,
    };
    let ok = |v: &redis::Value| {
        matches!(v, redis::Value::Okay) || matches!(v, redis::Value::SimpleString(s) if s == "OK")
    };
    let fits = match sent.expect {
        Expect::Error => false,
        Expect::Row => is_row(value),
        Expect::Rows => matches!(value, redis::Value::Array(items) if items.iter().all(is_row)),
        Expect::Key => {
            matches!(value, redis::Value::BulkString(key) if key.starts_with(b"pg_cache:"))
        }
        Expect::Done | Expect::Config => ok(value),
        Expect::Listing => matches!(value, redis::Value::Array(_) | redis::Value::Map(_)),
        Expect::Count => matches!(value, redis::Value::Int(n) if *n >= 0),
        Expect::Result => matches!(value, redis::Value::BulkString(bytes)
            if matches!(serde_json::from_slice(bytes), Ok(serde_json::Value::Array(rows))
                if rows.iter().all(serde_json::Value::is_object))),
    };
    if fits {
        Ok(())
    } else {
        Err(format!("expected {:?}, got {value:?}", sent.expect))
    }
}

/// The runtime settings (CONFIG SET targets) and their values, to put back after each SET.
fn runtime_settings(con: &mut redis::Connection) -> Vec<(String, Vec<u8>)> {
    let flat: Vec<Vec<u8>> = redis::cmd("CONFIG")
        .arg(&["GET", "pgcache.*"])
        .query(con)
        .unwrap();
    flat.chunks(2)
        .map(|pair| (String::from_utf8(pair[0].clone()).unwrap(), pair[1].clone()))
        .collect()
}

#[test]
fn generated_commands_never_crash_hang_or_get_a_malformed_reply() {
    let commands = env_number("PGCACHE_FUZZ_COMMANDS", 100_000);
    let seed = env_number(
        "PGCACHE_FUZZ_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    println!("fuzz: seed {seed} (PGCACHE_FUZZ_SEED={seed} repeats this run), {commands} commands");
    let mut stack = Stack::start_with(
        SCHEMA,
        &["statement_timeout_ms", "2000", "request_timeout_ms", "3000"],
    );
    let mut con = stack.con();
    con.set_read_timeout(Some(HANG)).unwrap();
    let mut pinger = stack.con();
    pinger.set_read_timeout(Some(HANG)).unwrap();
    let settings = runtime_settings(&mut con);
    let names: Vec<String> = settings.iter().map(|(n, _)| n.clone()).collect();
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let (mut errors, mut values) = (0u64, 0u64);
    for n in 0..commands {
        let sent = generate::command(&mut rng, &names);
        let mut cmd = redis::cmd(std::str::from_utf8(&sent.args[0]).unwrap());
        for arg in &sent.args[1..] {
            cmd.arg(arg.as_slice());
        }
        let reply = cmd.query::<redis::Value>(&mut con);
        if let Err(why) = check(&sent, &reply) {
            panic!("fuzz: seed {seed}, command {n}: {}\n  {why}", sent.shown());
        }
        match reply {
            Ok(_) => values += 1,
            Err(_) => errors += 1,
        }
        if sent.args[0] == b"CONFIG" {
            put_back(&mut con, &settings, &sent);
        }
        if n % 10 == 0 {
            let pong: String = redis::cmd("PING")
                .query(&mut pinger)
                .unwrap_or_else(|e| panic!("fuzz: seed {seed}: PING after command {n}: {e}"));
            assert_eq!(pong, "PONG");
        }
    }
    assert!(stack.redis.alive(), "fuzz: seed {seed}: the server died");
    let pong: String = redis::cmd("PING").query(&mut pinger).unwrap();
    assert_eq!(
        pong, "PONG",
        "fuzz: seed {seed}: the server does not answer"
    );
    let log = stack.redis.log();
    assert!(
        !log.contains("internal error"),
        "fuzz: seed {seed}: pgcache contained a panic:\n{}",
        log.lines()
            .filter(|l| l.contains("internal error"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!(
        "fuzz: {commands} commands in {:.1} s: {values} values, {errors} errors, server up, no panic",
        started.elapsed().as_secs_f64()
    );
}

/// Puts the setting a CONFIG SET changed back, so the run goes on with a working server.
fn put_back(con: &mut redis::Connection, settings: &[(String, Vec<u8>)], sent: &Generated) {
    let name = String::from_utf8_lossy(&sent.args[2]);
    if let Some((name, value)) = settings.iter().find(|(n, _)| *n == name) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value.as_slice())
            .query(con)
            .unwrap_or_else(|e| panic!("putting {name} back after {}: {e}", sent.shown()));
    }
}
