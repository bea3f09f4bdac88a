//! [`Ms500Backend`]: the lorapki crypto traits on top of the engine traits.

mod aes;
mod crypto;
mod keystore;

pub use keystore::DEV_NONCE_MAX;

use core::fmt;

use embedded_hal::delay::DelayNs;
use embedded_storage::nor_flash::NorFlash;
use lorapki_crypto::{Error, PublicKey, Result};
use zeroize::Zeroize;

use crate::engine::{AesEngine, P384_LEN, P384_POINT_LEN, PkaCommand, PkaEngine, TrngSource};
use crate::storage::{self, Cipher, RECORD_LEN, StorageLayout, Store};
use crate::trng::health::ClaimedEntropy;
use crate::trng::{Rng, RngStatus};
use crate::wait::{Timeouts, pka_run};

pub use crypto::Ms500Ephemeral;

/// Identity-key slots of the backend: `KeySlot(0)` and `KeySlot(1)`.
pub const IDENTITY_SLOTS: usize = 2;
/// Ephemeral-key slots of the backend: two agreements can be pending at once.
pub const EPHEMERAL_SLOTS: usize = 2;

/// Which engine key slots the backend uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SlotMap {
    /// PKA slots of `KeySlot(0)` and `KeySlot(1)`.
    pub identity: [u8; IDENTITY_SLOTS],
    /// PKA slots for ephemeral ECDH keys.
    pub ephemeral: [u8; EPHEMERAL_SLOTS],
    /// The AES slot that by-value keys and root keys are loaded into, one operation at a time.
    pub aes_scratch: u8,
}

impl Default for SlotMap {
    fn default() -> Self {
        Self {
            identity: [0, 1],
            ephemeral: [2, 3],
            aes_scratch: 0,
        }
    }
}

/// How the backend is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Where the two key-store records live in the flash.
    pub storage: StorageLayout,
    /// Time budgets of the engines.
    pub timeouts: Timeouts,
    /// The claimed min-entropy of the TRNG's raw samples (sets the health-test cut-offs).
    pub entropy: ClaimedEntropy,
    /// Engine key slots.
    pub slots: SlotMap,
}

impl Config {
    /// The defaults, with the key store at `storage`.
    #[must_use]
    pub fn new(storage: StorageLayout) -> Self {
        Self {
            storage,
            timeouts: Timeouts::default(),
            entropy: ClaimedEntropy::default(),
            slots: SlotMap::default(),
        }
    }
}

/// The hardware a backend is built from, handed back by [`Ms500Backend::into_parts`].
#[derive(Debug, Clone)]
pub struct Parts<P, A, T, F, D> {
    /// The public-key accelerator.
    pub pka: P,
    /// The AES engine.
    pub aes: A,
    /// The TRNG.
    pub trng: T,
    /// The flash holding the key store.
    pub flash: F,
    /// The delay used between polls.
    pub delay: D,
}

/// The hardware a backend runs on, named once: the types of its five parts.
///
/// Implemented by [`Parts`] of any engines that implement this crate's engine traits: a backend
/// is an `Ms500Backend<Parts<…>>` (the `emulated` feature's `EmulatedBackend` is one).
pub trait Platform {
    /// The public-key accelerator.
    type Pka: PkaEngine;
    /// The AES engine.
    type Aes: AesEngine;
    /// The TRNG.
    type Trng: TrngSource;
    /// The flash holding the key store.
    type Flash: NorFlash;
    /// The delay used between polls.
    type Delay: DelayNs;
}

impl<P, A, T, F, D> Platform for Parts<P, A, T, F, D>
where
    P: PkaEngine,
    A: AesEngine,
    T: TrngSource,
    F: NorFlash,
    D: DelayNs,
{
    type Pka = P;
    type Aes = A;
    type Trng = T;
    type Flash = F;
    type Delay = D;
}

/// [`Ms500Backend::open`] failed; the hardware is handed back.
pub struct OpenError<P, A, T, F, D> {
    /// What went wrong.
    pub error: Error,
    /// The hardware, unchanged apart from what the failed start-up did.
    pub parts: Parts<P, A, T, F, D>,
}

