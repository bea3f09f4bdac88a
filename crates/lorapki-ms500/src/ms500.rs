//! The MS500 binding: the engine traits on the eWBM MS500's crypto hardware, through the vendor
//! SDK (feature `ms500`, `target_os = "none"` only).
//!
//! **Status: written against an interface, not against the chip. Untested on silicon.** The
//! MS500 reference manual and SDK are not public, so this module does not touch registers and
//! does not guess the SDK's function names. It calls the small C function set below, which a
//! firmware provides as a thin C shim over the vendor SDK (one function each, mostly a direct
//! call). Everything above this module — the backend, the TRNG health tests and DRBG, the key
//! store — is tested on the emulated engines; this module is the one part that is not.
//!
//! This is the only module of the crate with `unsafe` code: each block calls one C function and
//! says why the call is sound.
//!
//! # Expected C functions
//!
//! Every function returns an `int32_t` status: `0` done/success, `1` pending/not ready, or a
//! negative error code. All buffers are big-endian byte strings of the stated length; points are
//! `x ‖ y` (96 bytes). A `*_start`-style function **must copy (or fully consume) its input
//! buffers before it returns**: the caller zeroizes them right after.
//!
//! | function | meaning |
//! |---|---|
//! | `uint8_t ms500_pka_slot_count(void)` | number of P-384 private-key slots |
//! | `uint8_t ms500_pka_retains_keys(void)` | 1 if slot contents survive a reset |
//! | `int32_t ms500_pka_key_present(uint8_t slot)` | 1 occupied, 0 empty, or an error |
//! | `int32_t ms500_pka_load_key(uint8_t slot, const uint8_t d[48])` | start: load private scalar |
//! | `int32_t ms500_pka_erase_key(uint8_t slot)` | start: erase slot |
//! | `int32_t ms500_pka_public_key(uint8_t slot)` | start: `d·G` (output 96) |
//! | `int32_t ms500_pka_ecdh(uint8_t slot, const uint8_t peer[96])` | start: `x(d·P)` (output 48) |
//! | `int32_t ms500_pka_sign(uint8_t slot, const uint8_t digest[48])` | start: ECDSA, engine nonce (output `r ‖ s`, 96) |
//! | `int32_t ms500_pka_verify(const uint8_t q[96], const uint8_t digest[48], const uint8_t sig[96])` | start: ECDSA verify |
//! | `int32_t ms500_pka_decompress(const uint8_t x[48], uint8_t y_is_odd)` | start: decompress (output 96) |
//! | `int32_t ms500_pka_check_point(const uint8_t q[96])` | start: point validation |
//! | `int32_t ms500_pka_poll(void)` | 0 done, 1 running, or the command's error |
//! | `int32_t ms500_pka_read_output(uint8_t *out, size_t len)` | copy and clear the output register |
//! | `void ms500_pka_abort(void)` | stop, clear output |
//! | `uint8_t ms500_aes_slot_count(void)` | number of volatile AES key slots |
//! | `int32_t ms500_aes_load_key(uint8_t slot, const uint8_t key[16])` | start: load key |
//! | `int32_t ms500_aes_clear_key(uint8_t slot)` | start: clear slot |
//! | `int32_t ms500_aes_encrypt_block(int32_t key, const uint8_t block[16])` | start: ECB; `key` = slot, or −1 for the device-unique key |
//! | `int32_t ms500_aes_cmac(int32_t key, const ms500_slice_t *parts, size_t count)` | start: AES-CMAC over the concatenated parts |
//! | `int32_t ms500_aes_poll(void)` | as for the PKA |
//! | `int32_t ms500_aes_read_block(uint8_t out[16])` | copy and clear the output |
//! | `void ms500_aes_abort(void)` | stop, clear output |
//! | `int32_t ms500_trng_read(uint32_t *word)` | 0 word written, 1 not ready, or an error (raw, unconditioned noise) |
//! | `int32_t ms500_flash_read(uint32_t addr, uint8_t *buf, size_t len)` | read |
//! | `int32_t ms500_flash_erase(uint32_t addr, uint32_t len)` | erase whole sectors |
//! | `int32_t ms500_flash_program(uint32_t addr, const uint8_t *buf, size_t len)` | program whole words |
//!
//! `ms500_slice_t` is `struct { const uint8_t *ptr; size_t len; }`. Error codes: −1 busy,
//! −2 timeout, −3 fault, −4 tamper, −5 invalid point, −6 invalid signature, −7 invalid scalar,
//! −8 slot empty, −9 no such slot; any other negative value is treated as a fault.
//!
//! # Linking
//!
//! Building the crate (an rlib) never needs the symbols. A firmware's final link does: set
//! `MS500_SDK_LIB_DIR` (and `MS500_SDK_LIB_NAME`) so that `build.rs` links the static library that
//! contains the SDK and the shim, or link it from the firmware's own build script. The
//! `ms500-link-stub` feature defines every function as a stub that reports a fault, so that a
//! firmware links in CI without the SDK; a device built that way refuses every operation. The
//! `link-check/` package next to this crate is such a firmware-shaped binary: it links with the
//! stubs, and without them the linker lists the vendor symbols it needs.
//!
//! # Not verified
//!
//! The mapping of these functions onto the real SDK; the SDK's ECDSA nonce generation; the real
//! slot counts, key retention and tamper behaviour; the flash geometry; timing. See the crate
//! README.
#![deny(clippy::undocumented_unsafe_blocks)]

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash, check_erase, check_read, check_write,
};

