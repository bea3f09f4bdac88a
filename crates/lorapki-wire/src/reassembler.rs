//! Putting [`Fragment`]s back together, with fixed memory.
//!
//! A slot holds one partial inner command: its SESSION and FID, a 51-byte buffer, a bitmap of the
//! bytes received, and the inner command's length once known. Fragments may arrive in any order,
//! duplicated, or overlapping; bytes are placed by OFFSET. The length becomes known with byte 0
//! (the inner CID), and for a PubKeyAns with byte 1 (its PART); until then the slot buffers
//! whatever arrives within 51 bytes. A header byte is checked as soon as it arrives (an Abort's
//! INDEX must be 0, a PubKeyAns PART must not be 3).
//!
//! One `Reassembler` serves one direction of one session: [`Reassembler::bind`] names the session
//! and drops everything else. A FID is re-used only after four other commands of the same session
//! and direction, so four slots (one per FID) never run out.
//!
//! A completed slot is freed at once. A late duplicate of one of its fragments therefore starts a
//! new slot, and a full retransmission completes it again: the receiver sees a retransmitted
//! command exactly as if it had arrived whole, which it must answer again (PROTOCOL.md §4, §6).
//! A leftover partial copy holds its FID's slot until the next `bind` or `clear`; it cannot block
//! a later command unless the same FID is re-used within the session, after four other
//! fragmented commands in that direction.

use crate::fragment::fragmentable_len;
use crate::{Fragment, FragmentRepr, MAX_COMMAND_LEN, ReassemblyError, Session, cid};

#[derive(Debug, Clone, Copy)]
struct Slot {
    in_use: bool,
    session: Session,
    fid: u8,
    buffer: [u8; MAX_COMMAND_LEN],
    /// Bit `i` set: `buffer[i]` has been received.
    received: u64,
    /// The inner command's length, once known.
    len: Option<usize>,
}

impl Slot {
    const EMPTY: Self = Self {
        in_use: false,
        session: Session::from_header(0),
        fid: 0,
        buffer: [0; MAX_COMMAND_LEN],
        received: 0,
        len: None,
    };

    fn has(&self, index: usize) -> bool {
        self.received & (1 << index) != 0
    }

    /// Byte `index` of the inner command if this slot holds it or `fragment` brings it.
    fn byte(&self, fragment: &FragmentRepr<'_>, index: usize) -> Option<u8> {
        let start = usize::from(fragment.offset);
        match index.checked_sub(start).and_then(|i| fragment.data.get(i)) {
            Some(&byte) => Some(byte),
            None => self.has(index).then_some(self.buffer[index]),
        }
    }

    /// Merges `fragment` (already range-checked against 51 bytes) into the slot; on error the slot
    /// is unchanged. Returns whether the inner command is now complete.
    fn merge(&mut self, fragment: &FragmentRepr<'_>) -> Result<bool, ReassemblyError> {
        let start = usize::from(fragment.offset);
        let end = start + fragment.data.len();
        let mask = bits(start, end);

        let conflict = (start..end)
            .zip(fragment.data)
            .any(|(i, &byte)| self.has(i) && self.buffer[i] != byte);
        if conflict {
            return Err(ReassemblyError::Inconsistent);
        }

        let len = match self.byte(fragment, 0) {
            Some(inner_cid) => inner_len(inner_cid, self.byte(fragment, 1))?,
            None => None,
        };
        if let Some(len) = len {
            if end > len {
                return Err(ReassemblyError::OutOfRange);
            }
            // Bytes buffered before the length was known, lying past it, cannot belong to this
            // command.
            if self.received & !bits(0, len) != 0 {
                return Err(ReassemblyError::Inconsistent);
            }
        }

        if self.received & mask == mask {
            return Err(ReassemblyError::Duplicate);
        }

        self.buffer[start..end].copy_from_slice(fragment.data);
        self.received |= mask;
        self.len = len;
        Ok(len.is_some_and(|len| self.received == bits(0, len)))
    }
}

