//! Invalidation driven by PostgreSQL: the shipped trigger, the original payload shape,
//! replication, reconnects, and PGCACHE.FLUSH.
use pgcache_testkit::*;
use std::time::Duration;

fn watched_users() -> Stack {
    let stack = Stack::start(&format!("{USERS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute("SELECT pgcache_watch('users')");
    stack
}

const KEY7: &str = r#"pg_cache:users:{"id":7}"#;

#[test]
fn committed_changes_remove_entries() {
    let stack = watched_users();
    let mut con = stack.con();
    for id in [7, 8, 9, 10] {
        read_until_cached(&mut con, "users", &format!(r#"{{"id":{id}}}"#));
    }
    stack
        .pg
        .execute("UPDATE users SET name = 'seven' WHERE id = 7");
    wait_gone(&mut con, KEY7);
    assert_eq!(
        json(&read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap())["name"],
        "seven"
    );

    stack.pg.execute("DELETE FROM users WHERE id = 8");
    wait_gone(&mut con, r#"pg_cache:users:{"id":8}"#);
    assert_eq!(read(&mut con, "users", r#"{"id":8}"#).unwrap(), None);

    // A key change invalidates the old and the new key.
    read_until_cached(&mut con, "users", r#"{"id":9}"#);
    stack.pg.execute("UPDATE users SET id = 5000 WHERE id = 9");
    wait_gone(&mut con, r#"pg_cache:users:{"id":9}"#);

    // A rolled-back transaction sends nothing: the entry stays.
    let mut pg = stack.pg.client();
    let mut tx = pg.transaction().unwrap();
    tx.batch_execute("UPDATE users SET name = 'never' WHERE id = 10")
        .unwrap();
    tx.rollback().unwrap();
    stack
        .pg
        .execute("UPDATE users SET name = 'marker' WHERE id = 7"); // a later notification
    wait_gone(&mut con, KEY7);
    let exists: bool = redis::cmd("EXISTS")
        .arg(r#"pg_cache:users:{"id":10}"#)
        .query(&mut con)
        .unwrap();
    assert!(exists);
}

#[test]
fn pgcache_s_own_part_of_the_invalidation_lag_is_reported() {
    let stack = watched_users();
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":7}"#);
    let started = std::time::Instant::now();
    stack
        .pg
        .execute("UPDATE users SET name = 'seven' WHERE id = 7");
    wait_gone(&mut con, KEY7);
    let waited_us = started.elapsed().as_micros() as i64;
    let (p50, p99) = (
        stats_figure(&mut con, "invalidation_apply_p50_us"),
        stats_figure(&mut con, "invalidation_apply_p99_us"),
    );
    // Handed from the source's thread to the main thread: never free, and no longer than
    // the whole wait from the commit's start to the entry gone.
    assert!(
        p50 > 0 && p50 <= p99 && p99 <= waited_us,
        "{p50} {p99} {waited_us}"
    );
    let _: String = redis::cmd("PGCACHE.STATS")
        .arg("RESET")
        .query(&mut con)
        .unwrap();
    assert_eq!(stats_figure(&mut con, "invalidation_apply_p99_us"), 0);
}

#[test]
fn a_writing_session_cannot_turn_its_own_invalidations_off() {
    let stack = Stack::start_with(
        &format!("{USERS_SQL} {TRIGGER_SQL}"),
        &["invalidation_channel", "app_changes"],
    );
    stack.pg.execute("SELECT pgcache_watch('users')");
    stack
        .pg
        .superuser()
        .batch_execute("ALTER DATABASE app SET pgcache.channel = 'app_changes'")
        .unwrap();
    // A schema whose pg_notify does nothing, for a session to put before pg_catalog.
    stack.pg.execute(
        "CREATE SCHEMA decoy;
         CREATE FUNCTION decoy.pg_notify(text, text) RETURNS void LANGUAGE sql AS 'SELECT NULL';
         CREATE FUNCTION decoy.jsonb_agg(jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';",
    );
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":7}"#);

    // The session's own channel setting and search_path cannot divert its notifications:
    // the database's setting (ALTER DATABASE) is the one that counts.
    stack.pg.execute(
        "SET pgcache.channel = 'nobody_listens';
         SET search_path = decoy, pg_catalog, public;
         UPDATE users SET name = 'seven' WHERE id = 7;",
    );
    wait_gone(&mut con, KEY7);
    assert_eq!(
        json(&read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap())["name"],
        "seven"
    );
}

#[test]
fn composite_and_numeric_keys_and_wide_rows() {
    let stack = Stack::start(&format!(
        "{TRIGGER_SQL}
         CREATE TABLE stock (region text, sku numeric(10,2), qty integer, notes text, PRIMARY KEY (region, sku));
         INSERT INTO stock VALUES ('eu', 1.50, 1, ''), ('us', 2.00, 2, '');
         SELECT pgcache_watch('stock');"
    ));
    let mut con = stack.con();
    read_until_cached(&mut con, "stock", r#"{"region":"eu","sku":1.5}"#);
    let key = r#"pg_cache:stock:{"region":"eu","sku":1.5}"#;
    // A 100 kB row: the original row_to_json trigger would fail this transaction.
    stack
        .pg
        .execute("UPDATE stock SET qty = 10, notes = repeat('x', 100000) WHERE region = 'eu'");
    wait_gone(&mut con, key);
    assert_eq!(
        json(
            &read(&mut con, "stock", r#"{"region":"eu","sku":"1.50"}"#)
                .unwrap()
                .unwrap()
        )["qty"],
        10
    );
}

#[test]
fn bulk_statements_split_into_small_notifications() {
    let stack = watched_users();
    let mut con = stack.con();
    multiread(&mut con, "users", &id_array(1..=200)).unwrap();
    wait_keys_at_least(&mut con, "pg_cache:users:*", 200);
    stack.pg.execute("UPDATE users SET name = upper(name)");
    wait_for(
        "all 200 entries invalidated",
        Duration::from_secs(10),
        || {
            let left: Vec<String> = redis::cmd("KEYS")
                .arg("pg_cache:users:*")
                .query(&mut con)
                .unwrap();
            left.is_empty().then_some(())
        },
    );
}

/// NOTIFY's own payloads: notify mode in both runs.
const NOTIFY_MODE: [&str; 2] = ["invalidation_source", "notify"];

#[test]
fn the_original_payload_shape_is_accepted() {
    // The trigger from the original module's README.
    let stack = Stack::start_with(
        &format!(
            "{USERS_SQL}
         CREATE OR REPLACE FUNCTION notify_cache_invalidation() RETURNS trigger AS $$
         BEGIN
             PERFORM pg_notify('cache_invalidation', json_build_object(
                 'table', TG_TABLE_NAME, 'operation', TG_OP,
                 'old_data', row_to_json(OLD), 'new_data', row_to_json(NEW))::text);
             RETURN COALESCE(NEW, OLD);
         END;
         $$ LANGUAGE plpgsql;
         CREATE TRIGGER users_cache_trigger AFTER INSERT OR UPDATE OR DELETE ON users
             FOR EACH ROW EXECUTE FUNCTION notify_cache_invalidation();"
        ),
        &NOTIFY_MODE,
    );
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":7}"#);
    read_until_cached(&mut con, "users", r#"{"id":3}"#);
    stack.pg.execute("UPDATE users SET name = 'x' WHERE id = 7");
    wait_gone(&mut con, KEY7);
    stack.pg.execute("UPDATE users SET id = 3000 WHERE id = 3");
    wait_gone(&mut con, r#"pg_cache:users:{"id":3}"#);
}

/// `users`, and `tags`: a table without a primary key, which every change flushes.
fn users_and_tags() -> Stack {
    Stack::start(&format!(
        "{USERS_SQL} {TRIGGER_SQL}
         CREATE TABLE tags (tag text, n integer); INSERT INTO tags VALUES ('a', 1), ('b', 2);
         SELECT pgcache_watch('users'); SELECT pgcache_watch('tags');"
    ))
}

#[test]
fn truncate_and_tables_without_keys_flush_the_table() {
    let stack = users_and_tags();
    let mut con = stack.con();
    read_until_cached(&mut con, "tags", r#"{"tag":"a"}"#);
    read_until_cached(&mut con, "users", r#"{"id":1}"#);
    stack.pg.execute("UPDATE tags SET n = 10 WHERE tag = 'b'");
    wait_gone(&mut con, r#"pg_cache:tags:{"tag":"a"}"#);
    stack.pg.execute("TRUNCATE users");
    wait_gone(&mut con, r#"pg_cache:users:{"id":1}"#);
    assert_eq!(read(&mut con, "users", r#"{"id":1}"#).unwrap(), None);
}

#[test]
fn a_table_whose_flush_left_nothing_is_flushed_again_without_a_scan() {
    let stack = users_and_tags();
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":1}"#);
    let count = |con: &mut redis::Connection| -> i64 {
        let result: String = redis::cmd("PGCACHE.QUERY")
            .arg("SELECT count(*) AS n FROM tags")
            .arg(0)
            .query(con)
            .unwrap();
        json(&result)[0]["n"].as_i64().unwrap()
    };
    assert_eq!(count(&mut con), 2);
    // The first flush scans: nothing is known of the table yet.
    stack.pg.execute("INSERT INTO tags VALUES ('c', 3)");
    wait_for("the first flush to end", Duration::from_secs(20), || {
        (stats_figure(&mut con, "flushes") >= 1 && stats_figure(&mut con, "flushes_running") == 0)
            .then_some(())
    });
    assert_eq!(stats_figure(&mut con, "flushes_without_scan"), 0);
    // It left no entry: the next changes have nothing to scan for, and still end the
    // table's query results.
    assert_eq!(count(&mut con), 3);
    stack.pg.execute("INSERT INTO tags VALUES ('d', 4)");
    wait_for("a flush without a scan", Duration::from_secs(20), || {
        (stats_figure(&mut con, "flushes_without_scan") >= 1).then_some(())
    });
    wait_for(
        "the result after the change",
        Duration::from_secs(20),
        || (count(&mut con) == 4).then_some(()),
    );
    // A row of it cached: the next change scans for it again.
    read_until_cached(&mut con, "tags", r#"{"tag":"a"}"#);
    let without_scan = stats_figure(&mut con, "flushes_without_scan");
    stack.pg.execute("UPDATE tags SET n = 10 WHERE tag = 'b'");
    wait_gone(&mut con, r#"pg_cache:tags:{"tag":"a"}"#);
    assert_eq!(stats_figure(&mut con, "flushes_without_scan"), without_scan);
    assert!(
        exists(&mut con, r#"pg_cache:users:{"id":1}"#),
        "other tables keep theirs"
    );
}

#[test]
fn invalidations_replicate_and_reach_every_filled_db() {
    let stack = watched_users();
    let replica = stack.start_replica();
    let mut rcon = replica.connection();
    let mut con = stack.con();
    read_until_cached(&mut con, "users", r#"{"id":7}"#);
    let mut db2 = stack.con();
    let _: () = redis::cmd("SELECT").arg(2).query(&mut db2).unwrap();
    read(&mut db2, "users", r#"{"id":7}"#).unwrap().unwrap();
    wait_for("the fill on the replica", Duration::from_secs(10), || {
        redis::cmd("EXISTS")
            .arg(KEY7)
            .query::<bool>(&mut rcon)
            .unwrap()
            .then_some(())
    });
    stack.pg.execute("UPDATE users SET name = 'x' WHERE id = 7");
    wait_gone(&mut con, KEY7);
    wait_gone(&mut db2, KEY7);
    wait_gone(&mut rcon, KEY7);
}

#[test]
fn after_the_listener_reconnects_nothing_older_is_served() {
    let stack = Stack::start_with(&format!("{USERS_SQL} {TRIGGER_SQL}"), &NOTIFY_MODE);
    stack.pg.execute("SELECT pgcache_watch('users', 'notify')");
    let mut con = stack.con();
    for id in 1..=50 {
        read_until_cached(&mut con, "users", &format!(r#"{{"id":{id}}}"#));
    }
    let first = wait_for("the listener", Duration::from_secs(10), || {
        listener_pid(&stack.pg)
    });
    // Cached: the first listen's resync is over, so the next flush is the reconnect's.
    read_until_cached(&mut con, "users", r#"{"id":7}"#);
    let flushes_before = stats_figure(&mut con, "flushes");
    // Kill the listener's session and change a row at once: its notification may be lost.
    let mut admin = stack.pg.superuser();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&first])
        .unwrap();
    stack
        .pg
        .execute("UPDATE users SET name = 'changed while away' WHERE id = 7");
    // The guarantee starts when the reconnected listener's resync is applied (a whole-cache
    // flush starts); a new backend alone may not have listened yet.
    wait_for("the reconnect's resync", Duration::from_secs(20), || {
        (stats_figure(&mut con, "flushes") > flushes_before).then_some(())
    });
    assert_ne!(
        listener_pid(&stack.pg),
        Some(first),
        "a new listener session"
    );
    assert!(
        stack
            .redis
            .log()
            .contains("invalidations may have been missed while the listener was disconnected"),
        "{}",
        stack.redis.log()
    );
    assert_eq!(
        json(&read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap())["name"],
        "changed while away"
    );
    // The reconnect dropped every entry, without blocking the server.
    wait_keys_at_most(&mut con, "pg_cache:users:*", 1);
}

#[test]
fn after_the_replication_stream_reconnects_only_the_changed_rows_go() {
    let stack = Stack::start_with(
        &format!("{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users', 'replication');"),
        &["invalidation_source", "replication"],
    );
    let mut con = stack.con();
    for id in 1..=50 {
        read_until_cached(&mut con, "users", &format!(r#"{{"id":{id}}}"#));
    }
    let first = wait_for("the walsender", Duration::from_secs(10), || {
        listener_pid(&stack.pg)
    });
    let flushes_before = stats_figure(&mut con, "flushes");
    // Terminate the walsender and change rows at once: the slot keeps the changes.
    let mut admin = stack.pg.superuser();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&first])
        .unwrap();
    stack
        .pg
        .execute("UPDATE users SET name = 'changed while away' WHERE id IN (7, 8)");
    wait_gone(&mut con, KEY7);
    wait_gone(&mut con, r#"pg_cache:users:{"id":8}"#);
    assert_ne!(listener_pid(&stack.pg), Some(first), "a new walsender");
    assert_eq!(
        json(&read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap())["name"],
        "changed while away"
    );
    // Nothing else went: no flush, the other 48 entries are still served from the cache.
    assert_eq!(stats_figure(&mut con, "flushes"), flushes_before);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pg_cache:users:*")
        .query(&mut con)
        .unwrap();
    assert!(keys.len() >= 48, "{} entries left", keys.len());
    assert!(
        !stack.redis.log().contains("may have been missed"),
        "{}",
        stack.redis.log()
    );
}

#[test]
fn flush_drops_a_table_and_serves_nothing_older_meanwhile() {
    let stack = Stack::start(&format!(
        "{USERS_SQL} CREATE TABLE other (id integer PRIMARY KEY); INSERT INTO other VALUES (1);"
    ));
    let mut con = stack.con();
    multiread(&mut con, "users", &id_array(1..=200)).unwrap();
    wait_keys_at_least(&mut con, "pg_cache:users:*", 200);
    read_until_cached(&mut con, "other", r#"{"id":1}"#);
    // No trigger here: the cache is stale until flushed.
    stack.pg.execute("UPDATE users SET name = 'fresh'");
    let ok: String = redis::cmd("PGCACHE.FLUSH")
        .arg("users")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(
        json(&read(&mut con, "users", r#"{"id":150}"#).unwrap().unwrap())["name"],
        "fresh"
    );
    wait_keys_at_most(&mut con, "pg_cache:users:*", 1);
    let other: bool = redis::cmd("EXISTS")
        .arg(r#"pg_cache:other:{"id":1}"#)
        .query(&mut con)
        .unwrap();
    assert!(other, "other tables keep their entries");
    let e = redis::cmd("PGCACHE.FLUSH")
        .arg("nosuch")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn notifications_for_tables_outside_the_allowlist_are_skipped_quietly() {
    let stack = Stack::start_with(
        &format!("{USERS_SQL} CREATE TABLE orders (id int PRIMARY KEY, n int); {TRIGGER_SQL}"),
        &["tables", "users"],
    );
    stack
        .pg
        .execute("SELECT pgcache_watch('users'); SELECT pgcache_watch('orders');");
    let mut con = stack.con();
    wait_for("the listener", Duration::from_secs(10), || {
        listener_pid(&stack.pg)
    });
    read_until_cached(&mut con, "users", r#"{"id":7}"#);
    stack.pg.execute("INSERT INTO orders VALUES (1, 1)");
    // Notifications are handled in commit order: once this one is applied, so was the other.
    stack.pg.execute("UPDATE users SET name = 'x' WHERE id = 7");
    wait_gone(&mut con, KEY7);
    let log = stack.redis.log();
    assert!(
        !log.contains("ignoring invalidation notification"),
        "no warning for a table pgcache does not cache:\n{log}"
    );
}

#[test]
fn a_bulk_update_flushes_the_table_in_slices_and_counts_every_key() {
    const ROWS: i64 = 20_000;
    let stack = Stack::start(&format!(
        "{TRIGGER_SQL}
         CREATE TABLE bulk (id integer PRIMARY KEY, v text);
         INSERT INTO bulk SELECT g, 'v' FROM generate_series(1, {ROWS}) g;
         SELECT pgcache_watch('bulk');
         CREATE TABLE other (id integer PRIMARY KEY);
         INSERT INTO other VALUES (1);"
    ));
    let mut con = stack.con();
    multiread(&mut con, "bulk", &id_array(1..=500)).unwrap();
    wait_keys_at_least(&mut con, "pg_cache:bulk:*", 500);
    read_until_cached(&mut con, "other", r#"{"id":1}"#);
    let flushes = stats_figure(&mut con, "flushes");

    stack.pg.execute("UPDATE bulk SET v = 'w'");
    wait_keys_at_most(&mut con, "pg_cache:bulk:*", 0);
    wait_for("every key counted", Duration::from_secs(20), || {
        (stats_figure(&mut con, "invalidations_by_postgres") == ROWS).then_some(())
    });
    assert!(
        stats_figure(&mut con, "flushes") > flushes,
        "a flush, not 20,000 deletions"
    );
    assert!(
        exists(&mut con, r#"pg_cache:other:{"id":1}"#),
        "other tables keep theirs"
    );
    let row = read(&mut con, "bulk", r#"{"id":7}"#).unwrap().unwrap();
    assert_eq!(json(&row)["v"], "w");
}

fn notify(stack: &Stack, payload: &str) {
    let mut client = stack.pg.client();
    client
        .execute("SELECT pg_notify('cache_invalidation', $1)", &[&payload])
        .unwrap();
}

#[test]
fn an_unreadable_key_flushes_its_table_and_the_other_keys_still_go() {
    let stack = Stack::start_with(
        &format!(
            "{USERS_SQL} CREATE TABLE other (id integer PRIMARY KEY); INSERT INTO other VALUES (1);"
        ),
        &NOTIFY_MODE,
    );
    let mut con = stack.con();
    for id in [1, 2, 3] {
        read_until_cached(&mut con, "users", &format!(r#"{{"id":{id}}}"#));
    }
    read_until_cached(&mut con, "other", r#"{"id":1}"#);
    notify(
        &stack,
        r#"{"table":"public.users","keys":[{"id":1},{"id":"secret-row-data"}]}"#,
    );
    wait_keys_at_most(&mut con, "pg_cache:users:*", 0);
    assert!(exists(&mut con, r#"pg_cache:other:{"id":1}"#));

    // A payload that cannot be read at all: nothing cached can be trusted.
    read_until_cached(&mut con, "users", r#"{"id":2}"#);
    notify(&stack, "not json, with secret-row-data");
    wait_keys_at_most(&mut con, "pg_cache:*", 0);
    assert!(
        !stack.redis.log().contains("secret-row-data"),
        "row data in the log"
    );
}

#[test]
fn unloading_right_after_a_burst_of_changes_and_hook_deliveries_keeps_the_server_up() {
    let mut stack = watched_users();
    let mut con = stack.con();
    for round in 0..5 {
        // Every invalidation is also an XADD, and entries with a 1 s TTL expire during
        // later rounds: deliveries deferred out of Redis's keyspace notifications.
        let _: String = redis::cmd("PGCACHE.HOOK")
            .arg(&["ADD", "audit", "ON", "invalidate,expire", "XADD", "audit"])
            .query(&mut con)
            .unwrap();
        multiread(&mut con, "users", &id_array(1..=100)).unwrap();
        let _: Vec<Option<String>> = redis::cmd("PGCACHE.MULTIREAD")
            .arg("users")
            .arg(id_array(101..=150))
            .arg(1)
            .query(&mut con)
            .unwrap();
        let mut pg = stack.pg.client();
        for id in 1..=100 {
            pg.execute(
                "UPDATE users SET name = $1 WHERE id = $2",
                &[&format!("r{round}"), &id],
            )
            .unwrap();
        }
        if round == 0 {
            // Once, the hook's deliveries are awaited (the other rounds unload right away,
            // whatever is still in flight): the hook works between the unloads.
            wait_for("a delivery", Duration::from_secs(10), || {
                let delivered: usize = redis::cmd("XLEN").arg("audit").query(&mut con).unwrap();
                (delivered > 0).then_some(())
            });
        }
        unload(&mut con);
        // Notifications the unloaded module never applied must not bring the server down.
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        assert!(stack.redis.alive());
        let mut load = redis::cmd("MODULE");
        load.arg("LOAD").arg(module_path().to_str().unwrap());
        for a in stack.pg.module_args() {
            load.arg(a);
        }
        let _: String = load.query(&mut con).unwrap();
    }
    let row = read(&mut con, "users", r#"{"id":1}"#).unwrap().unwrap();
    assert_eq!(json(&row)["name"], "r4");
    assert!(stack.redis.alive());
}

#[test]
fn keys_of_types_postgresql_spells_are_invalidated_whatever_the_client_wrote() {
    let stack = Stack::start(TRIGGER_SQL);
    let citext = stack
        .pg
        .client()
        .batch_execute("CREATE EXTENSION IF NOT EXISTS citext")
        .is_ok();
    // (table, key column type, value inserted, the client's spelling of the key)
    let mut cases = vec![
        (
            "k_ts",
            "timestamp",
            "2024-01-02 03:04:05",
            "2024-01-02 03:04:05.000",
        ),
        (
            "k_tstz",
            "timestamptz",
            "2024-01-02 03:04:05+00",
            "2024-01-02 05:04:05+02",
        ),
        ("k_date", "date", "2024-01-02", "20240102"),
        ("k_char", "char(4)", "ab", "ab"),
        (
            "k_uuid",
            "uuid",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        ),
    ];
    if citext {
        cases.push(("k_citext", "citext", "MiXed", "mixed"));
    }
    for (table, ty, value, _) in &cases {
        stack.pg.execute(&format!(
            "CREATE TABLE {table} (k {ty} PRIMARY KEY, v text);
             INSERT INTO {table} VALUES ('{value}', 'old');
             SELECT pgcache_watch('{table}');"
        ));
    }
    let mut con = stack.con();
    for (table, _, _, spelling) in &cases {
        let pk = format!(r#"{{"k":"{spelling}"}}"#);
        let row = read(&mut con, table, &pk).unwrap().expect(table);
        assert_eq!(json(&row)["v"], "old", "{table}");
        let pattern = format!("pg_cache:{table}:*");
        wait_for(&format!("{table} cached"), Duration::from_secs(10), || {
            read(&mut con, table, &pk).unwrap();
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
            (keys.len() == 1).then_some(())
        });
        // The writer's session has another time zone than pgcache's: the trigger's
        // rendering of a timestamptz differs, the instant does not.
        stack.pg.execute(&format!(
            "SET TimeZone = 'Asia/Tokyo'; UPDATE {table} SET v = 'new'"
        ));
        wait_keys_at_most(&mut con, &pattern, 0);
        let row = read(&mut con, table, &pk).unwrap().unwrap();
        assert_eq!(json(&row)["v"], "new", "{table}");
        // PGCACHE.INVALIDATE with the client's spelling reaches the same entry.
        wait_for(
            &format!("{table} cached again"),
            Duration::from_secs(10),
            || {
                read(&mut con, table, &pk).unwrap();
                let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
                (keys.len() == 1).then_some(())
            },
        );
        invalidate(&mut con, table, &pk).unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
        assert!(keys.is_empty(), "{table}: INVALIDATE missed {keys:?}");
    }
}

/// pgcache behind a proxy that can go silent, with the users table watched.
fn watched_users_behind(extra: &[&str]) -> (Pg, SilentProxy, Redis) {
    let pg = Pg::start();
    pg.execute(&format!("{USERS_SQL} {TRIGGER_SQL}"));
    pg.execute("SELECT pgcache_watch('users')");
    let proxy = SilentProxy::start(pg.port);
    let args = proxy.module_args(&pg, extra);
    let redis = Redis::start(&args);
    (pg, proxy, redis)
}

fn health(con: &mut redis::Connection) -> std::collections::HashMap<String, redis::Value> {
    map_reply(con, "PGCACHE.HEALTH")
}

#[test]
fn a_listener_whose_network_goes_silent_reconnects_and_misses_no_change() {
    let (pg, proxy, redis) = watched_users_behind(&[]);
    let mut con = redis.connection();
    wait_for("the listener", Duration::from_secs(10), || {
        (stats_figure(&mut con, "listener_connected") == 1).then_some(())
    });
    read_until_cached(&mut con, "users", r#"{"id":7}"#);
    assert!(
        redis::cmd("EXISTS")
            .arg(KEY7)
            .query::<bool>(&mut con)
            .unwrap(),
        "cached before the network goes silent"
    );

    // Only the listener's connection goes silent: the pool's keep answering, so fills keep
    // coming while nobody would hear of the change below.
    assert_eq!(proxy.silence(Silence::ListenerOnly), 1);
    pg.execute("UPDATE users SET name = 'changed in the silence' WHERE id = 7");
    assert!(read(&mut con, "users", r#"{"id":8}"#).unwrap().is_some());

    // Noticed within seconds (not the kernel's 15 minutes): the listener reconnects through
    // the network that works again, resynchronises, and the change is never served stale.
    wait_for("the changed row", Duration::from_secs(20), || {
        let row = read(&mut con, "users", r#"{"id":7}"#).unwrap().unwrap();
        (json(&row)["name"] == "changed in the silence").then_some(())
    });
    // (Reads answer it from PostgreSQL within max_staleness_ms already, before the
    // listener notices: the feed stopped vouching for the cache.)
    wait_for("the listener to reconnect", Duration::from_secs(20), || {
        (stats_figure(&mut con, "listener_reconnects") == 1
            && stats_figure(&mut con, "listener_connected") == 1)
            .then_some(())
    });
    assert!(stats_figure(&mut con, "pg_silent_connections") >= 1);
    let report = health(&mut con);
    let loss: String = redis::from_redis_value(report["listener_last_loss"].clone()).unwrap();
    assert!(loss.contains("did not answer"), "{loss}");
    let info: String = redis::cmd("INFO").arg("pgcache").query(&mut con).unwrap();
    assert!(info.contains("pg_silent_connections:"), "{info}");
    assert!(redis.log().contains("did not answer"));

    // And invalidation works on the new connection.
    read_until_cached(&mut con, "users", r#"{"id":7}"#);
    pg.execute("UPDATE users SET name = 'after' WHERE id = 7");
    wait_gone(&mut con, KEY7);
}
