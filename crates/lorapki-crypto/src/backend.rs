//! The operations a backend offers to the protocol state machines and to the LoRaWAN MAC.

use crate::{
    AesKey, KeySlot, P384_PUBLIC_UNCOMPRESSED_LEN, Prk, PublicKey, Result, SHA384_LEN, Secret,
    SharedSecret, Signature,
};

/// An incremental SHA-384 computation, made by [`CryptoBackend::sha384`].
pub trait Sha384Hasher {
    /// Absorbs more message bytes.
    fn update(&mut self, data: &[u8]);

    /// The digest of everything absorbed so far.
    #[must_use]
    fn finalize(self) -> [u8; SHA384_LEN];
}

/// SHA-384 in software (RustCrypto's `sha2`), the hasher of the software and the MS500 backends.
#[cfg(feature = "sha2")]
impl Sha384Hasher for sha2::Sha384 {
    fn update(&mut self, data: &[u8]) {
        sha2::Digest::update(self, data);
    }

    fn finalize(self) -> [u8; SHA384_LEN] {
        sha2::Digest::finalize(self).into()
    }
}

/// HKDF-SHA384 (RFC 5869) on RustCrypto's `hkdf`, for backends without an HKDF engine: what
/// [`CryptoBackend::hkdf_extract`] and [`CryptoBackend::hkdf_expand`] compute. Both functions are
/// `#[inline]`, so that a backend's method compiles as if written in it (without it the Cortex-M
/// firmware grew by 2.2 KB of flash and 0.7 KB of stack).
#[cfg(feature = "sha2")]
pub mod hkdf_sha384 {
    use hkdf::Hkdf;
    use hkdf::hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha384;
    use zeroize::Zeroize;

    use crate::{Error, Prk, Result};

    /// HKDF-Extract (RFC 5869 §2.2). An empty salt is an empty HMAC key, which HMAC pads with
    /// zeros: the RFC's default of `HashLen` zero bytes.
    ///
    /// # Errors
    ///
    /// Only [`Error::InvalidLength`] from the secret type (never for SHA-384's 48 bytes).
    #[inline]
    pub fn extract(salt: &[u8], ikm: &[u8]) -> Result<Prk> {
        // §2.2 is one HMAC; `Hkdf::extract` would also key an expander that is not kept.
        let mut hmac = <Hmac<Sha384> as KeyInit>::new_from_slice(salt).map_err(|_| Error::Fault)?;
        hmac.update(ikm);
        let mut prk = hmac.finalize().into_bytes();
        let secret = Prk::from_slice(&prk);
        prk.zeroize();
        secret
    }

    /// HKDF-Expand (RFC 5869 §2.3) of `prk` with the concatenation of `info` into `okm`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLength`] if `okm` is longer than 255 × 48 bytes.
    #[inline]
    pub fn expand(prk: &Prk, info: &[&[u8]], okm: &mut [u8]) -> Result<()> {
        let hkdf =
            Hkdf::<Sha384>::from_prk(prk.expose_secret()).map_err(|_| Error::InvalidLength)?;
        hkdf.expand_multi_info(info, okm)
            .map_err(|_| Error::InvalidLength)
    }
}

/// Everything the protocol state machines need, in the device and in the server role.
///
/// Long-term (identity) private keys live in numbered [`KeySlot`]s inside the backend and are never
/// exported; there is no method that returns one. Ephemeral ECDH private keys are opaque values of
/// type [`CryptoBackend::Ephemeral`], consumed by [`CryptoBackend::ecdh_agree`].
///
/// All methods take `&mut self` because a hardware engine is a single, stateful resource, and all are
/// fallible because a hardware engine can be busy or fail. See [`crate::error`] for the rule that
/// maps failures to [`Error`](crate::Error) variants (a bad signature is *one* error).
pub trait CryptoBackend {
    /// The incremental SHA-384 hasher of this backend.
    type Hasher: Sha384Hasher;

    /// An ephemeral ECDH private key held by the backend.
    ///
    /// Not `Clone`: it is consumed by [`CryptoBackend::ecdh_agree`] and zeroized when dropped, so a
    /// run of the protocol cannot use it twice (forward secrecy, PROTOCOL property 2).
    type Ephemeral;

