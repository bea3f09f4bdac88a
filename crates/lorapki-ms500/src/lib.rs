#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

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

pub use backend::{
    Config, DEV_NONCE_MAX, EPHEMERAL_SLOTS, IDENTITY_SLOTS, Ms500Backend, Ms500Ephemeral,
    Ms500Sha384, OpenError, Parts, SlotMap,
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
