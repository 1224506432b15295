//! PGCACHE.QUERY: SELECT results cached and dropped when a table they read changes.
use pgcache_testkit::*;
use std::time::{Duration, Instant};

pub(crate) const ORDERS_SQL: &str = "
    CREATE TABLE orders (id integer PRIMARY KEY, user_id integer NOT NULL, total numeric NOT NULL,
                         placed timestamptz NOT NULL DEFAULT '2024-05-01T10:00:00Z');
    INSERT INTO orders SELECT g, 1 + g % 5, g * 1.10, '2024-05-01T10:00:00Z'::timestamptz + g * interval '1 hour'
      FROM generate_series(1, 50) g;
";

pub(crate) fn watched() -> Stack {
    let stack = Stack::start(&format!("{USERS_SQL} {ORDERS_SQL} {TRIGGER_SQL}"));
    stack.pg.execute("SELECT pgcache_watch('users')");
    stack.pg.execute("SELECT pgcache_watch('orders')");
    stack
}

pub(crate) fn query(
    con: &mut redis::Connection,
    sql: &str,
    params: &[&str],
) -> redis::RedisResult<String> {
    redis::cmd("PGCACHE.QUERY")
        .arg(sql)
        .arg(params.len())
        .arg(params)
        .query(con)
}

/// QUERY of `sql` AFTER `lsn` (replication mode): answered once the cache applied the
/// changes up to it.
pub(crate) fn query_after(
    con: &mut redis::Connection,
    sql: &str,
    params: &[&str],
    lsn: &str,
) -> redis::RedisResult<String> {
    redis::cmd("PGCACHE.QUERY")
        .arg(sql)
        .arg(params.len())
        .arg(params)
        .arg("AFTER")
        .arg(lsn)
        .query(con)
}

/// `query_after`, and whether the cache answered it (`query_hits` moved).
pub(crate) fn read_after(
    con: &mut redis::Connection,
    sql: &str,
    params: &[&str],
    lsn: &str,
) -> (bool, String) {
    let hits = stats_figure(con, "query_hits");
    let answer = query_after(con, sql, params, lsn).unwrap();
    (stats_figure(con, "query_hits") > hits, answer)
}

/// PostgreSQL's own answer to `sql`, its parameters given as text (read by their types'
/// input, as pgcache passes them), as JSON.
pub(crate) fn postgres_answer(stack: &Stack, sql: &str, params: &[&str]) -> serde_json::Value {
    answer_of(stack.pg.client(), sql, params)
}

/// `postgres_answer` from the database `pg` is connected to: the statement run as written
/// (`oracle`: no SQL around it, so nothing of pgcache's own SQL is shared with the check).
pub(crate) fn answer_of(mut pg: postgres::Client, sql: &str, params: &[&str]) -> serde_json::Value {
    let answer = oracle::answer(&mut pg, sql, params)
        .unwrap_or_else(|e| panic!("PostgreSQL refused {sql}: {e}"));
    json(&answer.json)
}

/// Asserts that pgcache's `reply` to `sql` is PostgreSQL's own answer: the same rows, each
/// with the statement's columns in its order.
pub(crate) fn assert_answers_as_postgres(stack: &Stack, sql: &str, params: &[&str], reply: &str) {
    let answer = oracle::answer(&mut stack.pg.client(), sql, params)
        .unwrap_or_else(|e| panic!("PostgreSQL refused {sql}: {e}"));
    assert_eq!(
        json(reply),
        json(&answer.json),
        "{sql} {params:?}: pgcache answered {reply}, PostgreSQL {}",
        answer.json
    );
    for keys in oracle::keys_in_order(reply).unwrap() {
        assert_eq!(keys, answer.columns, "{sql}: the columns' order in {reply}");
    }
}

/// Queries until the answer comes from the cache (a start's first reads are answered but
/// not cached until the change feed listens), and returns it.
pub(crate) fn query_until_cached(
    con: &mut redis::Connection,
    sql: &str,
    params: &[&str],
) -> String {
    wait_for(
        &format!("{sql} to be cached"),
        Duration::from_secs(10),
        || {
            let hits = stats_figure(con, "query_hits");
            let answer = query(con, sql, params).unwrap();
            (stats_figure(con, "query_hits") > hits).then_some(answer)
        },
    )
}

