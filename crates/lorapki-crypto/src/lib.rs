#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

mod backend;
mod delegate;
pub mod error;
mod keystore;
mod secret;
mod types;

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(feature = "sha2")]
pub use backend::hkdf_sha384;
pub use backend::{AesBackend, CryptoBackend, KeyImport, Sha384Hasher};
pub use delegate::DelegateBackend;
pub use error::{Error, Result};
pub use keystore::{KeyStoreStatus, RootKeyKind, RootKeySlot, RootKeyStore, RootKeys};
pub use secret::{AesKey, Prk, Secret, SharedSecret};
pub use types::{KeySlot, PublicKey, Signature};

/// Length of a SEC1 compressed P-384 public key (`0x02`/`0x03` ‖ x), the form used on air.
pub const P384_PUBLIC_COMPRESSED_LEN: usize = 49;
/// Length of a SEC1 uncompressed P-384 public key (`0x04` ‖ x ‖ y).
pub const P384_PUBLIC_UNCOMPRESSED_LEN: usize = 97;
/// Length of an ECDSA P-384 signature `r ‖ s`, big-endian, 48 bytes each.
pub const P384_SIGNATURE_LEN: usize = 96;
/// Length of the ECDH P-384 shared secret (the x-coordinate of the shared point).
pub const P384_SHARED_SECRET_LEN: usize = 48;
/// Length of a SHA-384 digest (and of the HKDF-SHA384 PRK).
pub const SHA384_LEN: usize = 48;
/// Length of an AES-128 key.
pub const AES128_KEY_LEN: usize = 16;
/// Length of an AES block and of an AES-CMAC tag.
pub const AES_BLOCK_LEN: usize = 16;
