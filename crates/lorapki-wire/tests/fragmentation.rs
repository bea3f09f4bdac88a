//! Fragmenter, Reassembler and PayloadBuilder: the examples behind each rule and each error.
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{fragmentable_commands, hex, serialize, session};
use lorapki_wire::{
    AbortRepr, Command, CommandRepr, Commands, Error, Fragment, FragmentRepr, Fragmenter,
    KeyChangeReqRepr, PayloadBuilder, Reason, Reassembler, ReassemblyError, SigVerifyAnsRepr,
    fragment_into_frames,
};

fn fragment(session_value: u8, fid: u8, offset: u8, data: &[u8]) -> FragmentRepr<'_> {
    FragmentRepr {
        session: session(session_value),
        fid,
        offset,
        data,
    }
}

fn bound(session_value: u8) -> Reassembler<4> {
    let mut reassembler = Reassembler::new();
    reassembler.bind(session(session_value));
    reassembler
}

/// A PubKeyReq of session 17 (the first of the common commands).
fn pub_key_req() -> Vec<u8> {
    serialize(&fragmentable_commands()[0])
}

#[test]
fn reassembles_a_pub_key_req_at_n_11() {
    let original = pub_key_req();
    let mut frames = Vec::new();
    let count = fragment_into_frames(&fragmentable_commands()[0], 11, 1, |frame| {
        frames.push(frame.to_vec())
    })
    .unwrap();
    // 8 data bytes per 11-byte Fragment: ceil(51 / 8) = 7.
    assert_eq!(count, 7);
    assert!(frames.iter().all(|frame| frame.len() <= 11));
    assert_eq!(frames[0], hex("08 45 00 01 45 00 01 02 03 04 05"));
    let mut reassembler = bound(17);
    for (i, frame) in frames.iter().enumerate() {
        let Some(Ok(Command::Fragment(view))) = Commands::new(frame).next() else {
            panic!("frame {i} is not a Fragment");
        };
        let result = reassembler.push(&view).unwrap();
        if i + 1 < frames.len() {
            assert_eq!(result, None);
            assert_eq!(reassembler.in_flight(), 1);
        } else {
            assert_eq!(result, Some(&original[..]));
        }
    }
    assert_eq!(reassembler.in_flight(), 0, "a completed slot is freed");
}

#[test]
fn out_of_session() {
    let mut reassembler = Reassembler::<4>::new();
    let data = [0x01, 0x45];
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 0, &data)),
        Err(ReassemblyError::OutOfSession {
            got: session(17),
            expected: None
        })
    );
    reassembler.bind(session(18));
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 0, &data)),
        Err(ReassemblyError::OutOfSession {
            got: session(17),
            expected: Some(session(18))
        })
    );
    assert_eq!(reassembler.session(), Some(session(18)));
}

#[test]
fn out_of_range() {
    let mut reassembler = bound(17);
    // Past the longest command.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 50, &[1, 2])),
        Err(ReassemblyError::OutOfRange)
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 255, &[1])),
        Err(ReassemblyError::OutOfRange)
    );
    // Past the inner command, once its length is known: PubKeyAns PART 2 is 49 bytes.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 0, &[0x02, 0x46])),
        Ok(None)
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 45, &[1, 2, 3, 4, 5])),
        Err(ReassemblyError::OutOfRange)
    );
    // The inner CID alone fixes the length of all but a PubKeyAns: a SigVerifyReq is 50 bytes.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 3, 0, &[0x03])),
        Ok(None)
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 3, 49, &[1, 2])),
        Err(ReassemblyError::OutOfRange)
    );
    // The same when the length arrives with the offending bytes: an Abort is 3 bytes.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 1, 0, &[0x07, 0x44, 0x06, 0x00])),
        Err(ReassemblyError::OutOfRange)
    );
    assert_eq!(
        reassembler.in_flight(),
        2,
        "refused fragments claim no slot"
    );
}

