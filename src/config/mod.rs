//! Settings: defaults, then the standard `PG*` environment variables, then `PGCACHE_<NAME>`
//! environment variables, then module arguments (`--loadmodule libpgcache.so name value ...`);
//! a later layer wins. Every value is validated against the one table of settings (`table`)
//! and an unknown or invalid setting stops the load with a message naming it. The password is
//! held apart and never displayed.
//!
//! Each `source NAME` word in the module arguments starts a named source's block (`sources`);
//! the pairs before the first configure the server and the default source.

pub mod current;
mod definitions;
mod passfile;
mod sources;
pub mod table;
mod url;

use crate::error::Error;
use crate::model::event::EventMask;
use crate::model::ident::{QualifiedName, parse_table};
use crate::model::pass_through::Policy;
pub use definitions::{render as render_definitions, same_pairs};
pub use sources::{
    NamedSource, declare, redeclare, refuse_shared_slots_of, undeclared_source_variables,
};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
pub use table::{SETTINGS, Setting};

/// TLS towards PostgreSQL, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    #[default]
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "disable" => Ok(Self::Disable),
            "allow" | "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            _ => Err(Error::invalid(
                "expected disable, prefer, require, verify-ca or verify-full",
            )),
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
#[derive(Clone, PartialEq, Eq, Default)]
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

/// Workers (and connections) when neither `workers` nor `pool_size` is set. A miss waits on
/// PostgreSQL, so the Redis host's cores do not bound how many are useful: on the #39
/// benchmark (pgbench's tpcb-like writes, 4 readers, a 2-core VM) 2 workers read at 0.08x
/// PostgreSQL's direct rate, 4 to 12 at 0.35x to 0.66x (BENCHMARKS.md). Eight keep a few
/// concurrent misses going per Redis node without crowding PostgreSQL's max_connections
/// (100 by default) across a cluster's nodes.
pub const DEFAULT_WORKERS: usize = 8;

/// Every setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub pg: PgSettings,
    pub default_ttl: u64,
    /// Seconds an absent row is remembered (0: negative caching off).
    pub negative_ttl: u64,
    pub cache_prefix: String,
    /// Worker threads. Default: `DEFAULT_WORKERS`, or `pool_size` when that is set.
    pub workers: usize,
    /// Connections at most; default: as many as workers.
    pub pool_size: usize,
    /// Connections the event loop speaks PostgreSQL on itself (`cache::onloop`).
    pub loop_connections: usize,
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
    /// Where invalidations come from: PostgreSQL's replication log, NOTIFY, or the first
    /// the server allows.
    pub invalidation_source: InvalidationSource,
    /// The publication whose tables the replication source follows.
    pub publication: String,
    /// The logical replication slot the replication source consumes.
    pub replication_slot: String,
    /// How long a read AFTER a position not applied yet waits for it, in milliseconds.
    pub after_wait_ms: u64,
    /// Longest a hit may lag PostgreSQL's commits, in milliseconds (-1: unbounded).
    pub max_staleness_ms: i64,
    /// How stale a hit may be while PostgreSQL cannot be reached, in milliseconds (-1:
    /// unbounded).
    pub stale_if_error_ms: i64,
    /// Most rows a PGCACHE.QUERY result may have to be cached.
    pub query_max_rows: u64,
    /// Most bytes (of its JSON) a PGCACHE.QUERY result may have to be cached.
    pub query_max_bytes: u64,
    /// Most statement spellings PGCACHE.QUERY remembers.
    pub query_max_statements: u64,
    /// Whether results of row-shaped statements are dropped row by row (else per table).
    pub query_row_precision: bool,
    /// Most bytes the row-precision index of query results may take.
    pub query_index_max_bytes: u64,
    /// Whether statements and tables whose entries die unread pass their misses through.
    pub pass_through: Policy,
    /// Registers PGCACHE.DEBUG (fault injection for tests), like Redis's enable-debug-command.
    pub debug_commands: bool,
    /// Calls at least this slow go in PGCACHE.SLOWLOG (0: all, negative: none).
    pub slowlog_threshold_us: i64,
    pub slowlog_max_len: u64,
    /// Hook definitions (`name ON ... ; ...`), see `events::hooks`; checked when installed.
    pub hooks: String,
    /// Port of the Prometheus endpoint; 0: off.
    pub metrics_port: u16,
    /// Address the Prometheus endpoint listens on.
    pub metrics_bind: String,
    /// The sources declared by name, in the order declared (`PGCACHE_SOURCES`, then the
    /// module arguments' blocks, or the `sources` setting, which replaces both).
    pub named: Vec<NamedSource>,
    /// The `sources` setting as given, until `redeclare` makes `named` of it (empty: none
    /// given; CONFIG GET shows `named`).
    pub sources_given: String,
    /// Hot standbys of the source's PostgreSQL (`pg::standby`).
    pub standbys: Vec<StandbyAddress>,
}

