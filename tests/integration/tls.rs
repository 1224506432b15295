//! TLS to PostgreSQL: encryption with sslmode=require, certificate checks with verify-full.
use pgcache_testkit::*;

const SSL_VIEW: &str =
    "CREATE VIEW my_session AS SELECT 1 AS id, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();";

fn args(pg: &Pg, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = pg
        .module_args()
        .chunks(2)
        .filter(|pair| pair[0] != "pg_sslmode")
        .flat_map(|pair| pair.to_vec())
        .collect();
    // The view reads pg_stat_ssl, a system view: served only when the allowlist names it.
    args.extend(["tables".to_string(), "my_session".to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn require_encrypts_and_verify_full_checks_the_certificate() {
    let (pg, cert) = Pg::start_tls();
    pg.execute(SSL_VIEW);

    let redis = Redis::start(&args(&pg, &["pg_sslmode", "require"]));
    let row = read(&mut redis.connection(), "my_session", r#"{"id":1}"#)
        .unwrap()
        .unwrap();
    assert_eq!(json(&row)["ssl"], true, "{row}");

    let cert = cert.to_str().unwrap();
    let redis = Redis::start(&args(
        &pg,
        &[
            "pg_sslmode",
            "verify-full",
            "pg_sslrootcert",
            cert,
            "pg_host",
            "localhost",
        ],
    ));
    let row = read(&mut redis.connection(), "my_session", r#"{"id":1}"#)
        .unwrap()
        .unwrap();
    assert_eq!(json(&row)["ssl"], true, "{row}");

    // A certificate from another CA is refused.
    let (_other, other_cert) = Pg::start_tls();
    let redis = Redis::start(&args(
        &pg,
        &[
            "pg_sslmode",
            "verify-full",
            "pg_sslrootcert",
            other_cert.to_str().unwrap(),
            "pg_host",
            "localhost",
        ],
    ));
    let e = read(&mut redis.connection(), "my_session", r#"{"id":1}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("PostgreSQL unavailable") && e.contains("certificate"),
        "{e}"
    );
}
