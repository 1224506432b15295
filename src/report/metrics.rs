//! The optional Prometheus endpoint (`metrics_port`, off by default; `metrics_bind`,
//! 127.0.0.1 by default): `GET /metrics` returns the PGCACHE.STATS figures in Prometheus's
//! text format, with counters as counters, states as gauges and latencies as histograms.
//! One module thread serves it; it reads the same lock-free figures as STATS and never
//! touches Redis, so a scrape costs the event loop nothing. A named source's series carry
//! `source="<name>"`; the default source's carry no such label, so a scrape of a server
//! without named sources reads as it did before there were any.

use crate::config::current;
use crate::model::source::SourceId;
use crate::pg::standby;
use crate::report::figures;
use crate::stats::{self, Histogram};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Histogram buckets: powers of two from 1 µs to 2^25 µs (about 34 s).
const MAX_BUCKET_POWER: u32 = 25;
/// The longest one scrape may take, request and response together: a client trickling
/// bytes cannot hold the server for longer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the thread looks up from accepting or from a scrape to see whether MODULE
/// UNLOAD, which joins it on the event loop, is waiting: the longest that join takes.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// How long the thread rests after accept fails for a reason other than "nothing to
/// accept" (out of file descriptors, say): instead of spinning on the failure.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
const MAX_REQUEST_BYTES: usize = 8192;

struct Server {
    thread: JoinHandle<()>,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Starts serving on `bind:port`.
pub fn start(bind: &str, port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind((bind, port))?;
    STOPPING.store(false, Ordering::SeqCst);
    let thread = std::thread::Builder::new()
        .name("pgcache-metrics".into())
        .spawn(move || serve(listener))?;
    *SERVER.lock().unwrap() = Some(Server { thread });
    Ok(())
}

/// Stops the server and joins its thread (at unload): within about `STOP_CHECK`, since
/// the thread never blocks longer than that, in accept or in a scrape.
pub fn stop() {
    let Some(server) = SERVER.lock().unwrap().take() else {
        return;
    };
    STOPPING.store(true, Ordering::SeqCst);
    let _ = server.thread.join();
}

fn serve(listener: TcpListener) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !STOPPING.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                // A broken scrape is the scraper's problem; the next one starts afresh.
                let _ = crate::error::panic::catch(|| answer(stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(STOP_CHECK);
            }
            Err(_) => std::thread::sleep(ACCEPT_BACKOFF),
        }
    }
}

/// Sets the socket's timeouts to what is left until `deadline`, at most `STOP_CHECK`; an
/// error once it passed or the server is stopping.
fn time_left(stream: &TcpStream, deadline: Instant) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || STOPPING.load(Ordering::SeqCst) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the scrape took too long, or pgcache is unloading",
        ));
    }
    stream.set_read_timeout(Some(left.min(STOP_CHECK)))?;
    stream.set_write_timeout(Some(left.min(STOP_CHECK)))
}

