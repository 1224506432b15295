//! What pgcache sends on a query connection, encoded with `postgres_protocol`'s frontend
//! codec: one request is Parse (first use on the connection), Bind, Execute, Sync. Scalars
//! go in text format, as `pg::text_value` sends them today, so PostgreSQL reads each with the
//! input function of whatever type it inferred; `text[]` arrays go in binary (element oid 25,
//! as tokio-postgres sends a `Vec<Option<String>>`); every result column comes back as text.

pub use crate::pg::prepared::Parsing;
pub use crate::pg::undo::Effects;
use bytes::BytesMut;
use postgres_protocol::IsNull;
use postgres_protocol::message::frontend;
use postgres_protocol::types::{ArrayDimension, array_to_sql, text_to_sql};

/// One parameter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// Sent in text format, read by the parameter's type's input function.
    Text(String),
    /// A one-dimensional `text[]`, sent in binary format.
    TextArray(Vec<Option<String>>),
}

/// One statement to run: its SQL, the parameter types it declares (0 or fewer than the
/// parameters: PostgreSQL infers the rest) and the values.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub sql: &'a str,
    pub param_oids: &'a [u32],
    pub params: &'a [Param],
    /// Kept prepared under a name, or parsed for this request alone (the unnamed statement).
    pub parsing: Parsing,
    /// What its run must undo of the session (`pg::undo`).
    pub effects: Effects,
}

/// A request that cannot be put into a message (a NUL byte in the SQL, more than 65535
/// parameters...): nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsendable(pub String);

impl std::fmt::Display for Unsendable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the statement cannot be sent to PostgreSQL: {}", self.0)
    }
}

const TEXT_OID: u32 = 25;
const TEXT_FORMAT: i16 = 0;
const BINARY_FORMAT: i16 = 1;

fn unsendable(e: impl std::fmt::Display) -> Unsendable {
    Unsendable(e.to_string())
}

/// Parse of `request` as the prepared statement `name`.
pub fn parse(name: &str, request: &Request, out: &mut BytesMut) -> Result<(), Unsendable> {
    frontend::parse(name, request.sql, request.param_oids.iter().copied(), out).map_err(unsendable)
}

/// Bind of `params` to the prepared statement `name` (unnamed portal, text results), Execute
/// of all its rows, and the Sync that ends the request's implicit transaction (or, inside
/// BEGIN, only its error skipping).
pub fn bind_execute_sync(
    name: &str,
    params: &[Param],
    out: &mut BytesMut,
) -> Result<(), Unsendable> {
    let formats = params.iter().map(|p| match p {
        Param::TextArray(_) => BINARY_FORMAT,
        Param::Text(_) => TEXT_FORMAT,
    });
    frontend::bind(
        "",
        name,
        formats,
        params,
        |param, buf| match param {
            Param::Text(text) => {
                text_to_sql(text, buf);
                Ok(IsNull::No)
            }
            Param::TextArray(items) => {
                let dimension = ArrayDimension {
                    len: i32::try_from(items.len())?,
                    lower_bound: 1,
                };
                array_to_sql(
                    Some(dimension),
                    TEXT_OID,
                    items,
                    |item, buf| match item {
                        Some(text) => {
                            text_to_sql(text, buf);
                            Ok(IsNull::No)
                        }
                        None => Ok(IsNull::Yes),
                    },
                    buf,
                )?;
                Ok(IsNull::No)
            }
        },
        Some(TEXT_FORMAT),
        out,
    )
    .map_err(|e| match e {
        frontend::BindError::Conversion(e) => unsendable(e),
        frontend::BindError::Serialization(e) => unsendable(e),
    })?;
    frontend::execute("", 0, out).map_err(unsendable)?;
    frontend::sync(out);
    Ok(())
}

/// Close of the prepared statement `name`.
pub fn close(name: &str, out: &mut BytesMut) {
    // Our names never hold a NUL byte: this cannot fail.
    frontend::close(b'S', name, out).expect("a statement name without NUL");
}

/// A simple query of SQL pgcache wrote itself (`BEGIN READ ONLY`, `COMMIT`).
pub fn simple_query(sql: &str, out: &mut BytesMut) {
    frontend::query(sql, out).expect("pgcache's own SQL has no NUL");
}
