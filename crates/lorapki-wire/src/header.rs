//! The HDR byte shared by CIDs 0x01, 0x02, 0x03, 0x07 (and the FHDR of 0x08), and the checks that
//! every view runs before its accessors may index.
//!
//! ```text
//!   7   6   5   4   3   2   1   0
//! +---+---+---+---+---+---+---+---+
//! |        SESSION        | INDEX |
//! +---+---+---+---+---+---+---+---+
//! ```

use crate::{Error, Session};

/// The INDEX bits of a header byte.
pub(crate) const fn index(header: u8) -> u8 {
    header & 0b11
}

/// A header byte from its two fields; `index` must already be known to fit in two bits.
pub(crate) const fn header(session: Session, index: u8) -> u8 {
    (session.value() << 2) | (index & 0b11)
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
