//! [`Pipelined`]: the pipelined schedule, `lorapki_proto::DeviceSession` as the firmware runs it.

use lorapki_crypto::RootKeySlot;
use lorapki_proto::{DeviceEvent, DeviceSession, Error, Instant};

use super::exchange::{Exchange, Outgoing};
use crate::rng::Backend;

/// The pipelined schedule: `lorapki_proto::DeviceSession` as it is.
pub struct Pipelined(pub DeviceSession<Backend>);

impl Exchange for Pipelined {
    fn start(&mut self, backend: &mut Backend, now: Instant) -> Result<(), Error> {
        self.0.start(backend, now)
    }
    fn join_key(&self) -> Option<RootKeySlot> {
        self.0.join_key()
    }
    fn poll_transmit(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        n: usize,
        buf: &mut [u8],
    ) -> Result<Option<Outgoing>, Error> {
        let transmit = self.0.poll_transmit(backend, now, n, buf)?;
        Ok(transmit.map(|t| Outgoing {
            len: t.len,
            confirmed: false,
        }))
    }
    fn handle_downlink(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.0.handle_downlink(backend, now, payload)
    }
    fn handle_join_result(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        slot: RootKeySlot,
        accepted: bool,
    ) -> Result<(), Error> {
        self.0.handle_join_result(backend, now, slot, accepted)
    }
    fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.0.poll_event()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
}
