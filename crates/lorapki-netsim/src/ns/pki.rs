//! The lorapki server ([`ServerEndpoint`]) as the network server's [`Application`].

use std::collections::{BTreeMap, VecDeque};

use lorapki_crypto::{CryptoBackend, RootKeySlot};
use lorapki_proto::{DeviceRecord, FailReason, Instant, ServerEndpoint, ServerEvent};

use super::join_server::KeyEvent;
use super::network_server::Application;
use crate::rng::{Backend, SeededRng};

/// What the lorapki server saw of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerOutcome {
    /// Runs started.
    pub sessions: u32,
    /// Keys staged at the join server.
    pub staged: u32,
    /// Rekeys completed (new key active).
    pub completed: u32,
    /// Runs that ended without a new key, with their reasons.
    pub failed: Vec<FailReason>,
    /// FPort-1 uplinks the endpoint refused, with why (stale, duplicate or malformed input: the
    /// protocol's answer to bad input, expected under duplication and reordering faults).
    pub refused_uplinks: Vec<lorapki_proto::Error>,
    /// Downlinks the endpoint could not produce (a fault of the simulation: always empty when
    /// the network server offers a valid payload size).
    pub downlink_errors: Vec<lorapki_proto::Error>,
}

/// The lorapki server ([`ServerEndpoint`]) as the simulator's [`Application`].
pub struct PkiServer {
    /// The endpoint.
    pub endpoint: ServerEndpoint,
    /// Its crypto backend.
    pub backend: Backend,
    registry: BTreeMap<[u8; 8], DeviceRecord>,
    key_events: VecDeque<KeyEvent>,
    /// Per-device outcomes.
    pub outcomes: BTreeMap<[u8; 8], ServerOutcome>,
    last_tick: Instant,
}

impl PkiServer {
    /// A server with `endpoint` and its backend.
    #[must_use]
    pub fn new(endpoint: ServerEndpoint, backend: Backend) -> Self {
        Self {
            endpoint,
            backend,
            registry: BTreeMap::new(),
            key_events: VecDeque::new(),
            outcomes: BTreeMap::new(),
            last_tick: Instant::default(),
        }
    }

    /// Registers a device.
    pub fn register(&mut self, record: DeviceRecord) {
        self.registry.insert(record.dev_eui, record);
    }

    fn drain(&mut self) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                ServerEvent::SessionStarted { dev_eui, .. } => {
                    self.outcomes.entry(dev_eui).or_default().sessions += 1;
                }
                ServerEvent::StageNewKey { dev_eui, keys } => {
                    self.outcomes.entry(dev_eui).or_default().staged += 1;
                    self.key_events.push_back(KeyEvent::Stage {
                        dev_eui,
                        app_key: keys.app_key.clone_secret(),
                    });
                }
                ServerEvent::ActivateNewKey { dev_eui } => {
                    self.key_events.push_back(KeyEvent::Activate { dev_eui });
                }
                ServerEvent::Completed { dev_eui } => {
                    self.outcomes.entry(dev_eui).or_default().completed += 1;
                }
                ServerEvent::Failed { dev_eui, reason } => {
                    self.outcomes
                        .entry(dev_eui)
                        .or_default()
                        .failed
                        .push(reason);
                }
                _ => {}
            }
        }
    }
}

impl Application for PkiServer {
    fn handle_uplink(&mut self, now: Instant, dev_eui: &[u8; 8], payload: &[u8]) {
        let record = self.registry.get(dev_eui).copied();
        // An error is the protocol's answer to bad input (stale, duplicate, malformed): the
        // endpoint changed nothing; it is recorded per device.
        if let Err(e) =
            self.endpoint
                .handle_uplink(&mut self.backend, now, dev_eui, record.as_ref(), payload)
        {
            self.outcomes
                .entry(*dev_eui)
                .or_default()
                .refused_uplinks
                .push(e);
        }
        self.drain();
    }

    fn poll_downlink(
        &mut self,
        _now: Instant,
        dev_eui: &[u8; 8],
        n: usize,
        buf: &mut [u8],
    ) -> Option<usize> {
        let n = n.clamp(lorapki_wire::MIN_PAYLOAD, lorapki_wire::MAX_PAYLOAD);
        match self.endpoint.poll_transmit(dev_eui, n, buf) {
            Ok(transmit) => transmit.map(|t| t.len),
            Err(e) => {
                self.outcomes
                    .entry(*dev_eui)
                    .or_default()
                    .downlink_errors
                    .push(e);
                None
            }
        }
    }

    fn handle_join_verified(&mut self, _now: Instant, dev_eui: &[u8; 8], slot: RootKeySlot) {
        self.endpoint.handle_join_verified(dev_eui, slot);
        self.drain();
    }

    fn poll_key_event(&mut self) -> Option<KeyEvent> {
        self.key_events.pop_front()
    }

    fn handle_tick(&mut self, now: Instant) {
        // The endpoint's expiry scan visits every device: once a simulated minute is plenty.
        if now.saturating_since(self.last_tick).as_millis() >= 60_000 {
            self.last_tick = now;
            self.endpoint.handle_timeout(now);
            self.drain();
        }
    }
}

/// Makes a server backend from a seed (the identity key goes in slot 0).
#[must_use]
pub fn server_backend(seed: u64) -> Backend {
    Backend::new(SeededRng::from_seed(seed))
}

/// Generates the identity key of a backend in `slot`.
///
/// # Errors
///
/// Backend failures.
pub fn generate_identity(
    backend: &mut Backend,
    slot: lorapki_crypto::KeySlot,
) -> lorapki_crypto::Result<lorapki_crypto::PublicKey> {
    backend.identity_generate(slot)
}
