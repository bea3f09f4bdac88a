#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod abort;
pub mod builder;
pub mod command;
mod error;
pub mod fragment;
pub mod fragmenter;
mod header;
pub mod key_change_req;
pub mod pub_key_ans;
pub mod pub_key_req;
pub mod reassembler;
mod session;
pub mod sig_verify_ans;
pub mod sig_verify_req;
mod view;

pub use abort::{Abort, AbortRepr, Reason};
pub use builder::PayloadBuilder;
pub use command::{Command, CommandRepr, Commands};
pub use error::{Error, ReassemblyError};
pub use fragment::{Fragment, FragmentRepr};
pub use fragmenter::{Fragmenter, fragment_into_frames};
pub use key_change_req::{KeyChangeReq, KeyChangeReqRepr};
pub use pub_key_ans::{Part, PubKeyAns, PubKeyAnsRepr};
pub use pub_key_req::{PubKeyReq, PubKeyReqRepr};
pub use reassembler::Reassembler;
pub use session::{Session, SessionOutOfRange};
pub use sig_verify_ans::{Code, SigVerifyAns, SigVerifyAnsRepr};
pub use sig_verify_req::{SigVerifyReq, SigVerifyReqRepr};

/// The longest serialized command (PubKeyReq and PubKeyAns parts 0 and 1): a command of this length
/// fits in one FRMPayload at EU868 DR0, and a [`Reassembler`] slot holds exactly this much.
pub const MAX_COMMAND_LEN: usize = 51;

/// The smallest maximum application payload N the codec supports (US915 DR0).
pub const MIN_PAYLOAD: usize = 11;

/// The largest maximum application payload N the codec supports.
pub const MAX_PAYLOAD: usize = 242;

/// The protocol version this codec speaks, carried in the INDEX bits of PubKeyReq's header.
pub const PROTOCOL_VERSION: u8 = 0b01;

/// Length of a SEC1 compressed P-384 point (an ephemeral public key on the air).
pub const EPHEMERAL_KEY_LEN: usize = 49;

/// Length of a P-384 ECDSA signature `r || s` on the air.
pub const SIGNATURE_LEN: usize = 96;

/// The command identifiers (the first byte of every command).
///
/// CIDs 0x00, 0x06 and 0x09..=0xFF are not defined: [`Commands`] stops at them and yields
/// [`Command::Unknown`].
pub mod cid {
    /// PubKeyReq, device → server.
    pub const PUB_KEY_REQ: u8 = 0x01;
    /// PubKeyAns, server → device.
    pub const PUB_KEY_ANS: u8 = 0x02;
    /// SigVerifyReq, device → server.
    pub const SIG_VERIFY_REQ: u8 = 0x03;
    /// SigVerifyAns, server → device.
    pub const SIG_VERIFY_ANS: u8 = 0x04;
    /// KeyChangeReq, device → server.
    pub const KEY_CHANGE_REQ: u8 = 0x05;
    /// Abort, both directions.
    pub const ABORT: u8 = 0x07;
    /// Fragment, both directions.
    pub const FRAGMENT: u8 = 0x08;

    /// Whether a command with this CID may travel inside [`Fragment`](crate::Fragment)s: only the
    /// commands that carry a header (0x01, 0x02, 0x03, 0x07). The bare 1- and 2-byte commands
    /// always fit whole, and a Fragment is never nested.
    #[must_use]
    pub const fn is_fragmentable(cid: u8) -> bool {
        matches!(cid, PUB_KEY_REQ | PUB_KEY_ANS | SIG_VERIFY_REQ | ABORT)
    }
}
