#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

mod crypto;
mod device;
mod error;
mod frames;
mod persist;
mod radio;
mod rng;

pub use crypto::{MacCipher, MacCmac, MacCrypto};
pub use device::{Config, Event, LorapkiDevice, MAC_BUFFER, Mac};
pub use error::Error;
pub use persist::{Persist, PersistError, PersistentState};
pub use radio::{MacRadio, MacRadioError};
pub use rng::ChannelRng;

/// The MAC crate, re-exported so that the application names the same version (its radio traits,
/// regions, `nb_device::Response`).
pub use lorawan_device;
