//! The load of a chaos run: clients mixing every reading and writing command, writers
//! changing rows in PostgreSQL, and a pinger timing PING; each tallies what it saw.

use crate::history::{History, Verdict};
use pgcache_testkit::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rows 1..=STATIC_ROWS never change in PostgreSQL: WRITE caches their exact JSON, so a
/// WRITE can never be what makes a row stale. Writers change the rows above.
pub const STATIC_ROWS: i64 = 200;
pub const ROWS: i64 = 2000;

/// The table, its rows and the triggers that invalidate them.
pub fn schema_sql() -> String {
    format!(
        "CREATE TABLE items (id integer PRIMARY KEY, version integer NOT NULL, note text);
         INSERT INTO items SELECT i, 0, 'note ' || i FROM generate_series(0, {ROWS}) i;
         {TRIGGER_SQL}
         SELECT pgcache_watch('items');"
    )
}

pub fn key(id: i64) -> String {
    format!(r#"pg_cache:items:{{"id":{id}}}"#)
}

/// What the clients saw.
#[derive(Default)]
pub struct Tally {
    pub requests: AtomicU64,
    pub rows: AtomicU64,
    pub nils: AtomicU64,
    pub errors: AtomicU64,
    /// Requests that got no reply within the client's timeout.
    pub no_reply: AtomicU64,
    /// Replies that are neither a row, nil nor an error.
    pub malformed: AtomicU64,
    /// A row of another key than the one asked for, or one PostgreSQL never committed for it
    /// (column for column).
    pub wrong_rows: AtomicU64,
    /// When each request was sent that got a committed row older than the one committed a
    /// second before: stale unless a fault's window explains it (the run decides after).
    pub old_rows: Mutex<Vec<Instant>>,
    pub error_kinds: Mutex<BTreeMap<String, u64>>,
    /// The first few malformed replies and wrong rows, to show.
    pub examples: Mutex<Vec<String>>,
}

impl Tally {
    fn example(&self, what: String) {
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < 10 {
            examples.push(what);
        }
    }

    /// Checks one row-or-nil reply for key `id`, asked for at `at`: a row of that key, and
    /// a version of it PostgreSQL committed, not older than the one due.
    fn row(&self, id: i64, value: &redis::Value, sent: &Sent) {
        let served = match value {
            redis::Value::Nil => {
                self.nils.fetch_add(1, Ordering::Relaxed);
                None
            }
            redis::Value::BulkString(bytes) => {
                match serde_json::from_slice::<serde_json::Value>(bytes) {
                    Ok(row) if row["id"] == id => {
                        self.rows.fetch_add(1, Ordering::Relaxed);
                        Some(row)
                    }
                    Ok(row) => {
                        self.wrong_rows.fetch_add(1, Ordering::Relaxed);
                        self.example(format!("{}: the row of another key: {row}", sent.what));
                        return;
                    }
                    Err(_) => {
                        self.malformed.fetch_add(1, Ordering::Relaxed);
                        self.example(format!("{}: not JSON: {value:?}", sent.what));
                        return;
                    }
                }
            }
            other => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                self.example(format!(
                    "{}: neither a row, nil nor an error: {other:?}",
                    sent.what
                ));
                return;
            }
        };
        match sent.history.judge(id, &served, sent.at, DUE_BEFORE) {
            Verdict::Fresh => {}
            Verdict::Old => self.old_rows.lock().unwrap().push(sent.at),
            Verdict::Unknown => {
                self.wrong_rows.fetch_add(1, Ordering::Relaxed);
                self.example(format!(
                    "{}: {served:?} is no version PostgreSQL committed for id {id}",
                    sent.what
                ));
            }
        }
    }

    /// Tallies one reply to a command that asked for the rows of `ids` (one id: a single
    /// row; several: an array).
    fn reply(
        &self,
        ids: &[i64],
        many: bool,
        reply: redis::RedisResult<redis::Value>,
        sent: &Sent,
    ) -> bool {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match reply {
            Ok(redis::Value::Array(items)) if many && items.len() == ids.len() => {
                for (id, item) in ids.iter().zip(&items) {
                    self.row(*id, item, sent);
                }
                true
            }
            Ok(value) if !many => {
                self.row(ids[0], &value, sent);
                true
            }
            Ok(value) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                self.example(format!(
                    "{}: not an array of {} rows: {value:?}",
                    sent.what,
                    ids.len()
                ));
                true
            }
            Err(e) if e.is_timeout() => {
                self.no_reply.fetch_add(1, Ordering::Relaxed);
                self.example(format!("{}: no reply: {e}", sent.what));
                false
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *self
                    .error_kinds
                    .lock()
                    .unwrap()
                    .entry(kind_of(&e))
                    .or_default() += 1;
                !(e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
            }
        }
    }

    /// Tallies a reply that carries no row (WRITE, INVALIDATE, FLUSH).
    fn done(&self, reply: redis::RedisResult<redis::Value>, sent: &str) -> bool {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match reply {
            Ok(_) => true,
            Err(e) if e.is_timeout() => {
                self.no_reply.fetch_add(1, Ordering::Relaxed);
                self.example(format!("{sent}: no reply: {e}"));
                false
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *self
                    .error_kinds
                    .lock()
                    .unwrap()
                    .entry(kind_of(&e))
                    .or_default() += 1;
                !(e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
            }
        }
    }
}

/// A request as sent: what it was (for examples), when, and the history to judge rows by.
struct Sent<'a> {
    what: String,
    at: Instant,
    history: &'a History,
}

