//! The protocol's device state machine (`lorapki_proto::DeviceSession`) on the MS500 backend over
//! emulated engines, against a server endpoint on the software backend, with engine faults in
//! the middle of the run.
//!
//! The adapter here does what a LoRaWAN adapter does: it applies the session's key events to the
//! key store, computes JoinRequest MICs under the key the session asks for (with a fresh DevNonce
//! each), and reboots the device when the backend reports tamper. The invariant of PROTOCOL.md §7
//! is checked throughout: the device always holds a key that the join server accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use lorapki_crypto::{CryptoBackend, RootKeyKind, RootKeySlot, RootKeyStore};
use lorapki_crypto_soft::{SoftBackend, TestRng};
use lorapki_ms500::EngineError;
use lorapki_ms500::emulated::{EmulatedBackend, EmulatedParts, Injection};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceRecord, DeviceSession, Duration, FailReason,
    Instant, LorawanVersion, ServerConfig, ServerEndpoint, ServerEvent,
};

const DEV_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x05, 0x00];
const JOIN_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x00];
const PAYLOAD: usize = 51;

struct World {
    backend: Option<EmulatedBackend>,
    device: DeviceSession<EmulatedBackend>,
    config: DeviceConfig,
    server: ServerEndpoint,
    server_backend: SoftBackend<TestRng>,
    record: DeviceRecord,
    js_active: [u8; 16],
    js_staged: Option<[u8; 16]>,
    now: Instant,
    completed: bool,
    failures: Vec<FailReason>,
    start_failures: usize,
    store_errors: usize,
    reboots: usize,
}

impl World {
    fn new(base: EmulatedParts) -> Self {
        let mut backend = open(base);
        let identity = backend.identity_public_key(SLOT).unwrap();
        let mut server_backend = SoftBackend::new(TestRng::from_seed(5));
        let server_public = server_backend.identity_generate(SLOT).unwrap();
        let mut config =
            DeviceConfig::new(DEV_EUI, JOIN_EUI, LorawanVersion::V1_0, SLOT, server_public);
        config.retransmit_interval = Duration::from_secs(10);
        config.backoff_base = Duration::from_secs(600);
        let status = backend.status().unwrap();
        let device = DeviceSession::new(
            &mut backend,
            config.clone(),
            DevicePersistent::default(),
            status,
        )
        .unwrap();
        let mut server_config = ServerConfig::new(SLOT, server_public);
        server_config.rate_limit.burst = 20;
        let server = ServerEndpoint::new(&mut server_backend, server_config);
        Self {
            backend: Some(backend),
            device,
            config,
            server,
            server_backend,
            record: DeviceRecord {
                dev_eui: DEV_EUI,
                join_eui: JOIN_EUI,
                lorawan: LorawanVersion::V1_0,
                identity,
            },
            js_active: FACTORY_APP_KEY,
            js_staged: None,
            now: Instant::from_millis(1_000_000),
            completed: false,
            failures: Vec::new(),
            start_failures: 0,
            store_errors: 0,
            reboots: 0,
        }
    }

    fn backend(&mut self) -> &mut EmulatedBackend {
        self.backend.as_mut().unwrap()
    }

    fn drain(&mut self) {
        while let Some(event) = self.device.poll_event() {
            let backend = self.backend.as_mut().unwrap();
            let apply = |backend: &mut EmulatedBackend| match &event {
                DeviceEvent::StageNewKey(keys) => backend.stage(keys.to_root_keys()),
                DeviceEvent::ActivateNewKey => backend.activate(),
                _ => Ok(()),
            };
            // The store is atomic, so the adapter simply tries a failed key operation again.
            if apply(backend).is_err() {
                self.store_errors += 1;
                apply(backend).expect("the key operation fails twice");
            }
            match event {
                DeviceEvent::Completed => self.completed = true,
                DeviceEvent::Failed(reason) => self.failures.push(reason),
                _ => {}
            }
        }
        while let Some(event) = self.server.poll_event() {
            match event {
                ServerEvent::StageNewKey { keys, .. } => {
                    self.js_staged = Some(*keys.app_key.expose_secret());
                }
                ServerEvent::ActivateNewKey { .. } => {
                    if let Some(staged) = self.js_staged.take() {
                        self.js_active = staged;
                    }
                }
                _ => {}
            }
        }
    }

