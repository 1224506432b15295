//! Section 16 (#39): reads through pgcache beside PostgreSQL's own write-heavy OLTP load.
//! pgbench's schema (`pgbench -i -s 10`: 10 branches, 100 tellers, 1,000,000 accounts)
//! takes its `tpcb-like` transactions from 4 clients the whole run (each updates an
//! account, a teller and a branch and inserts a history row), while 4 readers send a zipf
//! mix: an account by id, a branch row, a branch's tellers joined with their branch, an
//! account's last history rows. The readers alternate between PGCACHE.QUERY and the same
//! statements prepared on PostgreSQL directly, segment by segment, in one run: reads/s,
//! hit ratio and p50 per read, and the writers' transactions/s in each segment.

use super::precision::Zipf;
use super::*;
use std::sync::Arc;

const SCALE: usize = 10;
const ACCOUNTS: usize = 100_000 * SCALE;
const BRANCHES: usize = SCALE;
const READERS: usize = 4;
const WRITERS: usize = 4;
const SEGMENT_SECONDS: u64 = 10;
/// Segments per mode, alternating pgcache, PostgreSQL, pgcache, ...
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

/// The reads, in the order the table prints them, with their share of the mix (percent).
const READS: [(&str, &str, u64); 4] = [
    (
        "account",
        "SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid = $1",
        70,
    ),
    (
        "branch",
        "SELECT bid, bbalance FROM pgbench_branches WHERE bid = $1",
        10,
    ),
    (
        "tellers of a branch",
        "SELECT t.tid, t.tbalance, b.bbalance FROM pgbench_tellers t \
         JOIN pgbench_branches b ON b.bid = t.bid WHERE t.bid = $1 ORDER BY t.tid",
        10,
    ),
    (
        "an account's last history",
        "SELECT tid, delta, mtime FROM pgbench_history WHERE aid = $1 ORDER BY mtime DESC LIMIT 5",
        10,
    ),
];

