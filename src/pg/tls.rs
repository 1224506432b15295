//! The TLS client set-up that `pg_sslmode` and `pg_sslrootcert` ask for, one for every kind of
//! connection pgcache opens: the pool's (through postgres-openssl) and the event loop's
//! (`pg::socket`, OpenSSL driven by hand on a non-blocking socket).

use crate::config::{PgSettings, SslMode};
use crate::error::Error;
use openssl::ssl::{ConnectConfiguration, SslConnector, SslMethod, SslVerifyMode};

/// The connector for `settings`; None where TLS is off (`disable`).
pub fn connector(settings: &PgSettings) -> Result<Option<SslConnector>, Error> {
    if settings.sslmode == SslMode::Disable {
        return Ok(None);
    }
    let mut builder = SslConnector::builder(SslMethod::tls())
        .map_err(|e| Error::invalid(e.to_string()).caused_by(e))?;
    match settings.sslmode {
        // libpq's prefer/require encrypt without checking who answers.
        SslMode::Prefer | SslMode::Require => builder.set_verify(SslVerifyMode::NONE),
        _ => {
            if let Some(ca) = &settings.sslrootcert {
                builder.set_ca_file(ca).map_err(|e| {
                    Error::invalid(format!("pg_sslrootcert {}: {e}", ca.display())).caused_by(e)
                })?;
            }
        }
    }
    Ok(Some(builder.build()))
}

/// Whether the server's certificate must name the host (`verify-full`; `verify-ca` checks
/// only who signed it).
pub fn verifies_host_name(settings: &PgSettings) -> bool {
    settings.sslmode != SslMode::VerifyCa
}

/// One connection's TLS configuration, checking the host name where the settings ask.
pub fn configure(
    connector: &SslConnector,
    settings: &PgSettings,
) -> Result<ConnectConfiguration, openssl::error::ErrorStack> {
    let mut config = connector.configure()?;
    config.set_verify_hostname(verifies_host_name(settings));
    Ok(config)
}
