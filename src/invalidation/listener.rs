//! The invalidation listener: a dedicated PostgreSQL connection that LISTENs on the
//! invalidation channel and turns each notification into cache keys to delete. It runs on
//! its own thread; keys are resolved and canonicalised here, and the deletions are handed
//! to the main thread (see `invalidation`).
//!
//! Two payload shapes are accepted:
//! - pgcache's trigger (examples/invalidation_trigger.sql):
//!   `{"table":"public.users","keys":[{"id":1},{"id":2}]}` — primary-key values only, so
//!   payloads stay far below PostgreSQL's 8000-byte NOTIFY limit whatever the row width;
//! - the original module's: `{"table":"users","operation":"UPDATE","old_data":{..},
//!   "new_data":{..}}` — the key is taken from both rows, so an UPDATE that changes the
//!   primary key invalidates the old and the new key.

use super::changes;
use super::feed::Feed;
use super::feed::listener::Listener;
use super::translate::{self, Payload};
use crate::error::Error;
use crate::model::ident::quote_ident;
use crate::model::source::PartRef;
use crate::pg::errors::describe;
use crate::pg::pool::{Connection, Pool};
use crate::pg::session::Failure;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Parses a notification payload of either accepted shape.
pub fn parse_payload(text: &str) -> Result<Payload, Error> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Error::invalid(format!("not JSON ({e})")))?;
    let table = value
        .get("table")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("no \"table\" string"))?
        .to_string();
    if value.get("flush") == Some(&Value::Bool(true)) {
        return Ok(Payload {
            table,
            rows: Vec::new(),
            entering: None,
            only_inserted: false,
            flush: true,
            flushed_keys: 0,
        });
    }
    let rows: Vec<Value> = if let Some(keys) = value.get("keys") {
        keys.as_array()
            .ok_or_else(|| Error::invalid("\"keys\" is not an array"))?
            .clone()
    } else if value.get("old_data").is_some() || value.get("new_data").is_some() {
        ["old_data", "new_data"]
            .iter()
            .filter_map(|k| value.get(*k))
            .filter(|v| v.is_object())
            .cloned()
            .collect()
    } else {
        return Err(Error::invalid(
            "neither \"keys\" nor \"old_data\"/\"new_data\"",
        ));
    };
    Ok(Payload {
        table,
        rows,
        entering: None,
        only_inserted: false,
        flush: false,
        flushed_keys: 0,
    })
}

