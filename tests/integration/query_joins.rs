//! PGCACHE.QUERY's row precision over joins and subqueries: a change to any table a join
//! reads drops the results that hold the changed row, and those its new values may enter
//! (they pass the conditions on its table alone); a table whose rows come in only through
//! another's foreign key to them enters none but by a new key the referencing side's
//! conditions may hold; a subquery's table is bound by the
//! subquery's WHERE. Notify mode drops per table.

use crate::query::{commit_and_position, watched};
use crate::query_rows::{Case, dropped_among, row_precision, stack};
use pgcache_testkit::*;

/// Products, and orders that reference them; categories in a tree (a table that
/// references itself).
const MORE_TABLES: &str = "
    ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id);
    CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price numeric NOT NULL);
    INSERT INTO products SELECT g, 'product' || g, g * 2 FROM generate_series(1, 10) g;
    ALTER TABLE orders ADD COLUMN product_id integer REFERENCES products (id);
    UPDATE orders SET product_id = 1 + id % 10;
    CREATE TABLE categories (id integer PRIMARY KEY, parent_id integer REFERENCES categories (id),
                             name text NOT NULL);
    INSERT INTO categories VALUES (1, NULL, 'root'), (2, 1, 'books'), (3, 1, 'games'),
                                  (4, 2, 'novels'), (5, 3, 'puzzles');
    SELECT pgcache_watch('products');
    SELECT pgcache_watch('categories');
";

/// In replication mode, waits until the feed applied the set-up committed at `position`:
/// its DDL and rows applied after a result was cached would drop it.
fn set_up_applied(con: &mut redis::Connection, position: &str) {
    if row_precision() {
        wait_applied(con, position);
    }
}

/// Each statement's results for `sets` of parameters, after each write: the sets it drops
/// (row precision; notify mode drops them all), and the precision EXPLAIN gives it.
fn check_cases(stack: &Stack, con: &mut redis::Connection, cases: &[Case]) {
    for (sql, sets, writes) in cases {
        for (write, expected) in writes {
            let dropped = dropped_among(stack, con, sql, sets, write);
            if row_precision() {
                assert_eq!(&dropped, expected, "`{sql}` after `{write}`");
            } else if !expected.is_empty() {
                assert_eq!(dropped.len(), sets.len(), "notify mode drops per table");
            }
        }
        let (precision, why) = explained_precision(con, sql);
        let wanted = if row_precision() { "row" } else { "table" };
        assert_eq!(precision, wanted, "{sql}: {why:?}");
    }
}

fn explained_precision(con: &mut redis::Connection, sql: &str) -> (String, Option<String>) {
    let explained: redis::Value = redis::cmd("PGCACHE.EXPLAIN").arg(sql).query(con).unwrap();
    let explained = nested(&explained);
    (
        redis::from_redis_value(explained["precision"].clone()).unwrap(),
        redis::from_redis_value(explained["precision_reason"].clone()).unwrap(),
    )
}