impl<P, A, T, F, D> fmt::Debug for OpenError<P, A, T, F, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// The operand buffers of the backend. They live in the backend, not on the stack, so that
/// they can be zeroized after every operation and checked by tests
/// ([`Ms500Backend::operand_buffers_clear`]).
struct Scratch {
    scalar: [u8; P384_LEN],
    point: [u8; P384_POINT_LEN],
    record: [u8; RECORD_LEN],
    block: [u8; 16],
    key: [u8; 16],
}

impl Scratch {
    const fn new() -> Self {
        Self {
            scalar: [0; P384_LEN],
            point: [0; P384_POINT_LEN],
            record: [0; RECORD_LEN],
            block: [0; 16],
            key: [0; 16],
        }
    }

    fn clear(&mut self) {
        self.scalar.zeroize();
        self.point.zeroize();
        self.record.zeroize();
        self.block.zeroize();
        self.key.zeroize();
    }

    fn is_clear(&self) -> bool {
        self.scalar.iter().all(|&b| b == 0)
            && self.point.iter().all(|&b| b == 0)
            && self.record.iter().all(|&b| b == 0)
            && self.block.iter().all(|&b| b == 0)
            && self.key.iter().all(|&b| b == 0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// What the backend knows about an identity slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    Empty,
    /// A key is in the engine slot; its public key once computed.
    Loaded(Option<PublicKey>),
}

/// What the backend knows about an ephemeral slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EphemeralSlot {
    Free,
    Live {
        ticket: u32,
    },
    /// Used or of unknown content: erase before reuse.
    Dirty,
}

/// The MS500 backend: [`CryptoBackend`](lorapki_crypto::CryptoBackend),
/// [`AesBackend`](lorapki_crypto::AesBackend),
/// [`RootKeyStore`](lorapki_crypto::RootKeyStore) and, with the `key-import` feature,
/// [`KeyImport`](lorapki_crypto::KeyImport), on any engines that implement this crate's engine
/// traits.
///
/// # Where keys live
///
/// * **Identity keys**: in PKA slots ([`SlotMap::identity`]). When the PKA does not keep keys
///   across resets, they are also in the key store (encrypted) and loaded at [`open`](Self::open).
/// * **Ephemeral keys**: in PKA slots ([`SlotMap::ephemeral`]); an [`Ms500Ephemeral`] is only a
///   handle. `ecdh_agree` erases the slot. A handle dropped without agreement leaves its key in
///   the engine until the slot is reused or [`erase_ephemerals`](Self::erase_ephemerals) runs (no
///   `Drop` can reach the engine).
/// * **Root keys**: only in the key store, encrypted under the device-unique key; each use loads
///   the one key into the AES scratch slot and clears the slot afterwards.
/// * **Private scalars** come from the DRBG (reseeded from the health-tested TRNG for every key)
///   and pass through one operand buffer on their way into the engine.
///
/// # Faults
///
/// Every engine command runs under a time budget. An error aborts the operation; every operand
/// buffer is zeroized whatever the outcome; a key slot whose load or erase failed is erased or
/// re-derived from the key store before it is used again; a failed key-store commit leaves the
/// previous state (the store re-reads the flash to be sure). A [`Error::Tamper`] from any engine
/// makes the backend wipe its DRBG and refuse everything until it is reopened.
pub struct Ms500Backend<H: Platform> {
    pka: H::Pka,
    aes: H::Aes,
    rng: Rng<H::Trng>,
    store: Store<H::Flash>,
    delay: H::Delay,
    config: Config,
    scratch: Scratch,
    identities: [Identity; IDENTITY_SLOTS],
    ephemerals: [EphemeralSlot; EPHEMERAL_SLOTS],
    next_ticket: u32,
    /// An identity slot that must be erased at the next resynchronisation (PKA that keeps keys).
    identity_pending_erase: [bool; IDENTITY_SLOTS],
    needs_resync: bool,
    tampered: bool,
}

impl<H: Platform> fmt::Debug for Ms500Backend<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ms500Backend")
            .field("config", &self.config)
            .field("identities", &self.identities)
            .field("rng", &self.rng.status())
            .field("tampered", &self.tampered)
            .finish_non_exhaustive()
    }
}

