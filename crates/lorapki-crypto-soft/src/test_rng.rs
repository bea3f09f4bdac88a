//! [`TestRng`]: a seeded, reproducible generator for tests (feature `test-rng`).

use core::convert::Infallible;

use rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest, Sha384};

/// A seeded, **reproducible** random number generator for tests and simulations: SHA-384 in
/// counter mode over a 64-bit seed (`block_i = SHA-384(seed ‖ i)`).
///
/// It claims `CryptoRng` only so that it can drive a [`SoftBackend`](crate::SoftBackend) in tests.
/// Its whole state is the seed: anyone who knows or guesses the seed knows every key it makes.
/// Never use it outside tests; the `test-rng` feature belongs in `[dev-dependencies]` only.
#[derive(Debug, Clone)]
pub struct TestRng {
    seed: u64,
    counter: u64,
    block: [u8; 48],
    used: usize,
}

impl TestRng {
    /// A generator whose output is a pure function of `seed`.
    #[must_use]
    pub const fn from_seed(seed: u64) -> Self {
        Self {
            seed,
            counter: 0,
            block: [0; 48],
            used: 48,
        }
    }

    fn refill(&mut self) {
        let mut hasher = Sha384::new();
        hasher.update(b"lorapki test rng");
        hasher.update(self.seed.to_be_bytes());
        hasher.update(self.counter.to_be_bytes());
        self.block = hasher.finalize().into();
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }
}

impl TryRng for TestRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0u8; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            if self.used == self.block.len() {
                self.refill();
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

impl TryCryptoRng for TestRng {}
