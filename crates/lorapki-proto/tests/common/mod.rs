//! A `Pair`-style harness (after quinn-proto's tests): one device and one server endpoint on a
//! virtual clock, joined by a simulated network server with either answer model, a join server
//! that checks JoinRequest MICs against the keys it accepts, and fault injectors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use lorapki_crypto::{
    AesBackend, AesKey, CryptoBackend, KeyImport, KeySlot, KeyStoreStatus, PublicKey, RootKeyKind,
    RootKeySlot, RootKeyStore, RootKeys, Secret,
};
use lorapki_crypto_soft::{SoftBackend, SoftKeyStore, TestRng};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceRecord, DeviceSession, DeviceStatus,
    Duration, FailReason, Instant, LorawanVersion, ServerConfig, ServerEndpoint, ServerEvent,
};

pub type Backend = SoftBackend<TestRng>;

pub const DEV_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x01];
pub const JOIN_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x00];
pub const FACTORY_APP_KEY: [u8; 16] = [
    0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
];
pub const SLOT: KeySlot = KeySlot(0);

/// When the network server sends the server's answer (PROTOCOL.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsModel {
    /// In the RX window of the uplink that carried the request.
    SameWindow,
    /// Only in the RX window of the next uplink (application integrations).
    NextUplink,
}

/// What happens to one frame on the air.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
    Duplicate,
    /// Held back and delivered after the next frame in the same direction (reordering).
    Delay,
    /// Delivered, and an earlier frame of the same direction is replayed after it.
    Replay,
}

/// A fault schedule: the fate of the i-th uplink, downlink and JoinAccept (default: delivered).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub uplinks: Vec<Fate>,
    pub downlinks: Vec<Fate>,
    /// `true` = the JoinAccept of the i-th JoinRequest is lost.
    pub join_accept_lost: Vec<bool>,
    /// Restart the device (from its persisted state and key store) before the i-th step.
    pub device_restarts: Vec<u32>,
    /// Restart the server (from its exported snapshot) before the i-th step.
    pub server_restarts: Vec<u32>,
}

impl Faults {
    fn fate(list: &[Fate], i: u32) -> Fate {
        list.get(i as usize).copied().unwrap_or(Fate::Deliver)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// FPort-1 uplinks plus JoinRequests.
    pub uplinks: u32,
    pub join_requests: u32,
    /// FPort-1 downlinks that went on air.
    pub downlinks: u32,
    pub uplink_bytes: u32,
    pub downlink_bytes: u32,
    pub steps: u32,
}

/// The join server's view of one device: the keys it accepts (PROTOCOL.md §7).
pub struct JoinServer {
    pub active: AesKey,
    pub staged: Option<AesKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Completed,
    Failed(FailReason),
}

pub struct Pair {
    pub device: DeviceSession<Backend>,
    pub device_backend: Backend,
    pub device_store: SoftKeyStore,
    pub device_config: DeviceConfig,
    pub server: ServerEndpoint,
    pub server_backend: Backend,
    pub server_config: ServerConfig,
    pub record: DeviceRecord,
    pub join_server: JoinServer,
    pub now: Instant,
    pub model: NsModel,
    /// The maximum payload N of the i-th uplink (downlinks use the same N).
    pub payload_size: Box<dyn FnMut(u32) -> usize>,
    pub faults: Faults,
    pub stats: Stats,
    pub device_events: Vec<DeviceEvent>,
    pub server_events: Vec<ServerEvent>,
    ns_queue: VecDeque<Vec<u8>>,
    held_uplink: Option<Vec<u8>>,
    held_downlink: Option<Vec<u8>>,
    uplink_history: Vec<Vec<u8>>,
    downlink_history: Vec<Vec<u8>>,
    up_index: u32,
    down_index: u32,
    join_index: u32,
    /// The key the device's current LoRaWAN session was joined with, if any.
    pub end: Option<End>,
    pub stop_on_failure: bool,
    pub rng_seed: u64,
}

pub fn backend(seed: u64) -> Backend {
    SoftBackend::new(TestRng::from_seed(seed))
}

/// The device and server identities of one test world.
pub struct World {
    pub device_backend: Backend,
    pub server_backend: Backend,
    pub device_public: PublicKey,
    pub server_public: PublicKey,
}

pub fn world(seed: u64) -> World {
    let mut device_backend = backend(seed.wrapping_mul(2).wrapping_add(1));
    let mut server_backend = backend(seed.wrapping_mul(2).wrapping_add(2));
    let device_public = device_backend.identity_generate(SLOT).unwrap();
    let server_public = server_backend.identity_generate(SLOT).unwrap();
    World {
        device_backend,
        server_backend,
        device_public,
        server_public,
    }
}

/// A world whose identity keys are fixed scalars (for test vectors).
pub fn fixed_world(device_scalar: [u8; 48], server_scalar: [u8; 48], seed: u64) -> World {
    let mut device_backend = backend(seed.wrapping_mul(2).wrapping_add(1));
    let mut server_backend = backend(seed.wrapping_mul(2).wrapping_add(2));
    let device_public = device_backend
        .identity_import(SLOT, &Secret::from_array(device_scalar))
        .unwrap();
    let server_public = server_backend
        .identity_import(SLOT, &Secret::from_array(server_scalar))
        .unwrap();
    World {
        device_backend,
        server_backend,
        device_public,
        server_public,
    }
}

impl Pair {
    pub fn new(seed: u64, model: NsModel, n: usize) -> Self {
        Self::with_world(
            world(seed),
            seed,
            model,
            LorawanVersion::V1_0,
            Box::new(move |_| n),
        )
    }

