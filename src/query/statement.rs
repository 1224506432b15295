//! What a statement is, from PostgreSQL's own grammar (`pg_query`, libpg_query): exactly one
//! plain SELECT, admitted or refused with the reason, spelled one way for the cache key.
//! Pure: no Redis, no PostgreSQL. What the grammar cannot tell (which functions a name
//! resolves to, whether they are IMMUTABLE, which tables a view reads) the catalog tells
//! once per statement (`catalog`).

use crate::error::{Error, Result};
use crate::model::ident::quote_ident;
use crate::query::shape::{self, Shaped};
use crate::query::{clock, placeholders};
use pg_query::protobuf::{SqlValueFunctionOp, Token, a_const};
use pg_query::{NodeEnum, NodeRef};
use serde_json::Value;

/// A statement the grammar admits.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The statement as the parser reads it, spelled one way (deparsed: one case, one
    /// spacing, no comments, `$n` placeholders): every spelling of one statement has it.
    pub canonical: String,
    /// How many parameters it takes (`$1..$params`).
    pub params: usize,
    /// Its row shape, or why the grammar shows none (`shape`).
    pub shape: Shaped,
    /// The relations its text names (CTEs aside), quoted for `to_regclass`: what a user's
    /// permissions are checked against before the catalog is asked anything of it.
    pub named: Vec<String>,
    /// Its string constants that a date/time input would read as the clock (`'now'`), if
    /// it has any: whether they are read so depends on the types PostgreSQL gives them
    /// (`ClockLiterals`).
    pub clock_literals: Option<ClockLiterals>,
}

/// A statement's string constants holding a clock word (`clock`): whether PostgreSQL reads
/// each as the clock depends on the type it gives it, which preparing the statement with
/// the constant stood in by a parameter tells (`with_parameters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockLiterals {
    /// Each constant's span in the canonical text, and its clock word.
    pub spans: Vec<(usize, usize, &'static str)>,
}

impl ClockLiterals {
    /// `canonical` with the constants of `which` (indexes into `spans`) stood in by
    /// parameters after its own `params`, in order, each followed by `cast`.
    pub fn with_parameters(
        &self,
        canonical: &str,
        params: usize,
        which: &[usize],
        cast: &str,
    ) -> String {
        let mut text = String::with_capacity(canonical.len());
        let mut copied = 0;
        for (n, &i) in which.iter().enumerate() {
            let (start, end, _) = self.spans[i];
            text.push_str(&canonical[copied..start]);
            text.push_str(&format!("${}{cast}", params + n + 1));
            copied = end;
        }
        text.push_str(&canonical[copied..]);
        text
    }
}

/// Parses `sql` (with `?` or `$n` placeholders) and admits it, or says why not.
pub fn parse(sql: &str) -> Result<Parsed> {
    let (numbered, params) = placeholders::numbered(sql)?;
    let tree = pg_query::parse(&numbered).map_err(|e| {
        Error::invalid(format!(
            "the statement does not parse: {}",
            parse_message(e)
        ))
    })?;
    let statements = &tree.protobuf.stmts;
    if statements.len() != 1 {
        return Err(Error::invalid(format!(
            "PGCACHE.QUERY takes exactly one statement, got {}",
            statements.len()
        )));
    }
    match statements[0].stmt.as_ref().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::SelectStmt(_)) => {}
        Some(other) => {
            return Err(Error::invalid(format!(
                "PGCACHE.QUERY caches SELECT statements only; this is {}",
                statement_kind(other)
            )));
        }
        None => return Err(Error::invalid("the statement is empty")),
    }
    let tree_json = serde_json::to_value(&tree.protobuf)
        .map_err(|e| Error::internal(format!("reading the parse tree: {e}")))?;
    refuse_what_the_grammar_shows(&tree_json)?;
    let canonical = tree
        .protobuf
        .deparse()
        .map_err(|e| Error::internal(format!("spelling the statement: {e}")))?;
    let shape = shape::of(&tree.protobuf)?;
    let named = named_relations(&tree.protobuf);
    let clock_literals = clock_literals(&canonical)?;
    Ok(Parsed {
        canonical,
        params,
        shape,
        named,
        clock_literals,
    })
}

/// The relations the statement's text names, but a CTE's name written alone.
fn named_relations(tree: &pg_query::protobuf::ParseResult) -> Vec<String> {
    let nodes = tree.nodes();
    let ctes: Vec<&str> = nodes
        .iter()
        .filter_map(|(node, ..)| match node {
            NodeRef::CommonTableExpr(cte) => Some(cte.ctename.as_str()),
            _ => None,
        })
        .collect();
    let mut named: Vec<String> = nodes
        .iter()
        .filter_map(|(node, ..)| match node {
            NodeRef::RangeVar(v)
                if v.schemaname.is_empty() && ctes.contains(&v.relname.as_str()) =>
            {
                None
            }
            NodeRef::RangeVar(v) if v.schemaname.is_empty() => Some(quote_ident(&v.relname)),
            NodeRef::RangeVar(v) => Some(format!(
                "{}.{}",
                quote_ident(&v.schemaname),
                quote_ident(&v.relname)
            )),
            _ => None,
        })
        .collect();
    named.sort();
    named.dedup();
    named
}

