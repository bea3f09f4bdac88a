//! PubKeyReq (CID 0x01, device → server): the device's ephemeral public key, asking for the
//! server's.
//!
//! ```text
//!  0     1     2                                          51
//! +-----+-----+-------------------------------------------+
//! | CID | HDR | EPH_D (49, SEC1 compressed P-384 point)   |
//! +-----+-----+-------------------------------------------+
//! HDR: bits 7..2 SESSION, bits 1..0 VERSION (v1 = 0b01)
//! ```
//!
//! The codec accepts every VERSION (0..=3); answering an unsupported one is the protocol's job.

use crate::header::{check_fixed, check_space, header, index};
use crate::view::view_methods;
use crate::{EPHEMERAL_KEY_LEN, Error, Session, cid};

mod field {
    use core::ops::Range;

    pub(super) const CID: usize = 0;
    pub(super) const HDR: usize = 1;
    pub(super) const EPHEMERAL: Range<usize> = 2..51;
}

/// Length of a PubKeyReq.
pub const LEN: usize = field::EPHEMERAL.end;

/// A read-only view of a PubKeyReq at the start of a buffer (bytes past [`LEN`] are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubKeyReq<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PubKeyReq<T> {
    view_methods! {
        /// A view whose accessors cannot panic: the buffer starts with CID 0x01 and holds [`LEN`]
        /// bytes.
        new_checked;
        as_bytes: LEN;
        session: field::HDR;
    }

    /// The checks of [`Self::new_checked`].
    pub fn check(&self) -> Result<(), Error> {
        check_fixed(self.buffer.as_ref(), cid::PUB_KEY_REQ, LEN)
    }

    /// VERSION (0..=3).
    pub fn version(&self) -> u8 {
        index(self.buffer.as_ref()[field::HDR])
    }

    /// EPH_D, the device's ephemeral public key (49 bytes).
    pub fn ephemeral(&self) -> &[u8] {
        &self.buffer.as_ref()[field::EPHEMERAL]
    }
}

/// A PubKeyReq's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PubKeyReqRepr {
    /// SESSION.
    pub session: Session,
    /// VERSION (0..=3; [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) is the one defined).
    pub version: u8,
    /// EPH_D, SEC1 compressed (not validated here).
    pub ephemeral: [u8; EPHEMERAL_KEY_LEN],
}

impl PubKeyReqRepr {
    /// The contents of a PubKeyReq view.
    pub fn parse<T: AsRef<[u8]>>(frame: &PubKeyReq<T>) -> Result<Self, Error> {
        frame.check()?;
        let mut ephemeral = [0; EPHEMERAL_KEY_LEN];
        ephemeral.copy_from_slice(frame.ephemeral());
        Ok(Self {
            session: frame.session(),
            version: frame.version(),
            ephemeral,
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
        frame: &mut PubKeyReq<T>,
    ) -> Result<(), Error> {
        if self.version > 0b11 {
            return Err(Error::InvalidRepr {
                cid: cid::PUB_KEY_REQ,
                field: "version",
            });
        }
        let bytes = frame.buffer.as_mut();
        check_space(bytes.len(), LEN)?;
        bytes[field::CID] = cid::PUB_KEY_REQ;
        bytes[field::HDR] = header(self.session, self.version);
        bytes[field::EPHEMERAL].copy_from_slice(&self.ephemeral);
        Ok(())
    }
}
