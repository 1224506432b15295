//! Section 14: PGCACHE.QUERY's row precision (issue #32). A zipf read mix of "the 20 newest
//! orders of customer c" with 5 % writes, run with row precision and again forced to table
//! precision (`query_precision table`): the hit ratio of each. The writers' throughput on
//! the watched table with results cached (the index busy dropping them) and without any,
//! beside an identical unwatched table and beside pg_recvlogical consuming the same
//! publication. The index's memory per cached result. The longest event-loop pause while a
//! 1M-row UPDATE drops row-precise results. And an ORM-shaped mix (#38): a customer's newest
//! orders, the same with their products (a join), orders by status, a price range, counts
//! per status, pagination, a search by note prefix, each at row and at table precision and
//! straight from PostgreSQL.

use super::*;

const CUSTOMERS: usize = 1_000;
const ORDERS: i64 = 30_000;
const PRODUCTS: usize = 1_000;
const NEWEST: &str = "SELECT id, total, created_at FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20";
const MIX_SECONDS: u64 = 10;
const MIX_CLIENTS: usize = 8;
const WRITE_PERCENT: u64 = 5;

/// The id of the next order the mix inserts (across runs).
static NEXT_ID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(ORDERS + 1);

/// Ids drawn with probability proportional to 1 / rank (zipf, s = 1).
pub(crate) struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Zipf { cumulative }
    }

    /// A customer id, 1-based.
    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative[self.cumulative.len() - 1];
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        self.cumulative.partition_point(|c| *c < u) + 1
    }
}

fn orders_tables(pg: &Pg) {
    pg.execute(&format!(
        "DROP TABLE IF EXISTS orders, orders_unwatched, products;
         CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price numeric NOT NULL);
         INSERT INTO products SELECT g, 'product ' || g, g FROM generate_series(1, {PRODUCTS}) g;
         CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL,
                              total numeric NOT NULL, n integer NOT NULL DEFAULT 0,
                              created_at timestamptz NOT NULL,
                              status text NOT NULL DEFAULT 'new', note text,
                              product_id integer REFERENCES products (id));
         INSERT INTO orders SELECT g, 1 + g % {CUSTOMERS}, g, 0,
                '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 minute',
                (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + g % 4], 'note ' || g % 977,
                1 + g % {PRODUCTS}
           FROM generate_series(1, {ORDERS}) g;
         CREATE INDEX ON orders (customer_id, created_at DESC);
         CREATE INDEX ON orders (status, created_at DESC);
         CREATE INDEX ON orders (total);
         CREATE TABLE orders_unwatched (LIKE orders INCLUDING ALL);
         INSERT INTO orders_unwatched SELECT * FROM orders;"
    ));
    pg.execute("VACUUM ANALYZE");
    pg.execute("SELECT pgcache_watch('orders', 'replication')");
    pg.execute("SELECT pgcache_watch('products', 'replication')");
}

/// The ORM-shaped reads: a statement and its parameters for a zipf-drawn customer.
fn orm_read(customer: i32, rng: &mut Rng) -> (&'static str, Vec<String>) {
    match rng.below(7) {
        0 => (NEWEST, vec![customer.to_string()]),
        6 => (
            "SELECT o.id, o.total, p.name FROM orders o JOIN products p ON p.id = o.product_id \
             WHERE o.customer_id = $1 ORDER BY o.created_at DESC LIMIT 20",
            vec![customer.to_string()],
        ),
        1 => (
            "SELECT id, total FROM orders WHERE status = $1 ORDER BY created_at DESC LIMIT 20",
            vec![["new", "paid", "shipped", "returned"][customer as usize % 4].into()],
        ),
        2 => (
            "SELECT id, total FROM orders WHERE total BETWEEN $1 AND $2 AND status = 'paid' \
             ORDER BY total LIMIT 20",
            vec![
                (customer * 10).to_string(),
                (customer * 10 + 500).to_string(),
            ],
        ),
        3 => (
            "SELECT status, count(*) AS n, sum(total) AS s FROM orders WHERE customer_id = $1 \
             GROUP BY status ORDER BY status",
            vec![customer.to_string()],
        ),
        4 => (
            "SELECT id, total FROM orders ORDER BY id LIMIT 20 OFFSET $1",
            vec![(customer * 20).to_string()],
        ),
        _ => (
            "SELECT id FROM orders WHERE customer_id = $1 AND note LIKE $2 ORDER BY id",
            vec![customer.to_string(), format!("note {}%", customer % 10)],
        ),
    }
}

