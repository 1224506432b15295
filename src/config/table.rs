//! The one table of settings: each setting's name, default, accepted values, where its value
//! goes in `Settings`, whether CONFIG SET may change it, and its help line. Module arguments,
//! the `PGCACHE_<NAME>` and libpq environment variables, CONFIG SET / GET and HEALTH (through
//! `module::parameters`) and the table in docs/configuration.md are all read from here.

use super::{
    InvalidationSource, MAX_TTL_SECONDS, Settings, SslMode, channel_name, parse_standbys,
    parse_tables, passfile, render_standbys, replication_name,
};
use crate::error::Error;
use crate::model::event::EventMask;
use std::path::PathBuf;
use std::time::Duration;

/// A setting's value before any source sets it.
pub enum Initial {
    /// This text, read like any other value.
    Value(&'static str),
    /// Computed or absent; the text says what it is.
    Described(&'static str),
}

/// What a setting accepts, and where a valid value is stored.
pub enum Accepts {
    /// A whole number from `min` to `max`; `unit` words the error.
    Int {
        min: i64,
        max: i64,
        unit: &'static str,
        store: fn(&mut Settings, i64),
    },
    YesNo(fn(&mut Settings, bool)),
    /// Text its own parser checks; `form` describes it for the documentation.
    Text {
        form: &'static str,
        store: fn(&mut Settings, &str) -> Result<(), Error>,
    },
}

/// Whom a setting configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The whole server: given once, before the first `source` block.
    Server,
    /// One source (one PostgreSQL database): the default source's before the first `source`
    /// word, a named source's in its block or its `PGCACHE_<NAME>_<SETTING>` variables.
    Source,
}

pub struct Setting {
    pub name: &'static str,
    pub owner: Owner,
    /// The libpq environment variable that also sets it, if any.
    pub libpq_env: Option<&'static str>,
    pub initial: Initial,
    pub accepts: Accepts,
    /// Whether CONFIG SET may change it while the server runs.
    pub runtime: bool,
    pub help: &'static str,
    /// The value in effect as HEALTH and CONFIG GET show it. `None` for `pg_url`, which the
    /// `pg_*` settings show taken apart (and which may hold the password).
    pub show: Option<fn(&Settings) -> String>,
}

impl Setting {
    /// Checks `value` and stores it in `s`; the error says what was wrong, then what the
    /// setting is, what it accepts and its default (its line in docs/configuration.md).
    pub fn apply(&self, s: &mut Settings, value: &str) -> Result<(), Error> {
        self.store(s, value).map_err(|e| {
            Error::invalid(format!(
                "{e} ({}: {}; accepts {}; default {})",
                self.name,
                self.help,
                self.accepted(),
                self.default_shown()
            ))
        })
    }

    fn store(&self, s: &mut Settings, value: &str) -> Result<(), Error> {
        match &self.accepts {
            Accepts::Int {
                min,
                max,
                unit,
                store,
            } => match value.parse::<i64>() {
                Ok(v) if v >= *min && v <= *max => {
                    store(s, v);
                    Ok(())
                }
                _ => Err(Error::invalid(format!(
                    "expected {unit} from {min} to {max}, got {value:?}"
                ))),
            },
            Accepts::YesNo(store) => {
                let yes = match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(Error::invalid(format!("expected yes or no, got {value:?}"))),
                };
                store(s, yes);
                Ok(())
            }
            Accepts::Text { store, .. } => store(s, value),
        }
    }

    /// The default as docs/configuration.md shows it: the value, or what it is computed from.
    fn default_shown(&self) -> String {
        match self.initial {
            Initial::Value("") => "none".into(),
            Initial::Value(v) => format!("`{v}`"),
            Initial::Described(d) => d.to_string(),
        }
    }

    /// The accepted values as docs/configuration.md words them.
    pub fn accepted(&self) -> String {
        match &self.accepts {
            Accepts::Int { min, max, .. } => format!("{min} .. {max}"),
            Accepts::YesNo(_) => "`yes`, `no`".into(),
            Accepts::Text { form, .. } => form.to_string(),
        }
    }
}

/// The setting of this name (lower case), if there is one.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

const fn int(min: i64, max: i64, unit: &'static str, store: fn(&mut Settings, i64)) -> Accepts {
    Accepts::Int {
        min,
        max,
        unit,
        store,
    }
}

const fn text(form: &'static str, store: fn(&mut Settings, &str) -> Result<(), Error>) -> Accepts {
    Accepts::Text { form, store }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.into()
}

