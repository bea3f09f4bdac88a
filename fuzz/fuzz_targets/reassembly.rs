//! A sequence of frames pushed into a Reassembler, and every whole fragmentable command found in
//! them fragmented and reassembled again.
//!
//! Input: byte 0 chooses the bound session (low 6 bits) and byte 1 the payload size N for
//! re-fragmenting; then frames, each as a length byte followed by that many bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorapki_wire::{
    Command, CommandRepr, Commands, MAX_PAYLOAD, MIN_PAYLOAD, Reassembler, ReassemblyError,
    Session, fragment_into_frames,
};

fuzz_target!(|input: &[u8]| {
    let &[session, size, ref frames @ ..] = input else {
        return;
    };
    let mut rest = frames;
    let session = Session::new(session & 0x3f).expect("six bits");
    let n = MIN_PAYLOAD + usize::from(size) % (MAX_PAYLOAD - MIN_PAYLOAD + 1);
    let mut reassembler = Reassembler::<3>::new();
    reassembler.bind(session);

    while let &[len, ref tail @ ..] = rest {
        let (frame, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        for item in Commands::new(frame) {
            let Ok(command) = item else { break };
            match command {
                Command::Fragment(fragment) => match reassembler.push(&fragment) {
                    Ok(Some(inner)) => check_inner(inner),
                    Ok(None) => {}
                    Err(ReassemblyError::Malformed) => panic!("a checked Fragment is malformed"),
                    Err(_) => {}
                },
                Command::Unknown { .. } => break,
                _ => {
                    let repr = CommandRepr::parse(&command).expect("a parsed command");
                    if lorapki_wire::cid::is_fragmentable(repr.cid()) {
                        round_trip(&repr, n);
                    }
                }
            }
        }
    }
    assert!(reassembler.in_flight() <= 3);
});

/// A reassembled inner command is exactly one whole fragmentable command.
fn check_inner(inner: &[u8]) {
    let mut commands = Commands::new(inner);
    let command = commands
        .next()
        .expect("not empty")
        .expect("a reassembled command parses");
    assert!(lorapki_wire::cid::is_fragmentable(command.cid()));
    assert!(commands.next().is_none(), "exactly one command");
    let repr = CommandRepr::parse(&command).expect("a parsed command");
    assert_eq!(repr.buffer_len(), inner.len());
}

/// Fragmenting a command at N and reassembling the Fragments gives back its bytes.
fn round_trip(command: &CommandRepr<'_>, n: usize) {
    let mut original = [0; 64];
    let len = command.emit(&mut original).expect("emits");
    let mut reassembler = Reassembler::<1>::new();
    reassembler.bind(
        command
            .session()
            .expect("fragmentable commands carry a session"),
    );
    let mut completed = false;
    fragment_into_frames(command, n, 0, |frame| {
        assert!(!completed, "complete before the last Fragment");
        let Some(Ok(Command::Fragment(fragment))) = Commands::new(frame).next() else {
            panic!("not a Fragment");
        };
        if let Some(bytes) = reassembler.push(&fragment).expect("accepted") {
            assert_eq!(bytes, &original[..len]);
            completed = true;
        }
    })
    .expect("fragments");
    assert!(completed);
}
