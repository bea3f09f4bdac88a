//! `CryptoBackend` and `KeyImport` of [`Ms500Backend`]: hashing and HKDF in software, everything
//! with a private key on the PKA.

use core::fmt;

use lorapki_crypto::{
    CryptoBackend, Error, KeySlot, P384_PUBLIC_COMPRESSED_LEN, P384_PUBLIC_UNCOMPRESSED_LEN, Prk,
    PublicKey, Result, SHA384_LEN, SharedSecret, Signature, hkdf_sha384,
};
use sha2::Sha384;
use zeroize::Zeroize;

use super::{EPHEMERAL_SLOTS, EphemeralSlot, IDENTITY_SLOTS, Identity, Ms500Backend, Platform};
use crate::engine::{P384_LEN, PkaCommand, PkaEngine};
use crate::storage::{body, flag};

/// An ephemeral ECDH key of an [`Ms500Backend`]: a handle to a PKA slot, not the key.
///
/// Not `Clone`; consumed by `ecdh_agree`, which erases the slot. The handle holds no secret.
pub struct Ms500Ephemeral {
    index: usize,
    ticket: u32,
}

impl fmt::Debug for Ms500Ephemeral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ms500Ephemeral")
            .field("slot", &self.index)
            .finish_non_exhaustive()
    }
}

/// SEC 1 compression of an engine point `x ‖ y` (trusted: it came from the engine).
fn compress(point: &[u8; 96]) -> Result<PublicKey> {
    let mut uncompressed = [0u8; P384_PUBLIC_UNCOMPRESSED_LEN];
    uncompressed[0] = 0x04;
    uncompressed[1..].copy_from_slice(point);
    PublicKey::from_uncompressed_unchecked(&uncompressed)
}

fn identity_index(slot: KeySlot) -> Result<usize> {
    let index = usize::from(slot.0);
    if index < IDENTITY_SLOTS {
        Ok(index)
    } else {
        Err(Error::Unsupported)
    }
}

impl<H: Platform> Ms500Backend<H> {
    /// Decompresses (and so validates) a public key into `scratch.point`.
    fn decompress(&mut self, public: &PublicKey) -> Result<()> {
        let mut x = [0u8; P384_LEN];
        x.copy_from_slice(public.x());
        let y_is_odd = public.as_bytes()[0] == 0x03;
        pka_into_point(self, &PkaCommand::Decompress { x: &x, y_is_odd })
    }

    /// The engine point of the key in identity slot `index` into `scratch.point`.
    fn identity_point(&mut self, index: usize) -> Result<()> {
        let slot = self.config.slots.identity[index];
        pka_into_point(self, &PkaCommand::PublicKey { slot })
    }

    fn identity_loaded(&self, index: usize) -> Result<Option<PublicKey>> {
        match self.identities[index] {
            Identity::Empty => Err(Error::SlotEmpty),
            Identity::Loaded(public) => Ok(public),
        }
    }

    /// Installs the scalar in `scratch.scalar` as identity key `index`: load into the PKA,
    /// compute the public key, and persist in the key store if the PKA forgets keys at reset.
    /// On failure the slot ends up empty (erased, or re-derived from the store).
    pub(super) fn install_identity(&mut self, index: usize) -> Result<PublicKey> {
        let slot = self.config.slots.identity[index];
        let result = self.install_identity_steps(index, slot);
        self.scratch.scalar.zeroize();
        match result {
            Ok(public) => {
                self.identities[index] = Identity::Loaded(Some(public));
                Ok(public)
            }
            Err(error) => {
                // The slot may hold a complete or a half-loaded key: erase it. If that fails
                // too, the next operation erases it (or reloads the stored key) first.
                self.identities[index] = Identity::Empty;
                if self.pka.retains_keys() {
                    self.identity_pending_erase[index] = true;
                }
                if self.erase_pka_slot(slot).is_ok() {
                    self.identity_pending_erase[index] = false;
                } else {
                    self.needs_resync = true;
                }
                Err(error)
            }
        }
    }