fn path(value: &Option<PathBuf>) -> String {
    value
        .as_ref()
        .map_or(String::new(), |p| p.display().to_string())
}

// The casts in the `store` functions cannot truncate: each range fits the field's type.
const TTL: &str = "a TTL in whole seconds";

/// Every setting, in the order docs/configuration.md and HEALTH list them.
pub static SETTINGS: [Setting; 45] = [
    Setting {
        name: "pg_url",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Described(""),
        accepts: Accepts::Text {
            form: "URL or conninfo",
            store: super::url::apply,
        },
        runtime: false,
        help: "libpq URL `postgresql://user:pass@host:port/db?sslmode=require` or `key=value` \
               conninfo; `pg_*` settings from the same source refine it",
        show: None,
    },
    Setting {
        name: "pg_host",
        owner: Owner::Source,
        libpq_env: Some("PGHOST"),
        initial: Initial::Value("localhost"),
        accepts: Accepts::Text {
            form: "not empty",
            store: |s, v| {
                if v.is_empty() {
                    return Err(Error::invalid("must not be empty"));
                }
                s.pg.host = v.to_string();
                Ok(())
            },
        },
        runtime: false,
        help: "host, IP, or Unix-socket directory",
        show: Some(|s| s.pg.host.clone()),
    },
    Setting {
        name: "pg_port",
        owner: Owner::Source,
        libpq_env: Some("PGPORT"),
        initial: Initial::Value("5432"),
        accepts: int(1, 65535, "a port", |s, v| s.pg.port = v as u16),
        runtime: false,
        help: "PostgreSQL's port",
        show: Some(|s| s.pg.port.to_string()),
    },
    Setting {
        name: "pg_database",
        owner: Owner::Source,
        libpq_env: Some("PGDATABASE"),
        initial: Initial::Value("postgres"),
        accepts: text("text", |s, v| {
            s.pg.database = v.to_string();
            Ok(())
        }),
        runtime: false,
        help: "database to read",
        show: Some(|s| s.pg.database.clone()),
    },
    Setting {
        name: "pg_user",
        owner: Owner::Source,
        libpq_env: Some("PGUSER"),
        initial: Initial::Value("postgres"),
        accepts: text("text", |s, v| {
            s.pg.user = v.to_string();
            Ok(())
        }),
        runtime: false,
        help: "role pgcache connects as (see Security for a least-privilege one)",
        show: Some(|s| s.pg.user.clone()),
    },
    Setting {
        name: "pg_password",
        owner: Owner::Source,
        libpq_env: Some("PGPASSWORD"),
        initial: Initial::Described("empty"),
        accepts: text("text", |s, v| {
            s.pg.password = Some(v.to_string());
            Ok(())
        }),
        runtime: false,
        help: "see Security",
        show: Some(|s| {
            if s.pg.password.is_some() {
                "(set)"
            } else {
                "(none)"
            }
            .into()
        }),
    },
    Setting {
        name: "pg_passfile",
        owner: Owner::Source,
        libpq_env: Some("PGPASSFILE"),
        initial: Initial::Described("`~/.pgpass`"),
        accepts: text("a path", |s, v| {
            s.pg.passfile = Some(PathBuf::from(v));
            Ok(())
        }),
        runtime: false,
        help: "libpq password file, used when no password is given",
        show: Some(|s| path(&s.pg.passfile)),
    },
    Setting {
        name: "pg_sslmode",
        owner: Owner::Source,
        libpq_env: Some("PGSSLMODE"),
        initial: Initial::Value("prefer"),
        accepts: text(
            "`disable`, `prefer`, `require`, `verify-ca`, `verify-full`",
            |s, v| {
                s.pg.sslmode = SslMode::parse(v)?;
                Ok(())
            },
        ),
        runtime: false,
        help: "TLS to PostgreSQL, as libpq means it; `require` encrypts without checking the \
               certificate",
        show: Some(|s| s.pg.sslmode.name().into()),
    },
    Setting {
        name: "pg_sslrootcert",
        owner: Owner::Source,
        libpq_env: Some("PGSSLROOTCERT"),
        initial: Initial::Described("system CAs"),
        accepts: text("a path", |s, v| {
            s.pg.sslrootcert = Some(PathBuf::from(v));
            Ok(())
        }),
        runtime: false,
        help: "CA file for `verify-ca` / `verify-full`",
        show: Some(|s| path(&s.pg.sslrootcert)),
    },
    Setting {
        name: "pg_connect_timeout_ms",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("2000"),
        accepts: int(100, 600_000, "milliseconds", |s, v| {
            s.pg.connect_timeout = Duration::from_millis(v as u64)
        }),
        runtime: false,
        help: "connect timeout (`PGCONNECT_TIMEOUT`, in seconds, sets it too)",
        show: Some(|s| s.pg.connect_timeout.as_millis().to_string()),
    },
    Setting {
        name: "default_ttl",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("3600"),
        accepts: int(1, MAX_TTL_SECONDS as i64, TTL, |s, v| {
            s.default_ttl = v as u64
        }),
        runtime: true,
        help: "seconds a filled row stays cached (at most 10 years)",
        show: Some(|s| s.default_ttl.to_string()),
    },
    Setting {
        name: "negative_ttl",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("30"),
        accepts: int(0, MAX_TTL_SECONDS as i64, TTL, |s, v| {
            s.negative_ttl = v as u64
        }),
        runtime: true,
        help: "seconds an absent row is remembered; `0` turns negative caching off",
        show: Some(|s| s.negative_ttl.to_string()),
    },
    Setting {
        name: "cache_prefix",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("pg_cache:"),
        accepts: text("text without `{` or `}`", |s, v| {
            crate::model::key::brace_free("cache_prefix", v)?;
            s.cache_prefix = v.to_string();
            Ok(())
        }),
        runtime: false,
        help: "key prefix; no braces, which would move the Redis Cluster hash tag off the pk",
        show: Some(|s| s.cache_prefix.clone()),
    },
    Setting {
        name: "workers",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Described("8, or `pool_size` when that is set"),
        accepts: int(1, 256, "a thread count", |s, v| s.workers = v as usize),
        runtime: false,
        help: "worker threads running PostgreSQL queries, each on a pooled connection while it \
               works: how many misses go to PostgreSQL at once (see Sizing the workers)",
        show: Some(|s| s.workers.to_string()),
    },
    Setting {
        name: "pool_size",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Described("`workers`"),
        accepts: int(1, 256, "a connection count", |s, v| {
            s.pool_size = v as usize
        }),
        runtime: false,
        help: "PostgreSQL connections the workers use at most (the listener has one more of its \
               own, and the event loop `loop_connections`)",
        show: Some(|s| s.pool_size.to_string()),
    },
    Setting {
        name: "loop_connections",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("2"),
        accepts: int(0, 16, "a connection count", |s, v| {
            s.loop_connections = v as usize
        }),
        runtime: true,
        help: "PostgreSQL connections on which the Redis event loop sends misses itself, \
               without a worker thread (0: every miss goes to a worker)",
        show: Some(|s| s.loop_connections.to_string()),
    },
    Setting {
        name: "queue_size",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("10000"),
        accepts: int(1, 10_000_000, "a request count", |s, v| {
            s.queue_size = v as usize
        }),
        runtime: false,
        help: "requests waiting for a worker; beyond it, an immediate error",
        show: Some(|s| s.queue_size.to_string()),
    },
    Setting {
        name: "request_timeout_ms",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("5000"),
        accepts: int(10, 3_600_000, "milliseconds", |s, v| {
            s.request_timeout_ms = v as u64
        }),
        runtime: true,
        help: "a client waiting on PostgreSQL gets an error after this",
        show: Some(|s| s.request_timeout_ms.to_string()),
    },
    Setting {
        name: "statement_timeout_ms",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("3000"),
        accepts: int(0, 3_600_000, "milliseconds", |s, v| {
            s.statement_timeout_ms = v as u64
        }),
        runtime: true,
        help: "PostgreSQL `statement_timeout` of pgcache's sessions (0 = none)",
        show: Some(|s| s.statement_timeout_ms.to_string()),
    },
    Setting {
        name: "tables",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Described("all"),
        accepts: text("`users,sales.orders`; empty: all", |s, v| {
            s.tables = parse_tables(v)?;
            Ok(())
        }),
        runtime: true,
        help: "allowlist of the tables pgcache serves",
        show: Some(|s| {
            s.tables
                .iter()
                .map(|t| t.display())
                .collect::<Vec<_>>()
                .join(",")
        }),
    },
    Setting {
        name: "event_channel",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("pg_cache_events"),
        accepts: text("a channel name", |s, v| {
            s.event_channel = channel_name(v)?;
            Ok(())
        }),
        runtime: true,
        help: "channel of the default hook",
        show: Some(|s| s.event_channel.clone()),
    },
    Setting {
        name: "events",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("miss,write,invalidate,stale,query_invalidated,tag_invalidate"),
        accepts: text(
            "any of `hit,miss,fill,write,invalidate,expire,evict,error,slow,stale,query_invalidated,tag_invalidate`, `all`, `none`",
            |s, v| {
                s.events = EventMask::parse(v)?;
                Ok(())
            },
        ),
        runtime: true,
        help: "event types the default hook publishes",
        show: Some(|s| s.events.render()),
    },
    Setting {
        name: "hooks",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Described("none"),
        // Checked when installed (`module::parameters`), which fails the load or the CONFIG SET.
        accepts: text("`;`-separated definitions", |s, v| {
            s.hooks = v.to_string();
            Ok(())
        }),
        runtime: true,
        help: "hook definitions (see PGCACHE.HOOK; ADD/DEL change it)",
        show: Some(|s| s.hooks.clone()),
    },
    Setting {
        name: "sources",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Described("the module arguments' `source` blocks"),
        // Read into sources by `config::redeclare`, at load only (`module::parameters`).
        accepts: text(
            "`;`-separated definitions, `name setting value ...`",
            |s, v| {
                s.sources_given = v.to_string();
                Ok(())
            },
        ),
        runtime: true,
        help: "the named sources (see PGCACHE.SOURCE; ADD/SET/DEL change it)",
        show: Some(|s| {
            let declared: Vec<_> = s.named.iter().map(super::NamedSource::declared).collect();
            super::render_definitions(&declared)
        }),
    },
    Setting {
        name: "slowlog_threshold_us",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("10000"),
        accepts: text("an integer (µs)", |s, v| {
            s.slowlog_threshold_us = v.parse().map_err(|_| {
                Error::invalid(format!(
                    "expected a whole number of microseconds, got {v:?}"
                ))
            })?;
            Ok(())
        }),
        runtime: true,
        help: "calls at least this slow go in PGCACHE.SLOWLOG; `0` all, negative (`-1`) none",
        show: Some(|s| s.slowlog_threshold_us.to_string()),
    },
    Setting {
        name: "slowlog_max_len",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("128"),
        accepts: int(0, 100_000, "an entry count", |s, v| {
            s.slowlog_max_len = v as u64
        }),
        runtime: true,
        help: "slowlog entries kept",
        show: Some(|s| s.slowlog_max_len.to_string()),
    },
    Setting {
        name: "metrics_port",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("0"),
        accepts: int(0, 65535, "a port", |s, v| s.metrics_port = v as u16),
        runtime: false,
        help: "port of the Prometheus endpoint; `0`: off",
        show: Some(|s| s.metrics_port.to_string()),
    },
    Setting {
        name: "metrics_bind",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("127.0.0.1"),
        accepts: text("an IP address", |s, v| {
            v.parse::<std::net::IpAddr>()
                .map_err(|_| Error::invalid(format!("expected an IP address, got {v:?}")))?;
            s.metrics_bind = v.to_string();
            Ok(())
        }),
        runtime: false,
        help: "address the Prometheus endpoint listens on",
        show: Some(|s| s.metrics_bind.clone()),
    },
    Setting {
        name: "multiread_max",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("1000"),
        accepts: int(1, 100_000, "a key count", |s, v| {
            s.multiread_max = v as usize
        }),
        runtime: true,
        help: "keys per MULTIREAD",
        show: Some(|s| s.multiread_max.to_string()),
    },
    Setting {
        name: "invalidation_channel",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("cache_invalidation"),
        accepts: text("a channel name", |s, v| {
            s.invalidation_channel = channel_name(v)?;
            Ok(())
        }),
        runtime: false,
        help: "channel the listener LISTENs on",
        show: Some(|s| s.invalidation_channel.clone()),
    },
    Setting {
        name: "listen",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("yes"),
        accepts: Accepts::YesNo(|s, v| s.listen = v),
        runtime: false,
        help: "run the invalidation source (the replication stream or the listener)",
        show: Some(|s| yes_no(s.listen)),
    },
    Setting {
        name: "invalidation_source",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("auto"),
        accepts: text("`replication`, `notify`, `auto`", |s, v| {
            s.invalidation_source = InvalidationSource::parse(v)?;
            Ok(())
        }),
        runtime: false,
        help: "where invalidations come from: `replication` (a logical replication slot), \
               `notify` (triggers and LISTEN), or `auto` (replication when PostgreSQL allows it)",
        show: Some(|s| s.invalidation_source.name().to_string()),
    },
    Setting {
        name: "publication",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("pgcache"),
        accepts: text("1 to 63 of `a-z`, `0-9`, `_`", |s, v| {
            s.publication = replication_name(v)?;
            Ok(())
        }),
        runtime: false,
        help: "publication whose tables the replication source follows",
        show: Some(|s| s.publication.clone()),
    },
    Setting {
        name: "replication_slot",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("pgcache"),
        accepts: text("1 to 63 of `a-z`, `0-9`, `_`", |s, v| {
            s.replication_slot = replication_name(v)?;
            Ok(())
        }),
        runtime: false,
        help: "logical replication slot the replication source consumes (created if missing)",
        show: Some(|s| s.replication_slot.clone()),
    },
    Setting {
        name: "standbys",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Described("none"),
        accepts: text(
            "comma-separated `host[:port]` (port: `pg_port`'s)",
            |s, v| {
                s.standbys = parse_standbys(v)?;
                Ok(())
            },
        ),
        runtime: false,
        help: "hot standbys of the source's PostgreSQL that answer misses once they replayed as far as the cache needs (HEALTH lists each)",
        show: Some(|s| render_standbys(&s.standbys)),
    },
    Setting {
        name: "after_wait_ms",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("3"),
        accepts: int(0, 1_000, "milliseconds", |s, v| s.after_wait_ms = v as u64),
        runtime: true,
        help: "how long a read AFTER a position not applied yet waits for it (replication mode) before it reads PostgreSQL",
        show: Some(|s| s.after_wait_ms.to_string()),
    },
    Setting {
        name: "max_staleness_ms",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("1000"),
        accepts: int(-1, 86_400_000, "milliseconds", |s, v| {
            s.max_staleness_ms = v
        }),
        runtime: true,
        help: "longest a hit may lag PostgreSQL's commits: while the change feed has not vouched for the cache this recently, reads are answered from PostgreSQL (`-1`: unbounded)",
        show: Some(|s| s.max_staleness_ms.to_string()),
    },
    Setting {
        name: "stale_if_error_ms",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("300000"),
        accepts: int(-1, 86_400_000, "milliseconds", |s, v| {
            s.stale_if_error_ms = v
        }),
        runtime: true,
        help: "while PostgreSQL cannot be reached, hits are still served if the change feed vouched for the cache at most this long ago (`0`: never past max_staleness_ms, `-1`: unbounded)",
        show: Some(|s| s.stale_if_error_ms.to_string()),
    },
    Setting {
        name: "query_max_rows",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("10000"),
        accepts: int(0, 100_000_000, "rows", |s, v| s.query_max_rows = v as u64),
        runtime: true,
        help: "a PGCACHE.QUERY result with more rows is answered but not cached",
        show: Some(|s| s.query_max_rows.to_string()),
    },
    Setting {
        name: "query_max_bytes",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("1048576"),
        accepts: int(0, 512 * 1024 * 1024, "bytes", |s, v| {
            s.query_max_bytes = v as u64
        }),
        runtime: true,
        help: "a PGCACHE.QUERY result whose JSON is longer is answered but not cached",
        show: Some(|s| s.query_max_bytes.to_string()),
    },
    Setting {
        name: "query_max_statements",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("10000"),
        accepts: int(1, 1_000_000, "statements", |s, v| {
            s.query_max_statements = v as u64
        }),
        runtime: true,
        help: "most statement spellings PGCACHE.QUERY remembers (parsed and learned from the catalog once each); past it the least recently used is forgotten",
        show: Some(|s| s.query_max_statements.to_string()),
    },
    Setting {
        name: "query_precision",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("row"),
        accepts: text("`row`, `table`", |s, v| {
            s.query_row_precision = match v.to_ascii_lowercase().as_str() {
                "row" => true,
                "table" => false,
                _ => {
                    return Err(Error::invalid(format!(
                        "query_precision is `row` or `table`, got {v:?}"
                    )));
                }
            };
            Ok(())
        }),
        runtime: true,
        help: "`row`: in replication mode, results of statements over plain tables (one, or a join) are dropped only by changes to rows they hold or rows their conditions may admit (see Invalidation: row precision); `table`: any change to a table drops every result that read it (statements learned after a change follow the new value)",
        show: Some(|s| {
            if s.query_row_precision {
                "row"
            } else {
                "table"
            }
            .to_string()
        }),
    },
    Setting {
        name: "pass_through",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("auto"),
        accepts: text("`auto`, `always`, `never`", |s, v| {
            s.pass_through = crate::model::pass_through::Policy::parse(v).ok_or_else(|| {
                Error::invalid(format!(
                    "pass_through is `auto`, `always` or `never`, got {v:?}"
                ))
            })?;
            Ok(())
        }),
        runtime: true,
        help: "`auto`: a QUERY statement whose cached results, or a table whose rows READ caches, are dropped before they are hit (fewer than one hit in 20 entries filled) answers its misses from PostgreSQL without caching them, filling one miss in 16 to find out when its entries live again (see Pass-through); `always`: every statement and table does; `never`: none does",
        show: Some(|s| s.pass_through.name().to_string()),
    },
    Setting {
        name: "query_index_max_bytes",
        owner: Owner::Source,
        libpq_env: None,
        initial: Initial::Value("67108864"),
        accepts: int(0, 1 << 40, "bytes", |s, v| {
            s.query_index_max_bytes = v as u64
        }),
        runtime: true,
        help: "most memory the index of row-precise query results may take (the rows each was built from and its parameters); past it, such results are answered but not cached until some expire or are dropped",
        show: Some(|s| s.query_index_max_bytes.to_string()),
    },
    Setting {
        name: "debug_commands",
        owner: Owner::Server,
        libpq_env: None,
        initial: Initial::Value("no"),
        accepts: Accepts::YesNo(|s, v| s.debug_commands = v),
        runtime: false,
        help: "register PGCACHE.DEBUG (fault injection for tests), like Redis's \
               `enable-debug-command`",
        show: Some(|s| yes_no(s.debug_commands)),
    },
];

