//! What only the catalog can tell of an admitted statement, learned once per statement on a
//! worker's connection: its parameters' types, the tables it reads, and that nothing it
//! uses makes its result change without a write to them (`reads` finds what it reads and
//! calls, through views, partitions, row-level security policies and SQL function bodies):
//! every function and operator IMMUTABLE (`now()` is STABLE: its result changes without
//! any write, so no change feed could ever drop a result that used it), no SQL value
//! function (`CURRENT_TIMESTAMP`, `CURRENT_USER`), no sample, no system column that moves
//! on its own (`ctid`), no text read as a date at run time (`'now'`), no unlogged table
//! where the feed is PostgreSQL's log.
//!
//! The statement is analysed by PostgreSQL itself: it becomes a temporary view (parameters
//! stood in by typed NULLs) inside a transaction that is rolled back, and the view's stored
//! query tree is what the statement resolved to, exactly as it would run. pg_depend cannot
//! be used for this: it records nothing about the objects initdb created (`now`, `int4eq`).

use crate::config::current;
use crate::error::{Error, Result};
use crate::model::ident::{QualifiedName, quote_ident};
use crate::model::key::KeyKind;
use crate::model::source::SourceId;
use crate::pg::errors::statement_error;
use crate::pg::pool::Connection;
use crate::pg::schema::{self, TableSchema};
use crate::query::node_tree::{self, Found};
use crate::query::reads::{self, Reads, Relation, Start, Via};
use crate::query::shape::{Count, Page};
use crate::query::statement::Parsed;
use crate::query::{clock, placeholders};
use pgcache_rules::kind::column_kind;
use pgcache_rules::precision::{COLLATIONS_SQL, Collations, Facts, ForeignKey, Needs, keyless};
use std::sync::Arc;

/// A parameter's type: how its text is cast, and how its value is canonicalised for the key.
#[derive(Debug, Clone)]
pub struct ParamType {
    /// The type as SQL spells it (`integer`, `public.mood`).
    pub cast: String,
    /// Its oid: runs prepare the statement with the types it was learned with.
    pub oid: u32,
    pub kind: KeyKind,
    /// Its input reads `now`, `today`, ... as the clock (`clock`): a value spelled so is
    /// refused.
    pub reads_clock: bool,
}

/// What the catalog says of a statement.
pub struct Learned {
    pub params: Vec<ParamType>,
    /// The tables whose changes can change its result, by name.
    pub tables: Vec<Arc<TableSchema>>,
    /// It reads plain tables only, as written (no view, partition or inheritance child, no
    /// row-level security): the rows its WHERE admits are the table's own.
    pub plain: bool,
    /// It calls aggregate or window functions: its rows are not a page of a table's.
    pub aggregates: bool,
    /// The functions it calls (through operators too) that are not PostgreSQL's own, shown:
    /// one may stand behind an operator or a function name its WHERE uses.
    pub own_functions: Vec<String>,
    /// The relations the `tables` allowlist must admit for it to be answered: every one it
    /// reads but the partitions and children of those and the tables their policies read.
    pub listed: Vec<QualifiedName>,
    /// DDL reaches the cache (pgcache's event trigger is installed and enabled).
    pub ddl_followed: bool,
}

const PARAM_TYPES_SQL: &str = concat!(
    "SELECT ",
    schema::cast_type_sql!("t", "t.oid"),
    ", \
       CASE WHEN t.typtype = 'd' THEN bt.typname::text ELSE t.typname::text END, \
       (CASE WHEN t.typtype = 'd' THEN bt.typtype ELSE t.typtype END) = 'e' \
     FROM pg_catalog.unnest($1::pg_catalog.oid[]) WITH ORDINALITY AS p(oid, n) \
     JOIN pg_catalog.pg_type t ON t.oid = p.oid \
     LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype \
     ORDER BY p.n"
);

const PROBE_VIEW: &str = "pg_temp.pgcache_admission";