impl Listener {
    /// Stops the listener thread, handed to `end` (to wait for it, or leave it to end on
    /// its own).
    pub fn stop(&self, end: &dyn Fn(std::thread::JoinHandle<()>)) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.thread.lock().unwrap().take() {
            end(handle);
        }
    }

    /// Waits (at most `limit`) for the first connection attempt to end, so that a server
    /// starting with PostgreSQL up caches from its first request on (the cache is held
    /// until the listener listens).
    pub fn wait_for_first_attempt(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.attempted.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `total`, waking early when asked to stop.
    fn pause(&self, total: Duration) {
        let until = Instant::now() + total;
        while !self.stopping() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `feed`'s listener thread on `channel`.
pub fn start(
    feed: PartRef<'static, Feed>,
    pool: Arc<Pool>,
    channel: String,
) -> std::io::Result<()> {
    let listener = &feed.listener;
    listener.stop.store(false, Ordering::SeqCst);
    listener.attempted.store(false, Ordering::SeqCst);
    let thread = feed.clone();
    let handle = std::thread::Builder::new()
        .name("pgcache-listener".into())
        .spawn(move || run(&thread, &pool, &channel))?;
    *listener.thread.lock().unwrap() = Some(handle);
    Ok(())
}

fn run(feed: &Feed, pool: &Pool, channel: &str) {
    let listener = &feed.listener;
    let mut backoff = Duration::from_millis(100);
    while !listener.stopping() {
        let attempt = listen(pool, channel);
        listener.attempted.store(true, Ordering::SeqCst);
        match attempt {
            Ok(mut conn) => {
                backoff = Duration::from_millis(100);
                listener.connected.store(true, Ordering::SeqCst);
                feed.apply.listener_connected();
                redis_module::logging::log_notice(format!(
                    "pgcache: listening for invalidations on channel {channel}"
                ));
                let reason = receive(feed, &mut conn);
                listener.connected.store(false, Ordering::SeqCst);
                feed.apply.listener_disconnected();
                if !listener.stopping() {
                    crate::stats::of(feed.source).listener_reconnects.inc();
                    *listener.last_loss.lock().unwrap() =
                        Some((std::time::SystemTime::now(), reason.clone()));
                    redis_module::logging::log_warning(format!(
                        "pgcache: invalidation listener lost its connection ({reason}); reconnecting"
                    ));
                }
            }
            Err(reason) => {
                redis_module::logging::log_warning(format!(
                    "pgcache: invalidation listener cannot connect ({reason}); retrying in {} ms",
                    backoff.as_millis()
                ));
                listener.pause(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn listen(pool: &Pool, channel: &str) -> Result<Connection, Error> {
    let mut conn = pool.connect_dedicated(Duration::from_secs(5), "pgcache-listener")?;
    conn.set_patience(LIVENESS_PATIENCE);
    conn.batch_execute(&format!("LISTEN {}", quote_ident(channel)))
        .map_err(|e| Error::postgres(describe(&e)).caused_by(e))?;
    Ok(conn)
}

/// How often the listener checks that its connection is still alive, whether or not
/// notifications arrive.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(2);

/// How long the listener waits for PostgreSQL to answer before it takes the connection for
/// dead: a network that drops packets without a reset is noticed within
/// `LIVENESS_INTERVAL + LIVENESS_PATIENCE`, then the listener reconnects and resynchronises.
const LIVENESS_PATIENCE: Duration = Duration::from_secs(3);

/// Most notifications taken as one batch.
const BATCH_MAX: usize = 1000;

/// pgcache's trigger splits a statement's keys into notifications of about 6000 bytes: one
/// past this size is most likely followed by more of the same statement.
const FULL_PAYLOAD_BYTES: usize = 4000;

/// How long a batch waits for the notification that follows a full one.
const BULK_GAP: Duration = Duration::from_millis(20);

/// The longest a batch spends waiting for the rest of a statement: invalidations are never
/// held back longer than this.
const BULK_WAIT_MAX: Duration = Duration::from_millis(200);

/// Handles notifications until the connection fails (returns why) or the thread stops.
fn receive(feed: &Feed, conn: &mut Connection) -> String {
    let mut last_check = Instant::now();
    while !feed.listener.stopping() {
        match take_batch(conn) {
            Ok(Some((arrived, payloads))) => handle(feed, conn, &payloads, arrived),
            Ok(None) => {}
            Err(e) => return describe(&e),
        }
        if conn.is_closed() {
            return "connection closed".into();
        }
        if last_check.elapsed() >= LIVENESS_INTERVAL {
            if let Err(e) = conn.batch_execute("SELECT 1") {
                return describe(&e);
            }
            last_check = Instant::now();
        }
    }
    "stopping".into()
}

/// Waits briefly for one notification (to keep checking for a stop), then takes whatever
/// else has already arrived. PostgreSQL sends a bulk statement's notifications as a stream
/// the client reads in pieces; after a full notification the batch also waits a little for
/// the next, so the statement's keys meet in one batch and a table named by more than
/// `changes::BULK_KEYS` of them is flushed instead of deleted key by key.
fn take_batch(conn: &mut Connection) -> Result<Option<(Instant, Vec<String>)>, Failure> {
    let Some(first) = conn.next_notification(Duration::from_millis(100))? else {
        return Ok(None);
    };
    let arrived = Instant::now();
    let waiting_ends = Instant::now() + BULK_WAIT_MAX;
    let mut last_was_full = first.payload().len() > FULL_PAYLOAD_BYTES;
    let mut payloads = vec![first.payload().to_string()];
    while payloads.len() < BATCH_MAX {
        let wait = waiting_ends.saturating_duration_since(Instant::now());
        let wait = if last_was_full {
            wait.min(BULK_GAP)
        } else {
            Duration::ZERO
        };
        let Some(n) = conn.next_notification(wait)? else {
            break;
        };
        last_was_full = n.payload().len() > FULL_PAYLOAD_BYTES;
        payloads.push(n.payload().to_string());
    }
    Ok(Some((arrived, payloads)))
}

/// Hands what the notifications that began arriving at `arrived` ask to the main thread.
fn handle(feed: &Feed, conn: &mut Connection, payloads: &[String], arrived: Instant) {
    let mut changes = changes::Changes::default();
    for text in payloads {
        if let Some(heartbeat) = feed.heartbeats.of(text) {
            if let Some(number) = heartbeat {
                changes.heartbeat(number);
            }
            continue;
        }
        if let Some(ddl) = super::ddl::of(text) {
            match ddl {
                Ok(ddl) => super::ddl::add(feed.source, &mut changes, ddl),
                Err(e) => super::ddl::unreadable(feed.source, &mut changes, &e),
            }
            continue;
        }
        let payload = match parse_payload(text) {
            Ok(p) => p,
            Err(e) => {
                // Which rows changed is unknown: nothing cached can be trusted. The payload
                // (row data) stays out of the log.
                redis_module::logging::log_warning(format!(
                    "pgcache: an invalidation notification could not be read ({e}); dropping \
                     every cached row"
                ));
                changes = changes::Changes::everything();
                continue;
            }
        };
        translate::add(feed.source, conn, &mut changes, payload, "a notification");
    }
    changes.collapse_bulk();
    changes.arrived_at(arrived);
    feed.apply.submit(changes);
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invalidation::translate::keys_of;
    use crate::model::key::KeyKind;
    use crate::pg::schema::Column;
    use crate::pg::schema::TableSchema;

    pub(super) fn users() -> TableSchema {
        TableSchema::for_tests(
            "users",
            vec![
                Column {
                    name: "id".into(),
                    cast_type: "integer".into(),
                    kind: KeyKind::Integer {
                        min: i32::MIN.into(),
                        max: i32::MAX.into(),
                    },
                    row_valued: false,
                },
                Column {
                    name: "name".into(),
                    cast_type: "text".into(),
                    kind: KeyKind::Text,
                    row_valued: false,
                },
            ],
            vec!["id".into()],
        )
    }

    #[test]
    fn pgcache_payloads_name_keys() {
        let p =
            parse_payload(r#"{"table":"public.users","op":"UPDATE","keys":[{"id":1},{"id":"2"}]}"#)
                .unwrap();
        assert_eq!(p.table, "public.users");
        let keys: Vec<String> = keys_of(&p, &users())
            .0
            .into_iter()
            .map(|k| k.json.into_string())
            .collect();
        assert_eq!(keys, vec![r#"{"id":1}"#, r#"{"id":2}"#]);
    }

    #[test]
    fn original_payloads_take_keys_from_old_and_new_rows() {
        let p = parse_payload(
            r#"{"table":"users","operation":"UPDATE","old_data":{"id":1,"name":"a"},"new_data":{"id":5,"name":"a"}}"#,
        )
        .unwrap();
        let keys: Vec<String> = keys_of(&p, &users())
            .0
            .into_iter()
            .map(|k| k.json.into_string())
            .collect();
        assert_eq!(keys, vec![r#"{"id":1}"#, r#"{"id":5}"#]);
        let insert = parse_payload(r#"{"table":"users","operation":"INSERT","old_data":null,"new_data":{"id":3,"name":"x"}}"#).unwrap();
        assert_eq!(keys_of(&insert, &users()).0.len(), 1);
        let same = parse_payload(
            r#"{"table":"users","operation":"UPDATE","old_data":{"id":3},"new_data":{"id":3}}"#,
        )
        .unwrap();
        assert_eq!(keys_of(&same, &users()).0.len(), 1);
    }

    #[test]
    fn flush_payloads_name_no_keys() {
        let p = parse_payload(r#"{"table":"public.users","op":"TRUNCATE","flush":true}"#).unwrap();
        assert!(p.flush && p.rows.is_empty());
    }

    #[test]
    fn bad_payloads_say_why() {
        assert!(
            parse_payload("nope")
                .unwrap_err()
                .message()
                .contains("not JSON")
        );
        assert!(
            parse_payload(r#"{"keys":[]}"#)
                .unwrap_err()
                .message()
                .contains("table")
        );
        assert!(
            parse_payload(r#"{"table":"t"}"#)
                .unwrap_err()
                .message()
                .contains("keys")
        );
        let p = parse_payload(r#"{"table":"users","keys":[{"name":"x"}]}"#).unwrap();
        assert!(
            keys_of(&p, &users())
                .1
                .unwrap()
                .message()
                .contains("key column")
        );
    }

    #[test]
    fn one_unreadable_key_leaves_the_others_and_keeps_its_value_out_of_the_reason() {
        let p =
            parse_payload(r#"{"table":"users","keys":[{"id":1},{"id":"secret-value"},{"id":3}]}"#)
                .unwrap();
        let (keys, unreadable) = keys_of(&p, &users());
        let keys: Vec<String> = keys.into_iter().map(|k| k.json.into_string()).collect();
        assert_eq!(keys, vec![r#"{"id":1}"#, r#"{"id":3}"#]);
        let why = unreadable.unwrap();
        assert!(!why.message().contains("secret-value"), "{why}");
    }
}
