//! Random schemas: tables whose columns are of the types pgcache weighs row by row, with and
//! without primary keys, partitioned (LIST and RANGE), inheritance parents and children,
//! foreign keys between tables, views, enums, domains, composites and the "C" collation.
//!
//! Every value a table holds, a statement compares with or a write stores comes from a small
//! pool per type, so rows tie, equalities match and the edge values of each type (the oid
//! above 2^31, the bigint past a double's precision, the numeric that rounds, the composite
//! whose fields are all NULL) meet the statements that weigh them.

use crate::{Feature, Gen};

/// A column's type. The pools below hold each type's values as their text input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    SmallInt,
    Int,
    BigInt,
    Numeric,
    /// numeric(6,2): stored values are rounded to two places.
    NumericPs,
    Real,
    Double,
    Text,
    /// text COLLATE "C": its order is bytes', which pgcache decides exactly.
    TextC,
    Varchar,
    Char,
    Bool,
    Date,
    Timestamp,
    Timestamptz,
    Uuid,
    Jsonb,
    Oid,
    TextArr,
    IntArr,
    /// The enum `mood`.
    Mood,
    /// The domain `posint` over integer.
    PosInt,
    /// The domain `tag` over text.
    Tag,
    /// The composite `pair` (x integer, y text).
    Pair,
    Interval,
    Time,
    TimeTz,
    Bytea,
    Inet,
    Cidr,
    Money,
    IntRange,
    IntMultirange,
    /// The `citext` extension's case-insensitive text.
    Citext,
    Xml,
    /// bit(4).
    Bit,
    /// Plain json: its text kept as written (spaces, repeated keys).
    Json,
    /// text COLLATE "und-x-icu".
    TextIcu,
    /// text COLLATE ci: an ICU collation that is not deterministic ('a' = 'A').
    TextCi,
}

pub const ALL_TYPES: &[Ty] = &[
    Ty::SmallInt,
    Ty::Int,
    Ty::BigInt,
    Ty::Numeric,
    Ty::NumericPs,
    Ty::Real,
    Ty::Double,
    Ty::Text,
    Ty::TextC,
    Ty::Varchar,
    Ty::Char,
    Ty::Bool,
    Ty::Date,
    Ty::Timestamp,
    Ty::Timestamptz,
    Ty::Uuid,
    Ty::Jsonb,
    Ty::Oid,
    Ty::TextArr,
    Ty::IntArr,
    Ty::Mood,
    Ty::PosInt,
    Ty::Tag,
    Ty::Pair,
    Ty::Interval,
    Ty::Time,
    Ty::TimeTz,
    Ty::Bytea,
    Ty::Inet,
    Ty::Cidr,
    Ty::Money,
    Ty::IntRange,
    Ty::IntMultirange,
    Ty::Citext,
    Ty::Xml,
    Ty::Bit,
    Ty::Json,
    Ty::TextIcu,
    Ty::TextCi,
];

