//! pgcache on a real 3-primary Redis Cluster (Valkey cluster with PGCACHE_TEST_SERVER): the
//! commands that name cache keys are routed like any key command, and every primary
//! invalidates what it holds.
use pgcache_testkit::*;
use std::process::Command;
use std::time::Duration;

fn users_and_trigger() -> String {
    format!("{USERS_SQL} {TRIGGER_SQL} SELECT pgcache_watch('users');")
}

fn user_key(id: i64) -> String {
    format!(r#"pg_cache:users:{{"id":{id}}}"#)
}

#[test]
fn get_and_mget_are_routed_by_their_keys_and_every_primary_invalidates_its_rows() {
    let cluster = Cluster::start(&users_and_trigger(), 3);
    let mut client = cluster.client();
    for id in 1..=30 {
        let row: Option<String> = redis::cmd("PGCACHE.GET")
            .arg(user_key(id))
            .query(&mut client)
            .unwrap();
        assert_eq!(json(&row.unwrap())["id"], id);
    }
    // The rows landed on their slots' primaries, all three of them, and nowhere else.
    assert_eq!(cluster.assert_keys_in_own_slots(), 30);
    for node in &cluster.nodes {
        let held = cache_entries(&mut node.connection());
        assert!(held > 0, "node {} holds none of the 30 rows", node.port);
    }

    // A node that does not serve the key redirects, as for any key command.
    let key = user_key(1);
    let e = redis::cmd("PGCACHE.GET")
        .arg(&key)
        .query::<Option<String>>(&mut cluster.other_than_owner_of(&key))
        .unwrap_err();
    assert!(format!("{e:?}").to_uppercase().contains("MOVED"), "{e:?}");
    // Keys of different slots in one MGET are refused before pgcache runs.
    let (a, b) = (user_key(1), user_key(2));
    assert_ne!(cluster.slot_of(&a), cluster.slot_of(&b));
    let e = redis::cmd("PGCACHE.MGET")
        .arg(&a)
        .arg(&b)
        .query::<Vec<Option<String>>>(&mut cluster.owner_of(&a))
        .unwrap_err();
    assert!(e.to_string().to_uppercase().contains("CROSSSLOT"), "{e}");
    // The rows of one pk value share a slot across tables, so MGET of one slot works.
    let rows: Vec<Option<String>> = redis::cmd("PGCACHE.MGET")
        .arg(&a)
        .arg(&a)
        .query(&mut client)
        .unwrap();
    assert_eq!(rows.len(), 2);
    // `AFTER <lsn>` is no key: MGET of one slot with it is not CROSSSLOT.
    let rows: Vec<Option<String>> = redis::cmd("PGCACHE.MGET")
        .arg(&a)
        .arg(&a)
        .arg("AFTER")
        .arg("0/0")
        .query(&mut cluster.owner_of(&a))
        .unwrap();
    assert_eq!(rows.len(), 2);

    // redis-cli -c follows the redirection.
    let node = &cluster.nodes[0];
    let out = Command::new("redis-cli")
        .args(["-c", "-p", &node.port.to_string(), "PGCACHE.GET"])
        .arg(user_key(7))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("user7"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // One UPDATE of every row: each primary's listener deletes the rows it holds.
    cluster
        .pg
        .execute("UPDATE users SET name = name || '!' WHERE id <= 30");
    cluster.wait_all_empty("every cached row invalidated");
    let row: Option<String> = redis::cmd("PGCACHE.GET")
        .arg(user_key(5))
        .query(&mut client)
        .unwrap();
    assert_eq!(json(&row.unwrap())["name"], "user5!");
    cluster.assert_keys_in_own_slots();

    // pgcache_flush() tells every node through PostgreSQL.
    for id in 1..=30 {
        let _: Option<String> = redis::cmd("PGCACHE.GET")
            .arg(user_key(id))
            .query(&mut client)
            .unwrap();
    }
    cluster.pg.execute("SELECT pgcache_flush('users')");
    cluster.wait_all_empty("every node flushed");
    flush_reaches_every_primary_from_a_cluster_client(&cluster, &mut client);

    // HEALTH is per node: cluster mode, and the slots each serves.
    let mut slots = 0;
    for node in &cluster.nodes {
        let health = map_reply(&mut node.connection(), "PGCACHE.HEALTH");
        assert_eq!(
            redis::from_redis_value::<String>(health["cluster"].clone()).unwrap(),
            "yes"
        );
        slots += redis::from_redis_value::<i64>(health["cluster_slots"].clone()).unwrap();
    }
    assert_eq!(slots, 16384);
}

/// PGCACHE.FLUSH's tips say "every primary, all must succeed"; a cluster client that follows
/// them (here the redis crate's explicit routing) and `redis-cli --cluster call` empty every node.
fn flush_reaches_every_primary_from_a_cluster_client(
    cluster: &Cluster,
    client: &mut redis::cluster::ClusterConnection,
) {
    use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
    let info: Vec<Vec<redis::Value>> = redis::cmd("COMMAND")
        .arg(&["INFO", "pgcache.flush"])
        .query(client)
        .unwrap();
    // COMMAND INFO's eighth field holds the command tips.
    let tips: Vec<String> = redis::from_redis_value(info[0][7].clone()).unwrap();
    assert!(
        tips.contains(&"request_policy:all_shards".to_string()),
        "{tips:?}"
    );
    assert!(
        tips.contains(&"response_policy:all_succeeded".to_string()),
        "{tips:?}"
    );
    let fill = |client: &mut redis::cluster::ClusterConnection| {
        for id in 1..=30 {
            let _: Option<String> = redis::cmd("PGCACHE.GET")
                .arg(user_key(id))
                .query(client)
                .unwrap();
        }
        assert_eq!(cluster.assert_keys_in_own_slots(), 30);
    };

    fill(client);
    let routing = RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::AllSucceeded),
    ));
    let reply = client
        .route_command(redis::cmd("PGCACHE.FLUSH").arg("users"), routing)
        .unwrap();
    assert_eq!(reply, redis::Value::Okay);
    cluster.wait_all_empty("every primary flushed by the routed FLUSH");

    fill(client);
    run_ok(
        Command::new("redis-cli")
            .args([
                "--cluster",
                "call",
                &format!("127.0.0.1:{}", cluster.nodes[0].port),
            ])
            .args(["PGCACHE.FLUSH", "users", "--cluster-only-masters"]),
    );
    cluster.wait_all_empty("every primary flushed by redis-cli --cluster call");
}

