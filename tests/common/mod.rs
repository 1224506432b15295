//! Real servers for integration tests: a private PostgreSQL (copied from an initdb template,
//! own port) and a private redis-server or valkey-server with the built module loaded. Each
//! guard stops its process by PID and removes its directory when dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PG_PASSWORD: &str = "app-s3cret-pw";
const SUPERUSER_PASSWORD: &str = "super-s3cret-pw";

/// Polls `check` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "pgcache-test-{tag}-{}-{n}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pg_bin(tool: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("PGCACHE_PG_BIN") {
        return Path::new(&dir).join(tool);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/setup.sh (make test does)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .last()
        .expect("no PostgreSQL server binaries")
        .join(tool)
}

/// PostgreSQL refuses to run as root; tests then run it as the `postgres` user.
fn run_as() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

fn as_pg_user(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_for_pg(path: &Path) {
    if let Some((uid, gid)) = run_as() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// An initdb'd data directory, made once per test run and copied for each server.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = root.join("pg-template");
        if dir.join("PG_VERSION").exists() {
            return dir;
        }
        let building = temp_dir("initdb");
        chown_for_pg(&building);
        let data = building.join("data");
        let pwfile = building.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        chown_for_pg(&building);
        let out = as_pg_user(&mut Command::new(pg_bin("initdb")))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Another test binary may have won the race; either copy is fine.
        let _ = std::fs::rename(&data, &dir);
        let _ = std::fs::remove_dir_all(&building);
        dir
    })
}

pub struct Pg {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    server_args: Vec<String>,
}

impl Pg {
    pub fn start() -> Pg {
        Self::start_with(|_| Vec::new())
    }

    /// Starts a server with TLS on, its certificate (for `localhost` and 127.0.0.1) made
    /// fresh. Returns the server and the certificate, which is its own CA.
    pub fn start_tls() -> (Pg, PathBuf) {
        let mut cert = PathBuf::new();
        let pg = Self::start_with(|data| {
            let out = Command::new("openssl")
                .args([
                    "req",
                    "-new",
                    "-x509",
                    "-days",
                    "2",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                ])
                .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
                .arg("-keyout")
                .arg(data.join("server.key"))
                .arg("-out")
                .arg(data.join("server.crt"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            cert = data.join("server.crt");
            vec!["-c".into(), "ssl=on".into()]
        });
        (pg, cert)
    }

    /// `prepare` gets the data directory before the first start and returns extra server
    /// arguments.
    pub fn start_with(prepare: impl FnOnce(&Path) -> Vec<String>) -> Pg {
        let dir = temp_dir("pg");
        let data = dir.join("data");
        let status = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success());
        let server_args = prepare(&data);
        chown_for_pg(&dir);
        let mut pg = Pg {
            port: 0,
            dir,
            child: None,
            server_args,
        };
        pg.launch();
        let mut admin = pg.superuser();
        admin
            .batch_execute(&format!("CREATE ROLE app LOGIN PASSWORD '{PG_PASSWORD}'"))
            .unwrap();
        admin
            .batch_execute("CREATE DATABASE app OWNER app")
            .unwrap();
        pg
    }

    /// Starts the server process on `port`, its output going to `log_name` in its directory.
    fn spawn_postgres(&mut self, port: u16, log_name: &str) {
        let log = std::fs::File::create(self.dir.join(log_name)).unwrap();
        let child = as_pg_user(&mut Command::new(pg_bin("postgres")))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "shared_buffers=128MB", "-c", "max_connections=150"])
            .args(&self.server_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.port = port;
    }

    fn launch(&mut self) {
        for _ in 0..5 {
            self.spawn_postgres(free_port(), "postgres.log");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if self.try_superuser().is_ok() {
                    return;
                }
                if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                    break; // port taken: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.kill();
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
        );
    }