    pub fn with_world(
        world: World,
        seed: u64,
        model: NsModel,
        lorawan: LorawanVersion,
        payload_size: Box<dyn FnMut(u32) -> usize>,
    ) -> Self {
        let World {
            mut device_backend,
            mut server_backend,
            device_public,
            server_public,
        } = world;
        let mut device_config = DeviceConfig::new(DEV_EUI, JOIN_EUI, lorawan, SLOT, server_public);
        device_config.retransmit_interval = Duration::from_secs(10);
        device_config.backoff_base = Duration::from_secs(600);
        let mut device_store = SoftKeyStore::new();
        let factory_nwk =
            matches!(lorawan, LorawanVersion::V1_1).then(|| AesKey::from_array([0x55; 16]));
        device_store
            .provision_factory(RootKeys {
                app_key: AesKey::from_array(FACTORY_APP_KEY),
                nwk_key: factory_nwk,
            })
            .unwrap();
        let status = device_store.status().unwrap();
        let device = DeviceSession::new(
            &mut device_backend,
            device_config.clone(),
            DevicePersistent::default(),
            status,
        )
        .unwrap();
        let server_config = ServerConfig::new(SLOT, server_public);
        let server = ServerEndpoint::new(&mut server_backend, server_config.clone());
        let record = DeviceRecord {
            dev_eui: DEV_EUI,
            join_eui: JOIN_EUI,
            lorawan,
            identity: device_public,
        };
        Self {
            device,
            device_backend,
            device_store,
            device_config,
            server,
            server_backend,
            server_config,
            record,
            join_server: JoinServer {
                active: AesKey::from_array(FACTORY_APP_KEY),
                staged: None,
            },
            now: Instant::from_millis(1_000_000),
            model,
            payload_size,
            faults: Faults::default(),
            stats: Stats::default(),
            device_events: Vec::new(),
            server_events: Vec::new(),
            ns_queue: VecDeque::new(),
            held_uplink: None,
            held_downlink: None,
            uplink_history: Vec::new(),
            downlink_history: Vec::new(),
            up_index: 0,
            down_index: 0,
            join_index: 0,
            end: None,
            stop_on_failure: true,
            rng_seed: seed,
        }
    }

    pub fn start(&mut self) {
        self.device
            .start(&mut self.device_backend, self.now)
            .unwrap();
    }

    /// Runs until the device completes or (with `stop_on_failure`) fails; errors on livelock.
    pub fn drive(&mut self, max_steps: u32) -> Result<End, String> {
        for _ in 0..max_steps {
            if let Some(end) = self.end {
                return Ok(end);
            }
            self.step();
            self.check_invariants()?;
        }
        match self.end {
            Some(end) => Ok(end),
            None => Err(format!(
                "livelock: no end after {max_steps} steps, device {:?}, stats {:?}",
                self.device.status(),
                self.stats
            )),
        }
    }

