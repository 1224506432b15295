//! Everything that talks to PostgreSQL. Only worker threads call into here.

pub mod errors;
pub mod fetch;
pub mod listener;
pub mod normalise;
pub mod pool;
pub mod query;
pub mod schema;
