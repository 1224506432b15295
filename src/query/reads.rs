//! What a statement reads and calls, from the catalog: the relations it reads through views
//! (their rewrite rules), inheritance children and partitions, and the row-level security
//! policies that apply to pgcache's role; the functions it calls, however it calls them
//! (operators, argument defaults, domains' CHECK constraints, window frames), and what the
//! bodies of the SQL functions PostgreSQL would run read and call in turn. Every one of
//! those is a stored query tree (`node_tree`); a SQL function written as a string is
//! compiled into one first (a temporary `BEGIN ATOMIC` copy, in the caller's transaction,
//! which rolls it back). Nothing of the statement runs.

use crate::error::{Error, Result};
use crate::model::ident::quote_ident;
use crate::pg::errors::statement_error;
use crate::pg::pool::Connection;
use crate::pg::schema;
use crate::query::node_tree::{self, Found};
use crate::query::{clock, statement};
use std::collections::{BTreeSet, HashMap};

/// How a relation is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The statement names it.
    Named,
    /// Through a view.
    View,
    /// As an inheritance child or partition of a relation read.
    Child,
    /// A row-level security policy of a relation read reads it.
    Policy,
    /// A SQL function the statement calls reads it.
    Function,
}

impl Via {
    /// How strongly the statement depends on a relation reached this way: a relation
    /// reached several ways counts as reached the strongest (a table a policy reads that the
    /// statement also reads through a view is read as data: the allowlist and permissions
    /// hold for it).
    fn rank(self) -> u8 {
        match self {
            Via::Named => 4,
            Via::View | Via::Function => 3,
            Via::Child => 1,
            Via::Policy => 0,
        }
    }
}

