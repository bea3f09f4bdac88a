//! Helpers shared by the integration tests.
// Each test binary uses a different subset.
#![allow(dead_code)]

use lorapki_wire::{
    AbortRepr, CommandRepr, Part, PubKeyAnsRepr, PubKeyReqRepr, Reason, Session, SigVerifyReqRepr,
};

/// Bytes from hex digits; whitespace is ignored.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => panic!("not a hex digit: {}", b as char),
        })
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair[1])
        .collect()
}

pub fn session(value: u8) -> Session {
    Session::new(value).unwrap()
}

/// The fragmentable commands, one of each kind and part, with recognizable contents.
pub fn fragmentable_commands() -> Vec<CommandRepr<'static>> {
    let mut key = [0; 49];
    key.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let mut signature = [0; 96];
    signature
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = 0x80 ^ i as u8);
    let [head, tail] = Part::signature_parts(&signature);
    let [r, s] = SigVerifyReqRepr::chunks(session(17), true, &signature);
    vec![
        CommandRepr::PubKeyReq(PubKeyReqRepr {
            session: session(17),
            version: 1,
            ephemeral: key,
        }),
        CommandRepr::PubKeyAns(PubKeyAnsRepr {
            session: session(17),
            part: Part::EphemeralKey(key),
        }),
        CommandRepr::PubKeyAns(PubKeyAnsRepr {
            session: session(17),
            part: head,
        }),
        CommandRepr::PubKeyAns(PubKeyAnsRepr {
            session: session(17),
            part: tail,
        }),
        CommandRepr::SigVerifyReq(r),
        CommandRepr::SigVerifyReq(s),
        CommandRepr::Abort(AbortRepr {
            session: session(17),
            reason: Reason::GaveUp,
        }),
    ]
}

/// A command's serialization.
pub fn serialize(command: &CommandRepr<'_>) -> Vec<u8> {
    let mut bytes = vec![0; command.buffer_len()];
    assert_eq!(command.emit(&mut bytes), Ok(bytes.len()));
    bytes
}