#[test]
fn oversize() {
    let mut reassembler = bound(17);
    let mut data = pub_key_req();
    data.push(0);
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 0, &data)),
        Err(ReassemblyError::Oversize)
    );
}

#[test]
fn duplicate() {
    let mut reassembler = bound(17);
    let command = pub_key_req();
    let first = fragment(17, 0, 0, &command[..20]);
    assert_eq!(reassembler.push_repr(&first), Ok(None));
    assert_eq!(
        reassembler.push_repr(&first),
        Err(ReassemblyError::Duplicate)
    );
    // A sub-range already held is a duplicate too.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 5, &command[5..10])),
        Err(ReassemblyError::Duplicate)
    );
    // An overlap that brings new bytes is not.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 10, &command[10..30])),
        Ok(None)
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 30, &command[30..])),
        Ok(Some(&command[..]))
    );
}

#[test]
fn inconsistent() {
    let mut reassembler = bound(17);
    let command = pub_key_req();
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 0, &command[..20])),
        Ok(None)
    );
    let mut altered = command[10..30].to_vec();
    altered[5] ^= 1;
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 10, &altered)),
        Err(ReassemblyError::Inconsistent)
    );
    // The fragment was dropped, the slot kept: the real bytes still complete it.
    assert_eq!(reassembler.in_flight(), 1);
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 20, &command[20..])),
        Ok(Some(&command[..]))
    );
}

#[test]
fn bytes_buffered_past_the_inner_length_are_inconsistent() {
    let mut reassembler = bound(17);
    // Before the header arrives, bytes at 49 and 50 are buffered…
    assert_eq!(
        reassembler.push_repr(&fragment(17, 2, 49, &[0xaa, 0xbb])),
        Ok(None)
    );
    // …but a PubKeyAns PART 2 is only 49 bytes long.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 2, 0, &[0x02, 0x46, 0x00])),
        Err(ReassemblyError::Inconsistent)
    );
}

#[test]
fn no_free_slot() {
    let mut reassembler = Reassembler::<2>::new();
    reassembler.bind(session(17));
    let command = pub_key_req();
    for fid in 0..2 {
        assert_eq!(
            reassembler.push_repr(&fragment(17, fid, 0, &command[..8])),
            Ok(None)
        );
    }
    assert_eq!(
        reassembler.push_repr(&fragment(17, 2, 0, &command[..8])),
        Err(ReassemblyError::NoFreeSlot)
    );
    // The FIDs in flight still progress.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 1, 8, &command[8..])),
        Ok(Some(&command[..]))
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 2, 0, &command[..8])),
        Ok(None)
    );
}

#[test]
fn bad_inner() {
    let mut reassembler = bound(17);
    for inner in [0x08, 0x04, 0x05, 0x06, 0x00, 0xff] {
        assert_eq!(
            reassembler.push_repr(&fragment(17, 0, 0, &[inner, 0x44])),
            Err(ReassemblyError::BadInner { cid: inner })
        );
    }
    // The inner header may come in a later fragment than the inner CID.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 0, &[0x02])),
        Ok(None)
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 1, &[0x47, 0x00])),
        Err(ReassemblyError::BadInner { cid: 0x02 })
    );
    // An Abort's INDEX must be 0, even once its length is known from its CID.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 2, 0, &[0x07])),
        Ok(None)
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 2, 1, &[0x45])),
        Err(ReassemblyError::BadInner { cid: 0x07 })
    );
    // Or the CID later than the header.
    assert_eq!(
        reassembler.push_repr(&fragment(17, 1, 1, &[0x45, 0x00])),
        Ok(None)
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 1, 0, &[0x05])),
        Err(ReassemblyError::BadInner { cid: 0x05 })
    );
}

