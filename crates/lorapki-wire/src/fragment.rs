//! Fragment (CID 0x08, both directions): a piece of one serialized command that does not fit in
//! the space left in a FRMPayload.
//!
//! ```text
//!  0     1      2        3
//! +-----+------+--------+------------------------------------------+
//! | CID | FHDR | OFFSET | DATA (>= 1 byte, to the end of FRMPayload) |
//! +-----+------+--------+------------------------------------------+
//! FHDR: bits 7..2 SESSION, bits 1..0 FID
//! DATA: bytes [OFFSET, OFFSET + len) of one serialized inner command
//!       (CID 0x01, 0x02, 0x03 or 0x07, with its header and body)
//! ```
//!
//! A Fragment runs to the end of the FRMPayload, so it is always the last command. FID (0..=3)
//! names the inner command among those in flight in one direction of one session: the sender
//! numbers commands 0, 1, 2, 3, 0, … in the order it starts fragmenting them, and a retransmission
//! re-uses its command's FID.
//!
//! The codec checks the fragment itself and, at OFFSET 0, that DATA starts a fragmentable command.
//! Whether the pieces fit together (ranges, lengths, duplicates) is the
//! [`Reassembler`](crate::Reassembler)'s business.

use crate::header::{check_cid, check_len, check_space, header, index};
use crate::view::view_methods;
use crate::{Error, Session, cid};

mod field {
    use core::ops::RangeFrom;

    pub(super) const CID: usize = 0;
    pub(super) const FHDR: usize = 1;
    pub(super) const OFFSET: usize = 2;
    pub(super) const DATA: RangeFrom<usize> = 3..;
}

/// Bytes before DATA: CID, FHDR, OFFSET.
pub const HEADER_LEN: usize = field::DATA.start;
/// The shortest Fragment: its header and one byte of data.
pub const MIN_LEN: usize = HEADER_LEN + 1;
/// The largest FID.
pub const MAX_FID: u8 = 0b11;

/// A read-only view of a Fragment; unlike the other views, the whole buffer is the Fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Fragment<T> {
    view_methods! {
        /// A view whose accessors cannot panic: the buffer starts with CID 0x08 and holds at least
        /// [`MIN_LEN`] bytes, and at OFFSET 0 DATA starts a fragmentable command.
        new_checked;
        session: field::FHDR;
    }

    /// The checks of [`Self::new_checked`].
    pub fn check(&self) -> Result<(), Error> {
        let bytes = self.buffer.as_ref();
        check_cid(bytes, cid::FRAGMENT)?;
        check_len(bytes, cid::FRAGMENT, MIN_LEN)?;
        check_data(bytes[field::OFFSET], &bytes[field::DATA])
    }

    /// The command's bytes: the whole buffer.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// FID (0..=3).
    pub fn fid(&self) -> u8 {
        index(self.buffer.as_ref()[field::FHDR])
    }

    /// OFFSET: where DATA starts in the inner command.
    pub fn offset(&self) -> u8 {
        self.buffer.as_ref()[field::OFFSET]
    }

    /// DATA.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

/// The length of the fragmentable command that starts with `cid` and `header`, or `None` when
/// that is no fragmentable command.
pub(crate) const fn fragmentable_len(cid: u8, header: u8) -> Option<usize> {
    match cid {
        cid::PUB_KEY_REQ => Some(crate::pub_key_req::LEN),
        cid::PUB_KEY_ANS => crate::pub_key_ans::len_of_part(index(header)),
        cid::SIG_VERIFY_REQ => Some(crate::sig_verify_req::LEN),
        cid::ABORT if index(header) == 0 => Some(crate::abort::LEN),
        _ => None,
    }
}

/// Whether `bytes`, the start of an inner command, can begin a fragmentable command.
fn check_inner_start(bytes: &[u8]) -> Result<(), Error> {
    match *bytes {
        [cid, ..] if !cid::is_fragmentable(cid) => Err(Error::BadInner { cid }),
        [cid, header, ..] if fragmentable_len(cid, header).is_none() => {
            Err(Error::BadInner { cid })
        }
        _ => Ok(()),
    }
}

/// At OFFSET 0, DATA must start a fragmentable command (the view checks its length).
fn check_data(offset: u8, data: &[u8]) -> Result<(), Error> {
    if offset == 0 {
        check_inner_start(data)?;
    }
    Ok(())
}

/// A Fragment's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FragmentRepr<'a> {
    /// SESSION.
    pub session: Session,
    /// FID (0..=3).
    pub fid: u8,
    /// OFFSET.
    pub offset: u8,
    /// DATA (at least one byte).
    pub data: &'a [u8],
}

impl<'a> FragmentRepr<'a> {
    /// The contents of a Fragment view, borrowing DATA from the view.
    pub fn parse<T: AsRef<[u8]>>(frame: &'a Fragment<T>) -> Result<Self, Error> {
        Self::parse_bytes(frame.buffer.as_ref())
    }

    /// The contents of a Fragment held in `bytes`, borrowing DATA from them.
    pub(crate) fn parse_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        let frame = Fragment::new_checked(bytes)?;
        Ok(Self {
            session: frame.session(),
            fid: frame.fid(),
            offset: frame.offset(),
            data: &bytes[field::DATA],
        })
    }

    /// The serialized length: [`HEADER_LEN`] + DATA.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// Writes the Fragment to the first [`Self::buffer_len`] bytes of the view's buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Fragment<T>) -> Result<(), Error> {
        if self.fid > MAX_FID {
            return Err(Error::InvalidRepr {
                cid: cid::FRAGMENT,
                field: "fid",
            });
        }
        if self.data.is_empty() {
            return Err(Error::InvalidRepr {
                cid: cid::FRAGMENT,
                field: "data",
            });
        }
        check_data(self.offset, self.data)?;
        let bytes = frame.buffer.as_mut();
        check_space(bytes.len(), self.buffer_len())?;
        bytes[field::CID] = cid::FRAGMENT;
        bytes[field::FHDR] = header(self.session, self.fid);
        bytes[field::OFFSET] = self.offset;
        bytes[field::DATA.start..self.buffer_len()].copy_from_slice(self.data);
        Ok(())
    }
}
