//! The HDR byte shared by CIDs 0x01, 0x02, 0x03, 0x07 (and the FHDR of 0x08), and the checks that
//! every view runs before its accessors may index.
//!
//! ```text
//!   7   6   5   4   3   2   1   0
//! +---+---+---+---+---+---+---+---+
//! |        SESSION        | INDEX |
//! +---+---+---+---+---+---+---+---+
//! ```

use crate::{Error, Session, cid};

/// The INDEX bits of a header byte.
pub(crate) const fn index(header: u8) -> u8 {
    header & 0b11
}

/// A header byte from its two fields; `index` must already be known to fit in two bits.
pub(crate) const fn header(session: Session, index: u8) -> u8 {
    (session.value() << 2) | (index & 0b11)
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
pub(crate) fn check_inner_start(bytes: &[u8]) -> Result<(), Error> {
    match *bytes {
        [cid, ..] if !cid::is_fragmentable(cid) => Err(Error::BadInner { cid }),
        [cid, header, ..] if fragmentable_len(cid, header).is_none() => {
            Err(Error::BadInner { cid })
        }
        _ => Ok(()),
    }
}

/// [`Error::UnexpectedCid`] unless `bytes` is empty or starts with `expected`.
pub(crate) fn check_cid(bytes: &[u8], expected: u8) -> Result<(), Error> {
    match bytes.first() {
        Some(&found) if found != expected => Err(Error::UnexpectedCid { expected, found }),
        _ => Ok(()),
    }
}

/// [`Error::Truncated`] unless `bytes` holds at least `needed` bytes.
pub(crate) fn check_len(bytes: &[u8], cid: u8, needed: usize) -> Result<(), Error> {
    if bytes.len() < needed {
        Err(Error::Truncated {
            cid,
            needed,
            available: bytes.len(),
        })
    } else {
        Ok(())
    }
}

/// The checks of a command of fixed length `len`: [`check_cid`], then [`check_len`].
pub(crate) fn check_fixed(bytes: &[u8], cid: u8, len: usize) -> Result<(), Error> {
    check_cid(bytes, cid)?;
    check_len(bytes, cid, len)
}

/// [`Error::NoSpace`] unless an output buffer of `available` bytes holds `needed`.
pub(crate) fn check_space(available: usize, needed: usize) -> Result<(), Error> {
    if available < needed {
        Err(Error::NoSpace { needed, available })
    } else {
        Ok(())
    }
}
