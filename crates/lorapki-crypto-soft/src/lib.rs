#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

mod aes_ops;
mod backend;
mod keystore;
#[cfg(feature = "test-rng")]
mod test_rng;

pub use backend::{IDENTITY_SLOTS, SoftBackend, SoftEphemeral};
pub use keystore::SoftKeyStore;
pub use lorapki_crypto;
pub use rand_core;
#[cfg(feature = "test-rng")]
pub use test_rng::TestRng;
