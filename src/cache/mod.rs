//! The cache: its entries in the Redis keyspace (`entries`, re-exported here), the fills in
//! flight and their no-stale-fill rule (`fill`), the miss pipeline of the row commands
//! (`miss`) and QUERY's (`query`), the worker pool that runs what waits for
//! PostgreSQL (`worker`) and the misses the event loop sends itself (`onloop`), table flushes (`flush`) and the tables known to need none (`emptied`), which entries must not be served now
//! (`bypass`), whether hits are served now as HEALTH tells it (`serving`), and the window before an unload in which nothing may wait (`drain`).

pub mod applied;
pub mod bypass;
pub mod drain;
pub mod emptied;
mod entries;
pub mod fill;
pub mod flush;
pub mod freshness;
pub mod miss;
pub mod onloop;
pub mod query;
pub mod serving;
pub mod tags;
pub mod worker;

pub use entries::*;
