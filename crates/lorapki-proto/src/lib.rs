#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod acceptance;
mod codec;
mod device;
mod error;
pub mod keys;
mod outbox;
#[cfg(feature = "alloc")]
mod server;
mod time;

pub use acceptance::{JoinEffect, KeyAcceptance};
pub use device::{DeviceConfig, DeviceEvent, DevicePersistent, DeviceSession, DeviceStatus};
pub use error::{CryptoFault, Error, FailReason};
pub use keys::{LorawanVersion, NewRootKeys};
#[cfg(feature = "alloc")]
pub use server::{
    DeviceRecord, RateLimit, ServerConfig, ServerContext, ServerEndpoint, ServerEvent,
    ServerSession, SessionSnapshot, UplinkOutcome, unknown_device_abort,
};
pub use time::{Duration, Instant};

/// Re-exported so that adapters name the same types as the state machines.
pub use lorapki_crypto::{KeyStoreStatus, RootKeySlot};

/// The original design's rule: a device that sent this many uplinks for one step without an answer declares
/// the step failed (PROTOCOL.md §6.3).
pub const MAX_UPLINKS_WITHOUT_ANSWER: u8 = 8;

/// Reassembly slots per direction and session: one per command that can be fragmented at once
/// (PROTOCOL.md §4, §6.4).
pub const REASSEMBLY_SLOTS: usize = 3;

/// Metadata of a frame written by a `poll_transmit` into the caller's buffer.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes written at the start of the buffer: the FRMPayload for FPort 1.
    pub len: usize,
}

/// The FPort reserved for the protocol (PROTOCOL.md §3).
pub const FPORT: u8 = 1;

fn check_payload_size(n: usize, buffer: usize) -> Result<(), Error> {
    if (lorapki_wire::MIN_PAYLOAD..=lorapki_wire::MAX_PAYLOAD).contains(&n) && n <= buffer {
        Ok(())
    } else {
        Err(Error::PayloadSize { n })
    }
}