    /// Starts an incremental SHA-384 computation.
    fn sha384(&mut self) -> Self::Hasher;

    /// Fills `out` from the backend's cryptographically secure random number generator.
    ///
    /// # Errors
    ///
    /// [`Error::Rng`](crate::Error::Rng) if the generator fails.
    fn random_bytes(&mut self, out: &mut [u8]) -> Result<()>;

    /// HKDF-SHA384 extract (RFC 5869 §2.2): `PRK = HMAC-SHA384(salt, ikm)`.
    /// An empty salt means 48 zero bytes, as in the RFC.
    ///
    /// # Errors
    ///
    /// Only hardware conditions.
    fn hkdf_extract(&mut self, salt: &[u8], ikm: &[u8]) -> Result<Prk>;

    /// HKDF-SHA384 expand (RFC 5869 §2.3) of `prk` into all of `okm`.
    ///
    /// `info` is given in parts that are concatenated, so that callers can bind labels and a
    /// transcript hash without a buffer.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLength`](crate::Error::InvalidLength) if `okm` is longer than 255 × 48 bytes.
    fn hkdf_expand(&mut self, prk: &Prk, info: &[&[u8]], okm: &mut [u8]) -> Result<()>;

    /// Generates a fresh ephemeral P-384 key pair for one ECDH agreement.
    ///
    /// # Errors
    ///
    /// [`Error::Rng`](crate::Error::Rng) or a hardware condition.
    fn ephemeral_generate(&mut self) -> Result<(Self::Ephemeral, PublicKey)>;

    /// ECDH P-384: the x-coordinate of `ephemeral × peer`. Consumes the ephemeral key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`](crate::Error::InvalidPublicKey) if `peer` is not a point of the
    /// curve or is the identity.
    fn ecdh_agree(&mut self, ephemeral: Self::Ephemeral, peer: &PublicKey) -> Result<SharedSecret>;

    /// Verifies an ECDSA P-384 signature over a SHA-384 `digest` (FIPS 186-5 §6.4.2).
    ///
    /// High-`s` signatures are valid (P-384 ECDSA has no low-`s` rule).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSignature`](crate::Error::InvalidSignature) for *any* signature that does not
    /// verify, including `r` or `s` zero or out of range; [`Error::InvalidPublicKey`](crate::Error::InvalidPublicKey)
    /// if `public` is not a valid point.
    fn ecdsa_verify_digest(
        &mut self,
        public: &PublicKey,
        digest: &[u8; SHA384_LEN],
        signature: &Signature,
    ) -> Result<()>;

    /// Validates SEC1 public-key bytes from an untrusted source (compressed, 49 bytes, or
    /// uncompressed, 97 bytes): the point must be on P-384 and not the identity.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`](crate::Error::InvalidPublicKey) otherwise.
    fn public_key_from_sec1(&mut self, sec1: &[u8]) -> Result<PublicKey>;

    /// The uncompressed SEC1 form (`0x04` ‖ x ‖ y) of a public key, e.g. for a certificate.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`](crate::Error::InvalidPublicKey) if `public` is not a valid point.
    fn public_key_uncompressed(
        &mut self,
        public: &PublicKey,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]>;

    /// Generates an identity (ECDSA signing) key inside `slot` and returns its public key.
    ///
    /// # Errors
    ///
    /// [`Error::SlotOccupied`](crate::Error::SlotOccupied) if the slot already holds a key (erase it
    /// first); [`Error::Unsupported`](crate::Error::Unsupported) if the slot does not exist.
    fn identity_generate(&mut self, slot: KeySlot) -> Result<PublicKey>;

    /// The public key of the identity key in `slot`.
    ///
    /// # Errors
    ///
    /// [`Error::SlotEmpty`](crate::Error::SlotEmpty) if the slot holds no key.
    fn identity_public_key(&mut self, slot: KeySlot) -> Result<PublicKey>;

