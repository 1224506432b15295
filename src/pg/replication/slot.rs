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
    /// Tables pgcache serves that the publication does not cover, and whether each is
    /// unlogged (its changes are in no log).
    pub unpublished: Vec<(QualifiedName, bool)>,
    /// What the publication leaves out that pgcache needs, in words.
    pub publication_gaps: Vec<String>,
    /// pgcache's DDL event trigger is installed (`pgcache_ddl`): DDL reaches the feed.
    pub ddl_followed: bool,
}

const SLOT_SQL: &str = "SELECT pg_catalog.pg_current_wal_lsn()::text, \
     coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::bigint, \
     coalesce(wal_status, '') \
     FROM pg_catalog.pg_replication_slots WHERE slot_name = $1";

/// The served tables whose rows the publication does not all send: a table is covered when
/// every table holding its rows (itself, its partitions and inheritance children, which a
/// read of it reads) is published itself or through a published partitioned ancestor
/// (`publish_via_partition_root`). Unlogged ones are never covered (their changes are not
/// in the log); the second column says so.
const UNPUBLISHED_SQL: &str = "WITH RECURSIVE served(s, n, rel) AS ( \
         SELECT t.s, t.n, c.oid FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) AS t(s, n) \
         JOIN pg_catalog.pg_namespace ns ON ns.nspname = t.s \
         JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = t.n \
       UNION \
         SELECT sv.s, sv.n, i.inhrelid FROM served sv \
         JOIN pg_catalog.pg_inherits i ON i.inhparent = sv.rel \
     ), published(oid) AS ( \
         SELECT c.oid FROM pg_catalog.pg_publication_tables p \
         JOIN pg_catalog.pg_namespace ns ON ns.nspname = p.schemaname \
         JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = p.tablename \
         WHERE p.pubname = $3 \
     ) \
     SELECT sv.s, sv.n, pg_catalog.bool_or(c.relpersistence = 'u') FROM served sv \
     JOIN pg_catalog.pg_class c ON c.oid = sv.rel \
     WHERE c.relkind = 'r' AND (c.relpersistence = 'u' OR NOT EXISTS ( \
         SELECT 1 FROM published p WHERE p.oid = sv.rel OR p.oid IN ( \
             SELECT a.oid FROM pg_catalog.pg_partition_ancestors(sv.rel) AS a(oid)))) \
     GROUP BY sv.s, sv.n ORDER BY 1, 2";

/// What the publication leaves out of what pgcache needs: an operation it does not
/// publish, a row filter or a column list (changes of rows outside the filter, or of the
/// columns left out, never reach pgcache).
const PUBLICATION_SQL: &str = "SELECT \
       pg_catalog.array_remove(ARRAY[CASE WHEN NOT p.pubinsert THEN 'insert' END, \
             CASE WHEN NOT p.pubupdate THEN 'update' END, \
             CASE WHEN NOT p.pubdelete THEN 'delete' END, \
             CASE WHEN NOT p.pubtruncate THEN 'truncate' END], NULL), \
       (SELECT pg_catalog.array_agg(pg_catalog.format('%I.%I', n.nspname, c.relname) \
               ORDER BY n.nspname, c.relname) \
          FROM pg_catalog.pg_publication_rel r \
          JOIN pg_catalog.pg_class c ON c.oid = r.prrelid \
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE r.prpubid = p.oid \
           AND (pg_catalog.to_jsonb(r) ->> 'prqual' IS NOT NULL \
                OR pg_catalog.to_jsonb(r) ->> 'prattrs' IS NOT NULL)) \
     FROM pg_catalog.pg_publication p WHERE p.pubname = $1";

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
        .map(|r| {
            (
                QualifiedName {
                    schema: r.get(0),
                    name: r.get(1),
                },
                r.get(2),
            )
        })
        .collect();
    let mut publication_gaps = Vec::new();
    if let Some(row) = conn.query(PUBLICATION_SQL, &[&publication])?.first() {
        let missing: Vec<String> = row.get(0);
        if !missing.is_empty() {
            publication_gaps.push(format!(
                "publication {publication} does not publish {} (ALTER PUBLICATION {publication} \
                 SET (publish = 'insert, update, delete, truncate'))",
                missing.join(", ")
            ));
        }
        if let Some(filtered) = row.get::<_, Option<Vec<String>>>(1) {
            publication_gaps.push(format!(
                "publication {publication} has a row filter or a column list on {}: changes \
                 it filters out never reach pgcache (run pgcache_watch on them again)",
                filtered.join(", ")
            ));
        }
    }
    let ddl_followed = conn
        .query(crate::pg::schema::DDL_FOLLOWED_SQL, &[])?
        .first()
        .is_some_and(|r| r.get(0));
    Ok(Some(SlotState {
        server_lsn: Lsn::parse(&server).unwrap_or_default(),
        retained_bytes: retained.max(0) as u64,
        wal_status: row.get(2),
        unpublished,
        publication_gaps,
        ddl_followed,
    }))
}
