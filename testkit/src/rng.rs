//! splitmix64: small, fast and the same on every machine, so a seed names one run (the
//! fuzzer's, chaos's, a soak's, the consistency test's).

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number from 0 to `n` - 1 (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A number from 0 to `n` - 1 (0 when `n` is 0 or less), for ids.
    pub fn below_i64(&mut self, n: i64) -> i64 {
        (self.next_u64() % n.max(1) as u64) as i64
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

/// A generated test's seed: `PGCACHE_SEED` when set to a number (to repeat a run), else
/// `default` (so `make test` draws the same every time).
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("PGCACHE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
