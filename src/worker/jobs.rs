//! What callers hand the worker pool: the closures and lookups a worker runs, and what each
//! gives back for the main thread.

use crate::blocked::Completion;
use crate::error::Error;
use crate::key::CanonicalPk;
use crate::pg::pool::PooledClient;
use crate::pg::schema::TableSchema;
use std::sync::Arc;
use std::time::Duration;

/// Runs on a worker with a pooled connection.
pub type Work = Box<dyn FnOnce(&mut PooledClient<'_>) -> Result<Completion, Error> + Send>;
/// Rows fetched by one part of a split request.
pub type Rows = Vec<Option<String>>;
/// One part of a split request.
pub type Part = Box<dyn FnOnce(&mut PooledClient<'_>) -> Result<Rows, Error> + Send>;
/// Builds the completion from every part's rows, in part order.
pub type Join = Box<dyn FnOnce(Vec<Rows>) -> Completion + Send>;

/// One row to fetch, and what to do with the result (None: no such row): called on the
/// worker, it returns the completion for the main thread.
pub struct RowLookup {
    pub schema: Arc<TableSchema>,
    pub pk: CanonicalPk,
    pub then: Box<dyn FnOnce(crate::fill::Outcome) -> Completion + Send>,
}

/// Turns a PostgreSQL round trip's time (or why it failed) into the completion.
pub type Probe = Box<dyn FnOnce(Result<Duration, Error>) -> Completion + Send>;
