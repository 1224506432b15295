//! Every version of every row PostgreSQL committed during a chaos run, in commit order, so
//! that a served row can be checked column for column: it must be one of them, and (outside
//! a fault) not older than the version committed a second before the request was sent.
//!
//! Writers record a version between their statement (`RETURNING` the new row) and their
//! COMMIT, so no client can see it before it is known; it is dated when COMMIT returns. A
//! commit that failed may or may not have happened: its version stays possible, never due.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A row as PostgreSQL's `row_to_json` gives it; None: the row did not exist.
pub type Row = Option<serde_json::Value>;

struct Version {
    row: Row,
    /// When its COMMIT returned; None while in flight, or if the commit's outcome is unknown.
    committed: Option<Instant>,
}

#[derive(Default)]
pub struct History {
    rows: Mutex<HashMap<i64, Vec<Version>>>,
}

/// What a served row is, against the history of its key.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A version at least as new as the one due.
    Fresh,
    /// A committed version, older than the one committed `due_before` the request.
    Old,
    /// No version PostgreSQL committed for this key.
    Unknown,
}

impl History {
    /// The versions present at the start (committed before the run).
    pub fn start(&self, rows: impl IntoIterator<Item = (i64, Row)>, at: Instant) {
        let mut all = self.rows.lock().unwrap();
        for (id, row) in rows {
            all.entry(id).or_default().push(Version {
                row,
                committed: Some(at),
            });
        }
    }

    /// A version about to be committed; returns its place, for `committed`.
    pub fn pending(&self, id: i64, row: Row) -> usize {
        let mut all = self.rows.lock().unwrap();
        let versions = all.entry(id).or_default();
        versions.push(Version {
            row,
            committed: None,
        });
        versions.len() - 1
    }

    /// The COMMIT of a pending version returned.
    pub fn committed(&self, id: i64, at: usize) {
        if let Some(v) = self
            .rows
            .lock()
            .unwrap()
            .get_mut(&id)
            .and_then(|v| v.get_mut(at))
        {
            v.committed = Some(Instant::now());
        }
    }

    /// Judges `served` for key `id`, asked for at `sent`: the newest version equal to it
    /// against the newest version committed `due_before` earlier.
    pub fn judge(&self, id: i64, served: &Row, sent: Instant, due_before: Duration) -> Verdict {
        let all = self.rows.lock().unwrap();
        let Some(versions) = all.get(&id) else {
            return Verdict::Unknown;
        };
        let Some(found) = versions.iter().rposition(|v| v.row == *served) else {
            return Verdict::Unknown;
        };
        let due = sent.checked_sub(due_before).and_then(|cutoff| {
            versions
                .iter()
                .rposition(|v| v.committed.is_some_and(|at| at <= cutoff))
        });
        match due {
            Some(due) if found < due => Verdict::Old,
            _ => Verdict::Fresh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_row_is_a_committed_version_and_not_older_than_the_one_due() {
        let history = History::default();
        let t0 = Instant::now();
        let v = |n: i64| Some(serde_json::json!({"id": 1, "version": n}));
        history.start([(1, v(0))], t0);
        let second = history.pending(1, v(1));
        history.committed(1, second);
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            history.judge(1, &v(1), later, Duration::from_secs(1)),
            Verdict::Fresh
        );
        assert_eq!(
            history.judge(1, &v(0), later, Duration::from_secs(1)),
            Verdict::Old
        );
        assert_eq!(
            history.judge(1, &v(0), Instant::now(), Duration::from_secs(1)),
            Verdict::Fresh,
            "v1 was committed less than a second before"
        );
        assert_eq!(
            history.judge(1, &v(7), later, Duration::ZERO),
            Verdict::Unknown
        );
        assert_eq!(
            history.judge(1, &None, later, Duration::ZERO),
            Verdict::Unknown
        );
        history.pending(1, None);
        assert_eq!(
            history.judge(1, &None, later, Duration::from_secs(1)),
            Verdict::Fresh,
            "a deletion in flight may be seen"
        );
    }
}
