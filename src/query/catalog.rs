//! What only the catalog can tell of an admitted statement, learned once per statement on a
//! worker's connection: its parameters' types, the tables it reads (through views, and the
//! partitions and children of those tables), and that every function and operator it calls
//! is IMMUTABLE (`now()` is STABLE: its result changes without any write, so no change feed
//! could ever drop a result that used it).
//!
//! The statement is analysed by PostgreSQL itself: it becomes a temporary view (parameters
//! stood in by typed NULLs) inside a transaction that is rolled back, and the view's stored
//! query tree names every relation (`:relid`) and function (`:funcid`, `:opfuncid`,
//! `:aggfnoid`, `:winfnoid`) the statement resolved to, exactly as it would run. pg_depend
//! cannot be used for this: it records nothing about the objects initdb created (`now`,
//! `int4eq`).

use crate::error::{Error, Result};
use crate::model::ident::quote_ident;
use crate::model::key::KeyKind;
use crate::pg::errors::statement_error;
use crate::pg::pool::Connection;
use crate::pg::schema::{self, TableSchema};
use crate::query::placeholders;
use crate::query::statement::Parsed;
use std::sync::Arc;

/// A parameter's type: how its text is cast, and how its value is canonicalised for the key.
#[derive(Debug, Clone)]
pub struct ParamType {
    /// The type as SQL spells it (`integer`, `public.mood`).
    pub cast: String,
    pub kind: KeyKind,
}

/// What the catalog says of a statement.
pub struct Learned {
    pub params: Vec<ParamType>,
    /// The tables whose changes can change its result, by name.
    pub tables: Vec<Arc<TableSchema>>,
    /// It reads plain tables only, as written (no view, partition or inheritance child),
    /// and calls no aggregate or window function: rows reach its result one for one.
    pub plain: bool,
}

const PARAM_TYPES_SQL: &str = "SELECT \
       CASE WHEN t.typname = 'bpchar' THEN 'bpchar' ELSE pg_catalog.format_type(t.oid, NULL) END, \
       CASE WHEN t.typtype = 'd' THEN bt.typname::text ELSE t.typname::text END, \
       (CASE WHEN t.typtype = 'd' THEN bt.typtype ELSE t.typtype END) = 'e' \
     FROM pg_catalog.unnest($1::pg_catalog.oid[]) WITH ORDINALITY AS p(oid, n) \
     JOIN pg_catalog.pg_type t ON t.oid = p.oid \
     LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype \
     ORDER BY p.n";

const PROBE_VIEW: &str = "pg_temp.pgcache_admission";

/// The relations the probe view reads (through views' rules, and the children and
/// partitions of every relation), and the functions its tree and theirs call, with their
/// volatility.
const READS_SQL: &str = "WITH RECURSIVE reads(relid) AS ( \
         SELECT 'pg_temp.pgcache_admission'::pg_catalog.regclass::pg_catalog.oid \
       UNION \
         SELECT s.relid FROM reads r, LATERAL ( \
             SELECT m[1]::pg_catalog.oid FROM pg_catalog.pg_rewrite w, \
             LATERAL pg_catalog.regexp_matches(w.ev_action::text, ':relid ([0-9]+)', 'g') AS m \
             WHERE w.ev_class = r.relid \
           UNION ALL \
             SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = r.relid \
         ) AS s(relid) \
     ), calls(what, funcid) AS ( \
         SELECT DISTINCT CASE WHEN m[1] = 'funcid' OR m[1] = 'opfuncid' THEN 'function' \
                         ELSE 'aggregate' END, m[2]::pg_catalog.oid FROM reads r \
         JOIN pg_catalog.pg_rewrite w ON w.ev_class = r.relid, \
         LATERAL pg_catalog.regexp_matches(w.ev_action::text, \
                 ':(funcid|opfuncid|aggfnoid|winfnoid) ([0-9]+)', 'g') AS m \
     ) \
     SELECT 'relation', n.nspname::text, c.relname::text, c.relkind::text \
     FROM reads r JOIN pg_catalog.pg_class c ON c.oid = r.relid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.oid <> 'pg_temp.pgcache_admission'::pg_catalog.regclass \
   UNION ALL \
     SELECT f.what, n.nspname::text, p.proname::text, p.provolatile::text \
     FROM calls f JOIN pg_catalog.pg_proc p ON p.oid = f.funcid \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     ORDER BY 1 DESC, 2, 3";

