//! Any FRMPayload: iterate its commands; every command that parses emits back to exactly the bytes
//! it came from, and those bytes parse to the same representation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorapki_wire::{Command, CommandRepr, Commands};

fuzz_target!(|payload: &[u8]| {
    let mut consumed = 0;
    let mut commands = Commands::new(payload);
    for item in commands.by_ref() {
        let Ok(command) = item else { break };
        let repr = match CommandRepr::parse(&command) {
            Ok(repr) => repr,
            Err(_) => {
                assert!(matches!(command, Command::Unknown { .. }));
                break;
            }
        };
        assert_eq!(repr.cid(), command.cid());
        assert_eq!(repr.session(), command.session());

        let mut emitted = vec![0xa5; repr.buffer_len() + 1];
        let len = repr.emit(&mut emitted).expect("a parsed command emits");
        assert_eq!(len, repr.buffer_len());
        assert_eq!(emitted[len], 0xa5, "emit wrote past the command");
        assert_eq!(&emitted[..len], &payload[consumed..consumed + len]);
        consumed += len;

        let mut again = Commands::new(&emitted[..len]);
        let reparsed = again.next().expect("one command").expect("parses");
        assert_eq!(CommandRepr::parse(&reparsed), Ok(repr));
        assert!(again.next().is_none());
    }
    assert!(commands.next().is_none(), "the iterator is fused");
});