impl Ty {
    /// The type as a column definition names it.
    pub fn sql(self) -> &'static str {
        match self {
            Ty::SmallInt => "smallint",
            Ty::Int => "integer",
            Ty::BigInt => "bigint",
            Ty::Numeric => "numeric",
            Ty::NumericPs => "numeric(6,2)",
            Ty::Real => "real",
            Ty::Double => "double precision",
            Ty::Text => "text",
            Ty::TextC => "text COLLATE \"C\"",
            Ty::Varchar => "varchar(4)",
            Ty::Char => "char(3)",
            Ty::Bool => "boolean",
            Ty::Date => "date",
            Ty::Timestamp => "timestamp",
            Ty::Timestamptz => "timestamptz",
            Ty::Uuid => "uuid",
            Ty::Jsonb => "jsonb",
            Ty::Oid => "oid",
            Ty::TextArr => "text[]",
            Ty::IntArr => "integer[]",
            Ty::Mood => "mood",
            Ty::PosInt => "posint",
            Ty::Tag => "tag",
            Ty::Pair => "pair",
            Ty::Interval => "interval",
            Ty::Time => "time",
            Ty::TimeTz => "timetz",
            Ty::Bytea => "bytea",
            Ty::Inet => "inet",
            Ty::Cidr => "cidr",
            Ty::Money => "money",
            Ty::IntRange => "int4range",
            Ty::IntMultirange => "int4multirange",
            Ty::Citext => "citext",
            Ty::Xml => "xml",
            Ty::Bit => "bit(4)",
            Ty::Json => "json",
            Ty::TextIcu => "text COLLATE \"und-x-icu\"",
            Ty::TextCi => "text COLLATE ci",
        }
    }

    /// The type a cast or a parameter names (no collation, no modifier needed).
    pub fn cast(self) -> &'static str {
        match self {
            Ty::TextC | Ty::TextIcu | Ty::TextCi => "text",
            other => other.sql(),
        }
    }

    /// The generator feature a column of this type draws.
    pub fn feature(self) -> Option<Feature> {
        Some(match self {
            Ty::Real | Ty::Double => Feature::FloatSpecials,
            Ty::Interval => Feature::Interval,
            Ty::Time => Feature::Time,
            Ty::TimeTz => Feature::TimeTz,
            Ty::Bytea => Feature::Bytea,
            Ty::Inet => Feature::Inet,
            Ty::Cidr => Feature::Cidr,
            Ty::Money => Feature::Money,
            Ty::IntRange => Feature::Range,
            Ty::IntMultirange => Feature::Multirange,
            Ty::Citext => Feature::Citext,
            Ty::Xml => Feature::Xml,
            Ty::Bit => Feature::Bit,
            Ty::Json => Feature::Json,
            Ty::TextIcu => Feature::IcuCollation,
            Ty::TextCi => Feature::NondeterministicCollation,
            _ => return None,
        })
    }

    /// A short prefix for column names, so a printed case says what each column holds.
    pub fn abbr(self) -> &'static str {
        match self {
            Ty::SmallInt => "si",
            Ty::Int => "i",
            Ty::BigInt => "bi",
            Ty::Numeric => "num",
            Ty::NumericPs => "np",
            Ty::Real => "r",
            Ty::Double => "d",
            Ty::Text => "t",
            Ty::TextC => "tc",
            Ty::Varchar => "vc",
            Ty::Char => "ch",
            Ty::Bool => "b",
            Ty::Date => "dt",
            Ty::Timestamp => "ts",
            Ty::Timestamptz => "tz",
            Ty::Uuid => "u",
            Ty::Jsonb => "j",
            Ty::Oid => "o",
            Ty::TextArr => "ta",
            Ty::IntArr => "ia",
            Ty::Mood => "mood",
            Ty::PosInt => "pi",
            Ty::Tag => "tag",
            Ty::Pair => "pair",
            Ty::Interval => "iv",
            Ty::Time => "tm",
            Ty::TimeTz => "ttz",
            Ty::Bytea => "by",
            Ty::Inet => "ip",
            Ty::Cidr => "net",
            Ty::Money => "mo",
            Ty::IntRange => "rg",
            Ty::IntMultirange => "mr",
            Ty::Citext => "ci",
            Ty::Xml => "x",
            Ty::Bit => "bit",
            Ty::Json => "js",
            Ty::TextIcu => "icu",
            Ty::TextCi => "tci",
        }
    }

    /// Few values, so rows tie and equalities match; each type's edges among them.
    pub fn pool(self) -> &'static [&'static str] {
        match self {
            Ty::SmallInt => &["-2", "0", "1", "3", "7", "32767"],
            Ty::Int => &["-5", "0", "1", "2", "3", "10", "2147483647"],
            Ty::BigInt => &["-1", "0", "1", "3", "9007199254740992", "9007199254740993"],
            Ty::Numeric => &[
                "0", "1.5", "1.50", "2.49", "2.5", "-2.5", "10", "0.1", "NaN",
            ],
            Ty::NumericPs => &["0", "1.00", "1.5", "2.49", "2.50", "-3.25", "2.505"],
            Ty::Real => &["0.1", "1.5", "-2", "2.5", "1e-07", "3.3", "NaN", "Infinity"],
            Ty::Double => &[
                "0.1",
                "1.5",
                "2.5",
                "-0",
                "0.30000000000000004",
                "1e+300",
                "3.3",
                "NaN",
                "-Infinity",
            ],
            Ty::Text | Ty::TextC | Ty::TextIcu | Ty::TextCi => {
                &["", "a", "A", "b", "ab", "a%b", "é", "É", "Z", " a", "a_c"]
            }
            Ty::Varchar => &["a", "A", "ab", "é", "Zz", "a%"],
            Ty::Char => &["a", "ab", "abc", "A"],
            Ty::Bool => &["true", "false"],
            Ty::Date => &["2024-01-01", "2024-02-29", "1999-12-31", "infinity"],
            Ty::Timestamp => &[
                "2024-01-01 00:00:00",
                "2024-01-01 12:30:00.5",
                "2023-12-31 23:59:59",
                "infinity",
            ],
            Ty::Timestamptz => &[
                "2024-01-01 00:00:00+00",
                "2024-01-01 01:00:00+01",
                "2024-06-01 12:00:00-07",
            ],
            Ty::Uuid => &[
                "00000000-0000-0000-0000-000000000001",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
            ],
            Ty::Jsonb => &[
                r#"{"a": 1}"#,
                r#"{"a": "x", "b": [1, 2]}"#,
                "[1, 2]",
                r#""s""#,
                r#"{"a": null}"#,
                r#"{"b": {"c": 1}}"#,
                r#"{"a": 1.0}"#,
            ],
            Ty::Oid => &["0", "1", "2147483648", "3000000000", "4294967295"],
            Ty::TextArr => &["{a,b}", "{}", "{NULL}", "{b}"],
            Ty::IntArr => &["{1,2}", "{}", "{3}", "{1,NULL}"],
            Ty::Mood => &["sad", "ok", "happy"],
            Ty::PosInt => &["0", "1", "5"],
            Ty::Tag => &["x", "y", "X"],
            Ty::Pair => &["(1,a)", "(,)", "(2,)", "(1,b)"],
            Ty::Interval => &[
                "1 day",
                "24:00:00",
                "1 mon",
                "30 days",
                "-1 day",
                "00:00:00.5",
                "0",
            ],
            Ty::Time => &[
                "00:00:00",
                "12:30:00.5",
                "23:59:59.999999",
                "24:00:00",
                "12:30:00",
            ],
            Ty::TimeTz => &["12:00:00+00", "13:00:00+01", "12:00:00-05", "00:00:00+14"],
            Ty::Bytea => &["\\x", "\\x00", "\\xdeadbeef", "\\x41", "\\x4142"],
            Ty::Inet => &[
                "10.0.0.1",
                "10.0.0.1/8",
                "::1",
                "192.168.0.0/24",
                "10.0.0.2",
            ],
            Ty::Cidr => &["10.0.0.0/8", "192.168.0.0/24", "::/0", "10.0.0.0/16"],
            Ty::Money => &["1.00", "0", "-2.50", "1000.5", "0.01"],
            Ty::IntRange => &["[1,5)", "empty", "(,3]", "[2,2]", "[3,)", "[1,10)"],
            Ty::IntMultirange => &["{}", "{[1,3),[5,7)}", "{[2,4)}", "{(,0)}"],
            Ty::Citext => &["a", "A", "b", "é", "É", "ab"],
            Ty::Xml => &["<a/>", "<a>1</a>", "text", "<b x=\"1\"/>"],
            Ty::Bit => &["0000", "1010", "1111", "0001"],
            Ty::Json => &[
                r#"{"a": 1}"#,
                r#"{"a":1}"#,
                "[1, 2]",
                r#""s""#,
                r#"{"a": 1, "a": 2}"#,
                "null",
                "1.50",
            ],
        }
    }

    /// Whether `<`, ORDER BY and friends read this type as a scalar pgcache may compare.
    pub fn ordered(self) -> bool {
        self.comparable()
            && !matches!(
                self,
                Ty::Jsonb | Ty::TextArr | Ty::IntArr | Ty::Pair | Ty::Bool
            )
    }

    /// Whether it has `=` at all (json and xml have none).
    pub fn comparable(self) -> bool {
        !matches!(self, Ty::Xml | Ty::Json)
    }

    /// Whether values equal under its `=` are spelled alike: where they are not ('a' and 'A'
    /// under a case-insensitive collation, '1 day' and '24:00:00'), PostgreSQL may answer
    /// either for a GROUP BY key, min, max or DISTINCT, and order them either way in a tie,
    /// which the comparison of answers cannot tell apart from a wrong one.
    pub fn spelled_by_value(self) -> bool {
        !matches!(self, Ty::Citext | Ty::TextCi | Ty::Interval)
    }

    /// Whether min() and max() take it.
    pub fn has_min_max(self) -> bool {
        self.ordered() && !matches!(self, Ty::IntRange | Ty::IntMultirange | Ty::Bit)
    }

    pub fn texty(self) -> bool {
        matches!(
            self,
            Ty::Text
                | Ty::TextC
                | Ty::Varchar
                | Ty::Char
                | Ty::Tag
                | Ty::Citext
                | Ty::TextIcu
                | Ty::TextCi
        )
    }

    pub fn integral(self) -> bool {
        matches!(self, Ty::SmallInt | Ty::Int | Ty::BigInt | Ty::PosInt)
    }

    /// Types whose cast to integer rounds (`amount::integer`).
    pub fn fractional(self) -> bool {
        matches!(self, Ty::Numeric | Ty::NumericPs | Ty::Real | Ty::Double)
    }

    /// Exact sums (a float's sum depends on the order PostgreSQL scans rows in).
    pub fn summable(self) -> bool {
        self.integral() || matches!(self, Ty::Numeric | Ty::NumericPs | Ty::Money)
    }

    /// A value as an SQL literal of this type.
    pub fn literal(self, value: &str) -> String {
        format!("'{}'::{}", value.replace('\'', "''"), self.cast())
    }

    /// The array parameter `{...}` of these values (for `= ANY($1)`).
    pub fn array_param(values: &[&str]) -> String {
        let items: Vec<String> = values
            .iter()
            .map(|v| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        format!("{{{}}}", items.join(","))
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: Ty,
}

/// The names pgcache's SQL gives what it puts around a statement, and the names such SQL
/// commonly uses: a column or an alias called so must not change an answer (issue #70 item 1).
pub const WRAPPER_NAMES: &[&str] = &[
    "q",
    "pgcache_rows",
    "pgcache_params",
    "pgcache_results",
    "json",
    "n",
    "m",
    "s",
];

/// How a table's rows are laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    Plain,
    /// PARTITION BY LIST (part), part text: partitions for 'a' and 'b'; 'c' has none until
    /// a write creates it.
    List,
    /// PARTITION BY RANGE (part), part integer: [0,10) and [10,20); [20,30) comes later.
    Range,
    /// An inheritance parent with one child (`<name>_kid`, a column of its own).
    Parent,
}

