//! Golden bytes for every command, written by hand from the frame table: parse, emit into a
//! buffer pre-filled with 0xa5, every truncation, and the malformed headers.
// Test code: a failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{hex, session};
use lorapki_wire::{
    Abort, AbortRepr, Code, Command, CommandRepr, Commands, Error, Fragment, FragmentRepr,
    KeyChangeReq, KeyChangeReqRepr, Part, PubKeyAns, PubKeyAnsRepr, PubKeyReq, PubKeyReqRepr,
    Reason, SigVerifyAns, SigVerifyAnsRepr, SigVerifyReq, SigVerifyReqRepr,
};

const EPH_D: &str = "
    02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e
    0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e
    1f 20 21 22 23 24 25 26 27 28 29 2a 2b 2c 2d 2e
    2f";
const EPH_S: &str = "
    03 30 31 32 33 34 35 36 37 38 39 3a 3b 3c 3d 3e
    3f 40 41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e
    4f 50 51 52 53 54 55 56 57 58 59 5a 5b 5c 5d 5e
    5f";
/// SIG_S[0..49].
const SIG_S_HEAD: &str = "
    60 61 62 63 64 65 66 67 68 69 6a 6b 6c 6d 6e 6f
    70 71 72 73 74 75 76 77 78 79 7a 7b 7c 7d 7e 7f
    80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f
    90";
/// SIG_S[49..96].
const SIG_S_TAIL: &str = "
    91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f a0
    a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab ac ad ae af b0
    b1 b2 b3 b4 b5 b6 b7 b8 b9 ba bb bc bd be bf";
/// SIG_D[0..48], r.
const SIG_D_R: &str = "
    c0 c1 c2 c3 c4 c5 c6 c7 c8 c9 ca cb cc cd ce cf
    d0 d1 d2 d3 d4 d5 d6 d7 d8 d9 da db dc dd de df
    e0 e1 e2 e3 e4 e5 e6 e7 e8 e9 ea eb ec ed ee ef";
/// SIG_D[48..96], s.
const SIG_D_S: &str = "
    f0 f1 f2 f3 f4 f5 f6 f7 f8 f9 fa fb fc fd fe ff
    00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f
    10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f";

fn array<const N: usize>(text: &str) -> [u8; N] {
    hex(text).try_into().unwrap()
}

/// Fragment data must outlive the representation that borrows it.
static FRAGMENT_FIRST: [u8; 7] = [0x01, 0x15, 0x02, 0x00, 0x01, 0x02, 0x03];
static FRAGMENT_MIDDLE: [u8; 3] = [0x04, 0x05, 0x06];
static FRAGMENT_LAST: [u8; 1] = [0x2f];

