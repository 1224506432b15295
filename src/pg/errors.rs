//! Turns PostgreSQL errors into replies that name the cause. `postgres::Error` displays as
//! "db error" for server errors, so the server's message and SQLSTATE are read explicitly.

use crate::error::Error;

/// Describes a driver error: the server's message and code, or the connection problem.
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    if e.is_closed() {
        return "connection to PostgreSQL was closed".into();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The reply for an error of a row query on `table`.
pub fn query_error(e: &postgres::Error, table: &str) -> Error {
    let Some(db) = e.as_db_error() else {
        return Error::postgres(format!("PostgreSQL unavailable: {}", describe(e)));
    };
    let message = db.message();
    let reason = match db.code().code() {
        "42P01" => format!("table {table} does not exist ({message})"),
        "42703" => {
            format!("{message} in {table}: the table changed; retry, pgcache reloads its columns")
        }
        "22P02" | "22003" | "22007" | "22008" | "22P05" | "22023" | "22021" => {
            format!("invalid key value for {table}: {message}")
        }
        "57014" => format!(
            "query on {table} canceled: it ran longer than pgcache.statement_timeout_ms ({message})"
        ),
        "42501" => format!(
            "permission denied reading {table}: {message}; GRANT SELECT to the pgcache user"
        ),
        code if code.starts_with("08") || code.starts_with("57P") || code == "53300" => {
            format!("PostgreSQL unavailable: {message} (SQLSTATE {code})")
        }
        code => format!("PostgreSQL error on {table}: {message} (SQLSTATE {code})"),
    };
    Error::postgres(reason)
}

/// Whether the error says our cached idea of the table is outdated.
pub fn is_schema_change(e: &postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| matches!(db.code().code(), "42P01" | "42703" | "42804" | "42883"))
}
