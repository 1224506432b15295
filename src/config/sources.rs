//! Named sources (issue #53, design/53 §2.1): each `source NAME` word in the module
//! arguments starts a block whose pairs configure that source, and `PGCACHE_SOURCES=a,b`
//! declares sources too. A named source takes the table's defaults (and a replication slot of
//! its own), then its `PGCACHE_<NAME>_<SETTING>` variables, then its block; libpq's `PG*`
//! variables are the default source's only. The pairs before the first `source` configure
//! the server and the default source, as every line did before there were several.

use super::definitions::{self, Definition};
use super::table::{self, Owner};
use super::{
    InvalidationSource, Pairs, SETTINGS, Settings, apply_layers, check_standbys, err, url,
};
use crate::error::Error;
use crate::model::source;

/// The word in the module arguments that starts a named source's block.
const SOURCE: &str = "source";

/// A source declared by name: its own settings, whole. The fields a named source owns
/// (`Owner::Source`) are its own; the server's are the server's values, copied, so that
/// `settings` reads as everything this source sees (what `current::Values` installs and what
/// `shown()` lists, the password masked as the default's is); its `named` is empty.
/// The settings of the server and of every source share one type, so the table's store and
/// show functions serve each without a second copy of the table.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedSource {
    pub name: String,
    pub settings: Settings,
    /// The pairs it was declared with, as the `sources` setting shows them: a block's, or
    /// PGCACHE.SOURCE's; never one carrying a password.
    pub definition: Pairs,
    /// A block's pairs that carry a password (`pg_password`, a `pg_url` with one): kept out
    /// of every listing and the configuration file, and applied again when the source is
    /// declared anew by name (PGCACHE.SOURCE SET, redis.conf's `pgcache.sources`).
    pub secret: Pairs,
}

/// The secret's settings are named, never their values.
impl std::fmt::Debug for NamedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret: Vec<&str> = self.secret.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("NamedSource")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("definition", &self.definition)
            .field("secret", &secret)
            .finish()
    }
}

impl NamedSource {
    /// Its name and definition, as the `sources` setting lists it.
    pub fn declared(&self) -> Definition {
        (self.name.clone(), self.definition.clone())
    }
}

/// Whether the pair `(setting, value)` carries a password.
fn carries_password(setting: &str, value: &str) -> bool {
    match setting {
        "pg_password" => true,
        "pg_url" => {
            let mut probe = Settings::blank();
            url::apply(&mut probe, value).is_ok() && probe.pg.password.is_some()
        }
        _ => false,
    }
}

