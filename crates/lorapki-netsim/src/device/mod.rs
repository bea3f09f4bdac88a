//! Devices on the air, one file per part: the [`AirDevice`] interface the simulator drives
//! ([`air`]), and [`EndDevice`] ([`end_device`]), a light LoRaWAN 1.0.x Class A device model that
//! runs a key exchange strategy ([`Exchange`], [`exchange`]): the real pipelined
//! `DeviceSession` ([`Pipelined`], [`pipelined`]) or the [`NaiveExchange`] of the original design's
//! order ([`naive`]).
//!
//! # A device on the air
//!
//! The simulator knows a device only through [`AirDevice`]; the device owns its MAC (frame
//! counters, keys, DevNonce) and builds real PHY payloads. Per uplink:
//!
//! 1. at [`AirDevice::next_wakeup`] the simulator calls [`AirDevice::poll_uplink`] with a
//!    [`RadioContext`] (the time, the region, and when each duty-cycle sub-band of *this* device
//!    is free); the device returns the PHY payload, channel and data rate, or nothing (then it is
//!    asked again at its next wake-up). A device should wait for its sub-band; if it does not,
//!    the simulated radio defers the transmission until the band is free (counted as a
//!    deferral), as a regulatory radio driver would;
//! 2. the simulator plays the transmission (time on air), the gateway, the network server and the
//!    RX1/RX2 windows (RECEIVE_DELAY1/2, JOIN_ACCEPT_DELAY1/2), then calls
//!    [`AirDevice::handle_rx`] once, at the end of the frame received in RX1 or RX2, or at the
//!    end of RX2 when nothing arrived. The device is busy (sends nothing) until then, as Class A
//!    requires.
//!
//! A real MAC (e.g. `lorawan-device` behind its `PhyRxTx`/`Timer` traits) plugs in by
//! implementing [`AirDevice`]: its radio's `tx` hands the buffer over as the result of
//! `poll_uplink`, and its RX windows complete with what `handle_rx` delivers.

pub mod air;
pub mod end_device;
pub mod exchange;
pub mod naive;
pub mod pipelined;

pub use air::{AirDevice, RadioContext};
pub use end_device::{
    DeviceReport, DeviceSetup, EndDevice, IDENTITY_SLOT, Phase, device_backend, device_config,
    frame_capacity, stage_into,
};
pub use exchange::{Exchange, Outgoing};
pub use naive::NaiveExchange;
pub use pipelined::Pipelined;