impl<P, A, T, F, D> Ms500Backend<Parts<P, A, T, F, D>>
where
    P: PkaEngine,
    A: AesEngine,
    T: TrngSource,
    F: NorFlash,
    D: DelayNs,
{
    /// Starts the backend after a reset: checks the engines and the flash layout, reads the key
    /// store (the newest valid record), loads identity keys into the PKA if it does not keep
    /// them, erases the ephemeral slots, and starts the random number generator (SP 800-90B
    /// start-up test, DRBG instantiation).
    ///
    /// A failing random number generator does not stop `open`: the root keys stay usable, and
    /// random bytes fail with [`Error::Rng`] until the generator works again (see
    /// [`rng_status`](Self::rng_status)).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the engines have too few slots or the layout does not fit the
    /// flash; a hardware condition while reading the key store. The parts are handed back.
    pub fn open(
        parts: Parts<P, A, T, F, D>,
        config: Config,
    ) -> core::result::Result<Self, OpenError<P, A, T, F, D>> {
        let Parts {
            pka,
            aes,
            trng,
            flash,
            delay,
        } = parts;
        let store = match Store::new(flash, config.storage) {
            Ok(store) => store,
            Err((error, flash)) => {
                return Err(OpenError {
                    error,
                    parts: Parts {
                        pka,
                        aes,
                        trng,
                        flash,
                        delay,
                    },
                });
            }
        };
        let mut backend = Self {
            pka,
            aes,
            rng: Rng::new(trng, config.entropy),
            store,
            delay,
            config,
            scratch: Scratch::new(),
            identities: [Identity::Empty; IDENTITY_SLOTS],
            ephemerals: [EphemeralSlot::Dirty; EPHEMERAL_SLOTS],
            next_ticket: 0,
            identity_pending_erase: [false; IDENTITY_SLOTS],
            needs_resync: true,
            tampered: false,
        };
        match backend.start_up() {
            Ok(()) => Ok(backend),
            Err(error) => Err(OpenError {
                error,
                parts: backend.into_parts(),
            }),
        }
    }

    /// Stops the backend and hands the hardware back, e.g. before a reset. Secrets held in RAM
    /// (DRBG state, operand buffers) are zeroized; keys in engine slots stay where they are.
    pub fn into_parts(self) -> Parts<P, A, T, F, D> {
        let Self {
            pka,
            aes,
            rng,
            store,
            delay,
            scratch,
            ..
        } = self;
        drop(scratch);
        Parts {
            pka,
            aes,
            trng: rng.into_trng(),
            flash: store.into_flash(),
            delay,
        }
    }
}

impl<H: Platform> Ms500Backend<H> {
    fn start_up(&mut self) -> Result<()> {
        let slots = self.config.slots;
        let pka_needed = slots
            .identity
            .iter()
            .chain(slots.ephemeral.iter())
            .all(|&slot| slot < self.pka.key_slots());
        let mut distinct = [false; 256];
        let no_overlap = slots
            .identity
            .iter()
            .chain(slots.ephemeral.iter())
            .all(|&slot| !core::mem::replace(&mut distinct[usize::from(slot)], true));
        if !pka_needed || !no_overlap || slots.aes_scratch >= self.aes.key_slots() {
            return Err(Error::Unsupported);
        }
        let result = self.resync().and_then(|()| self.erase_ephemerals_inner());
        self.scratch.clear();
        result?;
        // A generator that fails its start-up test leaves the root keys usable; random bytes
        // are refused until it recovers (see `rng_status`).
        let _ = self.rng.start(&mut self.delay, &self.config.timeouts);
        // Tickets start at a random value so that a handle of another backend does not match.
        let mut ticket = [0u8; 4];
        if self
            .rng
            .fill(&mut self.delay, &self.config.timeouts, &mut ticket, false)
            .is_ok()
        {
            self.next_ticket = u32::from_le_bytes(ticket);
        }
        Ok(())
    }

    /// Whether every operand buffer of the backend is zero. True between operations, whatever
    /// their outcome; exposed so that tests (and a paranoid firmware) can check it.
    #[must_use]
    pub fn operand_buffers_clear(&self) -> bool {
        self.scratch.is_clear()
    }

    /// The state of the random number generator.
    #[must_use]
    pub fn rng_status(&self) -> RngStatus {
        self.rng.status()
    }

    /// How many raw TRNG samples have passed the health tests since [`open`](Self::open).
    #[must_use]
    pub fn trng_samples_tested(&self) -> u64 {
        self.rng.samples_tested()
    }

