//! The two-phase LoRaWAN root-key store (PROTOCOL property 7).
//!
//! A device keeps its working root key (*active*) until a JoinAccept under the new key has verified;
//! only then is the new key (*staged*) activated and the old one erased. Root keys are handed to the
//! store by value and never read back: the MAC computes JoinRequest MICs and decrypts JoinAccepts
//! through [`RootKeyStore::root_cmac`] and [`RootKeyStore::root_encrypt_block`], so a hardware store
//! can keep them in secure storage.

use core::fmt;

use crate::{AesKey, Result};

/// Which of the two root-key sets an operation uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RootKeySlot {
    /// The keys the device currently joins with.
    Active,
    /// The new keys, waiting for a JoinAccept that verifies under them.
    Staged,
}

/// Which root key of a set an operation uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RootKeyKind {
    /// The AppKey (LoRaWAN 1.0.x: the only root key; 1.1: the application root key).
    AppKey,
    /// The NwkKey (LoRaWAN 1.1 only).
    NwkKey,
}

/// A set of LoRaWAN root keys. Zeroized on drop through its [`AesKey`]s; `Debug` is redacted.
pub struct RootKeys {
    /// The AppKey.
    pub app_key: AesKey,
    /// The NwkKey of a LoRaWAN 1.1 device; `None` for LoRaWAN 1.0.x.
    pub nwk_key: Option<AesKey>,
}

impl fmt::Debug for RootKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKeys")
            .field("app_key", &self.app_key)
            .field("nwk_key", &self.nwk_key)
            .finish()
    }
}

/// What a [`RootKeyStore`] holds, without revealing any key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KeyStoreStatus {
    /// How many times a staged key was activated since factory provisioning (which is generation 0).
    pub active_generation: u32,
    /// Whether a staged key is waiting.
    pub staged: bool,
}

/// A two-phase root-key store: the active keys stay usable until the staged keys are activated.
///
/// Implementations must make [`RootKeyStore::stage`], [`RootKeyStore::activate`] and
/// [`RootKeyStore::roll_back`] atomic with respect to power loss: after any interruption the store
/// holds either the old or the new state, never none (PROTOCOL property 7).
pub trait RootKeyStore {
    /// Stores the factory keys as the active keys, generation 0.
    ///
    /// # Errors
    ///
    /// [`Error::SlotOccupied`](crate::Error::SlotOccupied) if anything is stored already.
    fn provision_factory(&mut self, keys: RootKeys) -> Result<()>;

    /// The generation of the active keys and whether keys are staged.
    ///
    /// # Errors
    ///
    /// [`Error::SlotEmpty`](crate::Error::SlotEmpty) if nothing was provisioned.
    fn status(&mut self) -> Result<KeyStoreStatus>;

    /// Stores `keys` as the staged keys, replacing earlier staged keys. The active keys are untouched.
    ///
    /// # Errors
    ///
    /// [`Error::SlotEmpty`](crate::Error::SlotEmpty) if nothing was provisioned.
    fn stage(&mut self, keys: RootKeys) -> Result<()>;

    /// Makes the staged keys active (generation + 1) and erases the previously active keys.
    ///
    /// # Errors
    ///
    /// [`Error::NoStagedKey`](crate::Error::NoStagedKey) if no keys are staged.
    fn activate(&mut self) -> Result<()>;

    /// Erases the staged keys; the active keys are untouched.
    ///
    /// # Errors
    ///
    /// [`Error::NoStagedKey`](crate::Error::NoStagedKey) if no keys are staged.
    fn roll_back(&mut self) -> Result<()>;

    /// Erases everything (decommissioning); [`RootKeyStore::status`] then gives `SlotEmpty`.
    ///
    /// # Errors
    ///
    /// Only hardware conditions.
    fn erase_all(&mut self) -> Result<()>;

    /// AES-CMAC (RFC 4493) over the concatenation of `parts` under a stored root key, e.g. the
    /// JoinRequest MIC.
    ///
    /// # Errors
    ///
    /// [`Error::SlotEmpty`](crate::Error::SlotEmpty) if that slot or key (e.g. the NwkKey of a
    /// 1.0.x device) holds nothing; [`Error::NoStagedKey`](crate::Error::NoStagedKey) for
    /// [`RootKeySlot::Staged`] when nothing is staged.
    fn root_cmac(
        &mut self,
        slot: RootKeySlot,
        which: RootKeyKind,
        parts: &[&[u8]],
    ) -> Result<[u8; 16]>;

    /// Encrypts one block in place with AES-128 under a stored root key (JoinAccept decryption,
    /// which LoRaWAN defines as an AES *encrypt*, and session-key derivation).
    ///
    /// # Errors
    ///
    /// As [`RootKeyStore::root_cmac`].
    fn root_encrypt_block(
        &mut self,
        slot: RootKeySlot,
        which: RootKeyKind,
        block: &mut [u8; 16],
    ) -> Result<()>;
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn root_keys_debug_is_redacted() {
        let keys = RootKeys {
            app_key: AesKey::from_array([0x42; 16]),
            nwk_key: Some(AesKey::from_array([0x43; 16])),
        };
        let printed = format!("{keys:?}");
        assert!(
            !printed.contains("42") && !printed.contains("66"),
            "{printed}"
        );
        assert!(printed.contains("REDACTED"));
    }
}
