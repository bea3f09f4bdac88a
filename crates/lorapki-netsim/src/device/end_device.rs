//! [`EndDevice`]: a light LoRaWAN 1.0.x Class A device with a key store, running an [`Exchange`];
//! its set-up ([`DeviceSetup`]) and what it did ([`DeviceReport`]).

use std::cell::RefCell;

use lorapki_crypto::{
    AesKey, CryptoBackend, PublicKey, RootKeyKind, RootKeySlot, RootKeyStore, RootKeys,
};
use lorapki_crypto_soft::SoftKeyStore;
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceSession, Duration, FailReason, Instant,
    LorawanVersion, NewRootKeys,
};

use super::air::{AirDevice, RadioContext};
use super::exchange::Exchange;
use super::naive::NaiveExchange;
use super::pipelined::Pipelined;
use crate::mac::{self, DataFrame, SessionKeys};
use crate::ns::air::{Downlink, Uplink};
use crate::region::{DATA_FRAME_OVERHEAD, Region};
use crate::rng::{Backend, SeededRng, SimRng};

/// Everything that makes one simulated device.
#[derive(Clone, Debug)]
pub struct DeviceSetup {
    /// DevEUI, MSB first.
    pub dev_eui: [u8; 8],
    /// JoinEUI, MSB first.
    pub join_eui: [u8; 8],
    /// The region.
    pub region: Region,
    /// The uplink data rate (no ADR).
    pub data_rate: u8,
    /// The factory AppKey.
    pub factory_key: [u8; 16],
    /// Seed of the device's crypto backend and of its channel choices.
    pub seed: u64,
    /// When the device powers up and sends its first JoinRequest (µs).
    pub start_us: u64,
    /// Interval between JoinRequests without an answer (on top of the duty cycle).
    pub join_retry: Duration,
    /// Runs the device may start before it gives up (the retry budget).
    pub max_runs: u32,
    /// After completion, confirmed application uplinks (FPort 2) until one is acknowledged:
    /// at most this many (0: none). The first uplink of the new session confirms the key switch
    /// at the server.
    pub confirm_attempts: u32,
    /// Interval between those application uplinks.
    pub app_retry: Duration,
}

impl DeviceSetup {
    /// A device with the defaults: joins at `start_us`, retries joins every 30 s, a budget of 3
    /// runs, up to 8 confirmation uplinks 60 s apart.
    #[must_use]
    pub fn new(dev_eui: [u8; 8], region: Region, data_rate: u8, seed: u64) -> Self {
        Self {
            dev_eui,
            join_eui: [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 0],
            region,
            data_rate,
            factory_key: [0x2b; 16],
            seed,
            start_us: 0,
            join_retry: Duration::from_secs(30),
            max_runs: 3,
            confirm_attempts: 8,
            app_retry: Duration::from_secs(60),
        }
    }
}

/// Where an [`EndDevice`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The first OTAA join, under the factory key.
    Joining,
    /// The rekey (runs, rejoin).
    Rekeying,
    /// Rekey completed; application uplinks confirm the new session.
    Confirming,
    /// Done: rekey completed.
    Finished,
    /// Done: the retry budget is spent without a new key.
    GaveUp,
}

/// What a device did (for reports and acceptance checks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceReport {
    /// The first join completed (µs).
    pub joined_us: Option<u64>,
    /// The first run started (µs).
    pub run_started_us: Option<u64>,
    /// The first FPort-1 uplink went on air (µs).
    pub first_fport1_us: Option<u64>,
    /// The rekey completed: JoinAccept under the new key (µs).
    pub completed_us: Option<u64>,
    /// An application uplink of the new session was acknowledged (µs).
    pub confirmed_us: Option<u64>,
    /// Runs started.
    pub runs: u32,
    /// Why runs failed.
    pub failures: Vec<FailReason>,
    /// JoinRequests sent.
    pub join_requests: u32,
    /// FPort-1 uplinks sent (empty polls included).
    pub fport1_uplinks: u32,
    /// FPort-1 downlinks received.
    pub fport1_downlinks: u32,
    /// FPort-1 payload bytes sent / received.
    pub fport1_bytes_up: u32,
    /// FPort-1 payload bytes received.
    pub fport1_bytes_down: u32,
    /// Application (FPort 2) uplinks sent.
    pub app_uplinks: u32,
    /// FPort-1 downlinks the exchange refused, with why (stale, duplicate or malformed: the
    /// protocol's answer to bad input, expected under duplication and reordering faults).
    pub refused_downlinks: Vec<lorapki_proto::Error>,
    /// Faults of the device: exchange calls that failed (start, transmit, join result, the step
    /// after an acknowledgement) and key-store writes that failed (stage, activate, roll back).
    /// Empty in every healthy run.
    pub errors: Vec<lorapki_proto::Error>,
}

