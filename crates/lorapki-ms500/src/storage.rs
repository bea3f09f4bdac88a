//! The secure key store on NOR flash: two alternating records, encrypted and authenticated with
//! AES-CCM under the AES engine's device-unique key.
//!
//! # What is stored
//!
//! One record holds the whole durable key state of the device: the active root keys (the factory
//! AppKey/NwkKey at generation 0, then each activated set), the staged root keys, the identity
//! keys (only when the PKA does not keep keys across resets, see
//! [`PkaEngine::retains_keys`](crate::engine::PkaEngine::retains_keys)), the activation
//! generation and the LoRaWAN DevNonce counter. There is no separate copy of the factory key:
//! activation replaces it, as PROTOCOL.md property 7 requires.
//!
//! # Atomic commits
//!
//! The store owns two flash areas, A and B, each at least one erase unit. A commit
//!
//! 1. builds the new record with sequence number `current + 1` and a fresh nonce;
//! 2. erases the area that does **not** hold the current record, programs the new record there
//!    and reads it back;
//! 3. erases the other area (the previous record, so that replaced keys do not linger in flash).
//!
//! At start-up both areas are read; a record counts only if its header is well-formed and its CCM
//! tag verifies, and the valid record with the highest sequence number wins. A power cut during
//! step 2 leaves a record that does not verify (torn erase or program), so the previous record
//! wins: the *old* state. After step 2 the new record wins whatever happens to the other area:
//! the *new* state. There is never a moment without a valid record once one was written, and a
//! torn record can never be taken for a valid one (forging it means forging a 128-bit CCM tag).
//!
//! # Record layout (all multi-byte integers little-endian)
//!
//! ```text
//! offset len  field
//!      0   4  magic "LPKS"                    ┐
//!      4   1  format version (1)              │ header = CCM associated data
//!      5   1  reserved (0)                    │
//!      6   2  body length (176)               │
//!      8   4  sequence number                 ┘
//!     12  13  CCM nonce: sequence (big-endian) ‖ 9 random bytes
//!     25 176  body, encrypted
//!    201  16  CCM tag (M = 16, L = 2)
//!    217   7  padding (0xff, not written)
//!
//! body:   0  4 flags   4  4 generation   8  4 next DevNonce   12  4 reserved
//!        16 16 active AppKey   32 16 active NwkKey   48 16 staged AppKey   64 16 staged NwkKey
//!        80 48 identity key 0  128 48 identity key 1
//! ```
//!
//! The nonce carries random bytes as well as the sequence number because a commit that was cut
//! short is retried with the same sequence number: the random part keeps the two nonces distinct.

use core::ops::Range;

use embedded_hal::delay::DelayNs;
use embedded_storage::nor_flash::NorFlash;
use lorapki_crypto::{Error, Result};
use zeroize::Zeroize;

use crate::ccm::{self, CcmError};
use crate::engine::{AesCommand, AesEngine, AesKeyRef, EngineError};
use crate::wait::{Timeouts, aes_run};

/// Bytes of one record area that a record occupies, including padding.
pub const RECORD_LEN: usize = 224;
/// The flash areas of the two records.
///
/// Both offsets must be multiples of the flash's erase size, and the areas must not overlap
/// (each spans `RECORD_LEN` rounded up to whole erase units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StorageLayout {
    /// Offset of area A in the flash.
    pub area_a: u32,
    /// Offset of area B in the flash.
    pub area_b: u32,
}

pub(crate) const MAGIC: [u8; 4] = *b"LPKS";
pub(crate) const FORMAT_VERSION: u8 = 1;
pub(crate) const BODY_LEN: usize = 176;
const NONCE_LEN: usize = 13;
const TAG_LEN: usize = 16;
const NONCE_RANDOM_LEN: usize = 9;

// The field table below and the lengths agree.
const _: () = {
    assert!(field::NONCE.end - field::NONCE.start == NONCE_LEN);
    assert!(field::BODY.end - field::BODY.start == BODY_LEN);
    assert!(field::TAG.end - field::TAG.start == TAG_LEN);
    assert!(field::NONCE.start == field::HEADER.end);
    assert!(field::BODY.start == field::NONCE.end);
    assert!(field::TAG.start == field::BODY.end);
    assert!(field::USED.end == field::TAG.end && field::USED.end <= RECORD_LEN);
    assert!(body::IDENTITY[1].end == BODY_LEN);
    assert!(RECORD_LEN.is_multiple_of(16));
};