/// Every golden frame: its bytes, written from the table, and what they mean.
fn goldens() -> Vec<(String, CommandRepr<'static>)> {
    let s5 = session(5);
    let mut goldens = vec![
        // PubKeyReq, SESSION 5, VERSION 1: HDR = 5 << 2 | 1 = 0x15.
        (
            format!("01 15 {EPH_D}"),
            CommandRepr::PubKeyReq(PubKeyReqRepr {
                session: s5,
                version: 1,
                ephemeral: array(EPH_D),
            }),
        ),
        // PubKeyReq, SESSION 63, VERSION 3: every header bit set.
        (
            format!("01 ff {EPH_D}"),
            CommandRepr::PubKeyReq(PubKeyReqRepr {
                session: session(63),
                version: 3,
                ephemeral: array(EPH_D),
            }),
        ),
        // PubKeyAns PART 0, 1, 2 of SESSION 5: HDR 0x14, 0x15, 0x16.
        (
            format!("02 14 {EPH_S}"),
            CommandRepr::PubKeyAns(PubKeyAnsRepr {
                session: s5,
                part: Part::EphemeralKey(array(EPH_S)),
            }),
        ),
        (
            format!("02 15 {SIG_S_HEAD}"),
            CommandRepr::PubKeyAns(PubKeyAnsRepr {
                session: s5,
                part: Part::SignatureHead(array(SIG_S_HEAD)),
            }),
        ),
        (
            format!("02 16 {SIG_S_TAIL}"),
            CommandRepr::PubKeyAns(PubKeyAnsRepr {
                session: s5,
                part: Part::SignatureTail(array(SIG_S_TAIL)),
            }),
        ),
        // SigVerifyReq, SESSION 5, INDEX = A << 1 | C.
        (
            format!("03 14 {SIG_D_R}"),
            CommandRepr::SigVerifyReq(SigVerifyReqRepr {
                session: s5,
                chunk: 0,
                holds_all_parts: false,
                data: array(SIG_D_R),
            }),
        ),
        (
            format!("03 15 {SIG_D_S}"),
            CommandRepr::SigVerifyReq(SigVerifyReqRepr {
                session: s5,
                chunk: 1,
                holds_all_parts: false,
                data: array(SIG_D_S),
            }),
        ),
        (
            format!("03 16 {SIG_D_R}"),
            CommandRepr::SigVerifyReq(SigVerifyReqRepr {
                session: s5,
                chunk: 0,
                holds_all_parts: true,
                data: array(SIG_D_R),
            }),
        ),
        (
            format!("03 17 {SIG_D_S}"),
            CommandRepr::SigVerifyReq(SigVerifyReqRepr {
                session: s5,
                chunk: 1,
                holds_all_parts: true,
                data: array(SIG_D_S),
            }),
        ),
        // KeyChangeReq: bare.
        ("05".into(), CommandRepr::KeyChangeReq(KeyChangeReqRepr)),
        // Fragments of SESSION 5, FID 2 (FHDR 0x16), of a PubKeyReq.
        (
            "08 16 00 01 15 02 00 01 02 03".into(),
            CommandRepr::Fragment(FragmentRepr {
                session: s5,
                fid: 2,
                offset: 0,
                data: &FRAGMENT_FIRST,
            }),
        ),
        (
            "08 16 07 04 05 06".into(),
            CommandRepr::Fragment(FragmentRepr {
                session: s5,
                fid: 2,
                offset: 7,
                data: &FRAGMENT_MIDDLE,
            }),
        ),
        (
            "08 fc 32 2f".into(),
            CommandRepr::Fragment(FragmentRepr {
                session: session(63),
                fid: 0,
                offset: 50,
                data: &FRAGMENT_LAST,
            }),
        ),
    ];
    // SigVerifyAns, RESULT = SESSION << 2 | CODE.
    for (result, session_value, code) in [
        ("14", 5, Code::Accepted),
        ("15", 5, Code::Rejected),
        ("16", 5, Code::Refused),
        ("17", 5, Code::Unknown(3)),
        ("fe", 63, Code::Refused),
        ("00", 0, Code::Accepted),
    ] {
        goldens.push((
            format!("04 {result}"),
            CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
                session: session(session_value),
                code,
            }),
        ));
    }
    // Abort, SESSION 5, INDEX 0 (HDR 0x14), every REASON.
    for (byte, reason) in [
        ("01", Reason::UnsupportedVersion),
        ("02", Reason::UnknownDevice),
        ("03", Reason::RateLimited),
        ("04", Reason::StaleSession),
        ("05", Reason::AuthenticationFailed),
        ("06", Reason::GaveUp),
        ("07", Reason::ServerError),
        ("08", Reason::Malformed),
        ("00", Reason::Unknown(0x00)),
        ("09", Reason::Unknown(0x09)),
        ("ff", Reason::Unknown(0xff)),
    ] {
        goldens.push((
            format!("07 14 {byte}"),
            CommandRepr::Abort(AbortRepr {
                session: s5,
                reason,
            }),
        ));
    }
    goldens
}

#[test]
fn golden_lengths_match_the_table() {
    for (text, repr) in goldens() {
        let expected = match repr {
            CommandRepr::PubKeyReq(_) => 51,
            CommandRepr::PubKeyAns(PubKeyAnsRepr {
                part: Part::SignatureTail(_),
                ..
            }) => 49,
            CommandRepr::PubKeyAns(_) => 51,
            CommandRepr::SigVerifyReq(_) => 50,
            CommandRepr::SigVerifyAns(_) => 2,
            CommandRepr::KeyChangeReq(_) => 1,
            CommandRepr::Abort(_) => 3,
            CommandRepr::Fragment(fragment) => 3 + fragment.data.len(),
        };
        assert_eq!(hex(&text).len(), expected, "{text}");
        assert_eq!(repr.buffer_len(), expected, "{text}");
    }
}