#[test]
fn a_join_is_dropped_only_by_the_rows_it_holds_or_may_gain() {
    let (stack, mut con) = stack();
    let set_up = commit_and_position(&stack, MORE_TABLES);
    set_up_applied(&mut con, &set_up);
    // Order n belongs to user 1 + n % 5 and product 1 + n % 10, and totals n × 1.10.
    // Django's select_related: a user's orders with their user's and product's names.
    let related = "SELECT o.id, o.total, u.name, p.name AS product FROM orders o \
                   INNER JOIN users u ON o.user_id = u.id \
                   INNER JOIN products p ON o.product_id = p.id \
                   WHERE o.user_id = $1 ORDER BY o.id";
    // Users named like a pattern, with how many of their orders total more than $2.
    let counted = "SELECT u.id, count(o.id) AS n FROM users u \
                   LEFT OUTER JOIN orders o ON o.user_id = u.id AND o.total > $2 \
                   WHERE u.name LIKE $1 GROUP BY u.id ORDER BY u.id";
    // A category with its parent's name: the table joined to itself.
    let parent = "SELECT c.name, parent.name AS parent FROM categories c \
                  LEFT JOIN categories parent ON c.parent_id = parent.id WHERE c.id = $1";
    // Orders of the products priced under $1: a condition on the referenced side.
    let cheap = "SELECT o.id FROM orders o JOIN products p ON p.id = o.product_id \
                 WHERE p.price < $1 ORDER BY o.id";
    let cases: Vec<Case> = vec![
        (
            related,
            vec![&["1"], &["2"]],
            vec![
                // A user a result holds.
                ("UPDATE users SET name = 'one' WHERE id = 1", vec![0]),
                // A user no result holds: no order of theirs can be in one without them.
                ("UPDATE users SET name = 'seven' WHERE id = 7", vec![]),
                // A new user: only an order of user 500 (loaded without the foreign key's
                // check) could reference it, and no result is user 500's.
                ("INSERT INTO users VALUES (500, 'new', NULL)", vec![]),
                // A new product: nothing pins an order's product, so any result may hold
                // an order loaded without the check that references it.
                ("INSERT INTO products VALUES (50, 'new', 1)", vec![0, 1]),
                // A product only user 2's orders hold (orders 1, 6, 11...: products 2 and 7).
                ("UPDATE products SET name = 'seven' WHERE id = 7", vec![1]),
                // An order entering user 2's result, then one moving from user 1's to 2's.
                (
                    "INSERT INTO orders (id, user_id, total, product_id) VALUES (4001, 2, 1, 1)",
                    vec![1],
                ),
                ("UPDATE orders SET user_id = 2 WHERE id = 5", vec![0, 1]),
                // Another user's order.
                ("UPDATE orders SET total = 7 WHERE id = 3", vec![]),
                ("DELETE FROM orders WHERE id = 4001", vec![1]),
            ],
        ),
        (
            counted,
            vec![&["user1%", "10"], &["user3", "0"]],
            vec![
                // A user a result holds, and one entering the other.
                ("UPDATE users SET email = NULL WHERE id = 3", vec![1]),
                ("UPDATE users SET name = 'user1x' WHERE id = 50", vec![0]),
                ("UPDATE users SET name = 'zed' WHERE id = 60", vec![]),
                // An order passes the ON's condition of one result only.
                (
                    "INSERT INTO orders (id, user_id, total, product_id) \
                     VALUES (4002, 3, 0.5, 1)",
                    vec![1],
                ),
                (
                    "INSERT INTO orders (id, user_id, total, product_id) \
                     VALUES (4003, 150, 50, 1)",
                    vec![0, 1],
                ),
            ],
        ),
        (
            parent,
            vec![&["4"], &["5"]],
            vec![
                // The parent of category 4.
                ("UPDATE categories SET name = 'BOOKS' WHERE id = 2", vec![0]),
                // A new category: no category asked for, but the parent a category's
                // reference written without its key's check may name (c's condition does
                // not say which parent): every result.
                (
                    "INSERT INTO categories VALUES (6, 5, 'jigsaws')",
                    vec![0, 1],
                ),
                ("UPDATE categories SET parent_id = 1 WHERE id = 5", vec![1]),
            ],
        ),
        (
            cheap,
            vec![&["5"], &["15"]],
            vec![
                // Product 1 (price 2) is in both; product 5 (price 10) only under 15.
                ("UPDATE products SET name = 'one' WHERE id = 1", vec![0, 1]),
                ("UPDATE products SET name = 'five' WHERE id = 5", vec![1]),
                // A product entering under 15 only.
                ("UPDATE products SET price = 12 WHERE id = 9", vec![1]),
                ("INSERT INTO products VALUES (51, 'x', 100)", vec![]),
                // An order of any product may enter any result.
                (
                    "INSERT INTO orders (id, user_id, total, product_id) VALUES (4004, 1, 1, 10)",
                    vec![0, 1],
                ),
            ],
        ),
    ];
    check_cases(&stack, &mut con, &cases);
}

