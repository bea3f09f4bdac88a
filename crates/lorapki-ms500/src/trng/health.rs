//! Continuous health tests of NIST SP 800-90B §4 on the raw TRNG samples.
//!
//! Every 8-bit sample the TRNG delivers passes through three tests before it may reach the
//! conditioner; the first failure latches the entropy source into the failed state
//! ([`HealthFailure`]) and the backend refuses to produce random bytes until it is recovered
//! (fail closed).
//!
//! * **Repetition Count Test** (§4.4.1): a run of `C_RCT` identical consecutive samples fails.
//!   `C_RCT = 1 + ⌈−log2(α) / H⌉`.
//! * **Adaptive Proportion Test** (§4.4.2): in each window of `W = 512` samples (the window for
//!   non-binary samples), the first sample occurring `C_APT` or more times fails.
//!   `C_APT = 1 + CRITBINOM(W, 2^−H, 1 − α)`.
//! * **Lag repetition test** (a developer-defined test, §4.5): for every lag `d` in
//!   `2..=LAG_MAX`, a run of `C_LAG` consecutive samples with `x[i] = x[i−d]` fails. RCT and APT
//!   do not see a source that cycles through a few values (a stuck ring counter, a periodic
//!   interferer); this test does. For independent samples with min-entropy `H`,
//!   `P(x[i] = x[i−d]) = Σ p_j² ≤ 2^−H`, so a run of `L` matches has probability at most
//!   `2^−H·L`; with a union bound over the `LAG_MAX − 1 < 32` lags,
//!   `C_LAG = ⌈(−log2(α) + 5) / H⌉`.
//!
//! `H` is the min-entropy per 8-bit sample that the noise source is *claimed* to have
//! ([`ClaimedEntropy`]; the MS500's SP 800-90B entropy assessment is not public, so the default
//! claim is a conservative 2 bits per byte). The false-positive probability is
//! `α = 2^−30` per test and per sample (RCT, lag test) or per window (APT) for a source that has
//! exactly the claimed entropy; a real source with more entropy fails far less often. The
//! cut-offs below are recomputed from these formulas by this module's tests.
//!
//! Before any output, the start-up test (§4.3) runs the three tests over
//! [`STARTUP_SAMPLES`] samples, which are then discarded.

use core::fmt;

use zeroize::Zeroize;

/// `−log2(α)`: the false-positive probability of each test is `α = 2^−30` (SP 800-90B §4.4
/// recommends `2^−20 ≤ α ≤ 2^−40`).
pub const ALPHA_LOG2: u32 = 30;
/// The APT window for non-binary samples (SP 800-90B §4.4.2).
pub const APT_WINDOW: u16 = 512;
/// The largest lag of the lag repetition test: periods up to 32 samples (8 TRNG words).
pub const LAG_MAX: usize = 32;
/// Samples tested and discarded at start-up (SP 800-90B §4.3: at least 1024).
pub const STARTUP_SAMPLES: u32 = 1024;
/// Security strength the conditioner serves: 256 bits (HMAC_DRBG with SHA-256).
const CONDITIONED_BITS: u32 = 256;
/// SP 800-90C: a vetted conditioning function outputs full entropy when its input has at least
/// 64 bits more entropy than its output.
const FULL_ENTROPY_MARGIN_BITS: u32 = 64;

/// The claimed min-entropy per 8-bit raw sample, which sets the health-test cut-offs and how many
/// samples the conditioner consumes per 256-bit block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClaimedEntropy {
    /// 1 bit per 8-bit sample (a very weak source).
    OneBit,
    /// 2 bits per 8-bit sample: the default, conservative without a vendor assessment.
    #[default]
    TwoBits,
    /// 4 bits per 8-bit sample.
    FourBits,
}

/// The health-test cut-offs and the conditioner's input size for one [`ClaimedEntropy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cutoffs {
    /// `C_RCT`: this many identical consecutive samples fail the Repetition Count Test.
    pub rct: u16,
    /// `C_APT`: this many occurrences of the window's first sample in a 512-sample window fail
    /// the Adaptive Proportion Test.
    pub apt: u16,
    /// `C_LAG`: this many consecutive `x[i] = x[i−d]` matches at one lag fail the lag test.
    pub lag: u16,
    /// Samples per conditioned 256-bit block: `⌈(256 + 64) / H⌉`.
    pub samples_per_block: u16,
}

impl ClaimedEntropy {
    /// The cut-offs of SP 800-90B §4.4 for `α = 2^−30` (see the module documentation).
    #[must_use]
    pub const fn cutoffs(self) -> Cutoffs {
        // C_APT = 1 + CRITBINOM(512, 2^−H, 1 − 2^−30), computed exactly and checked by the tests.
        match self {
            Self::OneBit => Cutoffs {
                rct: 31,
                apt: 325,
                lag: 35,
                samples_per_block: 320,
            },
            Self::TwoBits => Cutoffs {
                rct: 16,
                apt: 190,
                lag: 18,
                samples_per_block: 160,
            },
            Self::FourBits => Cutoffs {
                rct: 9,
                apt: 71,
                lag: 9,
                samples_per_block: 80,
            },
        }
    }