/// Learns `parsed` from the catalog of `source`'s database (`client` is one of its
/// connections), or says why it cannot be cached.
pub fn learn(client: &mut Connection, source: SourceId, parsed: &Parsed) -> Result<Learned> {
    let params = param_types(client, parsed)?;
    refuse_clock_constants(client, parsed)?;
    let reads = analysed(client, parsed, &params)?;
    judge(source, &reads)?;
    let mut tables: Vec<Arc<TableSchema>> = Vec::new();
    for relation in reads.relations.iter().filter(|r| is_table(r)) {
        // Tables read only for what they do to the rows of others need no place in the
        // allowlist: their changes are followed, nothing of them is served.
        let table = match relation.via {
            Via::Child | Via::Policy => {
                schema::of(source).resolve_any(client, &relation.quoted())?
            }
            _ => schema::of(source).resolve(client, &relation.quoted())?,
        };
        if !tables.iter().any(|t| t.name == table.name) {
            tables.push(table);
        }
    }
    tables.sort_by(|a, b| a.key_prefix.cmp(&b.key_prefix));
    let plain = reads
        .relations
        .iter()
        .all(|r| r.via == Via::Named && r.relkind == "r" && !r.row_security);
    let mut listed: Vec<QualifiedName> = reads
        .relations
        .iter()
        .filter(|r| !matches!(r.via, Via::Child | Via::Policy))
        .map(|r| QualifiedName {
            schema: r.schema.clone(),
            name: r.name.clone(),
        })
        .collect();
    listed.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    listed.dedup();
    let own_functions = reads
        .functions
        .iter()
        .filter(|f| f.schema != "pg_catalog")
        .map(|f| f.shown())
        .collect();
    Ok(Learned {
        params,
        tables,
        plain,
        aggregates: reads.aggregates,
        own_functions,
        listed,
        ddl_followed: client
            .query(schema::DDL_FOLLOWED_SQL, &[])
            .map_err(|e| statement_error(&e))?
            .first()
            .is_some_and(|r| r.get(0)),
    })
}

fn is_table(relation: &Relation) -> bool {
    matches!(relation.relkind.as_str(), "r" | "p")
}

/// Refuses what `reads` holds that a result cannot depend on and stay exact: anything but
/// tables and views outside the system schemas, an unlogged table where the feed is the
/// log, a function or operator that is not IMMUTABLE (or one whose body cannot be read),
/// an SQL value function, a sample, a system column that moves on its own, text read as a
/// date at run time.
fn judge(source: SourceId, reads: &Reads) -> Result<()> {
    for relation in &reads.relations {
        judge_relation(source, relation)?;
    }
    for (origin, found) in &reads.trees {
        judge_tree(origin, found)?;
    }
    if let Some((origin, type_name)) = reads.clock_casts.first() {
        return Err(Error::invalid(format!(
            "{} converts text to {type_name} when it runs, and PostgreSQL reads 'now', \
             'today', 'tomorrow' and 'yesterday' there as the current time: a cached answer \
             would outlive it; compare with a parameter of that type instead",
            capitalised(origin)
        )));
    }
    if let Some((origin, word)) = reads.clock_literals.first() {
        return Err(Error::invalid(format!(
            "{origin} holds the constant '{word}', which PostgreSQL reads as the current time \
             at each call: its result changes without a write; pass the time as an argument"
        )));
    }
    for function in &reads.functions {
        refuse_unless_immutable(function)?;
    }
    Ok(())
}