#[test]
fn explain_names_what_keeps_a_join_per_table() {
    let stack = watched();
    let mut con = stack.con();
    if !row_precision() {
        return;
    }
    for (sql, why) in [
        (
            "SELECT u.id FROM users u RIGHT JOIN orders o ON o.user_id = u.id WHERE o.id = $1",
            "RIGHT or FULL",
        ),
        (
            "SELECT id FROM users JOIN orders USING (id) WHERE total > $1",
            "USING",
        ),
        // Users with no order over $1: an order leaving brings a user back.
        (
            "SELECT u.id FROM users u LEFT JOIN orders o ON o.user_id = u.id AND o.total > $1 \
             WHERE o.id IS NULL",
            "outside its ON",
        ),
        (
            "SELECT u.id FROM users u JOIN orders o ON o.user_id = u.id WHERE name = $1 \
             AND total > $2",
            "without its table",
        ),
        (
            "SELECT u.id FROM users u, LATERAL (SELECT * FROM orders o WHERE o.user_id = u.id) o \
             WHERE u.id = $1",
            "subquery",
        ),
    ] {
        let (precision, reason) = explained_precision(&mut con, sql);
        assert_eq!(precision, "table", "{sql}");
        let reason = reason.unwrap_or_default();
        assert!(reason.contains(why), "{sql}: {reason}");
    }
}

#[test]
fn tables_that_reference_each_other_may_gain_rows_together() {
    let (stack, mut con) = stack();
    let set_up = commit_and_position(
        &stack,
        "CREATE TABLE pa (id integer PRIMARY KEY); CREATE TABLE pb (id integer PRIMARY KEY);
         CREATE TABLE q (id integer PRIMARY KEY, k integer NOT NULL);
         ALTER TABLE pa ADD FOREIGN KEY (id) REFERENCES pb (id) DEFERRABLE INITIALLY DEFERRED;
         ALTER TABLE pb ADD FOREIGN KEY (id) REFERENCES pa (id) DEFERRABLE INITIALLY DEFERRED;
         BEGIN; INSERT INTO pa VALUES (1); INSERT INTO pb VALUES (1); COMMIT;
         INSERT INTO q VALUES (1, 1), (2, 2);
         SELECT pgcache_watch('pa'); SELECT pgcache_watch('pb'); SELECT pgcache_watch('q');",
    );
    set_up_applied(&mut con, &set_up);
    let sql = "SELECT count(*) AS n FROM pa JOIN pb ON pa.id = pb.id, q WHERE q.k = $1";
    // Two rows that reference each other arrive in one transaction, neither a member: the
    // join gains a row, and the result goes.
    let dropped = dropped_among(
        &stack,
        &mut con,
        sql,
        &[&["1"]],
        "BEGIN; INSERT INTO pa VALUES (2); INSERT INTO pb VALUES (2); COMMIT",
    );
    assert_eq!(dropped, [0]);
}

