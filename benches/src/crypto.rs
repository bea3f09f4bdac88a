//! The crypto operations measured by the `crypto` bench and the `crypto-report` binary, on the
//! software backend ([`Lorapki`]) and on the bare RustCrypto crates it wraps ([`Bare`]), so that
//! the two differ only by the wrapper.
//!
//! Both sides do the same work per operation, including the encodings the protocol needs: a
//! generated public key is SEC1-compressed (it goes on air), a received public key is decoded
//! from its compressed form and validated before use.

use aes::Aes128;
use cmac::{Cmac, KeyInit, Mac};
use elliptic_curve::sec1::ToSec1Point;
use elliptic_curve::{Generate, NonZeroScalar};
use hkdf::Hkdf;
use lorapki_crypto::{
    AesBackend, AesKey, CryptoBackend, KeySlot, PublicKey, SharedSecret, Signature,
};
use lorapki_crypto_soft::{SoftBackend, SoftEphemeral, TestRng};
use p384::NistP384;
use p384::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p384::ecdsa::{SigningKey, VerifyingKey};
use sha2::Sha384;

/// The operations of the table, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Ephemeral P-384 key pair, public key compressed.
    Keygen,
    /// ECDH with a received compressed public key (decode, validate, multiply), given a key.
    EcdhAgree,
    /// A fresh ephemeral key pair, then ECDH with a received key.
    EcdhGenerateAgree,
    /// ECDSA P-384 signature of a SHA-384 digest (RFC 6979 nonce).
    Sign,
    /// ECDSA P-384 verification of a digest, public key received compressed.
    Verify,
    /// HKDF-SHA384 extract, then expand to 16 bytes.
    Hkdf16,
    /// AES-CMAC of 16 bytes, key by value.
    Cmac16,
}

impl Operation {
    /// All operations, in table order.
    pub const ALL: [Operation; 7] = [
        Operation::Keygen,
        Operation::EcdhAgree,
        Operation::EcdhGenerateAgree,
        Operation::Sign,
        Operation::Verify,
        Operation::Hkdf16,
        Operation::Cmac16,
    ];

    /// A short name for tables and bench ids.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Operation::Keygen => "P-384 keygen",
            Operation::EcdhAgree => "ECDH agree",
            Operation::EcdhGenerateAgree => "ECDH keygen+agree",
            Operation::Sign => "ECDSA sign",
            Operation::Verify => "ECDSA verify",
            Operation::Hkdf16 => "HKDF-SHA384 16 B",
            Operation::Cmac16 => "AES-CMAC 16 B",
        }
    }
}

/// The operations of the table, as both sides implement them, so that one function measures
/// either side.
pub trait Operations: Default {
    /// A generated ephemeral private key, consumed by [`Operations::ecdh_agree`].
    type Ephemeral;
    /// A generated public key, in the form that goes on air.
    type Public;
    /// An ECDH shared secret.
    type Shared;
    /// An ECDSA signature.
    type Signature;

    /// [`Operation::Keygen`]; also the setup of [`Operations::ecdh_agree`].
    fn keygen(&mut self) -> (Self::Ephemeral, Self::Public);

    /// [`Operation::EcdhAgree`] with a key made by [`Operations::keygen`].
    fn ecdh_agree(&mut self, ephemeral: Self::Ephemeral) -> Self::Shared;

    /// [`Operation::EcdhGenerateAgree`].
    fn ecdh_generate_agree(&mut self) -> Self::Shared {
        let (ephemeral, _) = self.keygen();
        self.ecdh_agree(ephemeral)
    }

    /// [`Operation::Sign`].
    fn sign(&mut self) -> Self::Signature;

    /// [`Operation::Verify`].
    fn verify(&mut self);

    /// [`Operation::Hkdf16`].
    fn hkdf16(&mut self) -> [u8; 16];

    /// [`Operation::Cmac16`].
    fn cmac16(&mut self) -> [u8; 16];
}