/// `the statement ...` as the start of a sentence.
fn capitalised(origin: &str) -> String {
    let mut chars = origin.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// ` (in view "public"."v")`, or nothing for the statement itself.
fn where_found(origin: &str) -> String {
    if origin == "the statement" {
        String::new()
    } else {
        format!(" (in {origin})")
    }
}

fn judge_tree(origin: &str, found: &Found) -> Result<()> {
    if let Some(&op) = found.value_functions.iter().next() {
        return Err(Error::invalid(format!(
            "{} is STABLE{}: its result changes without a write; pass the value as a \
             parameter",
            node_tree::value_function_name(op),
            where_found(origin)
        )));
    }
    if let Some(&attno) = found
        .system_columns
        .iter()
        .find(|&&a| !node_tree::system_column_follows_changes(a))
    {
        return Err(Error::invalid(format!(
            "the system column {}{} changes without a change the feed reports (VACUUM FULL, \
             CLUSTER and row locks move it); read the primary key instead",
            node_tree::system_column_name(attno),
            where_found(origin)
        )));
    }
    if found.table_sample {
        return Err(Error::invalid(format!(
            "TABLESAMPLE{} picks rows by where they are stored, which VACUUM FULL and CLUSTER \
             change without a change the feed reports, REPEATABLE or not",
            where_found(origin)
        )));
    }
    if let Some(label) = found.other.iter().next() {
        return Err(Error::invalid(format!(
            "{label}{} reads something other than rows",
            where_found(origin)
        )));
    }
    Ok(())
}

fn judge_relation(source: SourceId, relation: &Relation) -> Result<()> {
    let qualified = relation.quoted();
    if schema::is_system_schema(&relation.schema) {
        return Err(Error::invalid(format!(
            "the statement reads {qualified}; pgcache serves no system catalogs"
        )));
    }
    match relation.relkind.as_str() {
        "r" | "p" => {
            if relation.unlogged && !current::of(source).feed_is_notify() {
                return Err(Error::invalid(format!(
                    "the statement reads the unlogged table {qualified}, whose changes \
                     PostgreSQL does not write to its log: the replication feed never sees \
                     them (make it a logged table, ALTER TABLE ... SET LOGGED, or use notify \
                     mode)"
                )));
            }
            Ok(())
        }
        "v" => Ok(()),
        "m" => Err(Error::invalid(format!(
            "the statement reads the materialized view {qualified}, which REFRESH \
             changes without any change the feed reports; query its tables instead"
        ))),
        "f" => Err(Error::invalid(format!(
            "the statement reads the foreign table {qualified}, whose changes no \
             change feed of this database reports"
        ))),
        "S" => Err(Error::invalid(format!(
            "the statement reads the sequence {qualified}, which nextval() moves without a \
             change the feed reports"
        ))),
        _ => Err(Error::invalid(format!(
            "the statement reads {qualified}, which is not a table or view"
        ))),
    }
}

fn refuse_unless_immutable(function: &reads::Function) -> Result<()> {
    let shown = function.shown();
    let kind = match function.volatility.as_str() {
        "i" => {
            return match &function.unread {
                None => Ok(()),
                Some(why) => Err(Error::invalid(format!(
                    "{shown} is an IMMUTABLE SQL function whose body pgcache cannot read to \
                     see what it reads and calls ({why}); its result may change without a \
                     write to the statement's tables"
                ))),
            };
        }
        "s" => "STABLE",
        _ => "VOLATILE",
    };
    Err(Error::invalid(format!(
        "{shown} is {kind}: its result changes without a write; pass the value as a \
         parameter (only IMMUTABLE functions and operators can be cached)"
    )))
}

/// The parameters' types, as PostgreSQL infers them from the statement.
fn param_types(client: &mut Connection, parsed: &Parsed) -> Result<Vec<ParamType>> {
    let oids = prepared_param_types(client, &parsed.canonical)?;
    if oids.len() != parsed.params {
        return Err(Error::invalid(format!(
            "the statement takes {} parameters but PostgreSQL sees {}",
            parsed.params,
            oids.len()
        )));
    }
    let rows = client
        .query(PARAM_TYPES_SQL, &[&oids])
        .map_err(|e| statement_error(&e))?;
    let clocked = reads::clock_types(client, &oids)?;
    Ok(rows
        .iter()
        .zip(&oids)
        .map(|(row, oid)| {
            let type_name: String = row.get(1);
            ParamType {
                cast: row.get(0),
                oid: *oid,
                kind: column_kind(&type_name, row.get(2)),
                reads_clock: clocked.iter().any(|(t, _)| t == oid),
            }
        })
        .collect())
}

/// The types PostgreSQL infers for the parameters of `sql`.
fn prepared_param_types(client: &mut Connection, sql: &str) -> Result<Vec<u32>> {
    let prepared = client.prepare(sql).map_err(|e| statement_error(&e))?;
    Ok(prepared.params().iter().map(|t| t.oid()).collect())
}

/// Refuses a statement whose string constants PostgreSQL reads as the clock: each constant
/// holding a clock word stands in as a parameter, and the type PostgreSQL infers for it
/// says whether its input reads the word as the time (`'now'::timestamptz`, `at > 'today'`)
/// or as text (`note = 'today'`). A constant whose parameter gets no type (alone in a
/// SELECT list, say) is text if a text parameter may stand there.
fn refuse_clock_constants(client: &mut Connection, parsed: &Parsed) -> Result<()> {
    let Some(constants) = &parsed.clock_literals else {
        return Ok(());
    };
    let (canonical, params) = (&parsed.canonical, parsed.params);
    let all: Vec<usize> = (0..constants.spans.len()).collect();
    let typed: Vec<(usize, u32)> = match prepared_param_types(
        client,
        &constants.with_parameters(canonical, params, &all, ""),
    ) {
        Ok(oids) => all
            .iter()
            .zip(oids.get(params..).unwrap_or_default())
            .map(|(&i, &oid)| (i, oid))
            .collect(),
        Err(_) => {
            let mut typed = Vec::new();
            for i in all {
                let alone = constants.with_parameters(canonical, params, &[i], "");
                if let Ok(oids) = prepared_param_types(client, &alone) {
                    typed.extend(oids.get(params).map(|&oid| (i, oid)));
                    continue;
                }
                let as_text = constants.with_parameters(canonical, params, &[i], "::text");
                if prepared_param_types(client, &as_text).is_err() {
                    return Err(Error::invalid(clock::refusal(
                        &format!("the statement's constant '{}'", constants.spans[i].2),
                        constants.spans[i].2,
                    )));
                }
            }
            typed
        }
    };
    let oids: Vec<u32> = typed.iter().map(|(_, oid)| *oid).collect();
    let clocked = reads::clock_types(client, &oids)?;
    for (i, oid) in typed {
        if let Some((_, type_name)) = clocked.iter().find(|(t, _)| *t == oid) {
            let word = constants.spans[i].2;
            return Err(Error::invalid(clock::refusal(
                &format!("the statement's constant '{word}' (a {type_name})"),
                word,
            )));
        }
    }
    Ok(())
}

/// What the statement reads and calls, as PostgreSQL resolved it: from a probe view of it
/// (parameters stood in by typed NULLs) in a transaction rolled back.
fn analysed(client: &mut Connection, parsed: &Parsed, params: &[ParamType]) -> Result<Reads> {
    let body = placeholders::replace_numbered(&parsed.canonical, |n| {
        format!("(NULL::{})", params[n - 1].cast)
    })?;
    let create = format!("CREATE TEMPORARY VIEW {PROBE_VIEW} AS SELECT 1 FROM ({body}) AS q");
    client
        // Read-write, for the probe view (sessions are read-only by default); rolled back.
        .batch_execute("BEGIN READ WRITE")
        .map_err(|e| statement_error(&e))?;
    let found = client
        .batch_execute(&create)
        .map_err(|e| statement_error(&e))
        .and_then(|()| {
            let probe: u32 = client
                .query(
                    &format!("SELECT '{PROBE_VIEW}'::pg_catalog.regclass::pg_catalog.oid"),
                    &[],
                )
                .map_err(|e| statement_error(&e))?
                .first()
                .map(|r| r.get(0))
                .ok_or_else(|| Error::internal("the probe view has no oid"))?;
            reads::walk(
                client,
                Start {
                    relations: Vec::new(),
                    probe: Some(probe),
                    functions: true,
                },
            )
        });
    // Nothing of the probe outlives it, whatever happened.
    let rolled_back = client.batch_execute("ROLLBACK");
    let reads = found?;
    rolled_back.map_err(|e| statement_error(&e))?;
    Ok(reads)
}

/// The tables behind the relations `parsed` names (through views, partitions and
/// policies), without analysing it: what a user's permissions are checked against before
/// anything else is asked of PostgreSQL. Names that resolve to nothing are left out (the
/// statement's analysis says what is wrong with them).
pub fn named_tables(client: &mut Connection, parsed: &Parsed) -> Result<Vec<QualifiedName>> {
    if parsed.named.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT pg_catalog.to_regclass(n)::pg_catalog.oid FROM pg_catalog.unnest($1::text[]) AS n",
            &[&parsed.named],
        )
        .map_err(|e| statement_error(&e))?;
    let oids: Vec<u32> = rows
        .iter()
        .filter_map(|r| r.get::<_, Option<u32>>(0))
        .collect();
    let reads = reads::walk(
        client,
        Start {
            relations: oids,
            probe: None,
            functions: false,
        },
    )?;
    Ok(reads
        .relations
        .iter()
        .filter(|r| is_table(r) && !schema::is_system_schema(&r.schema))
        .filter(|r| !matches!(r.via, Via::Child | Via::Policy))
        .map(|r| QualifiedName {
            schema: r.schema.clone(),
            name: r.name.clone(),
        })
        .collect())
}