#[test]
fn golden_bytes_parse() {
    for (text, expected) in goldens() {
        let bytes = hex(&text);
        let mut commands = Commands::new(&bytes);
        let command = commands.next().unwrap().unwrap();
        assert_eq!(command.cid(), bytes[0]);
        assert_eq!(CommandRepr::parse(&command), Ok(expected), "{text}");
        assert_eq!(command.session(), expected.session());
        assert!(commands.next().is_none(), "{text}");
        assert!(commands.remainder().is_empty());
    }
}

#[test]
fn golden_bytes_emit_into_a5() {
    for (text, repr) in goldens() {
        let golden = hex(&text);
        let mut buffer = [0xa5; 64];
        assert_eq!(repr.emit(&mut buffer), Ok(golden.len()), "{text}");
        assert_eq!(&buffer[..golden.len()], &golden[..], "{text}");
        assert!(buffer[golden.len()..].iter().all(|&b| b == 0xa5), "{text}");
    }
}

#[test]
fn emit_into_a_short_buffer_is_no_space() {
    for (text, repr) in goldens() {
        let len = hex(&text).len();
        let mut buffer = vec![0xa5; len - 1];
        assert_eq!(
            repr.emit(&mut buffer),
            Err(Error::NoSpace {
                needed: len,
                available: len - 1
            }),
            "{text}"
        );
        assert!(buffer.iter().all(|&b| b == 0xa5), "nothing written: {text}");
    }
}

/// The error for the first `available` bytes of a command of CID `cid` and length `len`.
fn truncated(cid: u8, len: usize, available: usize) -> Error {
    let needed = match cid {
        0x02 if available < 2 => 2,
        0x08 => 4,
        _ => len,
    };
    Error::Truncated {
        cid,
        needed,
        available,
    }
}

/// The shortest length at which a command is no longer truncated.
fn minimum_len(cid: u8, len: usize) -> usize {
    if cid == 0x08 { 4 } else { len }
}

#[test]
fn every_truncation_is_an_error_in_the_iterator() {
    for (text, _) in goldens() {
        let golden = hex(&text);
        let cid = golden[0];
        assert!(Commands::new(&golden[..0]).next().is_none());
        for available in 1..minimum_len(cid, golden.len()) {
            let mut commands = Commands::new(&golden[..available]);
            assert_eq!(
                commands.next(),
                Some(Err(truncated(cid, golden.len(), available))),
                "{text} cut to {available}"
            );
            assert_eq!(commands.next(), None);
            assert_eq!(commands.remainder(), &golden[..available]);
        }
    }
}

/// `new_checked` of the view for the golden's CID.
fn view_check(bytes: &[u8]) -> Result<(), Error> {
    match bytes.first().copied().unwrap_or_default() {
        0x01 => PubKeyReq::new_checked(bytes).map(drop),
        0x02 => PubKeyAns::new_checked(bytes).map(drop),
        0x03 => SigVerifyReq::new_checked(bytes).map(drop),
        0x04 => SigVerifyAns::new_checked(bytes).map(drop),
        0x05 => KeyChangeReq::new_checked(bytes).map(drop),
        0x07 => Abort::new_checked(bytes).map(drop),
        0x08 => Fragment::new_checked(bytes).map(drop),
        other => panic!("no view for CID {other:#04x}"),
    }
}

#[test]
fn every_truncation_is_an_error_in_the_views() {
    for (text, _) in goldens() {
        let golden = hex(&text);
        let cid = golden[0];
        assert_eq!(view_check(&golden), Ok(()));
        for available in 1..minimum_len(cid, golden.len()) {
            assert_eq!(
                view_check(&golden[..available]),
                Err(truncated(cid, golden.len(), available)),
                "{text} cut to {available}"
            );
        }
    }
    // An empty buffer holds no CID to dispatch on: try each view.
    assert_eq!(PubKeyReq::new_checked(&[][..]), Err(truncated(0x01, 51, 0)));
    assert_eq!(PubKeyAns::new_checked(&[][..]), Err(truncated(0x02, 51, 0)));
    assert_eq!(
        SigVerifyReq::new_checked(&[][..]),
        Err(truncated(0x03, 50, 0))
    );
    assert_eq!(
        SigVerifyAns::new_checked(&[][..]),
        Err(truncated(0x04, 2, 0))
    );
    assert_eq!(
        KeyChangeReq::new_checked(&[][..]),
        Err(truncated(0x05, 1, 0))
    );
    assert_eq!(Abort::new_checked(&[][..]), Err(truncated(0x07, 3, 0)));
    assert_eq!(Fragment::new_checked(&[][..]), Err(truncated(0x08, 4, 0)));
}

