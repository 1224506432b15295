//! A private PostgreSQL per test: copied from an initdb template, on its own port, run as
//! the `postgres` user when the tests run as root, stopped by PID when dropped.

use crate::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// The invalidation mode the tests run in: `PGCACHE_TEST_INVALIDATION_SOURCE` (`make test`
/// runs the invalidation tests in both), notify by default. The app database's
/// `pgcache.invalidation_source` says the same, so `pgcache_watch` installs what it needs.
pub fn invalidation_source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| {
        std::env::var("PGCACHE_TEST_INVALIDATION_SOURCE").unwrap_or_else(|_| "notify".into())
    })
}

/// A log position as PostgreSQL prints it (`0/16B3748`), as a number.
pub fn lsn(text: &str) -> u64 {
    let (high, low) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("{text:?} is no log position"));
    (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
}

/// An initdb'd data directory, made once per test run and copied for each server.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        // Where cargo puts its test runs' scratch files (CARGO_TARGET_TMPDIR of a test).
        let root = repo_root().join("target/tmp");
        std::fs::create_dir_all(&root).unwrap();
        let dir = root.join("pg-template");
        if dir.join("PG_VERSION").exists() {
            return dir;
        }
        let building = temp_dir("initdb");
        let data = building.join("data");
        initdb(&data);
        // Another test binary may have won the race; either copy is fine.
        let _ = std::fs::rename(&data, &dir);
        let _ = std::fs::remove_dir_all(&building);
        dir
    })
}