/// The statement PGCACHE.QUERY runs for `statement` (a canonical one, or a page's with its
/// ties broken, `shape::tie_broken`): its result as one JSON array of row objects (typed as
/// `row_to_json` types them, columns in the SELECT list's order) and its row count.
/// Its parameters stay `$n`, prepared with the types the statement was learned with
/// (`Statement::param_oids`) and sent as text (`pg::text_value`): the planner sees their
/// values, as it sees a driver's.
pub fn run_sql(statement: &str, members: Option<&Members>) -> Result<String> {
    Ok(format!(
        "SELECT {RESULT_JSON}, pg_catalog.count(*){} FROM ({statement}) AS {ROWS}",
        members_column(members, |n| format!("${n}"))?
    ))
}

/// What the statement's result is named in the SQL around it.
const ROWS: &str = "pgcache_rows";

/// The statement's rows (`ROWS`) as one JSON array. A whole row is `ROWS.*`, never the bare
/// name: PostgreSQL reads a bare name as a column first, and the statement's columns may be
/// called anything (a `ROW(...) AS pgcache_rows` would be converted instead of the row).
const RESULT_JSON: &str = "COALESCE('[' || pg_catalog.string_agg(pg_catalog.row_to_json(pgcache_rows.*)::text, ',') || ']', '[]')";