#[test]
fn malformed() {
    let mut reassembler = bound(17);
    assert_eq!(
        reassembler.push(&Fragment::new_unchecked(&[0x08, 0x44, 0x00][..])),
        Err(ReassemblyError::Malformed)
    );
    assert_eq!(
        reassembler.push(&Fragment::new_unchecked(&[0x08, 0x44, 0x00, 0x08][..])),
        Err(ReassemblyError::BadInner { cid: 0x08 })
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 4, 0, &[0x01])),
        Err(ReassemblyError::Malformed)
    );
    assert_eq!(
        reassembler.push_repr(&fragment(17, 0, 0, &[])),
        Err(ReassemblyError::Malformed)
    );
}

#[test]
fn bind_and_clear_drop_partial_commands() {
    let mut reassembler = bound(17);
    let command = pub_key_req();
    reassembler
        .push_repr(&fragment(17, 0, 0, &command[..8]))
        .unwrap();
    reassembler
        .push_repr(&fragment(17, 1, 0, &command[..8]))
        .unwrap();
    assert_eq!(reassembler.in_flight(), 2);
    reassembler.clear();
    assert_eq!(reassembler.in_flight(), 0);
    assert_eq!(reassembler.session(), Some(session(17)));
    reassembler
        .push_repr(&fragment(17, 0, 0, &command[..8]))
        .unwrap();
    reassembler.bind(session(18));
    assert_eq!(reassembler.in_flight(), 0);
}

#[test]
fn interleaved_fids_complete_independently() {
    // The three PubKeyAns parts, FIDs 0, 1, 2, Fragments interleaved.
    let commands = &fragmentable_commands()[1..4];
    let originals: Vec<_> = commands.iter().map(serialize).collect();
    let mut per_command = Vec::new();
    for (fid, command) in commands.iter().enumerate() {
        let mut frames = Vec::new();
        fragment_into_frames(command, 11, fid as u8, |frame| frames.push(frame.to_vec())).unwrap();
        per_command.push(frames);
    }
    let mut reassembler = bound(17);
    let mut completed = vec![None; 3];
    for round in 0..7 {
        for (fid, frames) in per_command.iter().enumerate() {
            let Some(frame) = frames.get(round) else {
                continue;
            };
            let view = Fragment::new_checked(&frame[..]).unwrap();
            if let Some(bytes) = reassembler.push(&view).unwrap() {
                completed[fid] = Some(bytes.to_vec());
            }
        }
    }
    assert_eq!(
        completed,
        originals.into_iter().map(Some).collect::<Vec<_>>()
    );
}

#[test]
fn fragmenter_refuses_what_is_not_one_fragmentable_command() {
    let command = pub_key_req();
    let s17 = session(17);
    assert_eq!(
        Fragmenter::new(&[], s17, 0).map(drop),
        Err(Error::BadInner { cid: 0 })
    );
    assert_eq!(
        Fragmenter::new(&command[..1], s17, 0).map(drop),
        Err(Error::BadInner { cid: 0x01 })
    );
    assert_eq!(
        Fragmenter::new(&command[..50], s17, 0).map(drop),
        Err(Error::BadInner { cid: 0x01 })
    );
    assert_eq!(
        Fragmenter::new(&[0x04, 0x44], s17, 0).map(drop),
        Err(Error::BadInner { cid: 0x04 })
    );
    assert_eq!(
        Fragmenter::new(&command, s17, 4).map(drop),
        Err(Error::InvalidRepr {
            cid: 0x08,
            field: "fid"
        })
    );
    assert_eq!(
        Fragmenter::new(&command, session(18), 0).map(drop),
        Err(Error::InvalidRepr {
            cid: 0x08,
            field: "session"
        })
    );
}

