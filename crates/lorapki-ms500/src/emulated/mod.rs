//! Emulated engines (feature `emulated`): software models of the engine traits for host tests
//! and simulations.
//!
//! | model | models | knobs |
//! |---|---|---|
//! | [`EmulatedPka`] | PKA with P-384 key slots (on `p384`; RFC 6979 signatures) | slot count, keys kept across resets or not, latency, busy, fault/hang/busy/tamper by command index; half-written keys on failed loads |
//! | [`EmulatedAes`] | AES-128 engine with key slots and a device-unique key (on `aes`, `cmac`) | the same |
//! | [`EmulatedTrng`] | TRNG over a [`NoiseSource`]: uniform, stuck, biased, periodic, borderline | latency, fault/stall by word index |
//! | [`NorFlashModel`] | NOR flash (AND-programming, sector erase) | a power cut at any program/erase step, tearing that step ([`Tear`]); error at a step |
//! | [`VirtualDelay`] | `DelayNs` | counts virtual time, never sleeps |
//!
//! They model behaviour, not timing or side channels, and they are not the MS500: they are what
//! the backend is tested against where silicon is not available.

mod aes;
mod fault;
mod flash;
mod pka;
mod trng;

pub use aes::{EmulatedAes, MAX_AES_SLOTS};
pub use fault::{CommandTrace, FaultInjector, Injection, TRACE_LEN};
pub use flash::{NorFlashModel, PowerCut, Tear};
pub use pka::{EmulatedPka, MAX_PKA_SLOTS};
pub use trng::{EmulatedTrng, NoiseSource};

use embedded_hal::delay::DelayNs;

use crate::{Config, Parts, StorageLayout};

/// A `DelayNs` that only counts: waits take no real time, so timeout paths run instantly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtualDelay {
    /// Nanoseconds waited in total.
    pub elapsed_ns: u64,
}

impl DelayNs for VirtualDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.elapsed_ns = self.elapsed_ns.saturating_add(u64::from(ns));
    }
}

/// The flash of [`emulated_parts`]: 2 KiB with 512-byte sectors.
pub type EmulatedFlash = NorFlashModel<2048, 512>;

/// The hardware of one emulated device. `Clone`, so that a test can snapshot a device (flash,
/// slots, device-unique key) and replay a scenario from the snapshot.
pub type EmulatedParts = Parts<EmulatedPka, EmulatedAes, EmulatedTrng, EmulatedFlash, VirtualDelay>;

/// The backend on emulated engines.
pub type EmulatedBackend = crate::Ms500Backend<EmulatedParts>;

/// The key-store layout of [`emulated_parts`]: area A in the first sector, B in the third.
#[must_use]
pub const fn emulated_layout() -> StorageLayout {
    StorageLayout {
        area_a: 0,
        area_b: 1024,
    }
}

/// The default configuration for [`emulated_parts`].
#[must_use]
pub fn emulated_config() -> Config {
    Config::new(emulated_layout())
}

/// A fresh emulated device: a 4-slot PKA (`pka_retains_keys` says whether its slots survive a
/// reset), a 2-slot AES engine whose device-unique key and a uniform TRNG are derived from
/// `seed`, an erased flash.
#[must_use]
pub fn emulated_parts(seed: u64, pka_retains_keys: bool) -> EmulatedParts {
    let mut device_unique = [0u8; 16];
    device_unique[..8].copy_from_slice(&seed.to_le_bytes());
    device_unique[8..].copy_from_slice(b"emulated");
    Parts {
        pka: EmulatedPka::new(4, pka_retains_keys),
        aes: EmulatedAes::new(2, device_unique),
        trng: EmulatedTrng::new(NoiseSource::uniform(seed ^ 0x5eed_0000_0000_0000)),
        flash: EmulatedFlash::new(),
        delay: VirtualDelay::default(),
    }
}

/// A reset of every emulated part: what survives is what the hardware would keep (flash
/// contents, PKA slots if retained, the device-unique key).
pub fn power_cycle(parts: &mut EmulatedParts) {
    parts.pka.power_cycle();
    parts.aes.power_cycle();
    parts.trng.power_cycle();
    parts.flash.power_cycle();
    parts.pka.injector.clear();
    parts.aes.injector.clear();
    parts.trng.clear_injection();
}
