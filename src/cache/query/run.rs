//! A statement's run on PostgreSQL, and what came back: the result and, for a row-precise
//! statement, its members.

use crate::cache::miss::Read;
use crate::error::{Error, Result};
use crate::model::key::canonicalise_value;
use crate::pg::errors::{is_schema_change, statement_error};
use crate::pg::pool::Connection;
use crate::pg::prepared::Parsing;
use crate::pg::row::Row;
use crate::pg::schema::TableSchema;
use crate::pg::session::Failure;
use crate::pg::text_value::{TextValue, text_values};
use crate::query::catalog;
use crate::query::precision::SideMatch;
use crate::query::{Statement, statements};
use compact_str::CompactString;
use tokio_postgres::error::SqlState;

/// What a run found.
#[derive(Clone)]
pub struct Ran {
    /// The result as one JSON array.
    pub json: String,
    pub rows: u64,
    /// A row-precise statement's members, per side: the primary keys (canonical) of every
    /// row its WHERE admitted; None when there were more than `catalog::MAX_MEMBERS` (the
    /// result is then not cached).
    pub members: Option<Vec<Vec<CompactString>>>,
    /// A page's last member's sort key (values as text, None for NULL).
    pub last: Option<Vec<Option<String>>>,
    /// Answered by the statement alone (`Statement::plain_sql`): PostgreSQL refused the
    /// run that read its members too. Not cached.
    pub alone: bool,
}

pub type Run = Result<Ran>;

/// Runs the statement in a READ ONLY transaction (under the session's statement_timeout),
/// parsed as `parsing` says (`parsing_for`).
pub fn execute(
    conn: &mut Connection,
    statement: &Statement,
    params: &[String],
    parsing: Parsing,
) -> Run {
    match conn.query_read_only(
        &statement.run_sql,
        &statement.param_oids(),
        parsing,
        statement.effects,
        &values(&text_values(params)),
    ) {
        Ok(rows) => first(rows).and_then(|row| ran(statement, row)),
        Err(failure) => refused(Some(conn), statement, params, &failure, parsing),
    }
}

/// How a read's run is parsed. A read the feed does not vouch for (`FromPostgres`,
/// `Unvouched`, an `AFTER` whose wait ran out) is parsed afresh: the feed may not have
/// reported DDL that changed what its text means (a table created earlier on the search
/// path), and a connection's statement prepared before it would still read the table it
/// shadows, as PostgreSQL re-plans a prepared statement only for changes to what it read.
pub fn parsing_for(statement: &Statement, read: Read) -> Parsing {
    match read {
        Read::Cached => statement.parsing(),
        Read::After(_) | Read::FromPostgres | Read::Unvouched => Parsing::EachRun,
    }
}

