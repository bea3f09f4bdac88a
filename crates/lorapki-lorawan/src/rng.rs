//! [`ChannelRng`]: the random source `lorawan-device` draws its channels from.

use rand_core_06::{Error, RngCore, impls};

/// A SplitMix64 generator (Steele, Lea, Flood: "Fast splittable pseudorandom number generators",
/// OOPSLA 2014) seeded from the crypto backend.
///
/// `lorawan-device` uses its RNG for two things: the channel of each uplink, which needs a uniform
/// choice but no secrecy, and the DevNonce of its own JoinRequest, which this adapter replaces by
/// the persisted counter (see the crate documentation). Nothing secret is drawn from it.
#[derive(Clone, Debug)]
pub struct ChannelRng {
    state: u64,
}

impl ChannelRng {
    /// A generator starting from `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl RngCore for ChannelRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        impls::fill_bytes_via_next(self, dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // The first outputs of SplitMix64 from seed 0, as published with the algorithm.
        let mut rng = ChannelRng::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn channel_choices_spread_over_eight_channels() {
        let mut rng = ChannelRng::new(7);
        let mut seen = [0u32; 8];
        for _ in 0..8000 {
            seen[(rng.next_u32() & 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