#[test]
fn a_result_is_a_json_array_of_rows_typed_like_read_and_cached() {
    let stack = watched();
    let mut con = stack.con();
    let sql = "SELECT id, total, placed FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT 3";
    let answer = query_until_cached(&mut con, sql, &["2"]);
    assert_eq!(json(&answer), postgres_answer(&stack, sql, &["2"]));
    let rows = json(&answer);
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(rows[0]["id"], 46);
    assert!(
        rows[0]["total"].is_number(),
        "numeric stays a number: {answer}"
    );
    assert_eq!(
        rows[0]["total"].to_string(),
        "50.60",
        "numeric keeps its digits"
    );
    assert!(
        answer.starts_with(r#"[{"id":46,"total":50.60,"placed":"#),
        "column order: {answer}"
    );

    // Other spellings of the statement and of its parameter share the entry.
    let hits = stats_figure(&mut con, "query_hits");
    let spelled = "select ID, TOTAL, placed\n from ORDERS /* mine */ where user_id = ? order by id desc limit 3";
    assert_eq!(query(&mut con, spelled, &["0002"]).unwrap(), answer);
    assert_eq!(query(&mut con, sql, &["+2"]).unwrap(), answer);
    assert_eq!(stats_figure(&mut con, "query_hits"), hits + 2);

    // No rows: an empty array.
    assert_eq!(query_until_cached(&mut con, sql, &["999"]), "[]");
}

/// PGCACHE.QUERY ... WITHKEY: the result and the key that holds it (or nil), with the
/// generation keys in it.
fn query_with_key(
    con: &mut redis::Connection,
    sql: &str,
    params: &[&str],
) -> (String, Option<String>) {
    let (answer, key, generations): (String, Option<String>, Vec<String>) =
        redis::cmd("PGCACHE.QUERY")
            .arg(sql)
            .arg(params.len())
            .arg(params)
            .arg("WITHKEY")
            .query(con)
            .unwrap();
    match &key {
        // Row-precise in replication mode, per table in notify mode.
        Some(_) => assert!(
            generations == ["pg_cache:orders:~rgen"] || generations == ["pg_cache:orders:~gen"],
            "{sql}: {generations:?}"
        ),
        None => assert!(generations.is_empty()),
    }
    (answer, key)
}

#[test]
fn withkey_names_the_key_that_holds_the_result_and_nil_where_none_does() {
    let stack = watched();
    let mut con = stack.con();
    let sql = "SELECT id, total FROM orders WHERE user_id = $1 ORDER BY id";
    let expected = postgres_answer(&stack, sql, &["3"]);
    // Held once the cache serves the result: a hit names its key, which GET reads.
    let (answer, key) = wait_for("a hit", Duration::from_secs(10), || {
        match query_with_key(&mut con, sql, &["3"]) {
            (answer, Some(key)) => Some((answer, key)),
            (answer, None) => {
                assert_eq!(json(&answer), expected);
                None
            }
        }
    });
    assert_eq!(json(&answer), expected);
    assert!(key.starts_with("pg_cache:~q:{"), "{key}");
    let held: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(held, answer);
    // A miss whose fill caches the result names the key it wrote.
    let (answer, key) = query_with_key(&mut con, sql, &["4"]);
    assert_eq!(json(&answer), postgres_answer(&stack, sql, &["4"]));
    let held: String = redis::cmd("GET").arg(key.unwrap()).query(&mut con).unwrap();
    assert_eq!(held, answer);
    // A result too big to cache: no key holds it.
    config_set(&mut con, "pgcache.query_max_rows", "1").unwrap();
    let (answer, key) = query_with_key(&mut con, sql, &["5"]);
    assert_eq!(json(&answer), postgres_answer(&stack, sql, &["5"]));
    assert_eq!(key, None);
    // A parameter that spells the option is a parameter: the plain reply.
    let by_orders = "SELECT id FROM orders WHERE user_id::text = $1";
    assert_eq!(query(&mut con, by_orders, &["WITHKEY"]).unwrap(), "[]");
    assert_eq!(query_with_key(&mut con, by_orders, &["WITHKEY"]).0, "[]");
}

#[test]
fn a_generation_whose_key_is_gone_is_still_signalled_when_it_ends() {
    let stack = watched();
    let mut con = stack.con();
    // No WHERE: per table, under the table's generation key.
    query_until_cached(&mut con, "SELECT count(*) AS n FROM orders", &[]);
    // A client following the table's generation keys (RESP2: its invalidations go to a
    // subscriber), as a client keeping results itself does.
    let mut sub = stack.con();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut sub).unwrap();
    let mut pubsub = subscribe(&mut sub, "__redis__:invalidate");
    let mut tracking = stack.con();
    redis::cmd("CLIENT")
        .arg(&["TRACKING", "ON", "REDIRECT"])
        .arg(id)
        .arg(&["BCAST", "PREFIX", "pg_cache:orders:~"])
        .query::<()>(&mut tracking)
        .unwrap();
    // The key goes (evicted, say) while hits still use the generation it held.
    let _: i64 = redis::cmd("DEL")
        .arg("pg_cache:orders:~gen")
        .query(&mut con)
        .unwrap();
    let keys: Vec<String> = next_message(&mut pubsub).get_payload().unwrap();
    assert_eq!(keys, ["pg_cache:orders:~gen"]);
    // A change ends the generation: no key to delete, and the end is signalled all the same.
    stack
        .pg
        .execute("UPDATE orders SET total = total + 1 WHERE id = 1");
    let keys: Vec<String> = next_message(&mut pubsub).get_payload().unwrap();
    assert!(keys.iter().any(|k| k == "pg_cache:orders:~gen"), "{keys:?}");
}

#[test]
fn a_committed_change_drops_the_results_of_the_tables_it_changed_and_keeps_the_rest() {
    let stack = watched();
    let mut con = stack.con();
    let by_user = "SELECT id, total FROM orders WHERE user_id = $1 ORDER BY id";
    let counted =
        "SELECT count(*) AS n FROM orders o JOIN users u ON u.id = o.user_id WHERE u.name = $1";
    let user = "SELECT name FROM users WHERE id = $1";
    let before = query_until_cached(&mut con, by_user, &["3"]);
    query_until_cached(&mut con, counted, &["user3"]);
    query_until_cached(&mut con, user, &["4"]);

    stack
        .pg
        .execute("INSERT INTO orders (id, user_id, total) VALUES (1000, 3, 9.99)");
    // Served again only once the change is applied, and then never the old answer.
    let after = wait_for(
        "the new order in the result",
        Duration::from_secs(10),
        || {
            let answer = query(&mut con, by_user, &["3"]).unwrap();
            (answer != before).then_some(answer)
        },
    );
    assert_eq!(json(&after), postgres_answer(&stack, by_user, &["3"]));
    assert_eq!(
        json(&query(&mut con, counted, &["user3"]).unwrap()),
        postgres_answer(&stack, counted, &["user3"])
    );
    // The users result read no orders: still a hit.
    let hits = stats_figure(&mut con, "query_hits");
    query(&mut con, user, &["4"]).unwrap();
    assert_eq!(stats_figure(&mut con, "query_hits"), hits + 1);

    // TRUNCATE drops every result over the table.
    let cached = query_until_cached(&mut con, by_user, &["3"]);
    stack.pg.execute("TRUNCATE orders");
    wait_for("the truncated result", Duration::from_secs(10), || {
        (query(&mut con, by_user, &["3"]).unwrap() != cached).then_some(())
    });
    assert_eq!(query(&mut con, by_user, &["3"]).unwrap(), "[]");
}

