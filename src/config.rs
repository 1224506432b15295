//! Settings: defaults, then the standard `PG*` environment variables, then `PGCACHE_<NAME>`
//! environment variables, then module arguments (`--loadmodule libpgcache.so name value ...`);
//! a later source wins. Every value is validated here and an unknown or invalid setting stops
//! the load with a message naming it. The password is held separately and never displayed.

use crate::event::EventMask;
use crate::ident::{QualifiedName, parse_table};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// TLS towards PostgreSQL, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "disable" => Ok(Self::Disable),
            "allow" | "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            _ => Err("expected disable, prefer, require, verify-ca or verify-full".into()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where and how to connect to PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// Host name, IP address, or a directory holding the Unix socket (starts with `/`).
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    password: Option<String>,
    pub passfile: Option<PathBuf>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout: Duration,
}

impl PgSettings {
    /// The password, for the connection only: never log or reply it.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl PgSettings {
    /// A one-line description safe to log: the password shows only as set or not.
    pub fn describe(&self) -> String {
        format!(
            "host={} port={} database={} user={} password={} sslmode={}",
            self.host,
            self.port,
            self.database,
            self.user,
            if self.password.is_some() {
                "(set)"
            } else {
                "(none)"
            },
            self.sslmode.name()
        )
    }
}

/// Everything the module reads at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub pg: PgSettings,
    pub default_ttl: u64,
    /// Seconds an absent row is remembered (0: negative caching off).
    pub negative_ttl: u64,
    pub cache_prefix: String,
    /// Worker threads. Default: one per CPU core (2 to 16) — misses are batched per table,
    /// so more threads mostly add context switches unless queries are slow.
    pub workers: usize,
    /// Connections at most; default: as many as workers.
    pub pool_size: usize,
    pub queue_size: usize,
    pub request_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub tables: Vec<QualifiedName>,
    pub event_channel: String,
    pub events: EventMask,
    pub multiread_max: usize,
    /// The channel the invalidation listener LISTENs on.
    pub invalidation_channel: String,
    /// Whether to run the invalidation listener at all.
    pub listen: bool,
    /// Registers PGCACHE.DEBUG (fault injection for tests), like Redis's enable-debug-command.
    pub debug_commands: bool,
    /// Calls at least this slow go in PGCACHE.SLOWLOG (0: all, negative: none).
    pub slowlog_threshold_us: i64,
    pub slowlog_max_len: u64,
    /// Hook definitions (`name ON ... ; ...`), see the `hooks` module; checked when installed.
    pub hooks: String,
    /// Port of the Prometheus endpoint; 0: off.
    pub metrics_port: u16,
    /// Address the Prometheus endpoint listens on.
    pub metrics_bind: String,
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 16)
}

impl Settings {
    /// Every load-time setting as PGCACHE.HEALTH shows it: the password only as set or not.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        let tables: Vec<String> = self.tables.iter().map(|t| t.display()).collect();
        vec![
            ("pg_host", self.pg.host.clone()),
            ("pg_port", self.pg.port.to_string()),
            ("pg_database", self.pg.database.clone()),
            ("pg_user", self.pg.user.clone()),
            (
                "pg_password",
                if self.pg.password.is_some() {
                    "(set)"
                } else {
                    "(none)"
                }
                .into(),
            ),
            ("pg_sslmode", self.pg.sslmode.name().into()),
            (
                "pg_connect_timeout_ms",
                self.pg.connect_timeout.as_millis().to_string(),
            ),
            ("cache_prefix", self.cache_prefix.clone()),
            ("workers", self.workers.to_string()),
            ("pool_size", self.pool_size.to_string()),
            ("queue_size", self.queue_size.to_string()),
            ("invalidation_channel", self.invalidation_channel.clone()),
            ("listen", if self.listen { "yes" } else { "no" }.into()),
            ("tables_at_load", tables.join(",")),
            ("metrics_port", self.metrics_port.to_string()),
            ("metrics_bind", self.metrics_bind.clone()),
        ]
    }
}