const SLOT: KeySlot = KeySlot(0);
const IKM: [u8; 48] = [0x11; 48];
const SALT: [u8; 48] = [0x22; 48];
const INFO: &[u8] = b"lorapki bench info";
const BLOCK: [u8; 16] = [0x33; 16];

/// The operations through [`SoftBackend`].
#[derive(Debug)]
pub struct Lorapki {
    backend: SoftBackend<TestRng>,
    peer: PublicKey,
    digest: [u8; 48],
    signature: Signature,
    signer: PublicKey,
    key: AesKey,
}

impl Lorapki {
    /// Sets up an identity key, a peer key, a digest and its signature.
    ///
    /// # Panics
    ///
    /// If the backend fails, which it does not with a working generator.
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let mut backend = SoftBackend::new(TestRng::from_seed(1));
        let signer = backend.identity_generate(SLOT).expect("identity key");
        let (_, peer) = backend.ephemeral_generate().expect("peer key");
        let digest = backend.sha384_digest(b"lorapki bench transcript");
        let signature = backend
            .identity_sign_digest(SLOT, &digest)
            .expect("signature");
        Self {
            backend,
            peer,
            digest,
            signature,
            signer,
            key: AesKey::from_array([0x44; 16]),
        }
    }
}

impl Operations for Lorapki {
    type Ephemeral = SoftEphemeral;
    type Public = PublicKey;
    type Shared = SharedSecret;
    type Signature = Signature;

    /// [`Operation::Keygen`]; also the setup of [`Operations::ecdh_agree`].
    ///
    /// # Panics
    ///
    /// If the backend fails.
    #[allow(clippy::expect_used)]
    fn keygen(&mut self) -> (SoftEphemeral, PublicKey) {
        self.backend.ephemeral_generate().expect("keygen")
    }

    /// [`Operation::EcdhAgree`] with a key made by [`Operations::keygen`].
    ///
    /// # Panics
    ///
    /// If the backend fails.
    #[allow(clippy::expect_used)]
    fn ecdh_agree(&mut self, ephemeral: SoftEphemeral) -> SharedSecret {
        self.backend
            .ecdh_agree(ephemeral, &self.peer)
            .expect("agree")
    }

    /// [`Operation::Sign`].
    ///
    /// # Panics
    ///
    /// If the backend fails.
    #[allow(clippy::expect_used)]
    fn sign(&mut self) -> Signature {
        self.backend
            .identity_sign_digest(SLOT, &self.digest)
            .expect("sign")
    }

    /// [`Operation::Verify`].
    ///
    /// # Panics
    ///
    /// If the signature does not verify.
    #[allow(clippy::expect_used)]
    fn verify(&mut self) {
        self.backend
            .ecdsa_verify_digest(&self.signer, &self.digest, &self.signature)
            .expect("verify");
    }

    /// [`Operation::Hkdf16`].
    ///
    /// # Panics
    ///
    /// If the backend fails.
    #[allow(clippy::expect_used)]
    fn hkdf16(&mut self) -> [u8; 16] {
        let prk = self.backend.hkdf_extract(&SALT, &IKM).expect("extract");
        let mut okm = [0u8; 16];
        self.backend
            .hkdf_expand(&prk, &[INFO], &mut okm)
            .expect("expand");
        okm
    }

    /// [`Operation::Cmac16`].
    ///
    /// # Panics
    ///
    /// If the backend fails.
    #[allow(clippy::expect_used)]
    fn cmac16(&mut self) -> [u8; 16] {
        self.backend
            .aes128_cmac(&self.key, &[&BLOCK])
            .expect("cmac")
    }
}

impl Default for Lorapki {
    fn default() -> Self {
        Self::new()
    }
}

/// The same operations on the bare RustCrypto crates.
#[derive(Debug)]
pub struct Bare {
    rng: TestRng,
    signing_key: SigningKey,
    peer: [u8; 49],
    signer: [u8; 49],
    digest: [u8; 48],
    signature: [u8; 96],
    key: [u8; 16],
}

