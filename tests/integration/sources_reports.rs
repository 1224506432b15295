//! Reports per source (issue #53): PGCACHE.STATS, HEALTH, the INFO section and the metrics
//! endpoint give each source's figures apart, the default source's where they always were,
//! and the server's once.
use crate::metrics::scrape;
use crate::sources::{A, analytics_sql, default_sql, read_name, sourced};
use pgcache_testkit::*;
use std::collections::HashMap;
use std::time::Duration;

/// A map reply of `command`, with `SOURCE source` when a source is given.
fn report(
    con: &mut redis::Connection,
    command: &str,
    source: Option<&str>,
) -> HashMap<String, redis::Value> {
    let cmd = sourced(redis::cmd(command), source);
    nested(&query_through_interrupts::<redis::Value>(&cmd, con).unwrap())
}

fn text(map: &HashMap<String, redis::Value>, name: &str) -> String {
    redis::from_redis_value(map[name].clone()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The figure `figure` of table `table` in a STATS listing.
fn table_figure(stats: &HashMap<String, redis::Value>, table: &str, figure_name: &str) -> i64 {
    figure(&nested(&nested(&stats["tables"])[table]), figure_name)
}

/// The samples of `metric` whose `source` label is `source` (None: no such label).
fn samples<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
    source: Option<&str>,
) -> Vec<&'a prometheus_parse::Sample> {
    (scrape.samples.iter())
        .filter(|s| s.metric == metric && s.labels.get("source") == source)
        .collect()
}

fn value(sample: &prometheus_parse::Sample) -> f64 {
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{} is not a number: {other:?}", sample.metric),
    }
}