/// Longest TTL accepted: ten years, far below any overflow of absolute milliseconds.
pub const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pg: PgSettings {
                host: "localhost".into(),
                port: 5432,
                database: "postgres".into(),
                user: "postgres".into(),
                password: None,
                passfile: None,
                sslmode: SslMode::Prefer,
                sslrootcert: None,
                connect_timeout: Duration::from_secs(2),
            },
            default_ttl: 3600,
            negative_ttl: 30,
            cache_prefix: "pg_cache:".into(),
            workers: default_workers(),
            pool_size: 0,
            queue_size: 10_000,
            request_timeout_ms: 5_000,
            statement_timeout_ms: 3_000,
            tables: Vec::new(),
            event_channel: "pg_cache_events".into(),
            events: EventMask::default(),
            multiread_max: 1_000,
            invalidation_channel: "cache_invalidation".into(),
            listen: true,
            debug_commands: false,
            slowlog_threshold_us: crate::slowlog::DEFAULT_THRESHOLD_US,
            slowlog_max_len: crate::slowlog::DEFAULT_MAX_LEN,
            hooks: String::new(),
            metrics_port: 0,
            metrics_bind: "127.0.0.1".into(),
        }
    }
}

/// A setting that could not be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pgcache: setting {}: {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_string(),
        message: message.into(),
    }
}

/// Every setting name, as module argument and (upper-cased, `PGCACHE_` prefixed) env variable.
pub const SETTING_NAMES: &[&str] = &[
    "pg_url",
    "pg_host",
    "pg_port",
    "pg_database",
    "pg_user",
    "pg_password",
    "pg_passfile",
    "pg_sslmode",
    "pg_sslrootcert",
    "pg_connect_timeout_ms",
    "default_ttl",
    "negative_ttl",
    "cache_prefix",
    "workers",
    "pool_size",
    "queue_size",
    "request_timeout_ms",
    "statement_timeout_ms",
    "tables",
    "event_channel",
    "events",
    "multiread_max",
    "invalidation_channel",
    "listen",
    "debug_commands",
    "slowlog_threshold_us",
    "slowlog_max_len",
    "hooks",
    "metrics_port",
    "metrics_bind",
];

/// Builds the settings from the environment (`env` looks a variable up) and module `args`
/// (name, value, name, value ...).
pub fn load(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let mut s = Settings::default();
    let mut password_from_env_or_args = false;

    // Layer 1: libpq's own variables.
    let libpq: Vec<(&str, &str)> = vec![
        ("PGHOST", "pg_host"),
        ("PGPORT", "pg_port"),
        ("PGDATABASE", "pg_database"),
        ("PGUSER", "pg_user"),
        ("PGPASSWORD", "pg_password"),
        ("PGPASSFILE", "pg_passfile"),
        ("PGSSLMODE", "pg_sslmode"),
        ("PGSSLROOTCERT", "pg_sslrootcert"),
    ];
    for (var, name) in libpq {
        if let Some(v) = env(var) {
            apply(&mut s, name, &v).map_err(|e| err(var, e.message))?;
            password_from_env_or_args |= name == "pg_password";
        }
    }
    if let Some(v) = env("PGCONNECT_TIMEOUT") {
        let secs: u64 = v
            .parse()
            .map_err(|_| err("PGCONNECT_TIMEOUT", "expected whole seconds"))?;
        s.pg.connect_timeout = Duration::from_secs(secs.max(1));
    }

    // Layer 2: PGCACHE_<NAME>; layer 3: module arguments. In each, pg_url goes first so the
    // individual pg_* settings of the same layer refine it.
    let mut env_pairs = Vec::new();
    for name in SETTING_NAMES {
        if let Some(v) = env(&format!("PGCACHE_{}", name.to_uppercase())) {
            env_pairs.push((name.to_string(), v));
        }
    }
    if !args.len().is_multiple_of(2) {
        return Err(err(
            &args[args.len() - 1],
            "has no value: module arguments come in pairs, `name value`",
        ));
    }
    let arg_pairs: Vec<(String, String)> = args
        .chunks(2)
        .map(|p| (p[0].to_lowercase(), p[1].clone()))
        .collect();
    for layer in [env_pairs, arg_pairs] {
        let (url, rest): (Vec<_>, Vec<_>) = layer.into_iter().partition(|(n, _)| n == "pg_url");
        for (name, value) in url.into_iter().chain(rest) {
            password_from_env_or_args |= name == "pg_password" || name == "pg_url";
            apply(&mut s, &name, &value)?;
        }
    }

    if s.pool_size == 0 {
        s.pool_size = s.workers;
    }
    if s.pg.password.is_none() && !password_from_env_or_args {
        let passfile =
            s.pg.passfile
                .clone()
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
        if let Some(path) = passfile
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            s.pg.password = passfile_lookup(&text, &s.pg);
        }
    }
    Ok(s)
}

