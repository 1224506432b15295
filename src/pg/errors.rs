//! Turns PostgreSQL errors into replies that name the cause. The driver's error displays as
//! "db error" for server errors, so the server's message and SQLSTATE are read explicitly.

use crate::error::Error;
use crate::pg::session::Failure;
use tokio_postgres::error::SqlState;

/// Describes a failure: the server's message and code, or the connection problem.
pub fn describe(e: &Failure) -> String {
    if let Some(said) = e.server() {
        return format!("{} (SQLSTATE {})", said.message, said.code.code());
    }
    let driver = match e {
        Failure::Driver(driver) if !driver.is_closed() => driver,
        Failure::Driver(_) => return "connection to PostgreSQL was closed".into(),
        other => return other.to_string(),
    };
    let mut text = driver.to_string();
    let mut source = std::error::Error::source(driver);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Key values PostgreSQL could not read as the column's type.
const BAD_KEY_VALUE: [SqlState; 7] = [
    SqlState::INVALID_TEXT_REPRESENTATION,
    SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
    SqlState::INVALID_DATETIME_FORMAT,
    SqlState::DATETIME_FIELD_OVERFLOW,
    SqlState::UNTRANSLATABLE_CHARACTER,
    SqlState::INVALID_PARAMETER_VALUE,
    SqlState::CHARACTER_NOT_IN_REPERTOIRE,
];

/// Errors that say our cached idea of a table is outdated.
const SCHEMA_CHANGED: [SqlState; 4] = [
    SqlState::UNDEFINED_TABLE,
    SqlState::UNDEFINED_COLUMN,
    SqlState::DATATYPE_MISMATCH,
    SqlState::UNDEFINED_FUNCTION,
];

/// Whether the server is out of reach rather than refusing this query: connection
/// exceptions (class 08), operator intervention such as a shutdown (57P), too many
/// connections. Classes have no constant of their own, so they are read from the code.
fn unavailable(code: &SqlState) -> bool {
    *code == SqlState::TOO_MANY_CONNECTIONS
        || code.code().starts_with("08")
        || code.code().starts_with("57P")
}

/// The reply for an error of a row query on `table`.
pub fn query_error(e: &Failure, table: &str) -> Error {
    let Some(said) = e.server() else {
        return Error::postgres(format!("PostgreSQL unavailable: {}", describe(e)));
    };
    let message = said.message;
    let code = &said.code;
    let reason = if *code == SqlState::UNDEFINED_TABLE {
        format!("table {table} does not exist ({message})")
    } else if *code == SqlState::UNDEFINED_COLUMN {
        format!("{message} in {table}: the table changed; retry, pgcache reloads its columns")
    } else if BAD_KEY_VALUE.contains(code) {
        format!("invalid key value for {table}: {message}")
    } else if *code == SqlState::QUERY_CANCELED {
        format!(
            "query on {table} canceled: it ran longer than pgcache.statement_timeout_ms ({message})"
        )
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        format!("permission denied reading {table}: {message}; GRANT SELECT to the pgcache user")
    } else if unavailable(code) {
        format!(
            "PostgreSQL unavailable: {message} (SQLSTATE {})",
            code.code()
        )
    } else {
        format!(
            "PostgreSQL error on {table}: {message} (SQLSTATE {})",
            code.code()
        )
    };
    Error::postgres(reason)
}

/// The reply for an error of a catalog query about `table`: PostgreSQL unavailable only when
/// it could not be reached; a refusal (permissions, a bad name) says what the server said.
pub fn catalog_error(e: &Failure, table: &str) -> Error {
    let reason = match e.server() {
        Some(said) if !unavailable(&said.code) => format!(
            "PostgreSQL refused reading the catalog for {table}: {} (SQLSTATE {})",
            said.message,
            said.code.code()
        ),
        _ => format!("PostgreSQL unavailable: {}", describe(e)),
    };
    Error::postgres(reason)
}

/// Whether the error says our cached idea of the table is outdated.
pub fn is_schema_change(e: &Failure) -> bool {
    e.server()
        .is_some_and(|said| SCHEMA_CHANGED.contains(&said.code))
}

/// The reply for an error of a statement PGCACHE.QUERY ran or prepared: what PostgreSQL
/// said of it, or that PostgreSQL could not be reached.
pub fn statement_error(e: &Failure) -> Error {
    let Some(said) = e.server() else {
        return Error::postgres(format!("PostgreSQL unavailable: {}", describe(e)));
    };
    let code = &said.code;
    let reason = if unavailable(code) {
        format!(
            "PostgreSQL unavailable: {} (SQLSTATE {})",
            said.message,
            code.code()
        )
    } else if *code == SqlState::QUERY_CANCELED {
        format!(
            "the statement was canceled: it ran longer than pgcache.statement_timeout_ms ({})",
            said.message
        )
    } else {
        format!(
            "PostgreSQL refused the statement: {} (SQLSTATE {})",
            said.message,
            code.code()
        )
    };
    Error::postgres(reason)
}