    /// The claimed min-entropy in bits per sample.
    #[must_use]
    pub const fn bits(self) -> u32 {
        match self {
            Self::OneBit => 1,
            Self::TwoBits => 2,
            Self::FourBits => 4,
        }
    }
}

/// Which health test failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HealthFailure {
    /// Repetition Count Test (SP 800-90B §4.4.1).
    RepetitionCount,
    /// Adaptive Proportion Test (SP 800-90B §4.4.2).
    AdaptiveProportion,
    /// Lag repetition test at this lag.
    LagRepetition {
        /// The lag `d`.
        lag: u8,
    },
}

impl fmt::Display for HealthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RepetitionCount => f.write_str("repetition count test failed"),
            Self::AdaptiveProportion => f.write_str("adaptive proportion test failed"),
            Self::LagRepetition { lag } => write!(f, "lag repetition test failed at lag {lag}"),
        }
    }
}

/// The three continuous tests over a stream of 8-bit samples.
///
/// Holds the last [`LAG_MAX`] raw samples (entropy material): zeroized on reset and drop.
pub struct HealthTests {
    cutoffs: Cutoffs,
    rct_value: u8,
    rct_count: u16,
    apt_value: u8,
    apt_count: u16,
    apt_position: u16,
    history: [u8; LAG_MAX],
    history_next: usize,
    history_filled: usize,
    lag_runs: [u16; LAG_MAX],
    started: bool,
}

impl HealthTests {
    /// Fresh tests with these cut-offs.
    #[must_use]
    pub const fn new(cutoffs: Cutoffs) -> Self {
        Self {
            cutoffs,
            rct_value: 0,
            rct_count: 0,
            apt_value: 0,
            apt_count: 0,
            apt_position: 0,
            history: [0; LAG_MAX],
            history_next: 0,
            history_filled: 0,
            lag_runs: [0; LAG_MAX],
            started: false,
        }
    }

    /// The cut-offs in use.
    #[must_use]
    pub const fn cutoffs(&self) -> Cutoffs {
        self.cutoffs
    }

    /// Forgets all state (after a failure, before a new start-up test).
    pub fn reset(&mut self) {
        self.zeroize_state();
        *self = Self::new(self.cutoffs);
    }

    fn zeroize_state(&mut self) {
        self.history.zeroize();
        self.rct_value.zeroize();
        self.apt_value.zeroize();
        self.lag_runs.zeroize();
    }

    /// Runs the three tests on the next sample.
    ///
    /// # Errors
    ///
    /// The first test that fails on this sample. The caller latches the failure.
    pub fn feed(&mut self, sample: u8) -> Result<(), HealthFailure> {
        // Comparisons are turned into arithmetic so that the timing does not depend on the
        // samples (only a failure changes the control flow).
        if !self.started {
            self.started = true;
            self.rct_value = sample;
            self.rct_count = 1;
            self.apt_value = sample;
            self.apt_count = 1;
            self.apt_position = 1;
            self.push_history(sample);
            return Ok(());
        }

        // Repetition Count Test.
        let same = u16::from(sample == self.rct_value);
        self.rct_count = self.rct_count.saturating_mul(same).saturating_add(1);
        self.rct_value = sample;
        if self.rct_count >= self.cutoffs.rct {
            return Err(HealthFailure::RepetitionCount);
        }

        // Adaptive Proportion Test: a new window starts with the sample after the last one.
        if self.apt_position == APT_WINDOW {
            self.apt_value = sample;
            self.apt_count = 1;
            self.apt_position = 1;
        } else {
            self.apt_count = self
                .apt_count
                .saturating_add(u16::from(sample == self.apt_value));
            self.apt_position += 1;
            if self.apt_count >= self.cutoffs.apt {
                return Err(HealthFailure::AdaptiveProportion);
            }
        }

        // Lag repetition test, lags 2..=LAG_MAX (lag 1 is the RCT).
        let mut failed_lag = 0u8;
        for lag in 2..=LAG_MAX {
            let known = usize::from(self.history_filled >= lag);
            let earlier = self.history[(self.history_next + LAG_MAX - lag) % LAG_MAX];
            let matches = u16::from(earlier == sample) * known as u16;
            let run = &mut self.lag_runs[lag - 1];
            *run = run.saturating_add(1).saturating_mul(matches);
            if *run >= self.cutoffs.lag && failed_lag == 0 {
                failed_lag = lag as u8;
            }
        }
        self.push_history(sample);
        if failed_lag != 0 {
            return Err(HealthFailure::LagRepetition { lag: failed_lag });
        }
        Ok(())
    }

