//! Whether a source's hits are served now, and if not why and what reads do instead: what
//! HEALTH and STATS report (issue #70 item 7: HEALTH said `served` while READs of entries
//! loaded from disk still went to PostgreSQL, the cache held until the replication stream
//! caught up). Decided from the checks a hit itself makes, in the order it makes them: the
//! source's cache not held and no flush of it under way (`bypass`), then the freshness
//! horizon within `max_staleness_ms`, or during an outage within `stale_if_error_ms`
//! (`freshness`).

use crate::cache::{bypass, freshness};
use crate::config::current;
use crate::model::source::SourceId;
use crate::pg::circuit;

/// What a read of a cached entry of the source does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hits {
    /// Answered from the cache, within `max_staleness_ms`.
    Served,
    /// Answered from the cache; no change feed bounds their age on this node (TTLs do).
    Unbounded,
    /// Answered from the cache past `max_staleness_ms`: PostgreSQL cannot be reached, and the
    /// cache is within `stale_if_error_ms`.
    ServedStale,
    /// Answered from PostgreSQL, and nothing cached, for the reason given.
    Bypassed(String),
}

impl Hits {
    /// HEALTH's word for it.
    pub fn word(&self) -> &'static str {
        match self {
            Hits::Served => "served",
            Hits::Unbounded => "served (no change feed bounds their age on this node)",
            Hits::ServedStale => "served stale",
            Hits::Bypassed(_) => "bypassed",
        }
    }

    /// Whether hits are answered from the cache within their bound (STATS `hits_served`).
    pub fn served(&self) -> bool {
        matches!(self, Hits::Served | Hits::Unbounded)
    }
}

/// What reads of `source`'s cached entries do now. Any thread.
pub fn now(source: SourceId) -> Hits {
    if let Some(why) = bypass::of(source).held_because() {
        return Hits::Bypassed(format!(
            "{why}; reads are answered from PostgreSQL, and nothing is cached, until then"
        ));
    }
    if bypass::bypassed(source, current::key_prefix(source).as_bytes()) {
        return Hits::Bypassed(
            "a flush of the whole cache is under way: reads are answered from PostgreSQL \
             until it ends"
                .into(),
        );
    }
    let horizon = freshness::of(source);
    if !horizon.tracked() {
        return Hits::Unbounded;
    }
    let settings = current::of(source);
    let bound = settings.max_staleness_ms();
    if horizon.vouched_now(bound) {
        return Hits::Served;
    }
    if circuit::of(source).open() && horizon.vouched_now(settings.stale_if_error_ms()) {
        return Hits::ServedStale;
    }
    let since = match horizon.age() {
        Some(age) => format!("for {} ms", age.as_millis()),
        None => "since pgcache started".to_string(),
    };
    Hits::Bypassed(format!(
        "the change feed has not vouched for the cache {since} (max_staleness_ms {bound}): \
         reads are answered from PostgreSQL, and nothing is cached, until it does"
    ))
}
