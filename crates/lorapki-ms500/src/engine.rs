//! The engine interface: what a secure MCU's crypto hardware offers, as small traits.
//!
//! Four pieces of hardware, each behind its own trait so that the backend
//! ([`Ms500Backend`](crate::Ms500Backend)) is written once against them and runs on the MS500
//! binding, on the emulated engines of the tests, or on another chip with the same shape:
//!
//! | trait | hardware | operations |
//! |---|---|---|
//! | [`PkaEngine`] | public-key accelerator | P-384 key slots (load, erase), `d·G`, ECDH `x(d·P)`, ECDSA sign with a slot key, verify, point decompression and validation |
//! | [`AesEngine`] | AES-128 engine | key slots (load, clear), one-block ECB encryption and AES-CMAC under a slot key or the device-unique key |
//! | [`TrngSource`] | true random number generator | raw 32-bit noise words |
//! | [`embedded_storage::nor_flash::NorFlash`] | on-chip flash | erase, program, read (the standard trait) |
//!
//! # Commands, polling, results
//!
//! The PKA and AES engines take a command with [`start`](PkaEngine::start), run it in the
//! background, report through [`Engine::poll`] and hand out the result through a `read_*` call.
//! The engine **copies every operand at `start`**: the caller may (and the backend does) zeroize
//! its operand buffers as soon as `start` returns. Reading a result **clears the engine's output
//! register**, and so does [`Engine::abort`].
//!
//! Every call is fallible: an engine can be busy, time out, report a fault, or detect tampering
//! ([`EngineError`]). Waiting is the caller's business and is always bounded: the backend polls
//! with an `embedded_hal::delay::DelayNs` between polls and gives up after a budget
//! ([`Timeouts`](crate::Timeouts)), aborting the command.
//!
//! Byte order: every scalar, coordinate and signature half is a 48-byte big-endian integer, as in
//! SEC 1; a point is `x ‖ y` (96 bytes, no SEC 1 tag).

use core::fmt;

/// Length of a P-384 scalar or field element.
pub const P384_LEN: usize = 48;
/// Length of an affine P-384 point `x ‖ y` without SEC 1 tag.
pub const P384_POINT_LEN: usize = 96;

/// What an engine reports when a command cannot complete.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EngineError {
    /// The engine is running another command.
    Busy,
    /// The engine's own watchdog expired.
    Timeout,
    /// A hardware fault: bus error, self-test failure, glitch or fault-injection detector.
    Fault,
    /// The tamper detector fired; the engine may have erased its keys.
    Tamper,
    /// A point operand is not on P-384, has a coordinate not below `p`, or is the identity.
    InvalidPoint,
    /// The signature did not verify (any reason).
    InvalidSignature,
    /// A scalar operand is zero or not below the group order `n`.
    InvalidScalar,
    /// The key slot holds no key.
    SlotEmpty,
    /// The key slot does not exist.
    NoSuchSlot,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Busy => "engine busy",
            Self::Timeout => "engine watchdog timeout",
            Self::Fault => "engine fault",
            Self::Tamper => "tamper detected",
            Self::InvalidPoint => "invalid point",
            Self::InvalidSignature => "invalid signature",
            Self::InvalidScalar => "invalid scalar",
            Self::SlotEmpty => "key slot empty",
            Self::NoSuchSlot => "no such key slot",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EngineError {}

/// The error of the crypto traits for an engine error (the mapping of `lorapki_crypto::error`).
impl From<EngineError> for lorapki_crypto::Error {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Busy => Self::Busy,
            EngineError::Timeout => Self::Timeout,
            EngineError::Fault => Self::Fault,
            EngineError::Tamper => Self::Tamper,
            EngineError::InvalidPoint => Self::InvalidPublicKey,
            EngineError::InvalidSignature => Self::InvalidSignature,
            EngineError::InvalidScalar => Self::InvalidLength,
            EngineError::SlotEmpty => Self::SlotEmpty,
            EngineError::NoSuchSlot => Self::Unsupported,
        }
    }
}

/// The state of a started command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use]
pub enum Progress {
    /// Still running: poll again later.
    Pending,
    /// Finished successfully; the result (if any) is ready to read.
    Done,
}

