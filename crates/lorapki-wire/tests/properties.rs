//! Property tests: parse(emit(x)) == x for every representation, no panic on any bytes, and
//! fragment → reassemble over every payload size N with loss, duplication and reordering.
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{fragmentable_commands, serialize, session};
use lorapki_wire::{
    AbortRepr, Code, Command, CommandRepr, Commands, Error, FragmentRepr, KeyChangeReqRepr,
    MAX_COMMAND_LEN, MAX_PAYLOAD, MIN_PAYLOAD, Part, PayloadBuilder, PubKeyAnsRepr, PubKeyReqRepr,
    Reason, Reassembler, ReassemblyError, Session, SigVerifyAnsRepr, SigVerifyReqRepr,
    fragment_into_frames,
};
use proptest::array::uniform;
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Strategies

fn any_session() -> impl Strategy<Value = Session> {
    (0..=Session::MAX).prop_map(session)
}

/// A command that is not a Fragment.
fn whole_command() -> impl Strategy<Value = CommandRepr<'static>> {
    prop_oneof![
        (any_session(), 0u8..=3, uniform::<_, 49>(any::<u8>())).prop_map(
            |(session, version, ephemeral)| {
                CommandRepr::PubKeyReq(PubKeyReqRepr {
                    session,
                    version,
                    ephemeral,
                })
            }
        ),
        (
            any_session(),
            prop_oneof![
                uniform::<_, 49>(any::<u8>()).prop_map(Part::EphemeralKey),
                uniform::<_, 49>(any::<u8>()).prop_map(Part::SignatureHead),
                uniform::<_, 47>(any::<u8>()).prop_map(Part::SignatureTail),
            ]
        )
            .prop_map(|(session, part)| CommandRepr::PubKeyAns(PubKeyAnsRepr { session, part })),
        (
            any_session(),
            0u8..=1,
            any::<bool>(),
            uniform::<_, 48>(any::<u8>())
        )
            .prop_map(|(session, chunk, holds_all_parts, data)| {
                CommandRepr::SigVerifyReq(SigVerifyReqRepr {
                    session,
                    chunk,
                    holds_all_parts,
                    data,
                })
            }),
        // Only canonical codes: parse never yields Unknown(0..=2).
        (any_session(), 0u8..=3).prop_map(|(session, code)| {
            CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
                session,
                code: Code::from(code),
            })
        }),
        Just(CommandRepr::KeyChangeReq(KeyChangeReqRepr)),
        (any_session(), any::<u8>()).prop_map(|(session, reason)| {
            CommandRepr::Abort(AbortRepr {
                session,
                reason: Reason::from(reason),
            })
        }),
    ]
}

/// A Fragment's contents, owning its data.
#[derive(Debug, Clone)]
struct OwnedFragment {
    session: Session,
    fid: u8,
    offset: u8,
    data: Vec<u8>,
}

impl OwnedFragment {
    fn repr(&self) -> FragmentRepr<'_> {
        FragmentRepr {
            session: self.session,
            fid: self.fid,
            offset: self.offset,
            data: &self.data,
        }
    }
}

