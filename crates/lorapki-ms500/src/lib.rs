#![doc = include_str!("../README.md")]
#![no_std]
// `unsafe` is denied everywhere; only the vendor-SDK boundary in `ms500` allows it, block by
// block, each with a SAFETY comment.
#![deny(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

mod backend;
pub mod ccm;
pub mod engine;
mod log;
mod scalar;
pub mod storage;
pub mod trng;
mod wait;

#[cfg(feature = "emulated")]
pub mod emulated;

#[cfg(all(feature = "ms500", target_os = "none"))]
pub mod ms500;

pub use backend::{
    Config, DEV_NONCE_MAX, EPHEMERAL_SLOTS, IDENTITY_SLOTS, Ms500Backend, Ms500Ephemeral,
    OpenError, Parts, Platform, SlotMap,
};
pub use engine::{
    AesCommand, AesEngine, AesKeyRef, Engine, EngineError, PkaCommand, PkaEngine, Progress,
    TrngSource,
};
pub use lorapki_crypto;
pub use storage::StorageLayout;
pub use trng::RngStatus;
pub use trng::health::{ClaimedEntropy, HealthFailure};
pub use wait::Timeouts;