#[derive(Clone, Copy, Debug)]
enum InFlight {
    Join { slot: RootKeySlot, nonce: u16 },
    Data { confirmed: bool, fport1: bool },
}

struct MacState {
    keys: SessionKeys,
    fcnt_up: u32,
    last_fcnt_down: Option<u32>,
}

/// A light LoRaWAN 1.0.x Class A device with a key store, running the exchange `X`.
pub struct EndDevice<X> {
    setup: DeviceSetup,
    backend: Backend,
    store: RefCell<SoftKeyStore>,
    exchange: X,
    rng: SimRng,
    mac: Option<MacState>,
    dev_nonce: u16,
    phase: Phase,
    in_flight: Option<InFlight>,
    wake: Option<u64>,
    confirm_left: u32,
    report: DeviceReport,
}

fn to_instant(us: u64) -> Instant {
    Instant::from_millis(us / 1000)
}

fn dur_us(d: Duration) -> u64 {
    d.as_millis().saturating_mul(1000)
}

fn to_us(t: Instant) -> u64 {
    t.as_millis().saturating_mul(1000)
}

/// Creates a device's crypto backend and its identity key; returns the backend and the public key.
///
/// # Errors
///
/// Backend failures.
pub fn device_backend(
    seed: u64,
    slot: lorapki_crypto::KeySlot,
) -> lorapki_crypto::Result<(Backend, PublicKey)> {
    let mut backend = Backend::new(SeededRng::from_seed(seed));
    let public = backend.identity_generate(slot)?;
    Ok((backend, public))
}

/// The identity slot simulated devices use.
pub const IDENTITY_SLOT: lorapki_crypto::KeySlot = lorapki_crypto::KeySlot(0);

/// A [`DeviceConfig`] for a simulated device with the protocol's default timers.
#[must_use]
pub fn device_config(setup: &DeviceSetup, server_public: PublicKey) -> DeviceConfig {
    DeviceConfig::new(
        setup.dev_eui,
        setup.join_eui,
        LorawanVersion::V1_0,
        IDENTITY_SLOT,
        server_public,
    )
}

impl EndDevice<Pipelined> {
    /// A device running the pipelined `DeviceSession` with `config`.
    ///
    /// # Errors
    ///
    /// Backend or key-store failures.
    pub fn pipelined(
        setup: DeviceSetup,
        mut backend: Backend,
        config: DeviceConfig,
    ) -> Result<Self, lorapki_proto::Error> {
        let store = factory_store(&setup)?;
        let session = DeviceSession::new(
            &mut backend,
            config,
            DevicePersistent::default(),
            lorapki_crypto::KeyStoreStatus {
                active_generation: 0,
                staged: false,
            },
        )?;
        Ok(Self::with_exchange(
            setup,
            backend,
            store,
            Pipelined(session),
        ))
    }
}

impl EndDevice<NaiveExchange> {
    /// A device running the naive order with `config`.
    ///
    /// # Errors
    ///
    /// Backend or key-store failures.
    pub fn naive(
        setup: DeviceSetup,
        mut backend: Backend,
        config: DeviceConfig,
    ) -> Result<Self, lorapki_proto::Error> {
        let store = factory_store(&setup)?;
        let exchange = NaiveExchange::new(&mut backend, config)?;
        Ok(Self::with_exchange(setup, backend, store, exchange))
    }
}

fn factory_store(setup: &DeviceSetup) -> Result<SoftKeyStore, lorapki_proto::Error> {
    let mut store = SoftKeyStore::new();
    store.provision_factory(RootKeys {
        app_key: AesKey::from_array(setup.factory_key),
        nwk_key: None,
    })?;
    Ok(store)
}

impl<X: Exchange> EndDevice<X> {
    fn with_exchange(
        setup: DeviceSetup,
        backend: Backend,
        store: SoftKeyStore,
        exchange: X,
    ) -> Self {
        let rng = SimRng::derive(setup.seed, 0x5eed);
        let wake = Some(setup.start_us);
        let confirm_left = setup.confirm_attempts;
        Self {
            setup,
            backend,
            store: RefCell::new(store),
            exchange,
            rng,
            mac: None,
            dev_nonce: 0,
            phase: Phase::Joining,
            in_flight: None,
            wake,
            confirm_left,
            report: DeviceReport::default(),
        }
    }

