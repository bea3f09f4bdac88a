#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

mod accept;
mod keys;
mod ops;
mod request;

pub use accept::{JoinAccept, JoinAcceptFrame, OPT_NEG};
pub use keys::{SessionKeys10, SessionKeys11, js_enc_key, js_int_key};
pub use ops::{KeyOps, StoreKey};
pub use request::{JoinRequest, join_request_mic, join_request_mic_verifies};

/// Length of a JoinRequest PHY payload: MHDR ‖ JoinEUI ‖ DevEUI ‖ DevNonce ‖ MIC.
pub const JOIN_REQUEST_LEN: usize = 23;
/// Length of a JoinAccept PHY payload without a CFList.
pub const JOIN_ACCEPT_LEN: usize = 17;
/// Length of a JoinAccept PHY payload with a CFList (the longest).
pub const JOIN_ACCEPT_MAX_LEN: usize = 33;
/// MHDR of a JoinRequest (MType 000, Major 00).
pub const MHDR_JOIN_REQUEST: u8 = 0x00;
/// MHDR of a JoinAccept (MType 001, Major 00).
pub const MHDR_JOIN_ACCEPT: u8 = 0x20;
/// The largest JoinNonce (24 bits).
pub const JOIN_NONCE_MAX: u32 = 0x00ff_ffff;

/// Why a frame is not a join frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame has the wrong length for its type.
    Length {
        /// Its length.
        len: usize,
    },
    /// The MHDR is not the one of this frame type (or another LoRaWAN major version).
    Mhdr {
        /// The MHDR byte.
        mhdr: u8,
    },
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Length { len } => write!(f, "a join frame of {len} bytes"),
            Self::Mhdr { mhdr } => write!(f, "MHDR {mhdr:#04x} is not of this join frame"),
        }
    }
}

impl core::error::Error for FrameError {}

/// An EUI held most significant byte first, in the frame's (little-endian) order.
fn reversed(eui: &[u8; 8]) -> [u8; 8] {
    let mut out = *eui;
    out.reverse();
    out
}