#[test]
fn stats_health_info_metrics_per_source() {
    let port = free_port().to_string();
    let stack = Stack::start_with_sources(
        &default_sql(),
        &[(A, &analytics_sql())],
        &["metrics_port", &port],
    );
    let mut con = stack.con();
    // The named feed vouches for its cache on its own time (the stack waited for the default's).
    wait_for(
        "the named source's hits served",
        Duration::from_secs(20),
        || (figure(&report(&mut con, "PGCACHE.STATS", Some(A)), "hits_served") == 1).then_some(()),
    );
    for _ in 0..2 {
        read_name(&mut con, None, 1);
    }
    for id in [1, 2, 3, 1000, 1000] {
        read_name(&mut con, Some(A), id);
    }

    // STATS: each source's own figures; the default's listing names the others.
    let default = report(&mut con, "PGCACHE.STATS", None);
    let named = report(&mut con, "PGCACHE.STATS", Some(A));
    assert_eq!(table_figure(&default, "users", "calls"), 2);
    assert_eq!(table_figure(&named, "users", "calls"), 5);
    assert_eq!(figure(&default, "misses"), 1, "{default:?}");
    assert_eq!(figure(&named, "misses"), 4, "{named:?}");
    let sources: Vec<String> = redis::from_redis_value(default["sources"].clone()).unwrap();
    assert_eq!(sources, [A]);
    assert!(!named.contains_key("sources"), "{named:?}");
    // The server's figures are in both.
    assert_eq!(
        figure(&default, "queue_capacity"),
        figure(&named, "queue_capacity")
    );

    // INFO: the default's figures as before, each named source's on lines of its own.
    let info: String = redis::cmd("INFO").arg("pgcache").query(&mut con).unwrap();
    assert!(info.contains("\r\npgcache_misses:1\r\n"), "{info}");
    let line = |prefix: &str| {
        (info.lines())
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {info}"))
            .to_string()
    };
    let source_line = line("pgcache_source_analytics:");
    assert!(
        source_line.split(',').any(|f| f == "misses=4"),
        "{source_line}"
    );
    assert!(
        source_line.split(',').any(|f| f == "hits_served=1"),
        "{source_line}"
    );
    assert!(
        !source_line.contains("queue_capacity"),
        "the server's figures are not a source's: {source_line}"
    );
    let table_line = line("pgcache_source_analytics_table_users:");
    assert!(table_line.starts_with("calls=5,"), "{table_line}");

    // Metrics: the default's series unlabelled, the named one's labelled, the server's once.
    let scrape = scrape(port.parse().unwrap());
    let misses = |source| value(samples(&scrape, "pgcache_misses_total", source)[0]);
    assert_eq!(misses(None), 1.0);
    assert_eq!(misses(Some(A)), 4.0);
    let table_calls = |source| {
        let found = samples(&scrape, "pgcache_table_calls_total", source);
        let users = found
            .iter()
            .find(|s| s.labels.get("table") == Some("users"));
        value(users.unwrap_or_else(|| panic!("no users calls of {source:?}")))
    };
    assert_eq!(table_calls(None), 2.0);
    assert_eq!(table_calls(Some(A)), 5.0);
    assert_eq!(samples(&scrape, "pgcache_hits_served", Some(A)).len(), 1);
    assert_eq!(samples(&scrape, "pgcache_queue_capacity", None).len(), 1);
    assert!(samples(&scrape, "pgcache_queue_capacity", Some(A)).is_empty());
    let stages = samples(&scrape, "pgcache_miss_stage_duration_seconds", Some(A));
    assert!(!stages.is_empty(), "the named source's miss stages");

    // HEALTH: the default's report, with each named source's status; HEALTH SOURCE is the
    // named source's own, its settings among them.
    let health = report(&mut con, "PGCACHE.HEALTH", None);
    assert_eq!(text(&health, "status"), "ok", "{health:?}");
    let statuses = nested(&health["sources"]);
    assert_eq!(
        redis::from_redis_value::<String>(statuses[A].clone()).unwrap(),
        "ok"
    );
    assert_eq!(text(&nested(&health["config"]), "pg_database"), "app");
    let named_health = report(&mut con, "PGCACHE.HEALTH", Some(A));
    assert_eq!(text(&named_health, "status"), "ok", "{named_health:?}");
    assert_eq!(text(&named_health, "postgres"), "reachable");
    assert!(!named_health.contains_key("sources"), "{named_health:?}");
    let config = nested(&named_health["config"]);
    assert_eq!(text(&config, "pg_database"), A);
    assert_eq!(text(&config, "pg_password"), "(set)", "never the password");
    assert_eq!(
        text(&config, "workers"),
        text(&nested(&health["config"]), "workers"),
        "the server's settings are the server's"
    );
    if invalidation_source() == "replication" {
        assert_eq!(text(&named_health, "replication_slot"), "pgcache_analytics");
        assert_eq!(text(&health, "replication_slot"), "pgcache");
    }

    // RESET SOURCE resets that source's figures only.
    let () = redis::cmd("PGCACHE.STATS")
        .arg(&["RESET", "SOURCE", A])
        .query(&mut con)
        .unwrap();
    let named = report(&mut con, "PGCACHE.STATS", Some(A));
    assert_eq!(figure(&named, "misses"), 0);
    assert_eq!(table_figure(&named, "users", "calls"), 0);
    assert_eq!(
        figure(&report(&mut con, "PGCACHE.STATS", None), "misses"),
        1
    );

    for (command, usage) in [("PGCACHE.STATS", "[RESET]"), ("PGCACHE.HEALTH", "SOURCE")] {
        let e = redis::cmd(command)
            .arg(&["SOURCE", "billing"])
            .query::<redis::Value>(&mut con)
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"no source named "billing""#), "{command}: {e}");
        let e = redis::cmd(command)
            .arg("bogus")
            .query::<redis::Value>(&mut con)
            .unwrap_err()
            .to_string();
        assert!(e.contains(usage), "{command}: {e}");
    }
}

/// The event of `kind` for `key` among the next events (others skipped).
fn event_for(events: &mut redis::PubSub, kind: &str, key: &str) -> serde_json::Value {
    loop {
        let event = next_event(events);
        if event["type"] == kind && event["key"] == key {
            return event;
        }
    }
}