/// An integer from `min` to `max`, inclusive.
fn int_in<T: std::str::FromStr + PartialOrd + fmt::Display>(
    value: &str,
    min: T,
    max: T,
) -> Result<T, String> {
    match value.parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(format!(
            "expected an integer from {min} to {max}, got {value:?}"
        )),
    }
}

fn parse_int<T: std::str::FromStr + PartialOrd + fmt::Display>(
    name: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    int_in(value, min, max).map_err(|e| err(name, e))
}

/// A channel name: not empty, and no control characters (a NUL would cut it short in
/// Redis's configuration file and in every C string it passes through).
fn channel_name(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().any(char::is_control) {
        return Err(format!("must not hold control characters, got {value:?}"));
    }
    Ok(value.to_string())
}

// The settings CONFIG SET can change are validated by one function each, used both for
// the module arguments (`apply`) and by `settings::RUNTIME`.

/// Seconds an absent row is remembered; 0 turns negative caching off.
pub fn parse_negative_ttl(value: &str) -> Result<u64, String> {
    int_in(value, 0, MAX_TTL_SECONDS)
}
pub fn parse_request_timeout_ms(value: &str) -> Result<u64, String> {
    int_in(value, 10, 3_600_000)
}
/// 0: no statement timeout.
pub fn parse_statement_timeout_ms(value: &str) -> Result<u64, String> {
    int_in(value, 0, 3_600_000)
}
pub fn parse_multiread_max(value: &str) -> Result<usize, String> {
    int_in(value, 1, 100_000)
}
pub fn parse_event_channel(value: &str) -> Result<String, String> {
    channel_name(value)
}

fn parse_yes_no(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(err(name, format!("expected yes or no, got {value:?}"))),
    }
}

/// Validates a TTL in seconds (module argument, CONFIG SET or a command's TTL argument).
pub fn parse_ttl(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(v) if (1..=MAX_TTL_SECONDS).contains(&v) => Ok(v),
        _ => Err(format!(
            "TTL must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}, got {value:?}"
        )),
    }
}

/// Parses the allowlist: comma-separated `name` or `schema.name`; empty means every table.
pub fn parse_tables(value: &str) -> Result<Vec<QualifiedName>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_table)
        .collect()
}

