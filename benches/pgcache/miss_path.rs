//! Section 17, the miss path (issue #52): misses sent by a worker (`loop_connections 0`) against
//! misses the event loop sends itself (`loop_connections 2`), QUERY and READ, at 1 and 50
//! clients, beside pgbench running the same SELECT at the same concurrency and PING's p50
//! (the one Redis round trip a cache in front of PostgreSQL cannot avoid), and pgbench again
//! with a plan made for every call as pgcache's sessions ask (`CUSTOM_PLANS`). Every call is a
//! miss (random ids of a million rows, `pass_through always`: answers are not cached), and
//! redis-server's CPU time and context switches (all its threads) are counted per miss.

use super::{Pgbench, ROWS, cmd, median, redis_benchmark};
use pgcache_testkit::*;

/// CPU nanoseconds and context switches of every thread of process `pid` so far.
fn usage(pid: u32) -> (u64, u64) {
    let mut cpu_ns = 0;
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let path = task.path();
        if let Ok(schedstat) = std::fs::read_to_string(path.join("schedstat")) {
            cpu_ns += schedstat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(status) = std::fs::read_to_string(path.join("status")) {
            switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (cpu_ns, switches)
}

struct Round {
    rps: f64,
    p50: f64,
    cpu_us: f64,
    switches: f64,
}

fn round(redis: &Redis, clients: usize, command: &[&str]) -> Round {
    let n = if clients == 1 { 6_000 } else { 60_000 };
    let (cpu0, sw0) = usage(redis.pid());
    let csv = redis_benchmark(
        redis.port,
        &[
            "-c",
            &clients.to_string(),
            "-n",
            &n.to_string(),
            "-r",
            &ROWS.to_string(),
        ],
        command,
    );
    let (cpu1, sw1) = usage(redis.pid());
    Round {
        rps: csv.rps,
        p50: csv.p50,
        cpu_us: (cpu1 - cpu0) as f64 / 1000.0 / n as f64,
        switches: (sw1 - sw0) as f64 / n as f64,
    }
}

/// What pgcache's sessions ask of PostgreSQL (`pg::pool`): every run planned for its
/// values, so that a statement fails or answers as PostgreSQL does when sent alone. pgbench's
/// prepared statements switch to a generic plan after five runs; beside this setting its
/// figure shows what the planning costs and what is pgcache's own.
const CUSTOM_PLANS: &str = "-c plan_cache_mode=force_custom_plan";

pub fn miss_path(pg: &Pg) {
    println!(
        "\n## 17. Miss path: sent by a worker vs by the event loop (`loop_connections`), every call a miss, beside pgbench of the same SELECT\n"
    );
    println!(
        "| command | clients | path | misses/s | p50 ms | pgbench tps | misses / pgbench | pgbench tps, a plan per call | misses / that | PING p50 ms | redis-server CPU µs per miss | context switches per miss |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let query_sql = "SELECT id, name, email FROM users WHERE id = $1";
    let query_script =
        format!("\\set id random(1, {ROWS})\nSELECT id, name, email FROM users WHERE id = :id;\n");
    let read_script = format!(
        "\\set id random(1, {ROWS})\n\
         SELECT row_to_json(t)::text FROM \"public\".\"users\" AS t WHERE t.\"id\" = (:id::text)::integer LIMIT 2;\n"
    );
    let commands: [(&str, Vec<&str>, &str); 2] = [
        (
            "QUERY",
            vec!["PGCACHE.QUERY", query_sql, "1", "__rand_int__"],
            &query_script,
        ),
        (
            "READ",
            vec!["PGCACHE.READ", "users", r#"{"id":"__rand_int__"}"#],
            &read_script,
        ),
    ];
    for loop_connections in ["0", "2"] {
        let mut args = pg.module_args();
        args.extend(
            [
                "loop_connections",
                loop_connections,
                "pass_through",
                "always",
            ]
            .map(String::from),
        );
        args.extend(["debug_commands", "yes"].map(String::from));
        let redis = Redis::start(&args);
        let mut con = redis.connection();
        // Statements learned, the schema read and the loop's connections opened.
        cmd(&mut con, &["PGCACHE.DEBUG", "PIPELINE", "ALWAYS"]);
        for id in 1..200 {
            cmd(
                &mut con,
                &["PGCACHE.QUERY", query_sql, "1", &id.to_string()],
            );
            cmd(
                &mut con,
                &["PGCACHE.READ", "users", &format!(r#"{{"id":{id}}}"#)],
            );
        }
        let path = if loop_connections == "0" {
            "worker"
        } else {
            "event loop"
        };
        for (name, command, script) in &commands {
            for clients in [1, 50] {
                let mut rounds = Vec::new();
                let mut tpss = Vec::new();
                let mut custom_tpss = Vec::new();
                let mut pings = Vec::new();
                for _ in 0..3 {
                    rounds.push(round(&redis, clients, command));
                    tpss.push(Pgbench::start(pg, script, clients, 3, &[]).tps());
                    custom_tpss.push(
                        Pgbench::start_with_options(pg, script, clients, 3, &[], CUSTOM_PLANS)
                            .tps(),
                    );
                    pings.push(
                        redis_benchmark(redis.port, &["-c", "1", "-n", "20000"], &["PING"]).p50,
                    );
                }
                let pick = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
                let rps = pick(|r| r.rps);
                let tps = median(tpss);
                let custom_tps = median(custom_tpss);
                println!(
                    "| {name} | {clients} | {path} | {rps:.0} | {:.3} | {tps:.0} | {:.2} | {custom_tps:.0} | {:.2} | {:.3} | {:.1} | {:.2} |",
                    pick(|r| r.p50),
                    rps / tps,
                    rps / custom_tps,
                    median(pings),
                    pick(|r| r.cpu_us),
                    pick(|r| r.switches),
                );
            }
        }
        println!(
            "\n(`{path}`: {} misses went out from the event loop, {} moved to the workers)\n",
            stats_figure(&mut con, "misses_on_loop"),
            stats_figure(&mut con, "misses_loop_to_workers")
        );
    }
}
