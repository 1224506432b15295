//! The Prometheus endpoint: a scrape parsed as Prometheus text, its bind address, and the
//! thread gone after MODULE UNLOAD.
use pgcache_testkit::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The status line and body of `GET path`.
pub(crate) fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

pub(crate) fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
}

pub(crate) fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
    label: Option<(&str, &str)>,
) -> &'a prometheus_parse::Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {metric} {label:?}"))
}

pub(crate) fn counter(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    label: Option<(&str, &str)>,
) -> f64 {
    match sample(scrape, metric, label).value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{metric} is not a counter: {other:?}"),
    }
}

/// The local IPv4 addresses (as /proc/net/tcp writes them) with a socket listening on `port`.
fn listening_addresses(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, hex_port) = fields.get(1)?.split_once(':')?;
            (u16::from_str_radix(hex_port, 16).ok()? == port && fields.get(3)? == &LISTEN)
                .then(|| address.to_string())
        })
        .collect()
}

#[test]
fn a_scrape_is_prometheus_text_with_counters_gauges_and_histograms() {
    let port = free_port();
    let stack = Stack::start_with(USERS_SQL, &["metrics_port", &port.to_string()]);
    let mut con = stack.con();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    read(&mut con, "users", r#"{"id":1}"#).unwrap();
    read(&mut con, "users", r#"{"id":2}"#).unwrap();

    let scrape = scrape(port);
    assert_eq!(counter(&scrape, "pgcache_hits_total", None), 1.0);
    assert_eq!(counter(&scrape, "pgcache_misses_total", None), 2.0);
    assert_eq!(
        counter(
            &scrape,
            "pgcache_command_calls_total",
            Some(("command", "read"))
        ),
        3.0
    );
    assert_eq!(
        counter(
            &scrape,
            "pgcache_table_hits_total",
            Some(("table", "users"))
        ),
        1.0
    );
    match &sample(&scrape, "pgcache_queue_depth", None).value {
        prometheus_parse::Value::Gauge(v) => assert_eq!(*v, 0.0),
        other => panic!("queue depth is a gauge: {other:?}"),
    }
    for (metric, label) in [
        ("pgcache_command_duration_seconds", ("command", "read")),
        ("pgcache_table_duration_seconds", ("table", "users")),
        ("pgcache_miss_stage_duration_seconds", ("stage", "postgres")),
        ("pgcache_miss_stage_duration_seconds", ("stage", "total")),
    ] {
        let prometheus_parse::Value::Histogram(buckets) =
            &sample(&scrape, metric, Some(label)).value
        else {
            panic!("{metric} is a histogram");
        };
        let total = buckets.last().unwrap();
        assert!(total.less_than.is_infinite());
        assert_eq!(total.count, 2.0, "the two misses were timed: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].count <= w[1].count),
            "cumulative: {buckets:?}"
        );
    }
    // Without named sources no series has a `source` label: a scrape reads as before them.
    let labelled: Vec<_> = (scrape.samples.iter())
        .filter(|s| s.labels.get("source").is_some())
        .map(|s| &s.metric)
        .collect();
    assert!(labelled.is_empty(), "{labelled:?}");
    let body = http_get(port, "/metrics").1;
    assert!(body.contains("# TYPE pgcache_hits_total counter"));
    assert!(body.contains("# TYPE pgcache_command_duration_seconds histogram"));
    assert_eq!(http_get(port, "/other").0, "HTTP/1.1 404 Not Found");

    // Only on the loopback interface by default: the kernel's socket table has it listening
    // on 127.0.0.1, not on every address.
    assert_eq!(listening_addresses(port), vec!["0100007F".to_string()]);

    // MODULE UNLOAD stops the server thread with the rest.
    unload(&mut con);
    wait_for("the port to close", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
}

#[test]
fn a_port_in_use_stops_the_load_with_a_clear_message() {
    let pg = Pg::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut args = pg.module_args();
    args.extend(["metrics_port".to_string(), port.clone()]);
    let log = Redis::start_with(&args, &[], &[])
        .err()
        .expect("the load fails");
    assert!(
        log.contains(&format!(
            "setting metrics_port: cannot listen on 127.0.0.1:{port}"
        )),
        "{log}"
    );
    let mut args = pg.module_args();
    args.extend(["metrics_bind".to_string(), "localhost:x".to_string()]);
    let log = Redis::start_with(&args, &[], &[])
        .err()
        .expect("the load fails");
    assert!(
        log.contains("setting metrics_bind: expected an IP address"),
        "{log}"
    );
}

/// Connects to the endpoint and sends one byte of a request every 300 ms, never finishing
/// it. Returns once the server has cut the connection off (or 20 s passed: None).
fn trickle(port: u16) -> std::thread::JoinHandle<Option<Duration>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut scratch = [0u8; 1024];
        while started.elapsed() < Duration::from_secs(20) {
            if stream.write_all(b"G").is_err() {
                return Some(started.elapsed());
            }
            // The pacing under test, not a synchronisation: the read waits 300 ms for the
            // server to answer or close.
            match stream.read(&mut scratch) {
                Ok(_) => return Some(started.elapsed()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return Some(started.elapsed()),
            }
        }
        None
    })
}

#[test]
fn a_trickling_or_oversized_request_is_cut_off_and_never_holds_unload() {
    let port = free_port();
    let stack = Stack::start_with(USERS_SQL, &["metrics_port", &port.to_string()]);

    // A byte every 300 ms never lets a per-read timeout fire; the whole request has a bound.
    let cut_off = trickle(port).join().unwrap();
    assert!(cut_off.is_some(), "a trickling client was served for 20 s");

    // An endless header is answered after the size limit, not read to the end.
    let mut flood = TcpStream::connect(("127.0.0.1", port)).unwrap();
    flood
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = flood.write_all(&vec![b'x'; 64 * 1024]);
    let mut response = Vec::new();
    let _ = flood.read_to_end(&mut response);
    assert!(
        response.starts_with(b"HTTP/1.1 405"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    assert!(!scrape(port).samples.is_empty(), "still serving");

    // MODULE UNLOAD with a trickling client connected does not wait for it.
    let slow = trickle(port);
    let mut con = stack.con();
    let (done, unloaded) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // A refused attempt returns at once; the one that unloaded is timed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let started = std::time::Instant::now();
            let reply: redis::RedisResult<String> = redis::cmd("MODULE")
                .arg("UNLOAD")
                .arg("pgcache")
                .query(&mut con);
            if reply.is_ok() {
                let _ = done.send(started.elapsed());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let took = unloaded
        .recv_timeout(Duration::from_secs(15))
        .expect("MODULE UNLOAD accepted within 10 s");
    // UNLOAD runs on the event loop: every client waits while it joins the thread.
    assert!(
        took < Duration::from_secs(1),
        "MODULE UNLOAD held the event loop for {took:?}"
    );
    assert!(listening_addresses(port).is_empty(), "the endpoint is gone");
    slow.join().unwrap();
}