/// Sets `PGCONNECT_TIMEOUT`'s whole seconds (libpq's unit; at least one).
pub fn apply_libpq_connect_timeout(s: &mut Settings, seconds: &str) -> Result<(), Error> {
    let secs: u64 = seconds
        .parse()
        .map_err(|_| Error::invalid(format!("expected whole seconds, got {seconds:?}")))?;
    s.pg.connect_timeout = Duration::from_secs(secs.max(1));
    Ok(())
}

/// Looks the password up in the passfile when no source gave one.
pub fn apply_passfile(s: &mut Settings, home: Option<String>) {
    let file =
        s.pg.passfile
            .clone()
            .or_else(|| home.map(|h| std::path::Path::new(&h).join(".pgpass")));
    if let Some(file) = file
        && let Ok(text) = std::fs::read_to_string(&file)
    {
        s.pg.password = passfile::lookup(&text, &s.pg);
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    /// docs/configuration.md's settings table, as generated from `SETTINGS`.
    fn readme_table() -> String {
        let mut out = String::from(
            "| setting | default | accepts | meaning | CONFIG SET | per source |\n\
             |---|---|---|---|---|---|\n",
        );
        for s in &SETTINGS {
            let initial = match s.initial {
                Initial::Value("") => String::new(),
                _ => s.default_shown(),
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} |\n",
                s.name,
                initial,
                s.accepted(),
                s.help,
                yes_no(s.runtime),
                yes_no(s.owner == Owner::Source)
            ));
        }
        out
    }

    use super::*;

    #[test]
    fn names_are_unique_lower_case_and_every_default_is_valid() {
        let mut names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
        let mut blank = Settings::blank();
        for s in &SETTINGS {
            assert_eq!(s.name, s.name.to_lowercase());
            if let Initial::Value(v) = s.initial {
                s.apply(&mut blank, v)
                    .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            }
        }
    }

    /// docs/configuration.md's table is this table: regenerate it with
    /// `PGCACHE_WRITE_README=1 cargo test readme`.
    #[test]
    fn the_readme_lists_every_setting() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme
            .find("| setting | default |")
            .expect("docs/configuration.md has the settings table");
        let end = start
            + readme[start..]
                .find("\n\n")
                .expect("a blank line ends the table")
            + 1;
        let table = readme_table();
        if std::env::var_os("PGCACHE_WRITE_README").is_some() {
            let updated = format!("{}{}{}", &readme[..start], table, &readme[end..]);
            std::fs::write(path, updated).unwrap();
        } else {
            assert_eq!(
                readme[start..end],
                table,
                "docs/configuration.md's settings table is stale: run PGCACHE_WRITE_README=1 cargo test readme"
            );
        }
    }
}