    /// Recovers the random number generator after a health-test failure: a new SP 800-90B
    /// start-up test and a new DRBG instance.
    ///
    /// # Errors
    ///
    /// [`Error::Rng`] if the start-up test fails again (the source stays failed).
    pub fn recover_rng(&mut self) -> Result<()> {
        if self.tampered {
            return Err(Error::Tamper);
        }
        let result = self
            .rng
            .recover(&mut self.delay, &self.config.timeouts)
            .map_err(Error::from);
        self.note(result)
    }

    /// Erases the ephemeral-key slots, invalidating every outstanding [`Ms500Ephemeral`].
    ///
    /// # Errors
    ///
    /// A hardware condition; slots that could not be erased are erased before their next use.
    pub fn erase_ephemerals(&mut self) -> Result<()> {
        self.guarded(Self::erase_ephemerals_inner)
    }

    fn erase_ephemerals_inner(&mut self) -> Result<()> {
        let mut outcome = Ok(());
        for index in 0..EPHEMERAL_SLOTS {
            if let Err(error) = self.erase_ephemeral(index) {
                outcome = outcome.and(Err(error));
            }
        }
        outcome
    }

    /// Whether the tamper detector of an engine fired since [`open`](Self::open).
    #[must_use]
    pub fn tampered(&self) -> bool {
        self.tampered
    }

    /// The PKA, for diagnostics and tests.
    pub fn pka_mut(&mut self) -> &mut H::Pka {
        &mut self.pka
    }

    /// The AES engine, for diagnostics and tests.
    pub fn aes_mut(&mut self) -> &mut H::Aes {
        &mut self.aes
    }

    /// The TRNG, for diagnostics and tests.
    pub fn trng_mut(&mut self) -> &mut H::Trng {
        self.rng.trng_mut()
    }

    /// The flash, for diagnostics and tests.
    pub fn flash_mut(&mut self) -> &mut H::Flash {
        self.store.flash_mut()
    }

    // ----- internals -----

    /// Runs an operation with the common pre- and post-conditions: refused after tamper,
    /// resynchronised after an earlier failure, operand buffers zeroized afterwards.
    fn guarded<R>(&mut self, operation: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        if self.tampered {
            return Err(Error::Tamper);
        }
        let result = if self.needs_resync {
            self.resync().and_then(|()| operation(self))
        } else {
            operation(self)
        };
        self.scratch.clear();
        self.note(result)
    }

    fn note<R>(&mut self, result: Result<R>) -> Result<R> {
        if result.as_ref().err() == Some(&Error::Tamper) && !self.tampered {
            crate::log::warn!("tamper detected: backend locked until reopened");
            self.tampered = true;
            self.rng.wipe();
            self.scratch.clear();
            self.identities = [Identity::Empty; IDENTITY_SLOTS];
            self.ephemerals = [EphemeralSlot::Dirty; EPHEMERAL_SLOTS];
        }
        result
    }

    /// Brings the RAM view and the engine slots in line with the durable state: re-reads the key
    /// store and (re)loads or erases the identity slots.
    fn resync(&mut self) -> Result<()> {
        self.needs_resync = true;
        let mut cipher = Cipher {
            aes: &mut self.aes,
            delay: &mut self.delay,
            timeouts: &self.config.timeouts,
        };
        self.store.scan(&mut cipher, &mut self.scratch.record)?;
        let meta = self.store.meta();
        let retains = self.pka.retains_keys();
        for index in 0..IDENTITY_SLOTS {
            let slot = self.config.slots.identity[index];
            if retains {
                if self.identity_pending_erase[index] {
                    self.pka_command(&PkaCommand::EraseKey { slot }, None)?;
                    self.identity_pending_erase[index] = false;
                    self.identities[index] = Identity::Empty;
                } else {
                    let present = self.pka.key_present(slot).map_err(Error::from)?;
                    self.identities[index] = match (present, self.identities[index]) {
                        (true, Identity::Loaded(public)) => Identity::Loaded(public),
                        (true, Identity::Empty) => Identity::Loaded(None),
                        (false, _) => Identity::Empty,
                    };
                }
            } else if meta.has(storage::flag::IDENTITY[index]) {
                let range = storage::body::IDENTITY[index].clone();
                let body = Store::<H::Flash>::body(&mut self.scratch.record);
                self.scratch.scalar.copy_from_slice(&body[range]);
                let loaded = self.load_scratch_scalar(slot);
                self.scratch.scalar.zeroize();
                if let Err(error) = loaded {
                    self.identities[index] = Identity::Empty;
                    return Err(error);
                }
                self.identities[index] = Identity::Loaded(None);
            } else {
                self.pka_command(&PkaCommand::EraseKey { slot }, None)?;
                self.identities[index] = Identity::Empty;
            }
        }
        self.scratch.record.zeroize();
        self.needs_resync = false;
        Ok(())
    }