fn apply(s: &mut Settings, name: &str, value: &str) -> Result<(), ConfigError> {
    match name {
        "pg_url" => apply_url(s, value)?,
        "pg_host" => {
            if value.is_empty() {
                return Err(err(name, "must not be empty"));
            }
            s.pg.host = value.to_string()
        }
        "pg_port" => s.pg.port = parse_int(name, value, 1u16, 65535)?,
        "pg_database" => s.pg.database = value.to_string(),
        "pg_user" => s.pg.user = value.to_string(),
        "pg_password" => s.pg.password = Some(value.to_string()),
        "pg_passfile" => s.pg.passfile = Some(PathBuf::from(value)),
        "pg_sslmode" => s.pg.sslmode = SslMode::parse(value).map_err(|e| err(name, e))?,
        "pg_sslrootcert" => s.pg.sslrootcert = Some(PathBuf::from(value)),
        "pg_connect_timeout_ms" => {
            s.pg.connect_timeout = Duration::from_millis(parse_int(name, value, 100u64, 600_000)?)
        }
        "default_ttl" => s.default_ttl = parse_ttl(value).map_err(|e| err(name, e))?,
        "negative_ttl" => s.negative_ttl = parse_negative_ttl(value).map_err(|e| err(name, e))?,
        "cache_prefix" => s.cache_prefix = value.to_string(),
        "workers" => s.workers = parse_int(name, value, 1usize, 256)?,
        "pool_size" => s.pool_size = parse_int(name, value, 1usize, 256)?,
        "queue_size" => s.queue_size = parse_int(name, value, 1usize, 10_000_000)?,
        "request_timeout_ms" => {
            s.request_timeout_ms = parse_request_timeout_ms(value).map_err(|e| err(name, e))?
        }
        "statement_timeout_ms" => {
            s.statement_timeout_ms = parse_statement_timeout_ms(value).map_err(|e| err(name, e))?
        }
        "tables" => s.tables = parse_tables(value).map_err(|e| err(name, e))?,
        "event_channel" => {
            s.event_channel = parse_event_channel(value).map_err(|e| err(name, e))?
        }
        "events" => s.events = EventMask::parse(value).map_err(|e| err(name, e))?,
        "multiread_max" => {
            s.multiread_max = parse_multiread_max(value).map_err(|e| err(name, e))?
        }
        "invalidation_channel" => {
            s.invalidation_channel = channel_name(value).map_err(|e| err(name, e))?
        }
        "listen" => s.listen = parse_yes_no(name, value)?,
        "debug_commands" => s.debug_commands = parse_yes_no(name, value)?,
        "slowlog_threshold_us" => {
            s.slowlog_threshold_us =
                crate::slowlog::parse_threshold(value).map_err(|e| err(name, e))?
        }
        "slowlog_max_len" => {
            s.slowlog_max_len = crate::slowlog::parse_max_len(value).map_err(|e| err(name, e))?
        }
        // Checked when installed (`settings::init`), which fails the load the same way.
        "hooks" => s.hooks = value.to_string(),
        "metrics_port" => s.metrics_port = parse_int(name, value, 0u16, 65535)?,
        "metrics_bind" => {
            value
                .parse::<std::net::IpAddr>()
                .map_err(|_| err(name, format!("expected an IP address, got {value:?}")))?;
            s.metrics_bind = value.to_string()
        }
        _ => {
            return Err(err(
                name,
                format!(
                    "unknown setting; known settings: {}",
                    SETTING_NAMES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Takes host, port, database, user, password, sslmode and connect_timeout from a libpq URL
/// (`postgresql://user:pass@host:5432/db?sslmode=require`) or key=value conninfo.
fn apply_url(s: &mut Settings, url: &str) -> Result<(), ConfigError> {
    use postgres::config::{Host, SslMode as PgSsl};
    let config: postgres::Config = url
        .parse()
        // The parser's message can quote the input, which may hold the password.
        .map_err(|_| {
            err(
                "pg_url",
                "not a valid libpq URL or key=value connection string",
            )
        })?;
    if let Some(host) = config.get_hosts().first() {
        s.pg.host = match host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.to_string_lossy().into_owned(),
        };
    }
    if let Some(port) = config.get_ports().first() {
        s.pg.port = *port;
    }
    if let Some(db) = config.get_dbname() {
        s.pg.database = db.to_string();
    }
    if let Some(user) = config.get_user() {
        s.pg.user = user.to_string();
    }
    if let Some(pw) = config.get_password() {
        s.pg.password = Some(String::from_utf8_lossy(pw).into_owned());
    }
    if url.contains("sslmode") {
        s.pg.sslmode = match config.get_ssl_mode() {
            PgSsl::Disable => SslMode::Disable,
            PgSsl::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
    }
    if let Some(t) = config.get_connect_timeout() {
        s.pg.connect_timeout = *t;
    }
    Ok(())
}

/// Whether a password is the mask earlier versions of pgcache left in the module arguments,
/// which CONFIG REWRITE then saved to redis.conf.
pub fn is_masked(password: &str) -> bool {
    !password.is_empty() && password.bytes().all(|b| b == b'*')
}

/// Finds the password for this connection in a `.pgpass` file's text: lines of
/// `host:port:database:user:password`, `*` matching anything, `\:` and `\\` escaped.
pub fn passfile_lookup(text: &str, pg: &PgSettings) -> Option<String> {
    let port = pg.port.to_string();
    let wanted = [pg.host.as_str(), port.as_str(), &pg.database, &pg.user];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = fields[..4].iter().zip(wanted).all(|(f, w)| {
            f == "*" || f == w || (w == "127.0.0.1" || w.starts_with('/')) && f == "localhost"
        });
        if matches {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().unwrap().push(next);
                }
            }
            ':' => fields.push(String::new()),
            _ => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        load(&args, &|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_original_module() {
        let s = load_with(&[], &[]).unwrap();
        assert_eq!(s.pg.host, "localhost");
        assert_eq!(s.pg.port, 5432);
        assert_eq!(s.pg.database, "postgres");
        assert_eq!(s.pg.user, "postgres");
        assert_eq!(s.pg.password(), None);
        assert_eq!(s.default_ttl, 3600);
        assert_eq!(s.cache_prefix, "pg_cache:");
        assert_eq!(s.workers, default_workers());
        assert_eq!(s.pool_size, s.workers);
        let s = load_with(&["workers", "3"], &[]).unwrap();
        assert_eq!((s.workers, s.pool_size), (3, 3));
        let s = load_with(&["workers", "3", "pool_size", "5"], &[]).unwrap();
        assert_eq!((s.workers, s.pool_size), (3, 5));
    }

    #[test]
    fn args_override_pgcache_env_which_overrides_libpq_env() {
        let s = load_with(
            &["pg_host", "10.0.0.1", "default_ttl", "60"],
            &[
                ("PGHOST", "libpq-host"),
                ("PGPORT", "6000"),
                ("PGCACHE_PG_HOST", "env-host"),
                ("PGCACHE_PG_PORT", "7000"),
                ("PGCACHE_DEFAULT_TTL", "30"),
            ],
        )
        .unwrap();
        assert_eq!(s.pg.host, "10.0.0.1");
        assert_eq!(s.pg.port, 7000);
        assert_eq!(s.default_ttl, 60);
    }

    #[test]
    fn url_is_refined_by_individual_settings() {
        let s = load_with(
            &[
                "pg_port",
                "6543",
                "pg_url",
                "postgresql://app:s3cret@db.example:5433/shop?sslmode=require",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(s.pg.host, "db.example");
        assert_eq!(s.pg.port, 6543);
        assert_eq!(s.pg.database, "shop");
        assert_eq!(s.pg.user, "app");
        assert_eq!(s.pg.password(), Some("s3cret"));
        assert_eq!(s.pg.sslmode, SslMode::Require);
        let conninfo = load_with(&["pg_url", "host=h port=1 dbname=d user=u"], &[]).unwrap();
        assert_eq!((conninfo.pg.host.as_str(), conninfo.pg.port), ("h", 1));
    }

    #[test]
    fn invalid_and_unknown_settings_name_the_setting() {
        for (args, setting) in [
            (vec!["pg_port", "abc"], "pg_port"),
            (vec!["pg_port", "70000"], "pg_port"),
            (vec!["default_ttl", "0"], "default_ttl"),
            (vec!["default_ttl", "-5"], "default_ttl"),
            (vec!["pg_hots", "x"], "pg_hots"),
            (vec!["pg_sslmode", "maybe"], "pg_sslmode"),
            (vec!["workers", "0"], "workers"),
            (vec!["events", "hit,bogus"], "events"),
            (vec!["tables", "a.b.c"], "tables"),
            (vec!["pg_host"], "pg_host"),
        ] {
            let e = load_with(&args, &[]).unwrap_err();
            assert_eq!(e.setting, setting, "{args:?}");
            assert!(e.to_string().starts_with("pgcache: setting"));
        }
    }

    #[test]
    fn a_bad_url_does_not_echo_the_password() {
        let e = load_with(&["pg_url", "postgresql://u:hunter2@h:notaport/db"], &[]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn effective_settings_hide_the_password() {
        let s = load_with(&["pg_password", "hunter2"], &[]).unwrap();
        let shown = format!("{:?}", s.effective());
        assert!(
            !shown.contains("hunter2") && shown.contains("(set)"),
            "{shown}"
        );
    }

    #[test]
    fn description_never_shows_the_password() {
        let s = load_with(&["pg_password", "hunter2"], &[]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(s.pg.describe().contains("password=(set)"));
    }

    #[test]
    fn passfile_matches_like_libpq() {
        let mut pg = Settings::default().pg;
        pg.host = "db".into();
        pg.database = "app".into();
        pg.user = "app".into();
        let text = "# comment\nother:*:*:*:nope\ndb:5432:app:app:pa\\:ss\n*:*:*:*:fallback\n";
        assert_eq!(passfile_lookup(text, &pg).as_deref(), Some("pa:ss"));
        pg.user = "someone".into();
        assert_eq!(passfile_lookup(text, &pg).as_deref(), Some("fallback"));
    }

    #[test]
    fn passfile_is_read_when_no_password_is_given() {
        let dir = std::env::temp_dir().join(format!("pgcache-passfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(&file, "*:*:*:*:from-file\n").unwrap();
        let path = file.to_str().unwrap();
        let s = load_with(&["pg_passfile", path], &[]).unwrap();
        assert_eq!(s.pg.password(), Some("from-file"));
        let s = load_with(&["pg_passfile", path, "pg_password", "explicit"], &[]).unwrap();
        assert_eq!(s.pg.password(), Some("explicit"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_earlier_versions_mask_is_recognised() {
        assert!(is_masked("*******"));
        assert!(!is_masked("pa*ss"));
        assert!(!is_masked(""));
    }

    #[test]
    fn tables_allowlist_parses_names() {
        let t = parse_tables("users, sales.orders,").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].schema, "sales");
        assert!(parse_tables("").unwrap().is_empty());
    }

    #[test]
    fn ttl_limits() {
        assert_eq!(parse_ttl("1"), Ok(1));
        for bad in ["0", "-1", "1.5", "abc", "99999999999999999999", ""] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
