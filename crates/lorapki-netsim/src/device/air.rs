//! The air's side of a device: [`AirDevice`], what the simulator calls, and [`RadioContext`],
//! what a device may ask of the air when it is polled.

use crate::duty::DutyCycle;
use crate::ns::air::{Downlink, Uplink};
use crate::region::Region;

/// What a device may ask of the air at the moment it is polled.
pub struct RadioContext<'a> {
    /// Now (µs).
    pub now_us: u64,
    /// The region.
    pub region: Region,
    duty: &'a DutyCycle,
}

impl<'a> RadioContext<'a> {
    /// A context over a device's duty-cycle state.
    #[must_use]
    pub fn new(now_us: u64, region: Region, duty: &'a DutyCycle) -> Self {
        Self {
            now_us,
            region,
            duty,
        }
    }

    /// The earliest time (µs) this device may transmit on `frequency_hz`.
    #[must_use]
    pub fn free_at(&self, frequency_hz: u32) -> u64 {
        self.duty.free_at(self.region, frequency_hz)
    }
}

/// A device on the air, as the simulator drives it (see the module documentation).
pub trait AirDevice {
    /// The device's DevEUI (MSB first).
    fn dev_eui(&self) -> [u8; 8];
    /// When the device next wants to be polled (µs); `None`: never again on its own.
    fn next_wakeup(&self) -> Option<u64>;
    /// The device may transmit now.
    fn poll_uplink(&mut self, ctx: &RadioContext<'_>) -> Option<Uplink>;
    /// The RX windows of the last uplink are over: `downlink` is what the device received.
    fn handle_rx(&mut self, now_us: u64, downlink: Option<&Downlink>);
}

impl<T: AirDevice + ?Sized> AirDevice for Box<T> {
    fn dev_eui(&self) -> [u8; 8] {
        (**self).dev_eui()
    }
    fn next_wakeup(&self) -> Option<u64> {
        (**self).next_wakeup()
    }
    fn poll_uplink(&mut self, ctx: &RadioContext<'_>) -> Option<Uplink> {
        (**self).poll_uplink(ctx)
    }
    fn handle_rx(&mut self, now_us: u64, downlink: Option<&Downlink>) {
        (**self).handle_rx(now_us, downlink);
    }
}
