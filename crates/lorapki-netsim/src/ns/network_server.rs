//! The network server (with its gateways' duty-cycle state and the join server) in front of an
//! [`Application`]: MIC and FCnt checks, the downlink queue, the RX windows, the integration's
//! faults.

use std::collections::{BTreeMap, HashMap, VecDeque};

use lorapki_crypto::RootKeySlot;
use lorapki_proto::Instant;

use super::air::{Downlink, RxWindow, Uplink};
use super::join_server::{JoinServer, KeyEvent};
use super::model::{AnswerModel, Faults};
use crate::duty::DutyCycle;
use crate::mac::{self, DataFrame, SessionKeys};
use crate::region::{
    JOIN_ACCEPT_DELAY1_MS, JOIN_ACCEPT_DELAY2_MS, RECEIVE_DELAY1_MS, RECEIVE_DELAY2_MS, Region,
};
use crate::rng::SimRng;

/// The application server behind the network server: where the lorapki server plugs in.
///
/// The network server calls [`handle_join_verified`] when its join server accepted a JoinRequest
/// (before the JoinAccept goes out), and, per uplink: [`handle_uplink`] (FPort 1 only),
/// [`poll_downlink`] (when it may queue or send a downlink for the device); after each it drains
/// [`poll_key_event`] into its join server.
///
/// [`handle_join_verified`]: Application::handle_join_verified
/// [`handle_uplink`]: Application::handle_uplink
/// [`poll_downlink`]: Application::poll_downlink
/// [`poll_key_event`]: Application::poll_key_event
pub trait Application {
    /// An FPort-1 FRMPayload from `dev_eui`.
    fn handle_uplink(&mut self, now: Instant, dev_eui: &[u8; 8], payload: &[u8]);
    /// The FPort-1 downlink for `dev_eui`, at most `n` bytes, written into `buf`.
    fn poll_downlink(
        &mut self,
        now: Instant,
        dev_eui: &[u8; 8],
        n: usize,
        buf: &mut [u8],
    ) -> Option<usize>;
    /// The join server verified a JoinRequest of `dev_eui` under its key in `slot`.
    fn handle_join_verified(&mut self, now: Instant, dev_eui: &[u8; 8], slot: RootKeySlot);
    /// The next root-key change for the join server.
    fn poll_key_event(&mut self) -> Option<KeyEvent>;
    /// Time passes (called periodically by the simulator).
    fn handle_tick(&mut self, _now: Instant) {}
}

/// Network-server counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsStats {
    /// Uplinks received from the air.
    pub uplinks: u64,
    /// JoinRequests accepted / refused (MIC, DevNonce).
    pub joins_accepted: u64,
    /// JoinRequests refused.
    pub joins_refused: u64,
    /// Data uplinks dropped by the MAC (bad MIC, old FCnt).
    pub mac_drops: u64,
    /// FPort-1 payloads handed to the application (duplicates included).
    pub fport1_delivered: u64,
    /// Uplink payloads duplicated / held back by the integration.
    pub up_duplicated: u64,
    /// Uplink payloads held back.
    pub up_reordered: u64,
    /// Downlink payloads duplicated / held back.
    pub down_duplicated: u64,
    /// Downlink payloads held back.
    pub down_reordered: u64,
    /// Downlinks transmitted (JoinAccepts included).
    pub downlinks: u64,
    /// Downlinks sent in RX2.
    pub rx2: u64,
    /// Downlinks the gateway could not send (duty cycle).
    pub blocked: u64,
}

struct NsSession {
    keys: SessionKeys,
    last_fcnt_up: Option<u32>,
    fcnt_down: u32,
    confirmed: bool,
}

#[derive(Default)]
struct NsDevice {
    session: Option<NsSession>,
    queue: VecDeque<Vec<u8>>,
    held_down: Option<Vec<u8>>,
    held_up: Option<Vec<u8>>,
}

/// Configuration of the network side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NsConfig {
    /// The answer model.
    pub model: AnswerModel,
    /// Integration faults (duplication, reordering); loss is applied on the air by the simulator.
    pub faults: Faults,
    /// NetID in JoinAccepts.
    pub net_id: u32,
    /// Downlink payloads queued per device at most (the oldest is dropped beyond).
    pub queue_limit: usize,
    /// Seed of the integration's fault decisions.
    pub seed: u64,
}

