//! TLS to PostgreSQL: encryption with sslmode=require, certificate checks with verify-full.
use crate::query::query;
use pgcache_testkit::*;
use std::time::Duration;

const SSL_VIEW: &str =
    "CREATE VIEW my_session AS SELECT 1 AS id, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();";

/// The module's arguments for `pg` without its `pg_sslmode` (and without the settings
/// `extra` gives again), then `extra`.
fn tls_args(pg: &Pg, extra: &[&str]) -> Vec<String> {
    let given: Vec<&str> = extra.chunks(2).map(|pair| pair[0]).collect();
    let mut args: Vec<String> = pg
        .module_args()
        .chunks(2)
        .filter(|pair| pair[0] != "pg_sslmode" && !given.contains(&pair[0].as_str()))
        .flat_map(|pair| pair.to_vec())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn args(pg: &Pg, extra: &[&str]) -> Vec<String> {
    // The view reads pg_stat_ssl, a system view: served only when the allowlist names it.
    let mut args = tls_args(pg, &["tables", "my_session"]);
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

/// The replication source's connection, made by pgcache's own protocol client, takes the
/// same TLS settings as the pool's and is refused the same way.
#[test]
fn the_replication_connection_checks_the_certificate_as_the_pool_does() {
    let (pg, cert) = Pg::start_tls();
    pg.execute(&format!(
        "{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'replication');"
    ));
    let replicating = |root: &str| {
        Redis::start(&tls_args(
            &pg,
            &[
                "pg_sslmode",
                "verify-full",
                "pg_sslrootcert",
                root,
                "pg_host",
                "localhost",
                "invalidation_source",
                "replication",
            ],
        ))
    };
    let redis = replicating(cert.to_str().unwrap());
    let mut con = redis.connection();
    wait_for("the replication stream", Duration::from_secs(20), || {
        (stats_figure(&mut con, "listener_connected") == 1).then_some(())
    });
    assert_eq!(
        encrypted_sessions(&pg, "pgcache-replication"),
        [true],
        "the walsender's session is encrypted"
    );
    read_until_cached(&mut con, "users", r#"{"id":7}"#);
    pg.execute("UPDATE users SET name = 'x' WHERE id = 7");
    wait_gone(&mut con, r#"pg_cache:users:{"id":7}"#);

    // A certificate from another CA is refused, and HEALTH says so.
    let (_other, other_cert) = Pg::start_tls();
    let refused = replicating(other_cert.to_str().unwrap());
    let mut con = refused.connection();
    let problem = wait_for("the refusal in HEALTH", Duration::from_secs(20), || {
        let health = map_reply(&mut con, "PGCACHE.HEALTH");
        let problems: Vec<String> = redis::from_redis_value(health["problems"].clone()).ok()?;
        problems
            .into_iter()
            .find(|p| p.contains("replication source is not streaming"))
    });
    assert!(problem.contains("certificate"), "{problem}");
}

/// Misses the event loop sends itself go over TLS too (a non-blocking session handed over by
/// the opener): answers equal PostgreSQL's, small and spread over many TLS records.
#[test]
fn misses_from_the_event_loop_go_over_tls() {
    let (pg, _cert) = Pg::start_tls();
    pg.execute(
        "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);
         INSERT INTO notes SELECT g, repeat(md5(g::text), 1 + g % 20) FROM generate_series(1, 400) g;",
    );
    let redis = Redis::start(&tls_args(
        &pg,
        &[
            "pg_sslmode",
            "require",
            "loop_connections",
            "1",
            "debug_commands",
            "yes",
        ],
    ));
    let mut con = redis.connection();
    // Every statement's misses may go out from the loop, however long a run took here.
    debug(&mut con, "PIPELINE", "ALWAYS");
    let mut direct = pg.client();
    let sql = "SELECT id, body FROM notes WHERE id > $1 ORDER BY id";
    let oracle = |client: &mut postgres::Client, from: i32| -> serde_json::Value {
        let text: String = client
            .query_one(
                "SELECT coalesce(json_agg(t ORDER BY id), '[]')::text \
                 FROM (SELECT id, body FROM notes WHERE id > $1 ORDER BY id) t",
                &[&from],
            )
            .unwrap()
            .get(0);
        json(&text)
    };
    // Another parameter each call, so that each is a miss; from 399 rows (about 150 KB, many
    // TLS records, under the 256 KiB past which a statement goes to the workers) down to
    // none.
    let mut from = 0;
    wait_for(
        "misses from the event loop",
        Duration::from_secs(30),
        || {
            from += 1;
            let got = json(&query(&mut con, sql, &[from.to_string().as_str()]).unwrap());
            assert_eq!(got, oracle(&mut direct, from), "from {from}");
            (stats_figure(&mut con, "misses_on_loop") >= 5).then_some(())
        },
    );
    for from in [from + 1, 200, 399, 400] {
        let got = json(&query(&mut con, sql, &[from.to_string().as_str()]).unwrap());
        assert_eq!(got, oracle(&mut direct, from), "from {from}");
    }
    assert_eq!(
        encrypted_sessions(&pg, "pgcache-loop"),
        [true],
        "the loop's one session is encrypted"
    );
}

/// Whether each session of `application` is encrypted, as PostgreSQL reports it.
fn encrypted_sessions(pg: &Pg, application: &str) -> Vec<bool> {
    pg.superuser()
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&application],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}