    fn push_history(&mut self, sample: u8) {
        self.history[self.history_next] = sample;
        self.history_next = (self.history_next + 1) % LAG_MAX;
        self.history_filled = (self.history_filled + 1).min(LAG_MAX);
    }
}

impl Drop for HealthTests {
    fn drop(&mut self) {
        self.zeroize_state();
    }
}

impl fmt::Debug for HealthTests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthTests")
            .field("cutoffs", &self.cutoffs)
            .finish_non_exhaustive()
    }
}

/// Samples per conditioned block for a claim of `bits` per sample (`⌈(256 + 64) / H⌉`).
#[must_use]
pub const fn samples_per_block(bits: u32) -> u32 {
    (CONDITIONED_BITS + FULL_ENTROPY_MARGIN_BITS).div_ceil(bits)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// CRITBINOM(n, p, 1 − α): the smallest k with P(X ≤ k) ≥ 1 − α for X ~ Binomial(n, p),
    /// i.e. the smallest k with P(X > k) ≤ α. The upper tail is summed from the top (small
    /// terms first, accurate in f64); ln C(n, k) is built up term by term.
    fn critbinom(n: u32, p: f64, alpha: f64) -> u32 {
        let mut ln_pmf = std::vec::Vec::with_capacity(n as usize + 1);
        let mut ln_choose = 0.0f64;
        for k in 0..=n {
            if k > 0 {
                ln_choose += f64::from(n - k + 1).ln() - f64::from(k).ln();
            }
            ln_pmf.push(ln_choose + f64::from(k) * p.ln() + f64::from(n - k) * (1.0 - p).ln());
        }
        // tail = P(X ≥ k + 1) while walking k down from n.
        let mut tail = 0.0f64;
        let mut answer = n;
        for k in (0..n).rev() {
            tail += ln_pmf[k as usize + 1].exp();
            if tail <= alpha {
                answer = k;
            } else {
                break;
            }
        }
        answer
    }

    #[test]
    fn cutoffs_follow_sp800_90b_formulas() {
        let alpha = 2f64.powi(-(ALPHA_LOG2 as i32));
        for claim in [
            ClaimedEntropy::OneBit,
            ClaimedEntropy::TwoBits,
            ClaimedEntropy::FourBits,
        ] {
            let h = claim.bits();
            let cutoffs = claim.cutoffs();
            assert_eq!(
                u32::from(cutoffs.rct),
                1 + ALPHA_LOG2.div_ceil(h),
                "{claim:?}"
            );
            assert_eq!(
                u32::from(cutoffs.lag),
                (ALPHA_LOG2 + 5).div_ceil(h),
                "{claim:?}"
            );
            let p = 2f64.powi(-(h as i32));
            assert_eq!(
                u32::from(cutoffs.apt),
                1 + critbinom(u32::from(APT_WINDOW), p, alpha),
                "{claim:?}"
            );
            assert_eq!(u32::from(cutoffs.samples_per_block), samples_per_block(h));
        }
        // SP 800-90B Table 2 (α = 2^−20, W = 512) as a check of the computation itself.
        let alpha20 = 2f64.powi(-20);
        assert_eq!(1 + critbinom(512, 0.5, alpha20), 311);
        assert_eq!(1 + critbinom(512, 0.0625, alpha20), 62);
    }

    #[test]
    fn rct_trips_exactly_at_cutoff() {
        let cutoffs = ClaimedEntropy::TwoBits.cutoffs();
        let mut tests = HealthTests::new(cutoffs);
        for i in 1..cutoffs.rct {
            assert_eq!(tests.feed(7), Ok(()), "sample {i}");
        }
        assert_eq!(tests.feed(7), Err(HealthFailure::RepetitionCount));
    }

    #[test]
    fn lag_test_sees_a_short_cycle() {
        let cutoffs = ClaimedEntropy::TwoBits.cutoffs();
        let mut tests = HealthTests::new(cutoffs);
        let cycle = [1u8, 2, 3];
        let outcome = (0..200)
            .map(|i| tests.feed(cycle[i % 3]))
            .find(Result::is_err);
        assert_eq!(outcome, Some(Err(HealthFailure::LagRepetition { lag: 3 })));
    }

    #[test]
    fn reset_forgets() {
        let cutoffs = ClaimedEntropy::TwoBits.cutoffs();
        let mut tests = HealthTests::new(cutoffs);
        for _ in 1..cutoffs.rct {
            tests.feed(7).unwrap();
        }
        tests.reset();
        assert_eq!(tests.feed(7), Ok(()));
        assert_eq!(tests.history, {
            let mut h = [0; LAG_MAX];
            h[0] = 7;
            h
        });
    }
}
