//! [`DelegateBackend`]: a backend that wraps another one and changes only some of its operations.

use crate::{
    CryptoBackend, KeySlot, P384_PUBLIC_UNCOMPRESSED_LEN, Prk, PublicKey, Result, SHA384_LEN,
    SharedSecret, Signature,
};

/// A wrapper around another backend, [`DelegateBackend::Inner`]: every type that implements this
/// trait is a [`CryptoBackend`] (a blanket impl), whose operations are this trait's methods.
///
/// Each method forwards to the inner backend unless the wrapper overrides it, so a wrapper writes
/// only what it changes: a fixed ephemeral key for known-answer tests, a timer around some
/// primitives, a cache. The hasher is always the inner backend's. The ephemeral key type is the
/// wrapper's own choice (usually the inner one's, `<Self::Inner as CryptoBackend>::Ephemeral`),
/// which is why [`ephemeral_generate`](Self::ephemeral_generate) and
/// [`ecdh_agree`](Self::ecdh_agree) have no default.
///
/// ```
/// # use lorapki_crypto::{CryptoBackend, DelegateBackend, Result};
/// /// A backend that counts the random draws of `B`.
/// struct Counting<B> {
///     inner: B,
///     draws: u32,
/// }
///
/// impl<B: CryptoBackend> DelegateBackend for Counting<B> {
///     type Inner = B;
///     type Ephemeral = B::Ephemeral;
///
///     fn inner(&mut self) -> &mut B {
///         &mut self.inner
///     }
///
///     fn random_bytes(&mut self, out: &mut [u8]) -> Result<()> {
///         self.draws += 1;
///         self.inner.random_bytes(out)
///     }
///
///     fn ephemeral_generate(&mut self) -> Result<(B::Ephemeral, lorapki_crypto::PublicKey)> {
///         self.inner.ephemeral_generate()
///     }
///
///     fn ecdh_agree(
///         &mut self,
///         ephemeral: B::Ephemeral,
///         peer: &lorapki_crypto::PublicKey,
///     ) -> Result<lorapki_crypto::SharedSecret> {
///         self.inner.ecdh_agree(ephemeral, peer)
///     }
/// }
/// ```
///
/// The methods mean what the [`CryptoBackend`] methods of the same names mean.
pub trait DelegateBackend {
    /// The backend that does the work.
    type Inner: CryptoBackend;

    /// The ephemeral ECDH private key ([`CryptoBackend::Ephemeral`]).
    type Ephemeral;

    /// The wrapped backend.
    fn inner(&mut self) -> &mut Self::Inner;

    /// [`CryptoBackend::ephemeral_generate`].
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::ephemeral_generate`].
    fn ephemeral_generate(&mut self) -> Result<(Self::Ephemeral, PublicKey)>;

    /// [`CryptoBackend::ecdh_agree`].
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::ecdh_agree`].
    fn ecdh_agree(&mut self, ephemeral: Self::Ephemeral, peer: &PublicKey) -> Result<SharedSecret>;

    /// [`CryptoBackend::sha384`], forwarded.
    fn sha384(&mut self) -> <Self::Inner as CryptoBackend>::Hasher {
        self.inner().sha384()
    }

    /// [`CryptoBackend::random_bytes`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::random_bytes`].
    fn random_bytes(&mut self, out: &mut [u8]) -> Result<()> {
        self.inner().random_bytes(out)
    }

    /// [`CryptoBackend::hkdf_extract`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::hkdf_extract`].
    fn hkdf_extract(&mut self, salt: &[u8], ikm: &[u8]) -> Result<Prk> {
        self.inner().hkdf_extract(salt, ikm)
    }

    /// [`CryptoBackend::hkdf_expand`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::hkdf_expand`].
    fn hkdf_expand(&mut self, prk: &Prk, info: &[&[u8]], okm: &mut [u8]) -> Result<()> {
        self.inner().hkdf_expand(prk, info, okm)
    }

    /// [`CryptoBackend::ecdsa_verify_digest`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::ecdsa_verify_digest`].
    fn ecdsa_verify_digest(
        &mut self,
        public: &PublicKey,
        digest: &[u8; SHA384_LEN],
        signature: &Signature,
    ) -> Result<()> {
        self.inner().ecdsa_verify_digest(public, digest, signature)
    }

    /// [`CryptoBackend::public_key_from_sec1`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::public_key_from_sec1`].
    fn public_key_from_sec1(&mut self, sec1: &[u8]) -> Result<PublicKey> {
        self.inner().public_key_from_sec1(sec1)
    }

    /// [`CryptoBackend::public_key_uncompressed`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::public_key_uncompressed`].
    fn public_key_uncompressed(
        &mut self,
        public: &PublicKey,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]> {
        self.inner().public_key_uncompressed(public)
    }

    /// [`CryptoBackend::identity_generate`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::identity_generate`].
    fn identity_generate(&mut self, slot: KeySlot) -> Result<PublicKey> {
        self.inner().identity_generate(slot)
    }

    /// [`CryptoBackend::identity_public_key`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::identity_public_key`].
    fn identity_public_key(&mut self, slot: KeySlot) -> Result<PublicKey> {
        self.inner().identity_public_key(slot)
    }

    /// [`CryptoBackend::identity_public_key_uncompressed`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::identity_public_key_uncompressed`].
    fn identity_public_key_uncompressed(
        &mut self,
        slot: KeySlot,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]> {
        self.inner().identity_public_key_uncompressed(slot)
    }

    /// [`CryptoBackend::identity_sign_digest`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::identity_sign_digest`].
    fn identity_sign_digest(
        &mut self,
        slot: KeySlot,
        digest: &[u8; SHA384_LEN],
    ) -> Result<Signature> {
        self.inner().identity_sign_digest(slot, digest)
    }

    /// [`CryptoBackend::identity_erase`], forwarded.
    ///
    /// # Errors
    ///
    /// As [`CryptoBackend::identity_erase`].
    fn identity_erase(&mut self, slot: KeySlot) -> Result<()> {
        self.inner().identity_erase(slot)
    }
}

