//! Sources (issue #53) are isolated: one database's outage leaves another's reads alone, and
//! is told as that source's.
use pgcache_testkit::*;
use std::time::Duration;

fn read(con: &mut redis::Connection, id: i64, source: Option<&str>) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd("PGCACHE.READ");
    cmd.arg("users").arg(format!(r#"{{"id":{id}}}"#));
    if let Some(source) = source {
        cmd.arg("SOURCE").arg(source);
    }
    cmd.query(con)
}

/// A named source on a PostgreSQL of its own, which stops: the default source's misses and
/// hits go on as before; the named source's cached rows answer within `stale_if_error_ms`
/// and its misses fail fast, and the announcement of its stale hits gives its own outage
/// (before, the default source's: no reason at all).
#[test]
fn a_named_source_s_outage_leaves_the_default_served() {
    const BOUND_MS: u64 = 300;
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let mut other = Pg::start();
    other.execute(USERS_SQL);
    let mut args = pg.module_args();
    args.extend(["max_staleness_ms".into(), BOUND_MS.to_string()]);
    args.push("source".into());
    args.push("analytics".into());
    let mut other_args = other.module_args();
    other_args.extend(["max_staleness_ms".into(), BOUND_MS.to_string()]);
    args.extend(other_args);
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    wait_for("both feeds", Duration::from_secs(10), || {
        (read(&mut con, 1, None).is_ok() && read(&mut con, 1, Some("analytics")).is_ok())
            .then_some(())
    });
    for id in 1..=3 {
        read(&mut con, id, Some("analytics")).unwrap();
    }
    let mut sub = redis.connection();
    let mut events = subscribe(&mut sub, "pg_cache_events");
    other.stop();
    // A miss of the named source finds its database gone and opens its circuit.
    let refused = wait_for(
        "the named source's miss to fail",
        Duration::from_secs(15),
        || read(&mut con, 9, Some("analytics")).err(),
    );
    assert!(refused.to_string().contains("PostgreSQL"), "{refused}");
    std::thread::sleep(Duration::from_millis(BOUND_MS + 100));
    // Its cached rows still answer, past the freshness bound.
    for id in 1..=3 {
        assert_eq!(
            json(&read(&mut con, id, Some("analytics")).unwrap())["name"],
            format!("user{id}")
        );
    }
    // The default source is untouched: misses and hits answer from its PostgreSQL.
    for id in 4..=6 {
        assert_eq!(
            json(&read(&mut con, id, None).unwrap())["name"],
            format!("user{id}")
        );
    }
    let health = map_reply(&mut con, "PGCACHE.HEALTH");
    assert_eq!(
        redis::from_redis_value::<String>(health["postgres_circuit"].clone()).unwrap(),
        "closed",
        "the default source's circuit"
    );
    let announced = wait_for("the cache_stale event", Duration::from_secs(10), || {
        let event = next_event(&mut events);
        (event["type"] == "cache_stale").then_some(event)
    });
    let reason = announced["reason"].as_str().unwrap();
    assert!(
        reason.contains(&other.port.to_string()),
        "the stale hits' announcement gives the named source's outage: {announced}"
    );
    assert!(
        redis
            .log()
            .contains("PostgreSQL (source analytics) cannot be reached")
    );
}

/// The `@name:` segment lets an ACL key pattern confine a user to one source: a user allowed
/// `~pg_cache:@analytics:*` reads that source's rows, by READ or by key, and none of the
/// default source's (whose keys `pg_cache:users:...` the pattern does not match), and the
/// other way round.
#[test]
fn an_acl_key_pattern_confines_a_user_to_one_source() {
    let pg = Pg::start();
    pg.execute(USERS_SQL);
    let mut admin = pg.superuser();
    admin
        .batch_execute("CREATE DATABASE other OWNER app")
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE other SET pgcache.invalidation_source = '{}'",
            invalidation_source()
        ))
        .unwrap();
    let mut other = postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port)
        .user("app")
        .password(PG_PASSWORD)
        .dbname("other")
        .connect(postgres::NoTls)
        .unwrap();
    other.batch_execute(USERS_SQL).unwrap();
    let mut args = pg.module_args();
    // The same server and role, the other database.
    let named: Vec<String> = (pg.module_args().chunks(2))
        .flat_map(|pair| match pair[0].as_str() {
            "pg_database" => vec![pair[0].clone(), "other".into()],
            _ => pair.to_vec(),
        })
        .collect();
    args.extend(["source".into(), "analytics".into()]);
    args.extend(named);
    let redis = Redis::start(&args);
    let mut con = redis.connection();
    add_acl_user(&mut con, "analyst", &["~pg_cache:@analytics:*", "+@all"]);
    add_acl_user(&mut con, "clerk", &["~pg_cache:users:*", "+@all"]);
    let mut analyst = connect_as(redis.port, "analyst", "pw");
    let mut clerk = connect_as(redis.port, "clerk", "pw");
    let named_key = r#"pg_cache:@analytics:users:{"id":1}"#;
    let default_key = r#"pg_cache:users:{"id":1}"#;
    let get = |con: &mut redis::Connection, key: &str| -> redis::RedisResult<Option<String>> {
        redis::cmd("PGCACHE.GET").arg(key).query(con)
    };
    let refused = |result: redis::RedisResult<String>| match result {
        Ok(v) => panic!("expected NOPERM, got {v}"),
        Err(e) => assert!(e.to_string().to_uppercase().contains("NOPERM"), "{e}"),
    };
    wait_for("both feeds", Duration::from_secs(10), || {
        (read(&mut analyst, 1, Some("analytics")).is_ok()).then_some(())
    });
    assert!(get(&mut analyst, named_key).unwrap().is_some());
    refused(read(&mut analyst, 1, None));
    refused(get(&mut analyst, default_key).map(|v| format!("{v:?}")));
    read(&mut clerk, 1, None).unwrap();
    assert!(get(&mut clerk, default_key).unwrap().is_some());
    refused(read(&mut clerk, 2, Some("analytics")));
    refused(get(&mut clerk, named_key).map(|v| format!("{v:?}")));
}