#[test]
fn statements_that_cannot_be_cached_are_refused_with_the_reason() {
    let stack = watched();
    stack.pg.log_app_statements();
    let mut con = stack.con();
    for (sql, reason) in [
        ("UPDATE users SET name = 'x'", "SELECT statements only"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT * INTO copy FROM users", "SELECT INTO"),
        ("SELECT * FROM users FOR UPDATE", "FOR UPDATE"),
        (
            "WITH gone AS (DELETE FROM users RETURNING *) SELECT * FROM gone",
            "data-modifying",
        ),
        (
            "SELECT * FROM users WHERE id < now()::text::int",
            "now() is STABLE",
        ),
        ("SELECT random() FROM users", "random() is VOLATILE"),
        ("SELECT nextval('s')", "does not exist"),
        ("SELECT current_user", "STABLE"),
        ("SELECT * FROM pg_class", "system catalogs"),
        ("SELECT * FROM information_schema.tables", "system catalogs"),
        ("SELEC * FROM users", "does not parse"),
        ("SELECT * FROM userz", "does not exist"),
    ] {
        let e = query(&mut con, sql, &[]).unwrap_err().to_string();
        assert!(e.contains(reason), "{sql}: {e}");
    }
    // Nothing ran: PostgreSQL saw no statement of the users' and no row changed.
    assert_eq!(stack.pg.logged_statements("DELETE FROM users"), 0);
    let count: i64 = stack
        .pg
        .client()
        .query_one("SELECT count(*) FROM users", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 200);
    assert_eq!(cache_entries(&mut con), 0, "nothing cached");
}

#[test]
fn bad_calls_get_clear_errors() {
    let stack = watched();
    let mut con = stack.con();
    let sql = "SELECT name FROM users WHERE id = $1";
    let e = |r: redis::RedisResult<String>| r.unwrap_err().to_string();
    assert!(e(query(&mut con, sql, &[])).contains("takes 1 parameters"));
    let wrong_count: redis::RedisResult<String> = redis::cmd("PGCACHE.QUERY")
        .arg(sql)
        .arg(3)
        .arg("1")
        .query(&mut con);
    assert!(e(wrong_count).contains("nparams is 3"));
    // Learned now; the parameter is checked against its type before PostgreSQL sees it.
    query(&mut con, sql, &["1"]).unwrap();
    assert!(e(query(&mut con, sql, &["abc"])).contains("parameter $1 (integer)"));
    // A ? inside a literal or comment is no placeholder.
    let answer = query(
        &mut con,
        "SELECT name, '?' AS mark FROM users WHERE id = ? -- is it ?",
        &["5"],
    )
    .unwrap();
    assert_eq!(
        json(&answer),
        serde_json::json!([{"name": "user5", "mark": "?"}])
    );
    let options: redis::RedisResult<String> = redis::cmd("PGCACHE.QUERY")
        .arg(sql)
        .arg(1)
        .arg("1")
        .arg("TTL")
        .arg("60")
        .arg("60")
        .query(&mut con);
    assert!(e(options).contains("is nparams right?"));
    // A 1 MB statement is answered with an error, and the server stays up.
    let huge = format!("SELECT 1 /* {} */", "x".repeat(1 << 20));
    assert!(e(query(&mut con, &huge, &[])).contains("takes statements of up to 65536 bytes"));
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn results_over_the_limits_are_answered_but_not_cached() {
    let stack = watched();
    let mut con = stack.con();
    config_set(&mut con, "pgcache.query_max_rows", "2").unwrap();
    let sql = "SELECT id FROM orders WHERE user_id = $1";
    let before = stats_figure(&mut con, "query_results_too_big");
    wait_for("a result too big", Duration::from_secs(10), || {
        let answer = query(&mut con, sql, &["1"]).unwrap();
        assert_eq!(json(&answer).as_array().unwrap().len(), 10);
        (stats_figure(&mut con, "query_results_too_big") > before).then_some(())
    });
    let hits = stats_figure(&mut con, "query_hits");
    query(&mut con, sql, &["1"]).unwrap();
    assert_eq!(stats_figure(&mut con, "query_hits"), hits);
}

#[test]
fn a_user_reads_through_query_only_the_tables_read_would_let_it() {
    let stack = watched();
    let mut admin = stack.con();
    add_acl_user(&mut admin, "orders_only", &["~pg_cache:orders:*", "+@all"]);
    let mut con = connect_as(stack.redis.port, "orders_only", "pw");
    query(&mut con, "SELECT count(*) FROM orders", &[]).unwrap();
    let e = query(
        &mut con,
        "SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("pg_cache:users:"), "{e}");
}

#[test]
fn the_statement_table_stays_bounded() {
    let stack = watched();
    let mut con = stack.con();
    config_set(&mut con, "pgcache.query_max_statements", "10").unwrap();
    for n in 0..40 {
        query(
            &mut con,
            &format!("SELECT {n} AS n FROM users WHERE id = $1"),
            &["1"],
        )
        .unwrap();
    }
    assert!(stats_figure(&mut con, "query_statements_evicted") >= 30);
}

/// Commits `sql` and returns the position a client would carry for AFTER.
pub(crate) fn commit_and_position(stack: &Stack, sql: &str) -> String {
    let mut pg = stack.pg.client();
    pg.batch_execute(sql).unwrap();
    pg.query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0)
}

#[test]
fn after_its_own_write_a_client_never_gets_the_old_result() {
    let stack = watched();
    let mut con = stack.con();
    let sql = "SELECT id, total FROM orders WHERE user_id = $1 ORDER BY id";
    query_until_cached(&mut con, sql, &["4"]);
    for n in 1..=30 {
        let lsn = commit_and_position(
            &stack,
            &format!("UPDATE orders SET total = {n} WHERE id = 3"),
        );
        let answer = query_after(&mut con, sql, &["4"], &lsn).unwrap();
        assert_eq!(
            json(&answer)[0],
            serde_json::json!({"id": 3, "total": n}),
            "write {n}"
        );
    }
}

#[test]
fn a_replica_serves_its_primary_s_results_and_drops_them_with_it() {
    let stack = watched();
    let replica = stack.start_replica();
    let (mut primary, mut con) = (stack.con(), replica.connection());
    let sql = "SELECT name FROM users WHERE id = $1";
    query_until_cached(&mut primary, sql, &["9"]);
    let answer = query_until_cached(&mut con, sql, &["9"]);
    assert_eq!(json(&answer), serde_json::json!([{"name": "user9"}]));

    stack
        .pg
        .execute("UPDATE users SET name = 'nine' WHERE id = 9");
    wait_for("the replica's new answer", Duration::from_secs(10), || {
        (query(&mut con, sql, &["9"]).unwrap() == r#"[{"name":"nine"}]"#).then_some(())
    });
}

#[test]
fn slowlog_and_statistics_see_query_calls() {
    let stack = watched();
    let mut con = stack.con();
    config_set(&mut con, "pgcache.slowlog_threshold_us", "0").unwrap();
    let _: () = redis::cmd("PGCACHE.SLOWLOG")
        .arg("RESET")
        .query(&mut con)
        .unwrap();
    query(&mut con, "select name from USERS where id = ?", &["3"]).unwrap();
    let entries: Vec<Vec<redis::Value>> = redis::cmd("PGCACHE.SLOWLOG")
        .arg("GET")
        .arg(10)
        .query(&mut con)
        .unwrap();
    let text = |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).unwrap();
    let entry = entries
        .iter()
        .find(|e| text(&e[3]) == "query")
        .expect("a slowlog entry for the QUERY miss");
    assert_eq!(text(&entry[4]), "(query)");
    assert_eq!(text(&entry[5]), "SELECT name FROM users WHERE id = $1");
    assert_eq!(redis::from_redis_value::<i64>(entry[6].clone()).unwrap(), 1);
    assert!(stats_figure(&mut con, "query_misses") >= 1);
}

/// Statements of the model test over users and orders, with a parameter maker each.
pub(crate) const MODEL_STATEMENTS: &[&str] = &[
    "SELECT id, name FROM users WHERE name = $1 ORDER BY id",
    "SELECT id, total FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT 3",
    "SELECT count(*) AS n, sum(total) AS s FROM orders WHERE user_id IN ($1, $2)",
    "SELECT u.name, o.id FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1 ORDER BY o.id",
    "SELECT email FROM users WHERE id = ?",
    "SELECT user_id, count(*) AS n FROM orders GROUP BY user_id HAVING count(*) > $1 ORDER BY user_id",
    "SELECT id FROM orders WHERE memo = $1 AND user_id IN ($2, 3) ORDER BY id",
    "SELECT count(*) AS n, sum(v) AS s FROM meas WHERE region = $1",
    "SELECT id, region, v FROM meas WHERE id = $1 ORDER BY region",
    "SELECT count(*) AS n FROM chosen WHERE id <= $1",
    // Row precision beyond equality: ranges, patterns, NULLs, OR, NOT, arrays.
    "SELECT id, total FROM orders WHERE total BETWEEN $1 AND $2 ORDER BY id",
    "SELECT id FROM orders WHERE memo LIKE $1 OR memo IS NULL ORDER BY id LIMIT 5",
    "SELECT id, email FROM users WHERE email IS NULL OR NOT (id > $1) ORDER BY id",
    "SELECT id FROM orders WHERE user_id = ANY($1) AND total >= $2 ORDER BY id",
    "SELECT id FROM users WHERE UPPER(name) LIKE UPPER($1) AND id < 50 ORDER BY id",
    // Joins: three tables by foreign keys, a left join with aggregates, a condition on the
    // referenced side, a table joined to itself.
    "SELECT o.id, u.name, p.name AS product FROM orders o JOIN users u ON u.id = o.user_id \
     JOIN products p ON p.id = o.product_id WHERE o.user_id = $1 ORDER BY o.id",
    "SELECT p.name, count(o.id) AS n FROM products p LEFT JOIN orders o \
     ON o.product_id = p.id AND o.total > $1 WHERE p.price < $2 GROUP BY p.name ORDER BY p.name",
    "SELECT o.id, p.price FROM orders o JOIN products p ON p.id = o.product_id \
     WHERE p.price BETWEEN $1 AND $2 ORDER BY o.id LIMIT 5",
    "SELECT a.id, b.id AS other FROM orders a JOIN orders b ON b.user_id = a.user_id \
     AND b.id <> a.id WHERE a.id = $1 ORDER BY b.id",
    // A subquery's table, bound by its WHERE.
    "SELECT o.id FROM orders o WHERE o.product_id IN \
     (SELECT id FROM products WHERE price < $1) ORDER BY o.id",
    // A correlated one, asked of the rows the rest of the WHERE admits.
    "SELECT u.id FROM users u WHERE u.id <= $1 AND EXISTS \
     (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.total > 500) ORDER BY u.id",
    // A set operation, a side per branch.
    "SELECT id FROM orders WHERE user_id = $1 UNION ALL \
     SELECT id FROM products WHERE price < $2 ORDER BY id",
];

/// The model's partitioned table (a partition attached and detached as it runs) and view
/// (replaced as it runs).
pub(crate) const MODEL_SQL: &str = "
    CREATE TABLE meas (id integer NOT NULL, region text NOT NULL, v integer NOT NULL,
                       PRIMARY KEY (id, region)) PARTITION BY LIST (region);
    CREATE TABLE meas_eu PARTITION OF meas FOR VALUES IN ('eu');
    CREATE TABLE meas_us PARTITION OF meas FOR VALUES IN ('us');
    CREATE TABLE meas_asia (LIKE meas INCLUDING ALL, CHECK (region = 'asia'));
    INSERT INTO meas SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 12) g;
    INSERT INTO meas_asia SELECT g, 'asia', g * 100 FROM generate_series(1, 6) g;
    CREATE VIEW chosen AS SELECT id FROM users WHERE id % 2 = 0;
    SELECT pgcache_watch('meas');
    ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id);
    CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price integer NOT NULL);
    INSERT INTO products SELECT g, 'p' || g, g * 10 FROM generate_series(1, 8) g;
    ALTER TABLE orders ADD COLUMN product_id integer REFERENCES products (id);
    UPDATE orders SET product_id = 1 + id % 8;
    SELECT pgcache_watch('products');
