#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod app;
pub mod chirpstack;
pub mod config;
pub mod error;
pub mod eui;
pub mod identity;
pub mod joinserver;
pub mod kek;
#[cfg(feature = "chirpstack-grpc")]
pub mod keyhandoff;
pub mod logthrottle;
pub mod lorawan;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;
pub mod tls;

pub use error::{EngineFailure, Error, ImportError, Result};
pub use eui::Eui64;
pub use identity::{KeyId, ServerKey};
pub use kek::{StorageKek, WrapKek};
pub use lorawan::MacVersion;
pub use metrics::Metrics;
pub use registry::{NewDevice, TrustAnchors};
pub use server::{Server, ServerOptions};
pub use store::{KeyState, Store};
