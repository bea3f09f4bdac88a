//! lorapki's test bench on real networks.
//!
//! * [`mac_device`]: the real `lorawan-device` MAC behind the lorapki adapter, as a device on
//!   netsim's air.
//!
//! A bench, not a library for devices: a broken bench panics with what broke.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod mac_device;
