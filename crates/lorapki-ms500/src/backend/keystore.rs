//! `RootKeyStore` of [`Ms500Backend`] and the DevNonce counter, on the two-record flash store.

use core::ops::Range;

use lorapki_crypto::{
    AES_BLOCK_LEN, AesKey, Error, KeyStoreStatus, Result, RootKeyKind, RootKeySlot, RootKeyStore,
    RootKeys,
};
use zeroize::Zeroize;

use super::aes::AesOperation;
use super::{Ms500Backend, Platform};
use crate::storage::{Cipher, Meta, Store, body, flag};

/// The flags word of a plaintext body.
pub(super) fn flags(body_bytes: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&body_bytes[body::FLAGS]);
    u32::from_le_bytes(bytes)
}

fn set_flags(body_bytes: &mut [u8], flags: u32) {
    body_bytes[body::FLAGS].copy_from_slice(&flags.to_le_bytes());
}

fn word(body_bytes: &[u8], range: Range<usize>) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&body_bytes[range]);
    u32::from_le_bytes(bytes)
}

fn put_key(body_bytes: &mut [u8], range: Range<usize>, key: Option<&AesKey>) {
    match key {
        Some(key) => body_bytes[range].copy_from_slice(key.expose_secret()),
        None => body_bytes[range].zeroize(),
    }
}

/// The checks before staged keys are activated or dropped: the store is provisioned
/// ([`Error::SlotEmpty`] if not) and holds staged keys ([`Error::NoStagedKey`] if not).
fn require_staged(meta: Meta) -> Result<()> {
    if !meta.has(flag::PROVISIONED) {
        return Err(Error::SlotEmpty);
    }
    if !meta.has(flag::STAGED) {
        return Err(Error::NoStagedKey);
    }
    Ok(())
}

/// The highest DevNonce a LoRaWAN 1.0.4/1.1 device may use (a 16-bit counter that never wraps).
pub const DEV_NONCE_MAX: u32 = 0xffff;

impl<H: Platform> Ms500Backend<H> {
    /// The next LoRaWAN DevNonce: returns the stored counter and persists `counter + 1` before
    /// returning, so that a power cut can never make the device reuse a DevNonce (LoRaWAN 1.0.4
    /// §6.2.5). The counter survives [`erase_all`](RootKeyStore::erase_all).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when all 65536 values have been used; a hardware condition (the
    /// counter is then unchanged, or advanced without the value having been handed out).
    pub fn next_dev_nonce(&mut self) -> Result<u16> {
        self.guarded(|this| {
            let current = this.store.meta().dev_nonce;
            if current > DEV_NONCE_MAX {
                return Err(Error::Unsupported);
            }
            let value = u16::try_from(current).map_err(|_| Error::Unsupported)?;
            this.commit_edit(|body_bytes, _| {
                let stored = word(body_bytes, body::DEV_NONCE);
                body_bytes[body::DEV_NONCE]
                    .copy_from_slice(&stored.saturating_add(1).to_le_bytes());
                Ok(())
            })?;
            Ok(value)
        })
    }

    /// The DevNonce that [`next_dev_nonce`](Self::next_dev_nonce) will return next.
    #[must_use]
    pub fn peek_dev_nonce(&self) -> u32 {
        self.store.meta().dev_nonce
    }

    /// Where a root key is in the body, after the checks of the `RootKeyStore` documentation.
    fn root_key_range(&self, slot: RootKeySlot, which: RootKeyKind) -> Result<Range<usize>> {
        let meta = self.store.meta();
        if !meta.has(flag::PROVISIONED) {
            return Err(Error::SlotEmpty);
        }
        let (range, required) = match (slot, which) {
            (RootKeySlot::Active, RootKeyKind::AppKey) => (body::ACTIVE_APP, None),
            (RootKeySlot::Active, RootKeyKind::NwkKey) => {
                (body::ACTIVE_NWK, Some(flag::ACTIVE_NWK))
            }
            (RootKeySlot::Staged, _) if !meta.has(flag::STAGED) => {
                return Err(Error::NoStagedKey);
            }
            (RootKeySlot::Staged, RootKeyKind::AppKey) => (body::STAGED_APP, None),
            (RootKeySlot::Staged, RootKeyKind::NwkKey) => {
                (body::STAGED_NWK, Some(flag::STAGED_NWK))
            }
        };
        match required {
            Some(bit) if !meta.has(bit) => Err(Error::SlotEmpty),
            _ => Ok(range),
        }
    }

    /// Decrypts the current record, moves one root key into `scratch.key` (the record buffer is
    /// zeroized at once) and runs `operation` with it in the AES scratch slot.
    fn with_root_key(
        &mut self,
        slot: RootKeySlot,
        which: RootKeyKind,
        operation: AesOperation<'_>,
    ) -> Result<()> {
        let range = self.root_key_range(slot, which)?;
        let mut cipher = Cipher {
            aes: &mut self.aes,
            delay: &mut self.delay,
            timeouts: &self.config.timeouts,
        };
        let loaded = self
            .store
            .load_current(&mut cipher, &mut self.scratch.record);
        if loaded.is_ok() {
            let body_bytes = Store::<H::Flash>::body(&mut self.scratch.record);
            self.scratch.key.copy_from_slice(&body_bytes[range]);
        }
        self.scratch.record.zeroize();
        match loaded {
            Ok(true) => self.with_scratch_key(operation),
            Ok(false) => Err(Error::SlotEmpty),
            Err(error) => {
                self.needs_resync = true;
                Err(error)
            }
        }
    }
}