/// Learns `parsed` from the catalog, or says why it cannot be cached.
pub fn learn(client: &mut Connection, parsed: &Parsed) -> Result<Learned> {
    let params = param_types(client, parsed)?;
    let reads = reads(client, parsed, &params)?;
    let mut tables: Vec<Arc<TableSchema>> = Vec::new();
    let mut plain = true;
    let mut relations = 0;
    for (what, schema_name, name, detail) in reads {
        let qualified = format!("{}.{}", quote_ident(&schema_name), quote_ident(&name));
        if what == "function" || what == "aggregate" {
            refuse_unless_immutable(&schema_name, &name, &detail)?;
            plain &= what == "function";
            continue;
        }
        relations += 1;
        plain &= detail == "r";
        if schema::is_system_schema(&schema_name) {
            return Err(Error::invalid(format!(
                "the statement reads {qualified}; pgcache serves no system catalogs"
            )));
        }
        match detail.as_str() {
            "r" | "p" => {
                let table = schema::resolve(client, &qualified)?;
                if !tables.iter().any(|t| t.name == table.name) {
                    tables.push(table);
                }
            }
            "v" => {
                schema::admit(&qualified)?;
            }
            "m" => {
                return Err(Error::invalid(format!(
                    "the statement reads the materialized view {qualified}, which REFRESH \
                     changes without any change the feed reports; query its tables instead"
                )));
            }
            "f" => {
                return Err(Error::invalid(format!(
                    "the statement reads the foreign table {qualified}, whose changes no \
                     change feed of this database reports"
                )));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "the statement reads {qualified}, which is not a table or view"
                )));
            }
        }
    }
    tables.sort_by(|a, b| a.key_prefix.cmp(&b.key_prefix));
    Ok(Learned {
        params,
        plain: plain && relations == tables.len(),
        tables,
    })
}

fn refuse_unless_immutable(schema_name: &str, name: &str, volatility: &str) -> Result<()> {
    let kind = match volatility {
        "i" => return Ok(()),
        "s" => "STABLE",
        _ => "VOLATILE",
    };
    let shown = if schema_name == "pg_catalog" {
        name.to_string()
    } else {
        format!("{}.{}", quote_ident(schema_name), quote_ident(name))
    };
    Err(Error::invalid(format!(
        "{shown}() is {kind}: its result changes without a write; pass the value as a \
         parameter (only IMMUTABLE functions and operators can be cached)"
    )))
}

/// The parameters' types, as PostgreSQL infers them from the statement.
fn param_types(client: &mut Connection, parsed: &Parsed) -> Result<Vec<ParamType>> {
    let prepared = client
        .prepare(&parsed.canonical)
        .map_err(|e| statement_error(&e))?;
    let oids: Vec<u32> = prepared.params().iter().map(|t| t.oid()).collect();
    if oids.len() != parsed.params {
        return Err(Error::invalid(format!(
            "the statement takes {} parameters but PostgreSQL sees {}",
            parsed.params,
            oids.len()
        )));
    }
    let rows = client
        .query(PARAM_TYPES_SQL, &[&oids])
        .map_err(|e| statement_error(&e))?;
    Ok(rows
        .iter()
        .map(|row| {
            let type_name: String = row.get(1);
            ParamType {
                cast: row.get(0),
                kind: schema::column_kind(&type_name, row.get(2)),
            }
        })
        .collect())
}

/// `(what, schema, name, detail)` of every relation (detail: its relkind) and function
/// (detail: its volatility) the statement reads or calls.
fn reads(
    client: &mut Connection,
    parsed: &Parsed,
    params: &[ParamType],
) -> Result<Vec<(String, String, String, String)>> {
    let body = placeholders::replace_numbered(&parsed.canonical, |n| {
        format!("(NULL::{})", params[n - 1].cast)
    })?;
    let create = format!("CREATE TEMPORARY VIEW {PROBE_VIEW} AS SELECT 1 FROM ({body}) AS q");
    client
        .batch_execute("BEGIN")
        .map_err(|e| statement_error(&e))?;
    let found = client
        .batch_execute(&create)
        .and_then(|()| client.query(READS_SQL, &[]));
    // Nothing of the probe outlives it, whatever happened.
    let rolled_back = client.batch_execute("ROLLBACK");
    let rows = found.map_err(|e| statement_error(&e))?;
    rolled_back.map_err(|e| statement_error(&e))?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect())
}