#[test]
fn views_read_the_golden_fields() {
    let bytes = hex(&format!("01 15 {EPH_D}"));
    let frame = PubKeyReq::new_checked(&bytes[..]).unwrap();
    assert_eq!(frame.session(), session(5));
    assert_eq!(frame.version(), 1);
    assert_eq!(frame.ephemeral(), &hex(EPH_D)[..]);
    assert_eq!(frame.as_bytes(), &bytes[..]);

    let bytes = hex(&format!("02 16 {SIG_S_TAIL} ee ee"));
    let frame = PubKeyAns::new_checked(&bytes[..]).unwrap();
    assert_eq!(frame.part_index(), 2);
    assert_eq!(frame.as_bytes().len(), 49);
    assert_eq!(frame.data(), &hex(SIG_S_TAIL)[..]);
    assert_eq!(
        frame.as_bytes(),
        &bytes[..49],
        "bytes past the command are ignored"
    );

    let bytes = hex(&format!("03 16 {SIG_D_R}"));
    let frame = SigVerifyReq::new_checked(&bytes[..]).unwrap();
    assert_eq!((frame.chunk(), frame.holds_all_parts()), (0, true));
    assert_eq!(frame.data(), &hex(SIG_D_R)[..]);

    let frame = SigVerifyAns::new_checked([0x04, 0xfe]).unwrap();
    assert_eq!(
        (frame.session(), frame.code()),
        (session(63), Code::Refused)
    );

    let frame = Abort::new_checked([0x07, 0x14, 0x04]).unwrap();
    assert_eq!(
        (frame.session(), frame.reason()),
        (session(5), Reason::StaleSession)
    );

    let frame = Fragment::new_checked([0x08, 0x16, 0x07, 0x04, 0x05, 0x06]).unwrap();
    assert_eq!(
        (frame.session(), frame.fid(), frame.offset()),
        (session(5), 2, 7)
    );
    assert_eq!(frame.data(), &[0x04, 0x05, 0x06]);
}

#[test]
fn a_view_over_another_command_is_unexpected_cid() {
    let abort = [0x07, 0x14, 0x04];
    let expected = |cid| {
        Err(Error::UnexpectedCid {
            expected: cid,
            found: 0x07,
        })
    };
    assert_eq!(PubKeyReq::new_checked(abort).map(drop), expected(0x01));
    assert_eq!(PubKeyAns::new_checked(abort).map(drop), expected(0x02));
    assert_eq!(SigVerifyReq::new_checked(abort).map(drop), expected(0x03));
    assert_eq!(SigVerifyAns::new_checked(abort).map(drop), expected(0x04));
    assert_eq!(KeyChangeReq::new_checked(abort).map(drop), expected(0x05));
    assert_eq!(Fragment::new_checked(abort).map(drop), expected(0x08));
    assert_eq!(
        Abort::new_checked([0x05]).map(drop),
        Err(Error::UnexpectedCid {
            expected: 0x07,
            found: 0x05
        })
    );
}

/// The first item of the iterator, without the command.
fn first(bytes: &[u8]) -> Option<Result<(), Error>> {
    Commands::new(bytes).next().map(|item| item.map(drop))
}

#[test]
fn pub_key_ans_part_3_is_a_bad_header() {
    let expected = Err(Error::BadHeader {
        cid: 0x02,
        header: 0x17,
    });
    // Whatever follows the header, and however much.
    for text in ["02 17", "02 17 00", &format!("02 17 {EPH_S}")] {
        let bytes = hex(text);
        assert_eq!(first(&bytes), Some(expected), "{text}");
        assert_eq!(PubKeyAns::new_checked(&bytes[..]).map(drop), expected);
    }
}

#[test]
fn abort_with_a_nonzero_index_is_a_bad_header() {
    for header in [0x15, 0x16, 0x17, 0x01, 0xff] {
        let bytes = [0x07, header, 0x04];
        let expected = Err(Error::BadHeader { cid: 0x07, header });
        assert_eq!(first(&bytes), Some(expected));
        assert_eq!(Abort::new_checked(bytes).map(drop), expected);
        // Known as soon as the header is there.
        assert_eq!(Abort::new_checked(&bytes[..2]).map(drop), expected);
    }
}

