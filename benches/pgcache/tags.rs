//! Section 20, tags (issue #54): what a tagged entry costs in memory, and PING while
//! `PGCACHE.INVALIDATE TAG` drops a tag of 100,000 entries, against PING on the same server
//! idle. The issue's target: PING p99 during it within 2 ms of idle.

use super::{longest_callback_us, percentile, pings_until};
use pgcache_testkit::*;
use std::time::{Duration, Instant};

const ENTRIES: i64 = 100_000;

/// Writes `ENTRIES` rows of `users` into the cache (PGCACHE.WRITE, 1,000 a pipeline), with
/// `tags` after them.
fn write_all(con: &mut redis::Connection, tags: &[&str]) {
    for first in (1..=ENTRIES).step_by(1_000) {
        let mut pipe = redis::pipe();
        for id in first..first + 1_000 {
            let cmd = pipe
                .cmd("PGCACHE.WRITE")
                .arg("users")
                .arg(format!(r#"{{"id":{id}}}"#))
                .arg(format!(r#"{{"id":{id},"name":"user{id}"}}"#))
                .arg(3600);
            if !tags.is_empty() {
                cmd.arg("TAG").arg(tags);
            }
            cmd.ignore();
        }
        pipe.query::<()>(con).unwrap();
    }
}

fn used_memory(con: &mut redis::Connection) -> i64 {
    info_int(con, "memory", "used_memory")
}

pub fn tags(pg: &Pg) {
    println!(
        "\n## 20. Tags: memory per tagged entry, and PING while INVALIDATE TAG drops {ENTRIES} entries\n"
    );
    let redis = Redis::start(&pg.module_args());
    let mut con = redis.connection();
    let empty = used_memory(&mut con);
    write_all(&mut con, &[]);
    let untagged = used_memory(&mut con);
    // The same entries again, now with a tag each, then with a second.
    write_all(&mut con, &["tenant:1"]);
    let one_tag = used_memory(&mut con);
    write_all(&mut con, &["tenant:1", "plan:gold"]);
    let two_tags = used_memory(&mut con);
    let per = |bytes: i64| bytes as f64 / ENTRIES as f64;
    println!("| | bytes per entry |");
    println!("|---|---|");
    println!(
        "| an entry (a row of ~30 bytes, untagged) | {:.0} |",
        per(untagged - empty)
    );
    println!("| its first tag | {:.0} |", per(one_tag - untagged));
    println!("| its second tag | {:.0} |", per(two_tags - one_tag));

    let started = Instant::now();
    let idle = pings_until(&mut con, || started.elapsed() > Duration::from_secs(3));
    let port = redis.port;
    let invalidation = std::thread::spawn(move || {
        let mut con = connect(port);
        let started = Instant::now();
        let dropped: i64 = redis::cmd("PGCACHE.INVALIDATE")
            .arg("TAG")
            .arg("tenant:1")
            .query(&mut con)
            .unwrap();
        (dropped, started.elapsed().as_secs_f64() * 1000.0)
    });
    let busy = pings_until(&mut con, || invalidation.is_finished());
    let (dropped, took_ms) = invalidation.join().unwrap();
    assert_eq!(dropped, ENTRIES);
    println!("\n| PING | pings | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, gaps) in [("idle", &idle), ("during INVALIDATE TAG", &busy)] {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} |",
            gaps.len(),
            percentile(gaps, 0.5),
            percentile(gaps, 0.99),
            gaps[gaps.len() - 1]
        );
    }
    println!(
        "\nINVALIDATE TAG of {dropped} entries took {took_ms:.0} ms; longest pgcache callback on \
         the event loop (STATS longest_callback_us): {:.3} ms",
        longest_callback_us(&mut con) as f64 / 1000.0
    );
}