/// Byte ranges of the record (the table of the module documentation).
mod field {
    use core::ops::Range;

    pub(crate) const MAGIC: Range<usize> = 0..4;
    pub(crate) const VERSION: usize = 4;
    pub(crate) const RESERVED: usize = 5;
    pub(crate) const BODY_LENGTH: Range<usize> = 6..8;
    pub(crate) const SEQUENCE: Range<usize> = 8..12;
    pub(crate) const HEADER: Range<usize> = 0..12;
    pub(crate) const NONCE: Range<usize> = 12..25;
    pub(crate) const BODY: Range<usize> = 25..201;
    pub(crate) const TAG: Range<usize> = 201..217;
    pub(crate) const USED: Range<usize> = 0..217;
}

/// Byte ranges inside the body.
pub(crate) mod body {
    use core::ops::Range;

    pub(crate) const FLAGS: Range<usize> = 0..4;
    pub(crate) const GENERATION: Range<usize> = 4..8;
    pub(crate) const DEV_NONCE: Range<usize> = 8..12;
    pub(crate) const ACTIVE_APP: Range<usize> = 16..32;
    pub(crate) const ACTIVE_NWK: Range<usize> = 32..48;
    pub(crate) const STAGED_APP: Range<usize> = 48..64;
    pub(crate) const STAGED_NWK: Range<usize> = 64..80;
    pub(crate) const IDENTITY: [Range<usize>; 2] = [80..128, 128..176];
}

/// Flag bits of the body.
pub(crate) mod flag {
    pub(crate) const PROVISIONED: u32 = 1 << 0;
    pub(crate) const ACTIVE_NWK: u32 = 1 << 1;
    pub(crate) const STAGED: u32 = 1 << 2;
    pub(crate) const STAGED_NWK: u32 = 1 << 3;
    pub(crate) const IDENTITY: [u32; 2] = [1 << 4, 1 << 5];
    pub(crate) const KNOWN: u32 = 0x3f;
}

/// The non-secret part of the durable state, kept in RAM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Meta {
    pub(crate) flags: u32,
    pub(crate) generation: u32,
    pub(crate) dev_nonce: u32,
}

impl Meta {
    pub(crate) const fn has(&self, bit: u32) -> bool {
        self.flags & bit == bit
    }

    fn from_body(body: &[u8]) -> Self {
        let word = |range: Range<usize>| {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&body[range]);
            u32::from_le_bytes(bytes)
        };
        Self {
            flags: word(body::FLAGS),
            generation: word(body::GENERATION),
            dev_nonce: word(body::DEV_NONCE),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    A,
    B,
}

impl Area {
    const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// The AES engine with what it needs to run commands: the block function of CCM.
pub(crate) struct Cipher<'a, A, D> {
    pub(crate) aes: &'a mut A,
    pub(crate) delay: &'a mut D,
    pub(crate) timeouts: &'a Timeouts,
}

impl<A: AesEngine, D: DelayNs> Cipher<'_, A, D> {
    fn encrypt_block(&mut self, block: &mut [u8; 16]) -> core::result::Result<(), EngineError> {
        let input = *block;
        let result = aes_run(
            self.aes,
            self.delay,
            self.timeouts,
            &AesCommand::EncryptBlock {
                key: AesKeyRef::DeviceUnique,
                block: &input,
            },
            Some(block),
        );
        if result.is_err() {
            block.zeroize();
        }
        // `input` is a block of CCM's CBC-MAC or counter sequence; cleared like every operand.
        let mut input = input;
        input.zeroize();
        result
    }
}

fn ccm_error(error: CcmError<EngineError>) -> Error {
    match error {
        CcmError::Cipher(error) => error.into(),
        // Records are built by this module; an authentication failure of the *current* record
        // after start-up means the flash changed under us.
        CcmError::Authentication | CcmError::InvalidParameters => Error::Fault,
    }
}

/// The two-record store over a NOR flash.
pub(crate) struct Store<F> {
    flash: F,
    layout: StorageLayout,
    area_len: u32,
    current: Option<(Area, u32)>,
    meta: Meta,
}