";

pub(crate) fn model_params(rng: &mut Rng, statement: usize) -> Vec<String> {
    let small = |rng: &mut Rng| (1 + rng.below(6)).to_string();
    match statement {
        0 => vec![format!("user{}", 1 + rng.below(6))],
        2 => vec![small(rng), small(rng)],
        5 => vec![rng.below(12).to_string()],
        6 => vec![["a", "b"][rng.below(2)].to_string(), small(rng)],
        7 => vec![["eu", "us", "asia"][rng.below(3)].to_string()],
        9 => vec![(1 + rng.below(12)).to_string()],
        10 => {
            let low = rng.below(1000);
            vec![low.to_string(), (low + rng.below(300)).to_string()]
        }
        11 => vec![["a%", "b%", "%", "_"][rng.below(4)].to_string()],
        13 => vec![
            format!("{{{},{}}}", small(rng), small(rng)),
            rng.below(1000).to_string(),
        ],
        14 => vec![["%R1%", "user2", "%3", "U%"][rng.below(4)].to_string()],
        16 => vec![rng.below(1000).to_string(), rng.below(100).to_string()],
        17 => {
            let low = rng.below(100);
            vec![low.to_string(), (low + rng.below(50)).to_string()]
        }
        18 => vec![(1 + rng.below(60)).to_string()],
        19 => vec![rng.below(100).to_string()],
        21 => vec![small(rng), rng.below(100).to_string()],
        _ => vec![small(rng)],
    }
}