/// The statement PGCACHE.QUERY runs for `parsed`: its result as one JSON array of row
/// objects (typed as `row_to_json` types them, columns in the SELECT list's order) and its
/// row count. Parameters arrive as text and are cast to the types PostgreSQL inferred.
pub fn run_sql(parsed: &Parsed, params: &[ParamType], members: Option<&Members>) -> Result<String> {
    let bind = |n: usize| format!("(${n}::text::{})", params[n - 1].cast);
    let body = placeholders::replace_numbered(&parsed.canonical, bind)?;
    Ok(format!(
        "SELECT COALESCE('[' || pg_catalog.string_agg(pg_catalog.row_to_json(q)::text, ',') || ']', \
         '[]'), pg_catalog.count(*){} FROM ({body}) AS q",
        members_column(members, bind)?
    ))
}

/// Most members (rows the WHERE admits) a row-precise result may be built from and still be
/// cached.
pub const MAX_MEMBERS: usize = 10_000;

/// How a row-precise statement's members are fetched with its result: the rows its WHERE
/// admits (`Shape::candidates_sql`), by primary key.
pub struct Members<'a> {
    pub candidates_sql: &'a str,
    pub table: &'a TableSchema,
}

/// `, (<the members' keys as a JSON array of objects>)`, at most `MAX_MEMBERS` + 1 of them
/// (one more says there are too many), or nothing without `members`. In the same statement
/// as the result: one snapshot for both.
fn members_column(members: Option<&Members>, bind: impl Fn(usize) -> String) -> Result<String> {
    let Some(members) = members else {
        return Ok(String::new());
    };
    let body = placeholders::replace_numbered(members.candidates_sql, bind)?;
    let key: Vec<String> = members
        .table
        .primary_key
        .iter()
        .map(|c| format!("{}, m.{}", quote_literal(c), quote_ident(c)))
        .collect();
    Ok(format!(
        ", (SELECT pg_catalog.json_agg(pg_catalog.json_build_object({}))::text FROM ({body} LIMIT {}) AS m)",
        key.join(", "),
        MAX_MEMBERS + 1
    ))
}

/// `'text'` as an SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The statement PGCACHE.QUERY runs for several parameter sets of `parsed` at once (misses
/// queued together): one row per set, in order, each the result and row count `run_sql`
/// gives for that set. The sets arrive as one text array per parameter; each set is joined
/// LATERALly to the statement. None for a statement without parameters (its misses are one
/// result, coalesced).
pub fn batch_sql(
    parsed: &Parsed,
    params: &[ParamType],
    members: Option<&Members>,
) -> Result<Option<String>> {
    if params.is_empty() {
        return Ok(None);
    }
    let bind = |n: usize| {
        format!(
            "(pgcache_params.pgcache_v{n}::text::{})",
            params[n - 1].cast
        )
    };
    let body = placeholders::replace_numbered(&parsed.canonical, bind)?;
    let members = members_column(members, bind)?;
    let arrays: Vec<String> = (1..=params.len())
        .map(|n| format!("${n}::text[]"))
        .collect();
    let columns: Vec<String> = (1..=params.len())
        .map(|n| format!("pgcache_v{n}"))
        .collect();
    Ok(Some(format!(
        "SELECT pgcache_results.* \
         FROM pg_catalog.unnest({}) WITH ORDINALITY AS pgcache_params({}, pgcache_i), \
         LATERAL (SELECT COALESCE('[' || pg_catalog.string_agg(pg_catalog.row_to_json(q)::text, ',') || ']', '[]') AS json, \
                         pg_catalog.count(*) AS n{members} FROM ({body}) AS q) AS pgcache_results \
         ORDER BY pgcache_params.pgcache_i",
        arrays.join(", "),
        columns.join(", ")
    )))
}
