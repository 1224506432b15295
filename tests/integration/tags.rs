//! Tags (`TAG` on READ, MULTIREAD, QUERY and WRITE; `PGCACHE.INVALIDATE TAG`): what a tag
//! drops, that nothing read before it is kept after it, its slices, events and figures, that
//! its membership reaches replicas and survives a reload, that dead members are swept, and a
//! random model of tag invalidations mixed with row changes, PostgreSQL as the oracle.
use pgcache_testkit::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    query_through_interrupts(&c, con)
}

fn invalidate_tags(con: &mut redis::Connection, tags: &[&str]) -> i64 {
    let mut args = vec!["PGCACHE.INVALIDATE", "TAG"];
    args.extend(tags);
    redis::from_redis_value(cmd(con, &args).unwrap()).unwrap()
}

fn exists(con: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(con).unwrap() == 1
}

fn members(con: &mut redis::Connection, set: &str) -> BTreeSet<String> {
    redis::cmd("SMEMBERS").arg(set).query(con).unwrap()
}

/// Waits until `set` holds `n` members (on a replica: until they arrived).
fn wait_members(con: &mut redis::Connection, set: &str, n: usize) {
    wait_for(
        &format!("{n} members in {set}"),
        Duration::from_secs(10),
        || (members(con, set).len() == n).then_some(()),
    );
}

const USER1: &str = r#"pg_cache:users:{"id":1}"#;
const USER2: &str = r#"pg_cache:users:{"id":2}"#;
const USER3: &str = r#"pg_cache:users:{"id":3}"#;
const USER4: &str = r#"pg_cache:users:{"id":4}"#;
const USER5: &str = r#"pg_cache:users:{"id":5}"#;

