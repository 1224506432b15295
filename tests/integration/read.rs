//! PGCACHE.READ against a real PostgreSQL and a real server.
use pgcache_testkit::*;

#[test]
fn miss_then_hit_returns_the_row_and_caches_it_with_the_ttl() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let row = read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap();
    assert_eq!(
        json(&row),
        serde_json::json!({"id": 7, "name": "user7", "email": "user7@example.com"})
    );
    let key = r#"pg_cache:users:{"id":7}"#;
    let cached: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
    assert_eq!(cached.as_deref(), Some(row.as_str()));
    let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut con).unwrap();
    assert!((3590..=3600).contains(&ttl), "default TTL, got {ttl}");

    // A hit comes from the cache: change the row behind the cache's back and see the old one.
    stack
        .pg
        .execute("UPDATE users SET name = 'changed' WHERE id = 7");
    let again = read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap();
    assert_eq!(again, row);
}

#[test]
fn the_suite_runs_against_the_requested_server() {
    let stack = Stack::start("");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut stack.con())
        .unwrap();
    let wants_valkey = server_binary().contains("valkey");
    assert_eq!(info.contains("valkey"), wants_valkey, "{info}");
}

#[test]
fn absent_rows_are_nil_and_remembered_for_negative_ttl() {
    let stack = Stack::start(USERS_SQL);
    stack.pg.log_app_statements();
    let mut con = stack.con();
    assert_eq!(read(&mut con, "users", r#"{"id":999999}"#).unwrap(), None);
    let key = r#"pg_cache:users:{"id":999999}"#;
    let marker: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
    assert_eq!(marker.as_deref(), Some("null"));
    let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut con).unwrap();
    assert!(
        (25..=30).contains(&ttl),
        "default negative_ttl is 30 s: {ttl}"
    );
    // Asked again: nil from the cache, no second query.
    let queries = stack.pg.logged_statements("row_to_json");
    assert_eq!(read(&mut con, "users", r#"{"id":999999}"#).unwrap(), None);
    let rows: Vec<Option<String>> = redis::cmd("PGCACHE.MULTIREAD")
        .arg("users")
        .arg(r#"[{"id":999999},{"id":1}]"#)
        .query(&mut con)
        .unwrap();
    assert_eq!(rows[0], None);
    assert_eq!(
        stack.pg.logged_statements("row_to_json"),
        queries + 1,
        "only id 1 was fetched"
    );
    // 0 turns negative caching off.
    config_set(&mut con, "pgcache.negative_ttl", "0").unwrap();
    assert_eq!(read(&mut con, "users", r#"{"id":888888}"#).unwrap(), None);
    let exists: bool = redis::cmd("EXISTS")
        .arg(r#"pg_cache:users:{"id":888888}"#)
        .query(&mut con)
        .unwrap();
    assert!(!exists);
}

#[test]
fn explicit_ttl_is_used() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let _: Option<String> = redis::cmd("PGCACHE.READ")
        .arg("users")
        .arg(r#"{"id":3}"#)
        .arg(60)
        .query(&mut con)
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(r#"pg_cache:users:{"id":3}"#)
        .query(&mut con)
        .unwrap();
    assert!((58_000..=60_000).contains(&pttl), "{pttl}");
}

fn err_text(r: redis::RedisResult<Option<String>>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

const TYPES_SQL: &str = r#"
    CREATE TABLE typed (
        id bigint PRIMARY KEY,
        small smallint, big bigint, price numeric(12,2), ratio double precision,
        flag boolean, nothing text, doc json, docb jsonb,
        at timestamp, at_tz timestamptz, day date,
        tags text[], matrix integer[], raw bytea, uid uuid, label varchar(20), code char(4)
    );
    SET TIME ZONE 'UTC';
    INSERT INTO typed VALUES (
        9007199254740993, -32768, 9223372036854775807, 1234567890.10, 0.5,
        true, NULL, '{"a": [1, 2]}', '{"b": {"c": null}}',
        '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15+00', '2024-02-29',
        ARRAY['x', 'y'], ARRAY[[1,2],[3,4]], '\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        'héllo "quoted"', 'ab'
    );
"#;

#[test]
fn every_type_is_exact_json() {
    let stack = Stack::start(TYPES_SQL);
    let mut con = stack.con();
    let row = read(&mut con, "typed", r#"{"id":9007199254740993}"#)
        .unwrap()
        .unwrap();
    // Digits survive as written: no float rounding of big integers or numerics.
    assert!(row.contains(r#""id":9007199254740993"#), "{row}");
    assert!(row.contains(r#""big":9223372036854775807"#), "{row}");
    assert!(row.contains(r#""price":1234567890.10"#), "{row}");
    let v = json(&row);
    assert_eq!(v["small"], -32768);
    assert_eq!(v["ratio"], 0.5);
    assert_eq!(v["flag"], true);
    assert!(v["nothing"].is_null());
    assert_eq!(v["doc"], serde_json::json!({"a": [1, 2]}));
    assert_eq!(v["docb"], serde_json::json!({"b": {"c": null}}));
    assert_eq!(v["at"], "2024-02-29T13:14:15.123456");
    assert!(
        v["at_tz"]
            .as_str()
            .unwrap()
            .starts_with("2024-02-29T13:14:15")
    );
    assert_eq!(v["day"], "2024-02-29");
    assert_eq!(v["tags"], serde_json::json!(["x", "y"]));
    assert_eq!(v["matrix"], serde_json::json!([[1, 2], [3, 4]]));
    assert_eq!(v["raw"], "\\xdeadbeef");
    assert_eq!(v["uid"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(v["label"], "héllo \"quoted\"");
    assert_eq!(v["code"], "ab  ");
}

#[test]
fn key_spellings_share_one_entry() {
    let stack = Stack::start(
        "CREATE TABLE regional (region text, id integer, v text, PRIMARY KEY (region, id));
         INSERT INTO regional VALUES ('eu', 3, 'three');",
    );
    let mut con = stack.con();
    stack.pg.execute(USERS_SQL);
    let first = read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap();
    for spelling in [r#"{ "id" : 7 }"#, r#"{"id":"7"}"#, r#"{"id":"007"}"#] {
        assert_eq!(read(&mut con, "users", spelling).unwrap().unwrap(), first);
    }
    let a = read(&mut con, "regional", r#"{"region":"eu","id":3}"#)
        .unwrap()
        .unwrap();
    let b = read(&mut con, "regional", r#"{"id":"3", "region":"eu"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(json(&a)["v"], "three");
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("pg_cache:*")
        .query(&mut con)
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            r#"pg_cache:regional:{"id":3,"region":"eu"}"#.to_string(),
            r#"pg_cache:users:{"id":7}"#.to_string()
        ]
    );
    // public.users is the same table and the same entry as users.
    stack
        .pg
        .execute("UPDATE users SET name = 'changed' WHERE id = 7");
    assert_eq!(
        read(&mut con, "public.users", r#"{"id":7}"#)
            .unwrap()
            .unwrap(),
        first
    );
}

#[test]
fn schemas_quoted_names_views_and_tables_without_keys() {
    let stack = Stack::start(
        r#"CREATE SCHEMA sales;
           CREATE TABLE sales.orders (id integer PRIMARY KEY, total numeric(10,2));
           INSERT INTO sales.orders VALUES (1, 10.50);
           CREATE TABLE "Mixed Case" (id integer PRIMARY KEY, v text);
           INSERT INTO "Mixed Case" VALUES (1, 'mixed');
           CREATE TABLE events (kind text, n integer);
           INSERT INTO events VALUES ('a', 1), ('b', 2), ('b', 3);
           CREATE VIEW order_totals AS SELECT id, total FROM sales.orders;
           CREATE MATERIALIZED VIEW order_mv AS SELECT id, total FROM sales.orders;"#,
    );
    let mut con = stack.con();
    let row = read(&mut con, "sales.orders", r#"{"id":1}"#)
        .unwrap()
        .unwrap();
    assert!(row.contains(r#""total":10.50"#), "{row}");
    let exists: bool = redis::cmd("EXISTS")
        .arg(r#"pg_cache:sales.orders:{"id":1}"#)
        .query(&mut con)
        .unwrap();
    assert!(exists);
    let row = read(&mut con, r#""Mixed Case""#, r#"{"id":1}"#)
        .unwrap()
        .unwrap();
    assert_eq!(json(&row)["v"], "mixed");
    let row = read(&mut con, "order_totals", r#"{"id":1}"#)
        .unwrap()
        .unwrap();
    assert!(row.contains(r#""total":10.50"#), "{row}");
    assert!(
        read(&mut con, "order_mv", r#"{"id":"1"}"#)
            .unwrap()
            .is_some()
    );
    // No primary key: any existing column, but never a silently chosen row.
    assert_eq!(
        json(
            &read(&mut con, "events", r#"{"kind":"a"}"#)
                .unwrap()
                .unwrap()
        )["n"],
        1
    );
    let e = err_text(read(&mut con, "events", r#"{"kind":"b"}"#));
    assert!(e.contains("matches more than one row"), "{e}");
    let e = err_text(read(&mut con, "events", r#"{"nope":"b"}"#));
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn views_that_read_system_catalogs_are_refused() {
    let stack = Stack::start(USERS_SQL);
    // Debian's postgresql-15 ships the contrib extensions (setup.sh makes sure of it).
    stack
        .pg
        .superuser_of("app")
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .expect("pg_stat_statements (Debian's postgresql-contrib) is installed");
    stack
        .pg
        .superuser_of("app")
        .batch_execute(
            "CREATE VIEW passwords AS SELECT rolname, rolpassword FROM pg_catalog.pg_authid;
             GRANT SELECT ON passwords TO app;",
        )
        .unwrap();
    stack.pg.execute(
        "CREATE VIEW sessions AS SELECT pid, query FROM pg_stat_get_activity(NULL);
         CREATE VIEW roles AS SELECT rolname FROM pg_roles;
         CREATE VIEW roles_again AS SELECT * FROM roles;
         CREATE VIEW counted AS SELECT id, (SELECT count(*) FROM pg_class) AS n FROM users;
         CREATE MATERIALIZED VIEW role_names AS SELECT rolname FROM roles;
         CREATE VIEW owners AS SELECT id, pg_get_userbyid(10) AS owner FROM users;
         CREATE VIEW names AS SELECT id, lower(name) AS name, now() AS at,
                pg_typeof(id)::text AS t FROM users WHERE pg_sleep(0) IS NOT NULL;",
    );
    let mut con = stack.con();
    let cases = vec![
        (
            "passwords",
            r#"{"rolname":"app"}"#,
            "relation pg_catalog.pg_authid",
        ),
        (
            "sessions",
            r#"{"pid":1}"#,
            "function pg_catalog.pg_stat_get_activity",
        ),
        (
            "roles",
            r#"{"rolname":"app"}"#,
            "relation pg_catalog.pg_authid",
        ),
        (
            "roles_again",
            r#"{"rolname":"app"}"#,
            "relation pg_catalog.pg_authid",
        ),
        ("counted", r#"{"id":1}"#, "relation pg_catalog.pg_class"),
        (
            "owners",
            r#"{"id":1}"#,
            "function pg_catalog.pg_get_userbyid",
        ),
        (
            "role_names",
            r#"{"rolname":"app"}"#,
            "relation pg_catalog.pg_authid",
        ),
        (
            "pg_stat_statements",
            r#"{"queryid":1}"#,
            "relation public.pg_stat_statements",
        ),
    ];
    for (view, key, reads) in cases {
        let e = err_text(read(&mut con, view, key));
        assert!(
            e.contains(&format!(
                "{view} reads the {reads}; pgcache serves no system catalogs"
            )),
            "{view}: {e}"
        );
    }
    // Named in the allowlist, such a view is the administrator's choice, and served.
    config_set(&mut con, "pgcache.tables", "roles,names").unwrap();
    let row = read(&mut con, "roles", r#"{"rolname":"app"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(json(&row)["rolname"], "app");
    let e = err_text(read(&mut con, "roles_again", r#"{"rolname":"app"}"#));
    assert!(e.contains("not in the pgcache.tables allowlist"), "{e}");
    // Its column `t` is also the alias pgcache's query gives the relation: still read right.
    let row = read(&mut con, "names", r#"{"id":3}"#).unwrap().unwrap();
    assert_eq!(json(&row)["t"], "integer");
    let rows = multiread(&mut con, "names", "[{\"id\":4}]").unwrap();
    assert_eq!(json(rows[0].as_ref().unwrap())["name"], "user4");
    assert_eq!(
        json(&row)["name"],
        "user3",
        "a view over our own tables is served"
    );
}

#[test]
fn bad_input_gets_clear_errors_never_nil() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["users", "{"], "not valid JSON"),
        (vec!["users", "[1]"], "must be a JSON object"),
        (vec!["users", "7"], "must be a JSON object"),
        (vec!["users", r#"{"name":"x"}"#], "missing: id"),
        (
            vec!["users", r#"{"id":1,"name":"x"}"#],
            "not key columns: name",
        ),
        (vec!["users", r#"{"id":"abc"}"#], "expected an integer"),
        (vec!["users", r#"{"id":99999999999}"#], "out of range"),
        (vec!["userz", r#"{"id":1}"#], "table userz does not exist"),
        (
            vec!["pg_catalog.pg_authid", r#"{"oid":1}"#],
            "system schema",
        ),
        (
            vec!["information_schema.tables", r#"{"x":1}"#],
            "system schema",
        ),
        (
            vec!["users; drop table users", r#"{"id":1}"#],
            "invalid table name",
        ),
        (vec!["users", r#"{"id":1}"#, "0"], "TTL"),
        (vec!["users", r#"{"id":1}"#, "-5"], "TTL"),
        (vec!["users", r#"{"id":1}"#, "1.5"], "TTL"),
        (
            vec!["users", r#"{"id":1}"#, "99999999999999999999999"],
            "TTL",
        ),
        (vec!["users"], "wrong number of arguments"),
        (
            vec!["users", r#"{"id":1}"#, "10", "extra"],
            "unexpected argument \"extra\"",
        ),
        (
            vec!["users", r#"{"id":1}"#, "AFTER"],
            "AFTER needs a WAL position",
        ),
        (
            vec!["users", r#"{"id":1}"#, "AFTER", "7"],
            "not a WAL position",
        ),
        (
            vec!["users", r#"{"id":1}"#, "10", "AFTER", "0/1", "extra"],
            "unexpected argument \"extra\"",
        ),
        (
            vec!["users", r#"{"id":1}"#, "MAXSTALE", "soon"],
            "MAXSTALE takes milliseconds",
        ),
        (
            vec![
                "users",
                r#"{"id":1}"#,
                "10",
                "AFTER",
                "0/1",
                "MAXSTALE",
                "5",
                "WITHAGE",
                "extra",
            ],
            "unexpected argument \"extra\"",
        ),
        // READ takes any number of tags, so only too few arguments are the wrong number.
        (vec!["users"], "wrong number of arguments"),
    ];
    for (args, expected) in cases {
        let mut cmd = redis::cmd("PGCACHE.READ");
        for a in &args {
            cmd.arg(*a);
        }
        let e = err_text(cmd.query(&mut con));
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    let huge = format!(r#"{{"id":"{}"}}"#, "1".repeat(20_000));
    let e = err_text(read(&mut con, "users", &huge));
    assert!(e.contains("bytes"), "{e}");
    // The table still exists and works after all that.
    assert!(read(&mut con, "users", r#"{"id":1}"#).unwrap().is_some());
}

#[test]
fn query_errors_are_errors_not_missing_rows() {
    let stack = Stack::start(&format!(
        "{USERS_SQL} CREATE VIEW fragile AS SELECT id, 100 / (id - 5) AS q FROM users;"
    ));
    let mut con = stack.con();
    assert!(read(&mut con, "fragile", r#"{"id":6}"#).unwrap().is_some());
    let e = err_text(read(&mut con, "fragile", r#"{"id":5}"#));
    assert!(e.contains("division by zero"), "{e}");
    // A value PostgreSQL rejects for the column type is an error too.
    stack.pg.execute(
        "CREATE TABLE dated (day date PRIMARY KEY); INSERT INTO dated VALUES ('2024-01-01');",
    );
    let e = err_text(read(&mut con, "dated", r#"{"day":"not a date"}"#));
    assert!(e.contains("invalid key value"), "{e}");
    assert!(
        read(&mut con, "dated", r#"{"day":"2024-01-01"}"#)
            .unwrap()
            .is_some()
    );
}

#[test]
fn entries_land_in_the_callers_selected_db() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut con).unwrap();
    assert!(read(&mut con, "users", r#"{"id":5}"#).unwrap().is_some());
    let in_3 = cache_entries(&mut con);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    let in_0 = cache_entries(&mut con);
    assert_eq!((in_3, in_0), (1, 0));
}

#[test]
fn inside_multi_hits_work_and_misses_are_refused() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    let result: redis::RedisResult<Vec<redis::Value>> = redis::pipe()
        .atomic()
        .cmd("PGCACHE.READ")
        .arg("users")
        .arg(r#"{"id":1}"#)
        .cmd("PGCACHE.READ")
        .arg("users")
        .arg(r#"{"id":2}"#)
        .query(&mut con);
    // Only the miss (index 1) failed, and it says why.
    let e = result.unwrap_err().to_string();
    assert!(e.contains("Index 1") && !e.contains("Index 0"), "{e}");
    assert!(e.contains("MULTI/EXEC"), "{e}");
}

/// A row keyed by a `bit(4)` column is read by its whole key, alone and several at once: a
/// key value cast to `bit` would be `bit(1)`, cut to its first bit (issue #70, seed 21016).
#[test]
fn a_row_keyed_by_a_bit_string_is_read_by_its_whole_key() {
    let stack = Stack::start(
        "CREATE TABLE flagged (flags bit(4) PRIMARY KEY, label text);
         INSERT INTO flagged VALUES ('1111', 'all'), ('1010', 'some'), ('0001', 'one');",
    );
    let mut con = stack.con();
    let row = read(&mut con, "flagged", r#"{"flags":"1010"}"#).unwrap();
    assert_eq!(
        row.as_deref().map(json),
        Some(serde_json::json!({"flags": "1010", "label": "some"}))
    );
    let rows: Vec<Option<String>> = redis::cmd("PGCACHE.MULTIREAD")
        .arg("flagged")
        .arg(r#"[{"flags":"1111"},{"flags":"0000"}]"#)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.as_deref().map(json))
            .collect::<Vec<_>>(),
        vec![
            Some(serde_json::json!({"flags": "1111", "label": "all"})),
            None
        ]
    );
}
