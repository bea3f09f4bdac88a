//! KeyChangeReq (CID 0x05, device → server): asks the server to switch to the new key.
//!
//! ```text
//!  0     1
//! +-----+
//! | CID |
//! +-----+
//! ```
//!
//! Bare: it applies to the session of the SigVerifyReq it travels with or follows.

use crate::header::{check_fixed, check_space};
use crate::view::view_methods;
use crate::{Error, cid};

mod field {
    pub(super) const CID: usize = 0;
}

/// Length of a KeyChangeReq.
pub const LEN: usize = field::CID + 1;

/// A read-only view of a KeyChangeReq at the start of a buffer (bytes past [`LEN`] are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyChangeReq<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> KeyChangeReq<T> {
    view_methods! {
        /// A view whose accessors cannot panic: the buffer starts with CID 0x05.
        new_checked;
        as_bytes: LEN;
    }

    /// The checks of [`Self::new_checked`].
    pub fn check(&self) -> Result<(), Error> {
        check_fixed(self.buffer.as_ref(), cid::KEY_CHANGE_REQ, LEN)
    }
}

/// A KeyChangeReq's contents: none beyond its CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KeyChangeReqRepr;

impl KeyChangeReqRepr {
    /// The contents of a KeyChangeReq view.
    pub fn parse<T: AsRef<[u8]>>(frame: &KeyChangeReq<T>) -> Result<Self, Error> {
        frame.check()?;
        Ok(Self)
    }

    /// The serialized length, [`LEN`].
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        LEN
    }

    /// Writes the command to the first byte of the view's buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut KeyChangeReq<T>,
    ) -> Result<(), Error> {
        let bytes = frame.buffer.as_mut();
        check_space(bytes.len(), LEN)?;
        bytes[field::CID] = cid::KEY_CHANGE_REQ;
        Ok(())
    }
}