impl<H: Platform> RootKeyStore for Ms500Backend<H> {
    fn provision_factory(&mut self, keys: RootKeys) -> Result<()> {
        self.guarded(|this| {
            if this.store.meta().has(flag::PROVISIONED) {
                return Err(Error::SlotOccupied);
            }
            this.commit_edit(|body_bytes, _| {
                put_key(body_bytes, body::ACTIVE_APP, Some(&keys.app_key));
                put_key(body_bytes, body::ACTIVE_NWK, keys.nwk_key.as_ref());
                put_key(body_bytes, body::STAGED_APP, None);
                put_key(body_bytes, body::STAGED_NWK, None);
                body_bytes[body::GENERATION].zeroize();
                let mut bits = flags(body_bytes) & (flag::IDENTITY[0] | flag::IDENTITY[1]);
                bits |= flag::PROVISIONED;
                if keys.nwk_key.is_some() {
                    bits |= flag::ACTIVE_NWK;
                }
                set_flags(body_bytes, bits);
                Ok(())
            })
        })
    }

    fn status(&mut self) -> Result<KeyStoreStatus> {
        self.guarded(|this| {
            let meta = this.store.meta();
            if !meta.has(flag::PROVISIONED) {
                return Err(Error::SlotEmpty);
            }
            Ok(KeyStoreStatus {
                active_generation: meta.generation,
                staged: meta.has(flag::STAGED),
            })
        })
    }

    fn stage(&mut self, keys: RootKeys) -> Result<()> {
        self.guarded(|this| {
            if !this.store.meta().has(flag::PROVISIONED) {
                return Err(Error::SlotEmpty);
            }
            this.commit_edit(|body_bytes, _| {
                put_key(body_bytes, body::STAGED_APP, Some(&keys.app_key));
                put_key(body_bytes, body::STAGED_NWK, keys.nwk_key.as_ref());
                let mut bits = (flags(body_bytes) | flag::STAGED) & !flag::STAGED_NWK;
                if keys.nwk_key.is_some() {
                    bits |= flag::STAGED_NWK;
                }
                set_flags(body_bytes, bits);
                Ok(())
            })
        })
    }

    fn activate(&mut self) -> Result<()> {
        self.guarded(|this| {
            let meta = this.store.meta();
            require_staged(meta)?;
            let next = meta.generation.checked_add(1).ok_or(Error::Unsupported)?;
            this.commit_edit(|body_bytes, _| {
                // Staged → active; the previous active keys are overwritten in the new record
                // and the record holding them is erased by the commit.
                body_bytes.copy_within(body::STAGED_APP, body::ACTIVE_APP.start);
                body_bytes.copy_within(body::STAGED_NWK, body::ACTIVE_NWK.start);
                body_bytes[body::STAGED_APP].zeroize();
                body_bytes[body::STAGED_NWK].zeroize();
                body_bytes[body::GENERATION].copy_from_slice(&next.to_le_bytes());
                let old = flags(body_bytes);
                let mut bits = old & !(flag::STAGED | flag::STAGED_NWK | flag::ACTIVE_NWK);
                if old & flag::STAGED_NWK != 0 {
                    bits |= flag::ACTIVE_NWK;
                }
                set_flags(body_bytes, bits);
                Ok(())
            })
        })
    }

    fn roll_back(&mut self) -> Result<()> {
        self.guarded(|this| {
            require_staged(this.store.meta())?;
            this.commit_edit(|body_bytes, _| {
                body_bytes[body::STAGED_APP].zeroize();
                body_bytes[body::STAGED_NWK].zeroize();
                set_flags(
                    body_bytes,
                    flags(body_bytes) & !(flag::STAGED | flag::STAGED_NWK),
                );
                Ok(())
            })
        })
    }

    fn erase_all(&mut self) -> Result<()> {
        self.guarded(|this| {
            this.commit_edit(|body_bytes, _| {
                for range in [
                    body::ACTIVE_APP,
                    body::ACTIVE_NWK,
                    body::STAGED_APP,
                    body::STAGED_NWK,
                    body::GENERATION,
                ] {
                    body_bytes[range].zeroize();
                }
                // Identity keys and the DevNonce counter are not root keys: they stay.
                set_flags(
                    body_bytes,
                    flags(body_bytes) & (flag::IDENTITY[0] | flag::IDENTITY[1]),
                );
                Ok(())
            })
        })
    }

    fn root_cmac(
        &mut self,
        slot: RootKeySlot,
        which: RootKeyKind,
        parts: &[&[u8]],
    ) -> Result<[u8; AES_BLOCK_LEN]> {
        self.guarded(|this| {
            let mut tag = [0u8; AES_BLOCK_LEN];
            this.with_root_key(slot, which, AesOperation::Cmac(parts, &mut tag))?;
            Ok(tag)
        })
    }

    fn root_encrypt_block(
        &mut self,
        slot: RootKeySlot,
        which: RootKeyKind,
        block: &mut [u8; AES_BLOCK_LEN],
    ) -> Result<()> {
        self.guarded(|this| this.with_root_key(slot, which, AesOperation::EncryptBlock(block)))
    }
}