fn values(params: &[TextValue]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// The one row a run's statement answers with.
pub fn first(rows: impl IntoIterator<Item = impl Into<Row>>) -> Result<Row> {
    rows.into_iter()
        .next()
        .map(Into::into)
        .ok_or_else(|| Error::internal("the statement's result came back without its row"))
}

/// What a run PostgreSQL refused comes to. The members a row-precise run reads beside the
/// result are pgcache's own reading, which PostgreSQL may plan to evaluate where the
/// statement's plan never does (a subquery's rows read whole, where the statement's join
/// stopped at an empty outer side): a cast of one of those rows that fails (`NaN::integer`)
/// must not fail a statement PostgreSQL answers. So the statement runs alone, and its
/// answer is served, not cached; a refusal of the statement itself is the statement's error.
/// (Without a connection, as on the event loop, which hands such a run to a worker first:
/// `reruns_alone`, the refusal.)
pub fn refused(
    conn: Option<&mut Connection>,
    statement: &Statement,
    params: &[String],
    failure: &Failure,
    parsing: Parsing,
) -> Run {
    let (Some(conn), Some(plain_sql)) = (conn, statement.plain_sql.as_deref()) else {
        return Err(failed(statement, failure));
    };
    if !reruns_alone(statement, failure) {
        return Err(failed(statement, failure));
    }
    let rows = conn
        .query_read_only(
            plain_sql,
            &statement.param_oids(),
            parsing,
            statement.effects,
            &values(&text_values(params)),
        )
        .map_err(|e| failed(statement, &e))?;
    let mut row = first(rows)?;
    let count = row.int8(1)?;
    Ok(Ran {
        json: row.take_string(0)?,
        rows: count as u64,
        members: None,
        last: None,
        alone: true,
    })
}

/// Whether `refused` runs the statement again alone after this failure.
pub fn reruns_alone(statement: &Statement, failure: &Failure) -> bool {
    statement.plain_sql.is_some() && refused_for_what_it_read(failure)
}

/// Whether a run of several parameter sets at once (`Statement::batch_sql`) failed where
/// each set alone may not: PostgreSQL refused it for one set's value, or canceled it for the
/// time (or memory) they took together. Not a lost connection, nor tables changed under it:
/// each set alone would meet those too.
pub fn batch_failure_may_be_partial(failure: &Failure) -> bool {
    failure.server().is_some() && !failure.session_lost() && !is_schema_change(failure)
}

/// Whether PostgreSQL itself refused the statement for what it read or was given: not a
/// cancel for statement_timeout, not a lost connection, not tables changed under it.
pub fn refused_for_what_it_read(failure: &Failure) -> bool {
    failure
        .server()
        .is_some_and(|said| said.code != SqlState::QUERY_CANCELED && !failure.session_lost())
        && !is_schema_change(failure)
}

/// A run's row: the result, its row count and (row-precise statements) its members.
pub fn ran(statement: &Statement, mut row: Row) -> Run {
    let count = row.int8(1)?;
    let (members, last) = match statement.precision.row() {
        Some(m) => {
            let keys = row.text(2)?;
            match m.sides.as_slice() {
                [side] => {
                    let (members, last) = members_of(&side.table, keys, m.page.is_some());
                    (members.map(|members| vec![members]), last)
                }
                sides => (joined_members_of(sides, keys), None),
            }
        }
        None => (None, None),
    };
    Ok(Ran {
        json: row.take_string(0)?,
        rows: count as u64,
        members,
        last,
        alone: false,
    })
}

/// The canonical primary keys of the members' JSON (an array of key objects, or for a
/// page of `[key, [sort key values]]`; NULL for none), and a page's last sort key; no keys
/// past `MAX_MEMBERS` or for a key that does not read as the table's.
fn members_of(
    table: &TableSchema,
    keys: Option<&str>,
    page: bool,
) -> (Option<Vec<CompactString>>, Option<Vec<Option<String>>>) {
    let Some(keys) = keys else {
        return (Some(Vec::new()), None);
    };
    let Ok(keys) = serde_json::from_str::<Vec<serde_json::Value>>(keys) else {
        return (None, None);
    };
    if keys.len() > catalog::MAX_MEMBERS {
        return (None, None);
    }
    let members = keys
        .iter()
        .map(|member| canonical_key(if page { member.get(0)? } else { member }, table))
        .collect();
    let last = page
        .then(|| keys.last()?.get(1)?.as_array().cloned())
        .flatten()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect()
        });
    (members, last)
}

/// A join's members, side by side, from one array of key objects per side; None past
/// `MAX_MEMBERS` rows (a JSON string says so) or for a key that does not read as its
/// table's.
fn joined_members_of(sides: &[SideMatch], keys: Option<&str>) -> Option<Vec<Vec<CompactString>>> {
    let keys = serde_json::from_str::<Vec<Vec<serde_json::Value>>>(keys?).ok()?;
    if keys.len() != sides.len() {
        return None;
    }
    sides
        .iter()
        .zip(&keys)
        .map(|(side, keys)| {
            keys.iter()
                .map(|key| canonical_key(key, &side.table))
                .collect()
        })
        .collect()
}

/// A member's primary key object, canonical (None: it does not read as the table's).
fn canonical_key(key: &serde_json::Value, table: &TableSchema) -> Option<CompactString> {
    canonicalise_value(key, table)
        .ok()
        .filter(|k| !k.unconfirmed)
        .map(|k| k.json)
}

/// The error of a statement that failed; one whose tables changed under it (a column or
/// table gone, a type changed) is forgotten, to be learned afresh by the next call.
pub fn failed(statement: &Statement, failure: &Failure) -> Error {
    if is_schema_change(failure) {
        statements::of(statement.source).forget(&statement.canonical);
    }
    statement_error(failure)
}
