//! A source's change feed (design/53 §1.5): the replication stream or the listener that
//! follows its database, the changes they hand to the main thread, how far the log is
//! applied and what of that position would survive this server, the prober that vouches
//! for the cache, and what its tables' policies read. One `Feed` per source, so that one
//! database's slot, position, heartbeats or outage never stand in for another's; the
//! default source's inline, so its readers reach it as they reached the statics before.
//!
//! State only: each part's struct is in `feed/`, with the accessors this file calls; the
//! threads and tasks that take `&Feed` (`apply`, `horizon`, `listener`, `replication`)
//! add their own `impl` blocks from above, so no import runs back up to them.

pub(super) mod apply;
pub(super) mod listener;
pub(super) mod prober;
pub(super) mod replication;

use super::durability::Kept;
use super::heartbeat::Heartbeats;
use super::policies::Policies;
use super::position::Position;
use crate::model::lsn::Lsn;
use crate::model::source::{PartRef, Parts, SourceId};
use apply::Apply;
use listener::Listener;
use prober::Prober;
use replication::Replication;

/// Every source's feed.
static FEEDS: Parts<Feed> = Parts::new(Feed::new(SourceId::DEFAULT));

/// Installs the part of named source `id` (`source::parts`, before its number is used).
pub fn add_part(id: SourceId) {
    FEEDS.install(id, Feed::new(id));
}

/// Drops the part of named source `id` (`source::parts`, once nothing uses its number).
pub fn forget_part(id: SourceId) {
    FEEDS.forget_named(id);
}

/// The feed of source `id`.
#[inline]
pub fn of(id: SourceId) -> PartRef<'static, Feed> {
    FEEDS.of(id)
}

/// One source's change feed.
/// Runs `f` on every installed source's feed (the main-thread tasks that serve them all).
pub fn each(mut f: impl FnMut(&Feed)) {
    FEEDS.each(|_, feed| f(feed));
}

pub struct Feed {
    /// Whose feed it is: its threads, which hold the feed, reach their source's other parts
    /// (figures, settings, schemas) through it.
    pub source: SourceId,
    /// The replication stream: its thread, and what HEALTH and INFO say of it.
    pub replication: Replication,
    /// How far the log has been applied, and the copy kept in the keyspace.
    pub position: Position,
    /// How far that copy would survive this server: the slot is confirmed only so far.
    pub(super) durability: Kept,
    /// The NOTIFY listener (notify mode, or `auto`'s fallback): its thread and its losses.
    pub listener: Listener,
    /// The changes handed over, waiting for the main thread, and what the feed covered.
    pub(super) apply: Apply,
    /// The freshness prober's thread.
    pub(super) prober: Prober,
    /// The number this feed's heartbeat notifications carry.
    pub(super) heartbeats: Heartbeats,
    /// What each table's row-level security policies read.
    pub(super) policies: Policies,
}

impl Feed {
    /// Not started, nothing applied (const, so a `static` holds the default source's).
    pub const fn new(source: SourceId) -> Feed {
        Feed {
            source,
            replication: Replication::new(),
            position: Position::new(source),
            durability: Kept::new(),
            listener: Listener::new(),
            apply: Apply::new(source),
            prober: Prober::new(),
            heartbeats: Heartbeats::new(),
            policies: Policies::new(),
        }
    }

    /// Whether invalidations arrive now: the listener listens, the slot streams, or (a
    /// replica in replication mode) the primary's deletions do.
    pub fn connected(&self) -> bool {
        self.listener.connected() || self.replication.connected() || self.replication.standing_by()
    }

    /// Why the feed last lost its connection and how long ago, if it ever did.
    pub fn last_loss(&self) -> Option<(std::time::Duration, String)> {
        self.listener.last_loss().or_else(|| {
            self.replication
                .status()
                .last_loss
                .map(|(at, why)| (at.elapsed().unwrap_or_default(), why))
        })
    }

    /// Whether the cache reflects every transaction committed up to `lsn` (`AFTER <lsn>`):
    /// the replication stream has applied that far. Never in notify mode, where nothing
    /// says how far the notifications reached.
    #[inline]
    pub fn applied_through(&self, lsn: Lsn) -> bool {
        self.replication.active() && super::position::applied_lsn_of(self.source) >= lsn
    }

    /// Whether the replication stream streams now: the position applied keeps moving.
    pub fn streaming(&self) -> bool {
        self.replication.active() && self.replication.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invalidation::position::Record;
    use std::time::Duration;

    fn record(lsn: u64) -> Record {
        Record {
            lsn: Lsn(lsn),
            system: "7301234567890123456".into(),
            slot: "pgcache".into(),
        }
    }

    #[test]
    fn two_feeds_share_no_position_or_durability() {
        let (a, b) = (Feed::new(SourceId::DEFAULT), Feed::new(SourceId::DEFAULT));
        a.position.record_lag(Duration::from_millis(3));
        a.durability.loaded(Some(record(7)));
        assert_eq!(a.position.last_lag(), Duration::from_millis(3));
        assert_eq!(a.durability.durable(), Some(record(7)));
        assert_eq!(b.position.last_lag(), Duration::ZERO);
        assert_eq!(b.durability.durable(), None);
        assert_eq!(b.position.applied(), None);
    }
}
