//! The documentation's examples (README.md, every page of docs/, the Python client's
//! README), run against the demos they describe (`make run`'s and `make run-cluster`'s,
//! started by `scripts/run.sh` on ports of the test's own), so the front door and the
//! reference cannot rot: every `redis>` line typed into redis-cli exactly as printed (its
//! printed reply, where one is shown, is the kind of reply it gets), every Python snippet with
//! the redis-py users install today, every SQL block with psql, every `psql` line of a shell
//! block, and the lines `scripts/run.sh` itself suggests trying. Every code block says its
//! language; `text` and `json` blocks are formats, not examples.
use pgcache_testkit::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A markdown file by its path in the repository, and its text.
macro_rules! page {
    ($path:literal) => {
        ($path, include_str!(concat!("../../", $path)))
    };
}

/// Every markdown file with examples.
const FILES: &[(&str, &str)] = &[
    page!("README.md"),
    page!("docs/README.md"),
    page!("docs/setup.md"),
    page!("docs/commands.md"),
    page!("docs/queries.md"),
    page!("docs/invalidation.md"),
    page!("docs/configuration.md"),
    page!("docs/cluster.md"),
    page!("docs/operations.md"),
    page!("docs/security.md"),
    page!("docs/limits.md"),
    page!("docs/how-it-works.md"),
    page!("docs/migrating.md"),
    page!("clients/python/README.md"),
];

/// Where the examples run on the cluster demo: a whole file, or one `## ` section of one.
const ON_CLUSTER: &[(&str, Option<&str>)] = &[
    ("docs/cluster.md", None),
    (
        "clients/python/README.md",
        Some("Redis Cluster and replicas"),
    ),
];

/// The redis-py version setup.sh installs into .tools/venv (the newest on PyPI).
const VENV_PYTHON: &str = ".tools/venv/bin/python";

/// One fenced code block: its file, its language, the `## ` section it is in, its text.
struct Block {
    file: &'static str,
    language: String,
    section: String,
    line: usize,
    text: String,
}

impl Block {
    /// Where it is: `docs/commands.md line 12`.
    fn at(&self) -> String {
        format!("{} line {}", self.file, self.line)
    }

    fn on_cluster(&self) -> bool {
        ON_CLUSTER
            .iter()
            .any(|(file, section)| *file == self.file && section.is_none_or(|s| s == self.section))
    }
}

fn blocks() -> Vec<Block> {
    FILES
        .iter()
        .flat_map(|(file, text)| blocks_of(file, text))
        .collect()
}

fn blocks_of(file: &'static str, markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut open: Option<(String, usize, Vec<&str>)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(language)) => open = Some((language.trim().to_string(), n + 1, Vec::new())),
            (Some(_), Some(_)) => {
                let (language, line, lines) = open.take().unwrap();
                let indent = lines
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.len() - l.trim_start().len())
                    .min()
                    .unwrap_or(0);
                let text = lines
                    .iter()
                    .map(|l| l.get(indent..).unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
                blocks.push(Block {
                    file,
                    language,
                    section: section.clone(),
                    line,
                    text,
                });
            }
            (Some((_, _, lines)), None) => lines.push(line),
            (None, None) => {
                if let Some(heading) = line.strip_prefix("## ") {
                    section = heading.to_string();
                }
            }
        }
    }
    assert!(open.is_none(), "{file} ends inside a code block");
    blocks
}