impl NsConfig {
    /// A fault-free network with `model`.
    #[must_use]
    pub fn new(model: AnswerModel) -> Self {
        Self {
            model,
            faults: Faults::none(),
            net_id: 0x13,
            queue_limit: 8,
            seed: 1,
        }
    }
}

/// The network server (with its gateways' duty-cycle state and the join server) in front of an
/// [`Application`].
pub struct NetworkServer<A> {
    region: Region,
    config: NsConfig,
    /// The application server (the lorapki server in the tests).
    pub app: A,
    /// The join server.
    pub join_server: JoinServer,
    devices: BTreeMap<[u8; 8], NsDevice>,
    by_addr: HashMap<u32, [u8; 8]>,
    gateways: Vec<DutyCycle>,
    rng: SimRng,
    next_addr: u32,
    /// Counters.
    pub stats: NsStats,
}

fn ms(us: u64) -> Instant {
    Instant::from_millis(us / 1000)
}

impl<A: Application> NetworkServer<A> {
    /// A network server for `region` with `gateways` gateways in front of `app`.
    pub fn new(region: Region, config: NsConfig, app: A, gateways: usize) -> Self {
        Self {
            region,
            config,
            app,
            join_server: JoinServer::new(),
            devices: BTreeMap::new(),
            by_addr: HashMap::new(),
            gateways: vec![DutyCycle::new(); gateways.max(1)],
            rng: SimRng::new(config.seed),
            next_addr: 0x2600_0000,
            stats: NsStats::default(),
        }
    }