#[derive(Debug, Clone)]
pub struct Table {
    /// As statements name it: `t1`, or `s.t3` in the schema a write may rename.
    pub name: String,
    pub columns: Vec<Column>,
    /// A primary key on `id` (with `part` in a partitioned table).
    pub keyed: bool,
    pub layout: Layout,
    /// `ref` REFERENCES this table (index into the schema's tables) (id).
    pub parent: Option<usize>,
    /// The foreign key's ON DELETE / ON UPDATE clause.
    pub fk_rule: &'static str,
    /// The rows it starts with (each value's text, None for NULL, as `all_columns`).
    pub rows: Vec<Vec<Option<String>>>,
    /// An inheritance parent's child's rows (the child's own column last).
    pub kid_rows: Vec<Vec<Option<String>>>,
    /// Left out of the setup by the shrinker.
    pub omitted: bool,
}

impl Table {
    /// The table's name without its schema.
    pub fn bare(&self) -> &str {
        self.name.rsplit('.').next().unwrap()
    }

    pub fn in_schema_s(&self) -> bool {
        self.name.starts_with("s.")
    }

    /// The partition key's values (LIST: text, RANGE: integer), the last one with no
    /// partition until a write creates it.
    pub fn part_values(&self) -> &'static [&'static str] {
        match self.layout {
            Layout::List => &["a", "b"],
            Layout::Range => &["1", "12"],
            _ => &[],
        }
    }

    /// Every column a row holds, in order: id, [part], [ref], data columns.
    pub fn all_columns(&self) -> Vec<(String, String)> {
        let mut cols = vec![("id".to_string(), "integer".to_string())];
        match self.layout {
            Layout::List => cols.push(("part".into(), "text".into())),
            Layout::Range => cols.push(("part".into(), "integer".into())),
            _ => {}
        }
        if self.parent.is_some() {
            cols.push(("ref".into(), "integer".into()));
        }
        cols.extend(
            self.columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.sql().to_string())),
        );
        cols
    }
}

