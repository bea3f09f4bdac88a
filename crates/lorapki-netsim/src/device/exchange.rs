//! [`Exchange`]: a key-exchange strategy as `EndDevice` drives it.

use lorapki_crypto::RootKeySlot;
use lorapki_proto::{DeviceEvent, Error, Instant};

use crate::rng::Backend;

/// One FPort-1 (or empty) uplink an exchange wants to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// FRMPayload bytes written to the buffer (0: an empty frame without FPort, to open the
    /// receive windows).
    pub len: usize,
    /// Send as confirmed data (the network acknowledges it).
    pub confirmed: bool,
}

/// A key-exchange strategy driven by `EndDevice`: the sans-IO surface of `DeviceSession`, plus
/// what a strategy that waits for MAC acknowledgements needs.
///
/// An `Err` from [`handle_downlink`](Self::handle_downlink) is the protocol's answer to a bad,
/// stale or duplicate payload (nothing changed); an `Err` from the other calls is a fault of the
/// device or of the simulation. The device records both in its `DeviceReport`.
pub trait Exchange {
    /// Starts a run.
    ///
    /// # Errors
    ///
    /// The exchange is not idle, or the backend failed.
    fn start(&mut self, backend: &mut Backend, now: Instant) -> Result<(), Error>;
    /// The root key of the next JoinRequest while rejoining.
    fn join_key(&self) -> Option<RootKeySlot>;
    /// The next FPort-1 uplink with maximum payload `n`.
    ///
    /// # Errors
    ///
    /// `n` or `buf` is out of range, or a frame could not be written.
    fn poll_transmit(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        n: usize,
        buf: &mut [u8],
    ) -> Result<Option<Outgoing>, Error>;
    /// An FPort-1 downlink payload.
    ///
    /// # Errors
    ///
    /// The payload was malformed, stale or refused; it changed nothing.
    fn handle_downlink(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        payload: &[u8],
    ) -> Result<(), Error>;
    /// The receive windows of an FPort-1 uplink are over.
    fn handle_rx_done(&mut self, _now: Instant, _received: bool, _acked: bool) {}
    /// Called right after [`handle_rx_done`](Self::handle_rx_done), with the backend: a strategy
    /// that a MAC acknowledgement can advance (the naive one) moves on here. Nothing by default.
    ///
    /// # Errors
    ///
    /// The strategy could not take its next step (it stays where it is).
    fn after_rx(&mut self, _backend: &mut Backend, _now: Instant) -> Result<(), Error> {
        Ok(())
    }
    /// The result of a JoinRequest under `slot` while rejoining.
    ///
    /// # Errors
    ///
    /// No rejoin is pending.
    fn handle_join_result(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        slot: RootKeySlot,
        accepted: bool,
    ) -> Result<(), Error>;
    /// The next event.
    fn poll_event(&mut self) -> Option<DeviceEvent>;
    /// When the exchange next wants to act.
    fn poll_timeout(&self) -> Option<Instant>;
}
