//! A private redis-server (or valkey-server) with the built module loaded, and `Stack`: one
//! PostgreSQL and one server connected to it.

use crate::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn module_path() -> PathBuf {
    let path = std::env::var("PGCACHE_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/release/libpgcache.so"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release` first (make test does)",
        path.display()
    );
    if std::env::var("PGCACHE_MODULE").is_err() {
        // `cargo test` builds the rlib, not the cdylib: refuse to test a stale module.
        let built = std::fs::metadata(&path).unwrap().modified().unwrap();
        let src = repo_root().join("src");
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
        // Generous: a server under valgrind takes seconds to start.
        let deadline = Instant::now() + Duration::from_secs(60);
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

    /// Stops the server with SHUTDOWN NOSAVE and waits for it to exit, so that whatever runs
    /// at exit (a valgrind leak report) runs.
    pub fn shutdown(&mut self) {
        if let Ok(mut con) = self.try_connection() {
            let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut con);
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(120);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the server did not exit after SHUTDOWN");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
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
        try_connect(self.port)
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
        // A failing test says what became of its server: whether it had exited (a crash, an
        // assertion) and the end of its log, kept before the directory goes.
        if std::thread::panicking() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "server on port {} {}; the end of its log:\n{}",
                self.port,
                exited.map_or("was still running".to_string(), |s| format!(
                    "had exited ({s})"
                )),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.kill();
        // PGCACHE_TEST_KEEP=1 keeps the server's directory (its log) for a look afterwards.
        if std::env::var_os("PGCACHE_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn try_connect(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()
}

/// A new connection to the server on `port`: for threads, which hold a port, not a `Redis`.
/// Creates the ACL user `name` (password `pw`) with `rules`, on the server of `con`.
pub fn add_acl_user(con: &mut redis::Connection, name: &str, rules: &[&str]) {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", name, "on", ">pw"])
        .arg(rules)
        .query(con)
        .unwrap();
}

/// A connection to `port` as the ACL user `user` with password `password`.
pub fn connect_as(port: u16, user: &str, password: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{user}:{password}@127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

pub fn connect(port: u16) -> redis::Connection {
    try_connect(port).unwrap()
}

/// The module arguments that connect the default source to `pg`'s app database, then
/// `extra` (the server's and the default source's settings), then a `source` block per name
/// in `sources`, each reading the database of its own name on `pg`.
pub fn module_args_with_sources(pg: &Pg, sources: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args = pg.module_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    for name in sources {
        args.extend(pg.source_args(name, name));
    }
    args
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
        Self::start_with_sources(setup_sql, &[], extra)
    }

    /// A stack whose module serves named sources too (issue #53): for each `(name,
    /// setup_sql)`, a database `name` on the same PostgreSQL, prepared as the app database
    /// is, and a `source name` block that reads it (`module_args_with_sources`). Waits for
    /// the default source's feed only: a test waits for a named one's by reading a row of it
    /// until it is cached (`read_until_cached_of`).
    pub fn start_with_sources(setup_sql: &str, sources: &[(&str, &str)], extra: &[&str]) -> Stack {
        let pg = Pg::start();
        if !setup_sql.is_empty() {
            pg.execute(setup_sql);
        }
        for (name, sql) in sources {
            pg.create_database(name, sql);
        }
        let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
        let redis = Redis::start(&module_args_with_sources(&pg, &names, extra));
        let stack = Stack { redis, pg };
        // The module waits for its first connection attempt while it loads; a slow one is
        // waited for here (STATS, unlike HEALTH, does not touch PostgreSQL's pool).
        if !extra.windows(2).any(|w| w == ["listen", "no"]) {
            let mut con = stack.con();
            wait_for("the invalidation source", Duration::from_secs(10), || {
                (stats_figure(&mut con, "listener_connected") == 1).then_some(())
            });
            wait_hits_served(&mut con);
        }
        stack
    }

    pub fn con(&self) -> redis::Connection {
        self.redis.connection()
    }

    /// Starts a replica of this stack's server (module loaded, same PostgreSQL) and waits
    /// until its replication link is up.
    pub fn start_replica(&self) -> Redis {
        self.start_replica_of(&self.redis)
    }

    /// Starts a replica of `primary` (this stack's server or one of its replicas) and waits
    /// until its replication link is up.
    pub fn start_replica_of(&self, primary: &Redis) -> Redis {
        self.start_replica_with(primary, &[])
    }

    /// `start_replica_of`, the module loaded with `extra` arguments too.
    pub fn start_replica_with(&self, primary: &Redis, extra: &[&str]) -> Redis {
        let mut args = self.pg.module_args();
        args.extend(extra.iter().map(|a| a.to_string()));
        let replica = Redis::start_with(
            &args,
            &["--replicaof", "127.0.0.1", &primary.port.to_string()],
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
