//! Whether what a QUERY statement or a table's READs cache lives long enough to be worth
//! caching.
//!
//! A result (or row) that changes dropped before anyone read it again cost its fill (the
//! write, a result's generations, a row-precise one's place in the index) and saved nothing.
//! A statement or table whose entries die that way passes its misses through: PostgreSQL's
//! answer goes straight back to the client, nothing cached.
//!
//! It is judged window by window on its hits per miss: what each miss's fill came to, had
//! every miss been filled (clients that joined a fill in flight count as hits: the fill
//! answered them). Below `ENTER_BELOW` (not one hit in 20 misses) it starts passing through.
//! While it does, one miss in `SAMPLE` is still filled, and the entries cached before still
//! answer: the hits per miss then say how long entries live now, and at `LEAVE_AT` (its
//! tables change less, its readers read more) it is filled again. Hits per miss, not per
//! fill: passing through fills 16 times fewer, and entries of the same life would then seem
//! to be hit 16 times more, leaving pass-through as soon as it began. The two thresholds
//! apart keep one near either from flapping.
//!
//! The figures are atomics: they are shared between threads, though only the main thread
//! counts. Pure logic: no Redis, no PostgreSQL.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Calls a window holds before it is judged.
pub const WINDOW_CALLS: u32 = 256;
/// Misses a window needs to be judged, unless it holds `WINDOW_MOST_CALLS` calls: hits per
/// miss over fewer says little.
pub const WINDOW_MISSES: u32 = 8;
/// Calls after which a window is judged however few its misses (nearly all hits: its entries
/// live).
const WINDOW_MOST_CALLS: u32 = WINDOW_CALLS * 16;
/// Hits per miss below which a filled statement or table starts passing through.
pub const ENTER_BELOW: f64 = 0.05;
/// Hits per miss at which a passing one is filled again.
pub const LEAVE_AT: f64 = 0.25;
/// While passing through, one miss in this many is filled.
pub const SAMPLE: u32 = 16;

/// `pass_through`: whether statements and tables may pass their misses through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// As each one's hits per miss say.
    Auto,
    /// Every one passes through (one miss in `SAMPLE` still filled).
    Always,
    /// None does.
    Never,
}

impl Policy {
    pub fn parse(value: &str) -> Option<Policy> {
        match value.to_ascii_lowercase().as_str() {
            "auto" => Some(Policy::Auto),
            "always" => Some(Policy::Always),
            "never" => Some(Policy::Never),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::Auto => "auto",
            Policy::Always => "always",
            Policy::Never => "never",
        }
    }
}

#[derive(Default)]
pub struct PassThrough {
    passing: AtomicBool,
    /// The window: the misses in it, the clients that joined a fill in flight, and the
    /// owner's hit count when it began. Hits are read from the owner's own counter as misses
    /// come (`missed`), so a hit costs nothing here.
    window_misses: AtomicU32,
    joined: AtomicU32,
    hits_before: AtomicU64,
    /// Counts misses while passing, to fill one in `SAMPLE`.
    sampled: AtomicU32,
    /// Misses answered without being cached because it was passing through.
    passed: AtomicU64,
    /// Whether a window was judged yet, and its hit ratio and hits per miss (thousandths).
    judged: AtomicBool,
    judged_hit_ratio: AtomicU32,
    judged_hits_per_miss: AtomicU32,
}

impl PassThrough {
    /// `n` calls answered from PostgreSQL, the owner's hits so far being `hits` (its
    /// cumulative count, which a reset may have taken back to 0). Judges the window they
    /// complete. A statement or table with no misses has nothing to pass through, and is not
    /// judged until it misses again.
    pub fn missed(&self, n: u32, hits: u64) {
        let misses = self
            .window_misses
            .fetch_add(n, Ordering::Relaxed)
            .wrapping_add(n);
        let before = self.hits_before.load(Ordering::Relaxed);
        if hits < before {
            // The owner's figures were reset: the window starts again from them.
            self.hits_before.store(hits, Ordering::Relaxed);
            return;
        }
        let window_hits = u32::try_from(hits - before)
            .unwrap_or(u32::MAX)
            .saturating_add(self.joined.load(Ordering::Relaxed));
        let calls = misses.saturating_add(window_hits);
        if calls >= WINDOW_CALLS && (misses >= WINDOW_MISSES || calls >= WINDOW_MOST_CALLS) {
            self.judge(calls, misses, window_hits, hits);
        }
    }

