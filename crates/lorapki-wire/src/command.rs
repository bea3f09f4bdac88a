//! A FRMPayload as a sequence of commands.
//!
//! ```text
//! +---------+---------+-- ... --+-------------------------------+
//! | command | command |         | command (a Fragment, if any)  |
//! +---------+---------+-- ... --+-------------------------------+
//! ```
//!
//! Like LoRaWAN MAC commands, commands are concatenated and parsed left to right. Each starts with
//! its CID, and its length follows from the CID (for PubKeyAns, from PART). A Fragment runs to the
//! end of the FRMPayload, so it can only be the last command. An undefined CID cannot be skipped,
//! since its length is unknown: [`Commands`] yields [`Command::Unknown`] with the bytes after it
//! and stops. A truncated or malformed known command yields an error and stops.

use core::iter::FusedIterator;

use crate::{
    Abort, AbortRepr, Error, Fragment, FragmentRepr, KeyChangeReq, KeyChangeReqRepr, PubKeyAns,
    PubKeyAnsRepr, PubKeyReq, PubKeyReqRepr, Session, SigVerifyAns, SigVerifyAnsRepr, SigVerifyReq,
    SigVerifyReqRepr, cid,
};

/// One command of a FRMPayload, as a checked view over exactly its bytes
/// (`view.into_inner()` is the command's serialization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// CID 0x01.
    PubKeyReq(PubKeyReq<&'a [u8]>),
    /// CID 0x02.
    PubKeyAns(PubKeyAns<&'a [u8]>),
    /// CID 0x03.
    SigVerifyReq(SigVerifyReq<&'a [u8]>),
    /// CID 0x04.
    SigVerifyAns(SigVerifyAns<&'a [u8]>),
    /// CID 0x05.
    KeyChangeReq(KeyChangeReq<&'a [u8]>),
    /// CID 0x07.
    Abort(Abort<&'a [u8]>),
    /// CID 0x08, always the last command.
    Fragment(Fragment<&'a [u8]>),
    /// An undefined CID; parsing stops here, since its length is unknown.
    Unknown {
        /// The undefined CID.
        cid: u8,
        /// Every byte after the CID, to the end of the FRMPayload.
        rest: &'a [u8],
    },
}

impl<'a> Command<'a> {
    /// The CID.
    #[must_use]
    pub fn cid(&self) -> u8 {
        match self {
            Self::PubKeyReq(_) => cid::PUB_KEY_REQ,
            Self::PubKeyAns(_) => cid::PUB_KEY_ANS,
            Self::SigVerifyReq(_) => cid::SIG_VERIFY_REQ,
            Self::SigVerifyAns(_) => cid::SIG_VERIFY_ANS,
            Self::KeyChangeReq(_) => cid::KEY_CHANGE_REQ,
            Self::Abort(_) => cid::ABORT,
            Self::Fragment(_) => cid::FRAGMENT,
            Self::Unknown { cid, .. } => *cid,
        }
    }

    /// The SESSION the command carries (KeyChangeReq and unknown commands carry none).
    #[must_use]
    pub fn session(&self) -> Option<Session> {
        match self {
            Self::PubKeyReq(frame) => Some(frame.session()),
            Self::PubKeyAns(frame) => Some(frame.session()),
            Self::SigVerifyReq(frame) => Some(frame.session()),
            Self::SigVerifyAns(frame) => Some(frame.session()),
            Self::Abort(frame) => Some(frame.session()),
            Self::Fragment(frame) => Some(frame.session()),
            Self::KeyChangeReq(_) | Self::Unknown { .. } => None,
        }
    }

    /// Splits the first command off a FRMPayload remainder; `None` when it is empty.
    fn split_first(bytes: &'a [u8]) -> Option<Result<Split<'a>, Error>> {
        let (&first, after_cid) = bytes.split_first()?;
        Some(Self::split_known(first, bytes).map(|split| {
            split.unwrap_or((
                Self::Unknown {
                    cid: first,
                    rest: after_cid,
                },
                &[],
            ))
        }))
    }

    /// Splits a command of a defined CID off `bytes`; `Ok(None)` for an undefined CID.
    fn split_known(command: u8, bytes: &'a [u8]) -> Result<Option<Split<'a>>, Error> {
        let take = |len: usize| {
            bytes.split_at_checked(len).ok_or(Error::Truncated {
                cid: command,
                needed: len,
                available: bytes.len(),
            })
        };
        // A checked view over exactly one command (of any CID but Fragment's, which runs to the
        // end), and the bytes after it. The view's check has already established that `bytes`
        // holds the whole command, so `as_bytes` cannot panic and `take` cannot fail.
        macro_rules! split_view {
            ($view:ident) => {{
                let frame = $view::new_checked(bytes)?;
                let (head, tail) = take(frame.as_bytes().len())?;
                (Self::$view($view::new_unchecked(head)), tail)
            }};
        }
        let split = match command {
            cid::PUB_KEY_REQ => split_view!(PubKeyReq),
            cid::PUB_KEY_ANS => split_view!(PubKeyAns),
            cid::SIG_VERIFY_REQ => split_view!(SigVerifyReq),
            cid::SIG_VERIFY_ANS => split_view!(SigVerifyAns),
            cid::KEY_CHANGE_REQ => split_view!(KeyChangeReq),
            cid::ABORT => split_view!(Abort),
            cid::FRAGMENT => (Self::Fragment(Fragment::new_checked(bytes)?), &[][..]),
            _ => return Ok(None),
        };
        Ok(Some(split))
    }
}

/// A command and the bytes after it.
type Split<'a> = (Command<'a>, &'a [u8]);

/// An iterator over the commands of a FRMPayload, left to right.
///
/// It yields each command in turn, then stops after a Fragment, after [`Command::Unknown`], or
/// after the first error. It never panics.
#[derive(Debug, Clone)]
pub struct Commands<'a> {
    remainder: &'a [u8],
    done: bool,
}

impl<'a> Commands<'a> {
    /// The commands of `payload`.
    #[must_use]
    pub const fn new(payload: &'a [u8]) -> Self {
        Self {
            remainder: payload,
            done: false,
        }
    }

    /// The bytes not yet consumed: after an error, the failed command and everything after it.
    #[must_use]
    pub const fn remainder(&self) -> &'a [u8] {
        self.remainder
    }
}

impl<'a> Iterator for Commands<'a> {
    type Item = Result<Command<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some(split) = Command::split_first(self.remainder) else {
            self.done = true;
            return None;
        };
        Some(match split {
            Ok((command, rest)) => {
                self.remainder = rest;
                self.done = matches!(command, Command::Fragment(_) | Command::Unknown { .. });
                Ok(command)
            }
            Err(error) => {
                self.done = true;
                Err(error)
            }
        })
    }
}

impl FusedIterator for Commands<'_> {}

/// The contents of any defined command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CommandRepr<'a> {
    /// CID 0x01.
    PubKeyReq(PubKeyReqRepr),
    /// CID 0x02.
    PubKeyAns(PubKeyAnsRepr),
    /// CID 0x03.
    SigVerifyReq(SigVerifyReqRepr),
    /// CID 0x04.
    SigVerifyAns(SigVerifyAnsRepr),
    /// CID 0x05.
    KeyChangeReq(KeyChangeReqRepr),
    /// CID 0x07.
    Abort(AbortRepr),
    /// CID 0x08.
    Fragment(FragmentRepr<'a>),
}

impl<'a> CommandRepr<'a> {
    /// The contents of a parsed command; [`Error::UnknownCid`] for [`Command::Unknown`].
    pub fn parse(command: &Command<'a>) -> Result<Self, Error> {
        Ok(match *command {
            Command::PubKeyReq(frame) => Self::PubKeyReq(PubKeyReqRepr::parse(&frame)?),
            Command::PubKeyAns(frame) => Self::PubKeyAns(PubKeyAnsRepr::parse(&frame)?),
            Command::SigVerifyReq(frame) => Self::SigVerifyReq(SigVerifyReqRepr::parse(&frame)?),
            Command::SigVerifyAns(frame) => Self::SigVerifyAns(SigVerifyAnsRepr::parse(&frame)?),
            Command::KeyChangeReq(frame) => Self::KeyChangeReq(KeyChangeReqRepr::parse(&frame)?),
            Command::Abort(frame) => Self::Abort(AbortRepr::parse(&frame)?),
            Command::Fragment(frame) => {
                Self::Fragment(FragmentRepr::parse_bytes(frame.into_inner())?)
            }
            Command::Unknown { cid, .. } => return Err(Error::UnknownCid { cid }),
        })
    }

    /// The CID.
    #[must_use]
    pub const fn cid(&self) -> u8 {
        match self {
            Self::PubKeyReq(_) => cid::PUB_KEY_REQ,
            Self::PubKeyAns(_) => cid::PUB_KEY_ANS,
            Self::SigVerifyReq(_) => cid::SIG_VERIFY_REQ,
            Self::SigVerifyAns(_) => cid::SIG_VERIFY_ANS,
            Self::KeyChangeReq(_) => cid::KEY_CHANGE_REQ,
            Self::Abort(_) => cid::ABORT,
            Self::Fragment(_) => cid::FRAGMENT,
        }
    }

    /// The SESSION the command carries (KeyChangeReq carries none).
    #[must_use]
    pub const fn session(&self) -> Option<Session> {
        match self {
            Self::PubKeyReq(repr) => Some(repr.session),
            Self::PubKeyAns(repr) => Some(repr.session),
            Self::SigVerifyReq(repr) => Some(repr.session),
            Self::SigVerifyAns(repr) => Some(repr.session),
            Self::Abort(repr) => Some(repr.session),
            Self::Fragment(repr) => Some(repr.session),
            Self::KeyChangeReq(_) => None,
        }
    }

    /// The serialized length.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::PubKeyReq(repr) => repr.buffer_len(),
            Self::PubKeyAns(repr) => repr.buffer_len(),
            Self::SigVerifyReq(repr) => repr.buffer_len(),
            Self::SigVerifyAns(repr) => repr.buffer_len(),
            Self::KeyChangeReq(repr) => repr.buffer_len(),
            Self::Abort(repr) => repr.buffer_len(),
            Self::Fragment(repr) => repr.buffer_len(),
        }
    }

    /// Writes the command to the start of `buffer` and returns its length; the bytes after it are
    /// left untouched.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, Error> {
        match self {
            Self::PubKeyReq(repr) => repr.emit(&mut PubKeyReq::new_unchecked(&mut *buffer))?,
            Self::PubKeyAns(repr) => repr.emit(&mut PubKeyAns::new_unchecked(&mut *buffer))?,
            Self::SigVerifyReq(repr) => {
                repr.emit(&mut SigVerifyReq::new_unchecked(&mut *buffer))?
            }
            Self::SigVerifyAns(repr) => {
                repr.emit(&mut SigVerifyAns::new_unchecked(&mut *buffer))?
            }
            Self::KeyChangeReq(repr) => {
                repr.emit(&mut KeyChangeReq::new_unchecked(&mut *buffer))?
            }
            Self::Abort(repr) => repr.emit(&mut Abort::new_unchecked(&mut *buffer))?,
            Self::Fragment(repr) => repr.emit(&mut Fragment::new_unchecked(&mut *buffer))?,
        }
        Ok(self.buffer_len())
    }
}

macro_rules! from_repr {
    ($($variant:ident($repr:ty)),* $(,)?) => {
        $(
            impl From<$repr> for CommandRepr<'_> {
                fn from(repr: $repr) -> Self {
                    Self::$variant(repr)
                }
            }
        )*
    };
}

from_repr!(
    PubKeyReq(PubKeyReqRepr),
    PubKeyAns(PubKeyAnsRepr),
    SigVerifyReq(SigVerifyReqRepr),
    SigVerifyAns(SigVerifyAnsRepr),
    KeyChangeReq(KeyChangeReqRepr),
    Abort(AbortRepr),
);

impl<'a> From<FragmentRepr<'a>> for CommandRepr<'a> {
    fn from(repr: FragmentRepr<'a>) -> Self {
        Self::Fragment(repr)
    }
}