#[test]
fn fragment_with_empty_data_is_truncated() {
    let bytes = hex("08 16 00");
    assert_eq!(
        Commands::new(&bytes).next(),
        Some(Err(Error::Truncated {
            cid: 0x08,
            needed: 4,
            available: 3
        }))
    );
}

#[test]
fn fragment_of_a_non_fragmentable_inner_command_is_bad_inner() {
    // Inner CIDs that never travel in Fragments: a Fragment, the bare commands, unknown ones.
    for inner in [0x08, 0x04, 0x05, 0x00, 0x06, 0x09, 0xff] {
        for bytes in [
            vec![0x08, 0x14, 0x00, inner],
            vec![0x08, 0x14, 0x00, inner, 0x14, 0x00],
        ] {
            let expected = Err(Error::BadInner { cid: inner });
            assert_eq!(first(&bytes), Some(expected), "{bytes:02x?}");
            assert_eq!(Fragment::new_checked(&bytes[..]).map(drop), expected);
        }
    }
    // A fragmentable CID with an invalid inner header: PubKeyAns PART 3, Abort INDEX 1.
    for (inner, header) in [(0x02, 0x17), (0x07, 0x15)] {
        let bytes = [0x08, 0x14, 0x00, inner, header, 0x00];
        assert_eq!(first(&bytes), Some(Err(Error::BadInner { cid: inner })));
    }
    // Past OFFSET 0 the data is opaque to the codec.
    assert!(
        Commands::new(&[0x08, 0x14, 0x01, 0x08])
            .next()
            .unwrap()
            .is_ok()
    );
}

#[test]
fn invalid_representations_are_not_emitted() {
    let mut buffer = [0xa5; 64];
    let invalid = [
        (
            CommandRepr::PubKeyReq(PubKeyReqRepr {
                session: session(1),
                version: 4,
                ephemeral: [0; 49],
            }),
            "version",
        ),
        (
            CommandRepr::SigVerifyReq(SigVerifyReqRepr {
                session: session(1),
                chunk: 2,
                holds_all_parts: false,
                data: [0; 48],
            }),
            "chunk",
        ),
        (
            CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
                session: session(1),
                code: Code::Unknown(4),
            }),
            "code",
        ),
        (
            // Would read back as Code::Accepted.
            CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
                session: session(1),
                code: Code::Unknown(0),
            }),
            "code",
        ),
        (
            // Would read back as Reason::GaveUp.
            CommandRepr::Abort(AbortRepr {
                session: session(1),
                reason: Reason::Unknown(0x06),
            }),
            "reason",
        ),
        (
            CommandRepr::Fragment(FragmentRepr {
                session: session(1),
                fid: 4,
                offset: 3,
                data: &[1],
            }),
            "fid",
        ),
        (
            CommandRepr::Fragment(FragmentRepr {
                session: session(1),
                fid: 0,
                offset: 3,
                data: &[],
            }),
            "data",
        ),
    ];
    for (repr, field) in invalid {
        assert_eq!(
            repr.emit(&mut buffer),
            Err(Error::InvalidRepr {
                cid: repr.cid(),
                field
            })
        );
    }
    let nested = CommandRepr::Fragment(FragmentRepr {
        session: session(1),
        fid: 0,
        offset: 0,
        data: &[0x08, 0x04],
    });
    assert_eq!(nested.emit(&mut buffer), Err(Error::BadInner { cid: 0x08 }));
    assert!(buffer.iter().all(|&b| b == 0xa5));
}

#[test]
fn unknown_commands_have_no_representation() {
    let command = Command::Unknown {
        cid: 0x06,
        rest: &[1, 2],
    };
    assert_eq!(
        CommandRepr::parse(&command),
        Err(Error::UnknownCid { cid: 0x06 })
    );
}

#[test]
fn errors_display() {
    let errors = [
        Error::Truncated {
            cid: 1,
            needed: 51,
            available: 3,
        }
        .to_string(),
        Error::BadHeader {
            cid: 2,
            header: 0x17,
        }
        .to_string(),
        Error::Reassembly(lorapki_wire::ReassemblyError::Duplicate).to_string(),
    ];
    assert_eq!(
        errors,
        [
            "command 0x01 truncated: needs 51 bytes, 3 available",
            "command 0x02 has an invalid header 0x17",
            "reassembly: duplicate fragment",
        ]
    );
}
