//! A `Pair`-style harness (after quinn-proto's tests): one device and one server endpoint on a
//! virtual clock, joined by a simulated network server with either answer model, a join server
//! that checks JoinRequest MICs against the keys it accepts, and fault injectors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;

use lorapki_crypto::{
    AesBackend, AesKey, CryptoBackend, KeyImport, KeySlot, KeyStoreStatus, PublicKey, RootKeyKind,
    RootKeySlot, RootKeyStore, RootKeys, Secret,
};
use lorapki_crypto_soft::SoftKeyStore;
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceRecord, DeviceSession, DeviceStatus,
    Duration, FailReason, Instant, KeyAcceptance, LorawanVersion, ServerConfig, ServerEndpoint,
    ServerEvent, SessionSnapshot,
};
use lorapki_wire::{CommandRepr, Commands};

pub mod adversary;
pub mod attacker;
pub mod memo;

/// The backend of both sides: RustCrypto, with its P-384 operations cached across the runs of
/// one test process (see [`memo`]).
pub type Backend = memo::MemoBackend;

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

/// What reaches the receiver when `frame` meets `fate`, in order; `held` is the frame a Delay
/// holds back (one per direction), `history` every frame sent so far in that direction.
fn apply_fate(
    fate: Fate,
    frame: Vec<u8>,
    held: &mut Option<Vec<u8>>,
    history: &mut Vec<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let mut deliveries = Vec::new();
    match fate {
        Fate::Deliver => deliveries.push(frame.clone()),
        Fate::Drop => {}
        Fate::Duplicate => {
            deliveries.push(frame.clone());
            deliveries.push(frame.clone());
        }
        Fate::Delay => {
            if let Some(previous) = held.replace(frame.clone()) {
                deliveries.push(previous);
            }
        }
        Fate::Replay => {
            deliveries.push(frame.clone());
            if let Some(old) = history.first().cloned() {
                deliveries.push(old);
            }
        }
    }
    if fate != Fate::Delay
        && let Some(previous) = held.take()
    {
        deliveries.push(previous);
    }
    history.push(frame);
    deliveries
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

/// What the device's current run has seen and sent, as observed on the air: a summary of its
/// queue and reassembly state, for explorers that fingerprint states (the session itself is
/// opaque).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct RunView {
    /// The session of the run, `None` outside a run.
    pub session: Option<u8>,
    /// Distinct commands of the run delivered to the device.
    pub received: BTreeSet<Vec<u8>>,
    /// Distinct FPort-1 frames the device sent in the run.
    pub sent: BTreeSet<Vec<u8>>,
    /// The last frame it sent.
    pub last_sent: Vec<u8>,
    /// Uplinks since a downlink last brought a command the run had not seen.
    pub since_progress: u32,
    /// JoinRequests since the device last left a run or restarted.
    pub joins: u32,
}

impl RunView {
    pub fn sync(&mut self, status: DeviceStatus) {
        let session = match status {
            DeviceStatus::Running { session } => Some(session),
            _ => None,
        };
        if session != self.session {
            *self = Self {
                session,
                ..Self::default()
            };
        }
    }

    fn uplink(&mut self, frame: &[u8]) {
        self.sent.insert(frame.to_vec());
        self.last_sent = frame.to_vec();
        self.since_progress += 1;
    }

    fn downlink(&mut self, frame: &[u8]) {
        let Some(session) = self.session else { return };
        for command in Commands::new(frame).map_while(Result::ok) {
            if command.session().map(|s| s.value()) != Some(session) {
                continue;
            }
            let Ok(repr) = CommandRepr::parse(&command) else {
                continue;
            };
            let mut bytes = [0u8; 256];
            let Ok(len) = repr.emit(&mut bytes) else {
                continue;
            };
            if self.received.insert(bytes[..len].to_vec()) {
                self.since_progress = 0;
            }
        }
    }
}