    /// Runs one PKA command; the output goes to `out` (which must have the command's length).
    fn pka_command(&mut self, command: &PkaCommand<'_>, out: Option<&mut [u8]>) -> Result<()> {
        let out = out.unwrap_or(&mut []);
        pka_run(
            &mut self.pka,
            &mut self.delay,
            &self.config.timeouts,
            command,
            out,
        )
        .map_err(Error::from)
    }

    /// Loads `scratch.scalar` into PKA `slot` (the caller zeroizes the buffer).
    fn load_scratch_scalar(&mut self, slot: u8) -> Result<()> {
        pka_run(
            &mut self.pka,
            &mut self.delay,
            &self.config.timeouts,
            &PkaCommand::LoadKey {
                slot,
                scalar: &self.scratch.scalar,
            },
            &mut [],
        )
        .map_err(Error::from)
    }

    /// Erases ephemeral slot `index` (index into [`SlotMap::ephemeral`]).
    fn erase_ephemeral(&mut self, index: usize) -> Result<()> {
        let slot = self.config.slots.ephemeral[index];
        self.ephemerals[index] = EphemeralSlot::Dirty;
        self.erase_pka_slot(slot)?;
        self.ephemerals[index] = EphemeralSlot::Free;
        Ok(())
    }

    /// Erases a PKA slot, trying a second time if the first attempt fails: clean-up after a
    /// fault should not depend on the next command going right.
    fn erase_pka_slot(&mut self, slot: u8) -> Result<()> {
        let command = PkaCommand::EraseKey { slot };
        self.pka_command(&command, None).or_else(|error| {
            if error == Error::Tamper {
                Err(error)
            } else {
                self.pka_command(&command, None)
            }
        })
    }

    /// Fills `scratch.scalar` with a fresh private scalar: FIPS 186-5 A.2.2 rejection sampling
    /// over DRBG output, the DRBG reseeded from the TRNG first (prediction resistance).
    fn generate_scalar(&mut self) -> Result<()> {
        // The probability of a rejection is about 2^-190: more than a few in a row means the
        // generator is broken.
        for _ in 0..4 {
            self.rng
                .fill(
                    &mut self.delay,
                    &self.config.timeouts,
                    &mut self.scratch.scalar,
                    true,
                )
                .map_err(Error::from)?;
            if crate::scalar::candidate_to_private(&mut self.scratch.scalar) {
                return Ok(());
            }
        }
        self.scratch.scalar.zeroize();
        Err(Error::Rng)
    }

    /// Fresh random bytes for a key-store nonce.
    fn nonce_random(&mut self) -> Result<[u8; 9]> {
        let mut random = [0u8; 9];
        self.rng
            .fill(&mut self.delay, &self.config.timeouts, &mut random, false)
            .map_err(Error::from)?;
        Ok(random)
    }

    /// Reads the current record (or a blank body), lets `edit` change the plaintext body (it also
    /// sees `scratch.scalar`), and commits it. On failure the RAM view is resynchronised from
    /// flash at the next operation.
    fn commit_edit(
        &mut self,
        edit: impl FnOnce(&mut [u8], &[u8; P384_LEN]) -> Result<()>,
    ) -> Result<()> {
        let nonce_random = self.nonce_random()?;
        let mut cipher = Cipher {
            aes: &mut self.aes,
            delay: &mut self.delay,
            timeouts: &self.config.timeouts,
        };
        let record = &mut self.scratch.record;
        let result = match self.store.load_current(&mut cipher, record) {
            Ok(_) => edit(Store::<H::Flash>::body(record), &self.scratch.scalar)
                .and_then(|()| self.store.commit(&mut cipher, record, &nonce_random)),
            Err(error) => Err(error),
        };
        record.zeroize();
        if result.is_err() {
            self.needs_resync = true;
        }
        result
    }
}