/// A served row may not be older than the version committed this long before the request
/// was sent: the freshness bound (`max_staleness_ms`, 1000 by default), one probe interval
/// (100 ms) and a margin. A healthy feed invalidates within milliseconds; a stalled one is
/// caught by the bound.
pub const DUE_BEFORE: Duration = Duration::from_millis(1000 + 100 + 400);

/// An error's kind for the report: its code and first words, numbers and names left out.
pub fn kind_of(e: &redis::RedisError) -> String {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        return "connection lost (server restarting)".into();
    }
    let text = e
        .to_string()
        .replace("ResponseError: ", "")
        .replace("BusyLoading: ", "");
    let words: Vec<String> = text
        .split_whitespace()
        .filter(|w| !w.starts_with(['"', '{', '(']) && !w.chars().any(|c| c.is_ascii_digit()))
        .take(7)
        .map(|w| w.trim_end_matches([':', ',', ';']).to_string())
        .collect();
    words.join(" ")
}

/// The exact JSON PostgreSQL gives each static row, for WRITE.
pub fn static_rows(pg: &Pg) -> Arc<Vec<String>> {
    let rows = pg
        .superuser_of("app")
        .query(
            "SELECT row_to_json(items)::text FROM items WHERE id <= $1 ORDER BY id",
            &[&(STATIC_ROWS as i32)],
        )
        .unwrap();
    Arc::new(rows.iter().map(|r| r.get(0)).collect())
}

