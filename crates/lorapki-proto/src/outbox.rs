//! The transmit queue both roles share: command states, acknowledgements, round-robin
//! retransmission, concatenation and fragmentation into a frame of capacity N (PROTOCOL.md §6.1,
//! §6.2, §4).

use lorapki_wire::{CommandRepr, FragmentRepr, MAX_COMMAND_LEN, Session};

/// How many commands one side queues per session at most (the device queues four, the server four).
pub(crate) const QUEUE_LEN: usize = 4;

/// The smallest space in which a Fragment still carries a byte (CID, FHDR, OFFSET, data).
const MIN_FRAGMENT: usize = 4;
const FRAGMENT_HEADER: usize = 3;

/// The delivery state of a queued command (§6.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Status {
    Unsent,
    Sent,
    Acked,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Entry<K> {
    pub(crate) kind: K,
    pub(crate) status: Status,
    /// The FID this command was given when it was first fragmented.
    fid: Option<u8>,
    /// Bytes of the serialized command already carried by fragments in the current pass.
    offset: u8,
}

impl<K> Entry<K> {
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))] // server role only
    /// The FID and the fragmentation progress, for a snapshot.
    pub(crate) fn fragment_state(&self) -> (Option<u8>, u8) {
        (self.fid, self.offset)
    }

    #[cfg_attr(not(feature = "alloc"), allow(dead_code))] // server role only
    /// An entry from a snapshot; `None` if the values are out of range.
    pub(crate) fn restore(kind: K, status: Status, fid: Option<u8>, offset: u8) -> Option<Self> {
        (fid.is_none_or(|f| f < 4) && usize::from(offset) < MAX_COMMAND_LEN).then_some(Self {
            kind,
            status,
            fid,
            offset,
        })
    }
}

/// A per-session queue of commands of kind `K`.
#[derive(Clone, Debug)]
pub(crate) struct Outbox<K> {
    entries: [Option<Entry<K>>; QUEUE_LEN],
    next_fid: u8,
    /// Index after the last entry emitted: where round-robin retransmission continues.
    cursor: u8,
}

impl<K: Copy + Eq> Outbox<K> {
    pub(crate) const fn new() -> Self {
        Self {
            entries: [None; QUEUE_LEN],
            next_fid: 0,
            cursor: 0,
        }
    }

    #[cfg_attr(not(feature = "alloc"), allow(dead_code))] // server role only
    /// The raw parts, for a snapshot.
    pub(crate) fn parts(&self) -> (&[Option<Entry<K>>; QUEUE_LEN], u8, u8) {
        (&self.entries, self.next_fid, self.cursor)
    }

    #[cfg_attr(not(feature = "alloc"), allow(dead_code))] // server role only
    /// Rebuilds a queue from [`Self::parts`]; `None` if the values are out of range.
    pub(crate) fn restore(
        entries: [Option<Entry<K>>; QUEUE_LEN],
        next_fid: u8,
        cursor: u8,
    ) -> Option<Self> {
        (next_fid < 4 && usize::from(cursor) < QUEUE_LEN).then_some(Self {
            entries,
            next_fid,
            cursor,
        })
    }

    /// Queues `kind` as unsent unless it is queued already.
    pub(crate) fn push(&mut self, kind: K) {
        if self.entry_mut(kind).is_some() {
            return;
        }
        if let Some(slot) = self.entries.iter_mut().find(|e| e.is_none()) {
            *slot = Some(Entry {
                kind,
                status: Status::Unsent,
                fid: None,
                offset: 0,
            });
        }
    }

    fn entry_mut(&mut self, kind: K) -> Option<&mut Entry<K>> {
        self.entries.iter_mut().flatten().find(|e| e.kind == kind)
    }

    /// Marks `kind` acknowledged: it is never sent again, and a retransmission in fragments
    /// stops. The receiver may keep a partial copy; since every command of a session has its own
    /// FID and the receiver one slot per fragmentable command, that copy blocks nothing (§4).
    pub(crate) fn ack(&mut self, kind: K) {
        if let Some(entry) = self.entry_mut(kind) {
            entry.status = Status::Acked;
            entry.offset = 0;
        }
    }