    /// One step: restarts due now, events, then a join attempt or an FPort-1 uplink with its
    /// downlink, or time passing.
    pub fn step(&mut self) {
        let step = self.stats.steps;
        self.stats.steps += 1;
        if self.faults.device_restarts.contains(&step) {
            self.restart_device();
        }
        if self.faults.server_restarts.contains(&step) {
            self.restart_server();
        }
        self.drain_events();
        if self.end.is_some() {
            return;
        }
        if let Some(slot) = self.device.join_key() {
            self.join(slot);
            self.drain_events();
            return;
        }
        let n = (self.payload_size)(self.up_index);
        let mut buf = [0u8; 242];
        let transmit = self
            .device
            .poll_transmit(&mut self.device_backend, self.now, n, &mut buf)
            .unwrap();
        self.drain_events();
        let Some(transmit) = transmit else {
            match self.device.poll_timeout() {
                Some(t) if t > self.now => self.now = t,
                _ => self.now = self.now.saturating_add(Duration::from_secs(1)),
            }
            return;
        };
        let frame = buf[..transmit.len].to_vec();
        self.stats.uplinks += 1;
        self.stats.uplink_bytes += frame.len() as u32;
        let fate = Faults::fate(&self.faults.uplinks, self.up_index);
        self.up_index += 1;
        // The NS sends what it queued earlier in this uplink's RX window (next-uplink model), but
        // only for an uplink it received.
        let received = fate != Fate::Drop;
        if self.model == NsModel::NextUplink
            && received
            && let Some(queued) = self.ns_queue.pop_front()
        {
            self.downlink(queued);
        }
        let mut deliveries: Vec<Vec<u8>> = Vec::new();
        match fate {
            Fate::Deliver => deliveries.push(frame.clone()),
            Fate::Drop => {}
            Fate::Duplicate => {
                deliveries.push(frame.clone());
                deliveries.push(frame.clone());
            }
            Fate::Delay => {
                if let Some(held) = self.held_uplink.replace(frame.clone()) {
                    deliveries.push(held);
                }
            }
            Fate::Replay => {
                deliveries.push(frame.clone());
                if let Some(old) = self.uplink_history.first().cloned() {
                    deliveries.push(old);
                }
            }
        }
        if fate != Fate::Delay
            && let Some(held) = self.held_uplink.take()
        {
            deliveries.push(held);
        }
        self.uplink_history.push(frame);
        for uplink in deliveries {
            let _ = self.server.handle_uplink(
                &mut self.server_backend,
                self.now,
                &DEV_EUI,
                Some(&self.record),
                &uplink,
            );
        }
        self.drain_events();
        if received {
            let mut down = [0u8; 242];
            if let Some(t) = self.server.poll_transmit(&DEV_EUI, n, &mut down).unwrap() {
                let answer = down[..t.len].to_vec();
                match self.model {
                    NsModel::SameWindow => self.downlink(answer),
                    NsModel::NextUplink => self.ns_queue.push_back(answer),
                }
            }
        }
        self.drain_events();
        self.now = self.now.saturating_add(Duration::from_secs(3));
    }

    fn downlink(&mut self, frame: Vec<u8>) {
        self.stats.downlinks += 1;
        self.stats.downlink_bytes += frame.len() as u32;
        let fate = Faults::fate(&self.faults.downlinks, self.down_index);
        self.down_index += 1;
        let mut deliveries = Vec::new();
        match fate {
            Fate::Deliver => deliveries.push(frame.clone()),
            Fate::Drop => {}
            Fate::Duplicate => {
                deliveries.push(frame.clone());
                deliveries.push(frame.clone());
            }
            Fate::Delay => {
                if let Some(held) = self.held_downlink.replace(frame.clone()) {
                    deliveries.push(held);
                }
            }
            Fate::Replay => {
                deliveries.push(frame.clone());
                if let Some(old) = self.downlink_history.first().cloned() {
                    deliveries.push(old);
                }
            }
        }
        if fate != Fate::Delay
            && let Some(held) = self.held_downlink.take()
        {
            deliveries.push(held);
        }
        self.downlink_history.push(frame);
        for d in deliveries {
            let _ = self
                .device
                .handle_downlink(&mut self.device_backend, self.now, &d);
            self.drain_events();
        }
    }

    /// A JoinRequest under `slot`: the join server checks its MIC against the keys it accepts.
    fn join(&mut self, slot: RootKeySlot) {
        self.stats.uplinks += 1;
        self.stats.join_requests += 1;
        let nonce = self.join_index.to_be_bytes();
        let lost = self
            .faults
            .join_accept_lost
            .get(self.join_index as usize)
            .copied()
            .unwrap_or(false);
        self.join_index += 1;
        let message = [&DEV_EUI[..], &JOIN_EUI[..], &nonce[..]];
        let mic = self
            .device_store
            .root_cmac(slot, RootKeyKind::AppKey, &message)
            .unwrap();
        let js_key = if self.mic_matches(&self.join_server.active.clone_secret(), &message, &mic) {
            Some(RootKeySlot::Active)
        } else if let Some(staged) = self.join_server.staged.as_ref().map(AesKey::clone_secret) {
            self.mic_matches(&staged, &message, &mic)
                .then_some(RootKeySlot::Staged)
        } else {
            None
        };
        let accepted = js_key.is_some() && !lost;
        self.device
            .handle_join_result(&mut self.device_backend, self.now, slot, accepted)
            .unwrap();
        self.drain_events();
        if accepted {
            // The first uplink of the new session reaches the network server.
            self.server
                .handle_session_confirmed(&DEV_EUI, js_key.unwrap());
        }
        self.now = self.now.saturating_add(Duration::from_secs(6));
    }