/// The clock words (`clock`) of the string constants of `sql`, one SQL statement.
pub fn clock_words_in(sql: &str) -> Result<Vec<&'static str>> {
    Ok(clock_constants(sql)?.into_iter().map(|(_, w)| w).collect())
}

/// The string constants of `sql` holding a clock word: where each starts, and the word.
fn clock_constants(sql: &str) -> Result<Vec<(i32, &'static str)>> {
    let tree = pg_query::parse(sql).map_err(|e| {
        Error::invalid(format!(
            "the statement does not parse: {}",
            parse_message(e)
        ))
    })?;
    let mut found: Vec<(i32, &'static str)> = tree
        .protobuf
        .nodes()
        .into_iter()
        .filter_map(|(node, ..)| match node {
            NodeRef::AConst(c) => match &c.val {
                Some(a_const::Val::Sval(s)) => clock::clock_word(&s.sval).map(|w| (c.location, w)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The string constants of `canonical` holding a clock word.
fn clock_literals(canonical: &str) -> Result<Option<ClockLiterals>> {
    let found = clock_constants(canonical)?;
    if found.is_empty() {
        return Ok(None);
    }
    let tokens = pg_query::scan(canonical)
        .map_err(|e| Error::internal(format!("reading the statement's tokens: {e}")))?
        .tokens;
    let mut spans: Vec<(usize, usize, &'static str)> = Vec::new();
    for (location, word) in found {
        let Some(token) = tokens.iter().find(|t| {
            (t.token == Token::Sconst as i32 || t.token == Token::Usconst as i32)
                && t.start <= location
                && location < t.end
        }) else {
            continue;
        };
        let (start, end) = (token.start as usize, token.end as usize);
        if spans
            .last()
            .is_none_or(|&(_, last_end, _)| last_end <= start)
        {
            spans.push((start, end, word));
        }
    }
    Ok((!spans.is_empty()).then_some(ClockLiterals { spans }))
}

/// libpg_query's message, without its `Error parsing query: ` style prefixes.
fn parse_message(e: pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(message) => message,
        // The tree's decoder stops at 100 levels, and names every one it went through.
        other if other.to_string().contains("recursion limit reached") => {
            "it is nested too deeply (pgcache reads up to 100 levels of expressions): \
             write a long sum or list as one parameter, such as = ANY($1)"
                .into()
        }
        other => other.to_string(),
    }
}

/// `an INSERT`, `a CREATE TABLE`: the kind of a statement that is not a SELECT.
fn statement_kind(node: &NodeEnum) -> String {
    let name = serde_json::to_value(node)
        .ok()
        .and_then(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
        .unwrap_or_else(|| "another statement".into());
    let kind = match name.as_str() {
        "InsertStmt" => "an INSERT",
        "UpdateStmt" => "an UPDATE",
        "DeleteStmt" => "a DELETE",
        "MergeStmt" => "a MERGE",
        "CreateStmt" => "a CREATE TABLE",
        "CreateTableAsStmt" => "a CREATE TABLE AS",
        "ExplainStmt" => "an EXPLAIN",
        "CallStmt" => "a CALL",
        "CopyStmt" => "a COPY",
        other => return format!("a {other}"),
    };
    kind.to_string()
}

/// Walks every node of the tree (serialised: each node is `{"<Kind>": {...}}`, each field by
/// its name) and refuses the first thing the grammar alone shows a cached result cannot have.
fn refuse_what_the_grammar_shows(value: &Value) -> Result<()> {
    match value {
        Value::Object(fields) => {
            for (name, inner) in fields {
                refuse_node(name, inner)?;
                refuse_what_the_grammar_shows(inner)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(refuse_what_the_grammar_shows),
        _ => Ok(()),
    }
}

fn refuse_node(name: &str, inner: &Value) -> Result<()> {
    match name {
        "into_clause" if !inner.is_null() => Err(Error::invalid(
            "SELECT INTO creates a table; PGCACHE.QUERY only reads",
        )),
        "locking_clause" if inner.as_array().is_some_and(|a| !a.is_empty()) => Err(Error::invalid(
            "FOR UPDATE / FOR SHARE lock rows; PGCACHE.QUERY only reads (drop the locking \
                 clause)",
        )),
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => Err(Error::invalid(
            "a data-modifying WITH (INSERT, UPDATE, DELETE or MERGE) writes; PGCACHE.QUERY \
             only reads",
        )),
        "SqlvalueFunction" => {
            let op = inner.get("op").and_then(Value::as_i64).unwrap_or(0);
            let name = SqlValueFunctionOp::try_from(op as i32)
                .map(|op| op.as_str_name())
                .unwrap_or("SVFOP_CURRENT_TIMESTAMP");
            let name = name.trim_start_matches("SVFOP_").trim_end_matches("_N");
            Err(Error::invalid(format!(
                "{name} is STABLE: its result changes without a write; pass the value as a \
                 parameter"
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(sql: &str) -> String {
        parse(sql).unwrap().canonical
    }

    fn refusal(sql: &str) -> String {
        parse(sql).unwrap_err().to_string()
    }

    #[test]
    fn spellings_of_one_statement_share_their_canonical_text() {
        let a = canonical("SELECT id, email FROM users WHERE email = $1");
        assert_eq!(
            a,
            canonical("select  ID,\n email from USERS /* who */ where email=? -- by mail")
        );
        assert_eq!(a, canonical("SELECT id, email FROM users WHERE email = ?"));
        assert_ne!(
            a,
            canonical("SELECT id, email FROM users WHERE email = $1 LIMIT 1")
        );
        assert_ne!(
            canonical("SELECT * FROM orders_2024_01"),
            canonical("SELECT * FROM orders_2024_02")
        );
        assert_ne!(
            canonical("SELECT * FROM t WHERE a = 1"),
            canonical("SELECT * FROM t WHERE a = 2")
        );
    }

    #[test]
    fn parameters_are_counted() {
        assert_eq!(
            parse("SELECT * FROM t WHERE a = ? AND b = ?")
                .unwrap()
                .params,
            2
        );
        assert_eq!(parse("SELECT * FROM t WHERE a = $3").unwrap().params, 3);
        assert_eq!(parse("SELECT * FROM t").unwrap().params, 0);
    }

    #[test]
    fn rich_selects_are_admitted() {
        for sql in [
            "WITH recent AS (SELECT * FROM orders WHERE customer_id = $1) SELECT count(*) FROM recent",
            "SELECT o.* FROM orders o JOIN users u ON u.id = o.user_id WHERE u.email = $1",
            "SELECT DISTINCT status FROM orders WHERE id IN (SELECT order_id FROM lines)",
            "SELECT id, rank() OVER (ORDER BY total DESC) FROM orders ORDER BY 2 LIMIT 20",
            "SELECT * FROM t WHERE doc ?? 'k'",
            "SELECT 1 UNION ALL SELECT 2",
        ] {
            parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn the_relations_a_statement_names_are_listed_without_its_ctes() {
        let parsed = parse(
            "WITH recent AS (SELECT * FROM sales.orders) SELECT * FROM recent r \
             JOIN \"Users\" u ON u.id = r.user_id WHERE EXISTS (SELECT 1 FROM users)",
        )
        .unwrap();
        assert_eq!(
            parsed.named,
            ["\"Users\"", "\"sales\".\"orders\"", "\"users\""]
        );
    }

    #[test]
    fn constants_holding_a_clock_word_stand_in_as_parameters() {
        let parsed = parse(
            "SELECT * FROM t WHERE at > 'now'::timestamptz AND d = $1 AND note = 'snow' \
                   AND day < timestamptz ' Tomorrow 10:00' AND e = E'today\\n'",
        )
        .unwrap();
        let clock = parsed.clock_literals.clone().unwrap();
        let words: Vec<_> = clock.spans.iter().map(|s| s.2).collect();
        assert_eq!(words, ["now", "tomorrow", "today"]);
        let all = clock.with_parameters(&parsed.canonical, 1, &[0, 1, 2], "");
        assert!(all.contains("at > $2::timestamptz"), "{all}");
        assert!(all.contains("note = 'snow'"), "{all}");
        assert!(all.contains("day < $3::timestamptz"), "{all}");
        assert!(all.contains("e = $4"), "{all}");
        let one = clock.with_parameters(&parsed.canonical, 1, &[1], "::text");
        assert!(one.contains("at > 'now'::timestamptz"), "{one}");
        assert!(one.contains("day < $2::text::timestamptz"), "{one}");
        assert!(parse("SELECT 'nowhere'").unwrap().clock_literals.is_none());
    }

    #[test]
    fn anything_but_one_plain_select_is_refused_with_the_reason() {
        assert!(refusal("SELECT 1; SELECT 2").contains("exactly one statement"));
        assert!(refusal("INSERT INTO t VALUES (1)").contains("an INSERT"));
        assert!(refusal("UPDATE t SET a = 1").contains("an UPDATE"));
        assert!(refusal("SELECT * INTO copy FROM t").contains("SELECT INTO"));
        assert!(refusal("SELECT * FROM t FOR UPDATE").contains("FOR UPDATE"));
        assert!(refusal("SELECT * FROM (SELECT * FROM t FOR SHARE) s").contains("FOR UPDATE"));
        assert!(
            refusal("WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone")
                .contains("data-modifying")
        );
        assert!(refusal("SELECT CURRENT_TIMESTAMP").contains("CURRENT_TIMESTAMP is STABLE"));
        assert!(refusal("SELECT * FROM t WHERE d < current_date").contains("CURRENT_DATE"));
        assert!(refusal("SELEC 1").contains("does not parse"));
        assert!(refusal("").contains("exactly one statement"));
    }
}