pub(crate) fn model_write(rng: &mut Rng, attached: &mut bool) -> String {
    let (a, b, c) = (1 + rng.below(6), 1 + rng.below(60), rng.below(1000));
    let region = ["eu", "us"][rng.below(2)];
    match rng.below(22) {
        16 => format!(
            "UPDATE products SET price = {} WHERE id = {}",
            c % 100,
            1 + a % 8
        ),
        17 => format!(
            "UPDATE orders SET product_id = {} WHERE id = {b}",
            1 + rng.below(8)
        ),
        18 => format!(
            "INSERT INTO products VALUES ({}, 'new', {}) ON CONFLICT (id) DO UPDATE SET name = 'renamed'",
            9 + rng.below(4),
            c % 100
        ),
        19 => format!("UPDATE products SET name = 'p{c}' WHERE id = {a}"),
        10 => format!("UPDATE meas SET v = {c} WHERE id = {a}"),
        // A row moving to the other partition.
        11 => format!(
            "UPDATE meas SET region = CASE region WHEN 'eu' THEN 'us' ELSE 'eu' END \
             WHERE id = {a} AND region <> 'asia' AND NOT EXISTS (SELECT 1 FROM meas m \
             WHERE m.id = {a} AND m.region = CASE meas.region WHEN 'eu' THEN 'us' ELSE 'eu' END)"
        ),
        12 => format!(
            "INSERT INTO meas VALUES ({a}, '{region}', {c}) ON CONFLICT (id, region) DO UPDATE SET v = {c}"
        ),
        13 => format!("UPDATE meas_asia SET v = {c} WHERE id = {a}"),
        // DDL: a partition attached or detached, a view replaced.
        14 => {
            *attached = !*attached;
            if *attached {
                "ALTER TABLE meas ATTACH PARTITION meas_asia FOR VALUES IN ('asia')".into()
            } else {
                "ALTER TABLE meas DETACH PARTITION meas_asia".into()
            }
        }
        15 => format!(
            "CREATE OR REPLACE VIEW chosen AS {}",
            [
                format!("SELECT id FROM users WHERE id % {a} = 0"),
                format!("SELECT id FROM orders WHERE user_id = {a}"),
                "SELECT id FROM meas".to_string(),
            ][rng.below(3)]
        ),
        0 => format!(
            "UPDATE users SET name = 'user{a}' WHERE id = {}",
            1 + rng.below(6)
        ),
        1 => format!("UPDATE users SET email = 'e{c}@x' WHERE id = {a}"),
        2 => format!("UPDATE orders SET user_id = {a} WHERE id = {b}"),
        3 => format!("UPDATE orders SET total = {c}.5 WHERE id = {b}"),
        4 => format!(
            "INSERT INTO orders (id, user_id, total) VALUES ({b}, {a}, {c}) ON CONFLICT (id) DO UPDATE SET total = {c}"
        ),
        5 => format!("DELETE FROM orders WHERE id = {b}"),
        // The primary key changes: the row leaves under one key and enters under another.
        6 => format!(
            "UPDATE orders SET id = {} WHERE id = {b} AND NOT EXISTS (SELECT 1 FROM orders WHERE id = {0})",
            61 + rng.below(20)
        ),
        // A value stored out of line: later changes of other columns do not carry it.
        7 => format!(
            "UPDATE orders SET memo = {} WHERE id = {b}",
            [
                "'a'",
                "'b'",
                "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g)"
            ][rng.below(3)]
        ),
        8 => format!("UPDATE orders SET user_id = {a}, total = {c} WHERE id = {b}"),
        9 => format!("UPDATE users SET email = NULL WHERE id = {a}"),
        _ if rng.chance(10) => "TRUNCATE orders".to_string(),
        _ => format!("UPDATE users SET name = name WHERE id = {a}"),
    }
}