#[derive(Debug, Clone)]
pub struct View {
    pub name: String,
    pub table: usize,
    pub column: Column,
    /// The view's WHERE (a write replaces it).
    pub filter: String,
}

#[derive(Debug, Clone)]
pub struct Schema {
    pub tables: Vec<Table>,
    pub views: Vec<View>,
    /// The DDL event trigger dropped (issue #50's item 12: a view replaced unseen).
    pub no_ddl_trigger: bool,
    /// `ALTER ROLE app SET extra_float_digits = 0`: the writer's and the walsender's
    /// sessions print floats rounded (item 5).
    pub rounded_floats: bool,
    /// Another setting for the app role's sessions (the walsender's among them in
    /// replication mode): values reach pgcache's feed printed under it.
    pub role_setting: Option<&'static str>,
    /// `slow_for(n)`, which sleeps `SLOW_SECONDS` for n > 0, and the round's
    /// statement_timeout short enough that four such sets together pass it.
    pub slow_function: bool,
    /// `meddle(n)`, IMMUTABLE by its label, which changes its session's settings and takes
    /// an advisory lock.
    pub session_function: bool,
}

/// How long `slow_for` sleeps for a slow set, and the statement_timeout of a round that has it:
/// one set alone stays well within it, four together do not.
pub const SLOW_SECONDS: &str = "0.15";
pub const SLOW_ROUND_TIMEOUT_MS: &str = "500";

