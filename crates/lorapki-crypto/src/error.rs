//! The one error type of every backend.
//!
//! # Error opacity
//!
//! Verification failures are deliberately *one* error: a signature that does not verify, whatever
//! the reason (wrong key, wrong message, `r` or `s` out of range, malformed encoding), is
//! [`Error::InvalidSignature`] and nothing else, so that no caller can build an oracle from the
//! reason. A public key that is not a valid point of P-384 (off the curve, the identity, bad
//! encoding) is [`Error::InvalidPublicKey`].
//!
//! Hardware conditions, in contrast, are explicit ([`Error::Busy`], [`Error::Timeout`],
//! [`Error::Fault`], [`Error::Tamper`], [`Error::Rng`]) so that a state machine can tell "try again
//! later" from "this peer is lying" and never mistakes a busy engine for an attack, or the reverse.

use core::fmt;

/// The error of every operation of the crypto traits.
///
/// See the [module documentation](self) for which condition maps to which variant.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The engine is busy with another operation; retry later.
    Busy,
    /// The engine did not finish in time.
    Timeout,
    /// The engine reported a hardware fault (bus error, self-test failure, glitch detected).
    Fault,
    /// The engine detected tampering; its key material may have been erased.
    Tamper,
    /// The random number generator failed (health test, entropy source).
    Rng,
    /// A public key is not a valid P-384 point: bad encoding, not on the curve, or the identity.
    InvalidPublicKey,
    /// A signature did not verify. The one opaque verification failure, whatever the cause.
    InvalidSignature,
    /// An input or output buffer has a length the operation does not accept.
    InvalidLength,
    /// The key slot (or root-key store) holds no key.
    SlotEmpty,
    /// The key slot (or root-key store) already holds a key; erase it first.
    SlotOccupied,
    /// The root-key store holds no staged key to activate or roll back.
    NoStagedKey,
    /// The backend does not implement this operation or parameter (e.g. a slot number it lacks).
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Busy => "crypto engine busy",
            Error::Timeout => "crypto engine timed out",
            Error::Fault => "crypto engine fault",
            Error::Tamper => "tamper detected",
            Error::Rng => "random number generator failure",
            Error::InvalidPublicKey => "invalid public key",
            Error::InvalidSignature => "invalid signature",
            Error::InvalidLength => "invalid length",
            Error::SlotEmpty => "key slot empty",
            Error::SlotOccupied => "key slot occupied",
            Error::NoStagedKey => "no staged key",
            Error::Unsupported => "unsupported operation",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// The result of every operation of the crypto traits.
pub type Result<T> = core::result::Result<T, Error>;