    #[cfg_attr(not(feature = "alloc"), allow(dead_code))] // server role only
    /// Marks a sent command unsent again, so that the next frame carries it first.
    pub(crate) fn resend(&mut self, kind: K) {
        if let Some(entry) = self.entry_mut(kind)
            && entry.status == Status::Sent
        {
            entry.status = Status::Unsent;
        }
    }

    #[cfg_attr(not(feature = "alloc"), allow(dead_code))] // server role only
    /// Marks a command unsent again even if it was acknowledged: the acknowledgement turned out
    /// not to mean what it seemed (the server's part 0 after a failed verification, §6.1).
    pub(crate) fn reopen(&mut self, kind: K) {
        if let Some(entry) = self.entry_mut(kind) {
            entry.status = Status::Unsent;
            entry.offset = 0;
        }
    }

    #[cfg_attr(not(feature = "alloc"), allow(dead_code))] // server role only
    /// Takes an acknowledgement back: the peer says it lacks the command after all (a forged
    /// acknowledgement must not starve it). It goes out again round-robin.
    pub(crate) fn unack(&mut self, kind: K) {
        if let Some(entry) = self.entry_mut(kind)
            && entry.status == Status::Acked
        {
            entry.status = Status::Sent;
        }
    }

    /// Whether a command has not been transmitted completely yet (unsent, or its fragments under
    /// way): the step's request is still going out.
    pub(crate) fn has_unsent(&self) -> bool {
        self.entries
            .iter()
            .flatten()
            .any(|e| e.status == Status::Unsent || (e.status == Status::Sent && e.offset > 0))
    }

    /// Whether any queued command still waits for its acknowledgement.
    pub(crate) fn has_unacked(&self) -> bool {
        self.entries
            .iter()
            .flatten()
            .any(|e| e.status != Status::Acked)
    }