/// Which way a frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Up,
    Down,
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
    /// The device's run as seen on the air.
    pub view: RunView,
    /// Every FPort-1 frame that went on air, in order (what a passive attacker records).
    pub air: Vec<(Direction, Vec<u8>)>,
    /// The active attacker of PROTOCOL.md §10 (see [`adversary`]).
    pub adversary: adversary::Adversary,
}

pub fn backend(seed: u64) -> Backend {
    memo::MemoBackend::new(seed)
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
        let mut server_config = ServerConfig::new(SLOT, server_public);
        // Under the device's 8-uplink horizon (8 × 10 s), as §8 requires.
        server_config.run_lease = Duration::from_secs(30);
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
            view: RunView::default(),
            air: Vec::new(),
            adversary: adversary::Adversary::new(seed),
        }
    }

    /// Changes the device's configuration before its first run (the session is rebuilt idle).
    pub fn reconfigure_device(&mut self, change: impl FnOnce(&mut DeviceConfig)) {
        change(&mut self.device_config);
        let status = self.device_store.status().unwrap();
        self.device = DeviceSession::new(
            &mut self.device_backend,
            self.device_config.clone(),
            self.device.persistent(),
            status,
        )
        .unwrap();
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
        // The server's idle expiry runs on its own clock (§6.4).
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
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
        self.view.sync(self.device.status());
        self.view.uplink(&frame);
        self.air.push((Direction::Up, frame.clone()));
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
        let deliveries = apply_fate(fate, frame, &mut self.held_uplink, &mut self.uplink_history);
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
        self.adversary_observes(&frame);
        self.air.push((Direction::Down, frame.clone()));
        self.stats.downlinks += 1;
        self.stats.downlink_bytes += frame.len() as u32;
        let fate = Faults::fate(&self.faults.downlinks, self.down_index);
        self.down_index += 1;
        let deliveries = apply_fate(
            fate,
            frame,
            &mut self.held_downlink,
            &mut self.downlink_history,
        );
        for d in deliveries {
            self.view.sync(self.device.status());
            self.view.downlink(&d);
            let _ = self
                .device
                .handle_downlink(&mut self.device_backend, self.now, &d);
            self.drain_events();
        }
    }

    /// A JoinRequest under `slot`: the join server checks its MIC against the keys it accepts.
    fn join(&mut self, slot: RootKeySlot) {
        self.view.joins += 1;
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
        let (jammed, forged) = self.adversary.join_moves(self.join_index - 1);
        let js_key = if jammed {
            None
        } else {
            self.join_server_verifies(&message, &mic)
        };
        // The join server decides at the JoinRequest (§7), before its JoinAccept is on air.
        if let Some(key) = js_key {
            if key == RootKeySlot::Staged {
                self.adversary.js_proof =
                    self.join_server.staged.as_ref().map(AesKey::clone_secret);
            }
            self.server.handle_join_verified(&DEV_EUI, key);
            self.drain_events();
        }
        // A JoinAccept forged under the factory key verifies at the device only for a
        // JoinRequest it made under the factory key.
        let forged_verifies = forged && self.device_slot_is_factory(slot);
        let accepted = (js_key.is_some() && !lost) || forged_verifies;
        self.device
            .handle_join_result(&mut self.device_backend, self.now, slot, accepted)
            .unwrap();
        self.drain_events();
        self.now = self.now.saturating_add(Duration::from_secs(6));
    }

    /// The key under which the join server verifies `mic` over `message`: the rule of
    /// [`KeyAcceptance`] over its active and staged keys.
    fn join_server_verifies(&mut self, message: &[&[u8]], mic: &[u8; 16]) -> Option<RootKeySlot> {
        let acceptance = KeyAcceptance::new(self.join_server.staged.is_some());
        let verified = acceptance.verify(|slot| {
            let key = match slot {
                RootKeySlot::Active => Some(self.join_server.active.clone_secret()),
                RootKeySlot::Staged => self.join_server.staged.as_ref().map(AesKey::clone_secret),
            };
            Ok::<_, Infallible>(key.is_some_and(|key| self.mic_matches(&key, message, mic)))
        });
        let Ok(slot) = verified;
        slot
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
                _ => {}
            }
            self.server_events.push(event);
        }
    }

    /// Power loss at the device: the run's RAM state is gone; the key store and the persisted
    /// state survive.
    pub fn restart_device(&mut self) {
        // What the old session reported before the power loss was seen by its adapter.
        self.drain_events();
        let persistent = self.device.persistent();
        let status = self.device_store.status().unwrap();
        self.device = DeviceSession::new(
            &mut self.device_backend,
            self.device_config.clone(),
            persistent,
            status,
        )
        .unwrap();
        self.view = RunView::default();
        // After a reset the application starts a new run (the old one is lost), unless a staged
        // key survived: then the session resumes the rejoin by itself.
        if !status.staged && self.end.is_none() {
            let _ = self.device.start(&mut self.device_backend, self.now);
        }
        self.view.sync(self.device.status());
    }

    /// A server restart: a new endpoint resumes from the exported snapshot.
    pub fn restart_server(&mut self) {
        // Through the stored bytes, as a real server would persist them.
        let stored = self.server.export(&DEV_EUI).map(|s| s.as_bytes().to_vec());
        self.server = ServerEndpoint::new(&mut self.server_backend, self.server_config.clone());
        if let Some(bytes) = stored {
            self.server
                .import(&SessionSnapshot::from_bytes(&bytes))
                .unwrap();
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
        self.join_server_verifies(&message, &mic).is_some()
    }

    /// PROTOCOL.md §7's invariant: the device holds a key the join server accepts, and the two
    /// sides never activate different keys.
    pub fn check_invariants(&mut self) -> Result<(), String> {
        if !self.join_server_accepts(RootKeySlot::Active)
            && !self.join_server_accepts(RootKeySlot::Staged)
        {
            return Err(format!(
                "device holds no key the join server accepts (stats {:?})",
                self.stats
            ));
        }
        if self.device_activated() && self.join_server_activated() && !self.same_active_key() {
            return Err(format!(
                "device and join server activated different keys (stats {:?})",
                self.stats
            ));
        }
        Ok(())
    }

    /// Whether the device's active key is no longer the factory key.
    pub fn device_activated(&mut self) -> bool {
        let message: [&[u8]; 1] = [b"activated"];
        let mic = self
            .device_store
            .root_cmac(RootKeySlot::Active, RootKeyKind::AppKey, &message)
            .unwrap();
        let factory = AesKey::from_array(FACTORY_APP_KEY);
        !self.mic_matches(&factory, &message, &mic)
    }

    /// Whether the join server's active key is no longer the factory key.
    pub fn join_server_activated(&self) -> bool {
        self.join_server.active != AesKey::from_array(FACTORY_APP_KEY)
    }

    /// Whether the device's active key is the join server's active key.
    pub fn same_active_key(&mut self) -> bool {
        let message: [&[u8]; 1] = [b"same"];
        let mic = self
            .device_store
            .root_cmac(RootKeySlot::Active, RootKeyKind::AppKey, &message)
            .unwrap();
        let active = self.join_server.active.clone_secret();
        self.mic_matches(&active, &message, &mic)
    }

    /// Whether the device's `slot` holds exactly the key the join server has in its staged slot.
    pub fn device_key_is_join_staged(&mut self, slot: RootKeySlot) -> bool {
        let message: [&[u8]; 1] = [b"staged"];
        let Ok(mic) = self
            .device_store
            .root_cmac(slot, RootKeyKind::AppKey, &message)
        else {
            return false;
        };
        match self.join_server.staged.as_ref().map(AesKey::clone_secret) {
            Some(staged) => self.mic_matches(&staged, &message, &mic),
            None => false,
        }
    }

    /// The indices of the next uplink, downlink and JoinRequest: where per-step faults go.
    pub fn next_indices(&self) -> (u32, u32, u32) {
        (self.up_index, self.down_index, self.join_index)
    }

    /// The fate of the next FPort-1 uplink (for explorers that decide faults step by step).
    pub fn fault_next_uplink(&mut self, fate: Fate) {
        set_at(&mut self.faults.uplinks, self.up_index, fate, Fate::Deliver);
    }

    /// The fate of the next FPort-1 downlink.
    pub fn fault_next_downlink(&mut self, fate: Fate) {
        set_at(
            &mut self.faults.downlinks,
            self.down_index,
            fate,
            Fate::Deliver,
        );
    }

    /// Loses the JoinAccept of the next JoinRequest.
    pub fn lose_next_join_accept(&mut self) {
        set_at(
            &mut self.faults.join_accept_lost,
            self.join_index,
            true,
            false,
        );
    }

    /// Downlinks the network server holds for the device's next uplink (next-uplink model).
    pub fn ns_queue(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.ns_queue.iter()
    }

    /// Frames held back by a `Delay` fate.
    pub fn held(&self) -> (Option<&Vec<u8>>, Option<&Vec<u8>>) {
        (self.held_uplink.as_ref(), self.held_downlink.as_ref())
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

fn set_at<T: Copy>(list: &mut Vec<T>, index: u32, value: T, default: T) {
    let index = index as usize;
    if list.len() <= index {
        list.resize(index + 1, default);
    }
    list[index] = value;
}

/// The fields of a server snapshot, read by the layout documented in `server/snapshot.rs`
/// (format 2). Used to find the secrets a snapshot holds and to mask its clock values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFields {
    /// Offsets of the 8-byte timestamps (`refilled_at`, and `last_activity` if a run is
    /// pending).
    pub clocks: Vec<usize>,
    /// The pending run's transcript hash, AppKey, NwkKey, C_D and C_S.
    pub transcript_hash: Option<[u8; 48]>,
    pub app_key: Option<[u8; 16]>,
    pub nwk_key: Option<[u8; 16]>,
    pub device_confirm: Option<[u8; 32]>,
    pub server_confirm: Option<[u8; 32]>,
    pub staged: bool,
    pub pending_session: Option<u8>,
    pub key_change_requested: bool,
    pub verdict: Option<u8>,
    pub pending_staged: bool,
}

pub fn snapshot_fields(bytes: &[u8]) -> SnapshotFields {
    assert_eq!(bytes[0], 2, "snapshot format 2");
    let mut fields = SnapshotFields {
        clocks: vec![11],
        transcript_hash: None,
        app_key: None,
        nwk_key: None,
        device_confirm: None,
        server_confirm: None,
        staged: bytes[19] == 1,
        pending_session: None,
        key_change_requested: false,
        verdict: None,
        pending_staged: false,
    };
    if bytes[20] == 0 {
        assert_eq!(bytes.len(), 21);
        return fields;
    }
    // session, DevEUI, JoinEUI, LoRaWAN, identity, EPH_D, EPH_S, TH
    let mut at = 21;
    fields.pending_session = Some(bytes[at]);
    at += 1 + 8 + 8 + 1 + 49 + 49 + 49;
    fields.transcript_hash = Some(bytes[at..at + 48].try_into().unwrap());
    at += 48;
    fields.app_key = Some(bytes[at..at + 16].try_into().unwrap());
    at += 16;
    if bytes[at] == 1 {
        fields.nwk_key = Some(bytes[at + 1..at + 17].try_into().unwrap());
        at += 16;
    }
    at += 1;
    fields.device_confirm = Some(bytes[at..at + 32].try_into().unwrap());
    fields.server_confirm = Some(bytes[at + 32..at + 64].try_into().unwrap());
    at += 64 + 96;
    for _ in 0..2 {
        at += if bytes[at] == 1 { 49 } else { 1 };
    }
    fields.key_change_requested = bytes[at] == 1;
    fields.verdict = (bytes[at + 1] != 0xff).then_some(bytes[at + 1]);
    fields.pending_staged = bytes[at + 3] == 1;
    at += 4 + 16 + 2;
    fields.clocks.push(at);
    assert_eq!(bytes.len(), at + 8, "snapshot layout");
    fields
}
