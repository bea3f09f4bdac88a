//! The real `lorawan-device` MAC (`nb_device`) behind the lorapki adapter, as a netsim
//! [`AirDevice`]: a simulated radio behind the MAC's radio trait, a memory persistence, and
//! [`OnAir`], which puts a [`LorapkiDevice`] on netsim's air, or on the virtual gateway's.
//!
//! The air drives a device per uplink: `poll_uplink` (the device may transmit now), then
//! `handle_rx` once the receive windows are over, with the downlink the gateway sent, if any.
//! [`OnAir`] turns that into what a radio and a timer would tell the MAC: the transmission
//! completes at once, then the MAC's timer fires for RX1, the radio's interrupt reports the frame
//! if the gateway sent it in that window on the frequency and data rate the MAC listens on, and
//! likewise for RX2.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use lorapki_crypto::{
    AesKey, KeySlot, KeyStoreStatus, RootKeyKind, RootKeySlot, RootKeyStore, RootKeys,
};
use lorapki_crypto_soft::SoftKeyStore;
use lorapki_lorawan::lorawan_device::Timings;
use lorapki_lorawan::lorawan_device::nb_device::Response;
use lorapki_lorawan::lorawan_device::nb_device::radio::{
    Event as RadioEvent, PhyRxTx, Response as RadioResponse, RfConfig, RxQuality, TxConfig,
};
use lorapki_lorawan::lorawan_device::region::{self, DR, Subband, US915};
use lorapki_lorawan::{
    Config, Error, Event, LorapkiDevice, Persist, PersistError, PersistentState,
};
use lorapki_netsim::device::{AirDevice, IDENTITY_SLOT, RadioContext, device_backend};
use lorapki_netsim::ns::{Backend, Downlink, RxWindow, Uplink};
use lorapki_netsim::region::Region;
use lorapki_proto::{DeviceConfig, Duration, Instant, LorawanVersion};

/// The DevEUI of [`device`] (MSB first).
pub const DEV_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x0a, 0x01];
/// The JoinEUI of every device here (MSB first).
pub const JOIN_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x00];
/// The factory AppKey of [`factory_store`].
pub const FACTORY_KEY: [u8; 16] = [0x2b; 16];
/// A message whose AES-CMAC compares root keys without reading them.
pub const PROBE: &[u8] = b"lorapki-lorawan key probe";

/// The device stack under test.
pub type Device = LorapkiDevice<SimRadio, Backend, SoftKeyStore, MemPersist>;

// ----- persistence -----

/// A persistence in memory, shared with the test (and with [`SimRadio`], which checks that a
/// JoinRequest's DevNonce was stored before it goes out).
#[derive(Clone, Default)]
pub struct MemPersist {
    pub stored: Rc<RefCell<Option<PersistentState>>>,
    pub saves: Rc<Cell<u32>>,
    pub fail: Rc<Cell<bool>>,
}

impl Persist for MemPersist {
    fn save(&mut self, state: &PersistentState) -> Result<(), PersistError> {
        if self.fail.get() {
            return Err(PersistError);
        }
        // Through the byte encoding, as a flash store would.
        let bytes = state.to_bytes();
        *self.stored.borrow_mut() = Some(PersistentState::from_bytes(&bytes).unwrap());
        self.saves.set(self.saves.get() + 1);
        Ok(())
    }
}

// ----- the radio -----

/// The radio's interrupt: a frame was received.
#[derive(Debug)]
pub struct FrameReceived;

/// A transmission the radio refused (test switch).
#[derive(Debug)]
pub struct TxRefused;

/// A radio that records what the MAC transmits and where it listens, and reports the frame the
/// test puts in `packet`.
pub struct SimRadio {
    /// The radio's clock (ms), as `TxDone` reports it.
    pub now_ms: u32,
    /// The last transmission, until the test takes it.
    pub sent: Option<(TxConfig, Vec<u8>)>,
    /// Where the MAC listens, while a window is open.
    pub listening: Option<RfConfig>,
    /// The frame the next interrupt reports.
    pub packet: Vec<u8>,
    /// Refuse transmissions.
    pub refuse_tx: bool,
    /// What went on the air, shared with the test.
    pub log: Rc<RefCell<RadioLog>>,
    persisted: Rc<RefCell<Option<PersistentState>>>,
}

/// What a [`SimRadio`] transmitted.
#[derive(Clone, Debug, Default)]
pub struct RadioLog {
    /// Every JoinRequest DevNonce that went on the air, in order.
    pub dev_nonces: Vec<u16>,
    /// JoinRequests whose DevNonce was not persisted before they went out.
    pub write_ahead_violations: u32,
    /// Data frames transmitted, and the largest PHY payload among them.
    pub data_frames: u32,
    pub largest_data_frame: usize,
}