/// A demo started by `scripts/run.sh` in a directory and on ports of its own; stopped (by the
/// same script) when dropped.
struct Demo {
    env: Vec<(&'static str, String)>,
    pg_port: u16,
    redis_port: u16,
    cluster_ports: Vec<u16>,
    /// What run.sh printed: how to connect, and commands to try.
    printed: String,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl Demo {
    fn start(cluster: bool) -> Demo {
        Demo::start_with(cluster, false)
    }

    /// With `standby`, run.sh's `STANDBY=1`: a streaming standby of the demo's PostgreSQL,
    /// listed in the default source's `standbys`.
    fn start_with(cluster: bool, standby: bool) -> Demo {
        let dir = std::env::temp_dir().join(format!(
            "pgcache-readme-{}-{}{}",
            std::process::id(),
            if cluster { "cluster" } else { "single" },
            if standby { "-standby" } else { "" }
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (pg_port, redis_port) = (free_port(), free_port());
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let listed = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        // Bus ports of the test's own too: port + 10000 may fall in the ephemeral range.
        let bus_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut env = vec![
            ("RUN_DIR", dir.display().to_string()),
            ("PG_PORT", pg_port.to_string()),
            ("STANDBY_PORT", free_port().to_string()),
            ("REDIS_PORT", redis_port.to_string()),
            ("CLUSTER_PORTS", listed(&cluster_ports)),
            ("CLUSTER_BUS_PORTS", listed(&bus_ports)),
        ];
        if standby {
            env.push(("STANDBY", "1".to_string()));
        }
        let mut demo = Demo {
            env,
            pg_port,
            redis_port,
            cluster_ports,
            printed: String::new(),
            _dir: TempDir(dir),
        };
        let args: &[&str] = if cluster { &["cluster"] } else { &[] };
        let output = run_ok(demo.command("scripts/run.sh").args(args));
        demo.printed = String::from_utf8_lossy(&output.stdout).into_owned();
        demo
    }

    /// A command run in the repository with the demo's environment, and psql's defaults
    /// pointing at its PostgreSQL (as a user's `psql -d app` reaches theirs).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(repo())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg_port.to_string())
            .env("PGUSER", "postgres")
            .stdin(Stdio::piped());
        command
    }

    /// `text` with the documented ports (6390, 55432, 7001-7003) replaced by the demo's.
    fn with_ports(&self, text: &str) -> String {
        let mut text = text
            .replace("6390", &self.redis_port.to_string())
            .replace("55432", &self.pg_port.to_string());
        for (documented, port) in ["7001", "7002", "7003"].iter().zip(&self.cluster_ports) {
            text = text.replace(documented, &port.to_string());
        }
        text
    }

    /// Types `line` into redis-cli (connected to the first node), as printed (the documented
    /// ports made the demo's); its output as an interactive redis-cli shows it.
    fn redis_cli(&self, line: &str) -> String {
        let line = &self.with_ports(line);
        let port = self.cluster_ports.first().filter(|_| self.is_cluster());
        let port = port.copied().unwrap_or(self.redis_port);
        let output = self.run_with_input(
            self.command("redis-cli")
                .args(["--no-raw", "-p", &port.to_string()])
                .args(self.is_cluster().then_some("-c")),
            line,
        );
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    }

    fn is_cluster(&self) -> bool {
        self.printed.contains("Redis Cluster")
    }

    fn run_with_input(&self, command: &mut Command, input: &str) -> Output {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn psql(&self, sql: &str) -> Output {
        self.run_with_input(
            self.command("psql")
                .args(["-d", "app", "-v", "ON_ERROR_STOP=1", "-q"]),
            sql,
        )
    }

    fn shell(&self, line: &str) -> Output {
        self.command("bash")
            .args(["-c", line])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.command("scripts/run.sh").arg("stop").output();
    }
}

/// A `redis>` line and the reply printed under it (empty: none shown).
fn steps(block: &str) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("redis> ") {
            Some(command) => steps.push((command.to_string(), Vec::new())),
            None => steps
                .last_mut()
                .expect("a redis block starts with a `redis>` line")
                .1
                .push(line.to_string()),
        }
    }
    steps
}

/// The top-level items of a printed array reply (`1) ...`, `2) ...`), or None for another
/// kind of reply.
fn items(reply: &[String]) -> Option<Vec<String>> {
    let first = reply.first()?;
    if !first.starts_with("1)") {
        return None;
    }
    Some(
        reply
            .iter()
            .filter(|l| {
                l.split_once(')')
                    .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            })
            .map(|l| l.split_once(')').unwrap().1.trim().to_string())
            .collect(),
    )
}

/// The JSON object a printed bulk string holds, if it is one (and not elided with `...`).
fn json_object(printed: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let inner: String = serde_json::from_str(printed).ok()?;
    match serde_json::from_str(&inner).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Whether `actual` (redis-cli's output) is the kind of reply `expected` shows: an error with
/// the same text, OK, an integer, nil, a string (a JSON row with the same columns), or an
/// array with as many items, nil where nil is shown.
fn check_reply(at: &str, command: &str, expected: &[String], actual: &str) {
    let context = format!("{at}: `redis> {command}` answered:\n{actual}");
    assert!(!actual.contains("Invalid argument"), "{context}");
    let Some(first) = expected.first() else {
        assert!(!actual.starts_with("(error)"), "{context}");
        return;
    };
    let actual_lines: Vec<String> = actual.lines().map(str::to_string).collect();
    if first.starts_with("(error)") || first == "OK" || first == "(nil)" {
        assert_eq!(actual, first, "{context}");
    } else if first.starts_with("(integer)") {
        assert!(actual.starts_with("(integer)"), "{context}");
    } else if first.starts_with('"') {
        assert!(actual.starts_with('"'), "{context}");
        if let Some(columns) = json_object(first) {
            let got = json_object(actual).unwrap_or_else(|| panic!("not a JSON row: {context}"));
            assert_eq!(
                columns.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>(),
                "{context}"
            );
        }
    } else if let Some(expected_items) = items(expected) {
        let got = items(&actual_lines).unwrap_or_else(|| panic!("not an array: {context}"));
        assert_eq!(expected_items.len(), got.len(), "{context}");
        for (e, g) in expected_items.iter().zip(&got) {
            assert_eq!(e == "(nil)", g == "(nil)", "{context}");
        }
    } else {
        panic!("{at}: a reply this test cannot read: {first:?}");
    }
}

fn run_redis_block(demo: &Demo, block: &Block) {
    for (command, expected) in steps(&block.text) {
        let actual = if command.starts_with("MODULE UNLOAD") {
            unloaded(demo, &command)
        } else {
            demo.redis_cli(&command)
        };
        check_reply(&block.at(), &command, &expected, &actual);
    }
}

/// MODULE UNLOAD's answer, run again (as docs/commands.md tells) while Redis refuses it for
/// a timer of pgcache's not fired yet: each source's change feed asks the main thread for
/// moments, so an unload can land on one.
fn unloaded(demo: &Demo, command: &str) -> String {
    wait_for(
        "an unload not refused for a timer",
        Duration::from_secs(20),
        || {
            let answer = demo.redis_cli(command);
            (!answer.contains("holds timer")).then_some(answer)
        },
    )
}

fn run_python(demo: &Demo, block: &Block) {
    let python = repo().join(VENV_PYTHON);
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    let output = demo
        .command(python.to_str().unwrap())
        .args(["-c", &demo.with_ports(&block.text)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    succeeded(&output, block, "the Python example");
}

fn run_sql(demo: &Demo, block: &Block) {
    succeeded(&demo.psql(&block.text), block, "the SQL");
}

fn succeeded(output: &Output, block: &Block, what: &str) {
    assert!(
        output.status.success(),
        "{}: {what} failed:\n{}",
        block.at(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `psql` lines of a shell block, on the demo's ports. The others start servers (`make
/// run`, `make test`, `redis-server --loadmodule ...`) or install (`pip install`): the demo
/// this test runs on is what they start.
fn run_shell(demo: &Demo, block: &Block) {
    for line in block.text.lines().filter(|l| l.starts_with("psql ")) {
        let output = demo.shell(&demo.with_ports(line));
        assert!(
            output.status.success(),
            "{}: `{line}` failed:\n{}",
            block.at(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The lines run.sh prints under "Try": each runs, and none answers an error.
fn run_suggestions(demo: &Demo) {
    let suggestions: Vec<&str> = demo
        .printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("redis-cli ") || l.starts_with("psql ") && l.contains(" -c "))
        .collect();
    assert!(suggestions.len() >= 5, "run.sh suggests:\n{}", demo.printed);
    for line in suggestions {
        let output = demo.shell(line);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success()
                && !stdout.contains("ERR")
                && !stdout.contains("CLUSTERDOWN")
                && !stdout.contains("MOVED"),
            "run.sh's suggestion `{line}` answered:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Runs one example by its language (`text` and `json` blocks are formats: nothing to run).
fn run_block(demo: &Demo, block: &Block) {
    match block.language.as_str() {
        "redis" => run_redis_block(demo, block),
        "python" => run_python(demo, block),
        "sql" => run_sql(demo, block),
        "sh" => run_shell(demo, block),
        _ => {}
    }
}

#[test]
fn every_code_block_says_what_it_is() {
    for block in blocks() {
        assert!(
            ["redis", "python", "sql", "sh", "text", "json"].contains(&block.language.as_str()),
            "{}: a code block without a known language ({:?}); runnable examples \
             are redis, python, sql or sh, formats text or json",
            block.at(),
            block.language
        );
    }
}

/// Every markdown page of docs/ is in FILES (so its examples run), and every file there has
/// its examples where it says.
#[test]
fn every_page_is_tested() {
    let listed: Vec<&str> = FILES.iter().map(|(file, _)| *file).collect();
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            let file = format!("docs/{name}");
            assert!(
                listed.contains(&file.as_str()),
                "{file} is not in readme.rs's FILES"
            );
        }
    }
    for (file, section) in ON_CLUSTER {
        let on = blocks()
            .into_iter()
            .filter(|b| b.file == *file && b.on_cluster());
        assert!(
            on.count() > 0,
            "{file} {section:?}: no cluster example there"
        );
    }
}

#[test]
fn the_examples_work_on_the_demo() {
    let demo = Demo::start(false);
    run_suggestions(&demo);
    let blocks: Vec<Block> = blocks().into_iter().filter(|b| !b.on_cluster()).collect();
    // An example that ends with MODULE UNLOAD goes last.
    let (unloading, others): (Vec<&Block>, Vec<&Block>) = blocks
        .iter()
        .partition(|b| b.text.contains("MODULE UNLOAD"));
    for block in others.into_iter().chain(unloading) {
        run_block(&demo, block);
    }
}

#[test]
fn the_cluster_examples_work_on_the_cluster_demo() {
    let demo = Demo::start(true);
    // Every node answers at once: run.sh waits until all of them agree.
    for port in &demo.cluster_ports {
        let info = demo.shell(&format!("redis-cli -p {port} CLUSTER INFO"));
        assert!(
            String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok"),
            "node {port} is not ready after run.sh returned"
        );
    }
    run_suggestions(&demo);
    let blocks: Vec<Block> = blocks().into_iter().filter(|b| b.on_cluster()).collect();
    assert!(blocks.iter().any(|b| b.language == "python"));
    assert!(blocks.iter().any(|b| b.file == "clients/python/README.md"));
    for block in &blocks {
        run_block(&demo, block);
    }
}

#[test]
fn the_demo_with_a_standby_reads_misses_there() {
    let demo = Demo::start_with(false, true);
    assert!(demo.printed.contains("hot standby"), "{}", demo.printed);
    let mut con = connect(demo.redis_port);
    wait_for(
        "a miss read on the standby",
        Duration::from_secs(60),
        || {
            let health = map_reply(&mut con, "PGCACHE.HEALTH");
            let standbys: Vec<redis::Value> =
                redis::from_redis_value(health["standbys"].clone()).unwrap();
            let state: String =
                redis::from_redis_value(nested(&standbys[0])["state"].clone()).unwrap();
            if state == "serving" {
                let _: redis::Value = redis::cmd("PGCACHE.INVALIDATE")
                    .arg("users")
                    .arg(r#"{"id":1}"#)
                    .query(&mut con)
                    .unwrap();
                let row: String = redis::cmd("PGCACHE.READ")
                    .arg("users")
                    .arg(r#"{"id":1}"#)
                    .query(&mut con)
                    .unwrap();
                assert!(row.contains(r#""id":1"#), "{row}");
            }
            (stats_figure(&mut con, "misses_on_standbys") > 0).then_some(())
        },
    );
}
