//! Section 16 (#39): reads through pgcache beside PostgreSQL's own write-heavy OLTP load.
//! pgbench's schema (`pgbench -i -s 10`: 10 branches, 100 tellers, 1,000,000 accounts)
//! takes its `tpcb-like` transactions from 4 clients the whole run (each updates an
//! account, a teller and a branch and inserts a history row), while 4 readers send a zipf
//! mix: an account by id, a branch row, a branch's tellers joined with their branch, an
//! account's last history rows. The readers alternate between PGCACHE.QUERY and the same
//! statements prepared on PostgreSQL directly, and the peer an application writes by hand
//! (cache-aside: GET, else SELECT and SET with a TTL), segment by segment, in one run:
//! reads/s, hit ratio, mean latency and p50 / p99 per read, and the writers'
//! transactions/s in each segment.

use super::precision::Zipf;
use super::*;
use std::sync::Arc;

const SCALE: usize = 10;
const ACCOUNTS: usize = 100_000 * SCALE;
const BRANCHES: usize = SCALE;
const READERS: usize = 4;
const WRITERS: usize = 4;
const SEGMENT_SECONDS: u64 = 10;
/// Segments per mode, alternating pgcache, PostgreSQL, cache-aside, pgcache, ...
const ROUNDS: usize = 2;

/// pgbench's built-in `tpcb-like` script, at this scale.
const TPCB_LIKE: &str = "\\set aid random(1, 100000 * 10)
\\set bid random(1, 1 * 10)
\\set tid random(1, 10 * 10)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
";

/// One read of a mix: its name, its statement, its share of the mix (percent), and what
/// its parameter is.
type Read = (&'static str, &'static str, u64, Drawn);

/// What a read's parameter is, drawn at random.
#[derive(Clone, Copy)]
enum Drawn {
    /// A branch, uniformly.
    Branch,
    /// An account, zipf-distributed.
    Account,
    /// An account, uniformly: one read again only after about a million others.
    AnyAccount,
}

/// The reads, in the order the table prints them.
const READS: [Read; 4] = [
    (
        "account",
        "SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid = $1",
        70,
        Drawn::Account,
    ),
    BRANCH,
    (
        "tellers of a branch",
        "SELECT t.tid, t.tbalance, b.bbalance FROM pgbench_tellers t \
         JOIN pgbench_branches b ON b.bid = t.bid WHERE t.bid = $1 ORDER BY t.tid",
        10,
        Drawn::Branch,
    ),
    (
        "an account's last history",
        "SELECT tid, delta, mtime FROM pgbench_history WHERE aid = $1 ORDER BY mtime DESC LIMIT 5",
        10,
        Drawn::Account,
    ),
];

/// A branch's row: the writers change each of the 10 about 130 times a second at 1,300
/// transactions/s, so nearly every result is dropped before it is read again.
const BRANCH: Read = (
    "branch",
    "SELECT bid, bbalance FROM pgbench_branches WHERE bid = $1",
    10,
    Drawn::Branch,
);

/// One segment's figures.
struct Segment {
    reads_per_s: f64,
    /// Each read's median and 99th percentile latency, in ms, in `READS`' order.
    p50_ms: Vec<f64>,
    p99_ms: Vec<f64>,
    /// Every read's mean latency, in ms.
    mean_ms: f64,
    hit_ratio: Option<f64>,
    writer_tps: f64,
}

