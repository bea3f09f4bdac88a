//! SigVerifyAns (CID 0x04, server → device): the server's verdict on the device's signature.
//!
//! ```text
//!  0     1        2
//! +-----+--------+
//! | CID | RESULT |
//! +-----+--------+
//! RESULT: bits 7..2 SESSION, bits 1..0 CODE
//! CODE: 0 Accepted, 1 Rejected, 2 Refused, 3 reserved (kept as Code::Unknown(3))
//! ```

use crate::header::{check_fixed, check_space, header, index};
use crate::view::view_methods;
use crate::{Error, Session, cid};

mod field {
    pub(super) const CID: usize = 0;
    pub(super) const RESULT: usize = 1;
}

/// Length of a SigVerifyAns.
pub const LEN: usize = field::RESULT + 1;

/// CODE, the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Code {
    /// 0: the signature verified.
    Accepted,
    /// 1: the signature did not verify.
    Rejected,
    /// 2: the server will not verify (for instance the device is not registered).
    Refused,
    /// A value the spec reserves (3 on the air), kept rather than refused.
    Unknown(u8),
}

impl From<u8> for Code {
    fn from(value: u8) -> Self {
        match value {
            0 => Self::Accepted,
            1 => Self::Rejected,
            2 => Self::Refused,
            other => Self::Unknown(other),
        }
    }
}

impl From<Code> for u8 {
    fn from(code: Code) -> u8 {
        match code {
            Code::Accepted => 0,
            Code::Rejected => 1,
            Code::Refused => 2,
            Code::Unknown(value) => value,
        }
    }
}

/// A read-only view of a SigVerifyAns at the start of a buffer (bytes past [`LEN`] are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigVerifyAns<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SigVerifyAns<T> {
    view_methods! {
        /// A view whose accessors cannot panic: the buffer starts with CID 0x04 and holds [`LEN`]
        /// bytes.
        new_checked;
        as_bytes: LEN;
        session: field::RESULT;
    }

    /// The checks of [`Self::new_checked`].
    pub fn check(&self) -> Result<(), Error> {
        check_fixed(self.buffer.as_ref(), cid::SIG_VERIFY_ANS, LEN)
    }

    /// CODE.
    pub fn code(&self) -> Code {
        Code::from(index(self.buffer.as_ref()[field::RESULT]))
    }
}

/// A SigVerifyAns's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SigVerifyAnsRepr {
    /// SESSION.
    pub session: Session,
    /// CODE.
    pub code: Code,
}

impl SigVerifyAnsRepr {
    /// The contents of a SigVerifyAns view.
    pub fn parse<T: AsRef<[u8]>>(frame: &SigVerifyAns<T>) -> Result<Self, Error> {
        frame.check()?;
        Ok(Self {
            session: frame.session(),
            code: frame.code(),
        })
    }

    /// The serialized length, [`LEN`].
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        LEN
    }

    /// Writes the command to the first [`LEN`] bytes of the view's buffer.
    ///
    /// `Code::Unknown` is emitted only with the reserved value 3: any other value either does not
    /// fit in CODE or would read back as a defined code.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut SigVerifyAns<T>,
    ) -> Result<(), Error> {
        let code = u8::from(self.code);
        if Code::from(code) != self.code || code > 0b11 {
            return Err(Error::InvalidRepr {
                cid: cid::SIG_VERIFY_ANS,
                field: "code",
            });
        }
        let bytes = frame.buffer.as_mut();
        check_space(bytes.len(), LEN)?;
        bytes[field::CID] = cid::SIG_VERIFY_ANS;
        bytes[field::RESULT] = header(self.session, code);
        Ok(())
    }
}