impl SimRadio {
    pub fn new(persist: &MemPersist) -> Self {
        Self {
            now_ms: 0,
            sent: None,
            listening: None,
            packet: Vec::new(),
            refuse_tx: false,
            log: Rc::default(),
            persisted: persist.stored.clone(),
        }
    }
}

impl PhyRxTx for SimRadio {
    type PhyEvent = FrameReceived;
    type PhyError = TxRefused;
    type PhyResponse = ();

    const MAX_RADIO_POWER: u8 = 22;

    fn get_mut_radio(&mut self) -> &mut Self {
        self
    }

    fn get_received_packet(&mut self) -> &mut [u8] {
        &mut self.packet
    }

    fn handle_event(
        &mut self,
        event: RadioEvent<'_, Self>,
    ) -> Result<RadioResponse<Self>, TxRefused> {
        match event {
            RadioEvent::TxRequest(config, frame) => {
                if self.refuse_tx {
                    return Err(TxRefused);
                }
                let mut log = self.log.borrow_mut();
                if frame.len() == 23 && frame[0] == 0 {
                    let nonce = u16::from_le_bytes([frame[17], frame[18]]);
                    log.dev_nonces.push(nonce);
                    let stored = self.persisted.borrow().and_then(|s| s.last_dev_nonce);
                    if stored != Some(nonce) {
                        log.write_ahead_violations += 1;
                    }
                } else {
                    log.data_frames += 1;
                    log.largest_data_frame = log.largest_data_frame.max(frame.len());
                }
                self.sent = Some((config, frame.to_vec()));
                Ok(RadioResponse::TxDone(self.now_ms))
            }
            RadioEvent::RxRequest(config) => {
                self.listening = Some(config);
                Ok(RadioResponse::Rxing)
            }
            RadioEvent::CancelRx => {
                self.listening = None;
                Ok(RadioResponse::Idle)
            }
            RadioEvent::Phy(FrameReceived) => Ok(RadioResponse::RxDone(RxQuality::new(-90, 7))),
        }
    }
}

impl Timings for SimRadio {
    fn get_rx_window_offset_ms(&self) -> i32 {
        0
    }
    fn get_rx_window_duration_ms(&self) -> u32 {
        500
    }
}

// ----- setting a device up -----

pub fn data_rate(index: u8) -> DR {
    match index {
        0 => DR::_0,
        1 => DR::_1,
        2 => DR::_2,
        3 => DR::_3,
        4 => DR::_4,
        5 => DR::_5,
        6 => DR::_6,
        _ => panic!("data rate {index} not used by these tests"),
    }
}

/// The `lorawan-device` region for a netsim region. US915 joins first on sub-band 2, the eight
/// channels of netsim's gateway (and of most US915 networks).
pub fn mac_region(region: Region) -> region::Configuration {
    match region {
        Region::Eu868 => region::Configuration::new(region::Region::EU868),
        Region::Us915 => {
            let mut us915 = US915::new();
            us915.set_join_bias(Subband::_2);
            us915.into()
        }
        other => panic!("{} not used by these tests", other.name()),
    }
}

pub fn factory_store() -> SoftKeyStore {
    let mut store = SoftKeyStore::new();
    store
        .provision_factory(RootKeys {
            app_key: AesKey::from_array(FACTORY_KEY),
            nwk_key: None,
        })
        .unwrap();
    store
}

/// A device with a fresh identity (from `seed`) pinned to `server_public`, its persistence and
/// the identity public key to register at the server.
pub fn device(
    region: Region,
    dr: u8,
    seed: u64,
    server_public: lorapki_crypto::PublicKey,
    store: SoftKeyStore,
    state: PersistentState,
    tune: impl FnOnce(&mut Config),
) -> (Device, MemPersist, lorapki_crypto::PublicKey) {
    device_with_eui(
        DEV_EUI,
        LorawanVersion::V1_0,
        region,
        dr,
        seed,
        server_public,
        store,
        state,
        tune,
    )
}

