//! The one error type of the crate.

use core::fmt;

use crate::persist::PersistError;

/// Why the adapter refused a call or could not complete it. `E` is the radio's error type.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error<E> {
    /// FPort 1 is reserved for the lorapki exchange: application traffic on it is refused
    /// (PROTOCOL.md §3).
    ReservedPort,
    /// FPort 0 carries MAC commands and 224..=255 are reserved by LoRaWAN: not for applications.
    InvalidPort(u8),
    /// The payload is longer than the maximum application payload of the next uplink (the
    /// MAC-payload limit of the data rate, less the frame header and the pending MAC answers).
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload the next uplink can carry.
        max: usize,
    },
    /// The device has no network session (it has not joined, or a rejoin is pending).
    NotJoined,
    /// The MAC is busy with an uplink and its receive windows, or a join is due first.
    Busy,
    /// All 65,536 DevNonces are spent: LoRaWAN forbids reusing one, the device cannot join again
    /// under this JoinEUI.
    DevNonceExhausted,
    /// The persistent state could not be stored; the step that needed it (a JoinRequest, an
    /// uplink) was not taken.
    Persist(PersistError),
    /// The key store or the crypto backend failed.
    Crypto(lorapki_crypto::Error),
    /// The key-exchange state machine refused an input.
    Session(lorapki_proto::Error),
    /// The radio failed.
    Radio(E),
    /// The MAC refused the request in its current state.
    Mac,
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedPort => f.write_str("FPort 1 is reserved for the lorapki key exchange"),
            Self::InvalidPort(port) => write!(f, "FPort {port} is not an application port"),
            Self::PayloadTooLarge { len, max } => {
                write!(
                    f,
                    "payload of {len} bytes exceeds the {max} bytes of the next uplink"
                )
            }
            Self::NotJoined => f.write_str("no network session"),
            Self::Busy => f.write_str("the MAC is busy"),
            Self::DevNonceExhausted => f.write_str("every DevNonce has been used"),
            Self::Persist(e) => write!(f, "{e}"),
            Self::Crypto(e) => write!(f, "key store or crypto backend: {e}"),
            Self::Session(e) => write!(f, "key exchange: {e}"),
            Self::Radio(e) => write!(f, "radio: {e:?}"),
            Self::Mac => f.write_str("the MAC refused the request in its state"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

impl<E> From<lorapki_crypto::Error> for Error<E> {
    fn from(e: lorapki_crypto::Error) -> Self {
        Self::Crypto(e)
    }
}

impl<E> From<lorapki_proto::Error> for Error<E> {
    fn from(e: lorapki_proto::Error) -> Self {
        Self::Session(e)
    }
}

impl<E> From<PersistError> for Error<E> {
    fn from(e: PersistError) -> Self {
        Self::Persist(e)
    }
}