    fn try_superuser(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(SUPERUSER_PASSWORD)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(2))
            .connect(postgres::NoTls)
    }

    pub fn superuser(&self) -> postgres::Client {
        self.try_superuser().unwrap()
    }

    /// A superuser connection to database `dbname`.
    pub fn superuser_of(&self, dbname: &str) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(SUPERUSER_PASSWORD)
            .dbname(dbname)
            .connect(postgres::NoTls)
            .unwrap()
    }

    /// A connection as the app user to the app database.
    pub fn client(&self) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("app")
            .password(PG_PASSWORD)
            .dbname("app")
            .connect(postgres::NoTls)
            .unwrap()
    }

    pub fn execute(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap();
    }

    /// Makes every statement of the app user appear in the server log (new sessions only).
    pub fn log_app_statements(&self) {
        self.superuser()
            .batch_execute("ALTER ROLE app SET log_statement = 'all'")
            .unwrap();
    }

    /// How many logged statements contain `needle`.
    pub fn logged_statements(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.dir.join("postgres.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("LOG:") && l.contains(needle))
            .count()
    }

    /// The module arguments that connect to this server.
    pub fn module_args(&self) -> Vec<String> {
        [
            "pg_host",
            "127.0.0.1",
            "pg_port",
            &self.port.to_string(),
            "pg_database",
            "app",
            "pg_user",
            "app",
            "pg_password",
            PG_PASSWORD,
            "pg_sslmode",
            "disable",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Stops the server (fast shutdown), keeping its data for `restart`.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.spawn_postgres(self.port, "postgres-restart.log");
        wait_for("PostgreSQL restart", Duration::from_secs(20), || {
            self.try_superuser().ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn module_path() -> PathBuf {
    let path = std::env::var("PGCACHE_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libpgcache.so")
        });
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release` first (make test does)",
        path.display()
    );
    if std::env::var("PGCACHE_MODULE").is_err() {
        // `cargo test` builds the rlib, not the cdylib: refuse to test a stale module.
        let built = std::fs::metadata(&path).unwrap().modified().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        if let Some(newer) = newest_file(&src).filter(|(t, _)| *t > built) {
            panic!(
                "{} is older than {}: run `cargo build --release` first (make test does)",
                path.display(),
                newer.1.display()
            );
        }
    }
    path
}

fn newest_file(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().ok()?.modified().ok().map(|t| (t, path))
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.0 > n.0)
        {
            newest = Some(c);
        }
    }
    newest
}

/// redis-server by default; PGCACHE_TEST_SERVER names another binary (valkey-server).
pub fn server_binary() -> String {
    std::env::var("PGCACHE_TEST_SERVER").unwrap_or_else(|_| "redis-server".into())
}

pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
}

impl Redis {
    /// Starts a server with the module loaded with `module_args`; panics if it won't.
    pub fn start(module_args: &[String]) -> Redis {
        Self::start_with(module_args, &[], &[])
            .unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    /// Starts a server with extra server arguments and environment; on failure returns the
    /// server's log.
    pub fn start_with(
        module_args: &[String],
        server_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Redis, String> {
        let dir = temp_dir("redis");
        let port = free_port();
        let mut args: Vec<std::ffi::OsString> = vec![
            "--port".into(),
            port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.clone().into(),
            "--logfile".into(),
            dir.join("server.log").into(),
            "--enable-module-command".into(),
            "yes".into(),
        ];
        args.extend(server_args.iter().map(Into::into));
        args.push("--loadmodule".into());
        args.push(module_path().into());
        args.extend(module_args.iter().map(Into::into));
        Self::launch(dir, port, args, env)
    }

    /// Starts a server from a configuration file in its directory (so CONFIG REWRITE can
    /// save settings there), with the module loaded with `module_args`.
    pub fn start_configured(module_args: &[String], env: &[(&str, &str)]) -> Redis {
        let dir = temp_dir("redis");
        let port = free_port();
        let conf = dir.join("redis.conf");
        let quoted: Vec<String> = module_args.iter().map(|a| format!("\"{a}\"")).collect();
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n\
                 logfile {}\nenable-module-command yes\nloadmodule {} {}\n",
                dir.display(),
                dir.join("server.log").display(),
                module_path().display(),
                quoted.join(" ")
            ),
        )
        .unwrap();
        Self::launch(dir, port, vec![conf.into()], env)
            .unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    fn launch(
        dir: PathBuf,
        port: u16,
        args: Vec<std::ffi::OsString>,
        env: &[(&str, &str)],
    ) -> Result<Redis, String> {
        let mut redis = Redis {
            port,
            dir,
            child: None,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        redis.spawn()?;
        Ok(redis)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new(server_binary())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", server_binary()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut con) = self.try_connection()
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return Ok(());
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some()
                || Instant::now() > deadline
            {
                let log = self.log();
                self.kill();
                return Err(log);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server and starts it again with the same arguments, directory and port.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills the server (as SHUTDOWN NOSAVE would stop it), keeping its directory.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts a stopped server again with the same arguments, directory and port.
    pub fn start_again(&mut self) {
        self.spawn()
            .unwrap_or_else(|log| panic!("server did not restart:\n{log}"));
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?.get_connection()
    }

    pub fn connection(&self) -> redis::Connection {
        self.try_connection().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether the process is still running (it did not crash).
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL and a server with the module connected to it.
pub struct Stack {
    pub redis: Redis,
    pub pg: Pg,
}

impl Stack {
    pub fn start(setup_sql: &str) -> Stack {
        Self::start_with(setup_sql, &[])
    }

    /// `extra` module arguments are appended after the connection settings.
    pub fn start_with(setup_sql: &str, extra: &[&str]) -> Stack {
        let pg = Pg::start();
        if !setup_sql.is_empty() {
            pg.execute(setup_sql);
        }
        let mut args = pg.module_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let redis = Redis::start(&args);
        Stack { redis, pg }
    }

    pub fn con(&self) -> redis::Connection {
        self.redis.connection()
    }

    /// Starts a replica of this stack's server (module loaded, same PostgreSQL) and waits
    /// until its replication link is up.
    pub fn start_replica(&self) -> Redis {
        let replica = Redis::start_with(
            &self.pg.module_args(),
            &["--replicaof", "127.0.0.1", &self.redis.port.to_string()],
            &[],
        )
        .unwrap();
        let mut con = replica.connection();
        wait_for("replication link", Duration::from_secs(20), || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .unwrap();
            info.contains("master_link_status:up").then_some(())
        });
        replica
    }
}

pub fn read(
    con: &mut redis::Connection,
    table: &str,
    pk: &str,
) -> redis::RedisResult<Option<String>> {
    redis::cmd("PGCACHE.READ").arg(table).arg(pk).query(con)
}

/// PGCACHE.WRITE of `data` as the row of `pk`.
pub fn write(
    con: &mut redis::Connection,
    table: &str,
    pk: &str,
    data: &str,
) -> redis::RedisResult<String> {
    redis::cmd("PGCACHE.WRITE")
        .arg(table)
        .arg(pk)
        .arg(data)
        .query(con)
}

pub fn invalidate(
    con: &mut redis::Connection,
    table: &str,
    pk: &str,
) -> redis::RedisResult<String> {
    redis::cmd("PGCACHE.INVALIDATE")
        .arg(table)
        .arg(pk)
        .query(con)
}

/// CONFIG SET `name` `value`; the error says why the server refused it.
pub fn config_set(
    con: &mut redis::Connection,
    name: &str,
    value: impl redis::ToRedisArgs,
) -> redis::RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(con)
}

/// CONFIG GET `pattern`: the flat list of names and values Redis replies.
pub fn config_get(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("CONFIG")
        .arg("GET")
        .arg(pattern)
        .query(con)
        .unwrap()
}

pub fn multiread(
    con: &mut redis::Connection,
    table: &str,
    keys: &str,
) -> redis::RedisResult<Vec<Option<String>>> {
    redis::cmd("PGCACHE.MULTIREAD")
        .arg(table)
        .arg(keys)
        .query(con)
}

/// `[{"id":1},{"id":2},...]` for these ids.
pub fn id_array(ids: impl IntoIterator<Item = i64>) -> String {
    let keys: Vec<String> = ids
        .into_iter()
        .map(|id| format!(r#"{{"id":{id}}}"#))
        .collect();
    format!("[{}]", keys.join(","))
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The shipped trigger SQL, installed by tests that need invalidation from PostgreSQL.
pub const TRIGGER_SQL: &str = include_str!("../../examples/invalidation_trigger.sql");

/// Reads `pk` until its row is cached (the first reads after a start are answered but not
/// cached until the invalidation listener listens), and returns the row.
pub fn read_until_cached(con: &mut redis::Connection, table: &str, pk: &str) -> String {
    let key = format!("pg_cache:{table}:{pk}");
    wait_for(
        &format!("{key} to be cached"),
        Duration::from_secs(10),
        || {
            let row = read(con, table, pk).unwrap().expect("a row");
            redis::cmd("EXISTS")
                .arg(&key)
                .query::<bool>(con)
                .unwrap()
                .then_some(row)
        },
    )
}

/// Waits until `key` no longer exists.
pub fn wait_gone(con: &mut redis::Connection, key: &str) {
    wait_for(
        &format!("{key} to be invalidated"),
        Duration::from_secs(10),
        || (!redis::cmd("EXISTS").arg(key).query::<bool>(con).unwrap()).then_some(()),
    );
}

/// The backend of the invalidation listener, if connected.
pub fn listener_pid(pg: &Pg) -> Option<i32> {
    pg.superuser()
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgcache-listener'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
}

/// The next message on a subscribed channel, parsed as JSON.
pub fn next_event(pubsub: &mut redis::PubSub) -> serde_json::Value {
    let msg = pubsub
        .get_message()
        .expect("an event before the read timeout");
    json(&msg.get_payload::<String>().unwrap())
}

/// Waits until at most `n` keys match `pattern` (a flush finished).
pub fn wait_keys_at_most(con: &mut redis::Connection, pattern: &str, n: usize) {
    wait_for(
        &format!("at most {n} keys {pattern}"),
        Duration::from_secs(10),
        || {
            let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(con).unwrap();
            (keys.len() <= n).then_some(())
        },
    );
}

pub const USERS_SQL: &str = "
    CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL, email text);
    INSERT INTO users SELECT g, 'user' || g, 'user' || g || '@example.com' FROM generate_series(1, 200) g;
";

/// A command's map reply (flat name/value pairs in RESP2) as a map.
pub fn map_reply(con: &mut redis::Connection, command: &str) -> HashMap<String, redis::Value> {
    let flat: Vec<redis::Value> = redis::cmd(command).query(con).unwrap();
    flat.chunks(2)
        .map(|pair| {
            (
                redis::from_redis_value::<String>(pair[0].clone()).unwrap(),
                pair[1].clone(),
            )
        })
        .collect()
}

/// A nested map (flat name/value pairs in RESP2) as a map.
pub fn nested(value: &redis::Value) -> HashMap<String, redis::Value> {
    let flat: Vec<redis::Value> = redis::from_redis_value(value.clone()).unwrap();
    flat.chunks(2)
        .map(|pair| {
            (
                redis::from_redis_value::<String>(pair[0].clone()).unwrap(),
                pair[1].clone(),
            )
        })
        .collect()
}

/// A stream's entries, each as field -> value.
pub fn stream_entries(con: &mut redis::Connection, stream: &str) -> Vec<HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            entry
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value(v.clone()).unwrap()))
                .collect()
        })
        .collect()
}
