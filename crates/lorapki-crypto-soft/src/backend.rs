//! [`SoftBackend`]: the RustCrypto implementation of the backend traits.

use core::fmt;

use elliptic_curve::sec1::ToSec1Point;
use elliptic_curve::{Generate, NonZeroScalar};
use lorapki_crypto::{
    AES_BLOCK_LEN, AesBackend, AesKey, CryptoBackend, Error, KeyImport, KeySlot,
    P384_PUBLIC_COMPRESSED_LEN, P384_PUBLIC_UNCOMPRESSED_LEN, Prk, PublicKey, Result, SHA384_LEN,
    Secret, SharedSecret, Signature, hkdf_sha384,
};
use p384::NistP384;
use p384::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p384::ecdsa::{SigningKey, VerifyingKey};
use rand_core::TryCryptoRng;
use sha2::Sha384;
use zeroize::Zeroize;

use crate::aes_ops;

/// The number of identity-key slots of a [`SoftBackend`]: `KeySlot(0)` to `KeySlot(3)`.
pub const IDENTITY_SLOTS: usize = 4;

/// The software backend: [`CryptoBackend`], [`AesBackend`] and [`KeyImport`] on RustCrypto.
///
/// Generic over the caller's random number generator, any `rand_core` 0.10 [`TryCryptoRng`]
/// (every [`rand_core::CryptoRng`] is one). A failing generator surfaces as [`Error::Rng`].
///
/// Identity keys live in [`IDENTITY_SLOTS`] fixed slots (an array, no heap) as zeroizing
/// [`SigningKey`]s; dropping the backend zeroizes them.
pub struct SoftBackend<R> {
    rng: R,
    identities: [Option<SigningKey>; IDENTITY_SLOTS],
}

impl<R: TryCryptoRng> SoftBackend<R> {
    /// A backend with empty identity slots that draws randomness from `rng`.
    pub fn new(rng: R) -> Self {
        Self {
            rng,
            identities: [const { None }; IDENTITY_SLOTS],
        }
    }

    fn slot(&self, slot: KeySlot) -> Result<&Option<SigningKey>> {
        self.identities
            .get(usize::from(slot.0))
            .ok_or(Error::Unsupported)
    }

    fn slot_mut(&mut self, slot: KeySlot) -> Result<&mut Option<SigningKey>> {
        self.identities
            .get_mut(usize::from(slot.0))
            .ok_or(Error::Unsupported)
    }

    fn identity(&self, slot: KeySlot) -> Result<&SigningKey> {
        self.slot(slot)?.as_ref().ok_or(Error::SlotEmpty)
    }

    fn store_identity(&mut self, slot: KeySlot, key: SigningKey) -> Result<PublicKey> {
        let entry = self.slot_mut(slot)?;
        if entry.is_some() {
            return Err(Error::SlotOccupied);
        }
        let public = compress(key.verifying_key().as_affine());
        *entry = Some(key);
        Ok(public)
    }
}

impl<R> fmt::Debug for SoftBackend<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut occupied = [false; IDENTITY_SLOTS];
        for (flag, slot) in occupied.iter_mut().zip(&self.identities) {
            *flag = slot.is_some();
        }
        f.debug_struct("SoftBackend")
            .field("identity_slots_occupied", &occupied)
            .finish_non_exhaustive()
    }
}

/// An ephemeral ECDH P-384 private scalar of a [`SoftBackend`]; zeroized on drop, not `Clone`.
pub struct SoftEphemeral(NonZeroScalar<NistP384>);

impl Drop for SoftEphemeral {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SoftEphemeral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SoftEphemeral(REDACTED)")
    }
}

fn compress(point: &p384::AffinePoint) -> PublicKey {
    let encoded = point.to_sec1_point(true);
    let mut bytes = [0u8; P384_PUBLIC_COMPRESSED_LEN];
    bytes.copy_from_slice(encoded.as_bytes());
    // A compressed SEC1 encoding of a point that is not the identity always starts with 0x02/0x03.
    PublicKey::from_compressed_unchecked(bytes).unwrap_or_else(|_| unreachable!())
}

fn uncompress(point: &p384::AffinePoint) -> [u8; P384_PUBLIC_UNCOMPRESSED_LEN] {
    let encoded = point.to_sec1_point(false);
    let mut bytes = [0u8; P384_PUBLIC_UNCOMPRESSED_LEN];
    bytes.copy_from_slice(encoded.as_bytes());
    bytes
}

/// Decodes and validates (on the curve, not the identity) SEC1 bytes.
fn decode_point(sec1: &[u8]) -> Result<p384::PublicKey> {
    p384::PublicKey::from_sec1_bytes(sec1).map_err(|_| Error::InvalidPublicKey)
}

fn private_scalar(private: &Secret<48>) -> Result<NonZeroScalar<NistP384>> {
    NonZeroScalar::try_from(&private.expose_secret()[..]).map_err(|_| Error::InvalidLength)
}

impl<R: TryCryptoRng> CryptoBackend for SoftBackend<R> {
    type Hasher = Sha384;
    type Ephemeral = SoftEphemeral;

    fn sha384(&mut self) -> Sha384 {
        Sha384::default()
    }