    /// Power cycle after tamper: the session restarts from its persisted state and the store.
    fn reboot(&mut self) {
        let backend = reboot(self.backend.take().unwrap());
        self.backend = Some(backend);
        let persistent = self.device.persistent();
        let status = self.backend().status().unwrap();
        let config = self.config.clone();
        let backend = self.backend.as_mut().unwrap();
        self.device = DeviceSession::new(backend, config, persistent, status).unwrap();
        if !status.staged {
            let _ = self.device.start(backend, self.now);
        }
        self.reboots += 1;
    }

    fn join(&mut self, slot: RootKeySlot) {
        let backend = self.backend.as_mut().unwrap();
        let mic = backend.next_dev_nonce().and_then(|nonce| {
            backend.root_cmac(
                slot,
                RootKeyKind::AppKey,
                &[&DEV_EUI, &JOIN_EUI, &nonce.to_le_bytes()],
            )
        });
        let accepted_as = mic.ok().and_then(|mic| {
            let nonce = backend.peek_dev_nonce() - 1;
            let message: [&[u8]; 3] = [&DEV_EUI, &JOIN_EUI, &(nonce as u16).to_le_bytes()];
            if cmac(&self.js_active, &message) == mic {
                Some(RootKeySlot::Active)
            } else if self
                .js_staged
                .is_some_and(|staged| cmac(&staged, &message) == mic)
            {
                Some(RootKeySlot::Staged)
            } else {
                None
            }
        });
        // The join server decides at the JoinRequest (PROTOCOL.md §7).
        if let Some(key) = accepted_as {
            self.server.handle_join_verified(&DEV_EUI, key);
        }
        let backend = self.backend.as_mut().unwrap();
        self.device
            .handle_join_result(backend, self.now, slot, accepted_as.is_some())
            .unwrap();
        self.drain();
        self.now = self.now.saturating_add(Duration::from_secs(6));
    }

    fn step(&mut self) {
        self.drain();
        if self.backend().tampered() {
            self.reboot();
            return;
        }
        if let Some(slot) = self.device.join_key() {
            self.join(slot);
            return;
        }
        let mut buf = [0u8; 242];
        let backend = self.backend.as_mut().unwrap();
        let transmit = self
            .device
            .poll_transmit(backend, self.now, PAYLOAD, &mut buf)
            .unwrap();
        self.drain();
        let Some(transmit) = transmit else {
            self.now = match self.device.poll_timeout() {
                Some(at) if at > self.now => at,
                _ => self.now.saturating_add(Duration::from_secs(1)),
            };
            return;
        };
        let _ = self.server.handle_uplink(
            &mut self.server_backend,
            self.now,
            &DEV_EUI,
            Some(&self.record),
            &buf[..transmit.len],
        );
        self.drain();
        let mut down = [0u8; 242];
        if let Some(answer) = self
            .server
            .poll_transmit(&DEV_EUI, PAYLOAD, &mut down)
            .unwrap()
        {
            let backend = self.backend.as_mut().unwrap();
            let _ = self
                .device
                .handle_downlink(backend, self.now, &down[..answer.len]);
        }
        self.drain();
        self.now = self.now.saturating_add(Duration::from_secs(3));
    }

    /// PROTOCOL.md §7: the device holds a key the join server accepts.
    fn invariant(&mut self) -> bool {
        let accepted: Vec<[u8; 16]> = std::iter::once(self.js_active)
            .chain(self.js_staged)
            .collect();
        let backend = self.backend();
        [RootKeySlot::Active, RootKeySlot::Staged]
            .into_iter()
            .any(|slot| which_key(backend, slot, RootKeyKind::AppKey, &accepted).is_some())
    }

    fn drive(&mut self, checks: bool) {
        for _ in 0..400 {
            if self.completed {
                return;
            }
            self.step();
            // The check runs engine commands too: only once the planned fault has happened,
            // so that it cannot hit the check itself.
            let backend = self.backend();
            let fault_pending = backend.pka_mut().injector.planned_pending()
                || backend.aes_mut().injector.planned_pending();
            if checks && !fault_pending && !backend.tampered() {
                assert!(
                    self.invariant(),
                    "the device holds no key the join server accepts"
                );
            }
        }
        panic!("no completion: failures {:?}", self.failures);
    }