    /// The setup.
    #[must_use]
    pub fn setup(&self) -> &DeviceSetup {
        &self.setup
    }

    /// Where the device is.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// What the device did.
    #[must_use]
    pub fn report(&self) -> &DeviceReport {
        &self.report
    }

    /// The exchange strategy.
    pub fn exchange(&self) -> &X {
        &self.exchange
    }

    /// AES-CMAC of `message` under the key in `slot` of the device's key store (to compare with
    /// the join server's keys without reading either); `None` if the slot is empty.
    pub fn key_cmac(&self, slot: RootKeySlot, message: &[u8]) -> Option<[u8; 16]> {
        self.store
            .borrow_mut()
            .root_cmac(slot, RootKeyKind::AppKey, &[message])
            .ok()
    }

    /// The key store's status (generation, staged).
    pub fn key_status(&self) -> Option<lorapki_crypto::KeyStoreStatus> {
        self.store.borrow_mut().status().ok()
    }

    fn uplink_n(&self) -> Option<usize> {
        self.setup
            .region
            .uplink_data_rate(self.setup.data_rate)
            .map(|d| d.max_payload)
    }

    fn drain(&mut self, now_us: u64) {
        while let Some(event) = self.exchange.poll_event() {
            let mut store = self.store.borrow_mut();
            match event {
                DeviceEvent::RunStarted { .. } => {
                    self.report.runs += 1;
                    self.report.run_started_us.get_or_insert(now_us);
                }
                DeviceEvent::StageNewKey(keys) => {
                    record(&mut self.report, store.stage(keys.to_root_keys()));
                }
                DeviceEvent::ActivateNewKey => {
                    record(&mut self.report, store.activate());
                }
                DeviceEvent::Completed => {
                    self.report.completed_us = Some(now_us);
                    self.phase = if self.confirm_left > 0 {
                        Phase::Confirming
                    } else {
                        Phase::Finished
                    };
                }
                DeviceEvent::Failed(reason) => {
                    self.report.failures.push(reason);
                    if self.report.runs >= self.setup.max_runs {
                        self.phase = Phase::GaveUp;
                    }
                }
                _ => {}
            }
        }
    }

    fn schedule(&mut self, now_us: u64) {
        self.wake = match self.phase {
            Phase::Joining => Some(now_us + dur_us(self.setup.join_retry)),
            Phase::Rekeying => {
                if self.exchange.join_key().is_some() {
                    Some(now_us + dur_us(self.setup.join_retry))
                } else {
                    self.exchange.poll_timeout().map(|t| to_us(t).max(now_us))
                }
            }
            Phase::Confirming => Some(now_us + dur_us(self.setup.app_retry)),
            Phase::Finished | Phase::GaveUp => None,
        };
    }

    fn join_request(&mut self, slot: RootKeySlot, channel: u32) -> Option<Uplink> {
        let nonce = self.dev_nonce;
        let request = mac::device_join_request(
            &mut *self.store.borrow_mut(),
            slot,
            &self.setup.join_eui,
            &self.setup.dev_eui,
            nonce,
        );
        let phy = match request {
            Ok(phy) => phy,
            Err(e) => {
                self.report.errors.push(e.into());
                return None;
            }
        };
        // DevNonce increases strictly across all JoinRequests (LoRaWAN 1.0.4, PROTOCOL.md §7).
        self.dev_nonce = self.dev_nonce.wrapping_add(1);
        self.report.join_requests += 1;
        self.in_flight = Some(InFlight::Join { slot, nonce });
        Some(Uplink {
            phy: phy.to_vec(),
            frequency_hz: channel,
            data_rate: self.setup.data_rate,
        })
    }

    fn data_uplink(
        &mut self,
        channel: u32,
        fport: Option<u8>,
        payload: &[u8],
        confirmed: bool,
    ) -> Option<Uplink> {
        let mac = self.mac.as_mut()?;
        let fcnt = mac.fcnt_up;
        mac.fcnt_up += 1;
        let phy = mac::build_data_frame(
            &mac.keys,
            &DataFrame {
                uplink: true,
                confirmed,
                ack: false,
                fcnt,
                fport,
                payload,
            },
        )?;
        self.in_flight = Some(InFlight::Data {
            confirmed,
            fport1: fport != Some(2),
        });
        Some(Uplink {
            phy,
            frequency_hz: channel,
            data_rate: self.setup.data_rate,
        })
    }
}

/// Keeps a failure of the device (an exchange call, a key-store write) in its report.
fn record<E: Into<lorapki_proto::Error>>(report: &mut DeviceReport, result: Result<(), E>) {
    if let Err(e) = result {
        report.errors.push(e.into());
    }
}