#[test]
fn keyless_commands_answer_or_redirect_like_key_commands() {
    let cluster = Cluster::start(USERS_SQL, 3);
    let key = user_key(3);
    let owners = cluster.slot_owners();
    let slot = cluster.slot_of(&key);
    let owner_port = owners[&slot];
    let mut owner = cluster.owner_of(&key);
    let mut other = cluster.other_than_owner_of(&key);

    // On the owner: answered and cached (twice, so the second READ is a hit).
    for _ in 0..2 {
        let row = read(&mut owner, "users", r#"{"id":3}"#).unwrap().unwrap();
        assert_eq!(json(&row)["id"], 3);
    }
    // Elsewhere: MOVED to the owner, for READ (first use of the table there, then known),
    // MULTIREAD, WRITE and INVALIDATE; nothing written on the wrong node.
    let moved = format!("{slot} 127.0.0.1:{owner_port}");
    for _ in 0..2 {
        let e = read(&mut other, "users", r#"{"id":3}"#).unwrap_err();
        assert!(format!("{e:?}").contains(&moved), "{e:?}");
    }
    let e = multiread(&mut other, "users", r#"[{"id":3}]"#).unwrap_err();
    assert!(format!("{e:?}").contains(&moved), "{e:?}");
    let e = write(&mut other, "users", r#"{"id":3}"#, r#"{"id":3}"#).unwrap_err();
    assert!(format!("{e:?}").contains(&moved), "{e:?}");
    let e = invalidate(&mut other, "users", r#"{"id":3}"#).unwrap_err();
    assert!(format!("{e:?}").contains(&moved), "{e:?}");
    // Keys of different slots in one MULTIREAD: CROSSSLOT, never a partial answer.
    let e = multiread(&mut owner, "users", r#"[{"id":1},{"id":2}]"#).unwrap_err();
    assert!(e.to_string().to_uppercase().contains("CROSSSLOT"), "{e}");
    // redis-cli -c follows READ's redirection like any other.
    let out = Command::new("redis-cli")
        .args(["-c", "-p", &cluster.nodes[0].port.to_string()])
        .args(["PGCACHE.READ", "users", r#"{"id":11}"#])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("user11"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The redirections are not errors of pgcache's.
    let stats = map_reply(&mut other, "PGCACHE.STATS");
    let errors: i64 = redis::from_redis_value(stats["errors"].clone()).unwrap();
    assert_eq!(errors, 0);
    assert_eq!(cluster.assert_keys_in_own_slots(), 2, "rows 3 and 11");
}

#[test]
fn a_promoted_replica_serves_and_nothing_stale_after_the_failover() {
    let mut cluster = Cluster::start(&users_and_trigger(), 3);
    let replica = cluster.add_replica(0);
    let primary_port = cluster.nodes[0].port;
    let owners = cluster.slot_owners();
    let id = (1..=200)
        .find(|&id| owners[&cluster.slot_of(&user_key(id))] == primary_port)
        .expect("a row of the first primary");
    let key = user_key(id);
    let mut client = cluster.client();
    let _: Option<String> = redis::cmd("PGCACHE.GET")
        .arg(&key)
        .query(&mut client)
        .unwrap();
    wait_for("the entry on the replica", Duration::from_secs(10), || {
        let mut con = cluster.nodes[replica].connection();
        let _: () = redis::cmd("READONLY").query(&mut con).unwrap();
        redis::cmd("EXISTS")
            .arg(&key)
            .query::<bool>(&mut con)
            .unwrap()
            .then_some(())
    });

    // The primary goes away, and the row changes while no primary serves its slot: the
    // replica's copy of the entry is stale from now on.
    cluster.nodes[0].stop();
    cluster.pg.execute(&format!(
        "UPDATE users SET name = 'changed' WHERE id = {id}"
    ));
    wait_for("the replica's promotion", Duration::from_secs(30), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut cluster.nodes[replica].connection())
            .ok()?;
        info.contains("role:master").then_some(())
    });
    // The promoted replica serves the slot, and never the stale row.
    let row = wait_for(
        "the promoted node to answer",
        Duration::from_secs(20),
        || {
            redis::cmd("PGCACHE.GET")
                .arg(&key)
                .query::<Option<String>>(&mut cluster.nodes[replica].connection())
                .ok()
        },
    );
    assert_eq!(json(&row.unwrap())["name"], "changed");
    let health = map_reply(&mut cluster.nodes[replica].connection(), "PGCACHE.HEALTH");
    let slots: i64 = redis::from_redis_value(health["cluster_slots"].clone()).unwrap();
    assert!(
        slots > 0,
        "the promoted node serves the failed primary's slots"
    );
    cluster.nodes.remove(0);
    cluster.assert_keys_in_own_slots();
}

#[test]
fn an_acl_limited_user_reads_only_the_keys_its_patterns_allow() {
    let cluster = Cluster::start(
        &format!(
            "{USERS_SQL} CREATE TABLE orders (id integer PRIMARY KEY); INSERT INTO orders VALUES (1);"
        ),
        3,
    );
    // ACL users are per node.
    for node in &cluster.nodes {
        add_acl_user(
            &mut node.connection(),
            "reader",
            &["~pg_cache:users:*", "+@all"],
        );
    }
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("redis://reader:pw@127.0.0.1:{}/", n.port))
        .collect();
    let mut reader = redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap();
    let row: Option<String> = redis::cmd("PGCACHE.GET")
        .arg(user_key(1))
        .query(&mut reader)
        .unwrap();
    assert!(row.is_some());
    let orders = r#"pg_cache:orders:{"id":1}"#;
    let e = redis::cmd("PGCACHE.GET")
        .arg(orders)
        .query::<Option<String>>(&mut reader)
        .unwrap_err();
    assert!(e.to_string().to_uppercase().contains("NOPERM"), "{e}");
    // READ on the node that serves the key: the key it derives is checked too.
    let owner_port = cluster.slot_owners()[&cluster.slot_of(orders)];
    let mut on_owner = connect_as(owner_port, "reader", "pw");
    let e = read(&mut on_owner, "orders", r#"{"id":1}"#).unwrap_err();
    assert!(e.to_string().to_uppercase().contains("NOPERM"), "{e}");
    assert_eq!(cluster.assert_keys_in_own_slots(), 1, "only the users row");
}

#[test]
fn a_slot_resharded_under_load_leaves_no_key_astray() {
    let cluster = Cluster::start(&users_and_trigger(), 3);
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let ids: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut n.connection())
                .unwrap()
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = ["PGCACHE.GET", "PGCACHE.READ"]
        .into_iter()
        .map(|command| {
            let (stop, mut client) = (stop.clone(), cluster.client());
            std::thread::spawn(move || {
                let (mut served, mut failed) = (0, Vec::new());
                let mut id = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    id = id % 200 + 1;
                    let mut request = redis::cmd(command);
                    if command == "PGCACHE.GET" {
                        request.arg(user_key(id));
                    } else {
                        request.arg("users").arg(format!(r#"{{"id":{id}}}"#));
                    }
                    match request.query::<Option<String>>(&mut client) {
                        Ok(Some(row)) if json(&row)["id"] == id => served += 1,
                        other => failed.push(format!("{command} {id}: {other:?}")),
                    }
                }
                (served, failed)
            })
        })
        .collect();
    run_ok(
        Command::new("redis-cli")
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", ports[0]))
            .args(["--cluster-from", &ids[0], "--cluster-to", &ids[1]])
            .args(["--cluster-slots", "1000", "--cluster-yes"]),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in load {
        let (served, failed) = reader.join().unwrap();
        assert!(served > 0);
        assert!(
            failed.is_empty(),
            "{} failed, e.g. {:?}",
            failed.len(),
            &failed[..3.min(failed.len())]
        );
    }
    let check = Command::new("redis-cli")
        .args(["--cluster", "check"])
        .arg(format!("127.0.0.1:{}", ports[0]))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && !report.contains("[ERR]") && !report.contains("[WARNING]"),
        "{report}"
    );
    assert!(cluster.assert_keys_in_own_slots() > 0);
}

/// PGCACHE.QUERY on a cluster: one node answers each statement and parameters (the one
/// serving its result's slot), the others redirect to it, and a cluster client follows.
#[test]
fn query_is_answered_by_one_node_and_redirected_by_the_others() {
    let cluster = Cluster::start(&users_and_trigger(), 3);
    let sql = "SELECT name FROM users WHERE id = $1";
    for id in ["1", "2", "3"] {
        let answers: Vec<redis::RedisResult<String>> = cluster
            .nodes
            .iter()
            .map(|node| {
                redis::cmd("PGCACHE.QUERY")
                    .arg(sql)
                    .arg(1)
                    .arg(id)
                    .query(&mut node.connection())
            })
            .collect();
        let answered: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(answered.len(), 1, "{answers:?}");
        assert_eq!(
            json(answered[0]),
            serde_json::json!([{"name": format!("user{id}")}])
        );
        for e in answers.iter().filter_map(|a| a.as_ref().err()) {
            assert!(format!("{e:?}").to_uppercase().contains("MOVED"), "{e:?}");
        }
    }
    let answer: String = redis::cmd("PGCACHE.QUERY")
        .arg(sql)
        .arg(1)
        .arg("7")
        .query(&mut cluster.client())
        .unwrap();
    assert_eq!(json(&answer), serde_json::json!([{"name": "user7"}]));
}

/// The QUERY hits of every node.
fn cluster_query_hits(cluster: &Cluster) -> i64 {
    cluster
        .nodes
        .iter()
        .map(|n| stats_figure(&mut n.connection(), "query_hits"))
        .sum()
}

fn cluster_query(client: &mut redis::cluster::ClusterConnection, sql: &str, id: i64) -> String {
    redis::cmd("PGCACHE.QUERY")
        .arg(sql)
        .arg(1)
        .arg(id)
        .query(client)
        .unwrap()
}

/// Results live on the node serving their slot, every key in a slot its node serves; a
/// write drops them on the node that holds them (in replication mode only the results its
/// rows are in), and a slot moved away and back brings no result of before the write back.
#[test]
fn query_results_are_cached_on_their_node_and_dropped_there() {
    let cluster = Cluster::start(&users_and_trigger(), 3);
    let mut client = cluster.client();
    let sql = "SELECT name FROM users WHERE id = $1";
    let ids = 1..=12i64;
    wait_for("every result cached", Duration::from_secs(20), || {
        for id in ids.clone() {
            cluster_query(&mut client, sql, id);
        }
        let hits = cluster_query_hits(&cluster);
        for id in ids.clone() {
            cluster_query(&mut client, sql, id);
        }
        (cluster_query_hits(&cluster) - hits == 12).then_some(())
    });
    cluster.assert_keys_in_own_slots();
    let holders = cluster
        .nodes
        .iter()
        .filter(|n| {
            !redis::cmd("KEYS")
                .arg("pg_cache:~q:*")
                .query::<Vec<String>>(&mut n.connection())
                .unwrap()
                .is_empty()
        })
        .count();
    assert!(holders > 1, "results spread over the nodes ({holders})");

    cluster
        .pg
        .execute("UPDATE users SET name = 'renamed' WHERE id = 3");
    wait_for("the new name", Duration::from_secs(10), || {
        (json(&cluster_query(&mut client, sql, 3)) == serde_json::json!([{"name": "renamed"}]))
            .then_some(())
    });
    if invalidation_source() == "replication" {
        let hits = cluster_query_hits(&cluster);
        for id in ids.clone().filter(|&id| id != 3) {
            assert_eq!(
                json(&cluster_query(&mut client, sql, id)),
                serde_json::json!([{"name": format!("user{id}")}])
            );
        }
        assert_eq!(
            cluster_query_hits(&cluster) - hits,
            11,
            "other rows' results kept"
        );
    }

    // Move the slot of id 5's result away (the result goes with it), change the row, and
    // move the slot back: the result from before the change is never answered.
    wait_for("id 5 cached", Duration::from_secs(10), || {
        let hits = cluster_query_hits(&cluster);
        cluster_query(&mut client, sql, 5);
        (cluster_query_hits(&cluster) > hits).then_some(())
    });
    let mut holder = None;
    for node in &cluster.nodes {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("pg_cache:~q:*")
            .query(&mut node.connection())
            .unwrap();
        for key in keys {
            let mut con = node.connection();
            let value: Option<String> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
            if value.is_some_and(|v| json(&v) == serde_json::json!([{"name": "user5"}])) {
                holder = Some((node.port, key));
            }
        }
    }
    let (from, key) = holder.expect("id 5's result is cached on some node");
    let slot = cluster.slot_of(&key);
    let to = cluster
        .nodes
        .iter()
        .map(|n| n.port)
        .find(|&p| p != from)
        .unwrap();
    move_slot(&cluster, slot, from, to);
    let mut old_holder = connect(from);
    let dropped = stats_figure(&mut old_holder, "query_invalidations");
    cluster
        .pg
        .execute("UPDATE users SET name = 'moved' WHERE id = 5");
    wait_for(
        "the old holder to apply the change",
        Duration::from_secs(10),
        || (stats_figure(&mut old_holder, "query_invalidations") > dropped).then_some(()),
    );
    move_slot(&cluster, slot, to, from);
    for _ in 0..3 {
        assert_eq!(
            json(&cluster_query(&mut client, sql, 5)),
            serde_json::json!([{"name": "moved"}])
        );
    }
    cluster.assert_keys_in_own_slots();
}

/// Moves `slot`'s keys from the node on port `from` to the one on `to`, and the slot with
/// them (CLUSTER SETSLOT and MIGRATE, as redis-cli --cluster reshard does).
fn move_slot(cluster: &Cluster, slot: u16, from: u16, to: u16) {
    begin_move(cluster, slot, from, to);
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut node_on(cluster, from).connection())
            .unwrap();
        if keys.is_empty() {
            break;
        }
        migrate(cluster, from, to, &keys);
    }
    end_move(cluster, slot, to);
}

fn node_on(cluster: &Cluster, port: u16) -> &Redis {
    cluster.nodes.iter().find(|n| n.port == port).unwrap()
}

fn node_id(cluster: &Cluster, port: u16) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node_on(cluster, port).connection())
        .unwrap()
}

/// `slot` importing on `to`, migrating on `from`.
fn begin_move(cluster: &Cluster, slot: u16, from: u16, to: u16) {
    let (from_id, to_id) = (node_id(cluster, from), node_id(cluster, to));
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&from_id)
        .query(&mut node_on(cluster, to).connection())
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&to_id)
        .query(&mut node_on(cluster, from).connection())
        .unwrap();
}

