//! A crypto backend for simulations: the RustCrypto backend behind a cache of its deterministic
//! P-384 operations.
//!
//! The fault and exploration suites replay thousands of runs from the same seeds; every run makes
//! the same scalar multiplications, which dominate the time of an unoptimised build. This backend
//! computes each distinct operation once per test process, with `SoftBackend` itself, and answers
//! repeats from a table. Its outputs are those of the RustCrypto backend for the same inputs;
//! what differs is only how an ephemeral or identity scalar is drawn: 48 bytes from a seeded
//! generator, redrawn in the (negligible) case that they are not a valid scalar. Ephemeral keys
//! come from a generator of their own, so that the k-th ephemeral key of a backend does not
//! depend on how many other random bytes (session numbers, back-off jitter) were drawn before it:
//! schedules that differ only in those draws then share their cached operations.
//!
//! Randomness, hashing, HKDF and AES are the wrapped backend's, uncached.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};

use lorapki_crypto::{
    AesBackend, AesKey, CryptoBackend, DelegateBackend, Error, KeyImport, KeySlot,
    P384_PUBLIC_UNCOMPRESSED_LEN, Prk, PublicKey, Result, SHA384_LEN, Secret, SharedSecret,
    Signature,
};
use lorapki_crypto_soft::{SoftBackend, TestRng};

type Scalar = [u8; 48];

type Digest = [u8; SHA384_LEN];
type Point = [u8; 49];

/// One table per operation, shared by all threads of the test process.
#[derive(Default)]
struct Tables {
    public: HashMap<Scalar, Result<PublicKey>>,
    ecdh: HashMap<(Scalar, Point), Result<Scalar>>,
    sign: HashMap<(Scalar, Digest), Result<Signature>>,
    /// Key: public key, digest, signature.
    verify: HashMap<(Point, Digest, [u8; 96]), Result<()>>,
    sec1: HashMap<Vec<u8>, Result<PublicKey>>,
    /// Key: length of the salt ‖ salt ‖ IKM.
    extract: HashMap<Vec<u8>, Result<Scalar>>,
    /// Key: PRK ‖ output length ‖ info.
    expand: HashMap<Vec<u8>, Result<[u8; 64]>>,
}

fn tables() -> &'static Mutex<Tables> {
    static TABLES: OnceLock<Mutex<Tables>> = OnceLock::new();
    TABLES.get_or_init(Mutex::default)
}

/// Looks `key` up in the table `pick` selects, computing (outside the lock) on a miss.
fn memo<K: Eq + Hash, V: Copy>(
    pick: impl Fn(&mut Tables) -> &mut HashMap<K, V>,
    key: K,
    compute: impl FnOnce() -> V,
) -> V {
    if let Some(v) = pick(&mut tables().lock().unwrap()).get(&key) {
        return *v;
    }
    let v = compute();
    pick(&mut tables().lock().unwrap()).insert(key, v);
    v
}

/// A backend that the cached operations use on a miss (its generator is never drawn from).
fn scratch() -> SoftBackend<TestRng> {
    SoftBackend::new(TestRng::from_seed(0))
}

fn public_of(scalar: &Scalar) -> Result<PublicKey> {
    memo(
        |t| &mut t.public,
        *scalar,
        || {
            scratch()
                .ephemeral_import(&Secret::from_array(*scalar))
                .map(|(_, public)| public)
        },
    )
}

/// An ephemeral private scalar of a [`MemoBackend`]; zeroized on drop, not `Clone`.
pub struct MemoEphemeral(Secret<48>);

impl std::fmt::Debug for MemoEphemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoEphemeral(REDACTED)")
    }
}

/// How many expensive operations a backend performed (whether or not they were cached): what the
/// protocol calls key work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyWork {
    pub ephemeral: u32,
    pub ecdh: u32,
    pub sign: u32,
    pub verify: u32,
}

impl KeyWork {
    pub fn total(&self) -> u32 {
        self.ephemeral + self.ecdh + self.sign + self.verify
    }
}

/// See the module documentation.
pub struct MemoBackend {
    inner: SoftBackend<TestRng>,
    ephemerals: SoftBackend<TestRng>,
    identities: [Option<(Secret<48>, PublicKey)>; 4],
    /// The operations this backend was asked for.
    pub work: KeyWork,
}

