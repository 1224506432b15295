//! Whether a statement's results live long enough to be worth caching.
//!
//! A result that changes dropped before anyone read it again cost its fill (the write, its
//! generation, for a row-precise one its place in the index) and saved nothing. A statement
//! whose results die that way passes its misses through: PostgreSQL's answer goes straight
//! back to the client, nothing cached. It is judged window by window, on the hits per
//! result filled: below `ENTER_BELOW` (not one hit in 20 fills) it starts passing through.
//! While it does, one miss in `SAMPLE` is still filled, so its results keep being tried: at
//! `LEAVE_AT` hits per sampled fill (its table changes less, its readers read more) it is
//! filled again. The two thresholds apart keep a statement near one from flapping.
//!
//! The figures are atomics: the statement is shared between threads, though only the main
//! thread counts. Pure logic: no Redis, no PostgreSQL.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Calls a window holds before it is judged.
pub const WINDOW_CALLS: u32 = 200;
/// Fills a window needs to be judged: hits per fill over fewer says little.
pub const WINDOW_FILLS: u32 = 8;
/// A window with this many calls and too few fills (results too big to cache, a feed that
/// cannot vouch for the cache) is let go unjudged.
const WINDOW_MOST_CALLS: u32 = WINDOW_CALLS * 16;
/// Hits per fill below which a filled statement starts passing through.
pub const ENTER_BELOW: f64 = 0.05;
/// Hits per sampled fill at which a passing statement is filled again.
pub const LEAVE_AT: f64 = 0.25;
/// While passing through, one miss in this many is filled.
pub const SAMPLE: u32 = 16;

pub use crate::config::PassThrough as Policy;

#[derive(Default)]
pub struct PassThrough {
    passing: AtomicBool,
    calls: AtomicU32,
    hits: AtomicU32,
    fills: AtomicU32,
    /// Counts misses while passing, to fill one in `SAMPLE`.
    misses: AtomicU32,
    /// Misses answered without being cached because the statement was passing through.
    passed: AtomicU64,
    /// Whether a window was judged yet, and its hit ratio and hits per fill (thousandths).
    judged: AtomicBool,
    judged_hit_ratio: AtomicU32,
    judged_hits_per_fill: AtomicU32,
}

impl PassThrough {
    /// A call, answered from the cache (`hit`) or not. Judges the window it completes.
    #[inline]
    pub fn called(&self, hit: bool) {
        let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        if calls >= WINDOW_CALLS {
            self.judge(calls);
        }
    }

