//! The words every layer shares, as pure logic with nothing to wait on: table names and SQL
//! identifiers (`ident`), canonical primary keys and cache-key names (`key`), and what a cache
//! event is (`event`: its kinds and JSON form; delivering one is `events`' job).

pub mod event;
pub mod ident;
pub mod key;
