//! pgcache's rules: what a statement is and what a change does to its results, with neither
//! Redis nor PostgreSQL (the parser, pg_query, is a library). pgcache asks the catalog and
//! keeps the index; the decisions are made here, and tested here alone, thousands of cases a
//! second, before the server is.
//!
//! # Layout
//! - `kind`: how a column's values are read (`KeyKind`, booleans and uuids as PostgreSQL
//!   reads them).
//! - `predicate`: a WHERE over one table, weighed on a changed row's new values (`Pred`,
//!   `Truth`), and the columns it pins or bounds, for an index.
//! - `shape`: whether a statement's results can be dropped row by row, from the grammar
//!   alone: its sides, joins, subqueries and page.
//! - `precision`: how precisely a statement's results are dropped, decided from its shape,
//!   what the catalog learned of it and the facts the catalog was asked (`needs`, then
//!   `decide`: pgcache does the asking), and which results a change's row may enter and
//!   where an index files and finds them.
//! - `error`: the rules' one error, mapped by pgcache at the boundary.
//!
//! Property tests (`predicate/properties/`): one generator of WHEREs, two oracles.
//! PostgreSQL's verdicts on generated rows (a server of its own, pgcache-testkit's `Pg`), and
//! the rules' own laws, alone, some 2,000 cases a second: three-valued logic, an index that
//! never hides a result a row may enter, pages whose tie-break spells itself.

pub mod error;
pub mod kind;
pub mod precision;
pub mod predicate;
pub mod shape;

pub use error::{Error, Result};

/// Always double-quotes, doubling embedded quotes: the one way identifiers enter SQL text.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
