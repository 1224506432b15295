//! Sources (issue #53): the databases a pgcache serves.
use pgcache_testkit::*;

fn error(cmd: &mut redis::Cmd, con: &mut redis::Connection) -> String {
    match cmd.query::<redis::Value>(con) {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_command_refuses_a_source_the_server_does_not_serve() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let pk = r#"{"id":1}"#;
    let query = "SELECT id FROM users WHERE id = $1";
    let calls: Vec<(&str, redis::Cmd)> = vec![
        (
            "READ",
            redis::cmd("PGCACHE.READ")
                .arg(&["users", pk, "SOURCE", "analytics"])
                .clone(),
        ),
        (
            "READ, SOURCE among the options",
            redis::cmd("PGCACHE.READ")
                .arg(&["users", pk, "source", "analytics", "60", "MAXSTALE", "100"])
                .clone(),
        ),
        (
            "MULTIREAD",
            redis::cmd("PGCACHE.MULTIREAD")
                .arg(&["users", "[1,2]", "SOURCE", "analytics"])
                .clone(),
        ),
        (
            "QUERY",
            redis::cmd("PGCACHE.QUERY")
                .arg(&[query, "1", "1", "SOURCE", "analytics"])
                .clone(),
        ),
        (
            "EXPLAIN",
            redis::cmd("PGCACHE.EXPLAIN")
                .arg(&[query, "SOURCE", "analytics"])
                .clone(),
        ),
        (
            "KEY",
            redis::cmd("PGCACHE.KEY")
                .arg(&["users", pk, "SOURCE", "analytics"])
                .clone(),
        ),
        (
            "WRITE",
            redis::cmd("PGCACHE.WRITE")
                .arg(&["users", pk, r#"{"id":1}"#, "SOURCE", "analytics", "60"])
                .clone(),
        ),
        (
            "INVALIDATE",
            redis::cmd("PGCACHE.INVALIDATE")
                .arg(&["users", pk, "SOURCE", "analytics"])
                .clone(),
        ),
        (
            "FLUSH",
            redis::cmd("PGCACHE.FLUSH")
                .arg(&["users", "SOURCE", "analytics"])
                .clone(),
        ),
    ];
    for (what, mut call) in calls {
        let e = error(&mut call, &mut con);
        assert!(e.contains(r#"no source named "analytics""#), "{what}: {e}");
    }
    // Nothing was written or read for the unknown source.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pg_cache:*")
        .query(&mut con)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    // A key names its own source: GET takes no SOURCE.
    let e = error(
        redis::cmd("PGCACHE.GET").arg(&[r#"pg_cache:users:{"id":1}"#, "SOURCE", "x"]),
        &mut con,
    );
    assert!(e.contains("give no SOURCE"), "{e}");
    // A SOURCE without its name, and options a command does not take.
    let e = error(
        redis::cmd("PGCACHE.READ").arg(&["users", pk, "SOURCE"]),
        &mut con,
    );
    assert!(e.contains("SOURCE needs a source's name"), "{e}");
    let e = error(
        redis::cmd("PGCACHE.INVALIDATE").arg(&["users", pk, "60"]),
        &mut con,
    );
    assert!(e.contains(r#"unexpected argument "60""#), "{e}");
    let e = error(
        redis::cmd("PGCACHE.WRITE").arg(&["users", pk, r#"{"id":1}"#, "60", "61"]),
        &mut con,
    );
    assert!(e.contains(r#"unexpected argument "61""#), "{e}");

    // Without SOURCE, every command is the default source's, as before.
    let row: String = redis::cmd("PGCACHE.READ")
        .arg(&["users", pk, "60"])
        .query(&mut con)
        .unwrap();
    assert!(row.contains(r#""id":1"#), "{row}");
    let key: String = redis::cmd("PGCACHE.KEY")
        .arg(&["users", pk])
        .query(&mut con)
        .unwrap();
    assert_eq!(key, r#"pg_cache:users:{"id":1}"#);
    let _: () = redis::cmd("PGCACHE.WRITE")
        .arg(&["users", r#"{"id":9}"#, r#"{"id":9}"#, "60"])
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("PGCACHE.INVALIDATE")
        .arg(&["users", pk])
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("PGCACHE.FLUSH")
        .arg("users")
        .query(&mut con)
        .unwrap();
}

/// A source block that does not check out fails the load, saying what is wrong with it;
/// the module then loads without it.
#[test]
fn a_block_that_does_not_check_out_is_refused() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let _: String = redis::cmd("MODULE")
        .arg(&["UNLOAD", "pgcache"])
        .query(&mut con)
        .unwrap();
    let load = |extra: &[&str]| {
        let mut load = redis::cmd("MODULE");
        load.arg("LOAD").arg(module_path().to_str().unwrap());
        for a in stack.pg.module_args() {
            load.arg(a);
        }
        load.arg(extra).query::<String>(&mut stack.con())
    };
    assert!(load(&["source", "analytics", "workers", "2"]).is_err());
    wait_for(
        "the server-wide setting's refusal",
        std::time::Duration::from_secs(5),
        || stack.redis.log().contains("server-wide").then_some(()),
    );
    load(&[]).unwrap();
    let row: Option<String> = redis::cmd("PGCACHE.READ")
        .arg(&["users", r#"{"id":1}"#])
        .query(&mut con)
        .unwrap();
    assert!(row.is_some());
}