    /// The public key of the identity key in `slot`, uncompressed (`0x04` ‖ x ‖ y).
    ///
    /// # Errors
    ///
    /// [`Error::SlotEmpty`](crate::Error::SlotEmpty) if the slot holds no key.
    fn identity_public_key_uncompressed(
        &mut self,
        slot: KeySlot,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]>;

    /// Signs a SHA-384 `digest` with the identity key in `slot` (ECDSA P-384, FIPS 186-5 §6.4.1).
    ///
    /// # Errors
    ///
    /// [`Error::SlotEmpty`](crate::Error::SlotEmpty) if the slot holds no key.
    fn identity_sign_digest(
        &mut self,
        slot: KeySlot,
        digest: &[u8; SHA384_LEN],
    ) -> Result<Signature>;

    /// Erases the identity key in `slot`. Erasing an empty slot is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::Error::Unsupported) if the slot does not exist.
    fn identity_erase(&mut self, slot: KeySlot) -> Result<()>;

    /// SHA-384 of `message` in one call.
    fn sha384_digest(&mut self, message: &[u8]) -> [u8; SHA384_LEN] {
        let mut hasher = self.sha384();
        hasher.update(message);
        hasher.finalize()
    }

    /// Verifies an ECDSA P-384/SHA-384 signature over `message` (hashes, then
    /// [`CryptoBackend::ecdsa_verify_digest`]).
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::ecdsa_verify_digest`].
    fn ecdsa_verify(
        &mut self,
        public: &PublicKey,
        message: &[u8],
        signature: &Signature,
    ) -> Result<()> {
        let digest = self.sha384_digest(message);
        self.ecdsa_verify_digest(public, &digest, signature)
    }

    /// Signs `message` with ECDSA P-384/SHA-384 using the identity key in `slot` (hashes, then
    /// [`CryptoBackend::identity_sign_digest`]).
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::identity_sign_digest`].
    fn identity_sign(&mut self, slot: KeySlot, message: &[u8]) -> Result<Signature> {
        let digest = self.sha384_digest(message);
        self.identity_sign_digest(slot, &digest)
    }
}

/// The LoRaWAN MAC primitives (AES-128 block encryption and AES-CMAC), with keys by value, so
/// that one backend can serve both the key exchange and the MAC.
pub trait AesBackend {
    /// Encrypts one 16-byte block in place with AES-128 (FIPS 197).
    ///
    /// # Errors
    ///
    /// Only hardware conditions.
    fn aes128_encrypt_block(&mut self, key: &AesKey, block: &mut [u8; 16]) -> Result<()>;

    /// AES-CMAC (RFC 4493) over the concatenation of `parts`.
    ///
    /// # Errors
    ///
    /// Only hardware conditions.
    fn aes128_cmac(&mut self, key: &AesKey, parts: &[&[u8]]) -> Result<[u8; 16]>;
}

/// Importing private keys into a backend: for factory provisioning, for a server that keeps its
/// signing key outside the process, and for known-answer tests.
///
/// This is *hazardous material*: the protocol state machines never use it, and a backend that keeps
/// keys in hardware may implement it only in a provisioning build, or not at all. Importing an
/// ephemeral key defeats forward secrecy unless the key is fresh and used once; it exists so that
/// ECDH can be tested against published vectors.
pub trait KeyImport: CryptoBackend {
    /// Stores the P-384 private scalar `private` (48 bytes, big-endian) as the identity key of `slot`.
    ///
    /// # Errors
    ///
    /// [`Error::SlotOccupied`](crate::Error::SlotOccupied) if the slot holds a key;
    /// [`Error::InvalidLength`](crate::Error::InvalidLength) if the scalar is zero or not below the
    /// group order.
    fn identity_import(&mut self, slot: KeySlot, private: &Secret<48>) -> Result<PublicKey>;

    /// Turns the P-384 private scalar `private` (48 bytes, big-endian) into an ephemeral key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLength`](crate::Error::InvalidLength) if the scalar is zero or not below the
    /// group order.
    fn ephemeral_import(&mut self, private: &Secret<48>) -> Result<(Self::Ephemeral, PublicKey)>;
}