/// The newest-orders read alone.
fn newest_read(customer: i32, _: &mut Rng) -> (&'static str, Vec<String>) {
    (NEWEST, vec![customer.to_string()])
}

type Read = fn(i32, &mut Rng) -> (&'static str, Vec<String>);

/// `sql` with its `$n` replaced by the parameters as quoted constants (ours: no quote in
/// them), as an application that does not prepare its statements sends it.
fn inlined(sql: &str, params: &[String]) -> String {
    let mut text = sql.to_string();
    for (n, value) in params.iter().enumerate().rev() {
        text = text.replace(&format!("${}", n + 1), &format!("'{value}'"));
    }
    text
}

/// The read mix of `read` for `MIX_SECONDS`, through pgcache (or, `direct`, straight from
/// PostgreSQL): QUERY hits ratio, reads/s and writes/s.
fn mix(port: u16, pg: &Pg, read: Read, direct: bool) -> (f64, f64, f64) {
    let zipf = std::sync::Arc::new(Zipf::new(CUSTOMERS));
    let mut con = connect(port);
    let (hits, misses) = (
        stats_figure(&mut con, "query_hits"),
        stats_figure(&mut con, "query_misses"),
    );
    let until = Instant::now() + Duration::from_secs(MIX_SECONDS);
    let threads: Vec<_> = (0..MIX_CLIENTS)
        .map(|t| {
            let zipf = zipf.clone();
            let mut writer = pg.client();
            let mut reader = pg.client();
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x0032_0000 + t as u64);
                let mut con = connect(port);
                let (mut reads, mut writes) = (0u64, 0u64);
                while Instant::now() < until {
                    let customer = zipf.sample(&mut rng) as i32;
                    if rng.chance(WRITE_PERCENT) {
                        if rng.chance(10) {
                            let id = 1 + rng.below(PRODUCTS) as i32;
                            writer
                                .execute(
                                    "UPDATE products SET price = price + 1 WHERE id = $1",
                                    &[&id],
                                )
                                .unwrap();
                        } else if rng.chance(20) {
                            let id =
                                NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as i32;
                            writer
                                .execute(
                                    "INSERT INTO orders (id, customer_id, total, created_at) \
                                     VALUES ($1, $2, 1, now())",
                                    &[&id, &customer],
                                )
                                .unwrap();
                        } else {
                            let k = 1 + rng.below(ORDERS as usize / CUSTOMERS - 1) as i32;
                            let id = customer - 1 + CUSTOMERS as i32 * k;
                            writer
                                .execute(
                                    "UPDATE orders SET total = total + 1 WHERE id = $1",
                                    &[&id],
                                )
                                .unwrap();
                        }
                        writes += 1;
                    } else {
                        let (sql, params) = read(customer, &mut rng);
                        if direct {
                            reader.query(inlined(sql, &params).as_str(), &[]).unwrap();
                        } else {
                            let _: String = redis::cmd("PGCACHE.QUERY")
                                .arg(sql)
                                .arg(params.len())
                                .arg(&params)
                                .query(&mut con)
                                .unwrap();
                        }
                        reads += 1;
                    }
                }
                (reads, writes)
            })
        })
        .collect();
    let (mut reads, mut writes) = (0, 0);
    for thread in threads {
        let (r, w) = thread.join().unwrap();
        reads += r;
        writes += w;
    }
    let hits = stats_figure(&mut con, "query_hits") - hits;
    let misses = stats_figure(&mut con, "query_misses") - misses;
    let seconds = MIX_SECONDS as f64;
    (
        hits as f64 / (hits + misses).max(1) as f64,
        reads as f64 / seconds,
        writes as f64 / seconds,
    )
}