    fn mic_matches(&mut self, key: &AesKey, message: &[&[u8]], mic: &[u8; 16]) -> bool {
        self.server_backend.aes128_cmac(key, message).unwrap() == *mic
    }

    pub fn drain_events(&mut self) {
        while let Some(event) = self.device.poll_event() {
            match &event {
                DeviceEvent::StageNewKey(keys) => {
                    self.device_store.stage(keys.to_root_keys()).unwrap()
                }
                DeviceEvent::ActivateNewKey => self.device_store.activate().unwrap(),
                DeviceEvent::RollBack => self.device_store.roll_back().unwrap(),
                DeviceEvent::Completed => self.end = Some(End::Completed),
                DeviceEvent::Failed(reason) if self.stop_on_failure => {
                    self.end = Some(End::Failed(*reason));
                }
                _ => {}
            }
            self.device_events.push(event);
        }
        while let Some(event) = self.server.poll_event() {
            match &event {
                ServerEvent::StageNewKey { keys, .. } => {
                    self.join_server.staged = Some(keys.app_key.clone_secret());
                }
                ServerEvent::ActivateNewKey { .. } => {
                    if let Some(staged) = self.join_server.staged.take() {
                        self.join_server.active = staged;
                    }
                }
                ServerEvent::RollBack { .. } => self.join_server.staged = None,
                _ => {}
            }
            self.server_events.push(event);
        }
    }

    /// Power loss at the device: the run's RAM state is gone; the key store and the persisted
    /// state survive.
    pub fn restart_device(&mut self) {
        let persistent = self.device.persistent();
        let status = self.device_store.status().unwrap();
        self.device = DeviceSession::new(
            &mut self.device_backend,
            self.device_config.clone(),
            persistent,
            status,
        )
        .unwrap();
        if status.staged {
            return;
        }
        // After a reset the application starts a new run (the old one is lost).
        if self.end.is_none() {
            let _ = self.device.start(&mut self.device_backend, self.now);
        }
    }

    /// A server restart: a new endpoint resumes from the exported snapshot.
    pub fn restart_server(&mut self) {
        let snapshot = self.server.export(&DEV_EUI);
        self.server = ServerEndpoint::new(&mut self.server_backend, self.server_config.clone());
        if let Some(snapshot) = snapshot {
            self.server.import(&snapshot).unwrap();
        }
    }

    /// Whether the join server accepts the key in the device's `slot`.
    pub fn join_server_accepts(&mut self, slot: RootKeySlot) -> bool {
        let message: [&[u8]; 1] = [b"probe"];
        let Ok(mic) = self
            .device_store
            .root_cmac(slot, RootKeyKind::AppKey, &message)
        else {
            return false;
        };
        let active = self.join_server.active.clone_secret();
        if self.mic_matches(&active, &message, &mic) {
            return true;
        }
        match self.join_server.staged.as_ref().map(AesKey::clone_secret) {
            Some(staged) => self.mic_matches(&staged, &message, &mic),
            None => false,
        }
    }

    /// PROTOCOL.md §7's invariant: the device holds a key the join server accepts.
    pub fn check_invariants(&mut self) -> Result<(), String> {
        if self.join_server_accepts(RootKeySlot::Active)
            || self.join_server_accepts(RootKeySlot::Staged)
        {
            Ok(())
        } else {
            Err(format!(
                "device holds no key the join server accepts (stats {:?})",
                self.stats
            ))
        }
    }

    /// After completion: both sides hold the same active key, and it is not the factory key.
    pub fn same_new_key(&mut self) -> bool {
        let message: [&[u8]; 1] = [b"final"];
        let mic = self
            .device_store
            .root_cmac(RootKeySlot::Active, RootKeyKind::AppKey, &message)
            .unwrap();
        let active = self.join_server.active.clone_secret();
        let factory = AesKey::from_array(FACTORY_APP_KEY);
        self.mic_matches(&active, &message, &mic) && !self.mic_matches(&factory, &message, &mic)
    }

    pub fn device_status(&self) -> DeviceStatus {
        self.device.status()
    }

    pub fn key_store_status(&mut self) -> KeyStoreStatus {
        self.device_store.status().unwrap()
    }
}