/// Events say whose they are: a named source's carry `"source":"<name>"` and the table as
/// that source names it (an expired key's too, whose name goes on with `@<name>:`); the
/// default source's carry no `source`, as before there were named sources; a hook's stream
/// entries carry it as a field.
#[test]
fn events_name_their_source() {
    let stack = Stack::start_with_sources(
        &default_sql(),
        &[(A, &analytics_sql())],
        &["events", "all", "hooks", "misses ON miss XADD missed"],
    );
    let mut con = stack.con();
    wait_for(
        "the named source's hits served",
        Duration::from_secs(20),
        || (figure(&report(&mut con, "PGCACHE.STATS", Some(A)), "hits_served") == 1).then_some(()),
    );
    let mut sub = stack.con();
    let mut events = subscribe(&mut sub, "pg_cache_events");
    read_name(&mut con, Some(A), 5);
    let named = event_for(&mut events, "cache_miss", r#"{"id":5}"#);
    assert_eq!(named["source"], A, "{named}");
    assert_eq!(named["table"], "users", "{named}");
    read_name(&mut con, None, 5);
    let default = event_for(&mut events, "cache_miss", r#"{"id":5}"#);
    assert!(default.get("source").is_none(), "{default}");

    // An entry that expires: its event names the table, not the key's `@analytics:users`.
    let _: Option<String> = query_through_interrupts(
        &sourced(
            redis::cmd("PGCACHE.READ")
                .arg("users")
                .arg(r#"{"id":6}"#)
                .arg(1)
                .clone(),
            Some(A),
        ),
        &mut con,
    )
    .unwrap();
    let expired = event_for(&mut events, "cache_expire", r#"{"id":6}"#);
    assert_eq!(
        (&expired["source"], &expired["table"]),
        (&A.into(), &"users".into())
    );

    let entries = stream_entries(&mut con, "missed");
    let sources: Vec<Option<&str>> = (entries.iter())
        .filter(|e| e["key"] == r#"{"id":5}"#)
        .map(|e| e.get("source").map(String::as_str))
        .collect();
    assert_eq!(sources, [Some(A), None], "{entries:?}");
}

/// `PGCACHE.HOOK ADD ... SOURCE <name>` takes that source's events only; a hook without
/// SOURCE takes every source's; a source the server does not serve is refused at ADD, and
/// LIST shows the source.
#[test]
fn a_hook_limited_to_one_source() {
    let stack = Stack::start_with_sources(&default_sql(), &[(A, &analytics_sql())], &[]);
    let mut con = stack.con();
    let add = |con: &mut redis::Connection, definition: &str| {
        redis::cmd("PGCACHE.HOOK")
            .arg("ADD")
            .arg(definition.split(' ').collect::<Vec<_>>())
            .query::<()>(con)
    };
    add(
        &mut con,
        "named ON miss SOURCE analytics TABLE users XADD named_misses",
    )
    .unwrap();
    add(&mut con, "every ON miss XADD all_misses").unwrap();
    let e = add(&mut con, "other ON miss SOURCE billing XADD s")
        .unwrap_err()
        .to_string();
    assert!(e.contains(r#"no source named "billing""#), "{e}");
    read_name(&mut con, None, 8);
    read_name(&mut con, Some(A), 8);
    let sources = |con: &mut redis::Connection, stream: &str| -> Vec<Option<String>> {
        (stream_entries(con, stream).into_iter())
            .filter(|e| e["key"] == r#"{"id":8}"#)
            .map(|e| e.get("source").cloned())
            .collect()
    };
    assert_eq!(sources(&mut con, "named_misses"), [Some(A.to_string())]);
    assert_eq!(sources(&mut con, "all_misses"), [None, Some(A.to_string())]);
    let listed: redis::Value = redis::cmd("PGCACHE.HOOK")
        .arg("LIST")
        .query(&mut con)
        .unwrap();
    let listed: Vec<redis::Value> = redis::from_redis_value(listed).unwrap();
    let named = (listed.iter().map(nested))
        .find(|h| redis::from_redis_value::<String>(h["name"].clone()).unwrap() == "named")
        .expect("the hook is listed");
    assert_eq!(text(&named, "source"), A);
    assert_eq!(
        text(&named, "definition"),
        "named ON miss SOURCE analytics TABLE users XADD named_misses"
    );
}

/// A slowlog entry of a named source's call ends with the source's name (an eleventh field);
/// the default source's entries keep their ten.
#[test]
fn slowlog_entries_carry_their_source() {
    let stack = Stack::start_with_sources(
        &default_sql(),
        &[(A, &analytics_sql())],
        &["slowlog_threshold_us", "0"],
    );
    let mut con = stack.con();
    let newest = |con: &mut redis::Connection| -> Vec<redis::Value> {
        let entries: Vec<Vec<redis::Value>> = redis::cmd("PGCACHE.SLOWLOG")
            .arg(&["GET", "1"])
            .query(con)
            .unwrap();
        entries.into_iter().next().expect("an entry")
    };
    read_name(&mut con, Some(A), 11);
    let named = newest(&mut con);
    assert_eq!(named.len(), 11, "{named:?}");
    assert_eq!(
        redis::from_redis_value::<String>(named[10].clone()).unwrap(),
        A
    );
    read_name(&mut con, None, 11);
    assert_eq!(newest(&mut con).len(), 10);
}