/// One client: a mix of READ, MULTIREAD, GET, MGET, WRITE, INVALIDATE and FLUSH until `stop`.
pub fn client(
    port: u16,
    seed: u64,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    rows: Arc<Vec<String>>,
    history: Arc<History>,
) {
    let mut rng = Rng::new(seed);
    let mut con: Option<redis::Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = con.as_mut() else {
            con = reconnect(port);
            if con.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        let id = rng.below_i64(ROWS + 1);
        let ids: Vec<i64> = (0..1 + rng.below_i64(12))
            .map(|_| rng.below_i64(ROWS + 1))
            .collect();
        let list = |ids: &[i64]| {
            let items: Vec<String> = ids.iter().map(|i| format!(r#"{{"id":{i}}}"#)).collect();
            format!("[{}]", items.join(","))
        };
        let sent = |what: String| Sent {
            what,
            at: Instant::now(),
            history: &history,
        };
        let keep = match rng.below_i64(100) {
            0..=39 => {
                let pk = format!(r#"{{"id":{id}}}"#);
                let s = sent(format!("READ items {pk}"));
                let r = redis::cmd("PGCACHE.READ").arg("items").arg(&pk).query(c);
                tally.reply(&[id], false, r, &s)
            }
            40..=51 => {
                let s = sent(format!("MULTIREAD items {}", list(&ids)));
                let r = redis::cmd("PGCACHE.MULTIREAD")
                    .arg("items")
                    .arg(list(&ids))
                    .query(c);
                tally.reply(&ids, true, r, &s)
            }
            52..=71 => {
                let s = sent(format!("GET {}", key(id)));
                let r = redis::cmd("PGCACHE.GET").arg(key(id)).query(c);
                tally.reply(&[id], false, r, &s)
            }
            72..=81 => {
                let s = sent(format!("MGET {ids:?}"));
                let mut cmd = redis::cmd("PGCACHE.MGET");
                for i in &ids {
                    cmd.arg(key(*i));
                }
                let r = cmd.query(c);
                tally.reply(&ids, true, r, &s)
            }
            82..=89 => {
                let id = 1 + rng.below_i64(STATIC_ROWS);
                let pk = format!(r#"{{"id":{id}}}"#);
                let r = redis::cmd("PGCACHE.WRITE")
                    .arg("items")
                    .arg(&pk)
                    .arg(&rows[id as usize])
                    .query(c);
                tally.done(r, &format!("WRITE items {pk}"))
            }
            90..=98 => {
                let pk = format!(r#"{{"id":{id}}}"#);
                let r = redis::cmd("PGCACHE.INVALIDATE")
                    .arg("items")
                    .arg(&pk)
                    .query(c);
                tally.done(r, &format!("INVALIDATE items {pk}"))
            }
            _ if rng.below_i64(20) == 0 => {
                let r = redis::cmd("PGCACHE.FLUSH").arg("items").query(c);
                tally.done(r, "FLUSH items")
            }
            _ => true,
        };
        if !keep {
            con = None;
        }
    }
}

/// A connection to the node on `port` whose every wait is bounded: a hung server fails the
/// run instead of hanging it.
pub fn reconnect(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    con.set_write_timeout(Some(Duration::from_secs(30))).ok()?;
    Some(con)
}

/// Runs `statement` (which RETURNs `row_to_json(items)::text` of the row it wrote, or
/// nothing) in a transaction on `c`, recording the version in `history` before COMMIT (so
/// no client sees it first) and dating it when COMMIT returns. Whether it committed.
pub fn write_recorded(
    c: &mut postgres::Client,
    history: &History,
    id: i32,
    statement: &str,
) -> Result<bool, postgres::Error> {
    let mut tx = c.transaction()?;
    let written = tx.query(statement, &[&id])?;
    let Some(first) = written.first() else {
        tx.rollback()?;
        return Ok(false);
    };
    let text: Option<String> = first.get(0);
    let row = text.map(|t| serde_json::from_str(&t).unwrap());
    // A DELETE returns the row it removed: what exists afterwards is no row.
    let row = if statement.starts_with("DELETE") {
        None
    } else {
        row
    };
    let at = history.pending(i64::from(id), row);
    tx.commit()?;
    history.committed(i64::from(id), at);
    Ok(true)
}

/// A writer: UPDATEs, DELETEs and INSERTs of the rows above STATIC_ROWS until `stop`,
/// reconnecting while PostgreSQL is away, each version recorded in `history`. Returns how
/// many statements committed.
pub fn writer(pg_port: u16, seed: u64, stop: Arc<AtomicBool>, history: Arc<History>) -> u64 {
    let mut rng = Rng::new(seed);
    let mut committed = 0;
    let mut client: Option<postgres::Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_mut() else {
            client = postgres::Config::new()
                .host("127.0.0.1")
                .port(pg_port)
                .user("app")
                .password(PG_PASSWORD)
                .dbname("app")
                .connect_timeout(Duration::from_secs(2))
                .connect(postgres::NoTls)
                .ok();
            if client.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        let id = (STATIC_ROWS + 1 + rng.below_i64(ROWS - STATIC_ROWS)) as i32;
        let statement = match rng.below_i64(10) {
            0 => "DELETE FROM items WHERE id = $1 RETURNING row_to_json(items)::text",
            1 => {
                "INSERT INTO items VALUES ($1, 0, 'back') ON CONFLICT (id) DO NOTHING \
                 RETURNING row_to_json(items)::text"
            }
            _ => {
                "UPDATE items SET version = version + 1, note = md5(random()::text) \
                 WHERE id = $1 RETURNING row_to_json(items)::text"
            }
        };
        match write_recorded(c, &history, id, statement) {
            Ok(true) => committed += 1,
            Ok(false) => {}
            Err(_) => client = None,
        }
    }
    committed
}

/// PING latencies, each with when it was sent; a failed PING is recorded as None.
pub type Pings = Arc<Mutex<Vec<(Instant, Option<Duration>)>>>;

/// Sends PING every few milliseconds until `stop`, timing each.
pub fn pinger(port: u16, pings: Pings, stop: Arc<AtomicBool>) {
    let mut con: Option<redis::Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        if con.is_none() {
            con = reconnect(port);
        }
        let sent = Instant::now();
        let answered = con
            .as_mut()
            .is_some_and(|c| redis::cmd("PING").query::<String>(c).is_ok());
        if !answered {
            con = None;
        }
        pings
            .lock()
            .unwrap()
            .push((sent, answered.then(|| sent.elapsed())));
        std::thread::sleep(Duration::from_millis(5));
    }
}