#[test]
fn every_tagged_command_s_entries_go_with_their_tag_and_no_other() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    cmd(
        &mut con,
        &[
            "PGCACHE.READ",
            "users",
            r#"{"id":1}"#,
            "TAG",
            "tenant:1",
            "plan",
        ],
    )
    .unwrap();
    cmd(
        &mut con,
        &[
            "PGCACHE.MULTIREAD",
            "users",
            r#"[{"id":2},{"id":3}]"#,
            "60",
            "TAG",
            "tenant:1",
        ],
    )
    .unwrap();
    let query = [
        "PGCACHE.QUERY",
        "SELECT name FROM users WHERE id = $1",
        "1",
        "7",
        "TAG",
        "tenant:1",
        "TTL",
        "60",
        "WITHKEY",
    ];
    // A statement's first call names no key; the second is a hit of what it cached.
    cmd(&mut con, &query).unwrap();
    let with_key = cmd(&mut con, &query).unwrap();
    let result_key: String = match &with_key {
        redis::Value::Array(parts) => redis::from_redis_value(parts[1].clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    cmd(
        &mut con,
        &[
            "PGCACHE.WRITE",
            "users",
            r#"{"id":4}"#,
            r#"{"id":4,"name":"w"}"#,
            "60",
            "TAG",
            "tenant:1",
        ],
    )
    .unwrap();
    // Untagged, and tagged otherwise: they stay.
    read(&mut con, "users", r#"{"id":5}"#).unwrap();
    cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":6}"#, "TAG", "tenant:2"],
    )
    .unwrap();
    let tagged = [USER1, USER2, USER3, USER4, result_key.as_str()];
    assert_eq!(
        members(&mut con, "pg_cache:~tag:tenant:1"),
        tagged.iter().map(|k| k.to_string()).collect(),
        "each tagged entry is a member of its tag's set"
    );
    let set_ttl: i64 = redis::cmd("PTTL")
        .arg("pg_cache:~tag:tenant:1")
        .query(&mut con)
        .unwrap();
    assert!(set_ttl > 0, "a tag set ends with its entries: {set_ttl}");
    assert_eq!(invalidate_tags(&mut con, &["tenant:1"]), 5);
    for key in tagged {
        assert!(!exists(&mut con, key), "{key} dropped with its tag");
    }
    assert!(!exists(&mut con, "pg_cache:~tag:tenant:1"));
    // USER1 carried `plan` too: its set's member is dead now, harmless.
    assert!(exists(&mut con, USER5));
    assert!(exists(&mut con, r#"pg_cache:users:{"id":6}"#));
    // What went is read again from PostgreSQL (the WRITE's row too).
    assert_eq!(
        json(&read(&mut con, "users", r#"{"id":4}"#).unwrap().unwrap())["name"],
        "user4"
    );
    // A tag nobody gave drops nothing.
    assert_eq!(invalidate_tags(&mut con, &["nobody", "tenant:1"]), 0);
    let stats = map_reply(&mut con, "PGCACHE.STATS");
    assert_eq!(figure(&stats, "tag_invalidations"), 3);
    assert_eq!(figure(&stats, "tag_entries_dropped"), 5);
    assert_eq!(figure(&stats, "tag_members_added"), 7);
    // The drains emptied the sets themselves: no set was lost (Redis 7.2+ and Valkey tell
    // every removal of a set; a drain's own SPOP of a whole set is none).
    assert_eq!(stats_figure(&mut con, "tag_sets_lost"), 0);
}

#[test]
fn a_hit_with_a_tag_tags_the_entry_it_serves() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    assert!(exists(&mut con, USER1));
    // A hit (the key as sent, then a spelling that is not canonical).
    cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", "a"],
    )
    .unwrap();
    cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{ "id": "1" }"#, "TAG", "b"],
    )
    .unwrap();
    assert_eq!(
        members(&mut con, "pg_cache:~tag:a"),
        [USER1.to_string()].into()
    );
    assert_eq!(
        members(&mut con, "pg_cache:~tag:b"),
        [USER1.to_string()].into()
    );
    assert_eq!(invalidate_tags(&mut con, &["b"]), 1);
    assert!(!exists(&mut con, USER1));
}

/// A fill that read its row before the invalidation is not cached after it with the tag:
/// the call that answers it is answered, nothing kept. Fills that will not carry the tag
/// (untagged, or of other tags) are cached as ever.
#[test]
fn a_fill_in_flight_when_its_tag_is_invalidated_is_not_cached() {
    let stack = Stack::start_with(
        USERS_SQL,
        &["debug_commands", "yes", "loop_connections", "0"],
    );
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":9}"#).unwrap(); // the table is known
    debug(&mut con, "FILLS", "HOLD");
    let port = stack.redis.port;
    let readers: Vec<_> = [
        vec!["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", "t"],
        vec!["PGCACHE.READ", "users", r#"{"id":2}"#],
        vec!["PGCACHE.READ", "users", r#"{"id":3}"#, "TAG", "other"],
    ]
    .into_iter()
    .enumerate()
    .map(|(started, args)| {
        let reader = std::thread::spawn(move || {
            let mut con = connect(port);
            cmd(&mut con, &args)
        });
        // One at a time, each fill on a worker of its own.
        let held = (started + 1).to_string();
        wait_for("the fill to be held", Duration::from_secs(10), || {
            (debug(&mut con, "FILLS", "HELD") == held).then_some(())
        });
        reader
    })
    .collect();
    assert_eq!(invalidate_tags(&mut con, &["t"]), 0);
    debug(&mut con, "FILLS", "RELEASE");
    for (id, reader) in (1..).zip(readers) {
        let answer: Option<String> =
            redis::from_redis_value(reader.join().unwrap().unwrap()).unwrap();
        assert_eq!(json(&answer.unwrap())["name"], format!("user{id}"));
    }
    wait_for("the fills to end", Duration::from_secs(10), || {
        (stats_figure(&mut con, "fills_in_flight") == 0).then_some(())
    });
    assert!(
        !exists(&mut con, USER1),
        "read before the invalidation: not cached"
    );
    assert!(exists(&mut con, USER2), "untagged: cached");
    assert!(exists(&mut con, USER3), "of another tag: cached");
    // The next tagged read caches and tags it.
    cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", "t"],
    )
    .unwrap();
    assert!(exists(&mut con, USER1));
    assert_eq!(
        members(&mut con, "pg_cache:~tag:t"),
        [USER1.to_string()].into()
    );
}

#[test]
fn a_big_tag_goes_in_slices_and_its_event_names_some_keys() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let mut sub = stack.redis.connection();
    let mut pubsub = subscribe(&mut sub, "pg_cache_events");
    const N: i64 = 20_000;
    let mut pipe = redis::pipe();
    for id in 1..=N {
        pipe.cmd("PGCACHE.WRITE")
            .arg("users")
            .arg(format!(r#"{{"id":{id}}}"#))
            .arg(format!(r#"{{"id":{id}}}"#))
            .arg(600)
            .arg("TAG")
            .arg("big")
            .ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    let size: i64 = redis::cmd("SCARD")
        .arg("pg_cache:~tag:big")
        .query(&mut con)
        .unwrap();
    assert_eq!(size, N);
    // Another client is served while the tag goes (the reply comes after the last slice).
    assert_eq!(invalidate_tags(&mut con, &["big"]), N);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("pg_cache:users:*")
        .query(&mut con)
        .unwrap();
    assert!(left.is_empty(), "{} entries left", left.len());
    // After the WRITEs' events.
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let event = loop {
        let message: String = pubsub.get_message().unwrap().get_payload().unwrap();
        let event = json(&message);
        if event["type"] == "cache_tag_invalidate" {
            break event;
        }
    };
    assert_eq!(event["tag"], "big");
    assert_eq!(event["key"], "big");
    assert_eq!(event["count"], N);
    let keys = event["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 100, "the event names up to 100 keys");
    assert!(keys[0].as_str().unwrap().starts_with("pg_cache:users:"));
}

/// On the replication source, whose restarted server keeps what it saved (the notify
/// source's drops it all).
#[test]
fn a_tag_s_membership_reaches_replicas_and_survives_a_restart_and_a_failover() {
    let mut stack = Stack::start_with(USERS_SQL, &["invalidation_source", "replication"]);
    let mut con = stack.con();
    // The replica follows the replication source too, so that, promoted, it keeps its cache.
    let replica = stack.start_replica_with(&stack.redis, &["invalidation_source", "replication"]);
    let mut replica_con = replica.connection();
    cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", "t"],
    )
    .unwrap();
    cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":2}"#, "TAG", "t"],
    )
    .unwrap();
    wait_members(&mut replica_con, "pg_cache:~tag:t", 2);
    // Saved and loaded again: the membership is data like the entries.
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    stack.redis.restart();
    let mut con = stack.con();
    wait_hits_served(&mut con);
    assert!(
        exists(&mut con, USER1),
        "the restarted server kept its entries"
    );
    assert_eq!(members(&mut con, "pg_cache:~tag:t").len(), 2);
    assert_eq!(invalidate_tags(&mut con, &["t"]), 2);
    wait_for("the replica to drop them", Duration::from_secs(10), || {
        (!exists(&mut replica_con, USER1) && !exists(&mut replica_con, USER2)).then_some(())
    });
    assert!(!exists(&mut replica_con, "pg_cache:~tag:t"));
    // A replica's tagged hit adds nothing (its dataset is its primary's).
    read_until_cached(&mut con, "users", r#"{"id":3}"#);
    wait_for(
        "the replica to hold user 3",
        Duration::from_secs(10),
        || exists(&mut replica_con, USER3).then_some(()),
    );
    cmd(
        &mut replica_con,
        &["PGCACHE.READ", "users", r#"{"id":3}"#, "TAG", "t"],
    )
    .unwrap();
    assert!(!exists(&mut replica_con, "pg_cache:~tag:t"));
    // A failover: the promoted replica holds the sets its primary wrote, and drops them.
    cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":4}"#, "TAG", "u"],
    )
    .unwrap();
    wait_members(&mut replica_con, "pg_cache:~tag:u", 1);
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut replica_con)
        .unwrap();
    assert_eq!(invalidate_tags(&mut replica_con, &["u"]), 1);
    assert!(!exists(&mut replica_con, USER4));
}

#[test]
fn a_hook_takes_the_tag_s_event() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let _: String = redis::cmd("PGCACHE.HOOK")
        .arg(&["ADD", "tags", "ON", "tag_invalidate", "XADD", "tags:log"])
        .query(&mut con)
        .unwrap();
    cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", "t"],
    )
    .unwrap();
    assert_eq!(invalidate_tags(&mut con, &["t", "other"]), 1);
    let entries = stream_entries(&mut con, "tags:log");
    assert_eq!(entries.len(), 2, "one entry per tag: {entries:?}");
    assert_eq!(entries[0]["type"], "cache_tag_invalidate");
    assert_eq!(entries[0]["tag"], "t");
    assert_eq!(entries[0]["count"], "1");
    assert_eq!(json(&entries[0]["keys"]), serde_json::json!([USER1]));
    assert_eq!(entries[1]["tag"], "other");
    assert_eq!(entries[1]["count"], "0");
}

#[test]
fn members_whose_entries_went_are_swept_as_the_set_grows() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let write_tagged = |con: &mut redis::Connection, ids: std::ops::RangeInclusive<i64>, ttl| {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("PGCACHE.WRITE")
                .arg("users")
                .arg(format!(r#"{{"id":{id}}}"#))
                .arg("{}")
                .arg(ttl)
                .arg("TAG")
                .arg("t")
                .ignore();
        }
        pipe.query::<()>(con).unwrap();
    };
    write_tagged(&mut con, 1..=100, 600);
    // Their entries go (as expiry or eviction would take them).
    let mut pipe = redis::pipe();
    for id in 1..=100 {
        pipe.cmd("DEL")
            .arg(format!(r#"pg_cache:users:{{"id":{id}}}"#))
            .ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    write_tagged(&mut con, 101..=400, 600);
    let size: i64 = redis::cmd("SCARD")
        .arg("pg_cache:~tag:t")
        .query(&mut con)
        .unwrap();
    let swept = stats_figure(&mut con, "tag_members_swept");
    // 300 adds, each checking 3 random members: a dead member escapes all of them with a
    // chance of about 3 %, so about 3 of the 100 are left.
    assert!(swept >= 80, "{swept} swept");
    assert_eq!(size, 400 - swept);
}

#[test]
fn tags_are_checked() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    let long = "x".repeat(201);
    let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
    let mut too_many = vec!["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG"];
    too_many.extend(many.iter().map(String::as_str));
    for (args, expected) in [
        (
            vec!["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG"],
            "at least one",
        ),
        (
            vec!["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", "SOURCE", "x"],
            "at least one",
        ),
        (
            vec!["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", &long],
            "1 to 200 bytes",
        ),
        (too_many, "at most 16"),
        (
            vec!["PGCACHE.GET", r#"pg_cache:users:{"id":1}"#, "TAG", "t"],
            "derive their keys",
        ),
        (vec!["PGCACHE.INVALIDATE", "TAG"], "wrong number"),
        (
            vec!["PGCACHE.INVALIDATE", "TAG", "t", "SOURCE", "b"],
            "option word",
        ),
        (
            vec!["PGCACHE.WRITE", "users", r#"{"id":1}"#, "{}", "TAG"],
            "at least one",
        ),
    ] {
        let e = cmd(&mut con, &args).unwrap_err().to_string();
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    // The ttl comes before TAG; after it, every argument up to an option is a tag.
    cmd(
        &mut con,
        &[
            "PGCACHE.READ",
            "users",
            r#"{"id":1}"#,
            "30",
            "TAG",
            "a",
            "60",
            "MAXSTALE",
            "1000",
        ],
    )
    .unwrap();
    assert_eq!(
        members(&mut con, "pg_cache:~tag:60"),
        [USER1.to_string()].into()
    );
    let ttl: i64 = redis::cmd("TTL").arg(USER1).query(&mut con).unwrap();
    assert!((1..=30).contains(&ttl), "{ttl}");
}

/// The model: rows 1-10 are never changed in PostgreSQL and carry what PGCACHE.WRITE put
/// there (a fact PostgreSQL does not hold) until their tenant's tag is invalidated; rows
/// 11-40 change (values and tenants) in PostgreSQL. Reads and queries, tagged by tenant (and
/// some by `all`), must answer what the model says: PostgreSQL's row or result, or the
/// written row; after every INVALIDATE TAG, none of the keys the model saw given that tag
/// is left.
#[test]
fn a_random_model_of_tag_invalidations_and_row_changes() {
    let seed = seed_from_env(0x7a95_0054);
    // The replication source, waited for after each change: the model then knows when each
    // entry went (a change applied later could drop an entry a later tagged call refilled).
    let stack = Stack::start_with(
        &format!(
            "{TRIGGER_SQL}
             CREATE TABLE items (id integer PRIMARY KEY, tenant integer NOT NULL, v integer NOT NULL);
             INSERT INTO items SELECT g, g % 3, g FROM generate_series(1, 40) g;
             SELECT pgcache_watch('items', 'replication');"
        ),
        &["invalidation_source", "replication"],
    );
    let mut con = stack.con();
    let mut pg = stack.pg.client();
    let mut rng = Rng::new(seed);
    // Rows PGCACHE.WRITE put in the cache (rows 1-10), by id.
    let mut written: BTreeMap<i64, String> = BTreeMap::new();
    // The keys the model gave each tag since its last invalidation.
    let mut tagged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut lsn = String::from("0/0");
    let (mut reads, mut queries, mut invalidations, mut changes) = (0, 0, 0, 0);
    for step in 0..400 {
        let tenant = rng.below_i64(3);
        let mut tags = vec![format!("tenant:{tenant}")];
        if rng.chance(30) {
            tags.push("all".into());
        }
        match rng.below(10) {
            0 | 1 => {
                let id = 11 + rng.below_i64(30);
                if rng.chance(70) {
                    pg.execute("UPDATE items SET v = v + 1 WHERE id = $1", &[&(id as i32)])
                        .unwrap();
                } else {
                    let to = rng.below_i64(3) as i32;
                    pg.execute(
                        "UPDATE items SET tenant = $2 WHERE id = $1",
                        &[&(id as i32), &to],
                    )
                    .unwrap();
                }
                lsn = pg
                    .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                    .unwrap()
                    .get(0);
                wait_applied(&mut con, &lsn);
                // The change dropped the row's entry: what tagged it is gone with it (its set
                // may sweep it, and a later entry of the key need not carry the tags).
                forget(&mut tagged, &item_key(id));
                // And it may have dropped any query result (the model does not say which).
                for keys in tagged.values_mut() {
                    keys.retain(|key| !key.starts_with("pg_cache:~q:"));
                }
                changes += 1;
            }
            2 => {
                let id = 1 + rng.below_i64(10);
                let t: i32 = pg
                    .query_one("SELECT tenant FROM items WHERE id = $1", &[&(id as i32)])
                    .unwrap()
                    .get(0);
                let row = format!(r#"{{"id":{id},"tenant":{t},"v":-{step}}}"#);
                let mut args = vec![
                    "PGCACHE.WRITE".to_string(),
                    "items".into(),
                    format!(r#"{{"id":{id}}}"#),
                    row.clone(),
                    "600".into(),
                    "TAG".into(),
                    format!("tenant:{t}"),
                ];
                if rng.chance(50) {
                    args.push("all".into());
                    tagged.entry("all".into()).or_default().insert(item_key(id));
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                cmd(&mut con, &args).unwrap();
                tagged
                    .entry(format!("tenant:{t}"))
                    .or_default()
                    .insert(item_key(id));
                written.insert(id, row);
            }
            3 => {
                let tag = if rng.chance(20) {
                    "all".to_string()
                } else {
                    format!("tenant:{tenant}")
                };
                // The set may also hold keys the model forgot (a member whose entry went
                // stays until swept, and a later entry of its key goes with the tag too):
                // everything the set holds goes, so the model forgets it all.
                let held = members(&mut con, &format!("pg_cache:~tag:{tag}"));
                invalidate_tags(&mut con, &[&tag]);
                invalidations += 1;
                let expected = tagged.remove(&tag).unwrap_or_default();
                for key in &expected {
                    assert!(
                        !exists(&mut con, key),
                        "seed {seed:#x} step {step}: {key} served after INVALIDATE TAG {tag}"
                    );
                }
                for key in expected.iter().chain(&held) {
                    if let Some(id) = item_id(key) {
                        written.remove(&id);
                    }
                    forget(&mut tagged, key);
                }
            }
            4..=6 => {
                let id = 1 + rng.below_i64(40);
                let pk = format!(r#"{{"id":{id}}}"#);
                // Rows PostgreSQL changes are read after the last change; the others from
                // the cache (an `AFTER` read may take PostgreSQL's row over the written one).
                let mut args = vec!["PGCACHE.READ", "items", &pk];
                if id > 10 {
                    args.extend(["AFTER", &lsn]);
                }
                args.push("TAG");
                args.extend(tags.iter().map(String::as_str));
                // A tagged call is served only an entry in each of its tags' sets: a written
                // row that is not is dropped, and PostgreSQL's read.
                let key = item_key(id);
                let carries = tags.iter().all(|tag| {
                    redis::cmd("SISMEMBER")
                        .arg(format!("pg_cache:~tag:{tag}"))
                        .arg(&key)
                        .query::<i64>(&mut con)
                        .unwrap()
                        == 1
                });
                if !carries {
                    written.remove(&id);
                }
                let answer: Option<String> =
                    redis::from_redis_value(cmd(&mut con, &args).unwrap()).unwrap();
                let expected = match written.get(&id) {
                    Some(row) => row.clone(),
                    None => pg
                        .query_one(
                            "SELECT row_to_json(i)::text FROM items i WHERE id = $1",
                            &[&(id as i32)],
                        )
                        .unwrap()
                        .get(0),
                };
                assert_eq!(
                    json(&answer.unwrap()),
                    json(&expected),
                    "seed {seed:#x} step {step}: READ {id}"
                );
                for tag in &tags {
                    tagged.entry(tag.clone()).or_default().insert(item_key(id));
                }
                reads += 1;
            }
            _ => {
                let sql = "SELECT id, v FROM items WHERE tenant = $1 AND id > 10 ORDER BY id";
                let t = tenant.to_string();
                let mut args = vec![
                    "PGCACHE.QUERY",
                    sql,
                    "1",
                    &t,
                    "AFTER",
                    &lsn,
                    "WITHKEY",
                    "TAG",
                ];
                args.extend(tags.iter().map(String::as_str));
                let reply = cmd(&mut con, &args).unwrap();
                let redis::Value::Array(parts) = reply else {
                    panic!("{reply:?}")
                };
                let result: String = redis::from_redis_value(parts[0].clone()).unwrap();
                let expected: String = pg
                    .query_one(
                        "SELECT coalesce(json_agg(r), '[]')::text FROM \
                         (SELECT id, v FROM items WHERE tenant = $1 AND id > 10 ORDER BY id) r",
                        &[&(tenant as i32)],
                    )
                    .unwrap()
                    .get(0);
                assert_eq!(
                    json(&result),
                    json(&expected),
                    "seed {seed:#x} step {step}: QUERY of tenant {tenant}"
                );
                if let Ok(key) = redis::from_redis_value::<String>(parts[1].clone()) {
                    for tag in &tags {
                        tagged.entry(tag.clone()).or_default().insert(key.clone());
                    }
                }
                queries += 1;
            }
        }
    }
    eprintln!(
        "tags model: seed {seed:#x}, {reads} reads, {queries} queries, {changes} changes, \
         {invalidations} tag invalidations"
    );
    assert!(invalidations > 10 && reads > 50 && queries > 30);
}

/// The model forgets that `key` carries any tag (its entry went).
fn forget(tagged: &mut BTreeMap<String, BTreeSet<String>>, key: &str) {
    for keys in tagged.values_mut() {
        keys.remove(key);
    }
}

fn item_key(id: i64) -> String {
    format!(r#"pg_cache:items:{{"id":{id}}}"#)
}

fn item_id(key: &str) -> Option<i64> {
    let pk = key.strip_prefix("pg_cache:items:")?;
    json(pk)["id"].as_i64()
}

/// During CLIENT PAUSE WRITE (a failover under way) nothing may be propagated: a tagged hit
/// is served and adds nothing, and the server lives.
#[test]
fn a_tagged_hit_while_writes_are_paused_adds_nothing() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "20000", "WRITE"])
        .query(&mut con)
        .unwrap();
    let row: Option<String> = redis::from_redis_value(
        cmd(
            &mut con,
            &["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", "t"],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(json(&row.unwrap())["id"], 1);
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut con).unwrap();
    assert!(!exists(&mut con, "pg_cache:~tag:t"));
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

/// A tagged call is served only entries that carry its tags: one cached by an untagged call
/// (here a WRITE, a fact PostgreSQL does not hold) before an INVALIDATE TAG of those tags is
/// read afresh, by READ, MULTIREAD, WITHAGE and QUERY alike.
#[test]
fn a_tagged_call_is_not_served_an_entry_cached_without_its_tags() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    for id in 1..=4 {
        write(
            &mut con,
            "users",
            &format!(r#"{{"id":{id}}}"#),
            &format!(r#"{{"id":{id},"name":"stale"}}"#),
        )
        .unwrap();
    }
    assert_eq!(invalidate_tags(&mut con, &["t"]), 0);
    let name = |value: redis::Value| -> String {
        let row: Option<String> = redis::from_redis_value(value).unwrap();
        json(&row.unwrap())["name"].as_str().unwrap().to_string()
    };
    let read1 = cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", "t"],
    )
    .unwrap();
    assert_eq!(name(read1), "user1");
    let spelled = cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":"2"}"#, "TAG", "t"],
    )
    .unwrap();
    assert_eq!(name(spelled), "user2");
    let rows: Vec<Option<String>> = redis::from_redis_value(
        cmd(
            &mut con,
            &["PGCACHE.MULTIREAD", "users", r#"[{"id":3}]"#, "TAG", "t"],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(json(rows[0].as_deref().unwrap())["name"], "user3");
    let aged = cmd(
        &mut con,
        &[
            "PGCACHE.READ",
            "users",
            r#"{"id":4}"#,
            "WITHAGE",
            "TAG",
            "t",
        ],
    )
    .unwrap();
    let redis::Value::Array(parts) = aged else {
        panic!("{aged:?}")
    };
    assert_eq!(name(parts[0].clone()), "user4");
    // Now they carry it, and hit.
    let again = cmd(
        &mut con,
        &["PGCACHE.READ", "users", r#"{"id":1}"#, "TAG", "t"],
    )
    .unwrap();
    assert_eq!(name(again), "user1");
    assert_eq!(stats_figure(&mut con, "tag_untagged_dropped"), 4);
    // A QUERY result cached untagged is run again for a tagged call.
    let sql = "SELECT name FROM users WHERE id = $1";
    cmd(&mut con, &["PGCACHE.QUERY", sql, "1", "9"]).unwrap();
    cmd(&mut con, &["PGCACHE.QUERY", sql, "1", "9"]).unwrap();
    let misses = stats_figure(&mut con, "query_misses");
    cmd(&mut con, &["PGCACHE.QUERY", sql, "1", "9", "TAG", "t"]).unwrap();
    assert_eq!(stats_figure(&mut con, "query_misses"), misses + 1);
    cmd(&mut con, &["PGCACHE.QUERY", sql, "1", "9", "TAG", "t"]).unwrap();
    assert_eq!(stats_figure(&mut con, "query_misses"), misses + 1);
}

/// Memory pressure may evict a tag's set and leave some of its entries: those go with it
/// (read as the set goes), so an INVALIDATE TAG after the eviction still drops every entry
/// the tag was given. Random eviction of about half the keys takes some sets and leaves
/// some of each one's entries.
#[test]
fn the_entries_of_an_evicted_tag_set_go_with_it() {
    let stack = Stack::start(USERS_SQL);
    let mut con = stack.con();
    const TAGS: i64 = 40;
    const PER_TAG: i64 = 10;
    let mut pipe = redis::pipe();
    for id in 1..=TAGS * PER_TAG + 2_000 {
        let write = pipe
            .cmd("PGCACHE.WRITE")
            .arg("users")
            .arg(format!(r#"{{"id":{id}}}"#))
            .arg(format!(r#"{{"id":{id}}}"#))
            .arg(600);
        if id <= TAGS * PER_TAG {
            write.arg("TAG").arg(format!("t{}", (id - 1) / PER_TAG));
        }
        write.ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    let set = |tag: &str| format!("pg_cache:~tag:{tag}");
    let given: BTreeMap<String, BTreeSet<String>> = (0..TAGS)
        .map(|t| {
            let tag = format!("t{t}");
            let keys = members(&mut con, &set(&tag));
            assert_eq!(keys.len() as i64, PER_TAG, "{tag}");
            (tag, keys)
        })
        .collect();
    cmd(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"],
    )
    .unwrap();
    // Lowered a step at a time (the overhead Redis counts moves too) until some sets went.
    let dataset = info_int(&mut con, "memory", "used_memory_dataset");
    let gone = wait_for("tag sets evicted", Duration::from_secs(30), || {
        let used = info_int(&mut con, "memory", "used_memory");
        let limit = (used - dataset / 20).to_string();
        cmd(&mut con, &["CONFIG", "SET", "maxmemory", &limit]).unwrap();
        let gone: Vec<&String> = (given.keys())
            .filter(|tag| !exists(&mut con, &set(tag)))
            .collect();
        (gone.len() >= 5).then_some(gone)
    });
    cmd(&mut con, &["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    let lost = gone.len() as i64;
    for tag in gone {
        invalidate_tags(&mut con, &[tag]);
        // Where the server could not tell the set's members, the source's flush (its hits
        // miss from its start) goes on after the reply: its end is waited for.
        wait_for("the flush to end", Duration::from_secs(30), || {
            (stats_figure(&mut con, "flushes_running") == 0).then_some(())
        });
        let left: Vec<&String> = (given[tag].iter())
            .filter(|key| exists(&mut con, key))
            .collect();
        assert!(
            left.is_empty(),
            "{tag}'s set was evicted, {left:?} served on"
        );
    }
    assert!(stats_figure(&mut con, "tag_sets_lost") >= lost);
    // Redis 7.2 and Valkey say what an evicted set held: only its entries went; older
    // servers only its name: the source's entries were flushed.
    let (orphans, flushes) = (
        stats_figure(&mut con, "tag_orphans_dropped"),
        stats_figure(&mut con, "flushes"),
    );
    assert!(orphans > 0 || flushes > 0, "{orphans} {flushes}");
}
