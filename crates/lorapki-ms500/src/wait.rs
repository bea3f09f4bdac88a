//! Bounded waits: every engine command runs under a budget, with a `DelayNs` between polls.
//!
//! There is no loop in this crate that waits on hardware without a bound. A command that does not
//! start within [`Timeouts::busy_us`] gives [`EngineError::Busy`]; one that does not finish within
//! its engine's budget is aborted and gives [`EngineError::Timeout`].

use embedded_hal::delay::DelayNs;

use crate::engine::{AesCommand, AesEngine, Engine, EngineError, PkaCommand, PkaEngine, Progress};

/// Time budgets and poll intervals of the engines, in microseconds.
///
/// The defaults are generous for a Cortex-M at tens of MHz: a P-384 scalar multiplication on a
/// PKA takes milliseconds to tens of milliseconds; AES blocks take microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Timeouts {
    /// How long to retry a command that the engine refuses as busy.
    pub busy_us: u32,
    /// Budget of one PKA command.
    pub pka_us: u32,
    /// Poll interval of the PKA.
    pub pka_poll_us: u32,
    /// Budget of one AES command.
    pub aes_us: u32,
    /// Poll interval of the AES engine.
    pub aes_poll_us: u32,
    /// Budget for one TRNG word.
    pub trng_us: u32,
    /// Poll interval of the TRNG.
    pub trng_poll_us: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            busy_us: 100_000,
            pka_us: 2_000_000,
            pka_poll_us: 100,
            aes_us: 2_000,
            aes_poll_us: 1,
            trng_us: 10_000,
            trng_poll_us: 10,
        }
    }
}

/// Calls `start` until the engine accepts the command or `budget_us` has passed.
fn start_bounded<E, D: DelayNs>(
    engine: &mut E,
    delay: &mut D,
    budget_us: u32,
    poll_us: u32,
    mut start: impl FnMut(&mut E) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let poll_us = poll_us.max(1);
    let mut waited = 0u32;
    loop {
        match start(engine) {
            Err(EngineError::Busy) if waited < budget_us => {
                delay.delay_us(poll_us);
                waited = waited.saturating_add(poll_us);
            }
            other => return other,
        }
    }
}

/// Polls until the command is done, aborting it on failure or after `budget_us`.
fn finish_bounded<E: Engine, D: DelayNs>(
    engine: &mut E,
    delay: &mut D,
    budget_us: u32,
    poll_us: u32,
) -> Result<(), EngineError> {
    let poll_us = poll_us.max(1);
    let mut waited = 0u32;
    loop {
        match engine.poll() {
            Ok(Progress::Done) => return Ok(()),
            Ok(Progress::Pending) if waited < budget_us => {
                delay.delay_us(poll_us);
                waited = waited.saturating_add(poll_us);
            }
            Ok(Progress::Pending) => {
                engine.abort();
                return Err(EngineError::Timeout);
            }
            Err(error) => {
                engine.abort();
                return Err(error);
            }
        }
    }
}

/// Runs one PKA command to completion and reads its output into `out`
/// (`command.output_len()` bytes; empty for commands without output).
pub(crate) fn pka_run<P: PkaEngine, D: DelayNs>(
    pka: &mut P,
    delay: &mut D,
    timeouts: &Timeouts,
    command: &PkaCommand<'_>,
    out: &mut [u8],
) -> Result<(), EngineError> {
    debug_assert_eq!(out.len(), command.output_len());
    start_bounded(pka, delay, timeouts.busy_us, timeouts.pka_poll_us, |pka| {
        pka.start(command)
    })?;
    finish_bounded(pka, delay, timeouts.pka_us, timeouts.pka_poll_us)?;
    if command.output_len() == 0 {
        return Ok(());
    }
    pka.read_output(out).inspect_err(|_| pka.abort())
}

/// Runs one AES command to completion and reads its output block, if it has one, into `out`.
pub(crate) fn aes_run<A: AesEngine, D: DelayNs>(
    aes: &mut A,
    delay: &mut D,
    timeouts: &Timeouts,
    command: &AesCommand<'_>,
    out: Option<&mut [u8; 16]>,
) -> Result<(), EngineError> {
    start_bounded(aes, delay, timeouts.busy_us, timeouts.aes_poll_us, |aes| {
        aes.start(command)
    })?;
    finish_bounded(aes, delay, timeouts.aes_us, timeouts.aes_poll_us)?;
    match out {
        Some(out) if command.has_output() => aes.read_block(out).inspect_err(|_| aes.abort()),
        _ => Ok(()),
    }
}

/// One raw word from the TRNG, waiting at most `timeouts.trng_us`.
pub(crate) fn trng_word<T: crate::engine::TrngSource, D: DelayNs>(
    trng: &mut T,
    delay: &mut D,
    timeouts: &Timeouts,
) -> Result<u32, EngineError> {
    let poll_us = timeouts.trng_poll_us.max(1);
    let mut waited = 0u32;
    loop {
        if let Some(word) = trng.poll_word()? {
            return Ok(word);
        }
        if waited >= timeouts.trng_us {
            return Err(EngineError::Timeout);
        }
        delay.delay_us(poll_us);
        waited = waited.saturating_add(poll_us);
    }
}
