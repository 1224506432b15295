//! What each node's cache holds once pgcache recovered from a fault: the raw entries (read
//! with GET, not through pgcache) on the primary and on a replica that is still a replica,
//! each a version of its row PostgreSQL committed, none older than the row was when every
//! notification sent until then had arrived. And the cache fills again: a module that
//! stopped caching fails here.

use crate::history::{History, Verdict};
use crate::load::{ROWS, key, reconnect, write_recorded};
use pgcache_testkit::*;
use std::time::{Duration, Instant};

const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// The raw value of `id`'s entry on `con`'s node (nil: no entry).
fn entry(con: &mut redis::Connection, id: i64) -> Option<String> {
    redis::cmd("GET").arg(key(id)).query(con).unwrap()
}

fn connection(port: u16) -> redis::Connection {
    reconnect(port).unwrap_or_else(|| panic!("the node on port {port} does not answer"))
}

/// Fills row 0's entry through the primary and waits for it on every node (it proves that
/// fills resume after the fault, and replicate); then changes row 0 in PostgreSQL and waits
/// until every node has dropped the entry, the primary's freshness horizon has passed the
/// change, and the replica has every write: by then every change committed before the
/// returned instant (taken before the change) has been applied on every node.
fn settle(pg: &Pg, primary: u16, nodes: &[u16], history: &History, after: &str) -> Instant {
    let sentinel = r#"{"id":0}"#;
    let mut con = connection(primary);
    let filled = Instant::now() + SETTLE_LIMIT;
    let mut cons: Vec<redis::Connection> = nodes.iter().map(|p| connection(*p)).collect();
    let before = loop {
        let _ = read(&mut con, "items", sentinel);
        let entries: Vec<Option<String>> = cons.iter_mut().map(|c| entry(c, 0)).collect();
        if let Some(Some(first)) = entries.first()
            && entries.iter().all(|e| e.as_ref() == Some(first))
        {
            break first.clone();
        }
        assert!(
            Instant::now() < filled,
            "after {after}: pgcache does not cache again (a READ on the primary left no entry on \
             every node: {entries:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut client = pg.superuser_of("app");
    let statement = "UPDATE items SET version = version + 1 WHERE id = $1 \
                     RETURNING row_to_json(items)::text";
    // Taken before the sentinel's transaction begins: every commit that returned by then
    // precedes the sentinel's in commit order, so its notification arrives first.
    let settled = Instant::now();
    assert!(write_recorded(&mut client, history, 0, statement).unwrap());
    let deadline = Instant::now() + SETTLE_LIMIT;
    if invalidation_source() == "replication" {
        // Row 0's entry may go for other reasons (a client's INVALIDATE or FLUSH, an
        // eviction) before the sentinel's change is applied, which the log brings up to
        // `wal_writer_delay` after its commit: wait for the position instead, applied on the
        // primary and replicated (it is written after the deletions it covers).
        let written: String = client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .unwrap()
            .get(0);
        let target = lsn(&written);
        for (port, con) in nodes.iter().zip(&mut cons) {
            while position(con) < target {
                assert!(
                    Instant::now() < deadline,
                    "after {after}: the node on {port} has not applied the log up to \
                     {written} within {SETTLE_LIMIT:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        return settled;
    }
    for (port, con) in nodes.iter().zip(&mut cons) {
        while entry(con, 0).as_ref() == Some(&before) {
            assert!(
                Instant::now() < deadline,
                "after {after}: the node on {port} still holds row 0 as it was before a change \
                 committed {SETTLE_LIMIT:?} ago"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Row 0's entry may go for other reasons (a client's INVALIDATE or FLUSH, an eviction)
    // before the sentinel's notification is applied: wait, too, until the primary's freshness
    // horizon (its heartbeat applied after every notification sent before it) passes the
    // sentinel's commit, and until the replica has acknowledged every write of the primary.
    let mut on_primary = connection(primary);
    while settled.elapsed() <= horizon_age(&mut on_primary).saturating_add(Duration::from_millis(1))
    {
        assert!(
            Instant::now() < deadline,
            "after {after}: the primary's freshness horizon did not pass the sentinel's \
             commit within {SETTLE_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    if nodes.len() > 1 {
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(SETTLE_LIMIT.as_millis() as u64)
            .query(&mut on_primary)
            .unwrap();
        assert_eq!(acked, 1, "after {after}: the replica did not acknowledge");
    }
    settled
}

/// How old the node's freshness horizon is (infinitely, while it has none).
fn horizon_age(con: &mut redis::Connection) -> Duration {
    match stats_figure(con, "freshness_age_ms") {
        age if age >= 0 => Duration::from_millis(age as u64),
        _ => Duration::MAX,
    }
}

/// The position of PostgreSQL's log the node's keyspace reflects (0 without one).
fn position(con: &mut redis::Connection) -> u64 {
    let record: Option<String> = redis::cmd("GET")
        .arg("pgcache:replication:position")
        .query(con)
        .unwrap();
    record.map_or(0, |r| lsn(r.split(' ').next().unwrap_or("0/0")))
}

/// The entries on the nodes (`primary` first) that are no version of their row PostgreSQL
/// committed, or older than the row when the nodes settled; with a few examples.
pub fn stale_entries(
    pg: &Pg,
    primary: u16,
    replica: Option<u16>,
    history: &History,
    after: &str,
) -> (u64, Vec<String>) {
    let nodes: Vec<u16> = std::iter::once(primary).chain(replica).collect();
    let settled = settle(pg, primary, &nodes, history, after);
    let mut stale = 0;
    let mut examples = Vec::new();
    for port in nodes {
        let mut con = connection(port);
        let mut pipe = redis::pipe();
        for id in 0..=ROWS {
            pipe.cmd("GET").arg(key(id));
        }
        let entries: Vec<Option<String>> = pipe.query(&mut con).unwrap();
        for (id, entry) in (0..=ROWS).zip(entries) {
            let Some(text) = entry else { continue };
            let served: Option<serde_json::Value> = serde_json::from_str(&text).unwrap();
            let verdict = history.judge(id, &served, settled, Duration::ZERO);
            if verdict != Verdict::Fresh {
                stale += 1;
                if examples.len() < 5 {
                    examples.push(format!(
                        "after {after}, port {port}, id {id}: {verdict:?} entry {text}"
                    ));
                }
            }
        }
    }
    (stale, examples)
}

/// PostgreSQL's rows at the start, for the history.
pub fn rows_in_postgres(pg: &Pg) -> Vec<(i64, Option<serde_json::Value>)> {
    pg.superuser_of("app")
        .query("SELECT id, row_to_json(items)::text FROM items", &[])
        .unwrap()
        .iter()
        .map(|r| {
            let id: i32 = r.get(0);
            let text: String = r.get(1);
            (i64::from(id), Some(serde_json::from_str(&text).unwrap()))
        })
        .collect()
}
