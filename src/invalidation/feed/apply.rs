//! The state of a feed's `apply` part: the changes handed over and waiting for the main
//! thread, and what the feed's listener or stream has covered. The behaviour (handing over,
//! applying in slices, trusting entries) is `invalidation::apply`'s.

use crate::invalidation::changes::{Changes, into_flushes};
use crate::model::source::SourceId;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Deletions that may wait in the mailbox. Past this (the main thread fell behind a flood of
/// notifications, or was blocked by a long script), the waiting changes become flushes of
/// their tables: the memory they hold stays bounded, and a flush drops more entries than
/// needed, never too few.
pub const BACKLOG_MAX_KEYS: usize = 100_000;

/// Changes handed over by the listener, oldest first, and how many deletions they hold: one
/// owner for both, so the count is always the queue's (the changes being applied have left
/// it, and a partly applied remainder that goes back is counted again).
pub(in crate::invalidation) struct Mailbox {
    queue: VecDeque<Changes>,
    keys: usize,
}

impl Mailbox {
    const fn new() -> Mailbox {
        Mailbox {
            queue: VecDeque::new(),
            keys: 0,
        }
    }

    /// Queues `changes`; past `BACKLOG_MAX_KEYS` deletions, everything waiting becomes
    /// flushes of its tables. Whether that happened.
    pub(in crate::invalidation) fn push(&mut self, changes: Changes) -> bool {
        // A position alone joins a position alone waiting last: a quiet stream's keepalives
        // queue one item, not one each.
        if changes.only_position()
            && let Some(last) = self.queue.back_mut()
            && last.only_position()
        {
            last.position = last.position.max(changes.position);
            last.heartbeat = last.heartbeat.max(changes.heartbeat);
            return false;
        }
        self.keys += changes.deletions();
        self.queue.push_back(changes);
        if self.keys <= BACKLOG_MAX_KEYS {
            return false;
        }
        let merged = into_flushes(self.queue.drain(..));
        self.queue.push_back(merged);
        self.keys = 0;
        true
    }

    /// The oldest changes, out of the queue and its count.
    pub(in crate::invalidation) fn pop(&mut self) -> Option<Changes> {
        let changes = self.queue.pop_front()?;
        self.keys -= changes.deletions();
        Some(changes)
    }

    /// Puts a partly applied remainder back in front.
    pub(in crate::invalidation) fn push_front(&mut self, changes: Changes) {
        self.keys += changes.deletions();
        self.queue.push_front(changes);
    }

    pub(in crate::invalidation) fn clear(&mut self) {
        self.queue.clear();
        self.keys = 0;
    }

    /// How many deletions wait.
    pub(in crate::invalidation) fn keys(&self) -> usize {
        self.keys
    }

    /// Whether nothing waits.
    pub(in crate::invalidation) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// What the listener has covered, shared by the listener thread and the main thread.
pub(in crate::invalidation) struct Coverage {
    /// Whether invalidation runs at all (the `listen` setting).
    pub(in crate::invalidation) listening: bool,
    /// The listener is connected and LISTENing now.
    pub(in crate::invalidation) connected: bool,
    /// It has been connected at least once since load.
    pub(in crate::invalidation) connected_before: bool,
    /// Entries exist that the listener never covered: flush them when it connects.
    pub(in crate::invalidation) untrusted_entries: bool,
    /// The replication source resumed for entries loaded with their position: they are
    /// served once it has caught up.
    pub(in crate::invalidation) catching_up: bool,
}

/// One feed's changes waiting for the main thread, and what its listener or stream has
/// covered.
pub struct Apply {
    /// Whose feed it is: what the feed covers, holds and flushes is this source's cache only.
    pub(in crate::invalidation) source: SourceId,
    pub(in crate::invalidation) mailbox: Mutex<Mailbox>,
    pub(in crate::invalidation) coverage: Mutex<Coverage>,
}

impl Apply {
    /// Nothing queued, nothing covered (const, so a `static` holds the default source's).
    pub const fn new(source: SourceId) -> Apply {
        Apply {
            source,
            mailbox: Mutex::new(Mailbox::new()),
            coverage: Mutex::new(Coverage {
                listening: false,
                connected: false,
                connected_before: false,
                untrusted_entries: false,
                catching_up: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invalidation::changes::tests::deletions;
    use crate::model::lsn::Lsn;
    use crate::pg::schema::TableSchema;
    use crate::query::precision::Written;
    use std::sync::Arc;

    #[test]
    fn the_backlog_count_is_the_queue_s_whatever_is_being_applied() {
        let mut mailbox = Mailbox::new();
        assert!(!mailbox.push(deletions(60_000)));
        // The main thread takes the oldest changes and applies part of them...
        let mut taken = mailbox.pop().unwrap();
        assert_eq!(mailbox.keys, 0);
        // ...while the listener overflows the mailbox, which turns into flushes.
        assert!(!mailbox.push(deletions(60_000)));
        assert!(mailbox.push(deletions(50_000)));
        assert_eq!(mailbox.keys, 0);
        // The remainder goes back and is counted again; the count never went below zero
        // (it used to be decremented for keys the overflow had already forgotten).
        taken.deletes.truncate(10);
        mailbox.push_front(taken);
        assert_eq!(mailbox.keys, 10);
        while mailbox.pop().is_some() {}
        assert_eq!(mailbox.keys, 0);
        assert!(
            !mailbox.push(deletions(BACKLOG_MAX_KEYS)),
            "no spurious flush after"
        );
    }

    #[test]
    fn a_keyless_table_s_new_rows_are_changes_of_their_own() {
        // No key, no deletion: the rows written alone say the table changed.
        let history = Arc::new(TableSchema::for_tests("history", Vec::new(), Vec::new()));
        let row = Written {
            values: Vec::new(),
            new_key: true,
        };
        let mut changes = Changes::default();
        changes.rows_written(history.clone(), Some(vec![row.clone(); 3]));
        assert!(!changes.only_position() && !changes.is_empty());
        assert_eq!(changes.deletions(), 3, "weighed one by one, counted so");
        let mut mailbox = Mailbox::new();
        assert!(!mailbox.push(changes));
        // A position that follows does not take their place.
        let mut position = Changes::default();
        position.reach(Lsn(10));
        assert!(!mailbox.push(position));
        assert_eq!((mailbox.queue.len(), mailbox.keys), (2, 3));
        // Past the backlog they become a flush of their table, not nothing.
        let mut many = Changes::default();
        many.rows_written(history.clone(), Some(vec![row; BACKLOG_MAX_KEYS]));
        assert!(mailbox.push(many));
        let merged = mailbox.pop().unwrap();
        assert_eq!(merged.flushes, std::slice::from_ref(&history.key_prefix));
        assert_eq!(merged.position, Some(Lsn(10)));
        assert_eq!(mailbox.keys, 0);
    }
}
