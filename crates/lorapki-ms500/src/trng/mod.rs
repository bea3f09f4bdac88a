//! Random numbers from the TRNG: SP 800-90B health tests, SHA-256 conditioning, HMAC_DRBG.
//!
//! ```text
//!  TRNG words ─▶ 8-bit samples ─▶ health tests ─▶ SHA-256 conditioner ─▶ HMAC_DRBG ─▶ keys, nonces
//!               (4 per word)      (RCT, APT, lag;  (≥ 320 bits of claimed  (SP 800-90A,
//!                                  fail closed)     entropy per 256 bits)   SHA-256)
//! ```
//!
//! * **Health tests** ([`health`]): every raw sample, including the start-up samples, goes
//!   through the Repetition Count, Adaptive Proportion and lag repetition tests. A failure latches
//!   the source: no random byte leaves the backend until
//!   [`Ms500Backend::recover_rng`](crate::Ms500Backend::recover_rng) has run the start-up test
//!   again and re-instantiated the DRBG (or the device restarts).
//! * **Conditioning**: SHA-256, a vetted conditioning function (SP 800-90B §3.1.5.1.1), over
//!   enough samples to carry 256 + 64 bits of claimed min-entropy, so that its 256-bit output has
//!   full entropy (SP 800-90C). Raw samples are never used as random bytes.
//! * **DRBG** ([`drbg`]): HMAC_DRBG with SHA-256, instantiated from two conditioned blocks
//!   (entropy input and nonce), reseeded every [`drbg::RESEED_INTERVAL`] requests, and reseeded
//!   before every private key (prediction resistance for keys).
//!
//! An engine error of the TRNG (timeout, fault) fails only the request at hand and makes the next
//! request run the start-up test again before it trusts the source.

pub mod drbg;
pub mod health;

use embedded_hal::delay::DelayNs;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::engine::{EngineError, TrngSource};
use crate::wait::{Timeouts, trng_word};
use drbg::{DrbgError, HmacDrbg, MAX_REQUEST_BYTES};
use health::{ClaimedEntropy, HealthFailure, HealthTests, STARTUP_SAMPLES};

/// Personalization string of the DRBG (SP 800-90A §8.7.1).
const PERSONALIZATION: &[u8] = b"lorapki-ms500 HMAC_DRBG v1";
/// Domain label hashed ahead of the samples of each conditioned block.
const CONDITIONER_LABEL: &[u8] = b"lorapki-ms500 SHA-256 conditioner";

/// The state of the random number generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RngStatus {
    /// The start-up test has not run yet (or must run again after a TRNG engine error).
    NotStarted,
    /// Healthy and instantiated.
    Healthy,
    /// A health test failed; random bytes are refused until recovery.
    Failed(HealthFailure),
}

/// Why the generator refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RngError {
    Health(HealthFailure),
    Engine(EngineError),
}

impl From<RngError> for lorapki_crypto::Error {
    fn from(error: RngError) -> Self {
        match error {
            RngError::Engine(EngineError::Tamper) => Self::Tamper,
            RngError::Health(_) | RngError::Engine(_) => Self::Rng,
        }
    }
}

/// The TRNG with its health tests, conditioner and DRBG.
pub(crate) struct Rng<T> {
    trng: T,
    health: HealthTests,
    claim: ClaimedEntropy,
    status: RngStatus,
    drbg: Option<HmacDrbg>,
    samples_tested: u64,
}

impl<T> Rng<T> {
    pub(crate) const fn status(&self) -> RngStatus {
        self.status
    }

    pub(crate) const fn samples_tested(&self) -> u64 {
        self.samples_tested
    }

    pub(crate) fn trng_mut(&mut self) -> &mut T {
        &mut self.trng
    }

    pub(crate) fn into_trng(self) -> T {
        // `self.drbg` and `self.health` zeroize on drop.
        let Self { trng, .. } = self;
        trng
    }

    /// Forgets the DRBG state (tamper response).
    pub(crate) fn wipe(&mut self) {
        self.drbg = None;
        self.health.reset();
        if self.status == RngStatus::Healthy {
            self.status = RngStatus::NotStarted;
        }
    }
}

impl<T: TrngSource> Rng<T> {
    pub(crate) fn new(trng: T, claim: ClaimedEntropy) -> Self {
        Self {
            trng,
            health: HealthTests::new(claim.cutoffs()),
            claim,
            status: RngStatus::NotStarted,
            drbg: None,
            samples_tested: 0,
        }
    }

    fn latch(&mut self, failure: HealthFailure) -> RngError {
        self.status = RngStatus::Failed(failure);
        self.drbg = None;
        crate::log::warn!("TRNG health test failed: {}", failure);
        RngError::Health(failure)
    }

