//! What one request's statement may leave of the session the next request runs in, and how
//! a connection undoes it (issue #70 item 2: a function that called
//! `set_config('extra_float_digits', '0', false)` had other clients' misses answered, and
//! cached, with 15-digit floats).
//!
//! pgcache runs only statements whose functions are IMMUTABLE, and PostgreSQL refuses every
//! command inside a function that is not VOLATILE (SET, LISTEN, PREPARE, DECLARE, CREATE
//! TEMPORARY ...: "not allowed in a non-volatile function"). What such a function can still
//! do to its session is call functions: `set_config` (any setting: extra_float_digits,
//! TimeZone, search_path, role, default_transaction_read_only), the session-level advisory
//! locks (`pg_advisory_lock`), `setseed`. PostgreSQL's own functions that do so are VOLATILE
//! and refused; a function of the database's own may do so whatever it is labelled. So a
//! statement that calls one (`Learned::own_functions`) runs inside `BEGIN READ ONLY` and
//! ends in `ROLLBACK`, which undoes every setting (settings are transactional, `set_config`'s
//! too), then `pg_advisory_unlock_all()` releases the advisory locks no rollback releases.
//! Left as they were (docs/limits.md): `setseed`'s generator, which only VOLATILE functions
//! read, and connections a function opens elsewhere (dblink).

/// What a request's run must undo before the connection serves another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effects {
    /// Nothing: it calls only PostgreSQL's own functions, none of which (IMMUTABLE as pgcache
    /// admits them) changes its session.
    None,
    /// Whatever a function of the database's may have changed: the request runs in a
    /// transaction rolled back, then releases the session's advisory locks.
    Undone,
}

/// Ahead of a request that runs in a transaction of its own.
pub const BEGIN: &str = "BEGIN READ ONLY";

/// After a request whose effects are undone: one simple query of two statements, so the
/// locks go even when the statement failed (the ROLLBACK ends the failed transaction first).
pub const UNDO: &str = "ROLLBACK; SELECT pg_catalog.pg_advisory_unlock_all()";

/// How many statements `UNDO` holds (CommandCompletes to expect).
pub const UNDO_STATEMENTS: usize = 2;