/// Random statements (over plain tables, a partitioned table and a view), random writes
/// from another connection (DDL among them: a partition attached and detached, the view
/// replaced), and after each write every statement read: in replication mode AFTER the write's position, always PostgreSQL's own
/// answer at once; in notify mode (which has no positions) PostgreSQL's answer once the
/// write's notification is applied; with pass-through forced on and off in turn, 25 writes
/// each. `PGCACHE_QUERY_MODEL_STEPS` sets the number of writes (default 300).
#[test]
fn a_random_model_of_writes_and_queries_never_sees_a_stale_result() {
    let steps: usize = std::env::var("PGCACHE_QUERY_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let positions = invalidation_source() == "replication";
    let stack = watched();
    stack.pg.execute(&format!(
        "ALTER TABLE orders ADD COLUMN memo text;
         ALTER TABLE orders ALTER COLUMN memo SET STORAGE EXTERNAL;
         UPDATE orders SET memo = CASE WHEN id % 3 = 0 THEN 'a' WHEN id % 3 = 1 THEN 'b' END;
         {MODEL_SQL}"
    ));
    let mut attached = false;
    let mut con = stack.con();
    // Reads AFTER a write wait for it to be applied, and are answered from the cache.
    config_set(&mut con, "pgcache.after_wait_ms", "1000").unwrap();
    let mut rng = Rng::new(0x5eed_0032);
    for (i, sql) in MODEL_STATEMENTS.iter().enumerate() {
        let params = model_params(&mut rng, i);
        let refs: Vec<&str> = params.iter().map(String::as_str).collect();
        query_until_cached(&mut con, sql, &refs);
    }
    let hits_before = stats_figure(&mut con, "query_hits");
    for step in 0..steps {
        // Pass-through forced on and off in turn: answers are the same either way.
        if step % 25 == 0 {
            let policy = if step % 50 == 0 { "always" } else { "never" };
            config_set(&mut con, "pgcache.pass_through", policy).unwrap();
        }
        let write = model_write(&mut rng, &mut attached);
        let lsn = commit_and_position(&stack, &write);
        for (i, sql) in MODEL_STATEMENTS.iter().enumerate() {
            let params = model_params(&mut rng, i);
            let refs: Vec<&str> = params.iter().map(String::as_str).collect();
            let expected = postgres_answer(&stack, &sql.replace('?', "$1"), &refs);
            let read = |con: &mut redis::Connection| -> serde_json::Value {
                let mut call = redis::cmd("PGCACHE.QUERY");
                call.arg(*sql).arg(refs.len()).arg(&refs);
                if positions {
                    call.arg("AFTER").arg(&lsn);
                }
                json(&call.query::<String>(con).unwrap())
            };
            if positions {
                assert_eq!(
                    read(&mut con),
                    expected,
                    "step {step}, after `{write}`: {sql} {refs:?}"
                );
            } else {
                wait_for(
                    &format!("step {step}, after `{write}`: {sql} {refs:?} to answer {expected}"),
                    Duration::from_secs(10),
                    || (read(&mut con) == expected).then_some(()),
                );
            }
        }
    }
    assert!(
        stats_figure(&mut con, "query_hits") > hits_before,
        "the model read some results from the cache"
    );
}

#[test]
fn a_restart_serves_no_result_a_change_made_meanwhile_outdated() {
    let mut stack = watched();
    let mut con = stack.con();
    let by_user = "SELECT id, total FROM orders WHERE user_id = $1 ORDER BY id";
    let name = "SELECT name FROM users WHERE id = $1";
    let before = query_until_cached(&mut con, by_user, &["2"]);
    query_until_cached(&mut con, name, &["2"]);
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    stack.redis.shutdown();
    stack
        .pg
        .execute("UPDATE orders SET total = 777 WHERE id = 1");
    stack.redis.start_again();
    let mut con = stack.redis.connection();
    // Once the cache serves again (in replication mode, the feed resumed from the saved
    // position and caught up: the change came through it after the restart, when no index
    // of this process covered the result saved before), the old answer is not among it.
    assert_eq!(
        json(&query_until_cached(&mut con, name, &["2"])),
        serde_json::json!([{"name": "user2"}])
    );
    let after = query(&mut con, by_user, &["2"]).unwrap();
    assert_ne!(
        after, before,
        "the first answer after the restart is the new one"
    );
    assert_eq!(json(&after), postgres_answer(&stack, by_user, &["2"]));
}

#[test]
fn queries_lists_each_statement_with_its_figures_and_explain_tells_without_running() {
    let stack = watched();
    let mut con = stack.con();
    let sql = "SELECT id FROM orders WHERE user_id = $1 ORDER BY id";
    query_until_cached(&mut con, sql, &["1"]);
    query(
        &mut con,
        "select ID from ORDERS where USER_ID = ? order by ID",
        &["1"],
    )
    .unwrap();
    let mut events = stack.redis.connection();
    let mut pubsub = subscribe(&mut events, "pg_cache_events");
    stack.pg.execute("UPDATE orders SET total = 1 WHERE id = 5");
    let event = wait_for("a query_invalidated event", Duration::from_secs(10), || {
        let event = next_event(&mut pubsub);
        (event["type"] == "query_invalidated").then_some(event)
    });
    assert_eq!(event["table"], "orders");
    assert_eq!(
        event["key"],
        "SELECT id FROM orders WHERE user_id = $1 ORDER BY id"
    );
    assert_eq!(event["count"], 1);

    let listed: Vec<redis::Value> = redis::cmd("PGCACHE.QUERIES").query(&mut con).unwrap();
    let line = listed
        .iter()
        .map(nested)
        .find(|m| {
            redis::from_redis_value::<String>(m["statement"].clone()).unwrap()
                == "SELECT id FROM orders WHERE user_id = $1 ORDER BY id"
        })
        .expect("the statement is listed once for both spellings");
    let int = |name: &str| redis::from_redis_value::<i64>(line[name].clone()).unwrap();
    assert!(int("hits") >= 2, "{line:?}");
    assert!(int("misses") >= 1 && int("fills") >= 1, "{line:?}");
    assert_eq!(int("dropped"), 1);
    assert!(int("mean_result_bytes") > 0);
    assert_eq!(
        redis::from_redis_value::<Vec<String>>(line["tables"].clone()).unwrap(),
        ["orders"]
    );
    // Notifications carry no new values: per table is all they allow.
    let row_precision = invalidation_source() == "replication";
    assert_eq!(
        redis::from_redis_value::<String>(line["precision"].clone()).unwrap(),
        if row_precision { "row" } else { "table" }
    );
    assert_eq!(
        line["precision_reason"] == redis::Value::Nil,
        row_precision,
        "a reason is given at table precision only"
    );
    assert!(stats_figure(&mut con, "query_invalidations") >= 1);

    let explained = |con: &mut redis::Connection, sql: &str| {
        let reply: redis::Value = redis::cmd("PGCACHE.EXPLAIN").arg(sql).query(con).unwrap();
        nested(&reply)
    };
    let good = explained(
        &mut con,
        "SELECT u.name FROM users u JOIN orders o ON o.user_id = u.id WHERE o.id = ?",
    );
    assert_eq!(
        redis::from_redis_value::<i64>(good["cacheable"].clone()).unwrap(),
        1
    );
    assert_eq!(
        redis::from_redis_value::<Vec<String>>(good["tables"].clone()).unwrap(),
        ["orders", "users"]
    );
    assert_eq!(
        redis::from_redis_value::<Vec<String>>(good["parameters"].clone()).unwrap(),
        ["integer"]
    );
    assert_eq!(
        redis::from_redis_value::<String>(good["precision"].clone()).unwrap(),
        if row_precision { "row" } else { "table" },
        "a join is row-precise in replication mode"
    );
    if row_precision {
        assert_eq!(
            redis::from_redis_value::<Vec<String>>(good["exact_on"].clone()).unwrap(),
            ["o.id"]
        );
    }
    let single = explained(
        &mut con,
        "SELECT id FROM orders WHERE user_id = $1 AND total IN (1, $2) ORDER BY id LIMIT 5",
    );
    let exact_on = redis::from_redis_value::<Vec<String>>(single["exact_on"].clone()).unwrap();
    if row_precision {
        assert_eq!(
            redis::from_redis_value::<String>(single["precision"].clone()).unwrap(),
            "row"
        );
        // total is numeric, compared by value: 1 and 1.0 are one value.
        assert_eq!(exact_on, ["total", "user_id"]);
    } else {
        assert!(exact_on.is_empty());
    }
    let bad = explained(&mut con, "SELECT * FROM orders WHERE placed < now()");
    assert_eq!(
        redis::from_redis_value::<i64>(bad["cacheable"].clone()).unwrap(),
        0
    );
    assert!(
        redis::from_redis_value::<String>(bad["reason"].clone())
            .unwrap()
            .contains("now() is STABLE")
    );
    let _: () = redis::cmd("PGCACHE.QUERIES")
        .arg("RESET")
        .query(&mut con)
        .unwrap();
}

/// Misses of one statement racing commits to the row it reads: a result read before a
/// commit must never be stored as current (no stale fill), so once the writes stop the
/// cached answer is the last committed one and stays so.
#[test]
fn writes_racing_misses_of_one_statement_never_leave_a_stale_result() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stack = watched();
    let sql = "SELECT total FROM orders WHERE id = $1";
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (mut con, stop, calls) = (stack.con(), stop.clone(), calls.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    query(&mut con, sql, &["7"]).unwrap();
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Writes go on until the readers have raced them enough, however loaded the machine.
    let mut pg = stack.pg.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while n < 300 || (calls.load(Ordering::Relaxed) < 200 && Instant::now() < deadline) {
        n += 1;
        pg.batch_execute(&format!("UPDATE orders SET total = {n} WHERE id = 7"))
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    readers.into_iter().for_each(|r| r.join().unwrap());
    let calls = calls.load(Ordering::Relaxed);
    assert!(calls > 100, "the readers raced the writer ({calls} calls)");
    let mut con = stack.con();
    let last = serde_json::json!([{"total": n}]);
    wait_for("the last committed total", Duration::from_secs(10), || {
        (json(&query(&mut con, sql, &["7"]).unwrap()) == last).then_some(())
    });
    let hits = stats_figure(&mut con, "query_hits");
    for _ in 0..20 {
        assert_eq!(json(&query(&mut con, sql, &["7"]).unwrap()), last);
    }
    assert!(
        stats_figure(&mut con, "query_hits") > hits,
        "answered from the cache"
    );
}

#[test]
fn invalidating_a_row_drops_the_results_of_its_table() {
    let stack = Stack::start(&format!("{USERS_SQL} {ORDERS_SQL}"));
    let mut con = stack.con();
    let sql = "SELECT name FROM users WHERE id = $1";
    let orders = "SELECT count(*) AS n FROM orders";
    query_until_cached(&mut con, sql, &["3"]);
    query_until_cached(&mut con, orders, &[]);
    // An unwatched table: only a client's INVALIDATE tells pgcache the row changed.
    stack
        .pg
        .execute("UPDATE users SET name = 'three' WHERE id = 3");
    assert_eq!(
        query(&mut con, sql, &["3"]).unwrap(),
        r#"[{"name":"user3"}]"#
    );
    let _: () = redis::cmd("PGCACHE.INVALIDATE")
        .arg("users")
        .arg(r#"{"id":3}"#)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        query(&mut con, sql, &["3"]).unwrap(),
        r#"[{"name":"three"}]"#
    );
    let hits = stats_figure(&mut con, "query_hits");
    query(&mut con, orders, &[]).unwrap();
    assert_eq!(
        stats_figure(&mut con, "query_hits"),
        hits + 1,
        "other tables' results stay"
    );
}

/// Misses of one statement queued together run as one batch (one worker here, so they
/// queue): each caller gets its own parameters' answer, and a value PostgreSQL refuses fails
/// only its own call.
#[test]
fn misses_queued_together_run_as_one_batch_and_fail_alone() {
    let stack = Stack::start_with(
        &format!("{USERS_SQL} {ORDERS_SQL} {TRIGGER_SQL}"),
        &["workers", "1"],
    );
    stack.pg.execute("SELECT pgcache_watch('orders')");
    stack.pg.log_app_statements();
    let sql = "SELECT id FROM orders WHERE placed > $1 ORDER BY id LIMIT 1";
    query(&mut stack.con(), sql, &["2024-05-01T10:00:00Z"]).unwrap();
    let callers: Vec<_> = (0..6)
        .map(|t| {
            let mut con = stack.con();
            std::thread::spawn(move || {
                for i in 0..30usize {
                    let hour = (t * 30 + i) % 48;
                    if i % 10 == 9 {
                        let e = query(&mut con, sql, &["not a time"])
                            .unwrap_err()
                            .to_string();
                        assert!(e.contains("not a time"), "{e}");
                        continue;
                    }
                    let at = format!("2024-05-01T{:02}:30:00Z", hour % 24);
                    let at = if hour >= 24 {
                        at.replace("05-01", "05-02")
                    } else {
                        at
                    };
                    let answer = query(&mut con, sql, &[&at]).unwrap();
                    let first: serde_json::Value = json(&answer)[0]["id"].clone();
                    // placed = 10:00 + id hours: the first order after hh:30 is the next hour's.
                    let next_hour = if hour < 10 { 1 } else { hour - 9 };
                    assert_eq!(first, serde_json::json!(next_hour), "{at}: {answer}");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    assert!(
        stack.pg.logged_statements("pgcache_params") > 0,
        "some misses ran as a batch"
    );
}

/// Many clients missing one statement at once, two workers taking their jobs: every call is
/// answered, with its own parameters' result (a miss that joined a job as the worker took
/// it was once left unanswered until its timeout).
#[test]
fn concurrent_misses_of_one_statement_are_all_answered() {
    let stack = watched();
    let sql = "SELECT name FROM users WHERE id = $1";
    query(&mut stack.con(), sql, &["1"]).unwrap();
    let callers: Vec<_> = (0..8u64)
        .map(|t| {
            let mut con = stack.con();
            std::thread::spawn(move || {
                let mut rng = Rng::new(t + 1);
                for _ in 0..300 {
                    let id = 1 + rng.below(200);
                    let answer = query(&mut con, sql, &[&id.to_string()]).unwrap();
                    assert_eq!(answer, format!(r#"[{{"name":"user{id}"}}]"#));
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
}

#[test]
fn a_statement_whose_table_changed_under_it_is_learned_again() {
    let stack = watched();
    let mut con = stack.con();
    let sql = "SELECT id FROM orders WHERE user_id = $1 ORDER BY id LIMIT 2";
    assert_eq!(
        query_until_cached(&mut con, sql, &["3"]),
        r#"[{"id":2},{"id":7}]"#
    );
    stack
        .pg
        .execute("ALTER TABLE orders ALTER COLUMN user_id TYPE text USING 'u' || user_id");
    // DDL is no change either feed reports: docs/limits.md asks for a FLUSH of the table after it.
    let _: () = redis::cmd("PGCACHE.FLUSH")
        .arg("orders")
        .query(&mut con)
        .unwrap();
    // The statement learned for an integer fails on the text column; it is then learned
    // again (its parameter is text now), not refused for ever.
    let answer = wait_for(
        "the statement learned again",
        Duration::from_secs(10),
        || query(&mut con, sql, &["3"]).ok(),
    );
    assert_eq!(answer, "[]");
    assert_eq!(
        query(&mut con, sql, &["u3"]).unwrap(),
        r#"[{"id":2},{"id":7}]"#
    );
}

/// A transaction that changes more rows of a table than are deleted key by key becomes a
/// flush of the table (replication mode): its query results go too.
#[test]
fn a_bulk_change_flushed_as_a_whole_table_drops_its_results() {
    let stack = watched();
    let mut con = stack.con();
    stack
        .pg
        .execute("INSERT INTO users SELECT g, 'user' || g, NULL FROM generate_series(201, 6200) g");
    let sql = "SELECT name FROM users WHERE id = $1";
    query_until_cached(&mut con, sql, &["5"]);
    stack.pg.execute("UPDATE users SET name = name || '!'");
    // Replication mode gets the transaction whole and flushes the table; notify mode may get
    // it in notifications of fewer keys each, deleted key by key. Either way the result goes.
    wait_for("the bulk change applied", Duration::from_secs(20), || {
        (query(&mut con, sql, &["5"]).unwrap() == r#"[{"name":"user5!"}]"#).then_some(())
    });
}

/// Notify mode: notifications sent while the listener was away are lost, so its reconnect
/// drops everything; no query result from before is served after that.
#[test]
fn after_the_listener_reconnects_no_older_result_is_served() {
    let stack = Stack::start_with(
        &format!("{USERS_SQL} {TRIGGER_SQL}"),
        &["invalidation_source", "notify"],
    );
    stack.pg.execute("SELECT pgcache_watch('users', 'notify')");
    let mut con = stack.con();
    let sql = "SELECT name FROM users WHERE id = $1";
    query_until_cached(&mut con, sql, &["7"]);
    let first = wait_for("the listener", Duration::from_secs(10), || {
        listener_pid(&stack.pg)
    });
    let flushes = stats_figure(&mut con, "flushes");
    stack
        .pg
        .superuser()
        .execute("SELECT pg_terminate_backend($1)", &[&first])
        .unwrap();
    stack
        .pg
        .execute("UPDATE users SET name = 'changed while away' WHERE id = 7");
    wait_for("the reconnect's resync", Duration::from_secs(20), || {
        (stats_figure(&mut con, "flushes") > flushes).then_some(())
    });
    assert_eq!(
        query(&mut con, sql, &["7"]).unwrap(),
        r#"[{"name":"changed while away"}]"#
    );
}

/// MODULE UNLOAD forgets what pgcache learned of statements: loaded again under another
/// cache_prefix, it caches results under the new prefix only.
#[test]
fn a_module_loaded_again_learns_its_statements_afresh() {
    let stack = watched();
    let mut con = stack.con();
    let sql = "SELECT name FROM users WHERE id = $1";
    query_until_cached(&mut con, sql, &["2"]);
    unload(&mut con);
    let mut load = redis::cmd("MODULE");
    load.arg("LOAD").arg(module_path().to_str().unwrap());
    for a in stack.pg.module_args() {
        load.arg(a);
    }
    load.arg("cache_prefix").arg("other:");
    let _: String = load.query(&mut con).unwrap();
    query_until_cached(&mut con, sql, &["3"]);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*~q:*").query(&mut con).unwrap();
    assert!(
        keys.iter().any(|k| k.starts_with("other:~q:")),
        "a result under the new prefix: {keys:?}"
    );
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("pg_cache:~q:"))
            .count(),
        1,
        "only the result from before the unload is under the old prefix: {keys:?}"
    );
}

#[test]
fn explain_names_each_result_column_with_the_type_a_client_decodes() {
    let stack = Stack::start_with(
        "CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
         CREATE DOMAIN small_positive AS positive CHECK (VALUE < 100);
         CREATE DOMAIN labels AS text[];
         CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE TYPE address AS (street text, zip text);
         CREATE TABLE typed (
             id integer PRIMARY KEY, n numeric(10, 2), f double precision, b boolean,
             t text, v varchar(10), c char(3), ts timestamptz, d date, tm time, iv interval,
             u uuid, by bytea, j jsonb, arr integer[], m mood, ms mood[], a address,
             p small_positive, ps positive[], l labels, r int4range
         );",
        &[],
    );
    let mut con = stack.con();
    let reply: redis::Value = redis::cmd("PGCACHE.EXPLAIN")
        .arg("SELECT *, id, id + 1 AS next, 'x' AS literal FROM typed WHERE id = $1")
        .query(&mut con)
        .unwrap();
    let columns: Vec<(String, String)> =
        redis::from_redis_value(nested(&reply)["columns"].clone()).unwrap();
    let expected = [
        ("id", "int4"),
        ("n", "numeric"),
        ("f", "float8"),
        ("b", "bool"),
        ("t", "text"),
        ("v", "varchar"),
        ("c", "bpchar"),
        ("ts", "timestamptz"),
        ("d", "date"),
        ("tm", "time"),
        ("iv", "interval"),
        ("u", "uuid"),
        ("by", "bytea"),
        ("j", "jsonb"),
        ("arr", "int4[]"),
        ("m", "enum"),
        ("ms", "enum[]"),
        ("a", "record"),
        ("p", "int4"),
        ("ps", "int4[]"),
        ("l", "text[]"),
        ("r", "int4range"),
        ("id", "int4"),
        ("next", "int4"),
        ("literal", "text"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    assert_eq!(columns, expected);
    // The types each column is of, for a client's decoders: declared (an array's element),
    // then each domain's base; a domain over an array type (`labels`) is not its elements'.
    let types: Vec<Vec<(String, u32)>> =
        redis::from_redis_value(nested(&reply)["column_types"].clone()).unwrap();
    let names = |i: usize| -> Vec<&str> { types[i].iter().map(|(n, _)| n.as_str()).collect() };
    assert_eq!(types.len(), expected.len());
    assert_eq!(types[0], vec![("int4".to_string(), 23)]);
    for (column, of) in [
        (14, vec!["int4"]),
        (15, vec!["mood"]),
        (16, vec!["mood"]),
        (17, vec!["address"]),
        (18, vec!["small_positive", "positive", "int4"]),
        (19, vec!["positive", "int4"]),
        (20, vec!["text"]),
        (21, vec!["int4range"]),
        (24, vec!["text"]),
    ] {
        assert_eq!(names(column), of, "{}", expected[column].0);
    }
}