fn schema(pg: &Pg) {
    let out = Command::new(pg_tool("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string()])
        .args(["-U", "app", "-i", "-q", "-s", &SCALE.to_string(), "app"])
        .env("PGPASSWORD", PG_PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The history has no key of its own; its reads by account want an index as any
    // application's would.
    pg.execute(
        "CREATE INDEX ON pgbench_history (aid, mtime);
         SELECT pgcache_watch('pgbench_accounts', 'replication');
         SELECT pgcache_watch('pgbench_branches', 'replication');
         SELECT pgcache_watch('pgbench_tellers', 'replication');
         SELECT pgcache_watch('pgbench_history', 'replication');
         ANALYZE",
    );
}

/// A parameter drawn as `drawn` says.
fn parameter(drawn: Drawn, accounts: &Zipf, rng: &mut Rng) -> i32 {
    match drawn {
        Drawn::Branch => 1 + rng.below(BRANCHES) as i32,
        Drawn::Account => accounts.sample(rng) as i32,
        Drawn::AnyAccount => 1 + rng.below(ACCOUNTS) as i32,
    }
}

/// A read of `mix`, drawn by the shares (a mix of one is always its read).
fn pick(mix: &[Read], rng: &mut Rng) -> usize {
    let total: u64 = mix.iter().map(|r| r.2).sum();
    let mut roll = rng.below(total as usize) as u64;
    for (n, (_, _, share, _)) in mix.iter().enumerate() {
        if roll < *share {
            return n;
        }
        roll -= share;
    }
    0
}

fn history_rows(pg: &Pg) -> i64 {
    pg.client()
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .unwrap()
        .get(0)
}

/// How a segment's readers read.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Pgcache,
    Postgres,
    /// The peer: what an application writes by hand in front of PostgreSQL, a GET, and on a
    /// miss the SELECT and a SET with a TTL of `ASIDE_TTL_SECONDS` (nothing invalidates it:
    /// its answers may be that much older than the database's).
    CacheAside,
}

const ASIDE_TTL_SECONDS: u64 = 1;

/// A row as the cache-aside reader stores it: its columns' values, in order.
fn row_text(row: &postgres::Row) -> String {
    let values: Vec<String> = (0..row.len())
        .map(|i| match row.try_get::<_, Option<i32>>(i) {
            Ok(value) => format!("{value:?}"),
            Err(_) => format!("{:?}", row.get::<_, Option<std::time::SystemTime>>(i)),
        })
        .collect();
    values.join(",")
}

/// One read the cache-aside way: from Redis, else from PostgreSQL, then stored.
fn read_aside(
    con: &mut redis::Connection,
    client: &mut postgres::Client,
    statement: &postgres::Statement,
    n: usize,
    value: i32,
) -> bool {
    let key = format!("aside:{n}:{value}");
    let cached: Option<String> = redis::cmd("GET").arg(&key).query(con).unwrap();
    if cached.is_some() {
        return true;
    }
    let rows = client.query(statement, &[&value]).unwrap();
    let text: Vec<String> = rows.iter().map(row_text).collect();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(text.join("\n"))
        .arg("EX")
        .arg(ASIDE_TTL_SECONDS)
        .query(con)
        .unwrap();
    false
}

/// What a segment reads: the statements, how many readers send them, for how many seconds.
type Mix = (&'static [Read], usize, u64);

/// `readers` readers of `mix` for a segment of `seconds`, through pgcache (`port`),
/// straight to PostgreSQL, or the cache-aside way (Redis on `port` too).
fn segment(
    pg: &Pg,
    port: u16,
    via: Via,
    accounts: &Arc<Zipf>,
    (mix, readers, seconds): Mix,
) -> Segment {
    let mut con = connect(port);
    let hits_before = stats_figure(&mut con, "query_hits");
    let misses_before = stats_figure(&mut con, "query_misses");
    let history_before = history_rows(pg);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let readers: Vec<_> = (0..readers)
        .map(|r| {
            let accounts = accounts.clone();
            let mut client = pg.client();
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x0039_0000 + r as u64);
                let mut con = connect(port);
                let prepared: Vec<_> = mix
                    .iter()
                    .map(|(_, sql, _, _)| client.prepare(sql).unwrap())
                    .collect();
                let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); mix.len()];
                let mut aside_hits = 0u64;
                while Instant::now() < until {
                    let n = pick(mix, &mut rng);
                    let value = parameter(mix[n].3, &accounts, &mut rng);
                    let sent = Instant::now();
                    match via {
                        Via::Pgcache => {
                            let _: String = redis::cmd("PGCACHE.QUERY")
                                .arg(mix[n].1)
                                .arg(1)
                                .arg(value)
                                .query(&mut con)
                                .unwrap();
                        }
                        Via::Postgres => {
                            client.query(&prepared[n], &[&value]).unwrap();
                        }
                        Via::CacheAside => {
                            let hit = read_aside(&mut con, &mut client, &prepared[n], n, value);
                            aside_hits += u64::from(hit);
                        }
                    }
                    latencies[n].push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                (latencies, aside_hits)
            })
        })
        .collect();
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); mix.len()];
    let mut aside_hits = 0;
    for reader in readers {
        let (mine, hits) = reader.join().unwrap();
        aside_hits += hits;
        for (all, mine) in latencies.iter_mut().zip(mine) {
            all.extend(mine);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let writer_tps = (history_rows(pg) - history_before) as f64 / seconds;
    let hits = stats_figure(&mut con, "query_hits") - hits_before;
    let misses = stats_figure(&mut con, "query_misses") - misses_before;
    let reads: usize = latencies.iter().map(Vec::len).sum();
    let mean_ms = latencies.iter().flatten().sum::<f64>() / reads.max(1) as f64;
    for l in &mut latencies {
        l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let at = |p: f64| -> Vec<f64> {
        latencies
            .iter()
            .map(|l| if l.is_empty() { 0.0 } else { percentile(l, p) })
            .collect()
    };
    Segment {
        reads_per_s: reads as f64 / seconds,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        mean_ms,
        hit_ratio: match via {
            Via::Pgcache => Some(hits as f64 / (hits + misses).max(1) as f64),
            Via::Postgres => None,
            Via::CacheAside => Some(aside_hits as f64 / reads.max(1) as f64),
        },
        writer_tps,
    }
}

/// PostgreSQL with pgbench's schema and pgcache in front (replication mode, the defaults
/// plus PGCACHE_BENCH_ARGS), and pgbench's writers running for `seconds`.
fn start(seconds: u64) -> (Pg, Redis, Pgbench) {
    let pg = Pg::start();
    pg.execute(include_str!("../../examples/invalidation_trigger.sql"));
    schema(&pg);
    // PGCACHE_BENCH_ARGS adds settings (`workers 8`) to compare against the defaults.
    let mut args = pg.module_args();
    args.extend(["invalidation_source".to_string(), "replication".to_string()]);
    let extra = std::env::var("PGCACHE_BENCH_ARGS").unwrap_or_default();
    args.extend(extra.split_whitespace().map(str::to_string));
    if !extra.is_empty() {
        println!("settings added: {extra}\n");
    }
    let redis = Redis::start(&args);
    wait_source(&mut redis.connection());
    // Unthrottled, the writers speed up while the reads spare PostgreSQL and take the
    // shared cores from the readers; PGCACHE_BENCH_OLTP_RATE paces them (`pgbench -R`, the
    // issue's 1,300 tps) so both modes read beside the same writes.
    let rate = std::env::var("PGCACHE_BENCH_OLTP_RATE").unwrap_or_default();
    let paced = ["-R", rate.as_str()];
    if !rate.is_empty() {
        println!("writers paced at {rate} transactions/s\n");
    }
    let writers = Pgbench::start(
        &pg,
        TPCB_LIKE,
        WRITERS,
        seconds,
        if rate.is_empty() { &[] } else { &paced },
    );
    (pg, redis, writers)
}

/// `ROUNDS` rounds of one segment per way of reading, in turn (so each sits beside the same
/// writes): through pgcache, straight to PostgreSQL, and through the peer.
fn rounds(pg: &Pg, port: u16, accounts: &Arc<Zipf>, mix: Mix) -> [Vec<Segment>; 3] {
    let mut ways: [Vec<Segment>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for (via, segments) in [Via::Pgcache, Via::Postgres, Via::CacheAside]
            .into_iter()
            .zip(&mut ways)
        {
            segments.push(segment(pg, port, via, accounts, mix));
        }
    }
    ways
}

/// The mean of one figure over segments.
fn mean(segments: &[Segment], figure: fn(&Segment) -> f64) -> f64 {
    segments.iter().map(figure).sum::<f64>() / segments.len() as f64
}

pub fn oltp() {
    println!(
        "\n## 16. Reads beside pgbench's tpcb-like writes (scale {SCALE}, {WRITERS} writers), {READERS} readers of a zipf mix, through PGCACHE.QUERY and straight to PostgreSQL (prepared) in alternating {SEGMENT_SECONDS} s segments (replication mode, default settings)\n"
    );
    let (pg, redis, writers) = start(SEGMENT_SECONDS * (3 * ROUNDS as u64 + 1));
    let accounts = Arc::new(Zipf::new(ACCOUNTS));
    let mix = (&READS[..], READERS, SEGMENT_SECONDS);
    // The first segment only warms both up.
    segment(&pg, redis.port, Via::Pgcache, &accounts, mix);
    let [pgcache, postgres, aside] = rounds(&pg, redis.port, &accounts, mix);
    let writers_tps = writers.tps();
    let names: Vec<&str> = READS.iter().map(|(name, _, _, _)| *name).collect();
    println!(
        "| segment | reads/s | hit ratio | mean ms | p50 ms: {names} | p99 ms: {names} | writers' tps |",
        names = names.join(" / ")
    );
    println!("|---|---|---|---|---|---|---|");
    for (round, ((through, direct), by_hand)) in
        pgcache.iter().zip(&postgres).zip(&aside).enumerate()
    {
        for (name, s) in [
            ("pgcache", through),
            ("PostgreSQL", direct),
            ("cache-aside", by_hand),
        ] {
            let ms = |all: &[f64]| -> String {
                let all: Vec<String> = all.iter().map(|ms| format!("{ms:.2}")).collect();
                all.join(" / ")
            };
            println!(
                "| {name} {} | {:.0} | {} | {:.3} | {} | {} | {:.0} |",
                round + 1,
                s.reads_per_s,
                s.hit_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                s.mean_ms,
                ms(&s.p50_ms),
                ms(&s.p99_ms),
                s.writer_tps
            );
        }
    }
    println!(
        "\nreads through pgcache / straight to PostgreSQL: {:.2}x ({:.0} vs {:.0} reads/s); writers' tps with the reads through pgcache / direct: {:.2}x ({:.0} vs {:.0}; {writers_tps:.0} over the whole run)",
        mean(&pgcache, |s| s.reads_per_s) / mean(&postgres, |s| s.reads_per_s),
        mean(&pgcache, |s| s.reads_per_s),
        mean(&postgres, |s| s.reads_per_s),
        mean(&pgcache, |s| s.writer_tps) / mean(&postgres, |s| s.writer_tps),
        mean(&pgcache, |s| s.writer_tps),
        mean(&postgres, |s| s.writer_tps),
    );
    println!(
        "the peer, cache-aside by hand (GET, else SELECT and SET with a {ASIDE_TTL_SECONDS} s TTL, not invalidated) / straight to PostgreSQL: {:.2}x ({:.0} reads/s); pgcache / cache-aside: {:.2}x",
        mean(&aside, |s| s.reads_per_s) / mean(&postgres, |s| s.reads_per_s),
        mean(&aside, |s| s.reads_per_s),
        mean(&pgcache, |s| s.reads_per_s) / mean(&aside, |s| s.reads_per_s),
    );
    let mut con = redis.connection();
    let listed: Vec<redis::Value> = redis::cmd("PGCACHE.QUERIES").query(&mut con).unwrap();
    let lines: Vec<_> = listed.iter().map(nested).collect();
    let per_read: Vec<String> = READS
        .iter()
        .map(|(name, sql, _, _)| {
            let line = lines.iter().find(|l| {
                redis::from_redis_value::<String>(l["statement"].clone())
                    .is_ok_and(|s| s[..30] == sql[..30])
            });
            let figure = |name: &str| {
                line.and_then(|l| redis::from_redis_value::<i64>(l[name].clone()).ok())
                    .unwrap_or(-1)
            };
            format!(
                "{name}: {} hits, {} misses, {} passed through{}",
                figure("hits"),
                figure("misses"),
                figure("passed_through"),
                if figure("pass_through") == 1 {
                    " (passing through)"
                } else {
                    ""
                }
            )
        })
        .collect();
    println!("per statement: {}", per_read.join("; "));
    println!(
        "misses' stages over the run, p50 / p99 µs: {}; table flushes {} ({} without a scan)",
        miss_stages(&mut con),
        stats_figure(&mut con, "flushes"),
        stats_figure(&mut con, "flushes_without_scan")
    );
}

/// Readers of each dropped statement, per run.
const INVALIDATED_READERS: [usize; 3] = [4, 16, 64];
const INVALIDATED_SECONDS: u64 = 5;

/// The statements of section 17, each read alone.
const DROPPED: [[Read; 1]; 2] = [
    [BRANCH],
    // Each transaction's insert into pgbench_history (no primary key) drops the results of
    // its account (replication mode; every result in notify mode); the account is drawn
    // uniformly, so a result would be read again only after about a million others: none
    // is ever hit.
    [(
        "any account's last history",
        "SELECT tid, delta, mtime FROM pgbench_history WHERE aid = $1 ORDER BY mtime DESC LIMIT 5",
        100,
        Drawn::AnyAccount,
    )],
];

/// Section 17 (#39): statements whose results the writes drop before they are read again,
/// each beside the same writes at 4, 16 and 64 concurrent readers, through PGCACHE.QUERY,
/// straight to PostgreSQL and through the peer (cache-aside by hand) in alternating
/// segments. The branch row is the issue's
/// example, though at these read rates most of its reads come between two changes of the
/// row; the history of a uniformly drawn account is never read twice between two changes.
pub fn invalidated() {
    println!(
        "\n## 17. Statements whose results the writes drop before they are read again, beside pgbench's tpcb-like writes, at {INVALIDATED_READERS:?} readers, through PGCACHE.QUERY, straight to PostgreSQL and the peer (cache-aside by hand: GET, else SELECT and SET with a 1 s TTL) in alternating {INVALIDATED_SECONDS} s segments\n"
    );
    let segments = (DROPPED.len() * INVALIDATED_READERS.len()) as u64 * (3 * ROUNDS as u64 + 1);
    let (pg, redis, writers) = start(INVALIDATED_SECONDS * segments + 5);
    let accounts = Arc::new(Zipf::new(ACCOUNTS));
    println!(
        "| read | readers | pgcache reads/s | PostgreSQL reads/s | ratio | pgcache p50 ms | PostgreSQL p50 ms | difference ms | pgcache p99 ms | PostgreSQL p99 ms | hit ratio | peer reads/s | peer ratio | peer p50 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut stages = Vec::new();
    for (mix, readers) in DROPPED
        .iter()
        .flat_map(|mix| INVALIDATED_READERS.map(|readers| (mix, readers)))
    {
        let mix = (&mix[..], readers, INVALIDATED_SECONDS);
        segment(&pg, redis.port, Via::Pgcache, &accounts, mix);
        let _: () = redis::cmd("PGCACHE.STATS")
            .arg("RESET")
            .query(&mut redis.connection())
            .unwrap();
        let [pgcache, postgres, aside] = rounds(&pg, redis.port, &accounts, mix);
        let (through, direct) = (
            mean(&pgcache, |s| s.reads_per_s),
            mean(&postgres, |s| s.reads_per_s),
        );
        let (p50_through, p50_direct) = (
            mean(&pgcache, |s| s.p50_ms[0]),
            mean(&postgres, |s| s.p50_ms[0]),
        );
        println!(
            "| {} | {readers} | {through:.0} | {direct:.0} | {:.2}x | {p50_through:.3} | {p50_direct:.3} | {:+.3} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2}x | {:.3} |",
            mix.0[0].0,
            through / direct,
            p50_through - p50_direct,
            mean(&pgcache, |s| s.p99_ms[0]),
            mean(&postgres, |s| s.p99_ms[0]),
            mean(&pgcache, |s| s.hit_ratio.unwrap_or(0.0)),
            mean(&aside, |s| s.reads_per_s),
            mean(&aside, |s| s.reads_per_s) / direct,
            mean(&aside, |s| s.p50_ms[0]),
        );
        stages.push(format!(
            "{} at {readers}: {}",
            mix.0[0].0,
            miss_stages(&mut redis.connection())
        ));
    }
    println!("\nmisses' stages, p50 / p99 µs:");
    for line in stages {
        println!("- {line}");
    }
    println!(
        "\nwriters: {:.0} transactions/s over the whole run",
        writers.tps()
    );
}

/// Where misses spent their time since STATS was last reset: each stage's p50 / p99 in µs.
fn miss_stages(con: &mut redis::Connection) -> String {
    let stages: Vec<String> = ["queue", "postgres", "wakeup", "fill", "reply", "total"]
        .iter()
        .map(|stage| {
            format!(
                "{stage} {} / {}",
                stats_figure(con, &format!("miss_{stage}_p50_us")),
                stats_figure(con, &format!("miss_{stage}_p99_us"))
            )
        })
        .collect();
    stages.join(", ")
}
