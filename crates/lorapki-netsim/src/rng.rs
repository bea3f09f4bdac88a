//! The simulator's deterministic generators: [`SimRng`] for its own decisions (faults, channels,
//! placement), and [`SeededRng`], the random source of every simulated party's crypto backend
//! ([`Backend`]): keys, ephemerals, session numbers and back-off jitter.
//!
//! Both are pure functions of their seed, so a scenario replays exactly; neither is secret.
//! Keys made in a simulation are simulation keys: never use them anywhere else.

use core::convert::Infallible;

use lorapki_crypto_soft::SoftBackend;
use lorapki_crypto_soft::rand_core::{TryCryptoRng, TryRng};

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

/// Separates the key streams of [`SeededRng`] from the [`SimRng`] streams of the same seed.
const KEY_STREAM: u64 = 0x6b65_7973; // "keys"

/// The random source of the simulated parties' crypto backends: a [`SimRng`] stream, offered
/// through the `rand_core` traits that [`SoftBackend`] takes.
///
/// It claims `CryptoRng` only so that it can drive a backend: its whole state is a 64-bit seed,
/// and anyone who knows the seed knows every key it makes. This crate is test and benchmark
/// infrastructure; nothing here is for production.
#[derive(Clone, Debug)]
pub struct SeededRng(SimRng);

impl SeededRng {
    /// A generator whose output is a pure function of `seed`.
    #[must_use]
    pub fn from_seed(seed: u64) -> Self {
        Self(SimRng::derive(seed, KEY_STREAM))
    }
}

impl TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0.next_u64() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

impl TryCryptoRng for SeededRng {}

/// The software backend every simulated party uses (seeded, reproducible).
pub type Backend = SoftBackend<SeededRng>;

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

    #[test]
    fn seeded_rng_is_reproducible_and_fills_any_length() {
        let fill = |seed: u64, n: usize| {
            let mut out = vec![0u8; n];
            let Ok(()) = SeededRng::from_seed(seed).try_fill_bytes(&mut out);
            out
        };
        assert_eq!(fill(5, 37), fill(5, 37));
        assert_ne!(fill(5, 37), fill(6, 37));
        // A shorter draw is a prefix of a longer one; the key stream is not the SimRng stream.
        assert_eq!(fill(5, 37)[..13], fill(5, 13)[..]);
        assert_ne!(fill(5, 8), SimRng::new(5).next_u64().to_le_bytes());
    }
}