    /// Builds one FRMPayload into `out` (its length is the capacity N) and returns its length.
    ///
    /// `first` picks the commands that go before all others (§6.2 step 1); `serialize` writes a
    /// command's bytes and returns their length. Order: a command whose fragmentation is under
    /// way, the `first` ones, the unsent ones in queue order, then, space permitting, the
    /// sent-but-unacknowledged ones round-robin after the last one sent (§6.2 step 2).
    ///
    /// `hold` names a command whose bytes from some offset on may not be sent yet (the server's
    /// withheld end of SIG_S, §5.5): such a command is never sent whole; when it is longer than
    /// the frame, so that it travels in Fragments anyway, its fragments run up to that offset.
    pub(crate) fn build(
        &mut self,
        out: &mut [u8],
        session: Session,
        first: impl Fn(&Entry<K>) -> bool,
        hold: impl Fn(K) -> Option<usize>,
        mut serialize: impl FnMut(K, &mut [u8; MAX_COMMAND_LEN]) -> usize,
    ) -> usize {
        let mut order = Order::default();
        let pending = |e: &Option<Entry<K>>| e.as_ref().is_some_and(|e| e.status != Status::Acked);
        for (i, e) in self.entries.iter().enumerate() {
            if pending(e) && e.as_ref().is_some_and(|e| e.offset > 0) {
                order.add(i);
            }
        }
        for (i, e) in self.entries.iter().enumerate() {
            if pending(e) && e.as_ref().is_some_and(&first) {
                order.add(i);
            }
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.as_ref().is_some_and(|e| e.status == Status::Unsent) {
                order.add(i);
            }
        }
        let start = usize::from(self.cursor);
        for step in 0..QUEUE_LEN {
            let i = (start + step) % QUEUE_LEN;
            if self.entries[i]
                .as_ref()
                .is_some_and(|e| e.status == Status::Sent)
            {
                order.add(i);
            }
        }

        // §4: whole commands first, then at most one Fragment, which runs to the end of the
        // frame. A command whose fragments are under way is continued before any other starts.
        let capacity = out.len();
        // How far a command may go out now: its length, or where its hold starts.
        let sendable = |kind: K, len: usize| hold(kind).map_or(len, |limit| limit.min(len));
        let in_progress = order.indices[..order.count].iter().copied().find(|&i| {
            self.entries[i].as_ref().is_some_and(|e| {
                let mut bytes = [0u8; MAX_COMMAND_LEN];
                let len = serialize(e.kind, &mut bytes).min(MAX_COMMAND_LEN);
                e.offset > 0 && usize::from(e.offset) < sendable(e.kind, len)
            })
        });
        let mut reserved = 0;
        if let Some(index) = in_progress
            && let Some(entry) = &self.entries[index]
        {
            let mut bytes = [0u8; MAX_COMMAND_LEN];
            let len = serialize(entry.kind, &mut bytes).min(MAX_COMMAND_LEN);
            let rest = sendable(entry.kind, len).saturating_sub(usize::from(entry.offset));
            reserved = (rest + FRAGMENT_HEADER).min(capacity);
        }
        let mut pos = 0;
        let mut fragment = in_progress;
        for &index in &order.indices[..order.count] {
            if Some(index) == in_progress {
                continue;
            }
            let Some(entry) = self.entries[index].as_mut() else {
                continue;
            };
            let mut bytes = [0u8; MAX_COMMAND_LEN];
            let len = serialize(entry.kind, &mut bytes).min(MAX_COMMAND_LEN);
            if sendable(entry.kind, len) < len {
                // Held: never whole; in Fragments only if it could not travel whole anyway, and
                // not while its sendable bytes are out already.
                if fragment.is_none()
                    && len > capacity
                    && usize::from(entry.offset) < sendable(entry.kind, len)
                {
                    fragment = Some(index);
                    break;
                }
                continue;
            }
            if len > 0 && pos + len + reserved <= capacity {
                out[pos..pos + len].copy_from_slice(&bytes[..len]);
                pos += len;
                entry.status = Status::Sent;
                self.cursor = u8::try_from((index + 1) % QUEUE_LEN).unwrap_or(0);
                continue;
            }
            if fragment.is_none() && len > 0 {
                fragment = Some(index);
            }
            break;
        }
        let Some(index) = fragment else { return pos };
        let space = capacity - pos;
        if space < MIN_FRAGMENT {
            return pos;
        }
        let Some(entry) = self.entries[index].as_mut() else {
            return pos;
        };
        let mut bytes = [0u8; MAX_COMMAND_LEN];
        let len = serialize(entry.kind, &mut bytes).min(MAX_COMMAND_LEN);
        let offset = usize::from(entry.offset);
        if offset >= len {
            return pos;
        }
        let fid = match entry.fid {
            Some(fid) => fid,
            None => {
                let fid = self.next_fid;
                self.next_fid = (self.next_fid + 1) % 4;
                entry.fid = Some(fid);
                fid
            }
        };
        let take = sendable(entry.kind, len)
            .saturating_sub(offset)
            .min(space - FRAGMENT_HEADER);
        if take == 0 {
            return pos;
        }
        let repr = FragmentRepr {
            session,
            fid,
            offset: entry.offset,
            data: &bytes[offset..offset + take],
        };
        let Ok(written) = CommandRepr::Fragment(repr).emit(&mut out[pos..]) else {
            return pos;
        };
        pos += written;
        if offset + take >= len {
            entry.offset = 0;
            entry.status = Status::Sent;
            self.cursor = u8::try_from((index + 1) % QUEUE_LEN).unwrap_or(0);
        } else {
            entry.offset = u8::try_from(offset + take).unwrap_or(0);
        }
        pos
    }
}

/// The entries to try in one frame, in order, each once.
#[derive(Default)]
struct Order {
    indices: [usize; QUEUE_LEN],
    count: usize,
}

impl Order {
    fn add(&mut self, index: usize) {
        if self.count < QUEUE_LEN && !self.indices[..self.count].contains(&index) {
            self.indices[self.count] = index;
            self.count += 1;
        }
    }
}