use crate::engine::{
    AesCommand, AesEngine, AesKeyRef, Engine, EngineError, PkaCommand, PkaEngine, Progress,
    TrngSource,
};

/// The C declarations of the function set in the module documentation.
mod ffi {
    /// A borrowed byte string, `ms500_slice_t` in C.
    #[repr(C)]
    pub(super) struct Slice {
        pub(super) ptr: *const u8,
        pub(super) len: usize,
    }

    #[allow(unsafe_code)]
    // SAFETY: (of the declarations) the signatures are exactly those of the documented C
    // function set; every pointer argument is only read (`const`) or written within `len`.
    unsafe extern "C" {
        pub(super) fn ms500_pka_slot_count() -> u8;
        pub(super) fn ms500_pka_retains_keys() -> u8;
        pub(super) fn ms500_pka_key_present(slot: u8) -> i32;
        pub(super) fn ms500_pka_load_key(slot: u8, scalar: *const u8) -> i32;
        pub(super) fn ms500_pka_erase_key(slot: u8) -> i32;
        pub(super) fn ms500_pka_public_key(slot: u8) -> i32;
        pub(super) fn ms500_pka_ecdh(slot: u8, peer: *const u8) -> i32;
        pub(super) fn ms500_pka_sign(slot: u8, digest: *const u8) -> i32;
        pub(super) fn ms500_pka_verify(
            public: *const u8,
            digest: *const u8,
            signature: *const u8,
        ) -> i32;
        pub(super) fn ms500_pka_decompress(x: *const u8, y_is_odd: u8) -> i32;
        pub(super) fn ms500_pka_check_point(point: *const u8) -> i32;
        pub(super) fn ms500_pka_poll() -> i32;
        pub(super) fn ms500_pka_read_output(out: *mut u8, len: usize) -> i32;
        pub(super) fn ms500_pka_abort();

        pub(super) fn ms500_aes_slot_count() -> u8;
        pub(super) fn ms500_aes_load_key(slot: u8, key: *const u8) -> i32;
        pub(super) fn ms500_aes_clear_key(slot: u8) -> i32;
        pub(super) fn ms500_aes_encrypt_block(key: i32, block: *const u8) -> i32;
        pub(super) fn ms500_aes_cmac(key: i32, parts: *const Slice, count: usize) -> i32;
        pub(super) fn ms500_aes_poll() -> i32;
        pub(super) fn ms500_aes_read_block(out: *mut u8) -> i32;
        pub(super) fn ms500_aes_abort();

        pub(super) fn ms500_trng_read(word: *mut u32) -> i32;

        pub(super) fn ms500_flash_read(address: u32, buffer: *mut u8, len: usize) -> i32;
        pub(super) fn ms500_flash_erase(address: u32, len: u32) -> i32;
        pub(super) fn ms500_flash_program(address: u32, buffer: *const u8, len: usize) -> i32;
    }
}

/// Link stubs (feature `ms500-link-stub`): every function reports a fault. CI only.
#[cfg(feature = "ms500-link-stub")]
mod stub {
    use super::ffi::Slice;

    const FAULT: i32 = -3;