pub fn generate(g: &mut Gen) -> Schema {
    let n_tables = 2 + g.rng.below(3);
    let mut tables: Vec<Table> = Vec::new();
    for i in 0..n_tables {
        // Mostly plain keyed tables: the statements pgcache makes row-precise read those.
        let mut layout = match g.rng.below(20) {
            0 | 1 => Layout::List,
            2 => Layout::Range,
            3..=5 => Layout::Parent,
            _ => Layout::Plain,
        };
        let mut keyed = g.rng.chance(85);
        // A keyless partitioned table or inheritance parent: UPDATE and DELETE on its
        // partitions fail once it is watched (item 1).
        if !keyed && layout != Layout::Plain && !g.feature(Feature::KeylessParent) {
            keyed = true;
        }
        if i == 0 && layout != Layout::Plain && g.rng.chance(50) {
            layout = Layout::Plain;
        }
        let n_cols = 2 + g.rng.below(4);
        let mut columns = Vec::new();
        for c in 0..n_cols {
            let mut ty = g.rng.pick(ALL_TYPES);
            if let Some(f) = ty.feature()
                && !g.feature(f)
            {
                ty = Ty::Int;
            }
            // A column called as pgcache's own SQL calls things around a statement.
            let name = match WRAPPER_NAMES.get(g.rng.below(WRAPPER_NAMES.len() * 6)) {
                Some(name)
                    if !columns.iter().any(|c: &Column| c.name == *name)
                        && g.feature_allowed(Feature::WrapperName) =>
                {
                    name.to_string()
                }
                _ => format!("{}{c}", ty.abbr()),
            };
            columns.push(Column { name, ty });
        }
        // A low-cardinality integer: ORDER BY it ties.
        if g.rng.chance(60) {
            columns.push(Column {
                name: "score".into(),
                ty: Ty::Int,
            });
        }
        // A foreign key to an earlier keyed plain table.
        let parents: Vec<usize> = (0..i)
            .filter(|&p| tables[p].keyed && tables[p].layout == Layout::Plain)
            .collect();
        let parent = (!parents.is_empty() && g.rng.chance(60)).then(|| g.rng.pick(&parents));
        let name = if g.rng.chance(25) {
            format!("s.t{i}")
        } else {
            format!("t{i}")
        };
        let n_rows = if g.rng.chance(15) {
            200 + g.rng.below(700)
        } else {
            3 + g.rng.below(25)
        };
        // Rules that let a parent's rows go (a refused write only rolls back).
        let fk_rule = [
            " ON DELETE CASCADE ON UPDATE CASCADE",
            " ON DELETE SET NULL ON UPDATE CASCADE",
        ][g.rng.below(2)];
        let mut table = Table {
            name,
            columns,
            keyed,
            layout,
            parent,
            fk_rule,
            rows: Vec::new(),
            kid_rows: Vec::new(),
            omitted: false,
        };
        let parent_rows = parent.map_or(0, |p| tables[p].rows.len());
        table.rows = (1..=n_rows as i64)
            .map(|id| row_values(g, &table, id, parent_rows))
            .collect();
        if table.layout == Layout::Parent {
            table.kid_rows = (0..1 + g.rng.below(5))
                .map(|k| {
                    let mut values = row_values(g, &table, 1000 + k as i64, parent_rows);
                    values.push(Some("kid".into()));
                    values
                })
                .collect();
        }
        tables.push(table);
    }
    let mut views = Vec::new();
    if g.rng.chance(50) {
        let t = g.rng.below(tables.len());
        let column = g.rng.pick(&tables[t].columns);
        views.push(View {
            name: "v0".into(),
            table: t,
            column,
            filter: "id % 2 = 0".into(),
        });
    }
    let no_ddl_trigger = g.rng.chance(10) && g.feature(Feature::NoDdlTrigger);
    if no_ddl_trigger {
        // Without the DDL trigger, pgcache_watch refuses (in replication mode) a keyless
        // partitioned table, whose later partitions would have no replica identity: that
        // refusal is the design (examples/invalidation_trigger.sql), not a finding, so such
        // a table gets its key.
        for t in &mut tables {
            if matches!(t.layout, Layout::List | Layout::Range) {
                t.keyed = true;
            }
        }
    }
    let rounded_floats = g.rng.chance(15) && g.feature(Feature::FloatDigits);
    let role_setting = g.rng.chance(20).then(|| {
        g.rng.pick(&[
            "TimeZone = 'Asia/Kolkata'",
            "TimeZone = 'America/St_Johns'",
            "IntervalStyle = 'iso_8601'",
            "DateStyle = 'SQL, DMY'",
            "lc_monetary = 'C'",
        ])
    });
    let slow_function = g.rng.chance(10) && g.feature(Feature::SlowSets);
    let session_function = g.rng.chance(15) && g.feature(Feature::SessionFunction);
    Schema {
        tables,
        views,
        no_ddl_trigger,
        rounded_floats,
        role_setting,
        slow_function,
        session_function,
    }
}