/// Most members (rows the WHERE admits) a row-precise result may be built from and still be
/// cached.
pub const MAX_MEMBERS: usize = 10_000;

/// Most rows (`offset + limit`) a page may be built from and be cached: reading them all
/// with each miss of a deep page would cost more than the cache saves.
pub const MAX_PAGE_ROWS: usize = 1_000;

/// How a row-precise statement's members are fetched with its result: the rows its WHERE
/// admits (`Shape::candidates_sql`), by primary key; for a page, the first `offset + limit`
/// of them in its order, each with its sort key; for a join, each side's rows in them.
pub struct Members<'a> {
    pub candidates_sql: &'a str,
    pub sides: Vec<MemberSide<'a>>,
    pub page: Option<&'a Page>,
}

/// A side's members: how the statement refers to its table, the table, and for a
/// subquery's side the rows its WHERE admits (`Side::own_rows`).
pub struct MemberSide<'a> {
    pub reference: &'a str,
    pub table: &'a TableSchema,
    pub own_rows: Option<&'a str>,
}

/// `, (<the members' keys as a JSON array of objects>)`, at most `MAX_MEMBERS` + 1 of them
/// (one more says there are too many), or nothing without `members`; for a page, a JSON
/// array of `[key, [sort key values as text]]` in the page's order; for a join, one array
/// of keys per side, or the JSON string `"too many"`. In the same statement as the
/// result: one snapshot for both.
fn members_column(members: Option<&Members>, bind: impl Fn(usize) -> String) -> Result<String> {
    let Some(members) = members else {
        return Ok(String::new());
    };
    let column = match members.sides.as_slice() {
        [side] => one_table_members(members, side.table),
        sides => joined_members(members.candidates_sql, sides)?,
    };
    placeholders::replace_numbered(&column, bind)
}

