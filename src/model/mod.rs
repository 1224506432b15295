//! The words every layer shares, as pure logic with nothing to wait on: table names and SQL
//! identifiers (`ident`), canonical primary keys and cache-key names (`key`), what a cache
//! event is (`event`: its kinds and JSON form; delivering one is `events`' job), and positions
//! in PostgreSQL's log (`lsn`), whether entries live long enough to be worth caching
//! (`pass_through`), and which source (database) a key belongs to (`source`).

pub mod event;
pub mod ident;
pub mod key;
pub mod lsn;
pub mod pass_through;
pub mod source;
pub mod tags;