/// Caches the newest orders of every customer; the index's results and bytes after.
fn cache_every_customer(con: &mut redis::Connection) -> (i64, i64) {
    for customer in 1..=CUSTOMERS {
        cmd(con, &["PGCACHE.QUERY", NEWEST, "1", &customer.to_string()]);
    }
    (
        stats_figure(con, "query_index_results"),
        stats_figure(con, "query_index_bytes"),
    )
}

fn update_orders_tps(pg: &Pg, table: &str) -> f64 {
    let script =
        format!("\\set id random(1, {ORDERS})\nUPDATE {table} SET n = n + 1 WHERE id = :id;\n");
    Pgbench::start(pg, &script, 8, 4, &[]).tps()
}

pub fn precision() {
    println!(
        "\n## 14. PGCACHE.QUERY row precision vs table precision ({CUSTOMERS} customers, {ORDERS} orders, zipf reads of their 20 newest orders with {WRITE_PERCENT} % writes, {MIX_CLIENTS} clients, {MIX_SECONDS} s each)\n"
    );
    let pg = durable_postgres();
    orders_tables(&pg);
    let (redis, mut con) = server_in_mode(&pg, "replication");
    println!("| reads | precision | hit ratio | reads/s | writes/s |");
    println!("|---|---|---|---|---|");
    for (name, read) in [
        ("newest orders", newest_read as Read),
        ("ORM mix", orm_read),
    ] {
        let mut ratios = Vec::new();
        for precision in ["row", "table"] {
            cmd(
                &mut con,
                &["CONFIG", "SET", "pgcache.query_precision", precision],
            );
            let (ratio, reads, writes) = mix(redis.port, &pg, read, false);
            ratios.push(ratio);
            println!("| {name} | {precision} | {ratio:.3} | {reads:.0} | {writes:.0} |");
        }
        let (_, reads, writes) = mix(redis.port, &pg, read, true);
        println!("| {name} | PostgreSQL directly (unprepared) | - | {reads:.0} | {writes:.0} |");
        println!(
            "\n{name}: row precision's hit ratio / table precision's: {:.2}x\n",
            ratios[0] / ratios[1].max(1e-9)
        );
    }

    cmd(
        &mut con,
        &["CONFIG", "SET", "pgcache.query_precision", "row"],
    );
    let (results, bytes) = cache_every_customer(&mut con);
    println!(
        "\nindex memory: {bytes} bytes for {results} results, {:.0} bytes per result (each built from {} rows)",
        bytes as f64 / results.max(1) as f64,
        ORDERS as usize / CUSTOMERS
    );

    println!(
        "\nWriters: pgbench UPDATE by primary key, 8 clients, 4 s rounds (3 of each, medians; fsync on)\n"
    );
    println!(
        "| consumer | unwatched tps | watched tps, no results cached | watched tps, every customer's result cached | watched with / without results | watched / unwatched |"
    );
    println!("|---|---|---|---|---|---|");
    let (mut unwatched, mut without, mut with) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        unwatched.push(update_orders_tps(&pg, "orders_unwatched"));
        cmd(&mut con, &["PGCACHE.FLUSH", "orders"]);
        wait_for("no results indexed", Duration::from_secs(30), || {
            (stats_figure(&mut con, "query_index_results") == 0).then_some(())
        });
        without.push(update_orders_tps(&pg, "orders"));
        cache_every_customer(&mut con);
        with.push(update_orders_tps(&pg, "orders"));
    }
    let (u, wo, w) = (median(unwatched), median(without), median(with));
    println!(
        "| pgcache (replication) | {u:.0} | {wo:.0} | {w:.0} | {:.2} | {:.2} |",
        w / wo,
        wo / u
    );
    drop(con);
    drop(redis);
    let consumer = LogConsumer::pgoutput(&pg, "pgcache");
    let (mut unwatched, mut watched) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        unwatched.push(update_orders_tps(&pg, "orders_unwatched"));
        watched.push(update_orders_tps(&pg, "orders"));
    }
    let (u, w) = (median(unwatched), median(watched));
    println!("| pg_recvlogical | {u:.0} | {w:.0} | | | {:.2} |", w / u);
    consumer.stop(&pg);
}

