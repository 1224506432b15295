//! What PostgreSQL says about pgcache's slot and publication, asked on a regular connection:
//! how much log the slot keeps, whether PostgreSQL still guarantees to keep it, and which
//! tables pgcache serves that the publication does not cover (their entries nobody
//! invalidates).

use crate::model::ident::QualifiedName;
use crate::model::lsn::Lsn;
use crate::pg::pool::Connection;
use crate::pg::session::Failure;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotState {
    /// Where PostgreSQL's log ends now.
    pub server_lsn: Lsn,
    /// Bytes of log the slot keeps (from its restart position to the end).
    pub retained_bytes: u64,
    /// `reserved`, `extended`, `unreserved` or `lost` (pg_replication_slots.wal_status).
    pub wal_status: String,
    /// Tables pgcache serves that the publication does not cover.
    pub unpublished: Vec<QualifiedName>,
}

const SLOT_SQL: &str = "SELECT pg_catalog.pg_current_wal_lsn()::text, \
     coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::bigint, \
     coalesce(wal_status, '') \
     FROM pg_catalog.pg_replication_slots WHERE slot_name = $1";

const UNPUBLISHED_SQL: &str = "SELECT t.s, t.n FROM unnest($1::text[], $2::text[]) AS t(s, n) \
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables p \
     WHERE p.pubname = $3 AND p.schemaname = t.s AND p.tablename = t.n)";

/// The slot's state; None when the slot does not exist.
pub fn inspect(
    conn: &mut Connection,
    slot: &str,
    publication: &str,
    served: &[QualifiedName],
) -> Result<Option<SlotState>, Failure> {
    let rows = conn.query(SLOT_SQL, &[&slot])?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let server: String = row.get(0);
    let retained: i64 = row.get(1);
    let schemas: Vec<&str> = served.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = served.iter().map(|t| t.name.as_str()).collect();
    let unpublished = conn
        .query(UNPUBLISHED_SQL, &[&schemas, &names, &publication])?
        .iter()
        .map(|r| QualifiedName {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect();
    Ok(Some(SlotState {
        server_lsn: Lsn::parse(&server).unwrap_or_default(),
        retained_bytes: retained.max(0) as u64,
        wal_status: row.get(2),
        unpublished,
    }))
}