    macro_rules! stubs {
        ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $value:expr;)*) => {
            $(
                #[allow(unsafe_code)]
                // SAFETY: (of `no_mangle`) this symbol is defined nowhere else in a build with
                // `ms500-link-stub`: build.rs does not link the vendor library then.
                #[unsafe(no_mangle)]
                extern "C" fn $name($(_: $ty),*) -> $ret {
                    $value
                }
            )*
        };
    }

    stubs! {
        ms500_pka_slot_count() -> u8 = 0;
        ms500_pka_retains_keys() -> u8 = 0;
        ms500_pka_key_present(slot: u8) -> i32 = FAULT;
        ms500_pka_load_key(slot: u8, scalar: *const u8) -> i32 = FAULT;
        ms500_pka_erase_key(slot: u8) -> i32 = FAULT;
        ms500_pka_public_key(slot: u8) -> i32 = FAULT;
        ms500_pka_ecdh(slot: u8, peer: *const u8) -> i32 = FAULT;
        ms500_pka_sign(slot: u8, digest: *const u8) -> i32 = FAULT;
        ms500_pka_verify(public: *const u8, digest: *const u8, signature: *const u8) -> i32 = FAULT;
        ms500_pka_decompress(x: *const u8, y_is_odd: u8) -> i32 = FAULT;
        ms500_pka_check_point(point: *const u8) -> i32 = FAULT;
        ms500_pka_poll() -> i32 = FAULT;
        ms500_pka_read_output(out: *mut u8, len: usize) -> i32 = FAULT;
        ms500_pka_abort() -> () = ();
        ms500_aes_slot_count() -> u8 = 0;
        ms500_aes_load_key(slot: u8, key: *const u8) -> i32 = FAULT;
        ms500_aes_clear_key(slot: u8) -> i32 = FAULT;
        ms500_aes_encrypt_block(key: i32, block: *const u8) -> i32 = FAULT;
        ms500_aes_cmac(key: i32, parts: *const Slice, count: usize) -> i32 = FAULT;
        ms500_aes_poll() -> i32 = FAULT;
        ms500_aes_read_block(out: *mut u8) -> i32 = FAULT;
        ms500_aes_abort() -> () = ();
        ms500_trng_read(word: *mut u32) -> i32 = FAULT;
        ms500_flash_read(address: u32, buffer: *mut u8, len: usize) -> i32 = FAULT;
        ms500_flash_erase(address: u32, len: u32) -> i32 = FAULT;
        ms500_flash_program(address: u32, buffer: *const u8, len: usize) -> i32 = FAULT;
    }
}

/// `1`: pending / not ready.
const PENDING: i32 = 1;

/// Maps a status code: non-negative values pass, negative ones become engine errors.
const fn status(code: i32) -> Result<i32, EngineError> {
    match code {
        0.. => Ok(code),
        -1 => Err(EngineError::Busy),
        -2 => Err(EngineError::Timeout),
        -4 => Err(EngineError::Tamper),
        -5 => Err(EngineError::InvalidPoint),
        -6 => Err(EngineError::InvalidSignature),
        -7 => Err(EngineError::InvalidScalar),
        -8 => Err(EngineError::SlotEmpty),
        -9 => Err(EngineError::NoSuchSlot),
        _ => Err(EngineError::Fault),
    }
}

fn progress(code: i32) -> Result<Progress, EngineError> {
    match status(code)? {
        PENDING => Ok(Progress::Pending),
        _ => Ok(Progress::Done),
    }
}

/// The MS500's public-key accelerator. One value per chip: get it once at start-up.
#[derive(Debug)]
pub struct Ms500Pka {
    _private: (),
}

/// The MS500's AES engine. One value per chip.
#[derive(Debug)]
pub struct Ms500Aes {
    _private: (),
}

/// The MS500's TRNG. One value per chip.
#[derive(Debug)]
pub struct Ms500Trng {
    _private: (),
}

/// The hardware drivers of one MS500.
#[derive(Debug)]
pub struct Ms500Engines {
    /// The PKA.
    pub pka: Ms500Pka,
    /// The AES engine.
    pub aes: Ms500Aes,
    /// The TRNG.
    pub trng: Ms500Trng,
}

impl Ms500Engines {
    /// The engines, the first time this is called; `None` afterwards.
    #[cfg(target_has_atomic = "8")]
    #[must_use]
    pub fn take() -> Option<Self> {
        use core::sync::atomic::{AtomicBool, Ordering};
        static TAKEN: AtomicBool = AtomicBool::new(false);
        if TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(Self {
            pka: Ms500Pka { _private: () },
            aes: Ms500Aes { _private: () },
            trng: Ms500Trng { _private: () },
        })
    }
}