/// As [`device`], with its own DevEUI and LoRaWAN version.
#[allow(clippy::too_many_arguments)]
pub fn device_with_eui(
    dev_eui: [u8; 8],
    lorawan: LorawanVersion,
    region: Region,
    dr: u8,
    seed: u64,
    server_public: lorapki_crypto::PublicKey,
    store: SoftKeyStore,
    state: PersistentState,
    tune: impl FnOnce(&mut Config),
) -> (Device, MemPersist, lorapki_crypto::PublicKey) {
    let (backend, identity) = device_backend(seed, IDENTITY_SLOT).unwrap();
    let persist = MemPersist::default();
    *persist.stored.borrow_mut() = Some(state);
    let radio = SimRadio::new(&persist);
    let mut session = DeviceConfig::new(dev_eui, JOIN_EUI, lorawan, IDENTITY_SLOT, server_public);
    session.retransmit_interval = Duration::from_secs(30);
    let mut config = Config::new(session);
    tune(&mut config);
    let mut device = LorapkiDevice::new(
        config,
        mac_region(region),
        radio,
        backend,
        store,
        persist.clone(),
        state,
    )
    .unwrap();
    device.set_data_rate(data_rate(dr));
    (device, persist, identity)
}

pub fn server_key() -> (Backend, lorapki_crypto::PublicKey) {
    lorapki_netsim::world::server_backend(0x5e_7e, 0).unwrap()
}

pub const SERVER_SLOT: KeySlot = IDENTITY_SLOT;

// ----- a device on netsim's air -----

fn ms(us: u64) -> Instant {
    Instant::from_millis(us / 1000)
}

/// Where a netsim downlink must be heard: its frequency and modulation.
fn heard(region: Region, downlink: &Downlink, listening: &RfConfig) -> bool {
    let Some(rate) = region.downlink_data_rate(downlink.data_rate) else {
        return false;
    };
    listening.frequency == downlink.frequency_hz
        && listening.bb.sf.factor() == u32::from(rate.spreading_factor)
        && listening.bb.bw.hz() == rate.bandwidth_hz
}

/// The netsim data rate of a transmission, from its modulation.
fn uplink_data_rate(region: Region, config: &TxConfig) -> u8 {
    (0..16)
        .find(|&dr| {
            region.uplink_data_rate(dr).is_some_and(|rate| {
                config.rf.bb.sf.factor() == u32::from(rate.spreading_factor)
                    && config.rf.bb.bw.hz() == rate.bandwidth_hz
            })
        })
        .expect("the MAC transmitted on a modulation the region does not define")
}

/// A [`LorapkiDevice`] as a netsim `AirDevice`.
pub struct OnAir {
    pub device: Device,
    dev_eui: [u8; 8],
    /// An application uplink to send as soon as the MAC is idle: FPort and payload.
    app_uplink: Option<(u8, Vec<u8>)>,
    pub persist: MemPersist,
    pub radio_log: Rc<RefCell<RadioLog>>,
    region: Region,
    wake: Option<u64>,
    /// Every event of the adapter, with its time (µs).
    pub events: Vec<(u64, Event)>,
    /// Errors the adapter returned (there should be none).
    pub errors: Vec<String>,
    /// Downlinks the gateway sent where or when the MAC was not listening, and why.
    pub missed: u32,
    pub missed_detail: Vec<String>,
    last_uplink: Option<(u32, u8)>,
    /// The MAC's responses, for the trace.
    pub responses: Vec<String>,
    /// The key store after the last interaction: its status, and the CMAC of [`PROBE`] under
    /// the active and the staged key (netsim hands out its devices only by shared reference).
    pub keys: Option<KeyStoreStatus>,
    pub active_probe: Option<[u8; 16]>,
    pub staged_probe: Option<[u8; 16]>,
}

impl OnAir {
    pub fn new(mut device: Device, persist: MemPersist, region: Region) -> Self {
        let radio_log = device.radio().log.clone();
        Self {
            device,
            dev_eui: DEV_EUI,
            app_uplink: None,
            persist,
            radio_log,
            region,
            wake: Some(0),
            events: Vec::new(),
            errors: Vec::new(),
            missed: 0,
            missed_detail: Vec::new(),
            last_uplink: None,
            responses: Vec::new(),
            keys: None,
            active_probe: None,
            staged_probe: None,
        }
    }

    /// The same device under another DevEUI (the one its session was configured with).
    #[must_use]
    pub fn with_dev_eui(mut self, dev_eui: [u8; 8]) -> Self {
        self.dev_eui = dev_eui;
        self
    }

    /// Sends an application uplink (unconfirmed) once the MAC is idle and joined.
    pub fn queue_uplink(&mut self, fport: u8, data: &[u8]) {
        self.app_uplink = Some((fport, data.to_vec()));
        self.wake = Some(self.wake.unwrap_or(0));
    }

    /// Whether a queued application uplink is still waiting.
    #[must_use]
    pub fn uplink_queued(&self) -> bool {
        self.app_uplink.is_some()
    }