/// Source `name` declared at run time (PGCACHE.SOURCE ADD or SET, the `sources` setting) with
/// `pairs`, on the server's settings `server`: as a block would declare it, `secret` (what
/// its block gave that carries a password) applied first. A password among `pairs` is
/// refused: what is declared at run time is written to the configuration file.
pub fn declare(
    server: &Settings,
    name: &str,
    pairs: Pairs,
    secret: Pairs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<NamedSource, Error> {
    let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
    source::check_name(name, &names).map_err(|e| err(SOURCE, e))?;
    if let Some((setting, _)) = pairs.iter().find(|(n, v)| carries_password(n, v)) {
        return Err(err(
            setting,
            format!(
                "source {name}: a password is never written to the configuration file; give it                  with PGCACHE_{}_PG_PASSWORD in redis-server's environment or a passfile                  (pg_passfile, ~/.pgpass)",
                name.to_uppercase()
            ),
        ));
    }
    named_source(server, name.to_string(), pairs, secret, env)
}

/// Replaces the named sources of `s` with those `text` (the `sources` setting) defines, each
/// keeping the secret its block gave under the same name.
pub fn redeclare(
    s: &mut Settings,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Error> {
    let mut named = Vec::new();
    for (name, pairs) in definitions::parse(text).map_err(|e| err("sources", e))? {
        let secret = (s.named.iter())
            .find(|n| n.name == name)
            .map(|n| n.secret.clone())
            .unwrap_or_default();
        named.push(declare(s, &name, pairs, secret, env)?);
    }
    let mut next = s.clone();
    next.named = named;
    refuse_shared_slots(&next)?;
    *s = next;
    Ok(())
}

/// The module arguments as pairs: those before the first `source` word (the server's and
/// the default source's), and each block's, after its source's name. `source NAME` is a
/// pair itself, so a value that reads `source` (`pg_database source`) starts no block.
pub(super) fn blocks(args: &[String]) -> Result<(Pairs, Vec<(String, Pairs)>), Error> {
    if !args.len().is_multiple_of(2) {
        let last = &args[args.len() - 1];
        if last.eq_ignore_ascii_case(SOURCE) {
            return Err(err(
                SOURCE,
                "has no name: a block is `source NAME setting value ...`",
            ));
        }
        return Err(err(
            last,
            "has no value: module arguments come in pairs, `name value`",
        ));
    }
    let mut server = Pairs::new();
    let mut blocks: Vec<(String, Pairs)> = Vec::new();
    for pair in args.chunks(2) {
        let (name, value) = (pair[0].to_lowercase(), pair[1].clone());
        if name == SOURCE {
            blocks.push((value, Pairs::new()));
        } else if let Some((_, block)) = blocks.last_mut() {
            block.push((name, value));
        } else {
            server.push((name, value));
        }
    }
    Ok((server, blocks))
}
/// The sources `PGCACHE_SOURCES` (comma-separated names) and the module arguments' blocks
/// declare, in that order; a name in both is one source, its block read over its variables.
pub(super) fn named_sources(
    server: &Settings,
    blocks: Vec<(String, Pairs)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<NamedSource>, Error> {
    let settings: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
    let mut declared: Vec<(String, Pairs)> = Vec::new();
    let listed = env("PGCACHE_SOURCES").unwrap_or_default();
    for name in listed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        source::check_name(name, &settings).map_err(|e| err("PGCACHE_SOURCES", e))?;
        if declared.iter().any(|(n, _)| n == name) {
            return Err(err(
                "PGCACHE_SOURCES",
                format!("names {name:?} twice: list each source once"),
            ));
        }
        declared.push((name.to_string(), Pairs::new()));
    }
    let mut with_blocks: Vec<String> = Vec::new();
    for (name, pairs) in blocks {
        source::check_name(&name, &settings).map_err(|e| err(SOURCE, e))?;
        if with_blocks.contains(&name) {
            return Err(err(
                SOURCE,
                format!("{name:?} has two blocks: give each source's settings in one"),
            ));
        }
        with_blocks.push(name.clone());
        match declared.iter_mut().find(|(n, _)| *n == name) {
            Some((_, listed)) => *listed = pairs,
            None => declared.push((name, pairs)),
        }
    }
    declared
        .into_iter()
        .map(|(name, pairs)| {
            let (secret, definition) = pairs.into_iter().partition(|(n, v)| carries_password(n, v));
            named_source(server, name, definition, secret, env)
        })
        .collect()
}

/// The environment variables among `variables` that read as a setting of a source `s` names
/// none of (`PGCACHE_ANALYTICS_PG_HOST` with no source `analytics`), each with the source's
/// name: a source is declared by `PGCACHE_SOURCES` or a block, never by a variable alone (a
/// tool's own `PGCACHE_TEST_INVALIDATION_SOURCE` would otherwise start a source `test`, with a
/// replication slot of its own), so such a variable is ignored, and the load says so.
pub fn undeclared_source_variables<'a>(
    s: &Settings,
    variables: impl IntoIterator<Item = &'a str>,
) -> Vec<(&'a str, String)> {
    let settings: Vec<&str> = SETTINGS.iter().map(|t| t.name).collect();
    let mut found = Vec::new();
    for variable in variables {
        let Some(rest) = variable.strip_prefix("PGCACHE_") else {
            continue;
        };
        let lower = rest.to_lowercase();
        if rest != rest.to_uppercase() || settings.contains(&lower.as_str()) || rest == "SOURCES" {
            continue;
        }
        let name = settings.iter().find_map(|setting| {
            let name = lower.strip_suffix(setting)?.strip_suffix('_')?;
            source::check_name(name, &settings)
                .is_ok()
                .then(|| name.to_string())
        });
        if let Some(name) = name.filter(|name| !s.named.iter().any(|n| n.name == *name)) {
            found.push((variable, name));
        }
    }
    found
}

/// One named source's settings: the table's defaults and what must differ from one source
/// to the next by default, then its `PGCACHE_<NAME>_<SETTING>` variables, then its block
/// (`secret`, then `definition`); the server's settings as the server has them.
fn named_source(
    server: &Settings,
    name: String,
    definition: Pairs,
    secret: Pairs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<NamedSource, Error> {
    let block: Pairs = secret.iter().chain(&definition).cloned().collect();
    let mut s = Settings::with_defaults();
    // A slot has one consumer, and its name is unique in its PostgreSQL server: two sources
    // reading two databases of one server must not both stream `pgcache`. The publication
    // and the NOTIFY channel are per database and only read, so the defaults serve any
    // number of sources.
    s.replication_slot = format!("pgcache_{name}");
    let variable =
        |setting: &str| format!("PGCACHE_{}_{}", name.to_uppercase(), setting.to_uppercase());
    let mut env_pairs = Pairs::new();
    for setting in &SETTINGS {
        let var = variable(setting.name);
        if let Some(value) = env(&var) {
            if setting.owner == Owner::Server {
                return Err(err(
                    &var,
                    format!(
                        "{} is server-wide: give it as PGCACHE_{}, for every source",
                        setting.name,
                        setting.name.to_uppercase()
                    ),
                ));
            }
            env_pairs.push((setting.name.to_string(), value));
        }
    }
    if let Some((setting, _)) = block
        .iter()
        .find(|(n, _)| table::find(n).is_some_and(|t| t.owner == Owner::Server))
    {
        return Err(err(
            setting,
            format!(
                "`{setting}` is server-wide; give it before the first `source` (it is in `source {name}`)"
            ),
        ));
    }
    apply_layers(&mut s, [env_pairs, block], &|setting| {
        format!("{setting} of source {name}")
    })?;
    for setting in SETTINGS.iter().filter(|t| t.owner == Owner::Server) {
        if let Some(show) = setting.show {
            // A value as shown is accepted back (a property test holds it).
            let _ = setting.apply(&mut s, &show(server));
        }
    }
    s.complete();
    // Unlike the default source, whose `pg_url` without a password skips the passfile (as
    // it always has), a named source reads its passfile whenever no layer gave a password,
    // as libpq does: `source analytics pg_url postgresql://ro@db2/analytics` finds its line.
    if s.pg.password.is_none() {
        table::apply_passfile(&mut s, env("HOME"));
    }
    check_standbys(&s, &format!("source {name}"))?;
    Ok(NamedSource {
        name,
        settings: s,
        definition,
        secret,
    })
}

/// `refuse_shared_slots` for the server `server` serving the named sources `named`.
pub fn refuse_shared_slots_of(server: &Settings, named: &[NamedSource]) -> Result<(), Error> {
    let mut next = server.clone();
    next.named = named.to_vec();
    refuse_shared_slots(&next)
}

/// Refuses two sources that would stream one replication slot: PostgreSQL lets one
/// walsender hold a slot, and the replication source ends the one in its way
/// (`take_over`), so each would end the other's stream forever. Host names are compared
/// as written: `localhost` and `127.0.0.1` are one server the load cannot tell apart.
pub(super) fn refuse_shared_slots(s: &Settings) -> Result<(), Error> {
    let streaming = std::iter::once(("the default source".to_string(), s))
        .chain(
            s.named
                .iter()
                .map(|n| (format!("source {}", n.name), &n.settings)),
        )
        .filter(|(_, s)| s.listen && s.invalidation_source != InvalidationSource::Notify)
        .collect::<Vec<_>>();
    for (i, (first, a)) in streaming.iter().enumerate() {
        if let Some((second, _)) = streaming[i + 1..].iter().find(|(_, b)| {
            (&b.pg.host, b.pg.port, &b.replication_slot)
                == (&a.pg.host, a.pg.port, &a.replication_slot)
        }) {
            return Err(err(
                "replication_slot",
                format!(
                    "{first} and {second} would both stream slot {} of {}:{}, and \
                     each would end the other's stream: give one of them another \
                     replication_slot",
                    a.replication_slot, a.pg.host, a.pg.port
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load_with;
    use std::time::Duration;

    #[test]
    fn a_variable_of_an_undeclared_source_is_found() {
        let s = load_with(&["source", "analytics", "pg_database", "a"], &[]).unwrap();
        let variables = [
            "PGCACHE_ANALYTICS_PG_HOST",
            "PGCACHE_BILLING_PG_HOST",
            "PGCACHE_MY_DB_DEFAULT_TTL",
            "PGCACHE_POOL_SIZE",
            "PGCACHE_SOURCES",
            "PGCACHE_TEST_SERVER",
            "PGCACHE_billing_pg_host",
            "PGHOST",
        ];
        assert_eq!(
            undeclared_source_variables(&s, variables),
            [
                ("PGCACHE_BILLING_PG_HOST", "billing".to_string()),
                ("PGCACHE_MY_DB_DEFAULT_TTL", "my_db".to_string()),
            ]
        );
    }

    /// Module arguments written as one line.
    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    /// The named source `name` of `s`.
    fn named<'a>(s: &'a Settings, name: &str) -> &'a Settings {
        &s.named.iter().find(|n| n.name == name).unwrap().settings
    }

    /// Each `source NAME` starts a block for that source; the pairs before the first
    /// configure the server and the default source, which no block touches.
    #[test]
    fn blocks_configure_their_sources() {
        let s = load_with(
            &words("pg_host db1 pg_database app workers 4 source analytics pg_url postgresql://ro@db2/analytics tables events,users SOURCE billing pg_host db3 pg_database billing invalidation_source notify"),
            &[],
        )
        .unwrap();
        assert_eq!((s.pg.host.as_str(), s.pg.database.as_str()), ("db1", "app"));
        assert!(s.tables.is_empty());
        let names: Vec<&str> = s.named.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["analytics", "billing"]);
        let analytics = named(&s, "analytics");
        assert_eq!(
            (
                analytics.pg.host.as_str(),
                analytics.pg.database.as_str(),
                analytics.pg.user.as_str()
            ),
            ("db2", "analytics", "ro")
        );
        assert_eq!(analytics.tables.len(), 2);
        let billing = named(&s, "billing");
        assert_eq!(
            (billing.pg.host.as_str(), billing.pg.database.as_str()),
            ("db3", "billing")
        );
        assert_eq!(billing.invalidation_source, InvalidationSource::Notify);
        assert_eq!(s.invalidation_source, InvalidationSource::Auto);
        // The server's settings, as the server has them; a named source's own, its own.
        assert_eq!((billing.workers, billing.pool_size), (4, 4));
        assert!(s.named.iter().all(|n| n.settings.named.is_empty()));
    }

    /// `source` is a block's word only where a setting's name goes.
    #[test]
    fn a_value_reading_source_starts_no_block() {
        let s = load_with(&words("pg_database source pg_user SOURCE"), &[]).unwrap();
        assert_eq!(
            (s.pg.database.as_str(), s.pg.user.as_str()),
            ("source", "SOURCE")
        );
        assert!(s.named.is_empty());
    }

    #[test]
    fn defaults_of_a_named_source() {
        let s = load_with(&words("replication_slot main source analytics"), &[]).unwrap();
        let analytics = named(&s, "analytics");
        // Its own slot; the publication and the NOTIFY channel are per database, read only.
        assert_eq!(analytics.replication_slot, "pgcache_analytics");
        assert_eq!(analytics.publication, "pgcache");
        assert_eq!(analytics.invalidation_channel, "cache_invalidation");
        let expected = Settings {
            replication_slot: "pgcache_analytics".into(),
            ..Settings::default()
        };
        assert_eq!(*analytics, expected, "the table's defaults otherwise");
    }

    /// design/53 §5, step 7: the unit twin of the integration test to come with step 7b.
    #[test]
    fn sources_from_environment() {
        let s = load_with(
            &words("source billing default_ttl 90"),
            &[
                ("PGCACHE_SOURCES", " analytics, billing,"),
                ("PGCACHE_ANALYTICS_PG_HOST", "db2"),
                ("PGCACHE_ANALYTICS_PG_DATABASE", "analytics"),
                ("PGCACHE_BILLING_DEFAULT_TTL", "60"),
                ("PGCACHE_BILLING_NEGATIVE_TTL", "5"),
            ],
        )
        .unwrap();
        let names: Vec<&str> = s.named.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["analytics", "billing"], "one source per name");
        let analytics = named(&s, "analytics");
        assert_eq!(
            (analytics.pg.host.as_str(), analytics.pg.database.as_str()),
            ("db2", "analytics")
        );
        let billing = named(&s, "billing");
        assert_eq!((billing.default_ttl, billing.negative_ttl), (90, 5));
        assert_eq!((s.pg.host.as_str(), s.default_ttl), ("localhost", 3600));
    }

    /// A named source: the table's defaults < `PGCACHE_<NAME>_*` < its block. Neither the
    /// default source's variables nor libpq's reach it.
    #[test]
    fn precedence_of_a_named_source() {
        let s = load_with(
            &words("source analytics pg_port 7000"),
            &[
                ("PGCACHE_ANALYTICS_PG_PORT", "6000"),
                ("PGCACHE_ANALYTICS_PG_USER", "reader"),
                ("PGCACHE_PG_DATABASE", "app"),
                ("PGCACHE_DEFAULT_TTL", "30"),
                ("PGHOST", "libpq-host"),
                ("PGPASSWORD", "libpq-secret"),
                ("PGCONNECT_TIMEOUT", "9"),
            ],
        )
        .unwrap();
        let analytics = named(&s, "analytics");
        assert_eq!(analytics.pg.port, 7000);
        assert_eq!(analytics.pg.user, "reader");
        assert_eq!(analytics.pg.database, "postgres");
        assert_eq!(analytics.pg.host, "localhost");
        assert_eq!(analytics.pg.password(), None);
        assert_eq!(analytics.pg.connect_timeout, Duration::from_millis(2000));
        assert_eq!(analytics.default_ttl, 3600);
        assert_eq!(
            (s.pg.host.as_str(), s.pg.database.as_str()),
            ("libpq-host", "app")
        );
        assert_eq!((s.pg.password(), s.default_ttl), (Some("libpq-secret"), 30));
    }

    /// design/53 §5, step 7: the unit twin of the integration test to come with step 7b.
    #[test]
    fn server_settings_in_a_block_are_refused() {
        let server = SETTINGS.iter().filter(|t| t.owner == Owner::Server);
        for setting in server {
            let value = setting.show.unwrap()(&Settings::default());
            let e = load_with(&["source", "analytics", setting.name, &value], &[]).unwrap_err();
            assert!(
                e.message().contains(&format!(
                    "`{}` is server-wide; give it before the first `source`",
                    setting.name
                )),
                "{e}"
            );
            let var = format!("PGCACHE_ANALYTICS_{}", setting.name.to_uppercase());
            let e = load_with(&["source", "analytics"], &[(&var, &value)]).unwrap_err();
            assert!(e.message().starts_with(&format!("setting {var}: ")), "{e}");
            assert!(e.message().contains("server-wide"), "{e}");
            load_with(&[setting.name, &value, "source", "analytics"], &[]).unwrap();
        }
    }

    /// design/53 §5, step 7: the unit twin of the integration test to come with step 7b.
    #[test]
    fn same_slot_twice_is_refused() {
        for args in [
            &words("source a replication_slot pgcache"),
            &words("source a replication_slot x source b replication_slot x"),
            &words("pg_host db source a pg_host db replication_slot pgcache"),
        ] {
            let e = load_with(args, &[]).unwrap_err();
            assert!(
                e.message().starts_with("setting replication_slot: ")
                    && e.message().contains("would both stream slot"),
                "{args:?}: {e}"
            );
        }
        for args in [
            // Another server, another port, or a source that does not stream.
            &words("source a replication_slot pgcache pg_host db2"),
            &words("source a replication_slot pgcache pg_port 5433"),
            &words("source a replication_slot pgcache invalidation_source notify"),
            &words("source a replication_slot pgcache listen no"),
            &words("invalidation_source notify source a replication_slot pgcache"),
            &words("source a source b"),
        ] {
            load_with(args, &[]).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn bad_source_declarations_say_what_to_do() {
        for (args, env, says) in [
            (
                &["pg_host", "h", "source"][..],
                None,
                "setting source: has no name",
            ),
            (
                &["source", "Analytics"],
                None,
                "starts with a lower-case letter",
            ),
            (
                &["source", "a-b"],
                None,
                "lower-case letters, digits and underscores",
            ),
            (&["source", "default"], None, "the unnamed source's word"),
            (&words("source a source a"), None, "has two blocks"),
            (
                &words("source a pg_hots x"),
                None,
                "setting pg_hots of source a: unknown setting",
            ),
            (
                &words("source a pg_port x"),
                None,
                "setting pg_port of source a: expected a port",
            ),
            (
                &["source", "a", "pg_port"],
                None,
                "setting pg_port: has no value",
            ),
            (
                &[],
                Some("a,b,a"),
                "setting PGCACHE_SOURCES: names \"a\" twice",
            ),
            (
                &[],
                Some("a,B"),
                "setting PGCACHE_SOURCES: \"B\" cannot name a source",
            ),
        ] {
            let env: Vec<(&str, &str)> = env.map(|v| ("PGCACHE_SOURCES", v)).into_iter().collect();
            let e = load_with(args, &env).unwrap_err();
            assert!(e.message().contains(says), "{args:?} {env:?}: {e}");
        }
        // A source listed in PGCACHE_SOURCES may have one block, as any other.
        let env = [("PGCACHE_SOURCES", "a")];
        load_with(&["source", "a"], &env).unwrap();
        let e = load_with(&words("source a source a"), &env).unwrap_err();
        assert!(e.message().contains("has two blocks"), "{e}");
    }

    /// No source's name makes one of its variables (`PGCACHE_<NAME>_<SETTING>`) another
    /// setting's (`PGCACHE_<SETTING>`). None of today's settings ends in another's name, so
    /// the words settings start with name sources (but `default`); a setting added later
    /// that would make one collide makes its name refused.
    #[test]
    fn names_colliding_with_settings_are_refused() {
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        for setting in &names {
            for other in &names {
                if let Some(name) = setting
                    .strip_suffix(other)
                    .and_then(|n| n.strip_suffix('_'))
                {
                    let e = source::check_name(name, &names).unwrap_err();
                    assert!(e.message().contains("would be read as the server's"), "{e}");
                }
            }
            let head = setting.split('_').next().unwrap();
            assert_eq!(
                source::check_name(head, &names).is_ok(),
                head != "default",
                "{head}"
            );
        }
    }

    /// A named source's password shows nowhere: not in its settings as shown, not in any
    /// description, whether its block, its variable or its passfile gave it.
    #[test]
    fn a_named_source_s_password_never_shows() {
        let dir = std::env::temp_dir().join(format!("pgcache-named-pass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(".pgpass"),
            "db2:5432:analytics:ro:from-file\n*:*:*:*:fallback\n",
        )
        .unwrap();
        let home = dir.to_str().unwrap();
        let args = words(
            "source a pg_password hunter2 source b \
             source c pg_url postgresql://ro@db2/analytics \
             source d pg_url postgresql://u:url-secret@h/db pg_password d-secret",
        );
        let env = [
            ("HOME", home),
            ("PGCACHE_B_PG_PASSWORD", "s3cret"),
            ("PGCACHE_D_PG_PASSWORD", "not-this"),
        ];
        let s = load_with(&args, &env).unwrap();
        let passwords: Vec<Option<&str>> =
            s.named.iter().map(|n| n.settings.pg.password()).collect();
        assert_eq!(
            passwords,
            [
                Some("hunter2"),
                Some("s3cret"),
                Some("from-file"),
                Some("d-secret")
            ]
        );
        assert_eq!(s.pg.password(), Some("fallback"), "the default's own line");
        let shown = format!(
            "{s:?} {:?}",
            s.named
                .iter()
                .map(|n| n.settings.shown())
                .collect::<Vec<_>>()
        );
        for secret in [
            "hunter2",
            "s3cret",
            "from-file",
            "url-secret",
            "d-secret",
            "fallback",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            named(&s, "a")
                .shown()
                .contains(&("pg_password", "(set)".to_string()))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
