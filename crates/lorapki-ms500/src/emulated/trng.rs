//! [`EmulatedTrng`]: raw noise words from a configurable source, good or broken.

use crate::engine::{EngineError, TrngSource};

use super::fault::Injection;

/// Where the emulated noise comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseSource {
    /// Uniform words from a seeded SplitMix64 generator: a healthy source with 8 bits of
    /// min-entropy per sample as far as any health test can tell.
    Uniform {
        /// Generator state.
        state: u64,
    },
    /// Every word is `word`: a stuck source.
    StuckAt {
        /// The word.
        word: u32,
    },
    /// Each sample is `value` with probability `per_256 / 256`, else uniform: a biased source.
    Biased {
        /// Generator state.
        state: u64,
        /// The over-represented sample value.
        value: u8,
        /// Its probability, in 1/256.
        per_256: u8,
    },
    /// The words of `pattern[..len]` over and over: a periodic source.
    Periodic {
        /// The repeating words.
        pattern: [u32; 8],
        /// How many of them repeat (1..=8).
        len: u8,
        /// The next word.
        position: u8,
    },
    /// Each sample has probability `1/2` of being 0 and is uniform otherwise: min-entropy
    /// `−log2(1/2 + 1/512) ≈ 0.99` bits per sample, just below a claim of 1 bit.
    Borderline {
        /// Generator state.
        state: u64,
    },
}

/// SplitMix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number generators", 2014).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl NoiseSource {
    /// A healthy source from `seed`.
    #[must_use]
    pub const fn uniform(seed: u64) -> Self {
        Self::Uniform { state: seed }
    }

    /// The next raw word.
    pub fn next_word(&mut self) -> u32 {
        match self {
            Self::Uniform { state } => splitmix64(state) as u32,
            Self::StuckAt { word } => *word,
            Self::Biased {
                state,
                value,
                per_256,
            } => {
                let mut bytes = [0u8; 4];
                for byte in &mut bytes {
                    let draw = splitmix64(state);
                    *byte = if (draw as u8) < *per_256 {
                        *value
                    } else {
                        (draw >> 8) as u8
                    };
                }
                u32::from_le_bytes(bytes)
            }
            Self::Periodic {
                pattern,
                len,
                position,
            } => {
                let len = (*len).clamp(1, 8);
                let word = pattern[usize::from(*position % len)];
                *position = (*position + 1) % len;
                word
            }
            Self::Borderline { state } => {
                let mut bytes = [0u8; 4];
                for byte in &mut bytes {
                    let draw = splitmix64(state);
                    *byte = if draw & 1 == 0 { 0 } else { (draw >> 8) as u8 };
                }
                u32::from_le_bytes(bytes)
            }
        }
    }
}

/// A TRNG model: one word ready every [`latency_polls`](Self::latency_polls) polls, faults
/// by word index.
#[derive(Debug, Clone)]
pub struct EmulatedTrng {
    /// The noise.
    pub source: NoiseSource,
    /// Polls that return "not ready" before each word.
    pub latency_polls: u32,
    waited: u32,
    words: u32,
    planned: Option<(u32, Injection)>,
    fired: bool,
}

impl EmulatedTrng {
    /// A TRNG over `source`.
    #[must_use]
    pub const fn new(source: NoiseSource) -> Self {
        Self {
            source,
            latency_polls: 0,
            waited: 0,
            words: 0,
            planned: None,
            fired: false,
        }
    }

    /// Injects a fault at word `index` (counted over the words delivered): `Fail(e)` makes that
    /// poll fail with `e`; `Hang` and `Busy` make the engine deliver nothing from that word on,
    /// until the injection is cleared.
    pub fn inject(&mut self, index: u32, injection: Injection) {
        self.planned = Some((index, injection));
        self.fired = false;
    }

    /// Removes the planned injection.
    pub fn clear_injection(&mut self) {
        self.planned = None;
    }

    /// Whether the planned injection has fired.
    #[must_use]
    pub const fn fired(&self) -> bool {
        self.fired
    }

    /// Words delivered so far.
    #[must_use]
    pub const fn words_delivered(&self) -> u32 {
        self.words
    }

    /// A reset: the not-ready countdown restarts.
    pub fn power_cycle(&mut self) {
        self.waited = 0;
    }
}

impl TrngSource for EmulatedTrng {
    fn poll_word(&mut self) -> Result<Option<u32>, EngineError> {
        match self.planned {
            Some((index, Injection::Hang | Injection::Busy)) if index <= self.words => {
                self.fired = true;
                return Ok(None);
            }
            Some((index, Injection::Fail(error))) if index == self.words => {
                // The faulty word is consumed.
                self.fired = true;
                self.words += 1;
                return Err(error);
            }
            _ => {}
        }
        if self.waited < self.latency_polls {
            self.waited += 1;
            return Ok(None);
        }
        self.waited = 0;
        self.words += 1;
        Ok(Some(self.source.next_word()))
    }
}
