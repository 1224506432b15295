//! What pgcache tells its operators, from what `stats` recorded: the figures declared once
//! (`figures`), listed for PGCACHE.STATS (`listing`), and their two other outlets: the
//! `pgcache` INFO section (`info`) and the Prometheus endpoint (`metrics`).

pub mod figures;
pub mod info;
pub mod listing;
pub mod metrics;
