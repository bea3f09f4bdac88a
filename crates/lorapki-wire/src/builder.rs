//! Filling one FRMPayload: whole commands first, then at most one Fragment in the space left.

use crate::fragment::MIN_LEN;
use crate::header::check_space;
use crate::{CommandRepr, Error, Fragmenter};

/// Builds one FRMPayload in a caller buffer whose length is the maximum application payload N.
///
/// ```
/// use lorapki_wire::{CommandRepr, KeyChangeReqRepr, PayloadBuilder};
///
/// let mut buffer = [0; 11];
/// let mut payload = PayloadBuilder::new(&mut buffer);
/// payload.push(&CommandRepr::KeyChangeReq(KeyChangeReqRepr))?;
/// assert_eq!(payload.remaining(), 10);
/// assert_eq!(payload.finish(), 1);
/// # Ok::<(), lorapki_wire::Error>(())
/// ```
#[derive(Debug)]
pub struct PayloadBuilder<'a> {
    buffer: &'a mut [u8],
    len: usize,
    /// A Fragment has been written: it runs to the end of the FRMPayload.
    closed: bool,
}

impl<'a> PayloadBuilder<'a> {
    /// An empty FRMPayload of capacity `buffer.len()`.
    pub fn new(buffer: &'a mut [u8]) -> Self {
        Self {
            buffer,
            len: 0,
            closed: false,
        }
    }

    /// Appends a whole command. [`Error::NoSpace`] when it does not fit (nothing is written: the
    /// caller fragments it or sends it in a later FRMPayload); [`Error::FragmentNotLast`] after a
    /// Fragment.
    pub fn push(&mut self, command: &CommandRepr<'_>) -> Result<(), Error> {
        if self.closed {
            return Err(Error::FragmentNotLast);
        }
        check_space(self.remaining(), command.buffer_len())?;
        self.len += command.emit(&mut self.buffer[self.len..])?;
        self.closed = matches!(command, CommandRepr::Fragment(_));
        Ok(())
    }

    /// Appends the next Fragment of `fragmenter`, filling the space left, and returns its length
    /// (0, writing nothing, when the fragmenter is done). Needs at least 4 bytes left
    /// ([`Error::NoSpace`]); [`Error::FragmentNotLast`] after a Fragment.
    pub fn push_fragment(&mut self, fragmenter: &mut Fragmenter<'_>) -> Result<usize, Error> {
        if self.closed {
            return Err(Error::FragmentNotLast);
        }
        if fragmenter.is_done() {
            return Ok(0);
        }
        check_space(self.remaining(), MIN_LEN)?;
        let written = fragmenter.emit_next(&mut self.buffer[self.len..])?;
        self.len += written;
        self.closed = true;
        Ok(written)
    }

    /// Bytes still free (0 once a Fragment has been written).
    #[must_use]
    pub fn remaining(&self) -> usize {
        if self.closed {
            0
        } else {
            self.buffer.len() - self.len
        }
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written so far.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer[..self.len]
    }

    /// The FRMPayload's length: `&buffer[..len]` is ready to send.
    #[must_use]
    pub fn finish(self) -> usize {
        self.len
    }
}