/// The members column of a statement over one table: none for a keyless table, whose rows
/// have nothing to name them by (`precision::keyless`), and whose pages are not bounded.
fn one_table_members(members: &Members, table: &TableSchema) -> String {
    if keyless(table) {
        return ", NULL::text".into();
    }
    let key: Vec<String> = table
        .primary_key
        .iter()
        .map(|c| format!("{}, m.{}", quote_literal(c), quote_ident(c)))
        .collect();
    let key = format!("pg_catalog.json_build_object({})", key.join(", "));
    let most = MAX_MEMBERS + 1;
    match members.page {
        None => format!(
            ", (SELECT pg_catalog.json_agg({key})::text FROM ({} LIMIT {most}) AS m)",
            members.candidates_sql
        ),
        Some(page) => {
            let column = |c: &str| format!("m.{}", quote_ident(c));
            let values: Vec<String> = page
                .keys
                .iter()
                .map(|(c, ..)| format!("{}::text", column(c)))
                .collect();
            let order: Vec<String> = page
                .keys
                .iter()
                .map(|(c, descending, nulls_first)| {
                    format!(
                        "{} {} NULLS {}",
                        column(c),
                        if *descending { "DESC" } else { "ASC" },
                        if *nulls_first { "FIRST" } else { "LAST" }
                    )
                })
                .collect();
            let offset = page.offset.as_ref().map_or("0".to_string(), Count::sql);
            let rows = format!(
                "COALESCE({offset}, 0) + COALESCE({}, {most})",
                page.limit.sql()
            );
            // A page deeper than `MAX_PAGE_ROWS` is not cached: its members (every row up
            // to its end) are not read (a JSON string, not an array, says so), so its miss
            // costs what the page does.
            format!(
                ", (SELECT CASE WHEN {rows} > {MAX_PAGE_ROWS} THEN '\"too many\"' ELSE \
                 (SELECT pg_catalog.json_agg(pg_catalog.json_build_array({key}, \
                 pg_catalog.json_build_array({})) ORDER BY {})::text \
                 FROM ({} LIMIT {rows}) AS m) END)",
                values.join(", "),
                order.join(", "),
                page.ordered_sql,
            )
        }
    }
}