#[test]
fn a_subquery_s_table_drops_only_the_results_its_rows_may_change() {
    let (stack, mut con) = stack();
    let set_up = commit_and_position(&stack, MORE_TABLES);
    set_up_applied(&mut con, &set_up);
    // Django's `__in=Subquery(...)`: orders of the products priced under $1.
    let cheap = "SELECT o.id FROM orders o WHERE o.product_id IN \
                 (SELECT U0.id FROM products U0 WHERE U0.price < $1) ORDER BY o.id";
    // NOT EXISTS and a scalar subquery: users of $1 with no product named 'gone', and
    // the count of products.
    let counted = "SELECT u.id, (SELECT count(*) FROM products) AS n FROM users u \
                   WHERE u.id = $1 AND NOT EXISTS (SELECT 1 FROM products WHERE name = 'gone')";
    let cases: Vec<Case> = vec![
        (
            cheap,
            vec![&["5"], &["15"]],
            vec![
                // Product 1 (price 2) is in both sets; product 5 (price 10) under 15 only.
                ("UPDATE products SET name = 'one' WHERE id = 1", vec![0, 1]),
                ("UPDATE products SET name = 'five' WHERE id = 5", vec![1]),
                // A product entering under 15 only, and one entering neither.
                ("UPDATE products SET price = 12 WHERE id = 9", vec![1]),
                ("INSERT INTO products VALUES (52, 'x', 100)", vec![]),
                // An order of any product may enter any result.
                (
                    "INSERT INTO orders (id, user_id, total, product_id) VALUES (4005, 1, 1, 10)",
                    vec![0, 1],
                ),
            ],
        ),
        (
            counted,
            vec![&["1"], &["2"]],
            vec![
                ("UPDATE users SET name = 'x' WHERE id = 2", vec![1]),
                ("UPDATE users SET name = 'y' WHERE id = 3", vec![]),
                // Every product is counted.
                ("INSERT INTO products VALUES (53, 'y', 1)", vec![0, 1]),
            ],
        ),
    ];
    check_cases(&stack, &mut con, &cases);
    // Django's Exists(OuterRef(...)): a correlated subquery, its rows those of the outer
    // rows the rest of the WHERE admits. User 1's orders are of products 1 and 6, user
    // 2's of 2 and 7; product n is priced 2n.
    let pricey = "SELECT o.id FROM orders o WHERE o.user_id = $1 AND EXISTS \
                  (SELECT 1 AS a FROM products p WHERE p.id = o.product_id AND p.price > $2 \
                  LIMIT 1) ORDER BY o.id";
    let writes: Vec<(&str, Vec<usize>)> = vec![
        // Priced under the bound: in no set, and entering none.
        ("UPDATE products SET name = 'cheap' WHERE id = 2", vec![]),
        ("UPDATE orders SET total = 1 WHERE id = 3", vec![]),
        ("UPDATE orders SET product_id = 3 WHERE id = 10", vec![0]),
        // Over it: may enter either (its condition on the outer row is not weighed).
        ("UPDATE products SET price = 20 WHERE id = 2", vec![0, 1]),
    ];
    for (write, expected) in writes {
        let dropped = dropped_among(
            &stack,
            &mut con,
            pricey,
            &[&["1", "10"], &["2", "10"]],
            write,
        );
        if row_precision() {
            assert_eq!(dropped, expected, "`{pricey}` after `{write}`");
        }
    }
    if row_precision() {
        // One in the projection stays per table.
        let (precision, why) = explained_precision(
            &mut con,
            "SELECT o.id, (SELECT p.name FROM products p WHERE p.id = o.product_id) \
             FROM orders o WHERE o.user_id = $1",
        );
        assert_eq!(precision, "table");
        assert!(why.unwrap_or_default().contains("correlated"));
    }
}

#[test]
fn a_set_operation_is_dropped_only_through_its_branches() {
    let (stack, mut con) = stack();
    // Order n belongs to user 1 + n % 5.
    let sql = "SELECT id FROM orders WHERE user_id = $1 \
               UNION ALL SELECT id FROM users WHERE name = $2 ORDER BY id";
    let writes: Vec<(&str, Vec<usize>)> = vec![
        ("UPDATE orders SET total = 1 WHERE id = 5", vec![0]),
        ("UPDATE users SET email = NULL WHERE id = 4", vec![1]),
        ("INSERT INTO users VALUES (600, 'user3', NULL)", vec![0]),
        ("UPDATE orders SET total = 2 WHERE id = 3", vec![]),
        ("UPDATE users SET name = 'x' WHERE id = 7", vec![]),
    ];
    for (write, expected) in writes {
        let dropped = dropped_among(
            &stack,
            &mut con,
            sql,
            &[&["1", "user3"], &["2", "user4"]],
            write,
        );
        if row_precision() {
            assert_eq!(dropped, expected, "`{sql}` after `{write}`");
        }
    }
    let (precision, why) = explained_precision(&mut con, sql);
    let wanted = if row_precision() { "row" } else { "table" };
    assert_eq!(precision, wanted, "{sql}: {why:?}");
}