#[test]
fn fragmenter_fills_each_buffer_and_restarts() {
    let command = pub_key_req();
    let mut fragmenter = Fragmenter::new(&command, session(17), 3).unwrap();
    assert_eq!(fragmenter.fragments_needed(11), Some(7));
    assert_eq!(fragmenter.fragments_needed(54), Some(1));
    assert_eq!(fragmenter.fragments_needed(3), None);
    let mut buffer = [0xa5; 64];
    assert_eq!(
        fragmenter.emit_next(&mut buffer[..3]),
        Err(Error::NoSpace {
            needed: 4,
            available: 3
        })
    );
    assert_eq!(fragmenter.emit_next(&mut buffer[..4]), Ok(4));
    assert_eq!(&buffer[..5], &[0x08, 0x47, 0x00, 0x01, 0xa5]);
    assert_eq!(fragmenter.emit_next(&mut buffer[..20]), Ok(20));
    assert_eq!(&buffer[..4], &[0x08, 0x47, 0x01, command[1]]);
    assert_eq!(fragmenter.emitted(), 18);
    // The rest is 33 bytes: a large buffer is not filled past the command.
    assert_eq!(fragmenter.emit_next(&mut buffer), Ok(36));
    assert_eq!(buffer[36], 0xa5);
    assert!(fragmenter.is_done());
    assert_eq!(fragmenter.emit_next(&mut buffer), Ok(0));
    fragmenter.restart();
    assert_eq!(fragmenter.remaining(), 51);
    assert_eq!(fragmenter.emit_next(&mut buffer), Ok(54));
    assert_eq!(&buffer[3..54], &command[..]);
}

#[test]
fn builder_puts_whole_commands_first_and_a_fragment_last() {
    let abort = CommandRepr::Abort(AbortRepr {
        session: session(17),
        reason: Reason::RateLimited,
    });
    let command = pub_key_req();
    let mut fragmenter = Fragmenter::new(&command, session(17), 0).unwrap();
    let mut buffer = [0xa5; 11];
    let mut payload = PayloadBuilder::new(&mut buffer);
    payload.push(&abort).unwrap();
    assert_eq!(payload.remaining(), 8);
    assert_eq!(payload.push_fragment(&mut fragmenter), Ok(8));
    assert_eq!(payload.remaining(), 0);
    assert_eq!(
        payload.push(&CommandRepr::KeyChangeReq(KeyChangeReqRepr)),
        Err(Error::FragmentNotLast)
    );
    assert_eq!(
        payload.push_fragment(&mut fragmenter),
        Err(Error::FragmentNotLast)
    );
    assert_eq!(payload.finish(), 11);
    assert_eq!(buffer, *hex("07 44 03 08 44 00 01 45 00 01 02"));

    // Too little room for a Fragment.
    let mut buffer = [0; 11];
    let mut payload = PayloadBuilder::new(&mut buffer);
    for _ in 0..4 {
        payload
            .push(&CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
                session: session(17),
                code: lorapki_wire::Code::Accepted,
            }))
            .unwrap();
    }
    assert_eq!(
        payload.push_fragment(&mut fragmenter),
        Err(Error::NoSpace {
            needed: 4,
            available: 3
        })
    );
    assert_eq!(payload.len(), 8);
    assert!(!payload.is_empty());
    assert_eq!(payload.as_bytes().len(), 8);
}

#[test]
fn fragment_into_frames_refuses_non_fragmentable_commands() {
    let sink = |_: &[u8]| {};
    assert_eq!(
        fragment_into_frames(&CommandRepr::KeyChangeReq(KeyChangeReqRepr), 11, 0, sink),
        Err(Error::BadInner { cid: 0x05 })
    );
    assert_eq!(
        fragment_into_frames(
            &CommandRepr::Fragment(fragment(17, 0, 9, &[1])),
            11,
            0,
            sink
        ),
        Err(Error::BadInner { cid: 0x08 })
    );
    assert_eq!(
        fragment_into_frames(&fragmentable_commands()[0], 3, 0, sink),
        Err(Error::NoSpace {
            needed: 4,
            available: 3
        })
    );
}

#[test]
fn reassembly_errors_convert_into_the_crate_error() {
    let error: Error = ReassemblyError::NoFreeSlot.into();
    assert_eq!(error, Error::Reassembly(ReassemblyError::NoFreeSlot));
    assert!(core::error::Error::source(&error).is_some());
}