    /// One raw word, every sample of which passed the health tests.
    fn tested_word<D: DelayNs>(
        &mut self,
        delay: &mut D,
        timeouts: &Timeouts,
    ) -> Result<[u8; 4], RngError> {
        let word = match trng_word(&mut self.trng, delay, timeouts) {
            Ok(word) => word,
            Err(error) => {
                // A source that misbehaved is tested again from scratch before it is trusted.
                if self.status == RngStatus::Healthy {
                    self.status = RngStatus::NotStarted;
                }
                return Err(RngError::Engine(error));
            }
        };
        let samples = word.to_le_bytes();
        for sample in samples {
            self.samples_tested += 1;
            if let Err(failure) = self.health.feed(sample) {
                return Err(self.latch(failure));
            }
        }
        Ok(samples)
    }

    /// The start-up test of SP 800-90B §4.3: `STARTUP_SAMPLES` samples tested and discarded.
    fn startup_test<D: DelayNs>(
        &mut self,
        delay: &mut D,
        timeouts: &Timeouts,
    ) -> Result<(), RngError> {
        self.health.reset();
        for _ in 0..STARTUP_SAMPLES / 4 {
            let mut samples = self.tested_word(delay, timeouts)?;
            samples.zeroize();
        }
        Ok(())
    }

    /// One conditioned 256-bit block: SHA-256 over a label and enough tested samples to carry
    /// 256 + 64 bits of claimed min-entropy.
    fn conditioned_block<D: DelayNs>(
        &mut self,
        delay: &mut D,
        timeouts: &Timeouts,
        purpose: u8,
        out: &mut [u8; 32],
    ) -> Result<(), RngError> {
        let mut hasher = Sha256::new();
        hasher.update(CONDITIONER_LABEL);
        hasher.update([purpose]);
        let words = u32::from(self.claim.cutoffs().samples_per_block).div_ceil(4);
        for _ in 0..words {
            let mut samples = self.tested_word(delay, timeouts)?;
            hasher.update(samples);
            samples.zeroize();
        }
        out.copy_from_slice(&hasher.finalize());
        Ok(())
    }

    /// Runs the start-up test if needed and instantiates the DRBG if it has no state.
    fn ensure_ready<D: DelayNs>(
        &mut self,
        delay: &mut D,
        timeouts: &Timeouts,
    ) -> Result<(), RngError> {
        match self.status {
            RngStatus::Failed(failure) => return Err(RngError::Health(failure)),
            RngStatus::NotStarted => {
                self.startup_test(delay, timeouts)?;
                self.status = RngStatus::Healthy;
            }
            RngStatus::Healthy => {}
        }
        if self.drbg.is_none() {
            let mut entropy = [0u8; 32];
            let mut nonce = [0u8; 32];
            let result = self
                .conditioned_block(delay, timeouts, 1, &mut entropy)
                .and_then(|()| self.conditioned_block(delay, timeouts, 2, &mut nonce));
            if result.is_ok() {
                self.drbg = Some(HmacDrbg::instantiate(
                    &entropy,
                    &nonce[..16],
                    PERSONALIZATION,
                ));
            }
            entropy.zeroize();
            nonce.zeroize();
            result?;
        }
        Ok(())
    }

    fn reseed<D: DelayNs>(&mut self, delay: &mut D, timeouts: &Timeouts) -> Result<(), RngError> {
        let mut entropy = [0u8; 32];
        let result = self.conditioned_block(delay, timeouts, 3, &mut entropy);
        if result.is_ok()
            && let Some(drbg) = self.drbg.as_mut()
        {
            drbg.reseed(&entropy, &[]);
        }
        entropy.zeroize();
        result
    }

    /// Starts the generator: start-up test and instantiation.
    pub(crate) fn start<D: DelayNs>(
        &mut self,
        delay: &mut D,
        timeouts: &Timeouts,
    ) -> Result<(), RngError> {
        self.ensure_ready(delay, timeouts)
    }

    /// Clears a latched health failure: new start-up test, new DRBG instance.
    pub(crate) fn recover<D: DelayNs>(
        &mut self,
        delay: &mut D,
        timeouts: &Timeouts,
    ) -> Result<(), RngError> {
        self.status = RngStatus::NotStarted;
        self.drbg = None;
        self.ensure_ready(delay, timeouts)
    }

    /// Fills `out` from the DRBG. With `prediction_resistance`, reseeds from the TRNG first
    /// (used for private keys).
    pub(crate) fn fill<D: DelayNs>(
        &mut self,
        delay: &mut D,
        timeouts: &Timeouts,
        out: &mut [u8],
        prediction_resistance: bool,
    ) -> Result<(), RngError> {
        self.ensure_ready(delay, timeouts)?;
        if prediction_resistance {
            self.reseed(delay, timeouts)?;
        }
        for chunk in out.chunks_mut(MAX_REQUEST_BYTES) {
            let needs_reseed = self.drbg.as_ref().is_some_and(HmacDrbg::reseed_required);
            if needs_reseed {
                self.reseed(delay, timeouts)?;
            }
            let Some(drbg) = self.drbg.as_mut() else {
                return Err(RngError::Engine(EngineError::Fault));
            };
            match drbg.generate(chunk, &[]) {
                Ok(()) => {}
                // Reseeded just above, and chunks respect the request limit.
                Err(DrbgError::ReseedRequired | DrbgError::RequestTooLong) => {
                    return Err(RngError::Engine(EngineError::Fault));
                }
            }
        }
        Ok(())
    }
}
