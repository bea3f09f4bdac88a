//! PubKeyAns (CID 0x02, server → device): the server's ephemeral public key and its signature, in
//! three parts so that each fits in 51 bytes.
//!
//! ```text
//!  0     1     2                         51 (p = 0, 1) / 49 (p = 2)
//! +-----+-----+---------------------------+
//! | CID | HDR | DATA                      |
//! +-----+-----+---------------------------+
//! HDR: bits 7..2 SESSION, bits 1..0 PART p
//! p = 0: EPH_S         (49, SEC1 compressed P-384 point)
//! p = 1: SIG_S[0..49]  (49)
//! p = 2: SIG_S[49..96] (47)
//! p = 3: invalid (Error::BadHeader)
//! ```

use crate::header::{check_cid, check_len, check_space, header, index};
use crate::view::view_methods;
use crate::{EPHEMERAL_KEY_LEN, Error, SIGNATURE_LEN, Session, cid};

mod field {
    use core::ops::Range;

    pub(super) const CID: usize = 0;
    pub(super) const HDR: usize = 1;
    /// PART 0 and 1.
    pub(super) const DATA_LONG: Range<usize> = 2..51;
    /// PART 2.
    pub(super) const DATA_SHORT: Range<usize> = 2..49;
}

/// Length of PART 0 and 1.
pub const LONG_LEN: usize = field::DATA_LONG.end;
/// Length of PART 2.
pub const SHORT_LEN: usize = field::DATA_SHORT.end;
/// How many signature bytes PART 1 carries (the rest, [`SIGNATURE_TAIL_LEN`], go in PART 2).
pub const SIGNATURE_HEAD_LEN: usize = field::DATA_LONG.end - field::DATA_LONG.start;
/// How many signature bytes PART 2 carries.
pub const SIGNATURE_TAIL_LEN: usize = field::DATA_SHORT.end - field::DATA_SHORT.start;

/// The length of a PubKeyAns with PART `part`, `None` for PART 3.
pub(crate) const fn len_of_part(part: u8) -> Option<usize> {
    match part {
        0 | 1 => Some(LONG_LEN),
        2 => Some(SHORT_LEN),
        _ => None,
    }
}

/// A read-only view of a PubKeyAns at the start of a buffer (bytes past its length are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubKeyAns<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PubKeyAns<T> {
    view_methods! {
        /// A view whose accessors cannot panic: the buffer starts with CID 0x02, PART is 0..=2, and
        /// the buffer holds that part's length.
        new_checked;
        session: field::HDR;
    }

    /// The checks of [`Self::new_checked`].
    pub fn check(&self) -> Result<(), Error> {
        let bytes = self.buffer.as_ref();
        check_cid(bytes, cid::PUB_KEY_ANS)?;
        check_len(bytes, cid::PUB_KEY_ANS, field::HDR + 1)?;
        let hdr = bytes[field::HDR];
        let len = len_of_part(index(hdr)).ok_or(Error::BadHeader {
            cid: cid::PUB_KEY_ANS,
            header: hdr,
        })?;
        check_len(bytes, cid::PUB_KEY_ANS, len)
    }

    /// The command's bytes: [`LONG_LEN`] or [`SHORT_LEN`] of them, by PART.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.command_len()]
    }

    /// PART (0..=2).
    pub fn part_index(&self) -> u8 {
        index(self.buffer.as_ref()[field::HDR])
    }

    /// DATA: 49 bytes for PART 0 and 1, 47 for PART 2.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA_LONG.start..self.command_len()]
    }

    fn command_len(&self) -> usize {
        if self.part_index() == 2 {
            SHORT_LEN
        } else {
            LONG_LEN
        }
    }
}

/// A PubKeyAns part with its data: PART and the data's length go together, so they are one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Part {
    /// PART 0: EPH_S, the server's ephemeral public key (SEC1 compressed, not validated here).
    EphemeralKey([u8; EPHEMERAL_KEY_LEN]),
    /// PART 1: SIG_S[0..49].
    SignatureHead([u8; SIGNATURE_HEAD_LEN]),
    /// PART 2: SIG_S[49..96].
    SignatureTail([u8; SIGNATURE_TAIL_LEN]),
}

impl Part {
    /// The PART number, 0..=2.
    #[must_use]
    pub const fn index(&self) -> u8 {
        match self {
            Self::EphemeralKey(_) => 0,
            Self::SignatureHead(_) => 1,
            Self::SignatureTail(_) => 2,
        }
    }

    /// The part's data.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        match self {
            Self::EphemeralKey(data) | Self::SignatureHead(data) => data,
            Self::SignatureTail(data) => data,
        }
    }

    /// PART 1 and PART 2 of a signature `r || s`.
    #[must_use]
    pub fn signature_parts(signature: &[u8; SIGNATURE_LEN]) -> [Self; 2] {
        let mut head = [0; SIGNATURE_HEAD_LEN];
        let mut tail = [0; SIGNATURE_TAIL_LEN];
        let (first, second) = signature.split_at(SIGNATURE_HEAD_LEN);
        head.copy_from_slice(first);
        tail.copy_from_slice(second);
        [Self::SignatureHead(head), Self::SignatureTail(tail)]
    }
}

/// A PubKeyAns's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PubKeyAnsRepr {
    /// SESSION.
    pub session: Session,
    /// PART and its data.
    pub part: Part,
}

impl PubKeyAnsRepr {
    /// The contents of a PubKeyAns view.
    pub fn parse<T: AsRef<[u8]>>(frame: &PubKeyAns<T>) -> Result<Self, Error> {
        frame.check()?;
        let data = frame.data();
        let part = match frame.part_index() {
            0 => {
                let mut key = [0; EPHEMERAL_KEY_LEN];
                key.copy_from_slice(data);
                Part::EphemeralKey(key)
            }
            1 => {
                let mut head = [0; SIGNATURE_HEAD_LEN];
                head.copy_from_slice(data);
                Part::SignatureHead(head)
            }
            _ => {
                let mut tail = [0; SIGNATURE_TAIL_LEN];
                tail.copy_from_slice(data);
                Part::SignatureTail(tail)
            }
        };
        Ok(Self {
            session: frame.session(),
            part,
        })
    }

    /// The serialized length: [`LONG_LEN`] or [`SHORT_LEN`] by part.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self.part {
            Part::EphemeralKey(_) | Part::SignatureHead(_) => LONG_LEN,
            Part::SignatureTail(_) => SHORT_LEN,
        }
    }

    /// Writes the command to the start of the view's buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut PubKeyAns<T>,
    ) -> Result<(), Error> {
        let bytes = frame.buffer.as_mut();
        let len = self.buffer_len();
        check_space(bytes.len(), len)?;
        bytes[field::CID] = cid::PUB_KEY_ANS;
        bytes[field::HDR] = header(self.session, self.part.index());
        bytes[field::DATA_LONG.start..len].copy_from_slice(self.part.data());
        Ok(())
    }
}