    fn install_identity_steps(&mut self, index: usize, slot: u8) -> Result<PublicKey> {
        self.load_scratch_scalar(slot)?;
        self.identity_point(index)?;
        let public = compress(&self.scratch.point)?;
        if !self.pka.retains_keys() {
            self.commit_edit(|body_bytes, scalar| {
                body_bytes[body::IDENTITY[index].clone()].copy_from_slice(scalar);
                let flags = super::keystore::flags(body_bytes) | flag::IDENTITY[index];
                body_bytes[body::FLAGS].copy_from_slice(&flags.to_le_bytes());
                Ok(())
            })?;
        }
        Ok(public)
    }

    /// Loads the scalar in `scratch.scalar` into a free ephemeral slot.
    pub(super) fn install_ephemeral(&mut self) -> Result<(Ms500Ephemeral, PublicKey)> {
        let index = self.free_ephemeral_slot()?;
        let slot = self.config.slots.ephemeral[index];
        self.ephemerals[index] = EphemeralSlot::Dirty;
        let loaded = self.load_scratch_scalar(slot);
        self.scratch.scalar.zeroize();
        let result = loaded
            .and_then(|()| pka_into_point(self, &PkaCommand::PublicKey { slot }))
            .and_then(|()| compress(&self.scratch.point));
        match result {
            Ok(public) => {
                let ticket = self.next_ticket;
                self.next_ticket = self.next_ticket.wrapping_add(1);
                self.ephemerals[index] = EphemeralSlot::Live { ticket };
                Ok((Ms500Ephemeral { index, ticket }, public))
            }
            Err(error) => {
                // Best effort; a slot that stays dirty is erased before its next use.
                let _ = self.erase_ephemeral(index);
                Err(error)
            }
        }
    }

    /// A free ephemeral slot: a free one, else a dirty one erased, else the oldest live one
    /// erased (its handle then fails with `SlotEmpty`).
    fn free_ephemeral_slot(&mut self) -> Result<usize> {
        if let Some(index) = self
            .ephemerals
            .iter()
            .position(|slot| *slot == EphemeralSlot::Free)
        {
            return Ok(index);
        }
        let index = self
            .ephemerals
            .iter()
            .position(|slot| *slot == EphemeralSlot::Dirty)
            .unwrap_or_else(|| {
                let next = self.next_ticket;
                (0..EPHEMERAL_SLOTS)
                    .max_by_key(|&index| match self.ephemerals[index] {
                        EphemeralSlot::Live { ticket } => next.wrapping_sub(ticket),
                        _ => 0,
                    })
                    .unwrap_or(0)
            });
        self.erase_ephemeral(index)?;
        Ok(index)
    }
}

/// Runs a PKA command whose output is a point or a signature into `scratch.point`.
fn pka_into_point<H: Platform>(
    backend: &mut Ms500Backend<H>,
    command: &PkaCommand<'_>,
) -> Result<()> {
    crate::wait::pka_run(
        &mut backend.pka,
        &mut backend.delay,
        &backend.config.timeouts,
        command,
        &mut backend.scratch.point,
    )
    .map_err(Error::from)
}

impl<H: Platform> CryptoBackend for Ms500Backend<H> {
    // Hashing is in software (the digest is public data): `sha2::Sha384`.
    type Hasher = Sha384;
    type Ephemeral = Ms500Ephemeral;

    fn sha384(&mut self) -> Sha384 {
        Sha384::default()
    }

    fn random_bytes(&mut self, out: &mut [u8]) -> Result<()> {
        self.guarded(|this| {
            this.rng
                .fill(&mut this.delay, &this.config.timeouts, out, false)
                .map_err(Error::from)
        })
    }

    fn hkdf_extract(&mut self, salt: &[u8], ikm: &[u8]) -> Result<Prk> {
        hkdf_sha384::extract(salt, ikm)
    }

