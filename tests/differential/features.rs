//! What the generator may draw, one name per feature, and how many checks drew each: a
//! feature no check drew in a run is a blind spot, and shows as a zero in the run's table
//! (issue #70: every defect its reviews found lay outside what the fuzzer could draw).
//!
//! A check draws the features of its case's schema, of its statement, of the writes and DDL
//! applied before it, and of how it was asked (the command, its options, the clients beside
//! it, the faults around it).

use std::collections::{BTreeMap, BTreeSet};

macro_rules! features {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A feature of the generator.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Feature {
            $($(#[$doc])* $name,)*
        }

        impl Feature {
            /// Every feature, in declaration order.
            pub const ALL: &'static [Feature] = &[$(Feature::$name,)*];
        }
    };
}

features! {
    // Issue #50's items, each a feature since.
    /// A keyless partitioned table or inheritance parent, watched.
    KeylessParent,
    /// `col::integer` of a fractional column, `float::numeric`.
    RoundingCast,
    /// `composite IS [NOT] NULL`.
    CompositeIsNull,
    /// Order comparisons of oid columns.
    OidOrder,
    /// Floats written (or the role's sessions set) with extra_float_digits = 0.
    FloatDigits,
    /// ORDER BY ... LIMIT that does not fix a total order.
    TiedPage,
    /// A table renamed away or moved by SET SCHEMA, and replaced.
    RenameReplace,
    /// A schema renamed and recreated.
    SchemaRename,
    /// An inheritance child created after the parent was watched.
    LateChild,
    /// A table created in the `$user` schema shadowing one a statement names.
    SearchPathShadow,
    /// Writes under session_replication_role = replica, skipping foreign keys.
    ReplicaRole,
    /// The DDL event trigger dropped.
    NoDdlTrigger,
    /// A new overload of upper/lower that statements then call.
    FunctionOverload,
    /// `char_col = ANY($1)`: the parameter is a `bpchar[]`.
    CharArrayParam,

    // Names (issue #70 item 1).
    /// A column or output alias named as pgcache's own SQL names things (`q`, `pgcache_rows`,
    /// `pgcache_params`, `pgcache_results`, `json`, `n`, `m`, `s`).
    WrapperName,
    /// A row-valued output column: `ROW(...)`, a composite column, a whole-row reference.
    RowColumn,

    // Types.
    Interval,
    Time,
    TimeTz,
    Bytea,
    Inet,
    Cidr,
    Money,
    Range,
    Multirange,
    Citext,
    Xml,
    Bit,
    Json,
    /// An ICU collation on a text column.
    IcuCollation,
    /// A nondeterministic (case-insensitive) collation on a text column.
    NondeterministicCollation,
    /// Float `NaN`, `Infinity`, `-Infinity` among the values.
    FloatSpecials,

    // Shapes.
    Case,
    Coalesce,
    NullIf,
    GreatestLeast,
    /// String functions beyond upper/lower (substr, length, concat, replace, trim, ...).
    StringFunctions,
    Distinct,
    DistinctOn,
    Window,
    Cte,
    RecursiveCte,
    IntersectExcept,
    Lateral,
    FullJoin,
    RightJoin,
    CrossJoin,
    IsDistinctFrom,
    RollupCube,
    FetchWithTies,
    /// `$n` in the projection.
    ParamInProjection,

    // DDL.
    AlterColumnType,
    AddColumn,
    DropColumn,
    ReplaceView,
    /// A domain's CHECK constraint changed (ADD/DROP CONSTRAINT).
    DomainCheck,
    EnumAddValue,
    /// A row-level security policy created, changed or dropped on a table read.
    RlsPolicy,
    /// A function labelled IMMUTABLE that changes its session (set_config, an advisory
    /// lock), called by statements (issue #70 item 2).
    SessionFunction,

    // How a check asks.
    /// A statement's checks sent with `SOURCE <name>` to a second database.
    NamedSource,
    /// Calls with `TAG`, and INVALIDATE TAG among the writes.
    Tags,
    /// A streaming standby listed: misses may be read there.
    Standby,
    /// A row read by READ.
    Read,
    /// Rows read by MULTIREAD.
    MultiRead,
    /// Rows read by key name, GET and MGET.
    MGet,
    /// A call with an explicit TTL.
    Ttl,
    /// A call with MAXSTALE.
    MaxStale,
    /// A call with AFTER the last write's position.
    After,

    // Concurrency (issue #70 items 3 and 4).
    /// Several clients checking at once, every answer checked.
    ConcurrentClients,
    /// Clients asking the same statement and parameters at once: they share one fill.
    Coalesced,
    /// Clients asking one statement with other parameters at once: one batch.
    Batched,
    /// A client that asked and left before its answer, beside others asking the same.
    LeaderLeaves,
    /// A statement whose runs take a while for some parameters, under a short
    /// statement_timeout: batched, the sets together pass it, alone they do not.
    SlowSets,
    /// Misses answered by the workers (`loop_connections 0`) for the round.
    WorkersOnly,

    // Faults (issue #70 items 5 to 7).
    /// redis-server out of file descriptors while its event loop opens connections.
    FdShortage,
    /// PostgreSQL stopped for a moment and started again.
    PgRestart,
    /// redis-server restarted from its RDB, HEALTH asked while it comes back.
    RdbRestart,
}

impl Feature {
    /// Whether the generator can draw it in this mode at all (replica-role writes and
    /// standbys need the replication mode's positions).
    pub fn drawn_in(self, replication: bool) -> bool {
        replication
            || !matches!(
                self,
                Feature::ReplicaRole | Feature::Standby | Feature::After
            )
    }
}

/// How many checks drew each feature.
#[derive(Default, Debug)]
pub struct Coverage {
    pub checks: BTreeMap<Feature, usize>,
}

impl Coverage {
    /// A check drew `features`.
    pub fn add(&mut self, features: &BTreeSet<Feature>) {
        for f in features {
            *self.checks.entry(*f).or_default() += 1;
        }
    }

    /// The features no check drew, of those `allowed`.
    pub fn blind_spots(&self, allowed: impl Fn(Feature) -> bool) -> Vec<Feature> {
        Feature::ALL
            .iter()
            .copied()
            .filter(|f| allowed(*f) && !self.checks.contains_key(f))
            .collect()
    }

    /// The table printed at the end of a run: every feature, its checks.
    pub fn table(&self) -> String {
        let mut out = String::from("checks per feature (0: never drawn):\n");
        for f in Feature::ALL {
            out.push_str(&format!(
                "  {:<26} {}\n",
                format!("{f:?}"),
                self.checks.get(f).copied().unwrap_or(0)
            ));
        }
        out
    }
}
