//! lorapki's test bench on real networks.
//!
//! * [`mac_device`]: the real `lorawan-device` MAC behind the lorapki adapter, as a device on
//!   netsim's air.
//! * [`gateway`] (feature `chirpstack`): a virtual gateway that carries that air to a real network
//!   server through ChirpStack's gateway MQTT protocol, in real time between an uplink and its
//!   receive windows and in compressed virtual time everywhere else.
//! * [`chirpstack`] (feature `chirpstack`): Redis, mosquitto and a ChirpStack v4 started from the
//!   configuration files in `chirpstack/`, provisioned over ChirpStack's gRPC API.
//!
//! A bench, not a library for devices: a broken bench panics with what broke.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(feature = "chirpstack")]
pub mod chirpstack;
#[cfg(feature = "chirpstack")]
pub mod gateway;
pub mod mac_device;