/// The members column of a join (or of a statement with subqueries): the join's rows (at
/// most `MAX_MEMBERS` of them) with each side's primary key, and each side's distinct keys
/// (none where a left join found no row: its key is NULL, as a primary key's never is); a
/// subquery's side's keys are read from its own rows (NULL past `MAX_MEMBERS`, which makes
/// the whole too many). A keyless table's side has none (`precision::keyless`).
fn joined_members(candidates_sql: &str, sides: &[MemberSide]) -> Result<String> {
    let most = MAX_MEMBERS + 1;
    let mut targets = Vec::new();
    let mut keys = Vec::new();
    for (i, side) in sides.iter().enumerate() {
        if keyless(side.table) {
            keys.push("'[]'::jsonb".to_string());
            continue;
        }
        let pairs: Vec<String> = side
            .table
            .primary_key
            .iter()
            .enumerate()
            .map(|(j, c)| format!("{}, m.pgcache_m{i}_{j}", quote_literal(c)))
            .collect();
        let key = format!("pg_catalog.jsonb_build_object({})", pairs.join(", "));
        let columns = side.table.primary_key.iter().enumerate();
        match side.own_rows {
            None => {
                for (j, c) in columns {
                    targets.push(format!(
                        "{}.{} AS pgcache_m{i}_{j}",
                        quote_ident(side.reference),
                        quote_ident(c)
                    ));
                }
                keys.push(format!(
                    "COALESCE(pg_catalog.jsonb_agg(DISTINCT {key}) \
                     FILTER (WHERE m.pgcache_m{i}_0 IS NOT NULL), '[]')"
                ));
            }
            Some(rows) => {
                let own: Vec<String> = columns
                    .map(|(j, c)| format!("s.{} AS pgcache_m{i}_{j}", quote_ident(c)))
                    .collect();
                keys.push(format!(
                    "(SELECT CASE WHEN pg_catalog.count(*) > {MAX_MEMBERS} THEN NULL ELSE \
                     COALESCE(pg_catalog.jsonb_agg(DISTINCT {key}), '[]') END \
                     FROM (SELECT {} FROM ({rows}) AS s LIMIT {most}) AS m)",
                    own.join(", ")
                ));
            }
        }
    }
    // A set operation: every side is a branch, read on its own.
    if sides.iter().all(|side| side.own_rows.is_some()) {
        return Ok(format!(
            ", (SELECT pg_catalog.json_build_array({})::text)",
            keys.join(", ")
        ));
    }
    let from = candidates_sql
        .strip_prefix("SELECT *")
        .ok_or_else(|| Error::internal("the join's rows are not spelled SELECT * ..."))?;
    Ok(format!(
        ", (SELECT CASE WHEN pg_catalog.count(*) > {MAX_MEMBERS} THEN '\"too many\"' ELSE \
         pg_catalog.json_build_array({})::text END \
         FROM (SELECT {}{from} LIMIT {most}) AS m)",
        keys.join(", "),
        targets.join(", "),
    ))
}

/// `base`, or `base` with a number after it, such that it occurs nowhere in `text` (in any
/// case): no identifier of `text` can be it.
fn unused_name(text: &str, base: &str) -> String {
    let lower = text.to_lowercase();
    (0..)
        .map(|n| {
            if n == 0 {
                base.to_string()
            } else {
                format!("{base}_{n}")
            }
        })
        .find(|name| !lower.contains(name.as_str()))
        .expect("a text holds finitely many names")
}

/// `'text'` as an SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The statement PGCACHE.QUERY runs for several parameter sets of `parsed` at once (misses
/// queued together): one row per set, in order, each the result and row count `run_sql`
/// gives for that set. The sets arrive as one text array per parameter; each set is joined
/// LATERALly to the statement. None for a statement without parameters (its misses are one
/// result, coalesced).
pub fn batch_sql(
    statement: &str,
    params: &[ParamType],
    members: Option<&Members>,
) -> Result<Option<String>> {
    if params.is_empty() {
        return Ok(None);
    }
    // The statement sits inside the LATERAL subquery, where a name of its own would capture
    // a reference to the parameter sets (`... AS pgcache_params`): their alias is one that
    // appears nowhere in its text.
    let sets = unused_name(statement, "pgcache_params");
    // Its columns too: a bare column name is looked up in every enclosing query.
    let bind = |n: usize| format!("({sets}.{sets}_v{n}::text::{})", params[n - 1].cast);
    let body = placeholders::replace_numbered(statement, bind)?;
    let members = members_column(members, bind)?;
    // One unnest per parameter in ROWS FROM: the form `unnest(a, b)` is PostgreSQL's only
    // when unqualified, and qualified it names a function of two arrays that does not exist.
    let arrays: Vec<String> = (1..=params.len())
        .map(|n| format!("pg_catalog.unnest(${n}::text[])"))
        .collect();
    let columns: Vec<String> = (1..=params.len()).map(|n| format!("{sets}_v{n}")).collect();
    Ok(Some(format!(
        "SELECT pgcache_results.* \
         FROM ROWS FROM ({}) WITH ORDINALITY AS {sets}({}, {sets}_i), \
         LATERAL (SELECT {RESULT_JSON} AS json, \
                         pg_catalog.count(*) AS n{members} FROM ({body}) AS {ROWS}) AS pgcache_results \
         ORDER BY {sets}.{sets}_i",
        arrays.join(", "),
        columns.join(", ")
    )))
}