    /// The region.
    #[must_use]
    pub fn region(&self) -> Region {
        self.region
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &NsConfig {
        &self.config
    }

    /// Whether the first uplink of the device's current session arrived.
    #[must_use]
    pub fn session_confirmed(&self, dev_eui: &[u8; 8]) -> bool {
        self.devices
            .get(dev_eui)
            .and_then(|d| d.session.as_ref())
            .is_some_and(|s| s.confirmed)
    }

    fn drain_key_events(&mut self) {
        while let Some(event) = self.app.poll_key_event() {
            self.join_server.apply(event);
        }
    }

    /// An uplink received by `gateway` at `end_us` (the end of its transmission); returns the
    /// downlink the gateway transmits in its RX1 or RX2 window, if any.
    pub fn handle_uplink(
        &mut self,
        end_us: u64,
        gateway: usize,
        uplink: &Uplink,
    ) -> Option<Downlink> {
        self.stats.uplinks += 1;
        let gateway = gateway % self.gateways.len();
        if mac::is_join_request(&uplink.phy) {
            return self.handle_join(end_us, gateway, uplink);
        }
        let addr = mac::data_dev_addr(&uplink.phy)?;
        let Some(dev_eui) = self.by_addr.get(&addr).copied() else {
            self.stats.mac_drops += 1;
            return None;
        };
        let device = self.devices.entry(dev_eui).or_default();
        let session = device.session.as_mut()?;
        let Some(frame) = mac::open_data_frame(&session.keys, &uplink.phy, session.last_fcnt_up)
        else {
            self.stats.mac_drops += 1;
            return None;
        };
        let retransmission = session.last_fcnt_up == Some(frame.fcnt);
        if session.last_fcnt_up.is_some_and(|last| frame.fcnt < last) {
            self.stats.mac_drops += 1;
            return None;
        }
        if retransmission && !frame.confirmed {
            self.stats.mac_drops += 1;
            return None;
        }
        session.last_fcnt_up = Some(frame.fcnt);
        let now = ms(end_us);
        session.confirmed = true;
        let windows = self.windows(end_us, gateway, uplink, false);
        // Next-uplink model: what was queued before this uplink goes out in its window.
        let mut payload = None;
        if self.config.model == AnswerModel::NextUplink {
            payload = self.pop_queue(&dev_eui, windows.map(|w| w.2));
        }
        if frame.fport == Some(lorapki_proto::FPORT) && !retransmission {
            self.deliver_uplink(now, &dev_eui, frame.payload);
        }
        self.drain_key_events();
        // Ask the application for a downlink: sized for the chosen window (same-window) or for
        // RX1 of the next uplink (next-uplink).
        let poll_n = match self.config.model {
            AnswerModel::SameWindow => windows.map(|w| w.2),
            AnswerModel::NextUplink => self.rx1_payload(uplink.data_rate),
        };
        if let Some(n) = poll_n {
            let mut buf = [0u8; 242];
            if let Some(len) = self.app.poll_downlink(now, &dev_eui, n.min(242), &mut buf) {
                self.enqueue(&dev_eui, buf[..len].to_vec());
            }
        }
        if self.config.model == AnswerModel::SameWindow {
            payload = self.pop_queue(&dev_eui, windows.map(|w| w.2));
        }
        let Some((window, start_us, _n, dr, frequency)) =
            windows.map(|w| (w.0, w.1, w.2, w.3, w.4))
        else {
            if payload.is_some() || frame.confirmed {
                self.stats.blocked += 1;
            }
            if let Some(p) = payload {
                self.requeue_front(&dev_eui, p);
            }
            return None;
        };
        if payload.is_none() && !frame.confirmed {
            return None;
        }
        let device = self.devices.get_mut(&dev_eui)?;
        let session = device.session.as_mut()?;
        let fcnt = session.fcnt_down;
        session.fcnt_down += 1;
        let phy = mac::build_data_frame(
            &session.keys,
            &DataFrame {
                uplink: false,
                confirmed: false,
                ack: frame.confirmed,
                fcnt,
                fport: payload.as_ref().map(|_| lorapki_proto::FPORT),
                payload: payload.as_deref().unwrap_or(&[]),
            },
        )?;
        Some(self.transmit(
            gateway,
            window,
            start_us,
            dr,
            frequency,
            phy,
            payload.is_some(),
        ))
    }

    fn handle_join(&mut self, end_us: u64, gateway: usize, uplink: &Uplink) -> Option<Downlink> {
        let addr = self.next_addr;
        let answer =
            match self
                .join_server
                .handle_join_request(&uplink.phy, self.config.net_id, addr)
            {
                Ok(answer) => answer,
                Err(_) => {
                    self.stats.joins_refused += 1;
                    return None;
                }
            };
        self.stats.joins_accepted += 1;
        self.next_addr += 1;
        // §7: the JoinRequest under the staged key is what confirms it.
        self.app
            .handle_join_verified(ms(end_us), &answer.dev_eui, answer.slot);
        self.drain_key_events();
        let device = self.devices.entry(answer.dev_eui).or_default();
        if let Some(old) = device.session.take() {
            self.by_addr.remove(&old.keys.dev_addr);
        }
        // A join flushes the device queue (as network servers do).
        device.queue.clear();
        device.held_down = None;
        device.held_up = None;
        self.by_addr.insert(answer.keys.dev_addr, answer.dev_eui);
        device.session = Some(NsSession {
            keys: answer.keys,
            last_fcnt_up: None,
            fcnt_down: 0,
            confirmed: false,
        });
        let (window, start_us, _, dr, frequency) = self.windows(end_us, gateway, uplink, true)?;
        Some(self.transmit(
            gateway,
            window,
            start_us,
            dr,
            frequency,
            answer.accept,
            false,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn transmit(
        &mut self,
        gateway: usize,
        window: RxWindow,
        start_us: u64,
        data_rate: u8,
        frequency_hz: u32,
        phy: Vec<u8>,
        fport1: bool,
    ) -> Downlink {
        let toa_us = self
            .region
            .downlink_data_rate(data_rate)
            .map_or(0, |d| d.time_on_air_us(phy.len(), false));
        self.gateways[gateway].record(self.region, frequency_hz, start_us, toa_us);
        self.stats.downlinks += 1;
        if window == RxWindow::Rx2 {
            self.stats.rx2 += 1;
        }
        Downlink {
            phy,
            window,
            frequency_hz,
            data_rate,
            start_us,
            toa_us,
            fport1,
        }
    }

    fn rx1_payload(&self, uplink_dr: u8) -> Option<usize> {
        let rx1 = self.region.rx1_data_rate(uplink_dr);
        self.region.downlink_data_rate(rx1).map(|d| d.max_payload)
    }

    /// The window the gateway can use: (window, start, N, DR, frequency).
    fn windows(
        &self,
        end_us: u64,
        gateway: usize,
        uplink: &Uplink,
        join: bool,
    ) -> Option<(RxWindow, u64, usize, u8, u32)> {
        let (d1, d2) = if join {
            (JOIN_ACCEPT_DELAY1_MS, JOIN_ACCEPT_DELAY2_MS)
        } else {
            (RECEIVE_DELAY1_MS, RECEIVE_DELAY2_MS)
        };
        let gw = &self.gateways[gateway];
        let rx1_dr = self.region.rx1_data_rate(uplink.data_rate);
        let rx1_f = self.region.rx1_frequency(uplink.frequency_hz);
        let rx1_start = end_us + d1 * 1000;
        if let Some(rate) = self.region.downlink_data_rate(rx1_dr)
            && gw.free_at(self.region, rx1_f) <= rx1_start
        {
            return Some((RxWindow::Rx1, rx1_start, rate.max_payload, rx1_dr, rx1_f));
        }
        let (rx2_f, rx2_dr) = self.region.rx2();
        let rx2_start = end_us + d2 * 1000;
        let rate = self.region.downlink_data_rate(rx2_dr)?;
        (gw.free_at(self.region, rx2_f) <= rx2_start).then_some((
            RxWindow::Rx2,
            rx2_start,
            rate.max_payload,
            rx2_dr,
            rx2_f,
        ))
    }

    fn deliver_uplink(&mut self, now: Instant, dev_eui: &[u8; 8], payload: Vec<u8>) {
        let faults = self.config.faults.uplink;
        let mut deliveries = Vec::new();
        if self.rng.chance(faults.reordering) {
            self.stats.up_reordered += 1;
            let device = self.devices.entry(*dev_eui).or_default();
            if let Some(held) = device.held_up.replace(payload) {
                deliveries.push(held);
            }
        } else {
            deliveries.push(payload.clone());
            if self.rng.chance(faults.duplication) {
                self.stats.up_duplicated += 1;
                deliveries.push(payload);
            }
            let device = self.devices.entry(*dev_eui).or_default();
            if let Some(held) = device.held_up.take() {
                deliveries.push(held);
            }
        }
        for p in deliveries {
            self.stats.fport1_delivered += 1;
            self.app.handle_uplink(now, dev_eui, &p);
            self.drain_key_events();
        }
    }

    fn enqueue(&mut self, dev_eui: &[u8; 8], payload: Vec<u8>) {
        let faults = self.config.faults.downlink;
        let reorder = self.rng.chance(faults.reordering);
        let duplicate = !reorder && self.rng.chance(faults.duplication);
        let limit = self.config.queue_limit.max(1);
        let device = self.devices.entry(*dev_eui).or_default();
        if reorder {
            self.stats.down_reordered += 1;
            if let Some(held) = device.held_down.replace(payload) {
                device.queue.push_back(held);
            }
        } else {
            if duplicate {
                self.stats.down_duplicated += 1;
                device.queue.push_back(payload.clone());
            }
            device.queue.push_back(payload);
            if let Some(held) = device.held_down.take() {
                device.queue.push_back(held);
            }
        }
        while device.queue.len() > limit {
            device.queue.pop_front();
        }
    }

    /// The head of the device's queue if it fits in `n` (a held-back payload is released when
    /// nothing else is queued).
    fn pop_queue(&mut self, dev_eui: &[u8; 8], n: Option<usize>) -> Option<Vec<u8>> {
        let n = n?;
        let device = self.devices.get_mut(dev_eui)?;
        if device.queue.is_empty()
            && let Some(held) = device.held_down.take()
        {
            device.queue.push_back(held);
        }
        if device.queue.front().is_some_and(|p| p.len() <= n) {
            device.queue.pop_front()
        } else {
            None
        }
    }

    fn requeue_front(&mut self, dev_eui: &[u8; 8], payload: Vec<u8>) {
        if let Some(device) = self.devices.get_mut(dev_eui) {
            device.queue.push_front(payload);
        }
    }

    /// Periodic work (the application's timers).
    pub fn tick(&mut self, now_us: u64) {
        self.app.handle_tick(ms(now_us));
        self.drain_key_events();
    }
}