/// Longest TTL accepted: ten years, far below any overflow of absolute milliseconds.
pub const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

impl Settings {
    /// Every field empty or zero, before the table's defaults are applied.
    pub(super) fn blank() -> Self {
        Settings {
            pg: PgSettings::default(),
            default_ttl: 0,
            negative_ttl: 0,
            cache_prefix: String::new(),
            workers: 0,
            pool_size: 0,
            loop_connections: 0,
            queue_size: 0,
            request_timeout_ms: 0,
            statement_timeout_ms: 0,
            tables: Vec::new(),
            event_channel: String::new(),
            events: EventMask(0),
            multiread_max: 0,
            invalidation_channel: String::new(),
            listen: false,
            invalidation_source: InvalidationSource::Auto,
            publication: String::new(),
            replication_slot: String::new(),
            after_wait_ms: 0,
            max_staleness_ms: 0,
            stale_if_error_ms: 0,
            query_max_rows: 0,
            query_max_bytes: 0,
            query_max_statements: 0,
            query_row_precision: true,
            query_index_max_bytes: 0,
            pass_through: Policy::Auto,
            debug_commands: false,
            slowlog_threshold_us: 0,
            slowlog_max_len: 0,
            hooks: String::new(),
            metrics_port: 0,
            metrics_bind: String::new(),
            named: Vec::new(),
            sources_given: String::new(),
            standbys: Vec::new(),
        }
    }

    /// Fills in what the defaults leave to be computed: `workers` as many as the
    /// connections when `pool_size` is set (a worker holds one connection while it works, so
    /// fewer would leave connections idle while misses wait for a worker), else
    /// `DEFAULT_WORKERS`; `pool_size` as many as workers.
    fn complete(&mut self) {
        if self.workers == 0 {
            self.workers = match self.pool_size {
                0 => DEFAULT_WORKERS,
                connections => connections,
            };
        }
        if self.pool_size == 0 {
            self.pool_size = self.workers;
        }
    }
}

impl Settings {
    /// The table's defaults, the computed ones still to be completed.
    fn with_defaults() -> Self {
        let mut s = Settings::blank();
        for setting in &SETTINGS {
            if let table::Initial::Value(value) = setting.initial {
                // Every default is checked by a unit test.
                let _ = setting.apply(&mut s, value);
            }
        }
        s
    }
}

impl Settings {
    /// Every setting as HEALTH and CONFIG GET show it: the password only as set or not.
    pub fn shown(&self) -> Vec<(&'static str, String)> {
        SETTINGS
            .iter()
            .filter_map(|setting| setting.show.map(|show| (setting.name, show(self))))
            .collect()
    }
}

impl Default for Settings {
    fn default() -> Self {
        let mut s = Settings::with_defaults();
        s.complete();
        s
    }
}

/// A setting that could not be used, with the reason.
pub(super) fn err(setting: &str, message: impl fmt::Display) -> Error {
    Error::setting(setting, message)
}

/// Stores `value` in the setting `name` (any case); the error names the setting as `label`
/// says (its name, and the source it is for).
fn apply(s: &mut Settings, name: &str, value: &str, label: &str) -> Result<(), Error> {
    let Some(setting) = table::find(&name.to_lowercase()) else {
        let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        return Err(err(
            label,
            format!("unknown setting; known settings: {}", known.join(", ")),
        ));
    };
    setting.apply(s, value).map_err(|e| err(label, e))
}

/// `(setting, value)` pairs, the setting's name in lower case.
pub(super) type Pairs = Vec<(String, String)>;