/// `keys` moved from the node on port `from` to the one on `to`.
fn migrate(cluster: &Cluster, from: u16, to: u16, keys: &[String]) {
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(keys)
        .query(&mut node_on(cluster, from).connection())
        .unwrap();
}

/// `slot` served by the node on port `to`, as every node is told.
fn end_move(cluster: &Cluster, slot: u16, to: u16) {
    let to_id = node_id(cluster, to);
    for port in cluster.nodes.iter().map(|n| n.port) {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to_id)
            .query(&mut node_on(cluster, port).connection())
            .unwrap();
    }
    cluster.wait_ok();
}

/// A tag's entries are on every primary, each node's members in their entries' slots (as
/// the tag sets are keys of those slots); INVALIDATE TAG sent to every primary drops them.
#[test]
fn a_tag_s_entries_on_every_primary_go_when_each_is_told() {
    let cluster = Cluster::start(&users_and_trigger(), 3);
    for id in 1..=30 {
        let row: Option<String> = redis::cmd("PGCACHE.READ")
            .arg("users")
            .arg(format!(r#"{{"id":{id}}}"#))
            .arg("TAG")
            .arg("tenant:1")
            .query(&mut cluster.owner_of(&user_key(id)))
            .unwrap();
        assert_eq!(json(&row.unwrap())["id"], id);
    }
    // 30 entries and their tag sets, every key in a slot its node serves.
    let keys = cluster.assert_keys_in_own_slots();
    assert!(keys > 30, "{keys} keys: the entries and their tag sets");
    let mut dropped = 0;
    for node in &cluster.nodes {
        let mut con = node.connection();
        let sets: Vec<String> = redis::cmd("KEYS")
            .arg("pg_cache:~tag:*")
            .query(&mut con)
            .unwrap();
        assert!(!sets.is_empty(), "node {} holds no tag set", node.port);
        dropped += redis::cmd("PGCACHE.INVALIDATE")
            .arg("TAG")
            .arg("tenant:1")
            .query::<i64>(&mut con)
            .unwrap();
    }
    assert_eq!(dropped, 30);
    cluster.wait_all_empty("every entry and tag set to go");
}

/// A tag invalidated while its entries' slot moves, the entry already on the new node and
/// its tag's set not yet, or the other way round: a node that cannot reach a member keeps
/// it and answers TRYAGAIN, and once the slot has moved, INVALIDATE TAG sent again to every
/// primary drops the entry.
#[test]
fn a_tag_invalidated_while_its_slot_moves_drops_the_entry_once_it_moved() {
    let cluster = Cluster::start(&users_and_trigger(), 3);
    for entry_first in [true, false] {
        let id = if entry_first { 7 } else { 8 };
        let key = user_key(id);
        let row: Option<String> = redis::cmd("PGCACHE.READ")
            .arg("users")
            .arg(format!(r#"{{"id":{id}}}"#))
            .arg("TAG")
            .arg("moving")
            .query(&mut cluster.owner_of(&key))
            .unwrap();
        assert!(row.is_some());
        let slot = cluster.slot_of(&key);
        let from = cluster.slot_owners()[&slot];
        let to = cluster.nodes.iter().find(|n| n.port != from).unwrap().port;
        let in_slot: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(10)
            .query(&mut node_on(&cluster, from).connection())
            .unwrap();
        let set = in_slot
            .iter()
            .find(|k| k.contains("~tag:"))
            .unwrap()
            .clone();
        begin_move(&cluster, slot, from, to);
        migrate(
            &cluster,
            from,
            to,
            &[if entry_first { &key } else { &set }.clone()],
        );
        let mut answers = Vec::new();
        for node in &cluster.nodes {
            answers.push(
                redis::cmd("PGCACHE.INVALIDATE")
                    .arg("TAG")
                    .arg("moving")
                    .query::<i64>(&mut node.connection()),
            );
        }
        let retry: Vec<&redis::RedisError> =
            answers.iter().filter_map(|a| a.as_ref().err()).collect();
        if entry_first {
            // The old node holds the set and cannot reach the entry.
            assert!(
                retry.len() == 1 && retry[0].code() == Some("TRYAGAIN"),
                "entry moved first: {answers:?}"
            );
        }
        let left: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(10)
            .query(&mut node_on(&cluster, from).connection())
            .unwrap();
        if !left.is_empty() {
            migrate(&cluster, from, to, &left);
        }
        end_move(&cluster, slot, to);
        wait_for(
            "every primary to drop the tag",
            Duration::from_secs(20),
            || {
                cluster
                    .nodes
                    .iter()
                    .all(|node| {
                        redis::cmd("PGCACHE.INVALIDATE")
                            .arg("TAG")
                            .arg("moving")
                            .query::<i64>(&mut node.connection())
                            .is_ok()
                    })
                    .then_some(())
            },
        );
        let on_new: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut node_on(&cluster, to).connection())
            .unwrap();
        assert_eq!(
            on_new, 0,
            "entry first: {entry_first}: {key} outlived its tag"
        );
        cluster.assert_keys_in_own_slots();
    }
}