/// A relation read.
#[derive(Debug, Clone)]
pub struct Relation {
    oid: u32,
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`.
    pub relkind: String,
    /// UNLOGGED: its changes are not in PostgreSQL's log.
    pub unlogged: bool,
    /// Row-level security applies to pgcache's role on it.
    pub row_security: bool,
    pub via: Via,
}

impl Relation {
    /// `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// A function called.
#[derive(Debug, Clone)]
pub struct Function {
    pub schema: String,
    pub name: String,
    /// `pg_proc.provolatile`.
    pub volatility: String,
    /// Why its body could not be read, for an IMMUTABLE SQL function whose body decides
    /// what it depends on.
    pub unread: Option<String>,
}

impl Function {
    /// `name()` for PostgreSQL's own, `"schema"."name"()` for the rest.
    pub fn shown(&self) -> String {
        if self.schema == "pg_catalog" {
            format!("{}()", self.name)
        } else {
            format!(
                "{}.{}()",
                quote_ident(&self.schema),
                quote_ident(&self.name)
            )
        }
    }
}

/// Everything read and called, and what each stored tree uses, by where it was found.
#[derive(Debug, Default)]
pub struct Reads {
    pub relations: Vec<Relation>,
    pub functions: Vec<Function>,
    /// Each tree's findings, by what it belongs to (`the statement`, `view "public"."v"`).
    pub trees: Vec<(String, Found)>,
    /// Aggregate or window functions are called.
    pub aggregates: bool,
    /// Types the statement converts text to at run time whose input reads the clock, by
    /// where the conversion is.
    pub clock_casts: Vec<(String, String)>,
    /// Clock words in the string constants of SQL function bodies compiled at each call.
    pub clock_literals: Vec<(String, &'static str)>,
}

/// What the findings of a row-level security policy's tree are said to be in, before its
/// table's name.
pub const POLICY_ORIGIN: &str = "a row-level security policy of ";

/// Most relations and functions one statement may bring in.
const MAX_OBJECTS: usize = 20_000;

/// What to start from.
pub struct Start {
    /// Relations the statement reads directly (or the probe view standing for it).
    pub relations: Vec<u32>,
    /// The probe view: its tree is the statement's, itself no relation read.
    pub probe: Option<u32>,
    /// Follow functions too (else relations alone: what permissions are checked against).
    pub functions: bool,
}

const RELATIONS_SQL: &str = "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, \
       c.relpersistence = 'u', \
       c.relrowsecurity AND pg_catalog.row_security_active(c.oid), \
       (SELECT pg_catalog.string_agg(w.ev_action::text, ' ') FROM pg_catalog.pg_rewrite w \
         WHERE w.ev_class = c.oid AND w.ev_type = '1'), \
       (SELECT pg_catalog.string_agg(p.polqual::text, ' ') FROM pg_catalog.pg_policy p \
         WHERE p.polrelid = c.oid AND p.polcmd IN ('r', '*') AND p.polqual IS NOT NULL \
           AND c.relrowsecurity AND pg_catalog.row_security_active(c.oid) \
           AND EXISTS (SELECT 1 FROM pg_catalog.unnest(p.polroles) AS r(oid) \
                        WHERE r.oid = 0 OR pg_catalog.pg_has_role(r.oid, 'MEMBER'))), \
       ARRAY(SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.oid = ANY($1::pg_catalog.oid[])";

const FUNCTIONS_SQL: &str = "SELECT p.oid, n.nspname::text, p.proname::text, \
       p.provolatile::text, l.lanname::text, pg_catalog.to_jsonb(p) ->> 'prosqlbody', p.prosrc, \
       (SELECT pg_catalog.substr(s, 13) FROM pg_catalog.unnest(p.proconfig) AS s \
         WHERE s LIKE 'search\\_path=%'), \
       p.prokind = 'a' AND n.nspname NOT IN ('pg_catalog', 'information_schema'), \
       (SELECT ARRAY[a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn, \
               a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn]::pg_catalog.oid[] \
          FROM pg_catalog.pg_aggregate a WHERE a.aggfnoid = p.oid), \
       p.proargdefaults::text \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
     WHERE p.oid = ANY($1::pg_catalog.oid[])";

const OPERATORS_SQL: &str = "SELECT o.oprcode::pg_catalog.oid FROM pg_catalog.pg_operator o \
     WHERE o.oid = ANY($1::pg_catalog.oid[]) AND o.oprcode <> 0";

/// The CHECK constraints of the domains given and of the domains they are built on.
const DOMAINS_SQL: &str = "WITH RECURSIVE d(oid) AS ( \
         SELECT pg_catalog.unnest($1::pg_catalog.oid[]) \
       UNION \
         SELECT t.typbasetype FROM d JOIN pg_catalog.pg_type t ON t.oid = d.oid \
         WHERE t.typbasetype <> 0 \
     ) \
     SELECT pg_catalog.format_type(c.contypid, NULL), c.conbin::text \
     FROM d JOIN pg_catalog.pg_constraint c ON c.contypid = d.oid WHERE c.conbin IS NOT NULL";

/// Of the types given, those built on a type whose input reads the clock (`clock`): as a
/// domain, an array's element, a range's subtype, a multirange's range, a composite's
/// attribute.
const CLOCK_TYPES_SQL: &str = "WITH RECURSIVE t(root, oid) AS ( \
         SELECT x, x FROM pg_catalog.unnest($1::pg_catalog.oid[]) AS x \
       UNION \
         SELECT t.root, s.oid FROM t JOIN pg_catalog.pg_type ty ON ty.oid = t.oid, \
         LATERAL ( \
             SELECT ty.typbasetype WHERE ty.typbasetype <> 0 \
           UNION ALL SELECT ty.typelem WHERE ty.typelem <> 0 \
           UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = ty.oid \
           UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = ty.oid \
           UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a \
             WHERE ty.typrelid <> 0 AND a.attrelid = ty.typrelid AND a.attnum > 0 \
               AND NOT a.attisdropped \
         ) AS s(oid) \
     ) \
     SELECT DISTINCT t.root, pg_catalog.format_type(t.root, NULL) FROM t \
     WHERE t.oid = ANY($2::pg_catalog.oid[])";

/// The types of `types` whose input reads the clock, by oid, spelled as SQL spells them.
pub fn clock_types(client: &mut Connection, types: &[u32]) -> Result<Vec<(u32, String)>> {
    if types.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(CLOCK_TYPES_SQL, &[&types, &clock::CLOCK_TYPES.to_vec()])
        .map_err(|e| statement_error(&e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Work still to do.
#[derive(Default)]
struct Queue {
    relations: Vec<(u32, Via)>,
    functions: Vec<u32>,
    operators: Vec<u32>,
    domains: Vec<u32>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.relations.is_empty()
            && self.functions.is_empty()
            && self.operators.is_empty()
            && self.domains.is_empty()
    }
}

/// Everything `start` reads and calls.
pub fn walk(client: &mut Connection, start: Start) -> Result<Reads> {
    let mut walk = Walk {
        reads: Reads::default(),
        seen: BTreeSet::new(),
        queue: Queue::default(),
        best: HashMap::new(),
        follow_functions: start.functions,
        text_inputs: Vec::new(),
    };
    for oid in start.probe.iter().chain(&start.relations) {
        walk.queue.relations.push((*oid, Via::Named));
    }
    while !walk.queue.is_empty() {
        if walk.seen.len() > MAX_OBJECTS {
            return Err(Error::invalid(format!(
                "the statement reads and calls more than {MAX_OBJECTS} relations and \
                 functions (through views, policies and function bodies); pgcache does not \
                 cache it"
            )));
        }
        let queue = std::mem::take(&mut walk.queue);
        walk.relations(client, queue.relations, start.probe)?;
        walk.operators(client, queue.operators)?;
        walk.functions(client, queue.functions)?;
        walk.domains(client, queue.domains)?;
    }
    let text_inputs = std::mem::take(&mut walk.text_inputs);
    let types: Vec<u32> = text_inputs.iter().map(|(_, t)| *t).collect();
    let clocked = clock_types(client, &types)?;
    for (origin, oid) in text_inputs {
        if let Some((_, name)) = clocked.iter().find(|(t, _)| *t == oid) {
            walk.reads.clock_casts.push((origin, name.clone()));
        }
    }
    Ok(walk.reads)
}

struct Walk {
    reads: Reads,
    /// Objects met, by kind and oid.
    seen: BTreeSet<(u8, u32)>,
    queue: Queue,
    /// The strongest way each relation met was reached.
    best: HashMap<u32, Via>,
    follow_functions: bool,
    /// Types text is converted to at run time, by where.
    text_inputs: Vec<(String, u32)>,
}

const RELATION: u8 = 0;
const FUNCTION: u8 = 1;
const OPERATOR: u8 = 2;
const DOMAIN: u8 = 3;

impl Walk {
    /// Notes a tree's findings, found in `origin`; relations it reads are reached `via`.
    fn tree(&mut self, origin: String, text: &str, via: Via) {
        let found = node_tree::scan(text);
        for &oid in &found.relations {
            self.queue.relations.push((oid, via));
        }
        if self.follow_functions {
            self.reads.aggregates |= !found.aggregates.is_empty() || !found.windows.is_empty();
            let called = found
                .functions
                .iter()
                .chain(&found.aggregates)
                .chain(&found.windows);
            for &oid in called {
                self.queue.functions.push(oid);
            }
            self.queue.operators.extend(found.operators.iter().copied());
            self.queue.domains.extend(found.domains.iter().copied());
            for &oid in &found.text_input_types {
                self.text_inputs.push((origin.clone(), oid));
            }
        }
        self.reads.trees.push((origin, found));
    }

    /// The oids of `items` not met before, now met.
    fn fresh(&mut self, kind: u8, items: impl IntoIterator<Item = u32>) -> Vec<u32> {
        items
            .into_iter()
            .filter(|oid| self.seen.insert((kind, *oid)))
            .collect()
    }

    fn relations(
        &mut self,
        client: &mut Connection,
        queue: Vec<(u32, Via)>,
        probe: Option<u32>,
    ) -> Result<()> {
        // Each relation once per way of reaching it, the strongest way first; one met
        // before is read again only when reached a stronger way (what it reads is then
        // reached that way too).
        let mut via_of: HashMap<u32, Via> = HashMap::new();
        for (oid, via) in queue {
            let best = via_of.entry(oid).or_insert(via);
            if via.rank() > best.rank() {
                *best = via;
            }
        }
        via_of.retain(|oid, via| {
            self.best
                .get(oid)
                .is_none_or(|known| via.rank() > known.rank())
        });
        for (oid, via) in &via_of {
            self.best.insert(*oid, *via);
            self.seen.insert((RELATION, *oid));
        }
        let oids: Vec<u32> = via_of.keys().copied().collect();
        if oids.is_empty() {
            return Ok(());
        }
        let rows = client
            .query(RELATIONS_SQL, &[&oids])
            .map_err(|e| statement_error(&e))?;
        for row in rows {
            let oid: u32 = row.get(0);
            let is_probe = Some(oid) == probe;
            let via = via_of.get(&oid).copied().unwrap_or(Via::Named);
            let relation = Relation {
                oid,
                schema: row.get(1),
                name: row.get(2),
                relkind: row.get(3),
                unlogged: row.get(4),
                row_security: row.get(5),
                via,
            };
            // What a relation reads is reached the way it was: through a view unless the
            // view came through a policy or a function.
            let onward = |through_view: Via| match via {
                Via::Named | Via::View | Via::Child => through_view,
                other => other,
            };
            let name = relation.quoted();
            if let Some(rules) = row.get::<_, Option<String>>(6) {
                if is_probe {
                    self.tree("the statement".into(), &rules, Via::Named);
                } else {
                    self.tree(format!("view {name}"), &rules, onward(Via::View));
                }
            }
            if let Some(policies) = row.get::<_, Option<String>>(7) {
                let through = if via == Via::Function {
                    via
                } else {
                    Via::Policy
                };
                self.tree(format!("{POLICY_ORIGIN}{name}"), &policies, through);
            }
            // A parent's partitions and children are read with it, however the parent was
            // reached (but for a policy's table, which is not read as data).
            let as_child = if via == Via::Policy {
                Via::Policy
            } else {
                Via::Child
            };
            let children: Vec<u32> = row.get(8);
            for child in children {
                self.queue.relations.push((child, as_child));
            }
            if is_probe {
                continue;
            }
            match self.reads.relations.iter_mut().find(|r| r.oid == oid) {
                Some(known) => known.via = via,
                None => self.reads.relations.push(relation),
            }
        }
        Ok(())
    }

    fn operators(&mut self, client: &mut Connection, queue: Vec<u32>) -> Result<()> {
        let oids = self.fresh(OPERATOR, queue);
        if oids.is_empty() {
            return Ok(());
        }
        let rows = client
            .query(OPERATORS_SQL, &[&oids])
            .map_err(|e| statement_error(&e))?;
        self.queue
            .functions
            .extend(rows.iter().map(|r| r.get::<_, u32>(0)));
        Ok(())
    }

    fn domains(&mut self, client: &mut Connection, queue: Vec<u32>) -> Result<()> {
        let oids = self.fresh(DOMAIN, queue);
        if oids.is_empty() {
            return Ok(());
        }
        let rows = client
            .query(DOMAINS_SQL, &[&oids])
            .map_err(|e| statement_error(&e))?;
        for row in rows {
            let domain: String = row.get(0);
            let check: String = row.get(1);
            self.tree(
                format!("a CHECK constraint of domain {domain}"),
                &check,
                Via::Function,
            );
        }
        Ok(())
    }

    fn functions(&mut self, client: &mut Connection, queue: Vec<u32>) -> Result<()> {
        let oids = self.fresh(FUNCTION, queue);
        if oids.is_empty() {
            return Ok(());
        }
        let rows = client
            .query(FUNCTIONS_SQL, &[&oids])
            .map_err(|e| statement_error(&e))?;
        for row in rows {
            let mut function = Function {
                schema: row.get(1),
                name: row.get(2),
                volatility: row.get(3),
                unread: None,
            };
            let shown = function.shown();
            // PostgreSQL stores every aggregate as IMMUTABLE: one of yours is what its
            // support functions are.
            if row.get::<_, bool>(8) {
                let support: Vec<u32> = row.get::<_, Option<Vec<u32>>>(9).unwrap_or_default();
                self.queue
                    .functions
                    .extend(support.into_iter().filter(|&oid| oid != 0));
            }
            if let Some(defaults) = row.get::<_, Option<String>>(10) {
                self.tree(
                    format!("the argument defaults of {shown}"),
                    &defaults,
                    Via::Function,
                );
            }
            // PostgreSQL's own functions are what they say; a SQL function's body decides
            // what an IMMUTABLE one really depends on (PostgreSQL runs it, inlined or not,
            // whatever it calls). Bodies in other languages cannot be read: their declared
            // volatility is trusted.
            let language: String = row.get(4);
            let reads_its_body = language == "sql"
                && function.volatility == "i"
                && !schema::is_system_schema(&function.schema);
            if reads_its_body {
                let origin = format!("function {shown}");
                let source: String = row.get(6);
                for word in clock_words_in_body(&source) {
                    self.reads.clock_literals.push((origin.clone(), word));
                }
                let body = match row.get::<_, Option<String>>(5) {
                    Some(body) => Ok(body),
                    None => compile(client, row.get(0), &source, row.get(7)),
                };
                match body {
                    Ok(body) => self.tree(origin, &body, Via::Function),
                    Err(why) => function.unread = Some(why),
                }
            }
            self.reads.functions.push(function);
        }
        Ok(())
    }
}

/// The clock words in the string constants of a SQL function's body written as a string:
/// PostgreSQL reads its constants afresh at each call, so a `'now'` there is the clock. A
/// body that does not parse has none this can see (PostgreSQL compiled it: it parses).
fn clock_words_in_body(source: &str) -> Vec<&'static str> {
    let Ok(pieces) = pg_query::split_with_parser(source) else {
        return Vec::new();
    };
    pieces
        .iter()
        .filter_map(|piece| statement::clock_words_in(piece).ok())
        .flatten()
        .collect()
}

/// A SQL function's string body as PostgreSQL compiles it (a stored tree): a temporary
/// `BEGIN ATOMIC` copy with the same arguments and result, compiled under the function's
/// own search_path where it sets one, in a savepoint rolled back at once. Why not, when
/// PostgreSQL refuses the copy (a polymorphic argument, say) or the body is not statements
/// a function body holds. The copy is checked to be exactly one CREATE FUNCTION and runs as
/// one statement of the extended protocol: a body holding `END; <anything>` cannot run
/// anything of its own as pgcache's role.
fn compile(
    client: &mut Connection,
    oid: u32,
    source: &str,
    search_path: Option<String>,
) -> std::result::Result<String, String> {
    let statements = pg_query::split_with_parser(source).map_err(|e| e.to_string())?;
    let body: String = statements
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| format!("{};\n", s.trim()))
        .collect();
    client
        .batch_execute("SAVEPOINT pgcache_body")
        .map_err(|e| e.to_string())?;
    let compiled = (|| -> std::result::Result<Option<String>, String> {
        let failed = |e: crate::pg::session::Failure| {
            e.server()
                .map(|said| said.message.to_string())
                .unwrap_or_else(|| e.to_string())
        };
        // The arguments' and result's types spelled with their schemas (an empty
        // search_path), so the function's own search_path resolves them the same.
        let rows = client
            .query(
                "SELECT pg_catalog.current_setting('search_path'), \
                        pg_catalog.set_config('search_path', '', true)",
                &[],
            )
            .map_err(failed)?;
        let callers_path: String = rows.first().map(|r| r.get(0)).unwrap_or_default();
        let rows = client
            .query(
                "SELECT pg_catalog.pg_get_function_arguments($1), \
                        pg_catalog.pg_get_function_result($1)",
                &[&oid],
            )
            .map_err(failed)?;
        let Some(row) = rows.first() else {
            return Err("it is gone".into());
        };
        let (arguments, result): (String, String) = (row.get(0), row.get(1));
        client
            .query(
                "SELECT pg_catalog.set_config('search_path', $1, true)",
                &[&search_path.unwrap_or(callers_path)],
            )
            .map_err(failed)?;
        let create = format!(
            "CREATE FUNCTION pg_temp.pgcache_body({arguments}) RETURNS {result} LANGUAGE sql \
             BEGIN ATOMIC\n{body}END"
        );
        if !one_create_function(&create) {
            return Err("its body is not statements a function body holds".into());
        }
        client.query(&create, &[]).map_err(failed)?;
        let rows = client
            .query(
                "SELECT pg_catalog.to_jsonb(p) ->> 'prosqlbody' FROM pg_catalog.pg_proc p \
                 WHERE p.pronamespace = pg_catalog.pg_my_temp_schema() \
                   AND p.proname = 'pgcache_body'",
                &[],
            )
            .map_err(failed)?;
        Ok(rows.first().and_then(|r| r.get::<_, Option<String>>(0)))
    })();
    let rolled_back = client.batch_execute("ROLLBACK TO SAVEPOINT pgcache_body");
    let compiled = compiled?;
    rolled_back.map_err(|e| e.to_string())?;
    compiled.ok_or_else(|| "its body did not compile".to_string())
}

/// Whether `sql` is exactly one statement, a CREATE FUNCTION.
fn one_create_function(sql: &str) -> bool {
    pg_query::parse(sql).is_ok_and(|tree| {
        tree.protobuf.stmts.len() == 1
            && matches!(
                tree.protobuf.stmts[0]
                    .stmt
                    .as_ref()
                    .and_then(|n| n.node.as_ref()),
                Some(pg_query::NodeEnum::CreateFunctionStmt(_))
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_ends_its_block_is_not_one_function() {
        assert!(one_create_function(
            "CREATE FUNCTION pg_temp.f(x integer) RETURNS integer LANGUAGE sql \
             BEGIN ATOMIC\nSELECT x + 1;\nEND"
        ));
        assert!(!one_create_function(
            "CREATE FUNCTION pg_temp.f() RETURNS integer LANGUAGE sql \
             BEGIN ATOMIC\nSELECT 1;\nEND; INSERT INTO loot SELECT 1; SELECT 1;\nEND"
        ));
    }
}
