//! The `pg_url` setting: a libpq URL or key=value conninfo taken apart into the `pg_*`
//! settings.

use super::{Settings, SslMode};
use crate::error::Error;

/// Takes host, port, database, user, password, sslmode and connect_timeout from a libpq URL
/// (`postgresql://user:pass@host:5432/db?sslmode=require`) or key=value conninfo.
pub fn apply(s: &mut Settings, url: &str) -> Result<(), Error> {
    use tokio_postgres::config::{Host, SslMode as PgSsl};
    let config: tokio_postgres::Config = url
        .parse()
        // The parser's message can quote the input, which may hold the password.
        .map_err(|_| Error::invalid("not a valid libpq URL or key=value connection string"))?;
    if let Some(host) = config.get_hosts().first() {
        s.pg.host = match host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.to_string_lossy().into_owned(),
        };
    }
    if let Some(port) = config.get_ports().first() {
        s.pg.port = *port;
    }
    if let Some(db) = config.get_dbname() {
        s.pg.database = db.to_string();
    }
    if let Some(user) = config.get_user() {
        s.pg.user = user.to_string();
    }
    if let Some(pw) = config.get_password() {
        s.pg.password = Some(String::from_utf8_lossy(pw).into_owned());
    }
    if url.contains("sslmode") {
        s.pg.sslmode = match config.get_ssl_mode() {
            PgSsl::Disable => SslMode::Disable,
            PgSsl::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
    }
    if let Some(t) = config.get_connect_timeout() {
        s.pg.connect_timeout = *t;
    }
    Ok(())
}
