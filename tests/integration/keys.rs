//! The commands that name cache keys: PGCACHE.GET, PGCACHE.MGET and PGCACHE.KEY, and what
//! Redis knows of them (key positions, key specs, docs), on a single server.
use pgcache_testkit::*;

const ORDERS_SQL: &str = "
    CREATE TABLE orders (id integer PRIMARY KEY, total numeric NOT NULL);
    INSERT INTO orders VALUES (1, 9.50), (7, 12.25);
";

fn get(con: &mut redis::Connection, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("PGCACHE.GET").arg(key).query(con)
}

fn key_of(con: &mut redis::Connection, table: &str, pk: &str) -> redis::RedisResult<String> {
    redis::cmd("PGCACHE.KEY").arg(table).arg(pk).query(con)
}

fn error_of(result: redis::RedisResult<Option<String>>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn key_gives_the_canonical_key_whatever_the_spelling() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    for (table, pk) in [
        ("users", r#"{"id":7}"#),
        ("public.users", r#"{ "id": "7" }"#),
        ("USERS", r#"{"id":"7"}"#),
    ] {
        assert_eq!(
            key_of(&mut con, table, pk).unwrap(),
            r#"pg_cache:users:{"id":7}"#,
            "{table} {pk}"
        );
    }
    let e = key_of(&mut con, "userz", r#"{"id":1}"#).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = key_of(&mut con, "users", r#"{"name":"x"}"#).unwrap_err();
    assert!(e.to_string().contains("key columns"), "{e}");
}

#[test]
fn get_reads_through_like_read_and_hits_from_memory() {
    let stack = Stack::start(&format!("{USERS_SQL} {ORDERS_SQL}"));
    let mut con = stack.con();
    // The first GET of a table: its schema is read on a worker, then the row.
    let row = get(&mut con, r#"pg_cache:users:{"id":3}"#)
        .unwrap()
        .unwrap();
    assert_eq!(json(&row)["name"], "user3");
    let ttl: i64 = redis::cmd("TTL")
        .arg(r#"pg_cache:users:{"id":3}"#)
        .query(&mut con)
        .unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "filled with the default TTL: {ttl}"
    );
    // A hit, and the same entry READ finds.
    assert_eq!(
        get(&mut con, r#"pg_cache:users:{"id":3}"#)
            .unwrap()
            .unwrap(),
        row
    );
    assert_eq!(
        read(&mut con, "users", r#"{"id":3}"#).unwrap().unwrap(),
        row
    );
    // A miss of a known table, with a TTL.
    let _: Option<String> = redis::cmd("PGCACHE.GET")
        .arg(r#"pg_cache:orders:{"id":7}"#)
        .arg(60)
        .query(&mut con)
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(r#"pg_cache:orders:{"id":7}"#)
        .query(&mut con)
        .unwrap();
    assert!((50..=60).contains(&ttl), "{ttl}");
    assert_eq!(
        json(
            &get(&mut con, r#"pg_cache:orders:{"id":7}"#)
                .unwrap()
                .unwrap()
        )["total"],
        serde_json::json!(12.25)
    );
    // No such row: nil, remembered.
    assert_eq!(get(&mut con, r#"pg_cache:users:{"id":999}"#).unwrap(), None);
    assert_eq!(get(&mut con, r#"pg_cache:users:{"id":999}"#).unwrap(), None);

    let stats = map_reply(&mut con, "PGCACHE.STATS");
    let get_calls: i64 =
        redis::from_redis_value(nested(&nested(&stats["commands"])["get"])["calls"].clone())
            .unwrap();
    assert_eq!(get_calls, 6);
    let users = nested(&nested(&stats["tables"])["users"]);
    let hits: i64 = redis::from_redis_value(users["hits"].clone()).unwrap();
    assert_eq!(hits, 3, "the GET and READ hits and the remembered absence");
}

#[test]
fn get_refuses_keys_that_are_not_canonical_and_shows_the_canonical_one() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    for (named, canonical) in [
        (
            r#"pg_cache:users:{ "id": 1 }"#,
            r#"pg_cache:users:{"id":1}"#,
        ),
        (r#"pg_cache:users:{"id":"2"}"#, r#"pg_cache:users:{"id":2}"#),
        (
            r#"pg_cache:public.users:{"id":2}"#,
            r#"pg_cache:users:{"id":2}"#,
        ),
    ] {
        let e = error_of(get(&mut con, named));
        assert!(e.contains("not a canonical cache key"), "{named}: {e}");
        assert!(e.contains(&format!("{canonical:?}")), "{named}: {e}");
        let exists: bool = redis::cmd("EXISTS").arg(named).query(&mut con).unwrap();
        assert!(!exists, "nothing is written under {named}");
    }
    for (named, needle) in [
        (r#"users:{"id":1}"#, "not a pgcache key"),
        ("pg_cache:users", "not a pgcache key"),
        (r#"pg_cache:userz:{"id":1}"#, "does not exist"),
        (r#"pg_cache:users:{"id":"x"}"#, "expected an integer"),
        // A named source's key (issue #53) before any source is declared.
        (
            r#"pg_cache:@analytics:users:{"id":1}"#,
            r#"no source named "analytics""#,
        ),
        (
            r#"pg_cache:@Analytics:users:{"id":1}"#,
            "starts a source's name",
        ),
    ] {
        let e = error_of(get(&mut con, named));
        assert!(e.contains(needle), "{named}: {e}");
    }
}

#[test]
fn redis_knows_which_arguments_are_keys() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("PGCACHE.GET")
        .arg(r#"pg_cache:users:{"id":1}"#)
        .query(&mut con)
        .unwrap();
    assert_eq!(keys, vec![r#"pg_cache:users:{"id":1}"#]);
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("pgcache.get")
        .arg("pgcache.read")
        .query(&mut con)
        .unwrap();
    let positions = |entry: &redis::Value| -> (i64, i64, i64) {
        let fields: Vec<redis::Value> = redis::from_redis_value(entry.clone()).unwrap();
        (
            redis::from_redis_value(fields[3].clone()).unwrap(),
            redis::from_redis_value(fields[4].clone()).unwrap(),
            redis::from_redis_value(fields[5].clone()).unwrap(),
        )
    };
    assert_eq!(positions(&info[0]), (1, 1, 1), "GET's key is argument 1");
    assert_eq!(positions(&info[1]), (0, 0, 0), "READ names no key");
    let docs = format!(
        "{:?}",
        redis::cmd("COMMAND")
            .arg("DOCS")
            .arg("pgcache.get")
            .query::<redis::Value>(&mut con)
            .unwrap()
    );
    assert!(docs.contains("summary") && docs.contains("0.2.0"), "{docs}");
}

#[test]
fn acl_key_patterns_apply_to_get() {
    let stack = Stack::start(&format!("{USERS_SQL} {ORDERS_SQL}"));
    let mut admin = stack.con();
    add_acl_user(&mut admin, "reader", &["~pg_cache:users:*", "+@all"]);
    let mut reader = connect_as(stack.redis.port, "reader", "pw");
    assert!(
        get(&mut reader, r#"pg_cache:users:{"id":1}"#)
            .unwrap()
            .is_some()
    );
    let e = error_of(get(&mut reader, r#"pg_cache:orders:{"id":1}"#));
    assert!(e.to_uppercase().contains("NOPERM"), "{e}");
    let exists: bool = redis::cmd("EXISTS")
        .arg(r#"pg_cache:orders:{"id":1}"#)
        .query(&mut admin)
        .unwrap();
    assert!(!exists, "a refused GET fetches nothing");
}

#[test]
fn a_prefix_with_braces_is_refused_at_load() {
    let pg = Pg::start();
    let mut args = pg.module_args();
    args.extend(["cache_prefix".to_string(), "{pg}:".to_string()]);
    let log = Redis::start_with(&args, &[], &[])
        .err()
        .expect("the load fails");
    assert!(
        log.contains("cache_prefix") && log.contains("brace"),
        "{log}"
    );
}

fn mget(con: &mut redis::Connection, keys: &[&str]) -> redis::RedisResult<Vec<Option<String>>> {
    redis::cmd("PGCACHE.MGET").arg(keys).query(con)
}

#[test]
fn mget_answers_in_order_and_fetches_the_misses_together() {
    let stack = Stack::start(USERS_SQL);
    stack.pg.log_app_statements();
    let mut con = stack.con();
    // The first MGET of a table: schema, keys and rows on one worker, in one query.
    let keys = [
        r#"pg_cache:users:{"id":5}"#,
        r#"pg_cache:users:{"id":999}"#,
        r#"pg_cache:users:{"id":2}"#,
        r#"pg_cache:users:{"id":5}"#,
    ];
    let before = stack.pg.logged_statements("row_to_json");
    let rows = mget(&mut con, &keys).unwrap();
    assert_eq!(stack.pg.logged_statements("row_to_json") - before, 1);
    let ids: Vec<Option<i64>> = rows
        .iter()
        .map(|r| r.as_ref().map(|r| json(r)["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(ids, vec![Some(5), None, Some(2), Some(5)]);
    // Now hits, and a known table's misses in one query.
    let rows = mget(
        &mut con,
        &[
            r#"pg_cache:users:{"id":2}"#,
            r#"pg_cache:users:{"id":8}"#,
            r#"pg_cache:users:{"id":9}"#,
        ],
    )
    .unwrap();
    assert_eq!(json(rows[0].as_ref().unwrap())["id"], 2);
    assert_eq!(json(rows[2].as_ref().unwrap())["id"], 9);
    assert_eq!(stack.pg.logged_statements("row_to_json") - before, 2);
    let cached: i64 = redis::cmd("EXISTS")
        .arg(r#"pg_cache:users:{"id":8}"#)
        .query(&mut con)
        .unwrap();
    assert_eq!(cached, 1);
}

#[test]
fn mget_refuses_what_it_cannot_answer_exactly() {
    let stack = Stack::start(&format!("{USERS_SQL} {ORDERS_SQL}"));
    let mut con = stack.con();
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg(&["GETKEYS", "PGCACHE.MGET", "a", "b"])
        .query(&mut con)
        .unwrap();
    assert_eq!(keys, vec!["a", "b"], "every argument is a key");
    for (keys, needle) in [
        (
            vec![r#"pg_cache:users:{"id":1}"#, r#"pg_cache:users:{ "id":2}"#],
            r#""pg_cache:users:{\"id\":2}""#,
        ),
        (
            vec![r#"pg_cache:users:{"id":1}"#, "other"],
            "not a pgcache key",
        ),
    ] {
        let e = mget(&mut con, &keys).unwrap_err().to_string();
        assert!(e.contains(needle), "{keys:?}: {e}");
    }
    let e: redis::RedisResult<()> = redis::cmd("PGCACHE.MGET").query(&mut con);
    assert!(e.unwrap_err().to_string().contains("wrong number"));
}

#[test]
fn a_failed_get_is_reported_with_the_parts_of_its_key() {
    let stack = Stack::start_with(USERS_SQL, &["events", "error"]);
    let mut con = stack.con();
    let mut sub = stack.redis.connection();
    let mut events = subscribe(&mut sub, "pg_cache_events");
    let _ = get(&mut con, r#"pg_cache:users:{"id":"x"}"#);
    let event = next_event(&mut events);
    assert_eq!(event["type"], "cache_error");
    assert_eq!(event["command"], "get");
    assert_eq!(event["table"], "users");
    assert_eq!(event["key"], r#"{"id":"x"}"#);
}

#[test]
fn client_tracking_tracks_the_rows_get_returned() {
    let stack = Stack::start(USERS_SQL);
    let mut sub = stack.redis.connection();
    let sub_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut sub).unwrap();
    let mut invalidations = subscribe(&mut sub, "__redis__:invalidate");
    let mut con = stack.con();
    let _: () = redis::cmd("CLIENT")
        .arg(&["TRACKING", "on", "REDIRECT", &sub_id.to_string()])
        .query(&mut con)
        .unwrap();
    let key = r#"pg_cache:users:{"id":4}"#;
    assert!(get(&mut con, key).unwrap().is_some());
    invalidate(&mut stack.con(), "users", r#"{"id":4}"#).unwrap();
    let message = next_message(&mut invalidations);
    let keys: Vec<String> = message.get_payload().unwrap();
    assert_eq!(keys, vec![key.to_string()]);
}

#[test]
fn the_commands_are_in_the_pgcache_acl_category_where_modules_may_add_one() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let categories: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut con).unwrap();
    // Modules may add ACL categories from Redis 7.4 and Valkey 8 on; before, none is added.
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .map(String::from)
    };
    let version = |v: String| -> (u32, u32) {
        let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    };
    let may_add = match field("valkey_version") {
        Some(valkey) => version(valkey) >= (8, 0),
        None => version(field("redis_version").unwrap()) >= (7, 4),
    };
    assert_eq!(
        categories.iter().any(|c| c == "pgcache"),
        may_add,
        "the pgcache category exists exactly where modules may add one: {info}"
    );
    if !may_add {
        return;
    }
    let listed: Vec<String> = redis::cmd("ACL")
        .arg(&["CAT", "pgcache"])
        .query(&mut con)
        .unwrap();
    for name in [
        "pgcache.read",
        "pgcache.get",
        "pgcache.mget",
        "pgcache.key",
        "pgcache.flush",
    ] {
        // COMMAND INFO's seventh field holds the command's ACL categories.
        let info: Vec<Vec<redis::Value>> = redis::cmd("COMMAND")
            .arg(&["INFO", name])
            .query(&mut con)
            .unwrap();
        let categories: Vec<String> = redis::from_redis_value(info[0][6].clone()).unwrap();
        assert!(
            categories.iter().any(|c| c == "@pgcache"),
            "{name}: {categories:?}"
        );
        // Valkey 8.0's ACL CAT <category> leaves module commands out; later servers list them.
        assert!(
            listed.is_empty() || listed.iter().any(|c| c == name),
            "{name} in {listed:?}"
        );
    }
    add_acl_user(&mut con, "app", &["~pg_cache:*", "+@pgcache"]);
    let mut app = connect_as(stack.redis.port, "app", "pw");
    assert!(
        get(&mut app, r#"pg_cache:users:{"id":1}"#)
            .unwrap()
            .is_some()
    );
    let e = redis::cmd("GET")
        .arg("x")
        .query::<Option<String>>(&mut app)
        .unwrap_err();
    assert!(e.to_string().to_uppercase().contains("NOPERM"), "{e}");
}

#[test]
fn acl_key_patterns_apply_to_the_keys_read_and_multiread_derive() {
    let stack = Stack::start(&format!("{USERS_SQL} {ORDERS_SQL}"));
    let mut admin = stack.con();
    // Cached before the user asks, so that hits are refused too, not only misses.
    read(&mut admin, "orders", r#"{"id":1}"#).unwrap();
    add_acl_user(&mut admin, "reader", &["~pg_cache:users:*", "+@all"]);
    let mut reader = connect_as(stack.redis.port, "reader", "pw");
    assert!(read(&mut reader, "users", r#"{"id":1}"#).unwrap().is_some());
    assert!(
        read(&mut reader, "users", r#"{ "id": "1" }"#)
            .unwrap()
            .is_some()
    );
    for pk in [r#"{"id":1}"#, r#"{"id":7}"#, r#"{ "id": 1 }"#] {
        let e = read(&mut reader, "orders", pk).unwrap_err().to_string();
        assert!(e.to_uppercase().contains("NOPERM"), "{pk}: {e}");
    }
    let e = multiread(&mut reader, "orders", r#"[{"id":1}]"#)
        .unwrap_err()
        .to_string();
    assert!(e.to_uppercase().contains("NOPERM"), "{e}");
    let rows = multiread(&mut reader, "users", r#"[{"id":1},{"id":2}]"#).unwrap();
    assert_eq!(rows.len(), 2);
    let exists: bool = redis::cmd("EXISTS")
        .arg(r#"pg_cache:orders:{"id":7}"#)
        .query(&mut admin)
        .unwrap();
    assert!(!exists, "a refused READ fetches and fills nothing");
    // The first READ of a table spelling is checked once a worker knows its key.
    let e = read(&mut reader, "public.orders", r#"{"id":1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.to_uppercase().contains("NOPERM"), "{e}");
    let stats = map_reply(&mut admin, "PGCACHE.STATS");
    let errors: i64 = redis::from_redis_value(stats["errors"].clone()).unwrap();
    assert_eq!(
        errors, 0,
        "refusals are Redis's answers, not pgcache errors"
    );
}

#[test]
fn get_hits_find_their_table_among_many() {
    let tables: String = (0..12)
        .map(|i| {
            format!("CREATE TABLE t{i} (id integer PRIMARY KEY); INSERT INTO t{i} VALUES (1);")
        })
        .collect();
    let stack = Stack::start(&tables);
    let mut con = stack.con();
    for i in 0..12 {
        let key = format!(r#"pg_cache:t{i}:{{"id":1}}"#);
        assert!(get(&mut con, &key).unwrap().is_some(), "{key} (miss)");
        assert!(get(&mut con, &key).unwrap().is_some(), "{key} (hit)");
    }
    let stats = map_reply(&mut con, "PGCACHE.STATS");
    let tables = nested(&stats["tables"]);
    for i in 0..12 {
        let hits: i64 =
            redis::from_redis_value(nested(&tables[&format!("t{i}")])["hits"].clone()).unwrap();
        assert_eq!(hits, 1, "t{i}");
    }
}

#[test]
fn mget_reads_several_tables_in_one_call() {
    let stack = Stack::start(&format!("{USERS_SQL} {ORDERS_SQL}"));
    stack.pg.log_app_statements();
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":7}"#).unwrap(); // users known and {"id":7} cached
    let keys = [
        r#"pg_cache:orders:{"id":7}"#,
        r#"pg_cache:users:{"id":7}"#,
        r#"pg_cache:orders:{"id":2}"#,
        r#"pg_cache:users:{"id":8}"#,
    ];
    let before = stack.pg.logged_statements("row_to_json");
    let rows = mget(&mut con, &keys).unwrap();
    assert_eq!(
        json(rows[0].as_ref().unwrap())["total"],
        serde_json::json!(12.25)
    );
    assert_eq!(json(rows[1].as_ref().unwrap())["name"], "user7");
    assert_eq!(rows[2], None, "no order 2");
    assert_eq!(json(rows[3].as_ref().unwrap())["name"], "user8");
    assert_eq!(
        stack.pg.logged_statements("row_to_json") - before,
        2,
        "one query per table for its misses"
    );
    // Now every key is cached (the absence too): answered without PostgreSQL.
    assert_eq!(mget(&mut con, &keys).unwrap(), rows);
    assert_eq!(stack.pg.logged_statements("row_to_json") - before, 2);
    // Each table counts the MGETs that read it (users: 1 READ + 2 MGETs, orders: 2 MGETs)
    // and the hits among their keys (users 7 in the first MGET, 7 and 8 in the second).
    let stats = map_reply(&mut con, "PGCACHE.STATS");
    let tables = nested(&stats["tables"]);
    for (table, calls, hits) in [("users", 3, 3), ("orders", 2, 2)] {
        let figures = nested(&tables[table]);
        let count = |name: &str| redis::from_redis_value::<i64>(figures[name].clone()).unwrap();
        assert_eq!((count("calls"), count("hits")), (calls, hits), "{table}");
    }
    let e = mget(
        &mut con,
        &[r#"pg_cache:users:{"id":1}"#, r#"pg_cache:orders:{ "id":1}"#],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a canonical cache key"), "{e}");
}
