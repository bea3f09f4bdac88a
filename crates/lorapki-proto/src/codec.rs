//! Every frame from the air goes through `lorapki-wire`: this module turns a FRMPayload into the
//! commands the state machines act on, reassembling fragments on the way (PROTOCOL.md §3, §4).

use lorapki_wire::{
    AbortRepr, Command, CommandRepr, Commands, MAX_COMMAND_LEN, PubKeyAnsRepr, PubKeyReqRepr,
    Reassembler, ReassemblyError, SigVerifyAnsRepr, SigVerifyReqRepr,
};

use crate::error::Error;

/// A whole command received from the peer (a reassembled one looks the same).
#[derive(Debug, Clone, Copy)]
// The device role alone reads only the server's commands.
#[cfg_attr(not(feature = "alloc"), allow(dead_code))]
pub(crate) enum Incoming {
    PubKeyReq(PubKeyReqRepr),
    PubKeyAns(PubKeyAnsRepr),
    SigVerifyReq(SigVerifyReqRepr),
    SigVerifyAns(SigVerifyAnsRepr),
    KeyChangeReq,
    Abort(AbortRepr),
}

impl Incoming {
    pub(crate) fn cid(&self) -> u8 {
        use lorapki_wire::cid;
        match self {
            Self::PubKeyReq(_) => cid::PUB_KEY_REQ,
            Self::PubKeyAns(_) => cid::PUB_KEY_ANS,
            Self::SigVerifyReq(_) => cid::SIG_VERIFY_REQ,
            Self::SigVerifyAns(_) => cid::SIG_VERIFY_ANS,
            Self::KeyChangeReq => cid::KEY_CHANGE_REQ,
            Self::Abort(_) => cid::ABORT,
        }
    }
}

fn whole(repr: CommandRepr<'_>) -> Option<Incoming> {
    Some(match repr {
        CommandRepr::PubKeyReq(r) => Incoming::PubKeyReq(r),
        CommandRepr::PubKeyAns(r) => Incoming::PubKeyAns(r),
        CommandRepr::SigVerifyReq(r) => Incoming::SigVerifyReq(r),
        CommandRepr::SigVerifyAns(r) => Incoming::SigVerifyAns(r),
        CommandRepr::KeyChangeReq(_) => Incoming::KeyChangeReq,
        CommandRepr::Abort(r) => Incoming::Abort(r),
        CommandRepr::Fragment(_) => return None,
    })
}

/// Calls `f` for every command of `payload` in order, including commands completed by a fragment,
/// and for the first decoding problem (after which the payload cannot be delimited any further).
/// A duplicate fragment is not reported: it is harmless by definition (§4). Returns how many
/// fragments brought new bytes without completing a command (progress for the 8-uplink rule).
///
/// `admit` sees the session of every fragment before the reassembler does, so that the server can
/// bind its reassembler to a new session whose PubKeyReq arrives in fragments (§4, §8).
pub(crate) fn for_each_command<const SLOTS: usize>(
    payload: &[u8],
    reassembler: &mut Reassembler<SLOTS>,
    mut admit: impl FnMut(&mut Reassembler<SLOTS>, lorapki_wire::Session),
    mut f: impl FnMut(Result<Incoming, Error>),
) -> usize {
    let mut partial = 0;
    for item in Commands::new(payload) {
        let command = match item {
            Ok(Command::Unknown { .. }) => break,
            Ok(command) => command,
            Err(e) => {
                f(Err(Error::Wire(e)));
                break;
            }
        };
        if let Command::Fragment(fragment) = &command {
            admit(reassembler, fragment.session());
            let mut inner = [0u8; MAX_COMMAND_LEN];
            let len = match reassembler.push(fragment) {
                Ok(Some(bytes)) => {
                    let len = bytes.len().min(MAX_COMMAND_LEN);
                    inner[..len].copy_from_slice(&bytes[..len]);
                    len
                }
                Ok(None) => {
                    partial += 1;
                    continue;
                }
                Err(ReassemblyError::Duplicate) => continue,
                Err(e) => {
                    f(Err(Error::Reassembly(e)));
                    continue;
                }
            };
            let parsed = Commands::new(&inner[..len]).next();
            match parsed {
                Some(Ok(command)) => match CommandRepr::parse(&command) {
                    Ok(repr) => {
                        if let Some(incoming) = whole(repr) {
                            f(Ok(incoming));
                        }
                    }
                    Err(e) => f(Err(Error::Wire(e))),
                },
                Some(Err(e)) => f(Err(Error::Wire(e))),
                None => {}
            }
            continue;
        }
        match CommandRepr::parse(&command) {
            Ok(repr) => {
                if let Some(incoming) = whole(repr) {
                    f(Ok(incoming));
                }
            }
            Err(e) => {
                f(Err(Error::Wire(e)));
                break;
            }
        }
    }
    partial
}

/// Serializes a command into a scratch buffer; 0 if it cannot be written (never for our own
/// commands, whose reprs are valid by construction).
pub(crate) fn emit(repr: &CommandRepr<'_>, out: &mut [u8; MAX_COMMAND_LEN]) -> usize {
    repr.emit(out).unwrap_or(0)
}
