//! A 64-bit cycle count: the DWT cycle counter where the core has a running one, SysTick otherwise.
//!
//! QEMU does not model the DWT cycle counter (its registers read as zero), so in QEMU the counts
//! come from SysTick clocked by the core clock. With `-icount shift=0` QEMU advances virtual time
//! by 1 ns per guest instruction, which makes SysTick a deterministic *instruction* counter: the
//! boot calibration below prints how many instructions one tick is. Neither is a silicon timing.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{DCB, DWT, SYST};
use cortex_m_rt::exception;

/// SysTick's reload value: the full 24-bit range.
const SYSTICK_RELOAD: u32 = 0x00ff_ffff;

/// Times SysTick wrapped around (counted by its exception).
static SYSTICK_WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    SYSTICK_WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Which counter the measurements come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `DWT.CYCCNT`: core clock cycles (on silicon).
    Dwt,
    /// SysTick on the core clock, extended to 64 bits by counting its wraps.
    SysTick,
}

/// A monotonic counter; `Copy`, so that the crypto wrapper can keep one.
#[derive(Clone, Copy, Debug)]
pub struct CycleCounter {
    source: Source,
}

impl CycleCounter {
    /// Starts the DWT cycle counter if it counts, SysTick otherwise.
    pub fn start(dcb: &mut DCB, dwt: &mut DWT, mut syst: SYST) -> Self {
        dcb.enable_trace();
        if DWT::has_cycle_counter() {
            dwt.enable_cycle_counter();
            let before = DWT::cycle_count();
            cortex_m::asm::delay(1000);
            if DWT::cycle_count() != before {
                return Self {
                    source: Source::Dwt,
                };
            }
        }
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(SYSTICK_RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Self {
            source: Source::SysTick,
        }
    }

    /// The counter in use.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The current count. The DWT counter is 32 bits: an interval longer than 2^32 cycles wraps.
    pub fn now(&self) -> u64 {
        match self.source {
            Source::Dwt => u64::from(DWT::cycle_count()),
            Source::SysTick => loop {
                let wraps = SYSTICK_WRAPS.load(Ordering::Acquire);
                let current = SYST::get_current();
                if SYSTICK_WRAPS.load(Ordering::Acquire) == wraps {
                    let elapsed = u64::from(SYSTICK_RELOAD - current);
                    break u64::from(wraps) * (u64::from(SYSTICK_RELOAD) + 1) + elapsed;
                }
            },
        }
    }

    /// Counts spent in `f`.
    pub fn measure<T>(&self, f: impl FnOnce() -> T) -> (T, u64) {
        let start = self.now();
        let value = f();
        let elapsed = self.now().wrapping_sub(start);
        match self.source {
            // A 32-bit counter: the difference modulo 2^32.
            Source::Dwt => (value, elapsed & u64::from(u32::MAX)),
            Source::SysTick => (value, elapsed),
        }
    }
}