/// Builds the settings from the environment (`env` looks a variable up) and module `args`
/// (name, value, name, value ..., each `source NAME` starting a named source's block).
pub fn load(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Error> {
    let (arg_pairs, blocks) = sources::blocks(args)?;
    let mut s = Settings::with_defaults();
    let mut password_given = false;

    // Layer 1: libpq's own variables, the default source's only: `PGHOST` pointing every
    // source at one database would be a silent mistake.
    for setting in &SETTINGS {
        if let Some(var) = setting.libpq_env
            && let Some(value) = env(var)
        {
            setting.apply(&mut s, &value).map_err(|e| err(var, e))?;
            password_given |= setting.name == "pg_password";
        }
    }
    if let Some(v) = env("PGCONNECT_TIMEOUT") {
        table::apply_libpq_connect_timeout(&mut s, &v).map_err(|e| err("PGCONNECT_TIMEOUT", e))?;
    }

    // Layer 2: PGCACHE_<NAME>; layer 3: module arguments.
    // `PGCACHE_SOURCES` names the sources to declare (`sources`), not the `sources` setting.
    let env_pairs: Pairs = (SETTINGS.iter())
        .filter(|setting| setting.name != "sources")
        .filter_map(|setting| {
            env(&format!("PGCACHE_{}", setting.name.to_uppercase()))
                .map(|v| (setting.name.to_string(), v))
        })
        .collect();
    password_given |= apply_layers(&mut s, [env_pairs, arg_pairs], &|name| name.to_string())?;

    s.complete();
    if s.pg.password.is_none() && !password_given {
        table::apply_passfile(&mut s, env("HOME"));
    }
    check_standbys(&s, "the default source")?;
    s.named = sources::named_sources(&s, blocks, env)?;
    sources::refuse_shared_slots(&s)?;
    if !s.sources_given.is_empty() {
        let given = std::mem::take(&mut s.sources_given);
        sources::redeclare(&mut s, &given, env)?;
    }
    Ok(s)
}

/// Applies each layer in turn, a later one winning, `pg_url` first within a layer so that
/// the `pg_*` settings of the same layer refine it. `label` names a setting in an error.
/// Says whether a layer gave the password (or a URL, which may hold one).
pub(super) fn apply_layers(
    s: &mut Settings,
    layers: [Pairs; 2],
    label: &dyn Fn(&str) -> String,
) -> Result<bool, Error> {
    let mut password_given = false;
    for layer in layers {
        let (url, rest): (Vec<_>, Vec<_>) = layer.into_iter().partition(|(n, _)| n == "pg_url");
        for (name, value) in url.into_iter().chain(rest) {
            password_given |= name == "pg_password" || name == "pg_url";
            apply(s, &name, &value, &label(&name))?;
        }
    }
    Ok(password_given)
}
/// A channel name: not empty, and no control characters (a NUL would cut it short in
/// Redis's configuration file and in every C string it passes through).
fn channel_name(value: &str) -> Result<String, Error> {
    if value.is_empty() {
        return Err(Error::invalid("must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "must not hold control characters, got {value:?}"
        )));
    }
    Ok(value.to_string())
}

/// Where invalidations come from (`invalidation_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidationSource {
    /// A logical replication slot with the `pgoutput` plugin.
    Replication,
    /// Triggers that NOTIFY a channel the listener LISTENs on.
    Notify,
    /// Replication when the server has `wal_level = logical` and the role may replicate,
    /// otherwise NOTIFY (with a warning).
    Auto,
}

impl InvalidationSource {
    pub fn parse(value: &str) -> Result<InvalidationSource, Error> {
        match value.to_ascii_lowercase().as_str() {
            "replication" => Ok(InvalidationSource::Replication),
            "notify" => Ok(InvalidationSource::Notify),
            "auto" => Ok(InvalidationSource::Auto),
            _ => Err(Error::invalid(format!(
                "must be replication, notify or auto, got {value:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            InvalidationSource::Replication => "replication",
            InvalidationSource::Notify => "notify",
            InvalidationSource::Auto => "auto",
        }
    }
}

/// A replication slot's or publication's name: what PostgreSQL accepts for a slot (lower-case
/// letters, digits and underscores, at most 63), so it needs no quoting anywhere.
fn replication_name(value: &str) -> Result<String, Error> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(Error::invalid(format!(
            "must be 1 to 63 lower-case letters, digits or underscores, got {value:?}"
        )));
    }
    Ok(value.to_string())
}

/// A standby's address: its host, and its port (None: the source's `pg_port`).
pub type StandbyAddress = (String, Option<u16>);

/// The `standbys` setting: `host[:port]` entries, comma-separated (an IPv6 address in
/// brackets, `[::1]:5433`).
pub fn parse_standbys(value: &str) -> Result<Vec<StandbyAddress>, Error> {
    let mut standbys = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            Error::invalid(format!(
                "{entry:?} is not `host` or `host:port` (a port is 1 to 65535)"
            ))
        };
        let (host, port) = match entry.strip_prefix('[') {
            Some(rest) => {
                let (host, after) = rest.split_once(']').ok_or_else(bad)?;
                (host, after.strip_prefix(':'))
            }
            None => match entry.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                _ => (entry, None),
            },
        };
        let port = match port {
            Some(port) => Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(bad)?,
            ),
            None => None,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(bad());
        }
        let address = (host.to_string(), port);
        if standbys.contains(&address) {
            return Err(Error::invalid(format!("{entry:?} is listed twice")));
        }
        standbys.push(address);
    }
    Ok(standbys)
}