impl<X: Exchange> AirDevice for EndDevice<X> {
    fn dev_eui(&self) -> [u8; 8] {
        self.setup.dev_eui
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.wake
    }

    fn poll_uplink(&mut self, ctx: &RadioContext<'_>) -> Option<Uplink> {
        let now_us = ctx.now_us;
        let now = to_instant(now_us);
        let channels = self.setup.region.uplink_channels();
        let channel = channels[self.rng.below(channels.len() as u64) as usize];
        let free = ctx.free_at(channel);
        if free > now_us {
            // Wait for the sub-band: the frame is built when it can go out.
            self.wake = Some(free);
            return None;
        }
        let uplink = match self.phase {
            Phase::Joining => self.join_request(RootKeySlot::Active, channel),
            Phase::Rekeying => {
                if let Some(slot) = self.exchange.join_key() {
                    self.join_request(slot, channel)
                } else {
                    let n = self.uplink_n()?;
                    let mut buf = [0u8; 242];
                    let out = match self
                        .exchange
                        .poll_transmit(&mut self.backend, now, n, &mut buf)
                    {
                        Ok(out) => out,
                        Err(e) => {
                            self.report.errors.push(e);
                            None
                        }
                    };
                    self.drain(now_us);
                    match out {
                        Some(out) => {
                            self.report.fport1_uplinks += 1;
                            self.report.first_fport1_us.get_or_insert(now_us);
                            self.report.fport1_bytes_up += out.len as u32;
                            let fport = (out.len > 0).then_some(lorapki_proto::FPORT);
                            self.data_uplink(channel, fport, &buf[..out.len], out.confirmed)
                        }
                        None => None,
                    }
                }
            }
            Phase::Confirming => {
                self.report.app_uplinks += 1;
                self.confirm_left = self.confirm_left.saturating_sub(1);
                self.data_uplink(channel, Some(2), &[0x01], true)
            }
            Phase::Finished | Phase::GaveUp => None,
        };
        if uplink.is_none() {
            self.schedule(now_us);
            if self.wake.is_some_and(|w| w <= now_us) {
                // Nothing to send now although the exchange wanted to: look again shortly.
                self.wake = Some(now_us + 1_000_000);
            }
        } else {
            self.wake = None;
        }
        uplink
    }

    fn handle_rx(&mut self, now_us: u64, downlink: Option<&Downlink>) {
        let now = to_instant(now_us);
        let in_flight = self.in_flight.take();
        match in_flight {
            Some(InFlight::Join { slot, nonce }) => {
                let opened = downlink.map(|d| {
                    mac::device_open_join_accept(&mut *self.store.borrow_mut(), slot, &d.phy, nonce)
                });
                let keys = match opened {
                    Some(Ok(keys)) => keys,
                    Some(Err(e)) => {
                        self.report.errors.push(e.into());
                        None
                    }
                    None => None,
                };
                let accepted = keys.is_some();
                if let Some(keys) = keys {
                    self.mac = Some(MacState {
                        keys,
                        fcnt_up: 0,
                        last_fcnt_down: None,
                    });
                }
                match self.phase {
                    Phase::Joining if accepted => {
                        self.report.joined_us = Some(now_us);
                        self.phase = Phase::Rekeying;
                        let started = self.exchange.start(&mut self.backend, now);
                        record(&mut self.report, started);
                    }
                    Phase::Rekeying => {
                        let handled = self.exchange.handle_join_result(
                            &mut self.backend,
                            now,
                            slot,
                            accepted,
                        );
                        record(&mut self.report, handled);
                    }
                    _ => {}
                }
                self.drain(now_us);
            }
            Some(InFlight::Data { confirmed, fport1 }) => {
                let mut acked = false;
                let mut received = false;
                if let (Some(d), Some(mac)) = (downlink, self.mac.as_mut())
                    && let Some(frame) = mac::open_data_frame(&mac.keys, &d.phy, mac.last_fcnt_down)
                    && !frame.uplink
                    && mac.last_fcnt_down.is_none_or(|last| frame.fcnt > last)
                {
                    mac.last_fcnt_down = Some(frame.fcnt);
                    received = true;
                    acked = frame.ack && confirmed;
                    if frame.fport == Some(lorapki_proto::FPORT) {
                        self.report.fport1_downlinks += 1;
                        self.report.fport1_bytes_down += frame.payload.len() as u32;
                        if self.phase == Phase::Rekeying
                            && let Err(e) = self.exchange.handle_downlink(
                                &mut self.backend,
                                now,
                                &frame.payload,
                            )
                        {
                            self.report.refused_downlinks.push(e);
                        }
                    }
                }
                if fport1 && self.phase == Phase::Rekeying {
                    self.exchange.handle_rx_done(now, received, acked);
                    let stepped = self.exchange.after_rx(&mut self.backend, now);
                    record(&mut self.report, stepped);
                }
                self.drain(now_us);
                if self.phase == Phase::Confirming && !fport1 {
                    if acked {
                        self.report.confirmed_us = Some(now_us);
                        self.phase = Phase::Finished;
                    } else if self.confirm_left == 0 {
                        self.phase = Phase::Finished;
                    }
                }
            }
            None => {}
        }
        self.schedule(now_us);
        if self.phase == Phase::Rekeying
            && self.exchange.join_key().is_none()
            && self.exchange.poll_timeout().is_none()
        {
            // Idle without completion (e.g. a run that could not start): nothing more to do.
            self.wake = None;
        }
    }
}

