//! Random write transactions from a second connection: inserts, updates (of the primary key,
//! of a partition key moving rows between partitions, of foreign keys), deletes, TRUNCATE,
//! under session settings (`extra_float_digits`, `DateStyle`, `IntervalStyle`, `TimeZone`,
//! `session_replication_role = replica`), several statements per transaction, rollbacks;
//! and DDL: a table renamed away and replaced, a schema renamed and recreated, a table moved
//! with SET SCHEMA and replaced, a new inheritance child, a new partition, a view replaced,
//! a table created where the search_path finds it before the one a statement names, a new
//! function overload, a column added, retyped or dropped.
//!
//! The generator keeps a model of what exists now (`Live`) so most writes are valid; a
//! write PostgreSQL refuses (a key taken, a foreign key missing, no partition for a value)
//! is rolled back and stays in the history, the same on every replay.

use crate::schema::{self, Layout, Schema, Table};
use crate::{Feature, Gen};

#[derive(Debug, Clone)]
pub struct Write {
    pub sql: String,
    /// Run by a superuser (`session_replication_role` needs one), as the app role.
    pub superuser: bool,
    pub features: Vec<Feature>,
}

struct LiveTable {
    table: Table,
    /// Partition key values that have a partition now.
    parts: Vec<&'static str>,
    /// Inheritance children, by name.
    kids: Vec<String>,
    max_id: i64,
    /// Replaced by a table of its own in the `$user` schema (`app`).
    shadowed: bool,
}

pub struct Live<'a> {
    schema: &'a Schema,
    tables: Vec<LiveTable>,
    counter: usize,
    overloads: Vec<&'static str>,
    view_filters: usize,
}

