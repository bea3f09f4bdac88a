//! [`SoftKeyStore`]: an in-RAM two-phase root-key store.

use core::fmt;

use lorapki_crypto::{
    AES_BLOCK_LEN, AesKey, Error, KeyStoreStatus, Result, RootKeyKind, RootKeySlot, RootKeyStore,
    RootKeys,
};

use crate::aes_ops;

/// An in-RAM [`RootKeyStore`]: for the server, for tests and for a device without secure storage.
///
/// The keys are [`AesKey`]s, so replaced, rolled-back, erased and dropped keys are zeroized.
/// RAM does not survive a reset: a device that needs the key switch to survive power loss (PROTOCOL
/// property 7) persists through a hardware store instead.
#[derive(Default)]
pub struct SoftKeyStore {
    active: Option<(u32, RootKeys)>,
    staged: Option<RootKeys>,
}

impl SoftKeyStore {
    /// An empty store (nothing provisioned).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            active: None,
            staged: None,
        }
    }

    fn key(&self, slot: RootKeySlot, which: RootKeyKind) -> Result<&AesKey> {
        let keys = match slot {
            RootKeySlot::Active => &self.active.as_ref().ok_or(Error::SlotEmpty)?.1,
            RootKeySlot::Staged => {
                if self.active.is_none() {
                    return Err(Error::SlotEmpty);
                }
                self.staged.as_ref().ok_or(Error::NoStagedKey)?
            }
        };
        match which {
            RootKeyKind::AppKey => Ok(&keys.app_key),
            RootKeyKind::NwkKey => keys.nwk_key.as_ref().ok_or(Error::SlotEmpty),
        }
    }
}

impl fmt::Debug for SoftKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftKeyStore")
            .field(
                "active_generation",
                &self.active.as_ref().map(|(generation, _)| generation),
            )
            .field("staged", &self.staged.is_some())
            .finish_non_exhaustive()
    }
}

impl RootKeyStore for SoftKeyStore {
    fn provision_factory(&mut self, keys: RootKeys) -> Result<()> {
        if self.active.is_some() || self.staged.is_some() {
            return Err(Error::SlotOccupied);
        }
        self.active = Some((0, keys));
        Ok(())
    }

    fn status(&mut self) -> Result<KeyStoreStatus> {
        let (generation, _) = self.active.as_ref().ok_or(Error::SlotEmpty)?;
        Ok(KeyStoreStatus {
            active_generation: *generation,
            staged: self.staged.is_some(),
        })
    }

    fn stage(&mut self, keys: RootKeys) -> Result<()> {
        if self.active.is_none() {
            return Err(Error::SlotEmpty);
        }
        self.staged = Some(keys);
        Ok(())
    }

    fn activate(&mut self) -> Result<()> {
        let (generation, _) = self.active.as_ref().ok_or(Error::SlotEmpty)?;
        let next = generation.checked_add(1).ok_or(Error::Unsupported)?;
        let staged = self.staged.take().ok_or(Error::NoStagedKey)?;
        // The replaced keys are dropped here, which zeroizes them.
        self.active = Some((next, staged));
        Ok(())
    }

    fn roll_back(&mut self) -> Result<()> {
        if self.active.is_none() {
            return Err(Error::SlotEmpty);
        }
        self.staged.take().map(drop).ok_or(Error::NoStagedKey)
    }

    fn erase_all(&mut self) -> Result<()> {
        self.active = None;
        self.staged = None;
        Ok(())
    }

    fn root_cmac(
        &mut self,
        slot: RootKeySlot,
        which: RootKeyKind,
        parts: &[&[u8]],
    ) -> Result<[u8; AES_BLOCK_LEN]> {
        Ok(aes_ops::cmac(self.key(slot, which)?, parts))
    }

    fn root_encrypt_block(
        &mut self,
        slot: RootKeySlot,
        which: RootKeyKind,
        block: &mut [u8; AES_BLOCK_LEN],
    ) -> Result<()> {
        aes_ops::encrypt_block(self.key(slot, which)?, block);
        Ok(())
    }
}