    pub fn saw(&self, wanted: &Event) -> bool {
        self.events.iter().any(|(_, e)| e == wanted)
    }

    pub fn key_cmac(&mut self, slot: RootKeySlot) -> Option<[u8; 16]> {
        self.device
            .key_store()
            .root_cmac(slot, RootKeyKind::AppKey, &[PROBE])
            .ok()
    }

    fn record(
        &mut self,
        now_us: u64,
        result: Result<Response, Error<TxRefused>>,
    ) -> Option<Response> {
        while let Some(event) = self.device.poll_event() {
            self.events.push((now_us, event));
        }
        match result {
            Ok(response) => {
                self.responses
                    .push(format!("{:>10} ms {response:?}", now_us / 1000));
                Some(response)
            }
            Err(e) => {
                self.errors.push(format!("{:>10} ms {e}", now_us / 1000));
                None
            }
        }
    }

    fn schedule(&mut self, now_us: u64) {
        self.keys = self.device.key_status().ok();
        self.active_probe = self.key_cmac(RootKeySlot::Active);
        self.staged_probe = self.key_cmac(RootKeySlot::Staged);
        self.wake = self
            .device
            .poll_timeout()
            .map(|t| t.as_millis().saturating_mul(1000).max(now_us));
        if self.app_uplink.is_some() {
            // Look again within a second for the MAC to be idle.
            let soon = now_us + 1_000_000;
            self.wake = Some(self.wake.map_or(soon, |w| w.min(soon)));
        }
    }
}

impl AirDevice for OnAir {
    fn dev_eui(&self) -> [u8; 8] {
        self.dev_eui
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.wake
    }

    fn poll_uplink(&mut self, ctx: &RadioContext<'_>) -> Option<Uplink> {
        // A regulatory radio driver: wait until the sub-band of the default channels is free
        // (EU868: all three share one 1 % sub-band; US915 has no duty cycle).
        let free = self
            .region
            .uplink_channels()
            .iter()
            .map(|&f| ctx.free_at(f))
            .min()
            .unwrap_or(0);
        if free > ctx.now_us {
            self.wake = Some(free);
            return None;
        }
        self.device.radio().now_ms = (ctx.now_us / 1000) as u32;
        let app = self
            .app_uplink
            .take_if(|_| self.device.is_idle() && self.device.is_joined());
        let result = match app {
            Some((fport, data)) => self.device.send(fport, &data, false),
            None => self.device.poll(ms(ctx.now_us)),
        };
        self.record(ctx.now_us, result);
        let Some((config, phy)) = self.device.radio().sent.take() else {
            self.schedule(ctx.now_us);
            return None;
        };
        self.schedule(ctx.now_us);
        self.wake = None;
        let data_rate = uplink_data_rate(self.region, &config);
        self.last_uplink = Some((config.rf.frequency, data_rate));
        Some(Uplink {
            phy,
            frequency_hz: config.rf.frequency,
            data_rate,
        })
    }

    fn handle_rx(&mut self, now_us: u64, downlink: Option<&Downlink>) {
        let now = ms(now_us);
        self.device.radio().now_ms = (now_us / 1000) as u32;
        let mut delivered = downlink.is_none();
        let mut listened = Vec::new();
        for window in [RxWindow::Rx1, RxWindow::Rx2] {
            // The MAC's timer opens the window...
            let opened = self.device.handle_timeout(now);
            self.record(now_us, opened);
            let listening = self.device.radio().listening;
            listened.push(listening.map(|l| (l.frequency, l.bb.sf.factor(), l.bb.bw.hz())));
            if let Some(d) = downlink.filter(|d| d.window == window)
                && listening.is_some_and(|l| heard(self.region, d, &l))
            {
                self.device.radio().packet = d.phy.clone();
                let result = self.device.handle_radio_event(now, FrameReceived);
                delivered = true;
                if self.record(now_us, result).is_some() && self.device.is_idle() {
                    break;
                }
            }
            // ... and closes it.
            let closed = self.device.handle_timeout(now);
            self.record(now_us, closed);
            if self.device.is_idle() {
                break;
            }
        }
        if !delivered {
            self.missed += 1;
            self.missed_detail.push(format!(
                "uplink (Hz, DR) {:?}: gateway sent {:?} at {} Hz DR{}, the MAC listened on \
                 (Hz, SF, BW) {listened:?}",
                self.last_uplink,
                downlink.map(|d| d.window),
                downlink.map_or(0, |d| d.frequency_hz),
                downlink.map_or(0, |d| d.data_rate),
            ));
        }
        self.schedule(now_us);
    }
}