/// A row's values for `table` with id `id`: the text of each column of `all_columns` (None
/// for NULL), the partition key one of those with a partition.
pub fn row_values(g: &mut Gen, table: &Table, id: i64, parent_rows: usize) -> Vec<Option<String>> {
    let mut values = vec![Some(id.to_string())];
    match table.layout {
        Layout::List | Layout::Range => values.push(Some(g.rng.pick(table.part_values()).into())),
        _ => {}
    }
    if table.parent.is_some() {
        values.push(if g.rng.chance(10) {
            None
        } else {
            Some((1 + g.rng.below(parent_rows.max(1))).to_string())
        });
    }
    for c in &table.columns {
        values.push(column_value(g, c));
    }
    values
}

pub fn column_value(g: &mut Gen, c: &Column) -> Option<String> {
    if g.rng.chance(12) {
        return None;
    }
    if c.name == "score" {
        return Some(g.rng.below(4).to_string());
    }
    if matches!(c.ty, Ty::Text | Ty::TextC) && g.rng.chance(4) {
        // A value stored out of line: an UPDATE of another column does not carry it in the
        // change feed (an unchanged TOASTed value), so pgcache must not take it as known.
        let mut long = String::from(g.rng.pick(&["a", "b", "Z"]));
        while long.len() < 8000 {
            long.push_str(&format!("{:016x}", g.rng.next_u64()));
        }
        return Some(long);
    }
    Some(g.rng.pick(c.ty.pool()).to_string())
}

/// `(v1, v2, ...)` of a row, as literals.
pub fn row_sql(table: &Table, values: &[Option<String>]) -> String {
    let mut cols = table.all_columns();
    cols.push(("extra".into(), "text".into()));
    let items: Vec<String> = values
        .iter()
        .zip(&cols)
        .map(|(v, (_, ty))| match v {
            None => "NULL".into(),
            Some(v) => format!(
                "'{}'::{}",
                v.replace('\'', "''"),
                ty.replace(" COLLATE \"C\"", "")
            ),
        })
        .collect();
    format!("({})", items.join(", "))
}

impl Schema {
    /// What a superuser runs before the app's setup.
    pub fn superuser_sql(&self) -> String {
        let mut sql = String::new();
        if self.no_ddl_trigger {
            sql.push_str("DROP EVENT TRIGGER pgcache_ddl; DROP EVENT TRIGGER pgcache_ddl_drop;\n");
        }
        if self.rounded_floats {
            sql.push_str("ALTER ROLE app SET extra_float_digits = 0;\n");
        }
        if let Some(setting) = self.role_setting {
            sql.push_str(&format!("ALTER ROLE app SET {setting};\n"));
        }
        sql
    }