impl<T: DelegateBackend> CryptoBackend for T {
    type Hasher = <T::Inner as CryptoBackend>::Hasher;
    type Ephemeral = <T as DelegateBackend>::Ephemeral;

    fn sha384(&mut self) -> Self::Hasher {
        DelegateBackend::sha384(self)
    }

    fn random_bytes(&mut self, out: &mut [u8]) -> Result<()> {
        DelegateBackend::random_bytes(self, out)
    }

    fn hkdf_extract(&mut self, salt: &[u8], ikm: &[u8]) -> Result<Prk> {
        DelegateBackend::hkdf_extract(self, salt, ikm)
    }

    fn hkdf_expand(&mut self, prk: &Prk, info: &[&[u8]], okm: &mut [u8]) -> Result<()> {
        DelegateBackend::hkdf_expand(self, prk, info, okm)
    }

    fn ephemeral_generate(&mut self) -> Result<(Self::Ephemeral, PublicKey)> {
        DelegateBackend::ephemeral_generate(self)
    }

    fn ecdh_agree(&mut self, ephemeral: Self::Ephemeral, peer: &PublicKey) -> Result<SharedSecret> {
        DelegateBackend::ecdh_agree(self, ephemeral, peer)
    }

    fn ecdsa_verify_digest(
        &mut self,
        public: &PublicKey,
        digest: &[u8; SHA384_LEN],
        signature: &Signature,
    ) -> Result<()> {
        DelegateBackend::ecdsa_verify_digest(self, public, digest, signature)
    }

    fn public_key_from_sec1(&mut self, sec1: &[u8]) -> Result<PublicKey> {
        DelegateBackend::public_key_from_sec1(self, sec1)
    }

    fn public_key_uncompressed(
        &mut self,
        public: &PublicKey,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]> {
        DelegateBackend::public_key_uncompressed(self, public)
    }

    fn identity_generate(&mut self, slot: KeySlot) -> Result<PublicKey> {
        DelegateBackend::identity_generate(self, slot)
    }

    fn identity_public_key(&mut self, slot: KeySlot) -> Result<PublicKey> {
        DelegateBackend::identity_public_key(self, slot)
    }

    fn identity_public_key_uncompressed(
        &mut self,
        slot: KeySlot,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]> {
        DelegateBackend::identity_public_key_uncompressed(self, slot)
    }

    fn identity_sign_digest(
        &mut self,
        slot: KeySlot,
        digest: &[u8; SHA384_LEN],
    ) -> Result<Signature> {
        DelegateBackend::identity_sign_digest(self, slot, digest)
    }

    fn identity_erase(&mut self, slot: KeySlot) -> Result<()> {
        DelegateBackend::identity_erase(self, slot)
    }
}