    fn random_bytes(&mut self, out: &mut [u8]) -> Result<()> {
        self.rng.try_fill_bytes(out).map_err(|_| Error::Rng)
    }

    fn hkdf_extract(&mut self, salt: &[u8], ikm: &[u8]) -> Result<Prk> {
        hkdf_sha384::extract(salt, ikm)
    }

    fn hkdf_expand(&mut self, prk: &Prk, info: &[&[u8]], okm: &mut [u8]) -> Result<()> {
        hkdf_sha384::expand(prk, info, okm)
    }

    fn ephemeral_generate(&mut self) -> Result<(SoftEphemeral, PublicKey)> {
        let scalar = NonZeroScalar::<NistP384>::try_generate_from_rng(&mut self.rng)
            .map_err(|_| Error::Rng)?;
        let public = p384::PublicKey::from_secret_scalar(&scalar);
        Ok((SoftEphemeral(scalar), compress(public.as_affine())))
    }

    fn ecdh_agree(&mut self, ephemeral: SoftEphemeral, peer: &PublicKey) -> Result<SharedSecret> {
        let peer = decode_point(peer.as_bytes())?;
        let shared = elliptic_curve::ecdh::diffie_hellman(ephemeral.0, peer.as_affine());
        SharedSecret::from_slice(shared.raw_secret_bytes())
    }

    fn ecdsa_verify_digest(
        &mut self,
        public: &PublicKey,
        digest: &[u8; SHA384_LEN],
        signature: &Signature,
    ) -> Result<()> {
        let key = VerifyingKey::from_sec1_bytes(public.as_bytes())
            .map_err(|_| Error::InvalidPublicKey)?;
        // `from_slice` rejects r or s that are zero or not below the group order: that is a
        // signature that does not verify, reported as the same single error (crate::error docs).
        let signature = p384::ecdsa::Signature::from_slice(signature.as_bytes())
            .map_err(|_| Error::InvalidSignature)?;
        key.verify_prehash(digest, &signature)
            .map_err(|_| Error::InvalidSignature)
    }

    fn public_key_from_sec1(&mut self, sec1: &[u8]) -> Result<PublicKey> {
        if sec1.len() != P384_PUBLIC_COMPRESSED_LEN && sec1.len() != P384_PUBLIC_UNCOMPRESSED_LEN {
            return Err(Error::InvalidPublicKey);
        }
        Ok(compress(decode_point(sec1)?.as_affine()))
    }

    fn public_key_uncompressed(
        &mut self,
        public: &PublicKey,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]> {
        Ok(uncompress(decode_point(public.as_bytes())?.as_affine()))
    }

    fn identity_generate(&mut self, slot: KeySlot) -> Result<PublicKey> {
        if self.slot(slot)?.is_some() {
            return Err(Error::SlotOccupied);
        }
        let key = SigningKey::try_generate_from_rng(&mut self.rng).map_err(|_| Error::Rng)?;
        self.store_identity(slot, key)
    }

    fn identity_public_key(&mut self, slot: KeySlot) -> Result<PublicKey> {
        Ok(compress(self.identity(slot)?.verifying_key().as_affine()))
    }

    fn identity_public_key_uncompressed(
        &mut self,
        slot: KeySlot,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]> {
        Ok(uncompress(self.identity(slot)?.verifying_key().as_affine()))
    }

    fn identity_sign_digest(
        &mut self,
        slot: KeySlot,
        digest: &[u8; SHA384_LEN],
    ) -> Result<Signature> {
        // RFC 6979 deterministic nonce; no low-s normalization (P-384 ECDSA has no such rule).
        let signature: p384::ecdsa::Signature = self
            .identity(slot)?
            .sign_prehash(digest)
            .map_err(|_| Error::Fault)?;
        Ok(Signature::from_bytes(signature.to_bytes().into()))
    }

    fn identity_erase(&mut self, slot: KeySlot) -> Result<()> {
        // Dropping the `SigningKey` zeroizes its scalar.
        *self.slot_mut(slot)? = None;
        Ok(())
    }
}

impl<R: TryCryptoRng> AesBackend for SoftBackend<R> {
    fn aes128_encrypt_block(
        &mut self,
        key: &AesKey,
        block: &mut [u8; AES_BLOCK_LEN],
    ) -> Result<()> {
        aes_ops::encrypt_block(key, block);
        Ok(())
    }

    fn aes128_cmac(&mut self, key: &AesKey, parts: &[&[u8]]) -> Result<[u8; AES_BLOCK_LEN]> {
        Ok(aes_ops::cmac(key, parts))
    }
}

impl<R: TryCryptoRng> KeyImport for SoftBackend<R> {
    fn identity_import(&mut self, slot: KeySlot, private: &Secret<48>) -> Result<PublicKey> {
        if self.slot(slot)?.is_some() {
            return Err(Error::SlotOccupied);
        }
        let key = SigningKey::from(private_scalar(private)?);
        self.store_identity(slot, key)
    }

    fn ephemeral_import(&mut self, private: &Secret<48>) -> Result<(SoftEphemeral, PublicKey)> {
        let scalar = private_scalar(private)?;
        let public = p384::PublicKey::from_secret_scalar(&scalar);
        Ok((SoftEphemeral(scalar), compress(public.as_affine())))
    }
}
