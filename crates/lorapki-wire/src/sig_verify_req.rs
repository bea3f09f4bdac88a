//! SigVerifyReq (CID 0x03, device → server): one 48-byte chunk of the device's signature.
//!
//! ```text
//!  0     1     2                                   50
//! +-----+-----+-------------------------------------+
//! | CID | HDR | SIG_D[48*C .. 48*C+48] (48)         |
//! +-----+-----+-------------------------------------+
//! HDR: bits 7..2 SESSION, bits 1..0 INDEX = A << 1 | C
//! C: chunk of the 96-byte signature r || s (0: r, 1: s)
//! A: 1 when the device holds all three PubKeyAns parts (an acknowledgement)
//! ```

use crate::header::{check_fixed, check_space, header, index};
use crate::view::view_methods;
use crate::{Error, SIGNATURE_LEN, Session, cid};

mod field {
    use core::ops::Range;

    pub(super) const CID: usize = 0;
    pub(super) const HDR: usize = 1;
    pub(super) const CHUNK: Range<usize> = 2..50;
}

/// Length of a SigVerifyReq.
pub const LEN: usize = field::CHUNK.end;
/// Length of one signature chunk.
pub const CHUNK_LEN: usize = field::CHUNK.end - field::CHUNK.start;

const CHUNK_BIT: u8 = 0b01;
const ALL_PARTS_BIT: u8 = 0b10;

/// A read-only view of a SigVerifyReq at the start of a buffer (bytes past [`LEN`] are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigVerifyReq<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SigVerifyReq<T> {
    view_methods! {
        /// A view whose accessors cannot panic: the buffer starts with CID 0x03 and holds [`LEN`]
        /// bytes.
        new_checked;
        as_bytes: LEN;
        session: field::HDR;
    }

    /// The checks of [`Self::new_checked`].
    pub fn check(&self) -> Result<(), Error> {
        check_fixed(self.buffer.as_ref(), cid::SIG_VERIFY_REQ, LEN)
    }

    /// C: which chunk of the signature this is (0: r, 1: s).
    pub fn chunk(&self) -> u8 {
        index(self.buffer.as_ref()[field::HDR]) & CHUNK_BIT
    }

    /// A: whether the device holds all three PubKeyAns parts.
    pub fn holds_all_parts(&self) -> bool {
        index(self.buffer.as_ref()[field::HDR]) & ALL_PARTS_BIT != 0
    }

    /// The chunk's 48 signature bytes.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::CHUNK]
    }
}

/// A SigVerifyReq's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SigVerifyReqRepr {
    /// SESSION.
    pub session: Session,
    /// C: 0 for r, 1 for s.
    pub chunk: u8,
    /// A: the device holds all three PubKeyAns parts.
    pub holds_all_parts: bool,
    /// `SIG_D[48*C .. 48*C+48]`.
    pub data: [u8; CHUNK_LEN],
}

impl SigVerifyReqRepr {
    /// The two chunks (C = 0 and C = 1) of a signature `r || s`.
    #[must_use]
    pub fn chunks(
        session: Session,
        holds_all_parts: bool,
        signature: &[u8; SIGNATURE_LEN],
    ) -> [Self; 2] {
        let mut r = [0; CHUNK_LEN];
        let mut s = [0; CHUNK_LEN];
        let (first, second) = signature.split_at(CHUNK_LEN);
        r.copy_from_slice(first);
        s.copy_from_slice(second);
        [(0, r), (1, s)].map(|(chunk, data)| Self {
            session,
            chunk,
            holds_all_parts,
            data,
        })
    }

    /// The contents of a SigVerifyReq view.
    pub fn parse<T: AsRef<[u8]>>(frame: &SigVerifyReq<T>) -> Result<Self, Error> {
        frame.check()?;
        let mut data = [0; CHUNK_LEN];
        data.copy_from_slice(frame.data());
        Ok(Self {
            session: frame.session(),
            chunk: frame.chunk(),
            holds_all_parts: frame.holds_all_parts(),
            data,
        })
    }

    /// The serialized length, [`LEN`].
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        LEN
    }

    /// Writes the command to the first [`LEN`] bytes of the view's buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut SigVerifyReq<T>,
    ) -> Result<(), Error> {
        if self.chunk > 1 {
            return Err(Error::InvalidRepr {
                cid: cid::SIG_VERIFY_REQ,
                field: "chunk",
            });
        }
        let bytes = frame.buffer.as_mut();
        check_space(bytes.len(), LEN)?;
        let all_parts = if self.holds_all_parts {
            ALL_PARTS_BIT
        } else {
            0
        };
        bytes[field::CID] = cid::SIG_VERIFY_REQ;
        bytes[field::HDR] = header(self.session, all_parts | self.chunk);
        bytes[field::CHUNK].copy_from_slice(&self.data);
        Ok(())
    }
}
