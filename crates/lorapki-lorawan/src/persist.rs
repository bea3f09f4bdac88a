//! What the adapter keeps across power cycles, and the hook that stores it.

use core::fmt;

use lorapki_proto::DevicePersistent;

use crate::frames::JOIN_NONCE_MAX;

/// Everything the adapter must find again after a reset, besides the key store.
///
/// * the session's [`DevicePersistent`] (last session number, failure count: PROTOCOL.md §5.1);
/// * the last DevNonce spent: DevNonce is a counter that never repeats for a JoinEUI and increases
///   across every JoinRequest, rejoins under a new key included (TS001-1.0.4 §6.2.5, PROTOCOL.md
///   §7 step 4); it is stored *before* the JoinRequest that carries it goes on the air;
/// * the JoinNonce of the last JoinAccept accepted: a JoinAccept whose JoinNonce does not increase
///   is a replay and is ignored (TS001-1.0.4 §6.2.6), so that an old JoinAccept under the active
///   key cannot make the device roll a staged key back.
///
/// [`PersistentState::to_bytes`] gives a small fixed encoding for flash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistentState {
    /// The session's state.
    pub session: DevicePersistent,
    /// The last DevNonce used in a JoinRequest; `None` before the first.
    pub last_dev_nonce: Option<u16>,
    /// The JoinNonce of the last JoinAccept accepted (24 bits); `None` before the first.
    pub last_join_nonce: Option<u32>,
}

/// Version byte of [`PersistentState::to_bytes`].
const FORMAT: u8 = 1;
const HAS_SESSION: u8 = 0b001;
const HAS_DEV_NONCE: u8 = 0b010;
const HAS_JOIN_NONCE: u8 = 0b100;

impl PersistentState {
    /// Length of [`PersistentState::to_bytes`].
    pub const ENCODED_LEN: usize = 9;

    /// The DevNonce of the next JoinRequest; `None` once all 65,536 values are spent (the device
    /// then needs a new JoinEUI: LoRaWAN forbids reusing a DevNonce).
    #[must_use]
    pub fn next_dev_nonce(&self) -> Option<u16> {
        match self.last_dev_nonce {
            None => Some(0),
            Some(last) => last.checked_add(1),
        }
    }

    /// A fixed 9-byte encoding: format, flags, DevNonce (LE), JoinNonce (24-bit LE), session
    /// number, consecutive failures.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0] = FORMAT;
        let mut flags = 0;
        if let Some(nonce) = self.last_dev_nonce {
            flags |= HAS_DEV_NONCE;
            out[2..4].copy_from_slice(&nonce.to_le_bytes());
        }
        if let Some(nonce) = self.last_join_nonce {
            flags |= HAS_JOIN_NONCE;
            out[4..7].copy_from_slice(&(nonce & JOIN_NONCE_MAX).to_le_bytes()[..3]);
        }
        if let Some(session) = self.session.last_session {
            flags |= HAS_SESSION;
            out[7] = session;
        }
        out[1] = flags;
        out[8] = self.session.consecutive_failures;
        out
    }

    /// Decodes [`PersistentState::to_bytes`]; `None` for another format or impossible values.
    #[must_use]
    pub fn from_bytes(bytes: &[u8; Self::ENCODED_LEN]) -> Option<Self> {
        let flags = bytes[1];
        if bytes[0] != FORMAT || flags & !(HAS_SESSION | HAS_DEV_NONCE | HAS_JOIN_NONCE) != 0 {
            return None;
        }
        let last_session = if flags & HAS_SESSION != 0 {
            // Session numbers have 6 bits (PROTOCOL.md §2).
            (bytes[7] <= 0x3f).then_some(Some(bytes[7]))?
        } else {
            None
        };
        Some(Self {
            session: DevicePersistent {
                last_session,
                consecutive_failures: bytes[8],
            },
            last_dev_nonce: (flags & HAS_DEV_NONCE != 0)
                .then(|| u16::from_le_bytes([bytes[2], bytes[3]])),
            last_join_nonce: (flags & HAS_JOIN_NONCE != 0)
                .then(|| u32::from_le_bytes([bytes[4], bytes[5], bytes[6], 0])),
        })
    }
}

/// The store could not write the state; nothing that depends on it was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistError;

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the persistent state could not be stored")
    }
}

impl core::error::Error for PersistError {}

/// Where the adapter stores its [`PersistentState`] (flash, EEPROM, a backup register file).
///
/// [`Persist::save`] must be durable when it returns `Ok`: the adapter sends a JoinRequest only
/// after the DevNonce it carries is saved. Closures `FnMut(&PersistentState) -> Result<(),
/// PersistError>` implement it.
pub trait Persist {
    /// Stores `state`, replacing the previous one.
    ///
    /// # Errors
    ///
    /// [`PersistError`] if it could not be stored durably.
    fn save(&mut self, state: &PersistentState) -> Result<(), PersistError>;
}

impl<F: FnMut(&PersistentState) -> Result<(), PersistError>> Persist for F {
    fn save(&mut self, state: &PersistentState) -> Result<(), PersistError> {
        self(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let states = [
            PersistentState::default(),
            PersistentState {
                session: DevicePersistent {
                    last_session: Some(63),
                    consecutive_failures: 255,
                },
                last_dev_nonce: Some(u16::MAX),
                last_join_nonce: Some(JOIN_NONCE_MAX),
            },
            PersistentState {
                session: DevicePersistent {
                    last_session: Some(0),
                    consecutive_failures: 0,
                },
                last_dev_nonce: Some(0),
                last_join_nonce: Some(0),
            },
        ];
        for state in states {
            assert_eq!(PersistentState::from_bytes(&state.to_bytes()), Some(state));
        }
    }

    #[test]
    fn decoding_refuses_foreign_bytes() {
        let good = PersistentState::default().to_bytes();
        let mut other_format = good;
        other_format[0] = 2;
        assert_eq!(PersistentState::from_bytes(&other_format), None);
        let mut unknown_flag = good;
        unknown_flag[1] = 0x08;
        assert_eq!(PersistentState::from_bytes(&unknown_flag), None);
        let mut bad_session = good;
        bad_session[1] = HAS_SESSION;
        bad_session[7] = 64;
        assert_eq!(PersistentState::from_bytes(&bad_session), None);
    }

    #[test]
    fn dev_nonce_counts_up_and_runs_out() {
        let mut state = PersistentState::default();
        assert_eq!(state.next_dev_nonce(), Some(0));
        state.last_dev_nonce = Some(41);
        assert_eq!(state.next_dev_nonce(), Some(42));
        state.last_dev_nonce = Some(u16::MAX);
        assert_eq!(state.next_dev_nonce(), None);
    }
}