    fn hkdf_expand(&mut self, prk: &Prk, info: &[&[u8]], okm: &mut [u8]) -> Result<()> {
        hkdf_sha384::expand(prk, info, okm)
    }

    fn ephemeral_generate(&mut self) -> Result<(Ms500Ephemeral, PublicKey)> {
        self.guarded(|this| {
            this.generate_scalar()?;
            this.install_ephemeral()
        })
    }

    fn ecdh_agree(&mut self, ephemeral: Ms500Ephemeral, peer: &PublicKey) -> Result<SharedSecret> {
        self.guarded(|this| {
            let Ms500Ephemeral { index, ticket } = ephemeral;
            if this.ephemerals.get(index) != Some(&EphemeralSlot::Live { ticket }) {
                return Err(Error::SlotEmpty);
            }
            // Consumed whatever happens next.
            this.ephemerals[index] = EphemeralSlot::Dirty;
            let slot = this.config.slots.ephemeral[index];
            let agreed = this.decompress(peer).and_then(|()| {
                let mut shared = SharedSecret::new_zeroed();
                crate::wait::pka_run(
                    &mut this.pka,
                    &mut this.delay,
                    &this.config.timeouts,
                    &PkaCommand::Ecdh {
                        slot,
                        peer: &this.scratch.point,
                    },
                    shared.as_mut_bytes(),
                )
                .map_err(Error::from)?;
                Ok(shared)
            });
            let erased = this.erase_ephemeral(index);
            // On any failure the shared secret is dropped here, which zeroizes it.
            let shared = agreed?;
            erased?;
            Ok(shared)
        })
    }

    fn ecdsa_verify_digest(
        &mut self,
        public: &PublicKey,
        digest: &[u8; SHA384_LEN],
        signature: &Signature,
    ) -> Result<()> {
        self.guarded(|this| {
            this.decompress(public)?;
            // Range checks in software, so that the single opaque error does not depend on the
            // engine's own checks.
            if !crate::scalar::in_range(signature.r()) || !crate::scalar::in_range(signature.s()) {
                return Err(Error::InvalidSignature);
            }
            crate::wait::pka_run(
                &mut this.pka,
                &mut this.delay,
                &this.config.timeouts,
                &PkaCommand::Verify {
                    public: &this.scratch.point,
                    digest,
                    signature: signature.as_bytes(),
                },
                &mut [],
            )
            .map_err(Error::from)
        })
    }

    fn public_key_from_sec1(&mut self, sec1: &[u8]) -> Result<PublicKey> {
        self.guarded(|this| match sec1.len() {
            P384_PUBLIC_COMPRESSED_LEN => {
                let mut bytes = [0u8; P384_PUBLIC_COMPRESSED_LEN];
                bytes.copy_from_slice(sec1);
                let public = PublicKey::from_compressed_unchecked(bytes)?;
                this.decompress(&public)?;
                Ok(public)
            }
            P384_PUBLIC_UNCOMPRESSED_LEN if sec1[0] == 0x04 => {
                this.scratch.point.copy_from_slice(&sec1[1..]);
                crate::wait::pka_run(
                    &mut this.pka,
                    &mut this.delay,
                    &this.config.timeouts,
                    &PkaCommand::CheckPoint {
                        point: &this.scratch.point,
                    },
                    &mut [],
                )
                .map_err(Error::from)?;
                compress(&this.scratch.point)
            }
            _ => Err(Error::InvalidPublicKey),
        })
    }

    fn public_key_uncompressed(
        &mut self,
        public: &PublicKey,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]> {
        self.guarded(|this| {
            this.decompress(public)?;
            let mut out = [0u8; P384_PUBLIC_UNCOMPRESSED_LEN];
            out[0] = 0x04;
            out[1..].copy_from_slice(&this.scratch.point);
            Ok(out)
        })
    }

