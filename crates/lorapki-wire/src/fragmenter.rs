//! Splitting one serialized command into [`Fragment`](crate::Fragment)s.
//!
//! Any fragmentable command (CID 0x01, 0x02, 0x03, 0x07) whose bytes do not fit in the space left
//! in a FRMPayload travels as successive Fragments, each filling the space it is given. A
//! retransmission [`restart`](Fragmenter::restart)s with the same FID, so the receiver can merge
//! the copies.

use crate::fragment::{HEADER_LEN, MAX_FID, MIN_LEN, fragmentable_len};
use crate::header::check_space;
use crate::{CommandRepr, Error, FragmentRepr, MAX_COMMAND_LEN, Session, cid};

/// Emits the Fragments of one serialized command, front to back.
#[derive(Debug, Clone)]
pub struct Fragmenter<'a> {
    command: &'a [u8],
    session: Session,
    fid: u8,
    /// How many bytes of `command` have been emitted; at most [`MAX_COMMAND_LEN`].
    offset: usize,
}

impl<'a> Fragmenter<'a> {
    /// A fragmenter for `command`, exactly one serialized fragmentable command of session
    /// `session`, numbered `fid`.
    ///
    /// Errors: [`Error::BadInner`] when `command` is not exactly one fragmentable command (its CID
    /// is reported as 0 when `command` is empty); [`Error::InvalidRepr`] when `fid` is above 3 or
    /// `session` is not the command's own.
    pub fn new(command: &'a [u8], session: Session, fid: u8) -> Result<Self, Error> {
        let (inner_cid, inner_header) = match *command {
            [inner_cid, inner_header, ..] => (inner_cid, inner_header),
            [inner_cid] => return Err(Error::BadInner { cid: inner_cid }),
            [] => return Err(Error::BadInner { cid: 0 }),
        };
        if fragmentable_len(inner_cid, inner_header) != Some(command.len()) {
            return Err(Error::BadInner { cid: inner_cid });
        }
        if fid > MAX_FID {
            return Err(Error::InvalidRepr {
                cid: cid::FRAGMENT,
                field: "fid",
            });
        }
        // The FHDR session lets the receiver drop stale pieces before the inner header arrives;
        // it must say the same as the inner header.
        if Session::from_header(inner_header) != session {
            return Err(Error::InvalidRepr {
                cid: cid::FRAGMENT,
                field: "session",
            });
        }
        Ok(Self {
            command,
            session,
            fid,
            offset: 0,
        })
    }

    /// Writes the next Fragment into `buffer`, using as much of it as the remaining bytes need, and
    /// returns the Fragment's length; 0 once every byte has been emitted.
    ///
    /// [`Error::NoSpace`] unless `buffer` holds at least 4 bytes (3 header bytes and 1 data byte).
    pub fn emit_next(&mut self, buffer: &mut [u8]) -> Result<usize, Error> {
        let remaining = self.remaining();
        if remaining == 0 {
            return Ok(0);
        }
        check_space(buffer.len(), MIN_LEN)?;
        let take = remaining.min(buffer.len() - HEADER_LEN);
        let fragment = FragmentRepr {
            session: self.session,
            fid: self.fid,
            // `offset` < MAX_COMMAND_LEN (51), so it fits in OFFSET.
            offset: self.offset as u8,
            data: &self.command[self.offset..self.offset + take],
        };
        CommandRepr::Fragment(fragment).emit(buffer)?;
        self.offset += take;
        Ok(fragment.buffer_len())
    }

    /// Whether every byte has been emitted.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.remaining() == 0
    }

    /// Starts over from OFFSET 0 (a retransmission, same FID).
    pub fn restart(&mut self) {
        self.offset = 0;
    }

    /// How many bytes of the command have been emitted.
    #[must_use]
    pub fn emitted(&self) -> usize {
        self.offset
    }

    /// How many bytes of the command are still to be emitted.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.command.len() - self.offset
    }

    /// How many more Fragments of `space` bytes each the remaining bytes need; `None` when
    /// `space` is below 4.
    #[must_use]
    pub fn fragments_needed(&self, space: usize) -> Option<usize> {
        let per_fragment = space.checked_sub(HEADER_LEN).filter(|&n| n > 0)?;
        Some(self.remaining().div_ceil(per_fragment))
    }

    /// The command being fragmented.
    #[must_use]
    pub fn command(&self) -> &'a [u8] {
        self.command
    }

    /// The session in every Fragment's FHDR.
    #[must_use]
    pub fn session(&self) -> Session {
        self.session
    }

    /// The FID in every Fragment's FHDR.
    #[must_use]
    pub fn fid(&self) -> u8 {
        self.fid
    }
}

/// Serializes `command`, splits it into Fragments of at most `n` bytes each (a Fragment of a
/// command never exceeds 54 bytes), and hands each Fragment, as a whole FRMPayload, to `sink`.
/// Returns the number of Fragments.
///
/// The command is fragmented even when it would fit in `n` bytes whole. Meant for tests, benches
/// and air-time estimates; a sender interleaving whole commands uses
/// [`PayloadBuilder`](crate::PayloadBuilder) with a [`Fragmenter`].
pub fn fragment_into_frames(
    command: &CommandRepr<'_>,
    n: usize,
    fid: u8,
    mut sink: impl FnMut(&[u8]),
) -> Result<usize, Error> {
    let command_cid = command.cid();
    let Some(session) = command
        .session()
        .filter(|_| cid::is_fragmentable(command_cid))
    else {
        return Err(Error::BadInner { cid: command_cid });
    };
    let mut bytes = [0; MAX_COMMAND_LEN];
    let len = command.emit(&mut bytes)?;
    let mut fragmenter = Fragmenter::new(&bytes[..len], session, fid)?;
    let mut frame = [0; HEADER_LEN + MAX_COMMAND_LEN];
    let space = n.min(frame.len());
    check_space(space, MIN_LEN)?;
    let mut count = 0;
    while !fragmenter.is_done() {
        let written = fragmenter.emit_next(&mut frame[..space])?;
        sink(&frame[..written]);
        count += 1;
    }
    Ok(count)
}
