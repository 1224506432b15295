//! Row-level security, for READ and MULTIREAD: a table whose policies apply to pgcache's
//! role returns the rows those policies let it see, and a policy may read other tables
//! (`USING (team IN (SELECT team FROM team_visible))`), or its own. A change to such a table
//! changes which rows the first one shows without any change to them: every cached row (and
//! remembered absence) of the first table goes. What each table's policies read is learned
//! from the catalog once (`query::reads`: the policies' stored trees, through views and SQL
//! function bodies) and forgotten on DDL. QUERY counts those tables as read by its
//! statements instead (`query::catalog`).

use crate::model::ident::QualifiedName;
use crate::model::source::SourceId;
use crate::pg::pool::Connection;
use crate::pg::schema;
use crate::query::reads::{self, Start, Via};
use std::collections::HashMap;
use std::sync::Mutex;

/// What one source's tables' policies read, by the table's oid (oids of two databases
/// collide).
pub struct Policies {
    read: Mutex<Option<HashMap<u32, Vec<QualifiedName>>>>,
}

impl Policies {
    /// Nothing learned (const, so a `static` holds the default source's).
    pub const fn new() -> Policies {
        Policies {
            read: Mutex::new(None),
        }
    }

    /// Forgets what was learned (the catalog may say otherwise now).
    pub fn forget(&self) {
        *self.read.lock().unwrap() = None;
    }

    /// The key prefixes of the cached tables of `source` whose policies read `changed` (or
    /// may: the catalog could not say). Feed thread.
    pub fn tables_whose_policies_read(
        &self,
        source: SourceId,
        conn: &mut Connection,
        changed: &QualifiedName,
    ) -> Vec<String> {
        let mut prefixes = Vec::new();
        for table in schema::of(source).with_row_security() {
            let known = self
                .read
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|m| m.get(&table.oid).cloned());
            let read = known.or_else(|| {
                let read = read_by_policies(conn, table.oid)?;
                self.read
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
}

/// The relations the policies of the table `oid` read, through views and SQL functions;
/// None when the catalog cannot say. (In a transaction rolled back: a function body is
/// compiled in one.)
fn read_by_policies(conn: &mut Connection, oid: u32) -> Option<Vec<QualifiedName>> {
    let start = Start {
        relations: vec![oid],
        probe: None,
        functions: true,
    };
    // Read-write, for the compiled function bodies (sessions are read-only by default).
    conn.batch_execute("BEGIN READ WRITE").ok()?;
    let found = reads::walk(conn, start);
    conn.batch_execute("ROLLBACK").ok()?;
    let found = found.ok()?;
    // A policy reading its own table (a row visible through another row) makes the table
    // depend on itself; the table itself counts as reached by name.
    let reads_itself = found.trees.iter().any(|(origin, tree)| {
        origin.starts_with(reads::POLICY_ORIGIN) && tree.relations.contains(&oid)
    });
    Some(
        found
            .relations
            .into_iter()
            .filter(|r| {
                matches!(r.via, Via::Policy | Via::Function)
                    || (reads_itself && r.via == Via::Named)
            })
            .map(|r| QualifiedName {
                schema: r.schema,
                name: r.name,
            })
            .collect(),
    )
}