    fn identity_generate(&mut self, slot: KeySlot) -> Result<PublicKey> {
        self.guarded(|this| {
            let index = identity_index(slot)?;
            if this.identities[index] != Identity::Empty {
                return Err(Error::SlotOccupied);
            }
            this.generate_scalar()?;
            this.install_identity(index)
        })
    }

    fn identity_public_key(&mut self, slot: KeySlot) -> Result<PublicKey> {
        self.guarded(|this| {
            let index = identity_index(slot)?;
            if let Some(public) = this.identity_loaded(index)? {
                return Ok(public);
            }
            this.identity_point(index)?;
            let public = compress(&this.scratch.point)?;
            this.identities[index] = Identity::Loaded(Some(public));
            Ok(public)
        })
    }

    fn identity_public_key_uncompressed(
        &mut self,
        slot: KeySlot,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]> {
        self.guarded(|this| {
            let index = identity_index(slot)?;
            this.identity_loaded(index)?;
            this.identity_point(index)?;
            let mut out = [0u8; P384_PUBLIC_UNCOMPRESSED_LEN];
            out[0] = 0x04;
            out[1..].copy_from_slice(&this.scratch.point);
            this.identities[index] = Identity::Loaded(Some(compress(&this.scratch.point)?));
            Ok(out)
        })
    }

    fn identity_sign_digest(
        &mut self,
        slot: KeySlot,
        digest: &[u8; SHA384_LEN],
    ) -> Result<Signature> {
        self.guarded(|this| {
            let index = identity_index(slot)?;
            this.identity_loaded(index)?;
            let slot = this.config.slots.identity[index];
            pka_into_point(this, &PkaCommand::Sign { slot, digest })?;
            Ok(Signature::from_bytes(this.scratch.point))
        })
    }

    fn identity_erase(&mut self, slot: KeySlot) -> Result<()> {
        self.guarded(|this| {
            let index = identity_index(slot)?;
            let engine_slot = this.config.slots.identity[index];
            let stored = this.store.meta().has(flag::IDENTITY[index]);
            if stored && !this.pka.retains_keys() {
                // The durable state first: a cut after this point leaves the key erased.
                this.commit_edit(|body_bytes, _| {
                    body_bytes[body::IDENTITY[index].clone()].zeroize();
                    let flags = super::keystore::flags(body_bytes) & !flag::IDENTITY[index];
                    body_bytes[body::FLAGS].copy_from_slice(&flags.to_le_bytes());
                    Ok(())
                })?;
            }
            this.identities[index] = Identity::Empty;
            if this.pka.retains_keys() {
                this.identity_pending_erase[index] = true;
            }
            match this.erase_pka_slot(engine_slot) {
                Ok(()) => {
                    this.identity_pending_erase[index] = false;
                    Ok(())
                }
                Err(error) => {
                    this.needs_resync = true;
                    Err(error)
                }
            }
        })
    }
}

#[cfg(feature = "key-import")]
impl<H: Platform> lorapki_crypto::KeyImport for Ms500Backend<H> {
    fn identity_import(
        &mut self,
        slot: KeySlot,
        private: &lorapki_crypto::Secret<48>,
    ) -> Result<PublicKey> {
        self.guarded(|this| {
            let index = identity_index(slot)?;
            if this.identities[index] != Identity::Empty {
                return Err(Error::SlotOccupied);
            }
            if !crate::scalar::in_range(private.expose_secret()) {
                return Err(Error::InvalidLength);
            }
            this.scratch.scalar.copy_from_slice(private.expose_secret());
            this.install_identity(index)
        })
    }

    fn ephemeral_import(
        &mut self,
        private: &lorapki_crypto::Secret<48>,
    ) -> Result<(Ms500Ephemeral, PublicKey)> {
        self.guarded(|this| {
            if !crate::scalar::in_range(private.expose_secret()) {
                return Err(Error::InvalidLength);
            }
            this.scratch.scalar.copy_from_slice(private.expose_secret());
            this.install_ephemeral()
        })
    }
}