impl<F: NorFlash> Store<F> {
    /// Checks the layout against the flash geometry.
    pub(crate) fn new(flash: F, layout: StorageLayout) -> core::result::Result<Self, (Error, F)> {
        let erase = F::ERASE_SIZE;
        let area_len = RECORD_LEN.div_ceil(erase) * erase;
        let capacity = flash.capacity();
        let fits = |offset: u32| {
            (offset as usize).is_multiple_of(erase)
                && (offset as usize).saturating_add(area_len) <= capacity
        };
        let (a, b) = (layout.area_a as usize, layout.area_b as usize);
        let disjoint = a + area_len <= b || b + area_len <= a;
        let geometry_ok = RECORD_LEN.is_multiple_of(F::WRITE_SIZE)
            && RECORD_LEN.is_multiple_of(F::READ_SIZE)
            && 16usize.is_multiple_of(F::READ_SIZE)
            && fits(layout.area_a)
            && fits(layout.area_b)
            && disjoint;
        if !geometry_ok {
            return Err((Error::Unsupported, flash));
        }
        Ok(Self {
            flash,
            layout,
            area_len: area_len as u32,
            current: None,
            meta: Meta::default(),
        })
    }

    pub(crate) const fn meta(&self) -> Meta {
        self.meta
    }

    pub(crate) fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    pub(crate) fn into_flash(self) -> F {
        self.flash
    }

    const fn offset(&self, area: Area) -> u32 {
        match area {
            Area::A => self.layout.area_a,
            Area::B => self.layout.area_b,
        }
    }

    fn read(&mut self, area: Area, record: &mut [u8; RECORD_LEN]) -> Result<()> {
        let offset = self.offset(area);
        self.flash.read(offset, record).map_err(|_| Error::Fault)
    }

    /// Reads `area` and decrypts it in place. `Ok(Some(sequence))` for a valid record (plaintext
    /// body in `record`), `Ok(None)` for anything else (blank, torn, foreign): `record` zeroized.
    fn open_area<A: AesEngine, D: DelayNs>(
        &mut self,
        cipher: &mut Cipher<'_, A, D>,
        area: Area,
        record: &mut [u8; RECORD_LEN],
    ) -> Result<Option<u32>> {
        self.read(area, record)?;
        let header_ok = record[field::MAGIC] == MAGIC
            && record[field::VERSION] == FORMAT_VERSION
            && record[field::RESERVED] == 0
            && record[field::BODY_LENGTH] == (BODY_LEN as u16).to_le_bytes();
        if !header_ok {
            record.zeroize();
            return Ok(None);
        }
        let mut sequence = [0u8; 4];
        sequence.copy_from_slice(&record[field::SEQUENCE]);
        let (head, rest) = record.split_at_mut(field::BODY.start);
        let (body_bytes, tail) = rest.split_at_mut(BODY_LEN);
        let tag = &tail[..TAG_LEN];
        let outcome = ccm::open(
            &mut |block| cipher.encrypt_block(block),
            &head[field::NONCE],
            &head[field::HEADER],
            body_bytes,
            tag,
        );
        match outcome {
            Ok(()) => Ok(Some(u32::from_le_bytes(sequence))),
            Err(CcmError::Authentication) => {
                record.zeroize();
                Ok(None)
            }
            Err(error) => {
                record.zeroize();
                Err(ccm_error(error))
            }
        }
    }

    /// Reads both areas and makes the newest valid record current. On success `record` holds the
    /// current record with its body decrypted (all zero when there is none).
    pub(crate) fn scan<A: AesEngine, D: DelayNs>(
        &mut self,
        cipher: &mut Cipher<'_, A, D>,
        record: &mut [u8; RECORD_LEN],
    ) -> Result<()> {
        let a = self.open_area(cipher, Area::A, record)?;
        let b = self.open_area(cipher, Area::B, record)?;
        let newest = match (a, b) {
            (Some(a), Some(b)) if a > b => Some((Area::A, a)),
            (_, Some(b)) => Some((Area::B, b)),
            (Some(a), None) => Some((Area::A, a)),
            (None, None) => None,
        };
        // `record` holds B's plaintext if B was valid; A's must be read again.
        if let Some((Area::A, _)) = newest
            && self.open_area(cipher, Area::A, record)?.is_none()
        {
            return Err(Error::Fault);
        }
        if newest.is_none() {
            record.zeroize();
        }
        self.current = newest;
        self.meta = Meta::from_body(&record[field::BODY]);
        if self.meta.flags & !flag::KNOWN != 0 {
            // A record written by a newer format: refuse rather than drop its keys on commit.
            record.zeroize();
            return Err(Error::Unsupported);
        }
        Ok(())
    }