    /// A client joined a fill in flight instead of asking PostgreSQL itself.
    pub fn joined(&self) {
        self.joined.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a miss's result is to be cached; false: pass it through (counted).
    pub fn fill_this_miss(&self, policy: Policy) -> bool {
        if !self.is_passing(policy) {
            return true;
        }
        if self
            .sampled
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SAMPLE)
        {
            return true;
        }
        self.passed.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Whether misses pass through now (under `auto`, as the last window judged).
    pub fn is_passing(&self, policy: Policy) -> bool {
        match policy {
            Policy::Auto => self.passing.load(Ordering::Relaxed),
            Policy::Always => true,
            Policy::Never => false,
        }
    }

    /// Misses passed through since the figures began (or were reset).
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Relaxed)
    }

    /// The hit ratio and hits per miss of the window judged last (None before the first).
    pub fn judged(&self) -> Option<(f64, f64)> {
        self.judged.load(Ordering::Relaxed).then(|| {
            (
                f64::from(self.judged_hit_ratio.load(Ordering::Relaxed)) / 1000.0,
                f64::from(self.judged_hits_per_miss.load(Ordering::Relaxed)) / 1000.0,
            )
        })
    }

    /// PGCACHE.QUERIES RESET: the count starts over; the judgement stands.
    pub fn reset(&self) {
        self.passed.store(0, Ordering::Relaxed);
    }

    /// Judges a window of `calls` calls, `misses` of them misses and `hits` hits (the
    /// owner's count `total` at its end); whatever the policy, so `auto` finds it judged.
    fn judge(&self, calls: u32, misses: u32, hits: u32, total: u64) {
        self.window_misses.store(0, Ordering::Relaxed);
        self.joined.store(0, Ordering::Relaxed);
        self.hits_before.store(total, Ordering::Relaxed);
        let hits_per_miss = f64::from(hits) / f64::from(misses.max(1));
        let thousandths = |x: f64| (x * 1000.0).round().min(f64::from(u32::MAX)) as u32;
        self.judged_hit_ratio.store(
            thousandths(f64::from(hits) / f64::from(calls)),
            Ordering::Relaxed,
        );
        self.judged_hits_per_miss
            .store(thousandths(hits_per_miss), Ordering::Relaxed);
        self.judged.store(true, Ordering::Relaxed);
        let passing = if self.passing.load(Ordering::Relaxed) {
            hits_per_miss < LEAVE_AT
        } else {
            hits_per_miss < ENTER_BELOW
        };
        self.passing.store(passing, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A statement or table: its pass-through and its own hit count.
    #[derive(Default)]
    struct Owner {
        p: PassThrough,
        hits: u64,
    }

    impl Owner {
        fn hit(&mut self) {
            self.hits += 1;
        }

        fn miss(&mut self) {
            self.p.missed(1, self.hits);
        }

        /// `windows` windows of misses, each filled when the policy says so and each filled
        /// entry then hit `hits_per_fill` times.
        fn run(&mut self, windows: u32, hits_per_fill: u32, policy: Policy) {
            for _ in 0..windows * WINDOW_CALLS {
                let fill = self.p.fill_this_miss(policy);
                self.miss();
                if fill {
                    for _ in 0..hits_per_fill {
                        self.hit();
                    }
                }
            }
        }
    }

    #[test]
    fn entries_never_hit_pass_through_and_come_back_once_they_are_hit() {
        let mut o = Owner::default();
        assert!(!o.p.is_passing(Policy::Auto));
        assert_eq!(o.p.judged(), None);
        o.run(2, 0, Policy::Auto);
        assert!(o.p.is_passing(Policy::Auto));
        assert_eq!(o.p.judged(), Some((0.0, 0.0)));
        let passed = o.p.passed();
        assert!(passed > 0);
        // One miss in SAMPLE is still filled.
        let filled = (0..SAMPLE * 4)
            .filter(|_| o.p.fill_this_miss(Policy::Auto))
            .count();
        assert_eq!(filled, 4);
        assert_eq!(o.p.passed(), passed + u64::from(SAMPLE * 4 - 4));
        // Its entries live now: each sampled fill is hit often.
        o.run(4, 8, Policy::Auto);
        assert!(!o.p.is_passing(Policy::Auto));
        let (ratio, per_miss) = o.p.judged().unwrap();
        assert!(per_miss >= LEAVE_AT && ratio > 0.0, "{ratio} {per_miss}");
    }

    #[test]
    fn entries_hit_a_little_neither_enter_nor_flap() {
        // One hit for 30 misses: under the entry threshold. Counted per sampled fill once
        // passing, the same hits would seem 16 times more and leave at once.
        let mut o = Owner::default();
        for _ in 0..20 {
            for _ in 0..WINDOW_CALLS {
                o.miss();
            }
            for _ in 0..WINDOW_CALLS / 30 {
                o.hit();
            }
        }
        assert!(o.p.is_passing(Policy::Auto));
        for _ in 0..20 {
            for _ in 0..WINDOW_CALLS {
                o.miss();
            }
            for _ in 0..WINDOW_CALLS / 30 {
                o.hit();
            }
            assert!(o.p.is_passing(Policy::Auto), "stays passing");
        }
    }

    #[test]
    fn clients_that_joined_a_fill_count_as_its_hits() {
        let mut o = Owner::default();
        for _ in 0..WINDOW_CALLS / 2 {
            o.p.joined();
            o.miss();
        }
        assert_eq!(o.p.judged().map(|(_, per_miss)| per_miss), Some(1.0));
        assert!(!o.p.is_passing(Policy::Auto));
    }

    #[test]
    fn the_policy_overrides_the_judgement_but_the_judging_goes_on() {
        let mut o = Owner::default();
        assert!(o.p.is_passing(Policy::Always));
        let filled = (0..SAMPLE)
            .filter(|_| o.p.fill_this_miss(Policy::Always))
            .count();
        assert_eq!(filled, 1, "one in SAMPLE, even under `always`");
        assert!(!o.p.is_passing(Policy::Auto), "nothing judged yet");
        o.run(2, 0, Policy::Never);
        assert!(!o.p.is_passing(Policy::Never));
        assert!(o.p.is_passing(Policy::Auto), "judged while `never` held");
        o.p.reset();
        assert_eq!(o.p.passed(), 0);
        assert!(o.p.is_passing(Policy::Auto), "a reset keeps the judgement");
    }

    #[test]
    fn the_policy_reads_as_the_setting_spells_it() {
        for policy in [Policy::Auto, Policy::Always, Policy::Never] {
            assert_eq!(Policy::parse(policy.name()), Some(policy));
        }
        assert_eq!(Policy::parse("ALWAYS"), Some(Policy::Always));
        assert_eq!(Policy::parse("sometimes"), None);
    }

    #[test]
    fn misses_counted_together_are_judged_as_one_by_one() {
        let p = PassThrough::default();
        p.missed(WINDOW_CALLS, 0);
        assert_eq!(p.judged(), Some((0.0, 0.0)));
        assert!(p.is_passing(Policy::Auto));
    }

    #[test]
    fn a_passing_one_nearly_all_hits_is_filled_again() {
        let mut o = Owner::default();
        o.run(2, 0, Policy::Auto);
        assert!(o.p.is_passing(Policy::Auto));
        // Too few misses for a window of 256 calls, but 4,096 calls say enough.
        for _ in 0..WINDOW_MOST_CALLS {
            o.hit();
        }
        o.miss();
        assert!(!o.p.is_passing(Policy::Auto));
    }

    #[test]
    fn hits_counted_before_a_reset_of_the_owner_s_figures_are_not_taken_for_new_ones() {
        let mut o = Owner::default();
        for _ in 0..1000 {
            o.hit();
        }
        o.miss();
        // The owner's figures reset: its count starts again under the window's start.
        o.hits = 0;
        for _ in 0..WINDOW_CALLS {
            o.miss();
        }
        assert_eq!(o.p.judged(), Some((0.0, 0.0)));
    }

    proptest! {
        /// Whatever the hits per miss, one passes through only below the entry threshold,
        /// and one passing comes back at or above the exit threshold.
        #[test]
        fn the_thresholds_decide(hits in 0u32..200, passing in any::<bool>()) {
            let mut o = Owner::default();
            o.p.passing.store(passing, Ordering::Relaxed);
            for _ in 0..hits {
                o.hit();
            }
            let misses = WINDOW_CALLS - hits;
            for _ in 0..misses {
                o.miss();
            }
            let per_miss = f64::from(hits) / f64::from(misses);
            let expected = if passing { per_miss < LEAVE_AT } else { per_miss < ENTER_BELOW };
            prop_assert_eq!(o.p.is_passing(Policy::Auto), expected);
            prop_assert_eq!(o.p.judged().map(|(_, m)| (m * 1000.0).round() as u32),
                Some((per_miss * 1000.0).round() as u32));
        }
    }
}