impl<'a> Live<'a> {
    pub fn new(schema: &'a Schema) -> Live<'a> {
        let tables = schema
            .tables
            .iter()
            .map(|t| LiveTable {
                table: t.clone(),
                parts: t.part_values().to_vec(),
                kids: if t.layout == Layout::Parent {
                    vec![format!("{}_kid", t.name)]
                } else {
                    Vec::new()
                },
                max_id: t.rows.len() as i64,
                shadowed: false,
            })
            .collect();
        Live {
            schema,
            tables,
            counter: 0,
            overloads: Vec::new(),
            view_filters: 0,
        }
    }

    fn literal(ty: &str, v: &Option<String>) -> String {
        match v {
            None => "NULL".into(),
            Some(v) => format!(
                "'{}'::{}",
                v.replace('\'', "''"),
                ty.replace(" COLLATE \"C\"", "")
            ),
        }
    }

    /// Rows for table `ti` (into `target`: the table or one of its children).
    fn insert(&mut self, g: &mut Gen, ti: usize, target: &str, orphan: bool) -> String {
        let lt = &self.tables[ti];
        let parent_rows = lt
            .table
            .parent
            .map_or(1, |p| self.tables[p].table.rows.len());
        let n = 1 + g.rng.below(3);
        let mut rows = Vec::new();
        let cols = lt.table.all_columns();
        for _ in 0..n {
            let id = 1 + g.rng.below_i64(lt.max_id + 5);
            let mut values = schema::row_values(g, &lt.table, id, parent_rows);
            if !lt.parts.is_empty() {
                values[1] = Some(g.rng.pick(&lt.parts).to_string());
            }
            let mut row = None;
            if let Some(p) = lt.table.parent {
                let at = cols.iter().position(|(n, _)| n == "ref").unwrap();
                if orphan {
                    values[at] = Some((9000 + g.rng.below(10)).to_string());
                } else if values[at].is_some() {
                    // A parent row that exists now (rows come and go), or NULL when there
                    // are too few.
                    values[at] = Some("__ref__".into());
                    row = Some(schema::row_sql(&lt.table, &values).replace(
                        "'__ref__'::integer",
                        &format!(
                            "(SELECT id FROM {} ORDER BY id LIMIT 1 OFFSET {})",
                            self.tables[p].table.name,
                            g.rng.below(4)
                        ),
                    ));
                }
            }
            rows.push(row.unwrap_or_else(|| schema::row_sql(&lt.table, &values)));
        }
        let max = self.tables[ti].max_id + 5;
        self.tables[ti].max_id = self.tables[ti].max_id.max(max);
        let conflict = if self.tables[ti].table.keyed && target == self.tables[ti].table.name {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        };
        format!("INSERT INTO {target} VALUES {}{conflict}", rows.join(", "))
    }

    /// A WHERE picking a few rows.
    fn few(g: &mut Gen, t: &Table, max_id: i64) -> String {
        match g.rng.below(4) {
            0 | 1 => format!("id = {}", 1 + g.rng.below_i64(max_id)),
            2 => {
                let c = g.rng.pick(&t.columns);
                let v = schema::column_value(g, &c);
                match v {
                    None => format!("{} IS NULL", c.name),
                    Some(v) => format!("{} = {}", c.name, c.ty.literal(&v)),
                }
            }
            _ => format!("id % {} = {}", 3 + g.rng.below(5), g.rng.below(3)),
        }
    }

    fn dml(&mut self, g: &mut Gen, replica: bool) -> String {
        let ti = g.rng.below(self.tables.len());
        let name = self.tables[ti].table.name.clone();
        let target = if !self.tables[ti].kids.is_empty() && g.rng.chance(30) {
            g.rng.pick(&self.tables[ti].kids)
        } else {
            name.clone()
        };
        if replica {
            // Rows a foreign key would refuse, which replica mode lets in.
            if self.tables[ti].table.parent.is_some() {
                return self.insert(g, ti, &name, true);
            }
        }
        let t = self.tables[ti].table.clone();
        let max_id = self.tables[ti].max_id;
        // A keyless table is mostly inserted into, as pgbench_history is: its results stay
        // through the inserts they cannot contain (issue #52 item 5).
        if !t.keyed && g.rng.chance(50) {
            return self.insert(g, ti, &target, false);
        }
        match g.rng.below(10) {
            0..=2 => self.insert(g, ti, &target, false),
            3..=5 => {
                let mut sets = Vec::new();
                for _ in 0..1 + g.rng.below(2) {
                    let c = g.rng.pick(&t.columns);
                    if sets
                        .iter()
                        .any(|s: &String| s.starts_with(&format!("{} =", c.name)))
                    {
                        continue;
                    }
                    let v = schema::column_value(g, &c);
                    sets.push(format!("{} = {}", c.name, Self::literal(c.ty.sql(), &v)));
                }
                if t.parent.is_some() && g.rng.chance(30) {
                    sets.push(format!("ref = {}", 1 + g.rng.below(6)));
                }
                format!(
                    "UPDATE {target} SET {} WHERE {}",
                    sets.join(", "),
                    Self::few(g, &t, max_id)
                )
            }
            6 if !self.tables[ti].parts.is_empty() => {
                // A row moving to another partition.
                let part = g.rng.pick(&self.tables[ti].parts);
                format!(
                    "UPDATE {name} SET part = '{part}' WHERE id = {}",
                    1 + g.rng.below_i64(max_id)
                )
            }
            7 if t.keyed => {
                // A primary key changing: the row leaves under one key, enters under another.
                let to = 1 + g.rng.below_i64(max_id + 10);
                self.tables[ti].max_id = self.tables[ti].max_id.max(to);
                format!(
                    "UPDATE {target} SET id = {to} WHERE id = {} AND NOT EXISTS (SELECT 1 FROM {target} WHERE id = {to})",
                    1 + g.rng.below_i64(max_id)
                )
            }
            _ => format!("DELETE FROM {target} WHERE {}", Self::few(g, &t, max_id)),
        }
    }

    pub fn next(&mut self, g: &mut Gen) -> Write {
        let write = self.generate(g);
        Write {
            features: g.take_features(),
            ..write
        }
    }

    fn generate(&mut self, g: &mut Gen) -> Write {
        let plain = |sql: String| Write {
            sql,
            superuser: false,
            features: Vec::new(),
        };
        let roll = g.rng.below(100);
        if roll < 3 {
            let ti = g.rng.below(self.tables.len());
            return plain(format!(
                "BEGIN; TRUNCATE {} CASCADE; COMMIT;",
                self.tables[ti].table.name
            ));
        }
        if roll < 13
            && let Some(ddl) = self.ddl(g)
        {
            return plain(ddl);
        }
        let mut settings = String::new();
        let mut superuser = false;
        if g.rng.chance(20) {
            match g.rng.below(5) {
                0 if g.feature(Feature::FloatDigits) => {
                    settings = "SET extra_float_digits = 0; ".into()
                }
                1 => settings = "SET DateStyle = 'SQL, DMY'; ".into(),
                2 => settings = "SET IntervalStyle = 'iso_8601'; ".into(),
                3 => settings = "SET TimeZone = 'Asia/Kolkata'; ".into(),
                4 if g.feature(Feature::ReplicaRole) => {
                    settings = "SET session_replication_role = replica; SET ROLE app; ".into();
                    superuser = true;
                }
                _ => {}
            }
        }
        let n = 1 + g.rng.below(4);
        let mut statements: Vec<String> = (0..n).map(|_| self.dml(g, superuser)).collect();
        if g.rng.chance(10) {
            // Changes rolled back to a savepoint never reach the feed as committed.
            let at = g.rng.below(statements.len() + 1);
            let undone = self.dml(g, superuser);
            statements.insert(
                at,
                format!("SAVEPOINT sp; {undone}; ROLLBACK TO SAVEPOINT sp"),
            );
        }
        if g.rng.chance(3) {
            // A TRUNCATE amid a transaction's other changes.
            let ti = g.rng.below(self.tables.len());
            let at = g.rng.below(statements.len() + 1);
            statements.insert(
                at,
                format!("TRUNCATE {} CASCADE", self.tables[ti].table.name),
            );
        }
        let end = if g.rng.chance(10) {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        Write {
            sql: format!("{settings}BEGIN; {}; {end};", statements.join("; ")),
            superuser,
            features: Vec::new(),
        }
    }

    fn ddl(&mut self, g: &mut Gen) -> Option<String> {
        self.counter += 1;
        let k = self.counter;
        let ti = g.rng.below(self.tables.len());
        let name = self.tables[ti].table.name.clone();
        let bare = self.tables[ti].table.bare().to_string();
        let schema = if self.tables[ti].table.in_schema_s() {
            "s"
        } else if self.tables[ti].shadowed {
            "app"
        } else {
            "public"
        };
        let replace = |lt: &mut LiveTable| {
            lt.table.layout = Layout::Plain;
            lt.parts.clear();
            lt.kids.clear();
        };
        let op = g.rng.below(14);
        // Without the DDL trigger, docs/limits.md asks for PGCACHE.FLUSH after DDL that changes a
        // plain table's rows or shape (and pgcache answers views and functions, which such
        // DDL changes unseen, from PostgreSQL): only DDL of views and functions is drawn.
        if self.schema.no_ddl_trigger && !matches!(op, 5 | 7) {
            return None;
        }
        match op {
            0 if g.feature(Feature::RenameReplace) => {
                replace(&mut self.tables[ti]);
                Some(format!(
                    "BEGIN; ALTER TABLE {name} RENAME TO {bare}_old{k}; \
                     CREATE TABLE {name} (LIKE {schema}.{bare}_old{k} INCLUDING ALL); \
                     INSERT INTO {name} SELECT * FROM ONLY {schema}.{bare}_old{k} WHERE id % 2 = 1; \
                     SELECT pgcache_watch('{name}'); COMMIT;"
                ))
            }
            1 if schema == "s" && g.feature(Feature::SchemaRename) => {
                let mut sql =
                    format!("BEGIN; ALTER SCHEMA s RENAME TO s_old{k}; CREATE SCHEMA s; ");
                for lt in self.tables.iter_mut().filter(|lt| lt.table.in_schema_s()) {
                    let bare = lt.table.bare().to_string();
                    sql.push_str(&format!(
                        "CREATE TABLE s.{bare} (LIKE s_old{k}.{bare} INCLUDING ALL); \
                         INSERT INTO s.{bare} SELECT * FROM ONLY s_old{k}.{bare} WHERE id % 2 = 0; \
                         SELECT pgcache_watch('s.{bare}'); "
                    ));
                    replace(lt);
                }
                sql.push_str("COMMIT;");
                Some(sql)
            }
            2 if g.feature(Feature::RenameReplace) => {
                replace(&mut self.tables[ti]);
                Some(format!(
                    "BEGIN; CREATE SCHEMA aside{k}; ALTER TABLE {name} SET SCHEMA aside{k}; \
                     CREATE TABLE {name} (LIKE aside{k}.{bare} INCLUDING ALL); \
                     INSERT INTO {name} SELECT * FROM ONLY aside{k}.{bare} WHERE id % 3 <> 0; \
                     SELECT pgcache_watch('{name}'); COMMIT;"
                ))
            }
            3 if self.tables[ti].parts.is_empty() && g.feature(Feature::LateChild) => {
                let kid = format!("{name}_late{k}");
                let insert = self.insert(g, ti, &kid, false);
                self.tables[ti].kids.push(kid.clone());
                Some(format!(
                    "BEGIN; CREATE TABLE {kid} () INHERITS ({name}); {insert}; COMMIT;"
                ))
            }
            4 if self.tables[ti].table.layout != Layout::Plain
                && !self.tables[ti].parts.is_empty()
                && self.tables[ti].parts.len() < 3 =>
            {
                let (bounds, value) = match self.tables[ti].table.layout {
                    Layout::List => ("IN ('c')", "c"),
                    _ => ("FROM (20) TO (30)", "25"),
                };
                self.tables[ti].parts.push(value);
                let insert = self.insert(g, ti, &name, false);
                Some(format!(
                    "BEGIN; CREATE TABLE {name}_new{k} PARTITION OF {name} FOR VALUES {bounds}; {insert}; COMMIT;"
                ))
            }
            5 if !self.schema.views.is_empty() && g.feature(Feature::ReplaceView) => {
                let v = &self.schema.views[0];
                self.view_filters += 1;
                let filter =
                    ["id % 3 = 0", "id > 5", "TRUE", "id % 2 = 0", "id < 4"][self.view_filters % 5];
                Some(format!(
                    "BEGIN; CREATE OR REPLACE VIEW {} AS SELECT id, {} FROM {} WHERE {filter}; COMMIT;",
                    v.name, v.column.name, self.schema.tables[v.table].name
                ))
            }
            6 if schema == "public" && g.feature(Feature::SearchPathShadow) => {
                replace(&mut self.tables[ti]);
                self.tables[ti].shadowed = true;
                Some(format!(
                    "BEGIN; CREATE SCHEMA IF NOT EXISTS app; \
                     CREATE TABLE app.{bare} (LIKE public.{bare} INCLUDING ALL); \
                     INSERT INTO app.{bare} SELECT * FROM ONLY public.{bare} WHERE id % 3 = 0; \
                     SELECT pgcache_watch('app.{bare}'); COMMIT;"
                ))
            }
            7 if self.overloads.len() < 2 && g.feature(Feature::FunctionOverload) => {
                // A better match than pg_catalog's upper(text)/lower(text) for varchar and
                // char columns: statements calling them now call these.
                let (f, arg) = [("upper", "varchar"), ("lower", "bpchar")][self.overloads.len()];
                self.overloads.push(f);
                Some(format!(
                    "BEGIN; CREATE FUNCTION public.{f}({arg}) RETURNS text LANGUAGE sql IMMUTABLE \
                     AS $$ SELECT 'f:' || $1::text $$; COMMIT;"
                ))
            }
            8 if g.feature(Feature::AddColumn) => Some(format!(
                "BEGIN; ALTER TABLE {name} ADD COLUMN added{k} integer DEFAULT {k}; COMMIT;"
            )),
            9 | 10 => {
                // A column retyped (its values rewritten, JSON numbers become strings) or
                // dropped: `SELECT *` and the rows' shape change with no row written.
                let columns = &self.tables[ti].table.columns;
                // Keep one column to write (and the views' columns: PostgreSQL refuses
                // those changes, and the write only rolls back).
                if columns.len() < 2 {
                    return None;
                }
                let at = g.rng.below(columns.len());
                let column = columns[at].name.clone();
                if g.rng.chance(50) && g.feature(Feature::AlterColumnType) {
                    self.tables[ti].table.columns[at].ty = crate::schema::Ty::Text;
                    Some(format!(
                        "BEGIN; ALTER TABLE {name} ALTER COLUMN {column} TYPE text USING {column}::text; COMMIT;"
                    ))
                } else if g.feature(Feature::DropColumn) {
                    self.tables[ti].table.columns.remove(at);
                    Some(format!(
                        "BEGIN; ALTER TABLE {name} DROP COLUMN {column}; COMMIT;"
                    ))
                } else {
                    None
                }
            }
            11 if g.feature(Feature::DomainCheck) => {
                // What posint admits changes: casts to it in statements and parameters read
                // values differently; stored values stay.
                let bound = g.rng.pick(&["-10", "0", "1"]);
                Some(format!(
                    "BEGIN; ALTER DOMAIN posint DROP CONSTRAINT IF EXISTS posint_check; \
                     ALTER DOMAIN posint DROP CONSTRAINT IF EXISTS posint_bound; \
                     ALTER DOMAIN posint ADD CONSTRAINT posint_bound CHECK (VALUE >= {bound}) NOT VALID; \
                     COMMIT;"
                ))
            }
            12 if g.feature(Feature::EnumAddValue) => {
                // A new label, ordered among the others: comparisons of the old ones stay.
                let label = format!("m{k}");
                let place = g
                    .rng
                    .pick(&["BEFORE 'ok'", "AFTER 'happy'", "BEFORE 'sad'"]);
                Some(format!(
                    "BEGIN; ALTER TYPE mood ADD VALUE IF NOT EXISTS '{label}' {place}; COMMIT;"
                ))
            }
            13 if g.feature(Feature::RlsPolicy) => {
                // A row-level security policy that applies to the app role (the tables'
                // owner) too: what every read of the table returns changes, no row changed.
                let filter = g.rng.pick(&["id % 2 = 0", "id < 8", "TRUE", "id % 3 <> 1"]);
                Some(if g.rng.chance(25) {
                    format!(
                        "BEGIN; DROP POLICY IF EXISTS seen ON {name}; \
                         ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY; COMMIT;"
                    )
                } else {
                    // Writes stay allowed (a table without a policy for a command denies it).
                    format!(
                        "BEGIN; DROP POLICY IF EXISTS seen ON {name}; \
                         CREATE POLICY seen ON {name} FOR SELECT USING ({filter}); \
                         DROP POLICY IF EXISTS ins ON {name}; DROP POLICY IF EXISTS upd ON {name}; \
                         DROP POLICY IF EXISTS del ON {name}; \
                         CREATE POLICY ins ON {name} FOR INSERT WITH CHECK (true); \
                         CREATE POLICY upd ON {name} FOR UPDATE USING (true); \
                         CREATE POLICY del ON {name} FOR DELETE USING (true); \
                         ALTER TABLE {name} ENABLE ROW LEVEL SECURITY; \
                         ALTER TABLE {name} FORCE ROW LEVEL SECURITY; COMMIT;"
                    )
                })
            }
            _ => None,
        }
    }
}