impl MemoBackend {
    /// A backend whose randomness is a function of `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: SoftBackend::new(TestRng::from_seed(seed)),
            ephemerals: SoftBackend::new(TestRng::from_seed(seed ^ 0x5eed_e9e3_0000_0000)),
            identities: [const { None }; 4],
            work: KeyWork::default(),
        }
    }

    /// A fresh valid scalar from a generator and its public key.
    fn draw(rng: &mut SoftBackend<TestRng>) -> Result<(Secret<48>, PublicKey)> {
        loop {
            let mut scalar = [0u8; 48];
            rng.random_bytes(&mut scalar)?;
            match public_of(&scalar) {
                Ok(public) => return Ok((Secret::from_array(scalar), public)),
                Err(Error::InvalidLength) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn slot(&self, slot: KeySlot) -> Result<&Option<(Secret<48>, PublicKey)>> {
        self.identities
            .get(usize::from(slot.0))
            .ok_or(Error::Unsupported)
    }

    fn store(&mut self, slot: KeySlot, scalar: Secret<48>, public: PublicKey) -> Result<PublicKey> {
        let entry = self
            .identities
            .get_mut(usize::from(slot.0))
            .ok_or(Error::Unsupported)?;
        if entry.is_some() {
            return Err(Error::SlotOccupied);
        }
        *entry = Some((scalar, public));
        Ok(public)
    }

    fn identity(&self, slot: KeySlot) -> Result<&(Secret<48>, PublicKey)> {
        self.slot(slot)?.as_ref().ok_or(Error::SlotEmpty)
    }
}

/// Randomness, hashing and `public_key_uncompressed` are forwarded to `inner`; the rest is cached
/// or answered from the backend's own identity slots.
impl DelegateBackend for MemoBackend {
    type Inner = SoftBackend<TestRng>;
    type Ephemeral = MemoEphemeral;

    fn inner(&mut self) -> &mut SoftBackend<TestRng> {
        &mut self.inner
    }

    fn hkdf_extract(&mut self, salt: &[u8], ikm: &[u8]) -> Result<Prk> {
        let prk = memo(
            |t| &mut t.extract,
            [&salt.len().to_be_bytes(), salt, ikm].concat(),
            || {
                scratch()
                    .hkdf_extract(salt, ikm)
                    .map(|prk| *prk.expose_secret())
            },
        )?;
        Ok(Secret::from_array(prk))
    }

    fn hkdf_expand(&mut self, prk: &Prk, info: &[&[u8]], okm: &mut [u8]) -> Result<()> {
        if okm.len() > 64 {
            return self.inner.hkdf_expand(prk, info, okm);
        }
        let len = okm.len();
        let out = memo(
            |t| &mut t.expand,
            [&prk.expose_secret()[..], &len.to_be_bytes(), &info.concat()].concat(),
            || {
                let mut out = [0u8; 64];
                scratch()
                    .hkdf_expand(prk, info, &mut out[..len])
                    .map(|()| out)
            },
        )?;
        okm.copy_from_slice(&out[..len]);
        Ok(())
    }

    fn ephemeral_generate(&mut self) -> Result<(MemoEphemeral, PublicKey)> {
        self.work.ephemeral += 1;
        let (scalar, public) = Self::draw(&mut self.ephemerals)?;
        Ok((MemoEphemeral(scalar), public))
    }

    fn ecdh_agree(&mut self, ephemeral: MemoEphemeral, peer: &PublicKey) -> Result<SharedSecret> {
        self.work.ecdh += 1;
        let scalar = *ephemeral.0.expose_secret();
        let z = memo(
            |t| &mut t.ecdh,
            (scalar, *peer.as_bytes()),
            || {
                let mut soft = scratch();
                let (e, _) = soft.ephemeral_import(&Secret::from_array(scalar))?;
                soft.ecdh_agree(e, peer).map(|z| *z.expose_secret())
            },
        )?;
        Ok(Secret::from_array(z))
    }

    fn ecdsa_verify_digest(
        &mut self,
        public: &PublicKey,
        digest: &[u8; SHA384_LEN],
        signature: &Signature,
    ) -> Result<()> {
        self.work.verify += 1;
        memo(
            |t| &mut t.verify,
            (*public.as_bytes(), *digest, *signature.as_bytes()),
            || scratch().ecdsa_verify_digest(public, digest, signature),
        )
    }

    fn public_key_from_sec1(&mut self, sec1: &[u8]) -> Result<PublicKey> {
        memo(
            |t| &mut t.sec1,
            sec1.to_vec(),
            || scratch().public_key_from_sec1(sec1),
        )
    }

    fn identity_generate(&mut self, slot: KeySlot) -> Result<PublicKey> {
        if self.slot(slot)?.is_some() {
            return Err(Error::SlotOccupied);
        }
        let (scalar, public) = Self::draw(&mut self.inner)?;
        self.store(slot, scalar, public)
    }

    fn identity_public_key(&mut self, slot: KeySlot) -> Result<PublicKey> {
        Ok(self.identity(slot)?.1)
    }

    fn identity_public_key_uncompressed(
        &mut self,
        slot: KeySlot,
    ) -> Result<[u8; P384_PUBLIC_UNCOMPRESSED_LEN]> {
        let public = self.identity(slot)?.1;
        self.inner.public_key_uncompressed(&public)
    }

    fn identity_sign_digest(
        &mut self,
        slot: KeySlot,
        digest: &[u8; SHA384_LEN],
    ) -> Result<Signature> {
        self.work.sign += 1;
        let scalar = *self.identity(slot)?.0.expose_secret();
        // RFC 6979: the signature is a function of the key and the digest, so it can be cached.
        memo(
            |t| &mut t.sign,
            (scalar, *digest),
            || {
                let mut soft = scratch();
                soft.identity_import(KeySlot(0), &Secret::from_array(scalar))?;
                soft.identity_sign_digest(KeySlot(0), digest)
            },
        )
    }

    fn identity_erase(&mut self, slot: KeySlot) -> Result<()> {
        *self
            .identities
            .get_mut(usize::from(slot.0))
            .ok_or(Error::Unsupported)? = None;
        Ok(())
    }
}

impl AesBackend for MemoBackend {
    fn aes128_encrypt_block(&mut self, key: &AesKey, block: &mut [u8; 16]) -> Result<()> {
        self.inner.aes128_encrypt_block(key, block)
    }

    fn aes128_cmac(&mut self, key: &AesKey, parts: &[&[u8]]) -> Result<[u8; 16]> {
        self.inner.aes128_cmac(key, parts)
    }
}

impl KeyImport for MemoBackend {
    fn identity_import(&mut self, slot: KeySlot, private: &Secret<48>) -> Result<PublicKey> {
        if self.slot(slot)?.is_some() {
            return Err(Error::SlotOccupied);
        }
        let public = public_of(private.expose_secret())?;
        self.store(slot, private.clone_secret(), public)
    }

    fn ephemeral_import(&mut self, private: &Secret<48>) -> Result<(MemoEphemeral, PublicKey)> {
        let public = public_of(private.expose_secret())?;
        Ok((MemoEphemeral(private.clone_secret()), public))
    }
}