impl Engine for Ms500Pka {
    #[allow(unsafe_code)]
    fn poll(&mut self) -> Result<Progress, EngineError> {
        // SAFETY: no arguments; the shim only reads the PKA status.
        progress(unsafe { ffi::ms500_pka_poll() })
    }

    #[allow(unsafe_code)]
    fn abort(&mut self) {
        // SAFETY: no arguments.
        unsafe { ffi::ms500_pka_abort() }
    }
}

impl PkaEngine for Ms500Pka {
    #[allow(unsafe_code)]
    fn key_slots(&self) -> u8 {
        // SAFETY: no arguments; reads a constant of the chip.
        unsafe { ffi::ms500_pka_slot_count() }
    }

    #[allow(unsafe_code)]
    fn retains_keys(&self) -> bool {
        // SAFETY: no arguments; reads a constant of the chip.
        unsafe { ffi::ms500_pka_retains_keys() != 0 }
    }

    #[allow(unsafe_code)]
    fn key_present(&mut self, slot: u8) -> Result<bool, EngineError> {
        // SAFETY: a plain integer argument.
        status(unsafe { ffi::ms500_pka_key_present(slot) }).map(|present| present != 0)
    }

    #[allow(unsafe_code)]
    fn start(&mut self, command: &PkaCommand<'_>) -> Result<(), EngineError> {
        let code = match *command {
            // SAFETY: `scalar` is 48 readable bytes borrowed for the whole call; the shim copies
            // them before returning (module contract).
            PkaCommand::LoadKey { slot, scalar } => unsafe {
                ffi::ms500_pka_load_key(slot, scalar.as_ptr())
            },
            // SAFETY: a plain integer argument.
            PkaCommand::EraseKey { slot } => unsafe { ffi::ms500_pka_erase_key(slot) },
            // SAFETY: a plain integer argument.
            PkaCommand::PublicKey { slot } => unsafe { ffi::ms500_pka_public_key(slot) },
            // SAFETY: `peer` is 96 readable bytes borrowed for the call, copied by the shim.
            PkaCommand::Ecdh { slot, peer } => unsafe { ffi::ms500_pka_ecdh(slot, peer.as_ptr()) },
            // SAFETY: `digest` is 48 readable bytes borrowed for the call, copied by the shim.
            PkaCommand::Sign { slot, digest } => unsafe {
                ffi::ms500_pka_sign(slot, digest.as_ptr())
            },
            PkaCommand::Verify {
                public,
                digest,
                signature,
                // SAFETY: 96, 48 and 96 readable bytes borrowed for the call, copied by the shim.
            } => unsafe {
                ffi::ms500_pka_verify(public.as_ptr(), digest.as_ptr(), signature.as_ptr())
            },
            // SAFETY: `x` is 48 readable bytes borrowed for the call, copied by the shim.
            PkaCommand::Decompress { x, y_is_odd } => unsafe {
                ffi::ms500_pka_decompress(x.as_ptr(), u8::from(y_is_odd))
            },
            // SAFETY: `point` is 96 readable bytes borrowed for the call, copied by the shim.
            PkaCommand::CheckPoint { point } => unsafe {
                ffi::ms500_pka_check_point(point.as_ptr())
            },
        };
        status(code).map(|_| ())
    }

    #[allow(unsafe_code)]
    fn read_output(&mut self, out: &mut [u8]) -> Result<(), EngineError> {
        // SAFETY: `out` is `out.len()` writable bytes borrowed for the call; the shim writes at
        // most `len` bytes.
        status(unsafe { ffi::ms500_pka_read_output(out.as_mut_ptr(), out.len()) }).map(|_| ())
    }
}

const fn aes_key(key: AesKeyRef) -> i32 {
    match key {
        AesKeyRef::DeviceUnique => -1,
        AesKeyRef::Slot(slot) => slot as i32,
    }
}

/// The most message parts one CMAC command passes to the shim.
const CMAC_MAX_PARTS: usize = 8;

impl Engine for Ms500Aes {
    #[allow(unsafe_code)]
    fn poll(&mut self) -> Result<Progress, EngineError> {
        // SAFETY: no arguments.
        progress(unsafe { ffi::ms500_aes_poll() })
    }

    #[allow(unsafe_code)]
    fn abort(&mut self) {
        // SAFETY: no arguments.
        unsafe { ffi::ms500_aes_abort() }
    }
}

impl AesEngine for Ms500Aes {
    #[allow(unsafe_code)]
    fn key_slots(&self) -> u8 {
        // SAFETY: no arguments; reads a constant of the chip.
        unsafe { ffi::ms500_aes_slot_count() }
    }

