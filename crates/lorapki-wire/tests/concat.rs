//! Several commands in one FRMPayload, parsed left to right.
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{hex, session};
use lorapki_wire::{
    Code, Command, CommandRepr, Commands, Error, KeyChangeReqRepr, PayloadBuilder, SigVerifyAnsRepr,
};

/// SigVerifyReq (SESSION 5, C = 1, A = 1) followed by a bare KeyChangeReq.
const SIG_VERIFY_REQ_THEN_KEY_CHANGE_REQ: &str = "
    03 17
    f0 f1 f2 f3 f4 f5 f6 f7 f8 f9 fa fb fc fd fe ff
    00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f
    10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f
    05";

/// SigVerifyAns (SESSION 5, Accepted) followed by PubKeyAns PART 2.
const SIG_VERIFY_ANS_THEN_PUB_KEY_ANS_PART_2: &str = "
    04 14
    02 16
    91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f a0
    a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab ac ad ae af b0
    b1 b2 b3 b4 b5 b6 b7 b8 b9 ba bb bc bd be bf";

fn cids(payload: &[u8]) -> Vec<Result<u8, Error>> {
    Commands::new(payload)
        .map(|item| item.map(|command| command.cid()))
        .collect()
}

#[test]
fn sig_verify_req_then_key_change_req() {
    let payload = hex(SIG_VERIFY_REQ_THEN_KEY_CHANGE_REQ);
    assert_eq!(payload.len(), 51);
    let commands: Vec<_> = Commands::new(&payload).collect::<Result<_, _>>().unwrap();
    let [Command::SigVerifyReq(request), Command::KeyChangeReq(_)] = commands[..] else {
        panic!("{commands:?}");
    };
    assert_eq!(request.session(), session(5));
    assert_eq!((request.chunk(), request.holds_all_parts()), (1, true));
    assert_eq!(request.into_inner(), &payload[..50]);
}

#[test]
fn sig_verify_ans_then_pub_key_ans_part_2_fill_51_bytes() {
    let payload = hex(SIG_VERIFY_ANS_THEN_PUB_KEY_ANS_PART_2);
    assert_eq!(payload.len(), 51);
    let commands: Vec<_> = Commands::new(&payload).collect::<Result<_, _>>().unwrap();
    let [Command::SigVerifyAns(answer), Command::PubKeyAns(part)] = commands[..] else {
        panic!("{commands:?}");
    };
    assert_eq!(answer.code(), Code::Accepted);
    assert_eq!(part.part_index(), 2);
    assert_eq!(part.data().len(), 47);
}

#[test]
fn an_unknown_cid_stops_iteration_and_keeps_the_bytes() {
    let payload = hex("05 06 01 02 05");
    let mut commands = Commands::new(&payload);
    assert!(matches!(
        commands.next(),
        Some(Ok(Command::KeyChangeReq(_)))
    ));
    assert_eq!(
        commands.next(),
        Some(Ok(Command::Unknown {
            cid: 0x06,
            rest: &[0x01, 0x02, 0x05]
        }))
    );
    assert_eq!(commands.next(), None);
    assert_eq!(commands.next(), None, "fused");

    for cid in [0x00, 0x06, 0x09, 0x42, 0xff] {
        assert_eq!(
            Commands::new(&[cid]).collect::<Vec<_>>(),
            [Ok(Command::Unknown { cid, rest: &[] })]
        );
    }
}

#[test]
fn a_truncated_command_stops_iteration() {
    // A SigVerifyAns, then a PubKeyReq cut to 13 bytes: the trailing 0x05 is part of it, not a
    // KeyChangeReq.
    let payload = hex("04 15 01 15 02 00 01 02 03 04 05 06 07 08 05");
    let mut commands = Commands::new(&payload);
    assert!(matches!(
        commands.next(),
        Some(Ok(Command::SigVerifyAns(_)))
    ));
    assert_eq!(
        commands.next(),
        Some(Err(Error::Truncated {
            cid: 0x01,
            needed: 51,
            available: 13
        }))
    );
    assert_eq!(commands.next(), None);
    assert_eq!(commands.remainder(), &payload[2..]);
}

#[test]
fn a_fragment_runs_to_the_end() {
    // Bytes after the Fragment's header are its data, even when they look like commands.
    let payload = hex("04 14 08 14 05 aa bb 05");
    assert_eq!(cids(&payload), [Ok(0x04), Ok(0x08)]);
    let Some(Ok(Command::Fragment(fragment))) = Commands::new(&payload).nth(1) else {
        panic!();
    };
    assert_eq!(fragment.data(), &[0xaa, 0xbb, 0x05]);
}

#[test]
fn many_small_commands() {
    let payload = hex("05 04 14 07 14 06 05 04 fe 05");
    assert_eq!(
        cids(&payload),
        [Ok(0x05), Ok(0x04), Ok(0x07), Ok(0x05), Ok(0x04), Ok(0x05)]
    );
    assert_eq!(cids(&[]), []);
}

#[test]
fn the_builder_concatenates_what_the_iterator_splits() {
    let key_change = CommandRepr::KeyChangeReq(KeyChangeReqRepr);
    let answer = CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
        session: session(9),
        code: Code::Rejected,
    });
    let mut buffer = [0xa5; 11];
    let mut payload = PayloadBuilder::new(&mut buffer);
    for command in [
        answer, key_change, answer, key_change, answer, key_change, answer,
    ] {
        payload.push(&command).unwrap();
    }
    assert_eq!(payload.remaining(), 0);
    assert_eq!(
        payload.push(&key_change),
        Err(Error::NoSpace {
            needed: 1,
            available: 0
        })
    );
    let len = payload.finish();
    assert_eq!(len, 11);
    assert_eq!(buffer, *hex("04 25 05 04 25 05 04 25 05 04 25"));
    let parsed: Vec<_> = Commands::new(&buffer)
        .map(|item| CommandRepr::parse(&item.unwrap()).unwrap())
        .collect();
    assert_eq!(
        parsed,
        [
            answer, key_change, answer, key_change, answer, key_change, answer
        ]
    );
}