/// A new cluster in `data` (whose parent exists), with the superuser's password.
fn initdb(data: &Path) {
    let building = data.parent().unwrap();
    let pwfile = building.join("pw");
    std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
    chown_for_pg(building);
    let out = as_pg_user(&mut Command::new(pg_bin("initdb")))
        .arg("-D")
        .arg(data)
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
    let _ = std::fs::remove_file(&pwfile);
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

    /// A server of a cluster of its own (`initdb` afresh, not a copy of the template): its
    /// system identifier is no other test server's.
    pub fn start_another_system() -> Pg {
        Self::start_with(|data| {
            std::fs::remove_dir_all(data).unwrap();
            initdb(data);
            Vec::new()
        })
    }

    /// Starts a server with TLS on, its certificate (for `localhost` and 127.0.0.1) made
    /// fresh. Returns the server and the certificate, which is its own CA.
    pub fn start_tls() -> (Pg, PathBuf) {
        let mut cert = PathBuf::new();
        let pg = Self::start_with(|data| {
            run_ok(
                Command::new("openssl")
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
                    .arg(data.join("server.crt")),
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
        pg.superuser()
            .batch_execute(&format!(
                "CREATE ROLE app LOGIN REPLICATION PASSWORD '{PG_PASSWORD}'"
            ))
            .unwrap();
        pg.prepare_database("app");
        pg
    }

    /// Database `name`, owned by the app user, as pgcache's setup makes one: its
    /// `pgcache.invalidation_source` the tests' mode (so `pgcache_watch` installs what that
    /// mode needs) and the DDL event trigger installed.
    fn prepare_database(&self, name: &str) {
        let mut admin = self.superuser();
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER app"))
            .unwrap();
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {name} SET pgcache.invalidation_source = '{}'",
                invalidation_source()
            ))
            .unwrap();
        // As a deployment that follows docs/setup.md does: DDL reaches pgcache through its feed.
        self.superuser_of(name)
            .batch_execute(DDL_TRIGGER_SQL)
            .unwrap();
    }

    /// Another database on this server, prepared as `app` is (a named source's, issue #53),
    /// with `setup_sql` run in it as the app user.
    pub fn create_database(&self, name: &str, setup_sql: &str) {
        self.prepare_database(name);
        if !setup_sql.is_empty() {
            self.execute_in(name, setup_sql);
        }
    }

    /// A hot standby of this server: a base backup streamed from it, started on its own
    /// port with the same server arguments, replaying this server's log as it comes (its
    /// roles, databases and rows are this server's; it refuses writes).
    pub fn start_standby(&self) -> Pg {
        let dir = temp_dir("standby");
        chown_for_pg(&dir);
        let data = dir.join("data");
        let out = as_pg_user(&mut Command::new(pg_bin("pg_basebackup")))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data)
            // -R: standby.signal and a primary_conninfo (with the password given here).
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut standby = Pg {
            port: 0,
            dir,
            child: None,
            server_args: self.server_args.clone(),
        };
        standby.launch();
        standby
    }

    /// How far this server's log goes: inserted (a primary; with `synchronous_commit=off` the
    /// written position may trail a commit) or replayed (a standby).
    pub fn log_position(&self) -> u64 {
        let text: String = self
            .superuser()
            .query_one(
                "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                         ELSE pg_current_wal_insert_lsn() END)::text",
                &[],
            )
            .unwrap()
            .get(0);
        lsn(&text)
    }

    /// A standby: stops replaying its primary's log (it keeps receiving it), and returns
    /// once replay is paused.
    pub fn pause_replay(&self) {
        let mut admin = self.superuser();
        admin.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
        wait_for("replay to pause", Duration::from_secs(30), || {
            let state: String = admin
                .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
                .unwrap()
                .get(0);
            (state == "paused").then_some(())
        });
    }

    /// A standby: replays again.
    pub fn resume_replay(&self) {
        self.superuser()
            .batch_execute("SELECT pg_wal_replay_resume()")
            .unwrap();
    }

    /// A standby: waits until it has replayed its primary's log through `position`.
    pub fn wait_replayed(&self, position: u64) {
        wait_for(
            &format!("the standby to replay through {position:#x}"),
            Duration::from_secs(60),
            || (self.log_position() >= position).then_some(()),
        );
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
            // Both invalidation modes run on every server.
            .args(["-c", "wal_level=logical"])
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
        self.client_of("app")
    }

    /// A connection as the app user to database `dbname`.
    pub fn client_of(&self, dbname: &str) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("app")
            .password(PG_PASSWORD)
            .dbname(dbname)
            .connect(postgres::NoTls)
            .unwrap()
    }

    pub fn execute(&self, sql: &str) {
        self.execute_in("app", sql);
    }

    /// Runs `sql` as the app user in database `dbname`.
    pub fn execute_in(&self, dbname: &str, sql: &str) {
        self.client_of(dbname).batch_execute(sql).unwrap();
    }

    /// Makes every statement of the app user appear in the server log (new sessions only).
    pub fn log_app_statements(&self) {
        self.superuser()
            .batch_execute("ALTER ROLE app SET log_statement = 'all'")
            .unwrap();
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
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
        self.connection_settings("app")
            .into_iter()
            .flat_map(|(name, value)| [name.to_string(), value])
            .collect()
    }

    /// The module arguments of a named source `source` that reads database `dbname` of this
    /// server, as the app user: a `source` block, which goes after the server's settings. A
    /// named source takes nothing from the default source's settings, so the block gives
    /// every connection setting.
    pub fn source_args(&self, source: &str, dbname: &str) -> Vec<String> {
        let mut args = vec!["source".to_string(), source.to_string()];
        args.extend(
            self.connection_settings(dbname)
                .into_iter()
                .flat_map(|(name, value)| [name.to_string(), value]),
        );
        args
    }

    /// The environment that declares the same named source as `source_args`, but for
    /// `PGCACHE_SOURCES` (which the caller gives, since it lists every source):
    /// `PGCACHE_<SOURCE>_<SETTING>` variables.
    pub fn source_env(&self, source: &str, dbname: &str) -> Vec<(String, String)> {
        self.connection_settings(dbname)
            .into_iter()
            .map(|(name, value)| (format!("PGCACHE_{}_{}", source, name).to_uppercase(), value))
            .collect()
    }

    /// The settings that connect to database `dbname` of this server as the app user.
    fn connection_settings(&self, dbname: &str) -> Vec<(&'static str, String)> {
        vec![
            ("pg_host", "127.0.0.1".to_string()),
            ("pg_port", self.port.to_string()),
            ("pg_database", dbname.to_string()),
            ("pg_user", "app".to_string()),
            ("pg_password", PG_PASSWORD.to_string()),
            ("pg_sslmode", "disable".to_string()),
            ("invalidation_source", invalidation_source().to_string()),
        ]
    }

    /// The postmaster's and every backend's process id, while the server runs.
    pub fn pids(&self) -> Vec<i32> {
        let Some(postmaster) = self.child.as_ref().map(|c| c.id() as i32) else {
            return Vec::new();
        };
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the fields after the command's closing parenthesis.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(postmaster)
                && let Ok(pid) = entry.file_name().to_string_lossy().parse()
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops the server (fast shutdown), keeping its data for `restart`.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.spawn_postgres(self.port, "postgres-restart.log");
        // After an immediate stop it recovers first, slower on a machine busy with the
        // rest of the suite: a deadline, not a pause.
        wait_for("PostgreSQL restart", Duration::from_secs(60), || {
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
        // A failing test that owns its server (a primary and its standby) says what the
        // server logged last, as `Redis` does, before the directory goes.
        if std::thread::panicking() {
            for name in ["postgres.log", "postgres-restart.log"] {
                let Ok(log) = std::fs::read_to_string(self.dir.join(name)) else {
                    continue;
                };
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "PostgreSQL on port {}: the end of its {name}:\n{}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        self.kill();
        // PGCACHE_TEST_KEEP=1 keeps the data directory and its log, as for Redis.
        if std::env::var_os("PGCACHE_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