    fn assert_new_key(&mut self) {
        assert_ne!(self.js_active, FACTORY_APP_KEY);
        let new = self.js_active;
        assert_eq!(
            which_key(
                self.backend(),
                RootKeySlot::Active,
                RootKeyKind::AppKey,
                &[new]
            ),
            Some(0),
            "device and join server hold the same new key"
        );
        let status = self.backend().status().unwrap();
        assert_eq!(status.active_generation, 1);
        assert!(!status.staged);
        assert!(self.backend().operand_buffers_clear());
    }
}

/// Starts a run; an application whose start failed (the backend could not make the ephemeral
/// key) tries again a minute later.
fn start(world: &mut World) {
    for _ in 0..3 {
        let backend = world.backend.as_mut().unwrap();
        match world.device.start(backend, world.now) {
            Ok(()) => return,
            Err(_) => {
                world.start_failures += 1;
                world.now = world.now.saturating_add(Duration::from_secs(60));
            }
        }
    }
    panic!("the run does not start");
}

#[test]
fn a_clean_rekey_on_the_emulated_engines() {
    let mut world = World::new(provisioned_parts(40, false));
    start(&mut world);
    world.drive(true);
    world.assert_new_key();
    assert!(world.failures.is_empty());
    assert_eq!(world.store_errors, 0);
}

/// A fault at each PKA command of the device's run (identity, ephemeral, ECDH, signatures):
/// the run fails, the device backs off, starts again and completes.
#[test]
fn a_fault_at_each_pka_command_of_the_run() {
    let base = provisioned_parts(41, false);
    let mut clean = World::new(base.clone());
    let first = clean.backend().pka_mut().injector.commands_started();
    start(&mut clean);
    clean.drive(false);
    let commands = clean.backend().pka_mut().injector.commands_started() - first;
    assert!(commands >= 7, "{commands}");

    let mut failed_runs = 0;
    for index in 0..commands {
        let mut world = World::new(base.clone());
        let at = world.backend().pka_mut().injector.commands_started() + index;
        world
            .backend()
            .pka_mut()
            .injector
            .inject(at, Injection::Fail(EngineError::Fault));
        start(&mut world);
        world.drive(true);
        world.assert_new_key();
        assert!(world.backend().pka_mut().injector.fired());
        failed_runs += world.failures.len() + world.start_failures;
    }
    println!(
        "DeviceSession: a fault at each of {commands} PKA commands: {failed_runs} runs failed \
         and were retried, every rekey completed"
    );
    // All but the clean-up erase, which its second attempt absorbs, and the decoding of EPH_S: a
    // point that does not decode is treated like a forged EPH_S, forgotten while the run goes on
    // (PROTOCOL.md §5.5), and the server's retransmission brings it again.
    assert!(failed_runs >= commands as usize - 2);
}

/// Faults in the AES engine during the key switch (stage, MICs under the staged key, activate),
/// and a tamper in the PKA that forces a reboot mid-run.
#[test]
fn aes_faults_and_a_tamper_reboot() {
    let base = provisioned_parts(42, false);
    let mut clean = World::new(base.clone());
    let first = clean.backend().aes_mut().injector.commands_started();
    start(&mut clean);
    clean.drive(false);
    let commands = clean.backend().aes_mut().injector.commands_started() - first;

    for index in (0..commands).step_by((commands as usize / 6).max(1)) {
        let mut world = World::new(base.clone());
        let at = world.backend().aes_mut().injector.commands_started() + index;
        world
            .backend()
            .aes_mut()
            .injector
            .inject(at, Injection::Fail(EngineError::Fault));
        start(&mut world);
        world.drive(true);
        world.assert_new_key();
    }

    let mut world = World::new(base);
    let at = world.backend().pka_mut().injector.commands_started() + 3;
    world
        .backend()
        .pka_mut()
        .injector
        .inject(at, Injection::Fail(EngineError::Tamper));
    start(&mut world);
    world.drive(true);
    world.assert_new_key();
    assert_eq!(world.reboots, 1);
}
