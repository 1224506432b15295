//! Named sources on a real 3-primary cluster (issue #53): a named source's rows and results
//! live on the primary serving their slot (the pk's braces are the hash tag, whatever the
//! source), every node redirects what it does not serve, and each primary's feed of the named
//! database drops what that primary holds, leaving the default source's entries alone.
use crate::sources::{A, analytics_sql, default_sql};
use pgcache_testkit::*;
use std::time::Duration;

fn key(source: Option<&str>, id: i64) -> String {
    match source {
        None => format!(r#"pg_cache:users:{{"id":{id}}}"#),
        Some(name) => format!(r#"pg_cache:@{name}:users:{{"id":{id}}}"#),
    }
}

/// How many keys matching `pattern` the nodes hold together.
fn held(cluster: &Cluster, pattern: &str) -> usize {
    (cluster.nodes.iter())
        .map(|n| {
            redis::cmd("KEYS")
                .arg(pattern)
                .query::<Vec<String>>(&mut n.connection())
                .unwrap()
                .len()
        })
        .sum()
}

const NAMED_ROWS: &str = "pg_cache:@analytics:users:{*";
const DEFAULT_ROWS: &str = "pg_cache:users:{*";

#[test]
fn sources_results_on_their_slot_owner() {
    let cluster = Cluster::start_with_sources(&default_sql(), &[(A, &analytics_sql())], 3);
    let mut client = cluster.client();
    let ids = 1..=30i64;
    // Each node's feeds vouch for its cache on their own time: read until all is cached.
    wait_for(
        "every row of both sources cached",
        Duration::from_secs(30),
        || {
            for id in ids.clone() {
                for (source, name) in [
                    (None, format!("user{id}")),
                    (Some(A), format!("analytics{id}")),
                ] {
                    let row: Option<String> = redis::cmd("PGCACHE.GET")
                        .arg(key(source, id))
                        .query(&mut client)
                        .unwrap();
                    assert_eq!(json(&row.unwrap())["name"], name, "{source:?}");
                }
            }
            (held(&cluster, NAMED_ROWS) == 30 && held(&cluster, DEFAULT_ROWS) == 30).then_some(())
        },
    );
    // Every key, position keys included, is in a slot its node serves, on all three primaries.
    cluster.assert_keys_in_own_slots();
    for node in &cluster.nodes {
        let named: Vec<String> = redis::cmd("KEYS")
            .arg(NAMED_ROWS)
            .query(&mut node.connection())
            .unwrap();
        assert!(!named.is_empty(), "node {} holds no named row", node.port);
    }

    // READ and QUERY with SOURCE: the slot's owner answers, the others redirect.
    let named = key(Some(A), 1);
    let mut read = redis::cmd("PGCACHE.READ");
    read.arg(&["users", r#"{"id":1}"#, "SOURCE", A]);
    let e = read
        .query::<String>(&mut cluster.other_than_owner_of(&named))
        .unwrap_err();
    assert!(format!("{e:?}").to_uppercase().contains("MOVED"), "{e:?}");
    let row: String = read.query(&mut cluster.owner_of(&named)).unwrap();
    assert_eq!(json(&row)["name"], "analytics1");
    let sql = "SELECT name FROM users WHERE id = $1";
    for id in ["1000", "2"] {
        let answers: Vec<redis::RedisResult<String>> = (cluster.nodes.iter())
            .map(|node| {
                redis::cmd("PGCACHE.QUERY")
                    .arg(&[sql, "1", id, "SOURCE", A])
                    .query(&mut node.connection())
            })
            .collect();
        let answered: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(answered.len(), 1, "{answers:?}");
        let wanted = if id == "1000" {
            "only in analytics".to_string()
        } else {
            format!("analytics{id}")
        };
        assert_eq!(json(answered[0]), serde_json::json!([{ "name": wanted }]));
        for e in answers.iter().filter_map(|a| a.as_ref().err()) {
            assert!(format!("{e:?}").to_uppercase().contains("MOVED"), "{e:?}");
        }
    }
    cluster.assert_keys_in_own_slots();

    // A change in the named database: each primary drops the named rows it holds, none of
    // the default's.
    cluster
        .pg
        .execute_in(A, "UPDATE users SET name = name || '!' WHERE id <= 30");
    wait_for(
        "every named row invalidated",
        Duration::from_secs(20),
        || (held(&cluster, NAMED_ROWS) == 0).then_some(()),
    );
    assert_eq!(held(&cluster, DEFAULT_ROWS), 30);
    let row: Option<String> = redis::cmd("PGCACHE.GET")
        .arg(key(Some(A), 5))
        .query(&mut client)
        .unwrap();
    assert_eq!(json(&row.unwrap())["name"], "analytics5!");

    if invalidation_source() == "replication" {
        // One slot per primary and source, PostgreSQL's side of "each primary its own feed".
        let slots: Vec<String> = (cluster.pg.client())
            .query(
                "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE 'pgcache%'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let named = slots.iter().filter(|s| s.starts_with("pgcache_analytics_"));
        assert_eq!(named.count(), 3, "{slots:?}");
        assert_eq!(slots.len(), 6, "{slots:?}");
    }
}
