//! Calls one function of each MS500 engine so that the linker needs the vendor symbols.
#![no_std]
#![no_main]

use lorapki_ms500::engine::{AesEngine, PkaEngine, TrngSource};
use lorapki_ms500::ms500::Ms500Engines;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// The entry point of the check binary (no runtime crate: nothing runs it).
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    if let Some(mut engines) = Ms500Engines::take() {
        let pka_slots = engines.pka.key_slots();
        let aes_slots = engines.aes.key_slots();
        let word = engines.trng.poll_word().ok();
        core::hint::black_box((pka_slots, aes_slots, word));
    }
    loop {
        core::hint::spin_loop();
    }
}