/// Whether an I/O error only says that a short timeout passed (then the caller checks the
/// deadline and tries again).
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST_BYTES {
        time_left(&stream, deadline)?;
        let n = match stream.read(&mut buf) {
            Err(e) if timed_out(&e) => continue,
            read => read?,
        };
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "pgcache serves its metrics at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "use GET /metrics\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    let mut unsent = response.as_bytes();
    while !unsent.is_empty() {
        time_left(&stream, deadline)?;
        let n = match stream.write(unsent) {
            Err(e) if timed_out(&e) => continue,
            written => written?,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        unsent = &unsent[n..];
    }
    stream.flush()
}

/// A label value, escaped as the text format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One histogram's series (`le` in seconds), for the metric `name` with `labels`.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let (below, count, sum_us) = h.cumulative_powers_of_two(MAX_BUCKET_POWER);
    for (power, n) in below.iter().enumerate() {
        let le = (1u64 << power) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// The whole exposition.
pub fn render() -> String {
    let sources = labelled_sources();
    let mut out = String::with_capacity(16 * 1024);
    write_counters(&mut out, &sources);
    write_gauges(&mut out, &sources);
    write_commands(&mut out, &sources);
    write_tables(&mut out, &sources);
    write_standbys(&mut out, &sources);
    out
}

/// Each listed standby's misses, reroutes and state, labelled `standby="host:port"` (and its
/// source's label): none listed, no series.
fn write_standbys(out: &mut String, sources: &[(SourceId, String)]) {
    let seen: Vec<(&str, String, standby::Seen)> = (sources.iter())
        .flat_map(|(id, source)| {
            standby::seen(*id).into_iter().map(move |seen| {
                let label = format!("standby=\"{}\"", label(&seen.address));
                (source.as_str(), label, seen)
            })
        })
        .collect();
    if seen.is_empty() {
        return;
    }
    type Sample = fn(&standby::Seen) -> u64;
    let families: [(&str, &str, &str, Sample); 3] = [
        (
            "pgcache_standby_misses_total",
            "counter",
            "Misses the standby answered.",
            |seen| seen.misses,
        ),
        (
            "pgcache_standby_rerouted_total",
            "counter",
            "Misses sent to the standby that the primary answered instead.",
            |seen| seen.rerouted,
        ),
        (
            "pgcache_standby_serving",
            "gauge",
            "1 while the standby serves misses, 0 while it is starting, failing or refused.",
            |seen| u64::from(seen.state == standby::State::Serving),
        ),
    ];
    for (metric, kind, help, sample) in families {
        header(out, metric, kind, help);
        for (source, standby, seen) in &seen {
            let _ = writeln!(
                out,
                "{} {}",
                series(metric, &[source, standby]),
                sample(seen)
            );
        }
    }
}

/// Every source with its label: none for the default, `source="<name>"` for a named one.
fn labelled_sources() -> Vec<(SourceId, String)> {
    let named = current::named_ids().into_iter().filter_map(|id| {
        let name = current::name(id)?;
        Some((id, format!("source=\"{}\"", label(&name))))
    });
    std::iter::once((SourceId::DEFAULT, String::new()))
        .chain(named)
        .collect()
}

/// A sample's name with its labels, those that are empty left out: `m`, `m{a="1",b="2"}`.
fn series(metric: &str, given: &[&str]) -> String {
    match labels(given) {
        none if none.is_empty() => metric.to_string(),
        labels => format!("{metric}{{{labels}}}"),
    }
}

/// Every STATS counter, as `pgcache_<name>_total`, one sample per source.
fn write_counters(out: &mut String, sources: &[(SourceId, String)]) {
    let counters: Vec<Vec<(&str, u64)>> = (sources.iter())
        .map(|(id, _)| stats::of(*id).counters())
        .collect();
    for (at, (name, _)) in counters[0].iter().enumerate() {
        let metric = format!("pgcache_{name}_total");
        header(out, &metric, "counter", &format!("PGCACHE.STATS {name}."));
        for ((_, source), values) in sources.iter().zip(&counters) {
            let _ = writeln!(out, "{} {}", series(&metric, &[source]), values[at].1);
        }
    }
}

/// The figures that go up and down: ratios, queues, connections, the listener. A source's
/// gauge has a sample per source that has it; the server's, one sample.
fn write_gauges(out: &mut String, sources: &[(SourceId, String)]) {
    let gauges: Vec<Vec<figures::Gauge>> = (sources.iter())
        .map(|(id, _)| figures::gauges(*id))
        .collect();
    // Every gauge's name once, in the order of the first source that reports it (a source
    // without replication has no replication gauges).
    let mut names: Vec<&str> = Vec::new();
    for gauge in gauges.iter().flatten() {
        if !names.contains(&gauge.name) {
            names.push(gauge.name);
        }
    }
    for name in names {
        let metric = format!("pgcache_{name}");
        let mut headed = false;
        for ((_, source), gauges) in sources.iter().zip(&gauges) {
            let Some(gauge) = gauges.iter().find(|g| g.name == name) else {
                continue;
            };
            if !headed {
                header(out, &metric, "gauge", &gauge.help);
                headed = true;
            } else if !gauge.of_source {
                break;
            }
            let labels = if gauge.of_source { source.as_str() } else { "" };
            let sample = series(&metric, &[labels]);
            let _ = match gauge.value {
                figures::Value::Int(n) => writeln!(out, "{sample} {n}"),
                figures::Value::Ratio(r) => writeln!(out, "{sample} {r}"),
            };
        }
    }
}

/// Calls and latency per command (the server's), and the misses' stages per source.
fn write_commands(out: &mut String, sources: &[(SourceId, String)]) {
    header(
        out,
        "pgcache_command_calls_total",
        "counter",
        "Calls per command (hits included).",
    );
    for command in stats::Tracked::ALL {
        let _ = writeln!(
            out,
            "pgcache_command_calls_total{{command=\"{}\"}} {}",
            command.name(),
            stats::command_calls(command)
        );
    }
    header(
        out,
        "pgcache_command_duration_seconds",
        "histogram",
        "Latency of calls that waited for PostgreSQL or changed the cache (hits are counted, not timed).",
    );
    for command in stats::Tracked::ALL {
        histogram(
            out,
            "pgcache_command_duration_seconds",
            &format!("command=\"{}\"", command.name()),
            stats::command_histogram(command),
        );
    }
    header(
        out,
        "pgcache_miss_stage_duration_seconds",
        "histogram",
        "Where misses (calls that waited for a worker) spent their time, per stage: queue, postgres, wakeup, fill, reply, and the total.",
    );
    for (id, source) in sources {
        for named in &stats::stages::STAGES {
            histogram(
                out,
                "pgcache_miss_stage_duration_seconds",
                &labels(&[source, &format!("stage=\"{}\"", named.label)]),
                stats::of(*id).stages.histogram(named.stage),
            );
        }
    }
}

/// Labels joined, empty ones left out.
fn labels(labels: &[&str]) -> String {
    let labels: Vec<&str> = labels.iter().copied().filter(|l| !l.is_empty()).collect();
    labels.join(",")
}

/// Calls, hits, misses and latency per table, per source.
fn write_tables(out: &mut String, sources: &[(SourceId, String)]) {
    let tables: Vec<(&str, Vec<Arc<stats::TableStats>>)> = (sources.iter())
        .map(|(id, source)| (source.as_str(), stats::of(*id).tables()))
        .collect();
    for (metric, help, figure) in [
        (
            "pgcache_table_calls_total",
            "Calls per table.",
            (|t| t.calls.get()) as fn(&stats::TableStats) -> u64,
        ),
        (
            "pgcache_table_hits_total",
            "Keys answered from the cache, per table.",
            |t| t.hits.get(),
        ),
        (
            "pgcache_table_misses_total",
            "Keys fetched from PostgreSQL, per table.",
            |t| t.misses.get(),
        ),
        (
            "pgcache_table_passed_through_total",
            "Keys fetched from PostgreSQL and not cached, their table's rows dying unread, per table.",
            |t| t.pass_through.passed(),
        ),
    ] {
        header(out, metric, "counter", help);
        for (source, tables) in &tables {
            for t in tables {
                let table = format!("table=\"{}\"", label(&t.name));
                let _ = writeln!(out, "{} {}", series(metric, &[source, &table]), figure(t));
            }
        }
    }
    header(
        out,
        "pgcache_table_duration_seconds",
        "histogram",
        "Latency of timed calls, per table.",
    );
    for (source, tables) in &tables {
        for t in tables {
            histogram(
                out,
                "pgcache_table_duration_seconds",
                &labels(&[source, &format!("table=\"{}\"", label(&t.name))]),
                &t.latency,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_source_s_series_have_no_source_label() {
        assert_eq!(series("m", &["", ""]), "m");
        assert_eq!(series("m", &["", "table=\"t\""]), "m{table=\"t\"}");
        assert_eq!(
            series("m", &["source=\"a\"", "table=\"t\""]),
            "m{source=\"a\",table=\"t\"}"
        );
        assert_eq!(labels(&["source=\"a\"", ""]), "source=\"a\"");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histograms_have_cumulative_buckets_sum_and_count() {
        let h = Histogram::new();
        h.record(3);
        h.record(1500);
        let mut out = String::new();
        histogram(&mut out, "m", "command=\"read\"", &h);
        assert!(
            out.contains("m_bucket{command=\"read\",le=\"0.000004\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("m_bucket{command=\"read\",le=\"0.002048\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("m_bucket{command=\"read\",le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("m_sum{command=\"read\"} 0.001503\n"), "{out}");
        assert!(out.contains("m_count{command=\"read\"} 2\n"), "{out}");
    }
}