/// A quick sanity helper for tests: the FPort-1 FRMPayload capacity of `region`/`dr`, and the PHY
/// size of a full frame.
#[must_use]
pub fn frame_capacity(region: Region, dr: u8) -> Option<(usize, usize)> {
    let n = region.uplink_data_rate(dr)?.max_payload;
    Some((n, n + DATA_FRAME_OVERHEAD))
}

/// Stages `keys` into a store (used by tests that set up a device mid-switch).
///
/// # Errors
///
/// Key-store failures.
pub fn stage_into(store: &mut SoftKeyStore, keys: &NewRootKeys) -> lorapki_crypto::Result<()> {
    store.stage(keys.to_root_keys())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use crate::device::exchange::Outgoing;

    use super::*;

    /// An exchange that only hands out the events it was given.
    struct Scripted(VecDeque<DeviceEvent>);

    impl Exchange for Scripted {
        fn start(&mut self, _: &mut Backend, _: Instant) -> Result<(), lorapki_proto::Error> {
            Ok(())
        }
        fn join_key(&self) -> Option<RootKeySlot> {
            None
        }
        fn poll_transmit(
            &mut self,
            _: &mut Backend,
            _: Instant,
            _: usize,
            _: &mut [u8],
        ) -> Result<Option<Outgoing>, lorapki_proto::Error> {
            Ok(None)
        }
        fn handle_downlink(
            &mut self,
            _: &mut Backend,
            _: Instant,
            _: &[u8],
        ) -> Result<(), lorapki_proto::Error> {
            Err(lorapki_proto::Error::StaleSession)
        }
        fn handle_join_result(
            &mut self,
            _: &mut Backend,
            _: Instant,
            _: RootKeySlot,
            _: bool,
        ) -> Result<(), lorapki_proto::Error> {
            Err(lorapki_proto::Error::InvalidState)
        }
        fn poll_event(&mut self) -> Option<DeviceEvent> {
            self.0.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
    }

    fn device(events: Vec<DeviceEvent>) -> EndDevice<Scripted> {
        let setup = DeviceSetup::new([1; 8], Region::Eu868, 0, 3);
        let Ok((backend, _)) = device_backend(3, IDENTITY_SLOT) else {
            unreachable!("a fresh backend makes an identity key")
        };
        let Ok(store) = factory_store(&setup) else {
            unreachable!("a fresh store takes the factory key")
        };
        EndDevice::with_exchange(setup, backend, store, Scripted(events.into()))
    }

    #[test]
    fn failed_key_store_writes_are_in_the_report() {
        // Nothing is staged: activating fails in the store.
        let mut d = device(vec![DeviceEvent::ActivateNewKey]);
        d.drain(0);
        let no_staged = lorapki_proto::Error::Crypto(lorapki_crypto::Error::NoStagedKey);
        assert_eq!(d.report().errors, vec![no_staged]);
        // The factory key is still the active key.
        assert!(d.key_cmac(RootKeySlot::Active, b"probe").is_some());
        assert_eq!(d.key_cmac(RootKeySlot::Staged, b"probe"), None);
    }

    #[test]
    fn failed_exchange_calls_are_in_the_report() {
        let mut d = device(Vec::new());
        d.phase = Phase::Rekeying;
        d.in_flight = Some(InFlight::Join {
            slot: RootKeySlot::Staged,
            nonce: 0,
        });
        d.handle_rx(1_000_000, None);
        assert_eq!(d.report().errors, vec![lorapki_proto::Error::InvalidState]);
        assert!(d.report().refused_downlinks.is_empty());
    }
}