    /// The app's setup: types, tables, their rows (from `g`), views, and every table watched.
    pub fn setup_sql(&self) -> String {
        let mut sql = String::from(
            "CREATE SCHEMA s;\n\
             CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');\n\
             CREATE DOMAIN posint AS integer CHECK (VALUE >= 0);\n\
             CREATE DOMAIN tag AS text;\n\
             CREATE TYPE pair AS (x integer, y text);\n\
             CREATE EXTENSION IF NOT EXISTS citext;\n\
             CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);\n",
        );
        if self.slow_function {
            sql.push_str(&format!(
                "CREATE FUNCTION slow_for(n integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE \
                 AS $$ BEGIN IF n > 0 THEN PERFORM pg_sleep({SLOW_SECONDS}); END IF; \
                 RETURN true; END $$;\n"
            ));
        }
        if self.session_function {
            sql.push_str(
                "CREATE FUNCTION meddle(n integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE \
                 AS $$ BEGIN \
                 PERFORM set_config('extra_float_digits', '0', false); \
                 PERFORM set_config('TimeZone', 'Asia/Kathmandu', false); \
                 PERFORM set_config('IntervalStyle', 'sql_standard', false); \
                 PERFORM set_config('search_path', 'pg_catalog', false); \
                 PERFORM pg_try_advisory_lock(70); \
                 RETURN n; END $$;\n",
            );
        }
        for t in self.tables.iter().filter(|t| !t.omitted) {
            let mut defs: Vec<String> = t
                .all_columns()
                .iter()
                .map(|(n, ty)| format!("{n} {ty}"))
                .collect();
            if let Some(p) = t.parent {
                let rule = t.fk_rule;
                let last = defs.iter().position(|d| d.starts_with("ref ")).unwrap();
                defs[last] = format!("ref integer REFERENCES {} (id){rule}", self.tables[p].name);
            }
            if t.keyed {
                defs.push(match t.layout {
                    Layout::List | Layout::Range => "PRIMARY KEY (id, part)".into(),
                    _ => "PRIMARY KEY (id)".into(),
                });
            }
            let partition = match t.layout {
                Layout::List => " PARTITION BY LIST (part)",
                Layout::Range => " PARTITION BY RANGE (part)",
                _ => "",
            };
            sql.push_str(&format!(
                "CREATE TABLE {} ({}){partition};\n",
                t.name,
                defs.join(", ")
            ));
            let bare = &t.name;
            match t.layout {
                Layout::List => sql.push_str(&format!(
                    "CREATE TABLE {bare}_a PARTITION OF {bare} FOR VALUES IN ('a');\n\
                     CREATE TABLE {bare}_b PARTITION OF {bare} FOR VALUES IN ('b');\n"
                )),
                Layout::Range => sql.push_str(&format!(
                    "CREATE TABLE {bare}_lo PARTITION OF {bare} FOR VALUES FROM (0) TO (10);\n\
                     CREATE TABLE {bare}_hi PARTITION OF {bare} FOR VALUES FROM (10) TO (20);\n"
                )),
                Layout::Parent => sql.push_str(&format!(
                    "CREATE TABLE {bare}_kid (extra text{}) INHERITS ({bare});\n",
                    if t.keyed { ", PRIMARY KEY (id)" } else { "" }
                )),
                Layout::Plain => {}
            }
            let rows: Vec<String> = t.rows.iter().map(|r| row_sql(t, r)).collect();
            for chunk in rows.chunks(200) {
                sql.push_str(&format!(
                    "INSERT INTO {} VALUES {};\n",
                    t.name,
                    chunk.join(", ")
                ));
            }
            if !t.kid_rows.is_empty() {
                let kid_rows: Vec<String> = t.kid_rows.iter().map(|r| row_sql(t, r)).collect();
                sql.push_str(&format!(
                    "INSERT INTO {}_kid VALUES {};\n",
                    t.name,
                    kid_rows.join(", ")
                ));
            }
        }
        for v in self.views.iter().filter(|v| !self.tables[v.table].omitted) {
            sql.push_str(&format!(
                "CREATE VIEW {} AS SELECT id, {} FROM {} WHERE {};\n",
                v.name, v.column.name, self.tables[v.table].name, v.filter
            ));
        }
        for t in self.tables.iter().filter(|t| !t.omitted) {
            sql.push_str(&format!("SELECT pgcache_watch('{}');\n", t.name));
        }
        sql
    }
}
