//! Stack high-water marks: cortex-m-rt paints the whole stack region with `STACK_PAINT_VALUE` at
//! reset (feature `paint-stack`); a mark scans for the deepest word that lost the paint, then
//! repaints the free part below the current stack pointer, so that successive marks measure
//! successive stretches of the run.
// Reading the linker's symbols and the painted words needs raw pointers; nothing else here does.
#![allow(unsafe_code)]

use core::ptr;

use cortex_m_rt::STACK_PAINT_VALUE;

unsafe extern "C" {
    /// The initial stack pointer: one past the highest stack address (cortex-m-rt's `link.x`).
    static _stack_start: u32;
    /// The lowest stack address: the end of `.bss`/`.uninit` (cortex-m-rt's `link.x`).
    static _stack_end: u32;
    /// The start of RAM (cortex-m-rt's `link.x`): `.data`, then `.bss`, then the stack region.
    static _ram_start: u32;
}

/// Bytes of RAM taken by statics (`.data`, `.bss`, `.uninit`): everything below the stack.
pub fn static_ram() -> usize {
    (&raw const _stack_end) as usize - (&raw const _ram_start) as usize
}

/// Bytes left unpainted below the stack pointer when repainting: the frame of `repaint` itself.
const MARGIN: usize = 256;

/// The stack region and the deepest use seen so far.
pub struct StackProbe {
    top: usize,
    bottom: usize,
    deepest: usize,
}

impl StackProbe {
    /// The stack region of the linker script; the paint is the one laid at reset.
    pub fn new() -> Self {
        Self {
            top: (&raw const _stack_start) as usize,
            bottom: (&raw const _stack_end) as usize,
            deepest: 0,
        }
    }

    /// The size of the stack region (from the end of the statics to the top of RAM).
    pub fn region(&self) -> usize {
        self.top - self.bottom
    }

    /// The most stack used at any mark so far.
    pub fn deepest(&self) -> usize {
        self.deepest
    }

    /// The stack used since the previous mark (or since reset), in bytes from the top; then
    /// repaints for the next stretch.
    pub fn mark(&mut self) -> usize {
        let mut addr = self.bottom;
        while addr < self.top {
            // SAFETY: `addr` is a 4-aligned address inside the stack region [_stack_end,
            // _stack_start) of the linker script, which is RAM that no Rust object owns below the
            // stack pointer and that a live frame owns above it; reading a `u32` from it (volatile,
            // no reference made) does not race (single core, thread mode).
            if unsafe { ptr::read_volatile(addr as *const u32) } != STACK_PAINT_VALUE {
                break;
            }
            addr += 4;
        }
        let used = self.top - addr;
        self.deepest = self.deepest.max(used);
        self.repaint(addr);
        used
    }

    /// Paints [from, stack pointer − MARGIN): memory below the stack pointer that no frame uses.
    #[inline(never)]
    fn repaint(&self, from: usize) {
        let sp = cortex_m::register::msp::read() as usize;
        let limit = sp.saturating_sub(MARGIN) & !3;
        let mut addr = from & !3;
        while addr < limit {
            // SAFETY: `addr` lies in [_stack_end, sp − MARGIN): stack memory below the current
            // stack pointer, which holds no live frame in thread mode (an exception frame pushed
            // there is gone once the handler returns, before this loop resumes).
            unsafe { ptr::write_volatile(addr as *mut u32, STACK_PAINT_VALUE) };
            addr += 4;
        }
    }
}