/// One segment's figures.
struct Segment {
    reads_per_s: f64,
    /// Each read's median latency, in ms, in `READS`' order.
    p50_ms: Vec<f64>,
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

/// The parameter of read `n`, zipf-drawn.
fn parameter(n: usize, accounts: &Zipf, rng: &mut Rng) -> i32 {
    match n {
        1 | 2 => 1 + rng.below(BRANCHES) as i32,
        _ => accounts.sample(rng) as i32,
    }
}

fn pick(rng: &mut Rng) -> usize {
    let mut roll = rng.below(100) as u64;
    for (n, (_, _, share)) in READS.iter().enumerate() {
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

/// `READERS` readers for a segment, through pgcache (`port`) or straight to PostgreSQL.
fn segment(pg: &Pg, port: u16, through_pgcache: bool, accounts: &Arc<Zipf>) -> Segment {
    let mut con = connect(port);
    let hits_before = stats_figure(&mut con, "query_hits");
    let misses_before = stats_figure(&mut con, "query_misses");
    let history_before = history_rows(pg);
    let started = Instant::now();
    let until = started + Duration::from_secs(SEGMENT_SECONDS);
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let accounts = accounts.clone();
            let mut client = pg.client();
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x0039_0000 + r as u64);
                let mut con = connect(port);
                let prepared: Vec<_> = READS
                    .iter()
                    .map(|(_, sql, _)| client.prepare(sql).unwrap())
                    .collect();
                let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); READS.len()];
                while Instant::now() < until {
                    let n = pick(&mut rng);
                    let value = parameter(n, &accounts, &mut rng);
                    let sent = Instant::now();
                    if through_pgcache {
                        let _: String = redis::cmd("PGCACHE.QUERY")
                            .arg(READS[n].1)
                            .arg(1)
                            .arg(value)
                            .query(&mut con)
                            .unwrap();
                    } else {
                        client.query(&prepared[n], &[&value]).unwrap();
                    }
                    latencies[n].push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); READS.len()];
    for reader in readers {
        for (all, mine) in latencies.iter_mut().zip(reader.join().unwrap()) {
            all.extend(mine);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let writer_tps = (history_rows(pg) - history_before) as f64 / seconds;
    let hits = stats_figure(&mut con, "query_hits") - hits_before;
    let misses = stats_figure(&mut con, "query_misses") - misses_before;
    let reads: usize = latencies.iter().map(Vec::len).sum();
    Segment {
        reads_per_s: reads as f64 / seconds,
        p50_ms: latencies
            .into_iter()
            .map(|mut l| {
                l.sort_by(|a, b| a.partial_cmp(b).unwrap());
                if l.is_empty() {
                    0.0
                } else {
                    percentile(&l, 0.5)
                }
            })
            .collect(),
        hit_ratio: through_pgcache.then(|| hits as f64 / (hits + misses).max(1) as f64),
        writer_tps,
    }
}

pub fn oltp() {
    println!(
        "\n## 16. Reads beside pgbench's tpcb-like writes (scale {SCALE}, {WRITERS} writers), {READERS} readers of a zipf mix, through PGCACHE.QUERY and straight to PostgreSQL (prepared) in alternating {SEGMENT_SECONDS} s segments (replication mode, default settings)\n"
    );
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
    let accounts = Arc::new(Zipf::new(ACCOUNTS));
    let writers = Pgbench::start(
        &pg,
        TPCB_LIKE,
        WRITERS,
        SEGMENT_SECONDS * (2 * ROUNDS as u64 + 1),
        &[],
    );
    // The first segment only warms both up.
    segment(&pg, redis.port, true, &accounts);
    let mut pgcache = Vec::new();
    let mut postgres = Vec::new();
    for _ in 0..ROUNDS {
        pgcache.push(segment(&pg, redis.port, true, &accounts));
        postgres.push(segment(&pg, redis.port, false, &accounts));
    }
    let writers_tps = writers.tps();
    let names: Vec<&str> = READS.iter().map(|(name, _, _)| *name).collect();
    println!(
        "| segment | reads/s | hit ratio | p50 ms: {} | writers' tps |",
        names.join(" / ")
    );
    println!("|---|---|---|---|---|");
    for (round, (through, direct)) in pgcache.iter().zip(&postgres).enumerate() {
        for (name, s) in [("pgcache", through), ("PostgreSQL", direct)] {
            let p50: Vec<String> = s.p50_ms.iter().map(|ms| format!("{ms:.2}")).collect();
            println!(
                "| {name} {} | {:.0} | {} | {} | {:.0} |",
                round + 1,
                s.reads_per_s,
                s.hit_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                p50.join(" / "),
                s.writer_tps
            );
        }
    }
    let mean = |segments: &[Segment], f: fn(&Segment) -> f64| {
        segments.iter().map(f).sum::<f64>() / segments.len() as f64
    };
    println!(
        "\nreads through pgcache / straight to PostgreSQL: {:.2}x ({:.0} vs {:.0} reads/s); writers' tps with the reads through pgcache / direct: {:.2}x ({:.0} vs {:.0}; {writers_tps:.0} over the whole run)",
        mean(&pgcache, |s| s.reads_per_s) / mean(&postgres, |s| s.reads_per_s),
        mean(&pgcache, |s| s.reads_per_s),
        mean(&postgres, |s| s.reads_per_s),
        mean(&pgcache, |s| s.writer_tps) / mean(&postgres, |s| s.writer_tps),
        mean(&pgcache, |s| s.writer_tps),
        mean(&postgres, |s| s.writer_tps),
    );
    let mut con = redis.connection();
    let stages: Vec<String> = ["queue", "postgres", "wakeup", "fill", "reply", "total"]
        .iter()
        .map(|stage| {
            format!(
                "{stage} {} / {}",
                stats_figure(&mut con, &format!("miss_{stage}_p50_us")),
                stats_figure(&mut con, &format!("miss_{stage}_p99_us"))
            )
        })
        .collect();
    println!(
        "misses' stages over the run, p50 / p99 µs: {}",
        stages.join(", ")
    );
}