    /// Decrypts the current record into `record`. `Ok(false)` (and a zeroed `record`) when there
    /// is none.
    pub(crate) fn load_current<A: AesEngine, D: DelayNs>(
        &mut self,
        cipher: &mut Cipher<'_, A, D>,
        record: &mut [u8; RECORD_LEN],
    ) -> Result<bool> {
        let Some((area, sequence)) = self.current else {
            record.zeroize();
            return Ok(false);
        };
        match self.open_area(cipher, area, record)? {
            Some(read) if read == sequence => Ok(true),
            _ => {
                record.zeroize();
                Err(Error::Fault)
            }
        }
    }

    /// The plaintext body inside `record`.
    pub(crate) fn body(record: &mut [u8; RECORD_LEN]) -> &mut [u8] {
        &mut record[field::BODY]
    }

    /// Seals the plaintext body in `record` and writes it as the next record (module
    /// documentation, steps 1–3). `nonce_random` must be fresh random bytes.
    ///
    /// On error the previous record is still the current one on flash unless the error happened
    /// after the new record was complete; the caller re-scans to find out.
    pub(crate) fn commit<A: AesEngine, D: DelayNs>(
        &mut self,
        cipher: &mut Cipher<'_, A, D>,
        record: &mut [u8; RECORD_LEN],
        nonce_random: &[u8; NONCE_RANDOM_LEN],
    ) -> Result<()> {
        let (target, sequence) = match self.current {
            Some((area, sequence)) => (
                area.other(),
                sequence.checked_add(1).ok_or(Error::Unsupported)?,
            ),
            None => (Area::A, 1),
        };
        let meta = Meta::from_body(&record[field::BODY]);

        record[field::MAGIC].copy_from_slice(&MAGIC);
        record[field::VERSION] = FORMAT_VERSION;
        record[field::RESERVED] = 0;
        record[field::BODY_LENGTH].copy_from_slice(&(BODY_LEN as u16).to_le_bytes());
        record[field::SEQUENCE].copy_from_slice(&sequence.to_le_bytes());
        record[field::NONCE][..4].copy_from_slice(&sequence.to_be_bytes());
        record[field::NONCE][4..].copy_from_slice(nonce_random);
        record[field::USED.end..].fill(0xff);

        let (head, rest) = record.split_at_mut(field::BODY.start);
        let (body_bytes, tail) = rest.split_at_mut(BODY_LEN);
        let sealed = ccm::seal(
            &mut |block| cipher.encrypt_block(block),
            &head[field::NONCE],
            &head[field::HEADER],
            body_bytes,
            &mut tail[..TAG_LEN],
        );
        if let Err(error) = sealed {
            record.zeroize();
            return Err(ccm_error(error));
        }

        let offset = self.offset(target);
        self.flash
            .erase(offset, offset + self.area_len)
            .map_err(|_| Error::Fault)?;
        self.flash.write(offset, record).map_err(|_| Error::Fault)?;
        // Read back in blocks: the write must have landed exactly.
        let mut readback = [0u8; 16];
        for (index, expected) in record.chunks(16).enumerate() {
            self.flash
                .read(offset + (index * 16) as u32, &mut readback)
                .map_err(|_| Error::Fault)?;
            if readback[..] != *expected {
                return Err(Error::Fault);
            }
        }
        self.current = Some((target, sequence));
        self.meta = meta;

        // The previous record holds replaced keys: erase it. Failing here does not undo the
        // commit (the new record has the higher sequence number), and the next commit erases
        // this area before writing anyway.
        let previous = self.offset(target.other());
        if self
            .flash
            .erase(previous, previous + self.area_len)
            .is_err()
        {
            crate::log::warn!("key store: erasing the previous record failed");
        }
        Ok(())
    }
}
