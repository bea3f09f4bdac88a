use core::fmt;

use crate::Session;
use crate::session::SessionOutOfRange;

/// Everything that can go wrong while parsing or emitting lorapki frames.
///
/// Parsing errors describe bytes from the air; emitting errors describe a representation or buffer
/// handed in by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A known command is shorter than its length.
    ///
    /// `needed` is the command's length, or, while the header that fixes the length (PubKeyAns
    /// PART) or the minimum (Fragment) is missing, the number of bytes needed to learn it.
    Truncated {
        /// The command's CID.
        cid: u8,
        /// How many bytes the command needs.
        needed: usize,
        /// How many bytes there were.
        available: usize,
    },
    /// The header byte holds a value that the command does not allow: PubKeyAns PART 3, or an
    /// Abort with a nonzero INDEX.
    BadHeader {
        /// The command's CID.
        cid: u8,
        /// The offending header byte.
        header: u8,
    },
    /// The bytes that should start (or be) a fragmented inner command are not a fragmentable
    /// command: an inner CID other than 0x01, 0x02, 0x03 or 0x07, an invalid inner header, or
    /// (for [`Fragmenter`](crate::Fragmenter)) not exactly one whole such command.
    BadInner {
        /// The inner CID.
        cid: u8,
    },
    /// A view was made over the bytes of another command.
    UnexpectedCid {
        /// The CID the view is for.
        expected: u8,
        /// The CID found in the buffer.
        found: u8,
    },
    /// A command with an undefined CID cannot be turned into a [`CommandRepr`](crate::CommandRepr).
    UnknownCid {
        /// The undefined CID.
        cid: u8,
    },
    /// A session number above 63.
    SessionOutOfRange {
        /// The rejected value.
        value: u8,
    },
    /// A representation holds a value that its field cannot carry, so it cannot be emitted.
    InvalidRepr {
        /// The command's CID.
        cid: u8,
        /// The field's name.
        field: &'static str,
    },
    /// The output buffer (or the space left in a FRMPayload) is too small.
    NoSpace {
        /// How many bytes the write needs.
        needed: usize,
        /// How many bytes are left.
        available: usize,
    },
    /// A Fragment runs to the end of the FRMPayload, so no command can follow it.
    FragmentNotLast,
    /// A fragment was refused by a [`Reassembler`](crate::Reassembler).
    Reassembly(ReassemblyError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated {
                cid,
                needed,
                available,
            } => write!(
                f,
                "command 0x{cid:02x} truncated: needs {needed} bytes, {available} available"
            ),
            Self::BadHeader { cid, header } => {
                write!(
                    f,
                    "command 0x{cid:02x} has an invalid header 0x{header:02x}"
                )
            }
            Self::BadInner { cid } => {
                write!(f, "not a fragmentable command (inner CID 0x{cid:02x})")
            }
            Self::UnexpectedCid { expected, found } => {
                write!(f, "expected command 0x{expected:02x}, found 0x{found:02x}")
            }
            Self::UnknownCid { cid } => write!(f, "unknown command 0x{cid:02x}"),
            Self::SessionOutOfRange { value } => {
                write!(f, "session {value} out of range 0..=63")
            }
            Self::InvalidRepr { cid, field } => {
                write!(f, "cannot emit command 0x{cid:02x}: `{field}` out of range")
            }
            Self::NoSpace { needed, available } => {
                write!(f, "no space: needs {needed} bytes, {available} available")
            }
            Self::FragmentNotLast => f.write_str("a Fragment must be the last command"),
            Self::Reassembly(e) => write!(f, "reassembly: {e}"),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Reassembly(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ReassemblyError> for Error {
    fn from(e: ReassemblyError) -> Self {
        Self::Reassembly(e)
    }
}

/// Why a [`Reassembler`](crate::Reassembler) refused a fragment. Each refusal leaves the
/// reassembler as it was before the fragment arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReassemblyError {
    /// The fragment's SESSION is not the bound session (or no session is bound).
    OutOfSession {
        /// The fragment's session.
        got: Session,
        /// The bound session, if any.
        expected: Option<Session>,
    },
    /// The fragment's bytes reach past the longest command (51 bytes), or past the inner
    /// command's length once that is known.
    OutOfRange,
    /// The fragment carries more data than the longest command.
    Oversize,
    /// Every byte of the fragment was already received with the same value: harmless, ignore it.
    Duplicate,
    /// A byte differs from the one already received at that offset, or bytes already received lie
    /// past the inner command's length: the fragment is dropped, the partial command kept.
    Inconsistent,
    /// Every slot holds a partial command of another FID.
    NoFreeSlot,
    /// The inner command is not fragmentable: its CID is not 0x01, 0x02, 0x03 or 0x07, or its
    /// header is invalid.
    BadInner {
        /// The inner CID.
        cid: u8,
    },
    /// The fragment itself is malformed: a view made with `new_unchecked` that fails the checks,
    /// a FID above 3 or empty data.
    Malformed,
}

impl fmt::Display for ReassemblyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutOfSession {
                got,
                expected: Some(expected),
            } => write!(f, "fragment of session {got}, expected session {expected}"),
            Self::OutOfSession {
                got,
                expected: None,
            } => write!(f, "fragment of session {got}, but no session is bound"),
            Self::OutOfRange => f.write_str("fragment reaches past the inner command"),
            Self::Oversize => f.write_str("fragment longer than any command"),
            Self::Duplicate => f.write_str("duplicate fragment"),
            Self::Inconsistent => f.write_str("fragment disagrees with bytes already received"),
            Self::NoFreeSlot => f.write_str("no free reassembly slot"),
            Self::BadInner { cid } => {
                write!(f, "inner command 0x{cid:02x} is not fragmentable")
            }
            Self::Malformed => f.write_str("malformed fragment"),
        }
    }
}

impl core::error::Error for ReassemblyError {}

impl From<SessionOutOfRange> for Error {
    fn from(e: SessionOutOfRange) -> Self {
        Self::SessionOutOfRange { value: e.value }
    }
}