/// The longest event-loop pause while a 1M-row UPDATE of `users` drops 10,000 cached
/// row-precise results (and the rows cached beside them), in replication mode.
pub fn bulk(pg: &Pg) {
    const RESULTS: i64 = 10_000;
    println!(
        "\n## 15. PING while a {ROWS}-row UPDATE drops {RESULTS} row-precise QUERY results (replication mode)\n"
    );
    pg.execute(include_str!("../../examples/invalidation_trigger.sql"));
    pg.execute("SELECT pgcache_watch('users', 'replication')");
    println!(
        "| results indexed | pings | p50 ms | p99 ms | max ms | longest pgcache callback ms |"
    );
    println!("|---|---|---|---|---|---|");
    pings_while_dropped(
        pg,
        "SELECT id, name FROM users WHERE id = $1",
        RESULTS,
        "UPDATE users SET name = name || '.'",
    );
    // A TRUNCATE of a table whose results are joins takes each one out of the other
    // table's index too.
    pg.execute(&format!(
        "CREATE TABLE bench_orders (id integer PRIMARY KEY, user_id integer NOT NULL REFERENCES users, note text);
         INSERT INTO bench_orders SELECT g, g, 'n' FROM generate_series(1, {RESULTS}) g;
         SELECT pgcache_watch('bench_orders', 'replication');"
    ));
    println!(
        "\nThen a TRUNCATE of the orders table under cached join results (orders JOIN users):\n"
    );
    println!(
        "| join results indexed | pings | p50 ms | p99 ms | max ms | longest pgcache callback ms |"
    );
    println!("|---|---|---|---|---|---|");
    pings_while_dropped(
        pg,
        "SELECT o.id, o.note, u.name FROM bench_orders o JOIN users u ON u.id = o.user_id \
         WHERE o.id = $1",
        RESULTS,
        "TRUNCATE bench_orders",
    );
    pg.execute("SELECT pgcache_unwatch('bench_orders'); DROP TABLE bench_orders");
    pg.execute("SELECT pgcache_unwatch('users')");
}

/// Caches `sql`'s results for ids 1 to `results` on a fresh server, then PINGs it until
/// `write` committed and every result left the index: one table row of the results
/// indexed, the PINGs' latencies and the longest pgcache callback meanwhile.
fn pings_while_dropped(pg: &Pg, sql: &str, results: i64, write: &'static str) {
    let (redis, mut con) = server_in_mode(pg, "replication");
    for id in 1..=results {
        cmd(&mut con, &["PGCACHE.QUERY", sql, "1", &id.to_string()]);
    }
    let indexed = stats_figure(&mut con, "query_index_results");
    let _: () = redis::cmd("PGCACHE.STATS")
        .arg("RESET")
        .query(&mut con)
        .unwrap();
    let mut writer = pg.client();
    let statement = std::thread::spawn(move || writer.batch_execute(write).unwrap());
    let mut observer = redis.connection();
    let give_up = Instant::now() + Duration::from_secs(300);
    let gaps = pings_until(&mut con, || {
        (statement.is_finished() && stats_figure(&mut observer, "query_index_results") == 0)
            || Instant::now() > give_up
    });
    statement.join().unwrap();
    println!(
        "| {indexed} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
        gaps.len(),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps[gaps.len() - 1],
        longest_callback_us(&mut con) as f64 / 1000.0
    );
}
