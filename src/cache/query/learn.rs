//! A statement's first sight: parsed, its tables checked against the caller's read
//! permissions, learned from the catalog (its precision, the SQL it runs) and remembered.

use crate::config::current;
use crate::error::{Error, Result};
use crate::model::source::SourceId;
use crate::pg::pool::Connection;
use crate::pg::undo::Effects;
use crate::query::precision::{self, Precision};
use crate::query::shape::{self, Page};
use crate::query::statement;
use crate::query::{Statement, catalog, columns, generations, statements};
use crate::redis::acl;
use crate::redis::main_thread;
use std::sync::Arc;
use std::time::Duration;

/// The statement `sql` spells in `source`'s database (`conn` is one of its connections):
/// parsed, and learned from the catalog unless another spelling of it was; remembered
/// under this spelling.
pub fn learn(conn: &mut Connection, source: SourceId, sql: &[u8]) -> Result<Arc<Statement>> {
    learn_as(conn, source, sql, None)
}

/// `learn`, for the ACL user `user` (None: one who may read every key): the tables behind
/// the relations the statement names are checked against its read permissions before the
/// catalog is asked anything of the statement, and the tables it reads once it is learned,
/// so a user who may not read them learns nothing from an answer, an error or how long
/// either took.
pub(super) fn learn_as(
    conn: &mut Connection,
    source: SourceId,
    sql: &[u8],
    user: Option<&str>,
) -> Result<Arc<Statement>> {
    let text =
        std::str::from_utf8(sql).map_err(|_| Error::invalid("the statement is not valid UTF-8"))?;
    let parsed = statement::parse(text)?;
    if let Some(user) = user {
        let named = catalog::named_tables(conn, &parsed)?;
        let keys: Vec<String> = named
            .iter()
            .map(|name| {
                generations::key_name(&crate::model::key::cache_key(
                    &current::key_prefix(source),
                    &name.display(),
                    "",
                ))
            })
            .collect();
        user_may_read(user, keys)?;
    }
    // What the catalog said is kept only if no DDL made pgcache forget its statements
    // meanwhile (a view replaced while its statement was learned would leave it reading
    // the old view's tables): learned again then.
    for _ in 0..LEARNING_ATTEMPTS {
        let statements = statements::of(source);
        let epoch = statements.epoch();
        let statement = learned(conn, source, &parsed)?;
        if let Some(user) = user {
            user_may_read(user, statement.readable_as.to_vec())?;
        }
        if statements.remember(epoch, sql, statement.clone()) {
            return Ok(statement);
        }
    }
    Err(Error::postgres(
        "the tables and views the statement reads kept changing (DDL) while it was learned; \
         try again",
    ))
}

/// Why a statement's results may not be cached (None: they may): DDL could change them
/// unseen. Without pgcache's event trigger, nothing tells the cache that a view was replaced,
/// a function redefined, a partition or child created or a policy changed; a plain table's
/// rows reach it through the feed either way.
fn unfollowed(learned: &catalog::Learned) -> Option<String> {
    if learned.ddl_followed {
        return None;
    }
    let what = if !learned.own_functions.is_empty() {
        format!("calls {}", learned.own_functions.join(", "))
    } else if !learned.plain {
        "reads a view, a partitioned table, inheritance children or a table under row-level \
         security"
            .to_string()
    } else {
        return None;
    };
    Some(format!(
        "it {what}, which DDL could change unseen: DDL is not followed (pgcache's event \
         trigger is not installed; run examples/ddl_trigger.sql as a superuser), so its calls \
         are answered by PostgreSQL and never cached"
    ))
}

/// How many times a statement is learned while DDL keeps changing what it reads.
const LEARNING_ATTEMPTS: usize = 3;

/// Refuses (NOPERM) unless the ACL user `user` may read every key of `keys`, asked on the
/// main thread from a worker.
fn user_may_read(user: &str, keys: Vec<String>) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let user = user.to_string();
    let refused = main_thread::ask(
        move |ctx| {
            keys.into_iter()
                .find(|key| !acl::user_may_read(ctx, &user, key))
        },
        Duration::from_millis(current::request_timeout_ms()),
    )
    .ok_or_else(|| {
        // A busy event loop, not a fault: the caller may try again.
        Error::timeout("the permission check waited too long for the event loop; try again")
    })?;
    match refused {
        Some(key) => Err(acl::no_read_permission(&key)),
        None => Ok(()),
    }
}

/// What `parsed` is: the statement learned under another spelling, or learned now.
fn learned(
    conn: &mut Connection,
    source: SourceId,
    parsed: &statement::Parsed,
) -> Result<Arc<Statement>> {
    Ok(
        match statements::of(source).with_canonical(&parsed.canonical) {
            Some(statement) => statement,
            None => {
                let row_wanted = current::of(source).query_row_precision();
                let learned = catalog::learn(conn, source, parsed)?;
                let precision = precision::decide(conn, source, &parsed.shape, &learned)?;
                // A page is run ordered down to its table's primary key, so that the rows read
                // beside it for its members are its own, ties included (`shape::tie_broken`).
                let page = match (&precision, &parsed.shape) {
                    (Precision::Row(m), Ok(shape)) => match (&m.page, &shape.page, &m.sides[..]) {
                        (Some(_), Some(page), [side]) => {
                            let (statement, ordered_sql) = shape::tie_broken(
                                &parsed.canonical,
                                &shape.sides[0].reference,
                                &side.table.primary_key,
                            )?;
                            Some((
                                statement,
                                Page {
                                    ordered_sql,
                                    ..page.clone()
                                },
                            ))
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let members = match (&precision, &parsed.shape) {
                    (Precision::Row(m), Ok(shape)) => Some(catalog::Members {
                        candidates_sql: &shape.candidates_sql,
                        sides: m
                            .sides
                            .iter()
                            .zip(&shape.sides)
                            .map(|(matched, side)| catalog::MemberSide {
                                reference: &side.reference,
                                table: &matched.table,
                                own_rows: side.own_rows.as_deref(),
                            })
                            .collect(),
                        page: page.as_ref().map(|(_, page)| page),
                    }),
                    _ => None,
                };
                let statement = page.as_ref().map_or(&parsed.canonical, |(s, _)| s);
                let run_sql = catalog::run_sql(statement, members.as_ref())?;
                // A batch PostgreSQL refuses (a parameter in LIMIT may not come from a LATERAL
                // join) leaves the statement's misses to run one by one.
                let batch_sql = catalog::batch_sql(statement, &learned.params, members.as_ref())?
                    .filter(|sql| conn.prepare(sql).is_ok());
                let plain_sql = match members {
                    Some(_) => Some(catalog::run_sql(statement, None)?),
                    None => None,
                };
                let columns = columns::learn(conn, &parsed.canonical)?;
                let uncached = unfollowed(&learned);
                let effects = if learned.own_functions.is_empty() {
                    Effects::None
                } else {
                    Effects::Undone
                };
                Arc::new(Statement::new(
                    source,
                    &current::key_prefix(source),
                    parsed.canonical.clone(),
                    learned.params,
                    columns,
                    learned.tables,
                    learned.listed,
                    precision,
                    row_wanted,
                    uncached,
                    run_sql,
                    batch_sql,
                    plain_sql,
                    effects,
                ))
            }
        },
    )
}