/// A valid Fragment: at OFFSET 0 its data starts a fragmentable command.
fn fragment() -> impl Strategy<Value = OwnedFragment> {
    let inner_cid_and_header = prop_oneof![
        (any_session(), 0u8..=3).prop_map(|(s, version)| [0x01, s.value() << 2 | version]),
        (any_session(), 0u8..=2).prop_map(|(s, part)| [0x02, s.value() << 2 | part]),
        (any_session(), 0u8..=3).prop_map(|(s, index)| [0x03, s.value() << 2 | index]),
        any_session().prop_map(|s| [0x07, s.value() << 2]),
    ];
    let at_zero = prop_oneof![
        (inner_cid_and_header, vec(any::<u8>(), 0..60)).prop_map(|(start, rest)| {
            let mut data = start.to_vec();
            data.extend(rest);
            (0u8, data)
        }),
        // Only the inner CID.
        prop_oneof![Just(0x01), Just(0x02), Just(0x03), Just(0x07)]
            .prop_map(|cid| (0u8, vec![cid])),
    ];
    let elsewhere = (1u8..=255, vec(any::<u8>(), 1..60));
    (any_session(), 0u8..=3, prop_oneof![at_zero, elsewhere]).prop_map(
        |(session, fid, (offset, data))| OwnedFragment {
            session,
            fid,
            offset,
            data,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Round trips and robustness

/// Emits into a buffer pre-filled with 0xa5, checks the bytes after the command are untouched,
/// and parses the command back.
fn emit_and_parse(repr: &CommandRepr<'_>) {
    let mut buffer = [0xa5; 300];
    let len = repr.emit(&mut buffer).unwrap();
    assert_eq!(len, repr.buffer_len());
    assert!(buffer[len..].iter().all(|&b| b == 0xa5));
    let mut commands = Commands::new(&buffer[..len]);
    let command = commands.next().unwrap().unwrap();
    assert_eq!(CommandRepr::parse(&command).as_ref(), Ok(repr));
    assert_eq!(command.cid(), repr.cid());
    assert_eq!(command.session(), repr.session());
    assert!(commands.next().is_none());
}

proptest! {
    #[test]
    fn whole_commands_round_trip(repr in whole_command()) {
        emit_and_parse(&repr);
    }

    #[test]
    fn fragments_round_trip(fragment in fragment()) {
        emit_and_parse(&CommandRepr::Fragment(fragment.repr()));
    }

    #[test]
    fn concatenations_round_trip(
        commands in vec(whole_command(), 0..8),
        last in proptest::option::of(fragment()),
    ) {
        let mut buffer = [0; MAX_PAYLOAD];
        let mut payload = PayloadBuilder::new(&mut buffer);
        let mut sent = Vec::new();
        for command in &commands {
            match payload.push(command) {
                Ok(()) => sent.push(*command),
                Err(Error::NoSpace { .. }) => break,
                Err(other) => panic!("{other}"),
            }
        }
        if let Some(fragment) = &last {
            let fragment = CommandRepr::Fragment(fragment.repr());
            if payload.push(&fragment).is_ok() {
                sent.push(fragment);
            }
        }
        let len = payload.finish();
        let parsed: Vec<_> = Commands::new(&buffer[..len])
            .map(|item| CommandRepr::parse(&item.unwrap()).unwrap())
            .collect();
        prop_assert_eq!(parsed, sent);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        check_any_payload(&bytes);
    }

    /// Random bytes after a defined CID reach the per-command checks far more often.
    #[test]
    fn random_bytes_after_a_known_cid_never_panic(
        first in prop_oneof![1u8..=5, 7u8..=8],
        rest in vec(any::<u8>(), 0..120),
    ) {
        let mut bytes = vec![first];
        bytes.extend(rest);
        check_any_payload(&bytes);
    }
}

/// Iterates any FRMPayload; every command that parses must emit and parse back the same.
fn check_any_payload(bytes: &[u8]) {
    let mut consumed = 0;
    for item in Commands::new(bytes) {
        let Ok(command) = item else { break };
        let Ok(repr) = CommandRepr::parse(&command) else {
            assert!(matches!(command, Command::Unknown { .. }));
            break;
        };
        let mut buffer = [0; 300];
        let len = repr.emit(&mut buffer).unwrap();
        assert_eq!(&buffer[..len], &bytes[consumed..consumed + len]);
        consumed += len;
        emit_and_parse(&repr);
    }
}

// ---------------------------------------------------------------------------------------------
// Fragmentation over a lossy, duplicating, reordering link

/// A small deterministic generator, seeded by proptest, for the link's decisions.
struct Link(u64);

impl Link {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

fn frames_of(command: &CommandRepr<'_>, n: usize, fid: u8) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    fragment_into_frames(command, n, fid, |frame| {
        assert!(frame.len() <= n);
        frames.push(frame.to_vec());
    })
    .unwrap();
    frames
}

/// Sends `commands` (FIDs 0, 1, …) as Fragments of at most `n` bytes over a link that drops
/// `drop_percent` and duplicates `duplicate_percent` of the frames and reorders each round; every
/// round retransmits every unfinished command, sometimes at another payload size. Returns the
/// rounds used.
fn transfer(
    commands: &[CommandRepr<'_>],
    n: usize,
    link: &mut Link,
    drop_percent: u64,
    duplicate_percent: u64,
) -> usize {
    let originals: Vec<_> = commands.iter().map(serialize).collect();
    let mut received: Vec<Option<Vec<u8>>> = vec![None; commands.len()];
    let mut reassembler = Reassembler::<4>::new();
    reassembler.bind(commands[0].session().unwrap());
    for round in 1..=200 {
        // A retransmission may go out at another data rate.
        let size = if round == 1 || link.chance(50) {
            n
        } else {
            MIN_PAYLOAD + link.below(MAX_PAYLOAD - MIN_PAYLOAD + 1)
        };
        let mut in_the_air = Vec::new();
        for (fid, command) in commands.iter().enumerate() {
            if received[fid].is_some() {
                continue;
            }
            for frame in frames_of(command, size, fid as u8) {
                if link.chance(drop_percent) {
                    continue;
                }
                if link.chance(duplicate_percent) {
                    in_the_air.push(frame.clone());
                }
                in_the_air.push(frame);
            }
        }
        link.shuffle(&mut in_the_air);
        for frame in &in_the_air {
            let mut items = Commands::new(frame);
            let Some(Ok(Command::Fragment(view))) = items.next() else {
                panic!("not one Fragment: {frame:02x?}");
            };
            assert!(items.next().is_none());
            let fid = usize::from(view.fid());
            match reassembler.push(&view) {
                // A late duplicate of a completed command's fragment starts a new slot, and may
                // complete it again: the receiver sees a retransmitted command, as it would had
                // it arrived whole.
                Ok(Some(bytes)) => {
                    assert_eq!(bytes, &originals[fid][..]);
                    received[fid] = Some(bytes.to_vec());
                }
                Ok(None) | Err(ReassemblyError::Duplicate) => {}
                Err(other) => panic!("N = {n}, round {round}: {other}"),
            }
            if received.iter().all(Option::is_some) {
                // Only late duplicates of the commands completed earlier can still be held.
                assert!(reassembler.in_flight() < commands.len());
                return round;
            }
        }
    }
    panic!("N = {n}: not reassembled in 200 rounds");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every fragmentable command, at every N in 11..=242.
    #[test]
    fn fragment_then_reassemble_at_every_n(
        which in 0..7usize,
        seed in any::<u64>(),
        drop_percent in 0u64..=50,
        duplicate_percent in 0u64..=30,
    ) {
        let command = fragmentable_commands()[which];
        let mut link = Link(seed | 1);
        for n in MIN_PAYLOAD..=MAX_PAYLOAD {
            transfer(&[command], n, &mut link, drop_percent, duplicate_percent);
        }
    }
}

proptest! {
    #[test]
    fn any_fragmentable_command_reassembles(
        command in whole_command().prop_filter("fragmentable", |c| {
            lorapki_wire::cid::is_fragmentable(c.cid())
        }),
        n in MIN_PAYLOAD..=MAX_PAYLOAD,
        seed in any::<u64>(),
    ) {
        let mut link = Link(seed | 1);
        transfer(&[command], n, &mut link, 30, 20);
    }

    /// Up to four commands in flight at once, one FID each, their Fragments interleaved.
    #[test]
    fn several_commands_in_flight(
        picks in vec(0..7usize, 1..=4),
        n in MIN_PAYLOAD..=64,
        seed in any::<u64>(),
    ) {
        let pool = fragmentable_commands();
        let commands: Vec<_> = picks.iter().map(|&i| pool[i]).collect();
        let mut link = Link(seed | 1);
        transfer(&commands, n, &mut link, 25, 15);
    }
}

// ---------------------------------------------------------------------------------------------
// The reassembler against a model written from the spec's rejection table

/// The reassembler's rules, on a plain map of optional bytes.
struct Model {
    session: Session,
    capacity: usize,
    slots: Vec<(u8, [Option<u8>; MAX_COMMAND_LEN])>,
}

impl Model {
    fn push(&mut self, f: &FragmentRepr<'_>) -> Result<Option<Vec<u8>>, ReassemblyError> {
        if f.session != self.session {
            return Err(ReassemblyError::OutOfSession {
                got: f.session,
                expected: Some(self.session),
            });
        }
        if f.fid > 3 || f.data.is_empty() {
            return Err(ReassemblyError::Malformed);
        }
        if f.data.len() > MAX_COMMAND_LEN {
            return Err(ReassemblyError::Oversize);
        }
        let start = usize::from(f.offset);
        let end = start + f.data.len();
        if end > MAX_COMMAND_LEN {
            return Err(ReassemblyError::OutOfRange);
        }
        let existing = self.slots.iter().position(|(fid, _)| *fid == f.fid);
        let old = existing.map_or([None; MAX_COMMAND_LEN], |i| self.slots[i].1);
        if (start..end).any(|i| old[i].is_some_and(|b| b != f.data[i - start])) {
            return Err(ReassemblyError::Inconsistent);
        }
        let mut new = old;
        for (slot, &byte) in new[start..end].iter_mut().zip(f.data) {
            *slot = Some(byte);
        }
        let len = match (new[0], new[1]) {
            (None, _) => None,
            (Some(0x01), _) => Some(51),
            (Some(0x03), _) => Some(50),
            (Some(0x07), None) => Some(3),
            (Some(0x07), Some(h)) if h & 3 == 0 => Some(3),
            (Some(0x02), None) => None,
            (Some(0x02), Some(h)) if h & 3 < 2 => Some(51),
            (Some(0x02), Some(h)) if h & 3 == 2 => Some(49),
            (Some(cid), _) => return Err(ReassemblyError::BadInner { cid }),
        };
        if let Some(len) = len {
            if end > len {
                return Err(ReassemblyError::OutOfRange);
            }
            if old[len..].iter().any(Option::is_some) {
                return Err(ReassemblyError::Inconsistent);
            }
        }
        if (start..end).all(|i| old[i].is_some()) {
            return Err(ReassemblyError::Duplicate);
        }
        let index = match existing {
            Some(index) => index,
            None if self.slots.len() == self.capacity => {
                return Err(ReassemblyError::NoFreeSlot);
            }
            None => {
                self.slots.push((f.fid, new));
                self.slots.len() - 1
            }
        };
        self.slots[index].1 = new;
        match len {
            Some(len) if new[..len].iter().all(Option::is_some) => {
                self.slots.remove(index);
                Ok(Some(new[..len].iter().map(|b| b.unwrap()).collect()))
            }
            _ => Ok(None),
        }
    }
}

/// A fragment to push: mostly slices of real commands under a random FID, sometimes corrupted,
/// sometimes anything at all.
fn push_op() -> impl Strategy<Value = OwnedFragment> {
    let slice = (
        0..7usize,
        0u8..8,
        0u8..=3,
        0usize..MAX_COMMAND_LEN,
        1usize..=40,
        0u8..16,
    )
        .prop_map(|(which, same, fid, offset, len, corrupt)| {
            // Mostly one command per FID, so that commands complete; sometimes another one, so
            // that bytes conflict.
            let which = if same == 0 {
                which
            } else {
                usize::from(fid) + 1
            };
            let command = serialize(&fragmentable_commands()[which]);
            let start = offset.min(command.len() - 1);
            let end = (start + len).min(command.len());
            let mut data = command[start..end].to_vec();
            if corrupt == 0 {
                data[0] ^= 0x01;
            }
            OwnedFragment {
                session: session(17),
                fid,
                offset: start as u8,
                data,
            }
        });
    let anything = (
        prop_oneof![Just(session(17)), any_session()],
        0u8..=5,
        prop_oneof![0u8..=60, any::<u8>()],
        vec(any::<u8>(), 0..60),
    )
        .prop_map(|(session, fid, offset, data)| OwnedFragment {
            session,
            fid,
            offset,
            data,
        });
    prop_oneof![8 => slice, 1 => anything]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn reassembler_follows_the_rejection_table(ops in vec(push_op(), 1..80)) {
        // Three slots for four FIDs, so that NoFreeSlot can happen.
        let mut reassembler = Reassembler::<3>::new();
        reassembler.bind(session(17));
        let mut model = Model { session: session(17), capacity: 3, slots: Vec::new() };
        for op in &ops {
            let expected = model.push(&op.repr());
            let actual = reassembler.push_repr(&op.repr()).map(|done| done.map(<[u8]>::to_vec));
            prop_assert_eq!(&actual, &expected, "{:?}", op);
            prop_assert_eq!(reassembler.in_flight(), model.slots.len());
        }
    }
}
