//! [`NorFlashModel`]: a NOR flash that loses power at a chosen program or erase step.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash, check_erase, check_read, check_write,
};

/// What the step that the power cut interrupts leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tear {
    /// The step had not begun: nothing changed.
    Skipped,
    /// The step was half done: a program cleared only some of the bits it had to clear; an
    /// erase set some bytes to `0xff` and some bits of the others (chosen by `seed`).
    Partial {
        /// Chooses the bits.
        seed: u64,
    },
    /// The step finished, but power was lost before the driver heard about it.
    Completed,
}

/// A power cut planned at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PowerCut {
    /// The step (counted from 0 over every sector erase and every word program) that is cut.
    pub step: u32,
    /// What the cut leaves of that step.
    pub tear: Tear,
}

/// A NOR flash of `CAPACITY` bytes with `ERASE`-byte sectors and 4-byte program words.
///
/// NOR semantics: erasing sets a sector to `0xff`; programming can only clear bits (the model
/// ANDs the new word into the old one and counts an attempt to set a bit as a
/// [`violation`](Self::violations)). Each sector erase and each word program is one **step**;
/// [`cut_power`](Self::cut_power) interrupts one step as [`Tear`] says, after which every
/// operation fails until [`power_cycle`](Self::power_cycle). The contents survive the cut, so a
/// test can reopen the store from them.
#[derive(Clone)]
pub struct NorFlashModel<const CAPACITY: usize, const ERASE: usize> {
    memory: [u8; CAPACITY],
    steps: u32,
    powered: bool,
    cut: Option<PowerCut>,
    fail_step: Option<u32>,
    violations: u32,
    erases: u32,
    programs: u32,
}

impl<const CAPACITY: usize, const ERASE: usize> core::fmt::Debug
    for NorFlashModel<CAPACITY, ERASE>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NorFlashModel")
            .field("steps", &self.steps)
            .field("powered", &self.powered)
            .field("violations", &self.violations)
            .finish_non_exhaustive()
    }
}

impl<const CAPACITY: usize, const ERASE: usize> Default for NorFlashModel<CAPACITY, ERASE> {
    fn default() -> Self {
        Self::new()
    }
}

/// SplitMix64, to choose torn bits reproducibly.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<const CAPACITY: usize, const ERASE: usize> NorFlashModel<CAPACITY, ERASE> {
    /// An erased flash.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            memory: [0xff; CAPACITY],
            steps: 0,
            powered: true,
            cut: None,
            fail_step: None,
            violations: 0,
            erases: 0,
            programs: 0,
        }
    }

    /// Plans a power cut at step `cut.step` (counted from now).
    pub fn cut_power(&mut self, cut: PowerCut) {
        self.steps = 0;
        self.cut = Some(cut);
    }

    /// Makes step `step` (counted from now) fail with an error, power staying on.
    pub fn fail_at_step(&mut self, step: u32) {
        self.steps = 0;
        self.fail_step = Some(step);
    }

    /// Power back on; planned cuts and failures are dropped. The contents stay.
    pub fn power_cycle(&mut self) {
        self.powered = true;
        self.cut = None;
        self.fail_step = None;
    }

    /// Whether the planned power cut has happened.
    #[must_use]
    pub const fn power_lost(&self) -> bool {
        !self.powered
    }

    /// Steps since the last [`cut_power`](Self::cut_power), [`fail_at_step`](Self::fail_at_step)
    /// or [`reset_steps`](Self::reset_steps).
    #[must_use]
    pub const fn steps(&self) -> u32 {
        self.steps
    }

    /// Restarts the step count.
    pub fn reset_steps(&mut self) {
        self.steps = 0;
    }

    /// Programs that tried to set a bit (the driver programmed a word that was not erased).
    #[must_use]
    pub const fn violations(&self) -> u32 {
        self.violations
    }

    /// Sector erases and word programs since construction.
    #[must_use]
    pub const fn wear(&self) -> (u32, u32) {
        (self.erases, self.programs)
    }

    /// Inverts the bits of `mask` in the byte at `offset` (bit rot, a probe attack).
    pub fn flip_bits(&mut self, offset: usize, mask: u8) {
        if let Some(byte) = self.memory.get_mut(offset) {
            *byte ^= mask;
        }
    }

    /// The raw contents.
    #[must_use]
    pub fn contents(&self) -> &[u8; CAPACITY] {
        &self.memory
    }

    /// Runs one step; `Ok(Some(tear))` when this is the step that the power cut interrupts.
    fn step(&mut self) -> Result<Option<Tear>, NorFlashErrorKind> {
        if !self.powered {
            return Err(NorFlashErrorKind::Other);
        }
        let step = self.steps;
        self.steps = self.steps.saturating_add(1);
        if self.fail_step == Some(step) {
            return Err(NorFlashErrorKind::Other);
        }
        match self.cut {
            Some(cut) if cut.step == step => {
                self.powered = false;
                Ok(Some(cut.tear))
            }
            _ => Ok(None),
        }
    }
}

impl<const CAPACITY: usize, const ERASE: usize> ErrorType for NorFlashModel<CAPACITY, ERASE> {
    type Error = NorFlashErrorKind;
}

impl<const CAPACITY: usize, const ERASE: usize> ReadNorFlash for NorFlashModel<CAPACITY, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len())?;
        if !self.powered {
            return Err(NorFlashErrorKind::Other);
        }
        let start = offset as usize;
        bytes.copy_from_slice(&self.memory[start..start + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        CAPACITY
    }
}

impl<const CAPACITY: usize, const ERASE: usize> NorFlash for NorFlashModel<CAPACITY, ERASE> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        for sector_start in (from as usize..to as usize).step_by(ERASE) {
            let tear = self.step()?;
            let sector = &mut self.memory[sector_start..sector_start + ERASE];
            match tear {
                None | Some(Tear::Completed) => {
                    sector.fill(0xff);
                    self.erases += 1;
                }
                Some(Tear::Skipped) => {}
                Some(Tear::Partial { seed }) => {
                    let mut state = seed;
                    for byte in sector.iter_mut() {
                        let draw = mix(&mut state);
                        *byte = if draw & 1 == 1 {
                            0xff
                        } else {
                            *byte | (draw >> 8) as u8
                        };
                    }
                }
            }
            if tear.is_some() {
                return Err(NorFlashErrorKind::Other);
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len())?;
        for (index, word) in bytes.chunks(4).enumerate() {
            let tear = self.step()?;
            let start = offset as usize + index * 4;
            let target = &mut self.memory[start..start + 4];
            let mut seed = match tear {
                Some(Tear::Partial { seed }) => Some(seed),
                _ => None,
            };
            for (old, new) in target.iter_mut().zip(word) {
                if new & !*old != 0 {
                    self.violations += 1;
                }
                match (tear, seed.as_mut()) {
                    (Some(Tear::Skipped), _) => {}
                    (Some(Tear::Partial { .. }), Some(state)) => {
                        // Only some of the bits to clear are cleared.
                        let to_clear = *old & !new;
                        let cleared = to_clear & (mix(state) as u8);
                        *old &= !cleared;
                    }
                    _ => *old &= new,
                }
            }
            if !matches!(tear, Some(Tear::Skipped)) {
                self.programs += 1;
            }
            if tear.is_some() {
                return Err(NorFlashErrorKind::Other);
            }
        }
        Ok(())
    }
}