    /// A result of the statement was cached.
    pub fn filled(&self) {
        self.fills.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a miss's result is to be cached; false: pass it through (counted).
    pub fn fill_this_miss(&self, policy: Policy) -> bool {
        if !self.is_passing(policy) {
            return true;
        }
        if self
            .misses
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SAMPLE)
        {
            return true;
        }
        self.passed.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Whether its misses pass through now (under `auto`, as its last window judged).
    pub fn is_passing(&self, policy: Policy) -> bool {
        match policy {
            Policy::Auto => self.passing.load(Ordering::Relaxed),
            Policy::Always => true,
            Policy::Never => false,
        }
    }

    /// Misses passed through since the statement was learned (or its figures reset).
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Relaxed)
    }

    /// The hit ratio and hits per fill of the window judged last (None before the first).
    pub fn judged(&self) -> Option<(f64, f64)> {
        self.judged.load(Ordering::Relaxed).then(|| {
            (
                f64::from(self.judged_hit_ratio.load(Ordering::Relaxed)) / 1000.0,
                f64::from(self.judged_hits_per_fill.load(Ordering::Relaxed)) / 1000.0,
            )
        })
    }

    /// PGCACHE.QUERIES RESET: the count starts over; the judgement stands.
    pub fn reset(&self) {
        self.passed.store(0, Ordering::Relaxed);
    }

    /// Judges a window of `calls` calls once it holds enough fills (or lets it go, when too
    /// many calls brought too few); whatever the policy, so `auto` finds it judged.
    #[cold]
    #[inline(never)]
    fn judge(&self, calls: u32) {
        let fills = self.fills.load(Ordering::Relaxed);
        if fills < WINDOW_FILLS && calls < WINDOW_MOST_CALLS {
            return;
        }
        let hits = self.hits.swap(0, Ordering::Relaxed);
        self.calls.store(0, Ordering::Relaxed);
        self.fills.store(0, Ordering::Relaxed);
        if fills < WINDOW_FILLS {
            return;
        }
        let hits_per_fill = f64::from(hits) / f64::from(fills);
        let thousandths = |x: f64| (x * 1000.0).round().min(f64::from(u32::MAX)) as u32;
        self.judged_hit_ratio.store(
            thousandths(f64::from(hits) / f64::from(calls)),
            Ordering::Relaxed,
        );
        self.judged_hits_per_fill
            .store(thousandths(hits_per_fill), Ordering::Relaxed);
        self.judged.store(true, Ordering::Relaxed);
        let passing = if self.passing.load(Ordering::Relaxed) {
            hits_per_fill < LEAVE_AT
        } else {
            hits_per_fill < ENTER_BELOW
        };
        self.passing.store(passing, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs `windows` windows of calls on `p`, each miss filled when `p` says so and each
    /// filled result then hit `hits_per_fill` times (at most; the window's calls bound it).
    fn run(p: &PassThrough, windows: u32, hits_per_fill: u32, policy: Policy) {
        for _ in 0..windows * WINDOW_CALLS {
            // A miss, filled or passed through; then its result's hits, if it was filled.
            p.called(false);
            if p.fill_this_miss(policy) {
                p.filled();
                for _ in 0..hits_per_fill {
                    p.called(true);
                }
            }
        }
    }

    #[test]
    fn results_never_hit_pass_through_and_come_back_once_they_are_hit() {
        let p = PassThrough::default();
        assert!(!p.is_passing(Policy::Auto));
        assert_eq!(p.judged(), None);
        run(&p, 2, 0, Policy::Auto);
        assert!(p.is_passing(Policy::Auto));
        assert_eq!(p.judged(), Some((0.0, 0.0)));
        let passed = p.passed();
        assert!(passed > 0);
        // One miss in SAMPLE is still filled.
        let filled = (0..SAMPLE * 4)
            .filter(|_| p.fill_this_miss(Policy::Auto))
            .count();
        assert_eq!(filled, 4);
        assert_eq!(p.passed(), passed + u64::from(SAMPLE * 4 - 4));
        // Its results live now: each sampled fill is hit.
        run(&p, 40, 1, Policy::Auto);
        assert!(!p.is_passing(Policy::Auto));
        let (ratio, per_fill) = p.judged().unwrap();
        assert!(per_fill >= LEAVE_AT && ratio > 0.0, "{ratio} {per_fill}");
    }

    #[test]
    fn the_policy_overrides_the_judgement_but_the_judging_goes_on() {
        let p = PassThrough::default();
        assert!(p.is_passing(Policy::Always));
        let filled = (0..SAMPLE)
            .filter(|_| p.fill_this_miss(Policy::Always))
            .count();
        assert_eq!(filled, 1, "one in SAMPLE, even under `always`");
        assert!(!p.is_passing(Policy::Auto), "nothing judged yet");
        run(&p, 2, 0, Policy::Never);
        assert!(!p.is_passing(Policy::Never));
        assert!(p.is_passing(Policy::Auto), "judged while `never` held");
        p.reset();
        assert_eq!(p.passed(), 0);
        assert!(p.is_passing(Policy::Auto), "a reset keeps the judgement");
    }

    #[test]
    fn a_window_without_enough_fills_is_not_judged() {
        let p = PassThrough::default();
        for _ in 0..WINDOW_MOST_CALLS * 2 {
            p.called(false);
        }
        assert_eq!(p.judged(), None);
        assert!(!p.is_passing(Policy::Auto));
    }

    proptest! {
        /// Whatever the hits per fill, a statement passes through only below the entry
        /// threshold, and one passing comes back at or above the exit threshold.
        #[test]
        fn the_thresholds_decide(hits in 0u32..6, fills in 8u32..64, passing in any::<bool>()) {
            let p = PassThrough::default();
            p.passing.store(passing, Ordering::Relaxed);
            for _ in 0..fills {
                p.filled();
            }
            for _ in 0..hits {
                p.called(true);
            }
            for _ in hits..WINDOW_CALLS {
                p.called(false);
            }
            let per_fill = f64::from(hits) / f64::from(fills);
            let expected = if passing { per_fill < LEAVE_AT } else { per_fill < ENTER_BELOW };
            prop_assert_eq!(p.is_passing(Policy::Auto), expected);
            prop_assert_eq!(p.judged().map(|(_, f)| (f * 1000.0).round() as u32),
                Some((per_fill * 1000.0).round() as u32));
        }
    }
}