/// The `standbys` setting as given back.
pub fn render_standbys(standbys: &[StandbyAddress]) -> String {
    (standbys.iter())
        .map(|(host, port)| {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            match port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Refuses standbys a source cannot use: a miss goes to a standby only once it has replayed
/// the log as far as the cache needs, a position NOTIFY does not give.
fn check_standbys(s: &Settings, whose: &str) -> Result<(), Error> {
    if !s.standbys.is_empty() && s.invalidation_source == InvalidationSource::Notify {
        return Err(err(
            "standbys",
            format!(
                "{whose} reads its changes with NOTIFY (invalidation_source notify), which gives \
                 no log position a standby's replay can be compared with: use \
                 invalidation_source replication or auto"
            ),
        ));
    }
    Ok(())
}

/// Validates a command's TTL argument in seconds.
pub fn parse_ttl(value: &str) -> Result<u64, Error> {
    match value.parse::<u64>() {
        Ok(v) if (1..=MAX_TTL_SECONDS).contains(&v) => Ok(v),
        _ => Err(Error::invalid(format!(
            "TTL must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}, got {value:?}"
        ))),
    }
}

/// Parses the allowlist: comma-separated `name` or `schema.name`; empty means every table.
pub fn parse_tables(value: &str) -> Result<Vec<QualifiedName>, Error> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_table)
        .collect()
}

/// Whether a password is the mask earlier versions of pgcache left in the module arguments,
/// which CONFIG REWRITE then saved to redis.conf.
pub fn is_masked(password: &str) -> bool {
    !password.is_empty() && password.bytes().all(|b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(super) fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, Error> {
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
        // Misses wait on PostgreSQL, not on this host's cores: the default is the same on
        // every host.
        assert_eq!((s.workers, s.pool_size), (DEFAULT_WORKERS, DEFAULT_WORKERS));
        let s = load_with(&["workers", "3"], &[]).unwrap();
        assert_eq!((s.workers, s.pool_size), (3, 3));
        let s = load_with(&["pool_size", "12"], &[]).unwrap();
        assert_eq!((s.workers, s.pool_size), (12, 12));
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
            assert!(
                e.message().starts_with(&format!("setting {setting}: ")),
                "{args:?}: {e}"
            );
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
        let shown = format!("{:?}", s.shown());
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
        assert_eq!(passfile::lookup(text, &pg).as_deref(), Some("pa:ss"));
        pg.user = "someone".into();
        assert_eq!(passfile::lookup(text, &pg).as_deref(), Some("fallback"));
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
    fn slowlog_settings_are_validated() {
        let s = load_with(&["slowlog_threshold_us", "-1", "slowlog_max_len", "0"], &[]).unwrap();
        assert_eq!((s.slowlog_threshold_us, s.slowlog_max_len), (-1, 0));
        for (name, bad) in [
            ("slowlog_threshold_us", "1.5"),
            ("slowlog_max_len", "-1"),
            ("slowlog_max_len", "100001"),
        ] {
            let e = load_with(&[name, bad], &[]).unwrap_err();
            assert!(e.message().contains(bad), "{e}");
        }
    }

    #[test]
    fn ttl_limits() {
        assert_eq!(parse_ttl("1"), Ok(1));
        for bad in ["0", "-1", "1.5", "abc", "99999999999999999999", ""] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    /// A line without `source` blocks shows what it always showed (HEALTH's `config`,
    /// CONFIG GET).
    #[test]
    fn settings_without_blocks_show_as_before() {
        let s = load_with(&["pg_host", "db", "workers", "3"], &[]).unwrap();
        let shown: Vec<String> = s.shown().iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(shown.join(" "), GOLDEN_SHOWN);
        assert!(s.named.is_empty());
    }

    /// What `shown()` listed for this line before named sources (base 62c449f), with the
    /// `sources` setting (empty: no named source) since runtime sources (#53 step 10).
    const GOLDEN_SHOWN: &str = concat!(
        "pg_host=db pg_port=5432 pg_database=postgres pg_user=postgres ",
        "pg_password=(none) pg_passfile= pg_sslmode=prefer pg_sslrootcert= ",
        "pg_connect_timeout_ms=2000 default_ttl=3600 negative_ttl=30 ",
        "cache_prefix=pg_cache: workers=3 pool_size=3 loop_connections=2 ",
        "queue_size=10000 request_timeout_ms=5000 statement_timeout_ms=3000 tables= ",
        "event_channel=pg_cache_events ",
        "events=miss,write,invalidate,stale,query_invalidated,tag_invalidate hooks= sources= ",
        "slowlog_threshold_us=10000 slowlog_max_len=128 metrics_port=0 ",
        "metrics_bind=127.0.0.1 multiread_max=1000 ",
        "invalidation_channel=cache_invalidation listen=yes invalidation_source=auto ",
        "publication=pgcache replication_slot=pgcache standbys= after_wait_ms=3 ",
        "max_staleness_ms=1000 stale_if_error_ms=300000 query_max_rows=10000 ",
        "query_max_bytes=1048576 query_max_statements=10000 query_precision=row ",
        "pass_through=auto query_index_max_bytes=67108864 debug_commands=no",
    );
}
