//! The end of a chaos run: once the writers stopped and every notification was delivered,
//! each node's answer for every row must be PostgreSQL's row.

use crate::common::*;
use crate::load::ROWS;
use std::collections::HashMap;
use std::time::Duration;

/// PostgreSQL's JSON of every row, by id.
fn rows_in_postgres(pg: &Pg) -> HashMap<i64, serde_json::Value> {
    pg.superuser_of("app")
        .query("SELECT id, row_to_json(items)::text FROM items", &[])
        .unwrap()
        .iter()
        .map(|r| {
            let id: i32 = r.get(0);
            let text: String = r.get(1);
            (i64::from(id), serde_json::from_str(&text).unwrap())
        })
        .collect()
}

/// Waits until the node's listener listens and has delivered every notification sent
/// before now: a change of row 0, sent last, has reached it.
fn drain(pg: &Pg, con: &mut redis::Connection) {
    wait_for("the listener to listen", Duration::from_secs(60), || {
        let health = map_reply(con, "PGCACHE.HEALTH");
        (redis::from_redis_value::<String>(health["listener"].clone()).ok()? == "connected")
            .then_some(())
    });
    let sentinel = r#"{"id":0}"#;
    let _ = read(con, "items", sentinel);
    pg.execute("UPDATE items SET version = version + 1 WHERE id = 0");
    let version: i32 = pg
        .superuser_of("app")
        .query_one("SELECT version FROM items WHERE id = 0", &[])
        .unwrap()
        .get(0);
    wait_for("the last notification", Duration::from_secs(60), || {
        let row = read(con, "items", sentinel).ok()??;
        (json(&row)["version"] == version).then_some(())
    });
}

/// The rows `port`'s node answers that differ from PostgreSQL's, with a few examples.
pub fn stale_rows(pg: &Pg, port: u16) -> (u64, Vec<String>) {
    let mut con = connect(port);
    drain(pg, &mut con);
    let truth = rows_in_postgres(pg);
    let mut stale = 0;
    let mut examples = Vec::new();
    for first in (0..=ROWS).step_by(100) {
        let ids: Vec<i64> = (first..(first + 100).min(ROWS + 1)).collect();
        let rows = multiread(&mut con, "items", &id_array(ids.iter().copied())).unwrap();
        for (id, row) in ids.iter().zip(rows) {
            let answered = row.map(|r| json(&r));
            if answered.as_ref() != truth.get(id) {
                stale += 1;
                if examples.len() < 5 {
                    examples.push(format!(
                        "port {port}, id {id}: served {answered:?}, PostgreSQL has {:?}",
                        truth.get(id)
                    ));
                }
            }
        }
    }
    (stale, examples)
}
