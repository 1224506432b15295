//! The figures of a chaos run, printed as the Markdown RELIABILITY.md records.

use crate::faults::{ALL, Window};
use crate::load::{Pings, Tally};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The `q` quantile (0..=1) of `values`, or None when there are none.
pub fn quantile(values: &mut [Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let at = ((values.len() - 1) as f64 * q).round() as usize;
    Some(values[at])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0))
}

/// PING latencies sent between `from` and `to`, and how many got no answer.
fn pings_between(pings: &Pings, from: Instant, to: Instant) -> (Vec<Duration>, usize) {
    let pings = pings.lock().unwrap();
    let inside = pings
        .iter()
        .filter(|(sent, _)| *sent >= from && *sent <= to);
    let answered: Vec<Duration> = inside.clone().filter_map(|(_, d)| *d).collect();
    let unanswered = inside.filter(|(_, d)| d.is_none()).count();
    (answered, unanswered)
}

/// What a run found beyond the clients' tally.
pub struct Findings {
    pub crashes: u64,
    /// Raw entries older than their row once notifications arrived, after recoveries.
    pub stale: u64,
    pub committed: u64,
    /// Rows served older than due, and of those the ones no fault explains.
    pub old: u64,
    pub old_outside_faults: u64,
}

/// Prints the run's figures; `baseline` is the stretch before the first fault.
pub fn print(
    tally: &Tally,
    windows: &[Window],
    pings: &Pings,
    baseline: (Instant, Instant),
    findings: &Findings,
) {
    let Findings {
        crashes,
        stale,
        committed,
        old,
        old_outside_faults,
    } = *findings;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    println!("\n| figure | value |\n|---|---|");
    for (name, value) in [
        ("requests", count(&tally.requests)),
        ("rows", count(&tally.rows)),
        ("nils", count(&tally.nils)),
        ("errors", count(&tally.errors)),
        ("PostgreSQL writes committed", committed),
        ("faults injected", windows.len() as u64),
        ("crashes", crashes),
        ("requests without a reply", count(&tally.no_reply)),
        (
            "replies neither row, nil nor error",
            count(&tally.malformed),
        ),
        (
            "wrong rows (another key's, or never committed)",
            count(&tally.wrong_rows),
        ),
        (
            "rows older than the bound, during an outage or a restart",
            old - old_outside_faults,
        ),
        ("rows older than the bound, otherwise", old_outside_faults),
        (
            "stale entries after a recovery (raw keys, both nodes)",
            stale,
        ),
    ] {
        println!("| {name} | {value} |");
    }
    let (mut calm, _) = pings_between(pings, baseline.0, baseline.1);
    println!(
        "\nPING p99 without a fault: {} ms\n\n\
         | fault | times | recovery p50 ms | recovery p99 ms | PING p99 ms | PINGs unanswered |\n\
         |---|---|---|---|---|---|",
        ms(quantile(&mut calm, 0.99))
    );
    for fault in ALL {
        let of: Vec<&Window> = windows.iter().filter(|w| w.fault == fault).collect();
        if of.is_empty() {
            continue;
        }
        let mut recoveries: Vec<Duration> = of.iter().filter_map(|w| w.recovery).collect();
        let (mut latencies, mut unanswered) = (Vec::new(), 0);
        for w in &of {
            let (answered, missed) = pings_between(pings, w.start, w.end);
            latencies.extend(answered);
            unanswered += missed;
        }
        println!(
            "| {} | {} | {} | {} | {} | {unanswered} |",
            fault.name(),
            of.len(),
            ms(quantile(&mut recoveries.clone(), 0.5)),
            ms(quantile(&mut recoveries, 0.99)),
            ms(quantile(&mut latencies, 0.99)),
        );
    }
    println!("\n| error seen by clients | count |\n|---|---|");
    for (kind, n) in tally.error_kinds.lock().unwrap().iter() {
        println!("| {kind} | {n} |");
    }
    for example in tally.examples.lock().unwrap().iter() {
        println!("example: {example}");
    }
}
