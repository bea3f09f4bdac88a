//! The crypto backend of the run: `SoftBackend` behind a wrapper that hands out the fixed
//! ephemeral scalar of PROTOCOL.md §11 (as `FixedEphemerals` does in lorapki-proto's
//! `tests/vectors.rs`) and times every primitive the device calls.

use core::fmt;

use lorapki_crypto::{
    CryptoBackend, DelegateBackend, Error, KeyImport, KeySlot, Prk, PublicKey, Result, SHA384_LEN,
    Secret, SharedSecret, Signature,
};
use lorapki_crypto_soft::SoftBackend;
use rand_core::{TryCryptoRng, TryRng};

use crate::cycles::CycleCounter;

/// A generator that has no entropy and says so: every draw fails with [`NoEntropyError`].
///
/// The known-answer run must not need randomness (its only random value, the ephemeral key, is
/// fixed); the wrapper counts the draws to prove it. A product firmware passes the MCU's TRNG.
#[derive(Debug)]
pub struct NoEntropy;

/// The error of every [`NoEntropy`] draw.
#[derive(Debug)]
pub struct NoEntropyError;

impl fmt::Display for NoEntropyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no entropy source in the known-answer firmware")
    }
}

impl core::error::Error for NoEntropyError {}

impl TryRng for NoEntropy {
    type Error = NoEntropyError;

    fn try_next_u32(&mut self) -> core::result::Result<u32, NoEntropyError> {
        Err(NoEntropyError)
    }

    fn try_next_u64(&mut self) -> core::result::Result<u64, NoEntropyError> {
        Err(NoEntropyError)
    }

    fn try_fill_bytes(&mut self, _: &mut [u8]) -> core::result::Result<(), NoEntropyError> {
        Err(NoEntropyError)
    }
}

impl TryCryptoRng for NoEntropy {}

/// Counts spent in each primitive, and how often it ran.
#[derive(Clone, Copy, Debug, Default)]
pub struct Profile {
    /// Ephemeral key generation (here: the fixed scalar times the base point).
    pub ephemeral: Timing,
    /// Validation and decompression of a received point (EPH_S).
    pub point_decode: Timing,
    /// ECDH P-384 (variable-base scalar multiplication).
    pub ecdh: Timing,
    /// HKDF-SHA384 extract and expand (the key schedule, without the transcript hash).
    pub hkdf: Timing,
    /// ECDSA P-384 signing with the identity key (RFC 6979 nonce).
    pub sign: Timing,
    /// ECDSA P-384 verification (the server's signature).
    pub verify: Timing,
}

/// Total counts and calls of one primitive.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// Counts spent, summed over the calls.
    pub counts: u64,
    /// Number of calls.
    pub calls: u32,
}

impl Timing {
    fn add(&mut self, counts: u64) {
        self.counts += counts;
        self.calls += 1;
    }
}

/// The software backend with the fixed ephemeral key of §11 and a profile of its primitives.
pub struct FixedEphemerals {
    /// The RustCrypto backend that does the work.
    pub inner: SoftBackend<NoEntropy>,
    ephemeral: Option<Secret<48>>,
    clock: CycleCounter,
    /// Where the counts go.
    pub profile: Profile,
    /// Calls of `random_bytes` (each one failed: see [`NoEntropy`]).
    pub random_draws: u32,
}

impl FixedEphemerals {
    /// A backend whose one ephemeral key will be `ephemeral`.
    pub fn new(inner: SoftBackend<NoEntropy>, ephemeral: Secret<48>, clock: CycleCounter) -> Self {
        Self {
            inner,
            ephemeral: Some(ephemeral),
            clock,
            profile: Profile::default(),
            random_draws: 0,
        }
    }

    /// Gives the next run its fixed ephemeral key and a fresh profile (the identity key stays).
    pub fn next_run(&mut self, ephemeral: Secret<48>) {
        self.ephemeral = Some(ephemeral);
        self.profile = Profile::default();
    }
}

/// Only what differs from `SoftBackend`: the fixed ephemeral key, the count of random draws, and
/// the timers around the primitives of [`Profile`]; the rest is forwarded.
impl DelegateBackend for FixedEphemerals {
    type Inner = SoftBackend<NoEntropy>;
    type Ephemeral = <SoftBackend<NoEntropy> as CryptoBackend>::Ephemeral;

    fn inner(&mut self) -> &mut SoftBackend<NoEntropy> {
        &mut self.inner
    }

    fn random_bytes(&mut self, out: &mut [u8]) -> Result<()> {
        self.random_draws += 1;
        self.inner.random_bytes(out)
    }

    fn hkdf_extract(&mut self, salt: &[u8], ikm: &[u8]) -> Result<Prk> {
        let (prk, counts) = self.clock.measure(|| self.inner.hkdf_extract(salt, ikm));
        self.profile.hkdf.add(counts);
        prk
    }

    fn hkdf_expand(&mut self, prk: &Prk, info: &[&[u8]], okm: &mut [u8]) -> Result<()> {
        let (result, counts) = self
            .clock
            .measure(|| self.inner.hkdf_expand(prk, info, okm));
        self.profile.hkdf.add(counts);
        result
    }

    fn ephemeral_generate(&mut self) -> Result<(Self::Ephemeral, PublicKey)> {
        // One run, one fixed key: a second run would have to bring its own.
        let scalar = self.ephemeral.take().ok_or(Error::Rng)?;
        let (pair, counts) = self.clock.measure(|| self.inner.ephemeral_import(&scalar));
        self.profile.ephemeral.add(counts);
        pair
    }

    fn ecdh_agree(&mut self, ephemeral: Self::Ephemeral, peer: &PublicKey) -> Result<SharedSecret> {
        let (z, counts) = self
            .clock
            .measure(|| self.inner.ecdh_agree(ephemeral, peer));
        self.profile.ecdh.add(counts);
        z
    }

    fn ecdsa_verify_digest(
        &mut self,
        public: &PublicKey,
        digest: &[u8; SHA384_LEN],
        signature: &Signature,
    ) -> Result<()> {
        let (result, counts) = self
            .clock
            .measure(|| self.inner.ecdsa_verify_digest(public, digest, signature));
        self.profile.verify.add(counts);
        result
    }

    fn public_key_from_sec1(&mut self, sec1: &[u8]) -> Result<PublicKey> {
        let (key, counts) = self.clock.measure(|| self.inner.public_key_from_sec1(sec1));
        self.profile.point_decode.add(counts);
        key
    }

    fn identity_sign_digest(
        &mut self,
        slot: KeySlot,
        digest: &[u8; SHA384_LEN],
    ) -> Result<Signature> {
        let (signature, counts) = self
            .clock
            .measure(|| self.inner.identity_sign_digest(slot, digest));
        self.profile.sign.add(counts);
        signature
    }
}
