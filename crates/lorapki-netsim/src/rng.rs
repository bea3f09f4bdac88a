//! A small deterministic generator for the simulator's own decisions (faults, channels, jitter).
//!
//! Key material never comes from here: devices and the server draw from their crypto backends.

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, one multiply-xorshift per draw.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator whose output is a pure function of `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// An independent stream for `index` (a device, a shard), derived from `seed`.
    #[must_use]
    pub fn derive(seed: u64, index: u64) -> Self {
        let mut base = Self::new(seed ^ index.wrapping_mul(0xa076_1d64_78bd_642f));
        Self::new(base.next_u64() ^ index)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_spread() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut hits = 0;
        for _ in 0..10_000 {
            if a.chance(0.1) {
                hits += 1;
            }
        }
        assert!((800..1200).contains(&hits), "{hits}");
        assert_ne!(
            SimRng::derive(1, 0).next_u64(),
            SimRng::derive(1, 1).next_u64()
        );
    }
}