/// The length of an inner command from its CID and, where present, its header: `Ok(None)` while
/// a PubKeyAns still lacks its PART; the other fragmentable commands have a fixed length.
fn inner_len(inner_cid: u8, inner_header: Option<u8>) -> Result<Option<usize>, ReassemblyError> {
    let bad_inner = ReassemblyError::BadInner { cid: inner_cid };
    match (inner_cid, inner_header) {
        (_, Some(header)) => fragmentable_len(inner_cid, header)
            .map(Some)
            .ok_or(bad_inner),
        (cid::PUB_KEY_ANS, None) => Ok(None),
        (cid::PUB_KEY_REQ, None) => Ok(Some(crate::pub_key_req::LEN)),
        (cid::SIG_VERIFY_REQ, None) => Ok(Some(crate::sig_verify_req::LEN)),
        (cid::ABORT, None) => Ok(Some(crate::abort::LEN)),
        _ => Err(bad_inner),
    }
}

/// The bitmap of byte indices `start..end` (`end` ≤ 51 < 64).
const fn bits(start: usize, end: usize) -> u64 {
    ((1 << (end - start)) - 1) << start
}

/// Reassembles fragmented inner commands of one bound session in `SLOTS` fixed slots.
///
/// Four slots, one per FID, are enough for one direction of one session.
#[derive(Debug, Clone)]
pub struct Reassembler<const SLOTS: usize> {
    session: Option<Session>,
    slots: [Slot; SLOTS],
}

impl<const SLOTS: usize> Default for Reassembler<SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SLOTS: usize> Reassembler<SLOTS> {
    /// An empty reassembler bound to no session: every fragment is
    /// [`ReassemblyError::OutOfSession`] until [`Self::bind`].
    #[must_use]
    pub const fn new() -> Self {
        Self {
            session: None,
            slots: [Slot::EMPTY; SLOTS],
        }
    }

    /// Accepts fragments of `session` only, and drops every partial command.
    pub fn bind(&mut self, session: Session) {
        self.session = Some(session);
        self.clear();
    }

    /// The bound session.
    #[must_use]
    pub const fn session(&self) -> Option<Session> {
        self.session
    }