/// What the PKA and AES engines have in common: a started command is polled and can be aborted.
pub trait Engine {
    /// The state of the command started last.
    ///
    /// # Errors
    ///
    /// The command failed; the engine is idle again and its output register is clear.
    fn poll(&mut self) -> Result<Progress, EngineError>;

    /// Stops the running command, if any, and clears the output register. Idempotent.
    ///
    /// An aborted key load leaves the slot in an undefined state: erase it before relying on it.
    fn abort(&mut self);
}

/// A command for the public-key accelerator. All operations are on P-384.
#[derive(Clone, Copy)]
pub enum PkaCommand<'a> {
    /// Loads the private scalar `scalar` into `slot`. The engine checks `0 < scalar < n`
    /// ([`EngineError::InvalidScalar`]). No output.
    LoadKey {
        /// Destination slot.
        slot: u8,
        /// The private scalar.
        scalar: &'a [u8; P384_LEN],
    },
    /// Erases `slot` (erasing an empty slot is not an error). No output.
    EraseKey {
        /// The slot.
        slot: u8,
    },
    /// `Q = d·G` for the key `d` in `slot`. Output: the point `Q` (96 bytes).
    PublicKey {
        /// The slot.
        slot: u8,
    },
    /// ECDH: the x-coordinate of `d·peer` for the key `d` in `slot`. The engine validates
    /// `peer`. Output: the shared x (48 bytes, secret).
    Ecdh {
        /// The slot.
        slot: u8,
        /// The peer's point.
        peer: &'a [u8; P384_POINT_LEN],
    },
    /// ECDSA signature (FIPS 186-5 §6.4.1) of a SHA-384 `digest` with the key in `slot`; the
    /// engine draws the per-signature nonce. Output: `r ‖ s` (96 bytes).
    Sign {
        /// The slot.
        slot: u8,
        /// The SHA-384 digest.
        digest: &'a [u8; P384_LEN],
    },
    /// ECDSA verification (FIPS 186-5 §6.4.2). Fails with [`EngineError::InvalidSignature`]
    /// or [`EngineError::InvalidPoint`]. No output.
    Verify {
        /// The public key.
        public: &'a [u8; P384_POINT_LEN],
        /// The SHA-384 digest.
        digest: &'a [u8; P384_LEN],
        /// `r ‖ s`.
        signature: &'a [u8; P384_POINT_LEN],
    },
    /// Point decompression: the point with this `x` and the parity of `y`. Fails with
    /// [`EngineError::InvalidPoint`] if `x ≥ p` or no such point exists. Output: the point.
    Decompress {
        /// The x-coordinate.
        x: &'a [u8; P384_LEN],
        /// Whether `y` is odd (SEC 1 tag `0x03`).
        y_is_odd: bool,
    },
    /// Validates a point: coordinates below `p`, on the curve (the identity has no affine form).
    /// No output.
    CheckPoint {
        /// The point.
        point: &'a [u8; P384_POINT_LEN],
    },
}

impl PkaCommand<'_> {
    /// The length of the command's output, to be read with [`PkaEngine::read_output`].
    #[must_use]
    pub const fn output_len(&self) -> usize {
        match self {
            Self::LoadKey { .. }
            | Self::EraseKey { .. }
            | Self::Verify { .. }
            | Self::CheckPoint { .. } => 0,
            Self::Ecdh { .. } => P384_LEN,
            Self::PublicKey { .. } | Self::Sign { .. } | Self::Decompress { .. } => P384_POINT_LEN,
        }
    }

    /// A short name for logs and test reports.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::LoadKey { .. } => "LoadKey",
            Self::EraseKey { .. } => "EraseKey",
            Self::PublicKey { .. } => "PublicKey",
            Self::Ecdh { .. } => "Ecdh",
            Self::Sign { .. } => "Sign",
            Self::Verify { .. } => "Verify",
            Self::Decompress { .. } => "Decompress",
            Self::CheckPoint { .. } => "CheckPoint",
        }
    }
}

impl fmt::Debug for PkaCommand<'_> {
    /// Operands are not printed: some are secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public-key accelerator with P-384 private-key slots.
///
/// Private keys enter a slot through [`PkaCommand::LoadKey`] and never come out: no command
/// outputs a slot's scalar.
pub trait PkaEngine: Engine {
    /// How many private-key slots the engine has (`0..key_slots()`).
    fn key_slots(&self) -> u8;