    #[allow(unsafe_code)]
    fn start(&mut self, command: &AesCommand<'_>) -> Result<(), EngineError> {
        let code = match *command {
            // SAFETY: `key` is 16 readable bytes borrowed for the call, copied by the shim.
            AesCommand::LoadKey { slot, key } => unsafe {
                ffi::ms500_aes_load_key(slot, key.as_ptr())
            },
            // SAFETY: a plain integer argument.
            AesCommand::ClearKey { slot } => unsafe { ffi::ms500_aes_clear_key(slot) },
            // SAFETY: `block` is 16 readable bytes borrowed for the call, copied by the shim.
            AesCommand::EncryptBlock { key, block } => unsafe {
                ffi::ms500_aes_encrypt_block(aes_key(key), block.as_ptr())
            },
            AesCommand::Cmac { key, message } => {
                if message.len() > CMAC_MAX_PARTS {
                    return Err(EngineError::Fault);
                }
                let mut parts = [const {
                    ffi::Slice {
                        ptr: core::ptr::null(),
                        len: 0,
                    }
                }; CMAC_MAX_PARTS];
                for (slice, part) in parts.iter_mut().zip(message) {
                    *slice = ffi::Slice {
                        ptr: part.as_ptr(),
                        len: part.len(),
                    };
                }
                // SAFETY: `parts[..message.len()]` describe byte strings borrowed for the whole
                // call; the shim consumes them before returning (module contract).
                unsafe { ffi::ms500_aes_cmac(aes_key(key), parts.as_ptr(), message.len()) }
            }
        };
        status(code).map(|_| ())
    }

    #[allow(unsafe_code)]
    fn read_block(&mut self, out: &mut [u8; 16]) -> Result<(), EngineError> {
        // SAFETY: `out` is 16 writable bytes borrowed for the call.
        status(unsafe { ffi::ms500_aes_read_block(out.as_mut_ptr()) }).map(|_| ())
    }
}

impl TrngSource for Ms500Trng {
    #[allow(unsafe_code)]
    fn poll_word(&mut self) -> Result<Option<u32>, EngineError> {
        let mut word = 0u32;
        // SAFETY: `word` is a writable `u32` on the stack for the whole call.
        match status(unsafe { ffi::ms500_trng_read(&mut word) })? {
            PENDING => Ok(None),
            _ => Ok(Some(word)),
        }
    }
}

/// A region of the MS500's on-chip flash as a [`NorFlash`]: offsets are relative to `base`.
/// `WRITE` and `ERASE` are the flash's program word and sector sizes (not public; set them from
/// the datasheet).
#[derive(Debug)]
pub struct Ms500Flash<const WRITE: usize, const ERASE: usize> {
    base: u32,
    capacity: u32,
}

impl<const WRITE: usize, const ERASE: usize> Ms500Flash<WRITE, ERASE> {
    /// The `capacity` bytes of flash at address `base`, reserved for the key store by the
    /// firmware's memory map.
    #[must_use]
    pub const fn new(base: u32, capacity: u32) -> Self {
        Self { base, capacity }
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for Ms500Flash<WRITE, ERASE> {
    type Error = NorFlashErrorKind;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for Ms500Flash<WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    #[allow(unsafe_code)]
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len())?;
        // SAFETY: `bytes` is `bytes.len()` writable bytes borrowed for the call, and the range
        // was checked to lie inside the region.
        let code =
            unsafe { ffi::ms500_flash_read(self.base + offset, bytes.as_mut_ptr(), bytes.len()) };
        status(code)
            .map(|_| ())
            .map_err(|_| NorFlashErrorKind::Other)
    }

    fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for Ms500Flash<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    #[allow(unsafe_code)]
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        // SAFETY: plain integers; the range was checked to be whole sectors of the region.
        let code = unsafe { ffi::ms500_flash_erase(self.base + from, to - from) };
        status(code)
            .map(|_| ())
            .map_err(|_| NorFlashErrorKind::Other)
    }

    #[allow(unsafe_code)]
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len())?;
        // SAFETY: `bytes` is `bytes.len()` readable bytes borrowed for the call; the range was
        // checked to be aligned and inside the region.
        let code =
            unsafe { ffi::ms500_flash_program(self.base + offset, bytes.as_ptr(), bytes.len()) };
        status(code)
            .map(|_| ())
            .map_err(|_| NorFlashErrorKind::Other)
    }
}
