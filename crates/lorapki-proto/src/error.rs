//! The one error type of the crate, and the reasons a run fails.

use core::fmt;

/// Why an input was refused. A refused input changes no state.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The maximum application payload N given for a transmit opportunity is outside 11..=242,
    /// or the buffer is shorter than N.
    PayloadSize {
        /// The N that was given.
        n: usize,
    },
    /// A frame (or part of it) could not be decoded; commands before the bad one were processed.
    Wire(lorapki_wire::Error),
    /// A fragment was refused by the reassembler.
    Reassembly(lorapki_wire::ReassemblyError),
    /// A command travelled in the wrong direction (e.g. a PubKeyReq in a downlink).
    WrongDirection {
        /// Its CID.
        cid: u8,
    },
    /// The frame belongs to another session than the current one, or there is no run (§8).
    StaleSession,
    /// The device is not registered at the server: nothing was done.
    UnknownDevice,
    /// The crypto backend failed (hardware condition); the run was ended cleanly.
    Crypto(lorapki_crypto::Error),
    /// The call does not fit the current state (e.g. a join result while no rejoin is pending).
    InvalidState,
    /// The peer's request was refused by policy (unsupported version, rate limit); an Abort is owed.
    Refused,
    /// Stored session-snapshot bytes are not a valid snapshot.
    BadSnapshot,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PayloadSize { n } => {
                write!(
                    f,
                    "maximum payload size {n} outside 11..=242 or larger than the buffer"
                )
            }
            Self::Wire(e) => write!(f, "malformed frame: {e}"),
            Self::Reassembly(e) => write!(f, "fragment refused: {e}"),
            Self::WrongDirection { cid } => write!(f, "command 0x{cid:02x} in the wrong direction"),
            Self::StaleSession => f.write_str("frame of an old or foreign session"),
            Self::UnknownDevice => f.write_str("device not registered"),
            Self::Crypto(e) => write!(f, "crypto backend: {e}"),
            Self::InvalidState => f.write_str("input does not fit the current state"),
            Self::Refused => f.write_str("request refused by policy"),
            Self::BadSnapshot => f.write_str("malformed session snapshot"),
        }
    }
}

impl core::error::Error for Error {}

impl From<lorapki_wire::Error> for Error {
    fn from(e: lorapki_wire::Error) -> Self {
        Self::Wire(e)
    }
}

impl From<lorapki_crypto::Error> for Error {
    fn from(e: lorapki_crypto::Error) -> Self {
        Self::Crypto(e)
    }
}

/// Why a run ended without a new key (reported by `Failed` events).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FailReason {
    /// 8 uplinks without an answer (the original design's rule, PROTOCOL.md §6.3).
    NoAnswer,
    /// The server could not verify the device's signature (SigVerifyAns Rejected).
    Rejected,
    /// The server refused to complete the run (SigVerifyAns Refused).
    Refused,
    /// The peer sent an Abort with this reason byte.
    Aborted(u8),
    /// The server's signature did not verify under the pinned key (a rogue or broken server).
    ServerAuthentication,
    /// The peer's ephemeral public key is not a valid point.
    BadEphemeral,
    /// The device's signature did not verify at the server.
    DeviceAuthentication,
    /// The pending session expired at the server.
    Expired,
    /// A newer session replaced this one.
    Superseded,
    /// The crypto backend failed.
    Crypto(CryptoFault),
}

/// A crypto backend failure, as a plain value (kept small so that it can be persisted).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CryptoFault {
    /// Busy or timed out: worth retrying later.
    Transient,
    /// Fault, tamper or RNG failure.
    Hardware,
    /// Any other backend error.
    Other,
}

impl From<lorapki_crypto::Error> for CryptoFault {
    fn from(e: lorapki_crypto::Error) -> Self {
        use lorapki_crypto::Error as E;
        match e {
            E::Busy | E::Timeout => Self::Transient,
            E::Fault | E::Tamper | E::Rng => Self::Hardware,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAnswer => f.write_str("no answer after 8 uplinks"),
            Self::Rejected => f.write_str("server rejected the device signature"),
            Self::Refused => f.write_str("server refused the run"),
            Self::Aborted(r) => write!(f, "aborted by the peer (reason 0x{r:02x})"),
            Self::ServerAuthentication => f.write_str("server signature invalid"),
            Self::BadEphemeral => f.write_str("invalid ephemeral public key"),
            Self::DeviceAuthentication => f.write_str("device signature invalid"),
            Self::Expired => f.write_str("session expired"),
            Self::Superseded => f.write_str("replaced by a newer session"),
            Self::Crypto(c) => write!(f, "crypto backend failure ({c:?})"),
        }
    }
}