    /// Whether slot contents survive a reset (keys in secure non-volatile storage inside the
    /// engine). If not, the backend keeps identity keys encrypted in its key store and loads
    /// them at start-up.
    fn retains_keys(&self) -> bool;

    /// Whether `slot` holds a key (a status register read; no command is started).
    ///
    /// # Errors
    ///
    /// [`EngineError::NoSuchSlot`], or a hardware condition.
    fn key_present(&mut self, slot: u8) -> Result<bool, EngineError>;

    /// Starts `command`, copying its operands.
    ///
    /// # Errors
    ///
    /// [`EngineError::Busy`] if a command is running; [`EngineError::NoSuchSlot`]; a hardware
    /// condition.
    fn start(&mut self, command: &PkaCommand<'_>) -> Result<(), EngineError>;

    /// Copies the output of the finished command into `out` (exactly
    /// [`PkaCommand::output_len`] bytes) and clears the output register.
    ///
    /// # Errors
    ///
    /// A hardware condition, or [`EngineError::Fault`] if no output is ready or `out` has the
    /// wrong length.
    fn read_output(&mut self, out: &mut [u8]) -> Result<(), EngineError>;
}

/// The key an AES command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AesKeyRef {
    /// The device-unique key: fused or derived inside the chip, never readable by software.
    /// The backend uses it only to encrypt and authenticate its key store.
    DeviceUnique,
    /// A volatile key slot loaded with [`AesCommand::LoadKey`].
    Slot(u8),
}

/// A command for the AES-128 engine.
#[derive(Clone, Copy)]
pub enum AesCommand<'a> {
    /// Loads a 128-bit key into a volatile slot. No output.
    LoadKey {
        /// Destination slot.
        slot: u8,
        /// The key.
        key: &'a [u8; 16],
    },
    /// Clears a volatile slot. No output.
    ClearKey {
        /// The slot.
        slot: u8,
    },
    /// Encrypts one block (FIPS 197). Output: the ciphertext block.
    EncryptBlock {
        /// The key.
        key: AesKeyRef,
        /// The plaintext block.
        block: &'a [u8; 16],
    },
    /// AES-CMAC (RFC 4493) over the concatenation of `message`. Output: the tag.
    Cmac {
        /// The key.
        key: AesKeyRef,
        /// The message, in parts.
        message: &'a [&'a [u8]],
    },
}

impl AesCommand<'_> {
    /// Whether the command outputs a block (to be read with [`AesEngine::read_block`]).
    #[must_use]
    pub const fn has_output(&self) -> bool {
        matches!(self, Self::EncryptBlock { .. } | Self::Cmac { .. })
    }

    /// A short name for logs and test reports.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::LoadKey { .. } => "LoadKey",
            Self::ClearKey { .. } => "ClearKey",
            Self::EncryptBlock { .. } => "EncryptBlock",
            Self::Cmac { .. } => "Cmac",
        }
    }
}

impl fmt::Debug for AesCommand<'_> {
    /// Operands are not printed: some are secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An AES-128 engine with volatile key slots and a device-unique key.
pub trait AesEngine: Engine {
    /// How many volatile key slots the engine has (`0..key_slots()`).
    fn key_slots(&self) -> u8;

    /// Starts `command`, copying its operands.
    ///
    /// # Errors
    ///
    /// [`EngineError::Busy`] if a command is running; [`EngineError::NoSuchSlot`]; a hardware
    /// condition.
    fn start(&mut self, command: &AesCommand<'_>) -> Result<(), EngineError>;

    /// Copies the output block of the finished command into `out` and clears the output
    /// register.
    ///
    /// # Errors
    ///
    /// A hardware condition, or [`EngineError::Fault`] if no output is ready.
    fn read_block(&mut self, out: &mut [u8; 16]) -> Result<(), EngineError>;
}

/// A true random number generator: raw, unconditioned noise.
///
/// Each word carries four 8-bit *samples* in the sense of NIST SP 800-90B, least significant
/// byte first. The words are never used directly: the backend health-tests every sample and
/// conditions them before they seed its DRBG (see [`trng`](crate::trng)).
pub trait TrngSource {
    /// The next raw word, or `None` if the engine has none ready yet (poll again later).
    ///
    /// # Errors
    ///
    /// A hardware condition (the engine's own alarms, tamper).
    fn poll_word(&mut self) -> Result<Option<u32>, EngineError>;
}