/// What the rules need the catalog to tell of a statement's tables before they decide its
/// precision (`pgcache_rules::precision::needs`): each table's columns' collations, and the
/// validated foreign keys between the pairs of tables that may bring each other's rows in.
pub fn precision_facts(
    client: &mut Connection,
    needs: &Needs<'_, Arc<TableSchema>>,
) -> Result<Facts> {
    let mut facts = Facts::default();
    for table in &needs.tables {
        let mut collations = Collations::default();
        for row in client
            .query(COLLATIONS_SQL, &[&table.sql_name])
            .map_err(|e| statement_error(&e))?
        {
            collations.add(row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        }
        facts
            .collations
            .insert(table.key_prefix.clone(), collations);
    }
    for (referencing, referenced) in &needs.foreign_keys {
        let rows = client
            .query(
                FOREIGN_KEYS_SQL,
                &[&referencing.sql_name, &referenced.sql_name],
            )
            .map_err(|e| statement_error(&e))?;
        for row in rows {
            let from: Vec<String> = row.get(0);
            let to: Vec<String> = row.get(1);
            facts.foreign_keys.push(ForeignKey {
                referencing: referencing.key_prefix.clone(),
                referenced: referenced.key_prefix.clone(),
                pairs: from.into_iter().zip(to).collect(),
            });
        }
    }
    Ok(facts)
}

/// A table's validated foreign keys to another, their columns paired in order; none whose
/// triggers (which enforce it) are disabled, and none in a database that subscribes to a
/// publication (its apply workers write as `session_replication_role = replica`, which
/// fires no such trigger).
const FOREIGN_KEYS_SQL: &str = "SELECT \
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY AS k(n, i) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n \
             ORDER BY k.i), \
       ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(c.confkey) WITH ORDINALITY AS k(n, i) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n \
             ORDER BY k.i) \
     FROM pg_catalog.pg_constraint c \
     WHERE c.contype = 'f' AND c.convalidated \
       AND c.conrelid = $1::text::pg_catalog.regclass \
       AND c.confrelid = $2::text::pg_catalog.regclass \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t \
                       WHERE t.tgconstraint = c.oid AND t.tgenabled = 'D') \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s \
                       JOIN pg_catalog.pg_database d ON d.oid = s.subdbid \
                       WHERE d.datname = pg_catalog.current_database())";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::statement::parse;

    #[test]
    fn the_parameter_sets_take_a_name_the_statement_does_not_use() {
        assert_eq!(unused_name("SELECT 1", "pgcache_params"), "pgcache_params");
        assert_eq!(
            unused_name("SELECT * FROM t AS PGCACHE_PARAMS", "pgcache_params"),
            "pgcache_params_1"
        );
        let parsed = parse(
            "SELECT pgcache_v1 AS v, id FROM (SELECT 1 AS pgcache_v1, id FROM users) \
             AS pgcache_params WHERE id = $1",
        )
        .unwrap();
        let params = [ParamType {
            cast: "integer".into(),
            oid: 23,
            kind: KeyKind::Integer {
                min: i32::MIN.into(),
                max: i32::MAX.into(),
            },
            reads_clock: false,
        }];
        let sql = batch_sql(&parsed.canonical, &params, None)
            .unwrap()
            .unwrap();
        assert!(
            sql.contains("AS pgcache_params_1(pgcache_params_1_v1, pgcache_params_1_i)"),
            "{sql}"
        );
        assert!(
            sql.contains("(pgcache_params_1.pgcache_params_1_v1::text::integer)"),
            "{sql}"
        );
        let parsed = parse("SELECT pgcache_i FROM users AS pgcache_i WHERE id = $1").unwrap();
        let sql = batch_sql(&parsed.canonical, &params, None)
            .unwrap()
            .unwrap();
        assert!(sql.contains("pgcache_params_i)"), "{sql}");
    }
}
