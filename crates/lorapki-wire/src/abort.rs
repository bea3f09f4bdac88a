//! Abort (CID 0x07, both directions): ends a session, with a reason.
//!
//! ```text
//!  0     1     2        3
//! +-----+-----+--------+
//! | CID | HDR | REASON |
//! +-----+-----+--------+
//! HDR: bits 7..2 SESSION, bits 1..0 INDEX = 0 (nonzero: Error::BadHeader)
//! REASON: 0x01 UnsupportedVersion, 0x02 UnknownDevice, 0x03 RateLimited, 0x04 StaleSession,
//!         0x05 AuthenticationFailed, 0x06 GaveUp, 0x07 ServerError, 0x08 Malformed,
//!         others kept as Reason::Unknown
//! ```

use crate::header::{check_cid, check_len, check_space, header, index};
use crate::view::view_methods;
use crate::{Error, Session, cid};

mod field {
    pub(super) const CID: usize = 0;
    pub(super) const HDR: usize = 1;
    pub(super) const REASON: usize = 2;
}

/// Length of an Abort.
pub const LEN: usize = field::REASON + 1;

/// REASON, why the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Reason {
    /// 0x01: the PubKeyReq's VERSION is not supported.
    UnsupportedVersion,
    /// 0x02: the server does not know the device.
    UnknownDevice,
    /// 0x03: too many attempts; try again later.
    RateLimited,
    /// 0x04: the frame belongs to an old session.
    StaleSession,
    /// 0x05: a signature or key confirmation did not verify.
    AuthenticationFailed,
    /// 0x06: the sender gave up (retries exhausted).
    GaveUp,
    /// 0x07: the server failed internally.
    ServerError,
    /// 0x08: a frame could not be parsed.
    Malformed,
    /// Any other value, kept rather than refused.
    Unknown(u8),
}

impl From<u8> for Reason {
    fn from(value: u8) -> Self {
        match value {
            0x01 => Self::UnsupportedVersion,
            0x02 => Self::UnknownDevice,
            0x03 => Self::RateLimited,
            0x04 => Self::StaleSession,
            0x05 => Self::AuthenticationFailed,
            0x06 => Self::GaveUp,
            0x07 => Self::ServerError,
            0x08 => Self::Malformed,
            other => Self::Unknown(other),
        }
    }
}

impl From<Reason> for u8 {
    fn from(reason: Reason) -> u8 {
        match reason {
            Reason::UnsupportedVersion => 0x01,
            Reason::UnknownDevice => 0x02,
            Reason::RateLimited => 0x03,
            Reason::StaleSession => 0x04,
            Reason::AuthenticationFailed => 0x05,
            Reason::GaveUp => 0x06,
            Reason::ServerError => 0x07,
            Reason::Malformed => 0x08,
            Reason::Unknown(value) => value,
        }
    }
}

/// A read-only view of an Abort at the start of a buffer (bytes past [`LEN`] are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Abort<T> {
    view_methods! {
        /// A view whose accessors cannot panic: the buffer starts with CID 0x07, INDEX is 0, and the
        /// buffer holds [`LEN`] bytes.
        new_checked;
        as_bytes: LEN;
        session: field::HDR;
    }

    /// The checks of [`Self::new_checked`].
    pub fn check(&self) -> Result<(), Error> {
        let bytes = self.buffer.as_ref();
        check_cid(bytes, cid::ABORT)?;
        if let Some(&hdr) = bytes.get(field::HDR)
            && index(hdr) != 0
        {
            return Err(Error::BadHeader {
                cid: cid::ABORT,
                header: hdr,
            });
        }
        check_len(bytes, cid::ABORT, LEN)
    }

    /// REASON.
    pub fn reason(&self) -> Reason {
        Reason::from(self.buffer.as_ref()[field::REASON])
    }
}

/// An Abort's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AbortRepr {
    /// SESSION.
    pub session: Session,
    /// REASON.
    pub reason: Reason,
}

impl AbortRepr {
    /// The contents of an Abort view.
    pub fn parse<T: AsRef<[u8]>>(frame: &Abort<T>) -> Result<Self, Error> {
        frame.check()?;
        Ok(Self {
            session: frame.session(),
            reason: frame.reason(),
        })
    }

    /// The serialized length, [`LEN`].
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        LEN
    }

    /// Writes the command to the first [`LEN`] bytes of the view's buffer.
    ///
    /// `Reason::Unknown` holding a defined value is refused: it would read back as that reason.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Abort<T>) -> Result<(), Error> {
        let reason = u8::from(self.reason);
        if Reason::from(reason) != self.reason {
            return Err(Error::InvalidRepr {
                cid: cid::ABORT,
                field: "reason",
            });
        }
        let bytes = frame.buffer.as_mut();
        check_space(bytes.len(), LEN)?;
        bytes[field::CID] = cid::ABORT;
        bytes[field::HDR] = header(self.session, 0);
        bytes[field::REASON] = reason;
        Ok(())
    }
}
