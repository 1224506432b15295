//! Row-level security, for READ and MULTIREAD: a table whose policies apply to pgcache's
//! role returns the rows those policies let it see, and a policy may read other tables
//! (`USING (team IN (SELECT team FROM team_visible))`). A change to such a table changes
//! which rows the first one shows without any change to it: every cached row (and
//! remembered absence) of the first table goes. What each table's policies read is learned
//! from the catalog once (`query::reads`, the policies' stored trees, through views) and
//! forgotten with the tables' descriptions (DDL, CONFIG SET tables). QUERY counts those
//! tables as read by its statements instead (`query::catalog`).

use crate::model::ident::QualifiedName;
use crate::pg::pool::Connection;
use crate::pg::schema;
use crate::query::reads::{self, Start, Via};
use std::collections::HashMap;
use std::sync::Mutex;

/// What each table's policies read, by the table's oid.
static READ_BY_POLICIES: Mutex<Option<HashMap<u32, Vec<QualifiedName>>>> = Mutex::new(None);

/// Forgets what was learned (the catalog may say otherwise now).
pub fn forget() {
    *READ_BY_POLICIES.lock().unwrap() = None;
}

/// The key prefixes of the cached tables whose policies read `changed` (or may: the
/// catalog could not say). Feed thread.
pub fn tables_whose_policies_read(conn: &mut Connection, changed: &QualifiedName) -> Vec<String> {
    let mut prefixes = Vec::new();
    for table in schema::with_row_security() {
        if table.name == *changed {
            continue;
        }
        let known = READ_BY_POLICIES
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|m| m.get(&table.oid).cloned());
        let read = known.or_else(|| {
            let read = read_by_policies(conn, table.oid)?;
            READ_BY_POLICIES
                .lock()
                .unwrap()
                .get_or_insert_with(HashMap::new)
                .insert(table.oid, read.clone());
            Some(read)
        });
        if read.is_none_or(|read| read.contains(changed)) {
            prefixes.push(table.key_prefix.clone());
        }
    }
    prefixes
}

/// The relations the policies of the table `oid` read, through views; None when the
/// catalog cannot say.
fn read_by_policies(conn: &mut Connection, oid: u32) -> Option<Vec<QualifiedName>> {
    let start = Start {
        relations: vec![oid],
        probe: None,
        functions: false,
    };
    let found = reads::walk(conn, start).ok()?;
    Some(
        found
            .relations
            .into_iter()
            .filter(|r| r.via == Via::Policy)
            .map(|r| QualifiedName {
                schema: r.schema,
                name: r.name,
            })
            .collect(),
    )
}