fn compressed(point: &p384::PublicKey) -> [u8; 49] {
    let mut out = [0u8; 49];
    out.copy_from_slice(point.to_sec1_point(true).as_bytes());
    out
}

impl Bare {
    /// Sets up the same kind of keys, digest and signature as [`Lorapki::new`].
    ///
    /// # Panics
    ///
    /// Never with the test generator.
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let mut rng = TestRng::from_seed(2);
        let signing_key = SigningKey::generate_from_rng(&mut rng);
        let signer = compressed(&p384::PublicKey::from(signing_key.verifying_key()));
        let peer_scalar = NonZeroScalar::<NistP384>::generate_from_rng(&mut rng);
        let peer = compressed(&p384::PublicKey::from_secret_scalar(&peer_scalar));
        let digest: [u8; 48] = <Sha384 as sha2::Digest>::digest(b"lorapki bench transcript").into();
        let signature: p384::ecdsa::Signature = signing_key.sign_prehash(&digest).expect("sign");
        Self {
            rng,
            signing_key,
            peer,
            signer,
            digest,
            signature: signature.to_bytes().into(),
            key: [0x44; 16],
        }
    }
}

impl Operations for Bare {
    type Ephemeral = NonZeroScalar<NistP384>;
    type Public = [u8; 49];
    type Shared = [u8; 48];
    type Signature = [u8; 96];

    /// [`Operation::Keygen`]; also the setup of [`Operations::ecdh_agree`].
    fn keygen(&mut self) -> (NonZeroScalar<NistP384>, [u8; 49]) {
        let scalar = NonZeroScalar::<NistP384>::generate_from_rng(&mut self.rng);
        let public = compressed(&p384::PublicKey::from_secret_scalar(&scalar));
        (scalar, public)
    }

    /// [`Operation::EcdhAgree`] with a key made by [`Operations::keygen`].
    ///
    /// # Panics
    ///
    /// If the peer key does not decode.
    #[allow(clippy::expect_used)]
    fn ecdh_agree(&mut self, scalar: NonZeroScalar<NistP384>) -> [u8; 48] {
        let peer = p384::PublicKey::from_sec1_bytes(&self.peer).expect("peer");
        let shared = elliptic_curve::ecdh::diffie_hellman(scalar, peer.as_affine());
        (*shared.raw_secret_bytes()).into()
    }

    /// [`Operation::Sign`].
    ///
    /// # Panics
    ///
    /// Never for a digest of the right size.
    #[allow(clippy::expect_used)]
    fn sign(&mut self) -> [u8; 96] {
        let signature: p384::ecdsa::Signature =
            self.signing_key.sign_prehash(&self.digest).expect("sign");
        signature.to_bytes().into()
    }

    /// [`Operation::Verify`].
    ///
    /// # Panics
    ///
    /// If the signature does not verify.
    #[allow(clippy::expect_used)]
    fn verify(&mut self) {
        let key = VerifyingKey::from_sec1_bytes(&self.signer).expect("key");
        let signature = p384::ecdsa::Signature::from_slice(&self.signature).expect("signature");
        key.verify_prehash(&self.digest, &signature)
            .expect("verify");
    }

    /// [`Operation::Hkdf16`].
    ///
    /// # Panics
    ///
    /// Never for a 16-byte output.
    #[allow(clippy::expect_used)]
    fn hkdf16(&mut self) -> [u8; 16] {
        let (_, hkdf) = Hkdf::<Sha384>::extract(Some(&SALT), &IKM);
        let mut okm = [0u8; 16];
        hkdf.expand(INFO, &mut okm).expect("expand");
        okm
    }

    /// [`Operation::Cmac16`].
    fn cmac16(&mut self) -> [u8; 16] {
        let mut mac = <Cmac<Aes128> as KeyInit>::new(&self.key.into());
        mac.update(&BLOCK);
        mac.finalize().into_bytes().into()
    }
}

impl Default for Bare {
    fn default() -> Self {
        Self::new()
    }
}