    /// Drops every partial command; the binding stays.
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.in_use = false;
        }
    }

    /// How many partial commands are held.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|slot| slot.in_use).count()
    }

    /// Adds a parsed Fragment. Returns the inner command's bytes once complete (its slot is then
    /// freed), `None` while pieces are missing.
    ///
    /// A refused fragment changes nothing; [`ReassemblyError::Duplicate`] is harmless and meant to
    /// be ignored. A view that fails its checks is [`ReassemblyError::Malformed`] (or
    /// [`ReassemblyError::BadInner`]).
    pub fn push<T: AsRef<[u8]>>(
        &mut self,
        fragment: &Fragment<T>,
    ) -> Result<Option<&[u8]>, ReassemblyError> {
        let fragment = FragmentRepr::parse(fragment).map_err(|error| match error {
            crate::Error::BadInner { cid } => ReassemblyError::BadInner { cid },
            _ => ReassemblyError::Malformed,
        })?;
        self.push_repr(&fragment)
    }

    /// Adds a Fragment's contents; as [`Self::push`].
    pub fn push_repr(
        &mut self,
        fragment: &FragmentRepr<'_>,
    ) -> Result<Option<&[u8]>, ReassemblyError> {
        if self.session != Some(fragment.session) {
            return Err(ReassemblyError::OutOfSession {
                got: fragment.session,
                expected: self.session,
            });
        }
        if fragment.fid > crate::fragment::MAX_FID || fragment.data.is_empty() {
            return Err(ReassemblyError::Malformed);
        }
        if fragment.data.len() > MAX_COMMAND_LEN {
            return Err(ReassemblyError::Oversize);
        }
        if usize::from(fragment.offset) + fragment.data.len() > MAX_COMMAND_LEN {
            return Err(ReassemblyError::OutOfRange);
        }

        let existing = self.slots.iter().position(|slot| {
            slot.in_use && slot.session == fragment.session && slot.fid == fragment.fid
        });
        let (index, complete) = match existing {
            Some(index) => (index, self.slots[index].merge(fragment)?),
            None => {
                let mut slot = Slot {
                    in_use: true,
                    session: fragment.session,
                    fid: fragment.fid,
                    ..Slot::EMPTY
                };
                // Validate before claiming a slot, so that a bad fragment reports its own error.
                let complete = slot.merge(fragment)?;
                let index = self
                    .slots
                    .iter()
                    .position(|slot| !slot.in_use)
                    .ok_or(ReassemblyError::NoFreeSlot)?;
                self.slots[index] = slot;
                (index, complete)
            }
        };
        if !complete {
            return Ok(None);
        }
        let slot = &mut self.slots[index];
        slot.in_use = false;
        Ok(slot.len.map(|len| &slot.buffer[..len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_ranges() {
        assert_eq!(bits(0, 1), 0b1);
        assert_eq!(bits(2, 5), 0b11100);
        assert_eq!(bits(0, MAX_COMMAND_LEN), (1 << 51) - 1);
        assert_eq!(bits(50, 51), 1 << 50);
    }

    #[test]
    fn inner_lengths() {
        assert_eq!(inner_len(cid::PUB_KEY_REQ, None), Ok(Some(51)));
        assert_eq!(inner_len(cid::SIG_VERIFY_REQ, None), Ok(Some(50)));
        assert_eq!(inner_len(cid::ABORT, None), Ok(Some(3)));
        assert_eq!(inner_len(cid::PUB_KEY_ANS, None), Ok(None));
        assert_eq!(inner_len(cid::PUB_KEY_ANS, Some(0b0000_0001)), Ok(Some(51)));
        assert_eq!(inner_len(cid::PUB_KEY_ANS, Some(0b0000_0010)), Ok(Some(49)));
        assert_eq!(
            inner_len(cid::PUB_KEY_ANS, Some(0b0000_0011)),
            Err(ReassemblyError::BadInner { cid: 0x02 })
        );
        assert_eq!(
            inner_len(cid::ABORT, Some(0b1111_1101)),
            Err(ReassemblyError::BadInner { cid: 0x07 })
        );
        for bare in [
            cid::SIG_VERIFY_ANS,
            cid::KEY_CHANGE_REQ,
            cid::FRAGMENT,
            0x00,
            0x06,
            0xff,
        ] {
            assert_eq!(
                inner_len(bare, None),
                Err(ReassemblyError::BadInner { cid: bare })
            );
        }
    }

    #[test]
    fn a_refused_fragment_changes_nothing() {
        let mut slot = Slot::EMPTY;
        let first = FragmentRepr {
            session: Session::from_header(0),
            fid: 0,
            offset: 0,
            data: &[cid::ABORT, 0x00],
        };
        assert_eq!(slot.merge(&first), Ok(false));
        let before = (slot.buffer, slot.received, slot.len);
        let conflicting = FragmentRepr {
            data: &[cid::ABORT, 0x04],
            ..first
        };
        assert_eq!(slot.merge(&conflicting), Err(ReassemblyError::Inconsistent));
        let too_long = FragmentRepr {
            offset: 2,
            data: &[0x06, 0x00],
            ..first
        };
        assert_eq!(slot.merge(&too_long), Err(ReassemblyError::OutOfRange));
        assert_eq!((slot.buffer, slot.received, slot.len), before);
        let last = FragmentRepr {
            offset: 2,
            data: &[0x06],
            ..first
        };
        assert_eq!(slot.merge(&last), Ok(true));
    }
}
