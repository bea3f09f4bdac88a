//! The attacker of PROTOCOL.md §10's threat model, for `tests/security.rs`: its radio (frames
//! taken off the air and injected into either side of a [`Pair`]), frame builders on
//! `lorapki_wire`'s reprs, a forging server that runs the key schedule itself, and a second
//! harness of separate [`Node`]s and a [`Server`] for runs of several devices against one server.

use lorapki_crypto::{CryptoBackend, KeyStoreStatus, PublicKey, RootKeySlot};
use lorapki_proto::keys::{self, LorawanVersion, Role, Transcript};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceRecord, DeviceSession, Duration, Error,
    FailReason, Instant, NewRootKeys, ServerConfig, ServerEndpoint, ServerEvent, UplinkOutcome,
};
use lorapki_wire::{
    AbortRepr, Code, CommandRepr, Commands, Part, PayloadBuilder, PubKeyAnsRepr, PubKeyReqRepr,
    Session, SigVerifyAnsRepr, SigVerifyReqRepr,
};

use super::{Backend, DEV_EUI, JOIN_EUI, Pair, SLOT};

/// The FRMPayload size of the attacker's runs (and of `tests/security.rs`).
pub const N: usize = 51;

// ----- the attacker's radio: frames on and off the air -----

/// The device's next uplink.
pub fn uplink(pair: &mut Pair) -> Vec<u8> {
    let mut buf = [0u8; 242];
    let t = pair
        .device
        .poll_transmit(&mut pair.device_backend, pair.now, N, &mut buf)
        .unwrap()
        .expect("the device has an uplink to send");
    pair.drain_events();
    buf[..t.len].to_vec()
}

/// An uplink as received by the server.
pub fn to_server(pair: &mut Pair, frame: &[u8]) -> Result<UplinkOutcome, Error> {
    let result = pair.server.handle_uplink(
        &mut pair.server_backend,
        pair.now,
        &DEV_EUI,
        Some(&pair.record),
        frame,
    );
    pair.drain_events();
    result
}

/// The server's next downlink for the device.
pub fn downlink(pair: &mut Pair) -> Option<Vec<u8>> {
    let mut buf = [0u8; 242];
    let t = pair.server.poll_transmit(&DEV_EUI, N, &mut buf).unwrap()?;
    Some(buf[..t.len].to_vec())
}

/// A downlink as received by the device.
pub fn to_device(pair: &mut Pair, frame: &[u8]) -> Result<(), Error> {
    let result = pair
        .device
        .handle_downlink(&mut pair.device_backend, pair.now, frame);
    pair.drain_events();
    pair.now = pair.now.saturating_add(Duration::from_secs(3));
    result
}

/// One honest round trip in the same-window model; returns (uplink, downlink).
pub fn round(pair: &mut Pair) -> (Vec<u8>, Option<Vec<u8>>) {
    let up = uplink(pair);
    let _ = to_server(pair, &up);
    let down = downlink(pair);
    if let Some(down) = &down {
        let _ = to_device(pair, down);
    }
    (up, down)
}

/// A FRMPayload of whole commands.
pub fn frame(commands: &[CommandRepr<'_>]) -> Vec<u8> {
    let mut buf = [0u8; 242];
    let mut builder = PayloadBuilder::new(&mut buf);
    for command in commands {
        builder.push(command).unwrap();
    }
    let len = builder.finish();
    buf[..len].to_vec()
}

/// The whole commands of a FRMPayload.
pub fn commands(frame: &[u8]) -> Vec<CommandRepr<'_>> {
    Commands::new(frame)
        .map(|c| CommandRepr::parse(&c.unwrap()).unwrap())
        .collect()
}

pub fn pub_key_req(frame: &[u8]) -> PubKeyReqRepr {
    match commands(frame)[..] {
        [CommandRepr::PubKeyReq(req)] => req,
        ref other => panic!("not a PubKeyReq: {other:?}"),
    }
}

pub fn sig_verify_reqs(frame: &[u8]) -> Vec<SigVerifyReqRepr> {
    commands(frame)
        .into_iter()
        .filter_map(|c| match c {
            CommandRepr::SigVerifyReq(r) => Some(r),
            _ => None,
        })
        .collect()
}

pub fn abort_owed(pair: &mut Pair) -> Option<AbortRepr> {
    let down = downlink(pair)?;
    match commands(&down)[..] {
        [CommandRepr::Abort(abort)] => Some(abort),
        _ => None,
    }
}

pub fn snapshot(pair: &Pair) -> Option<Vec<u8>> {
    pair.server.export(&DEV_EUI).map(|s| s.as_bytes().to_vec())
}

pub fn staged_keys(events: &[DeviceEvent]) -> Vec<&NewRootKeys> {
    events
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::StageNewKey(keys) => Some(keys),
            _ => None,
        })
        .collect()
}

pub fn server_staged(events: &[ServerEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ServerEvent::StageNewKey { .. }))
        .count()
}

/// Asserts the device refused what it got for `reason` (a frame it could not authenticate is
/// reported and ignored, §10) with nothing staged anywhere on its side.
pub fn assert_device_refused(pair: &mut Pair, reason: FailReason) {
    assert!(
        pair.device_events
            .contains(&DeviceEvent::Unauthenticated(reason))
            || pair.device_events.contains(&DeviceEvent::Failed(reason)),
        "{:?}",
        pair.device_events
    );
    assert!(staged_keys(&pair.device_events).is_empty());
    assert!(!pair.key_store_status().staged);
    assert!(pair.join_server_accepts(RootKeySlot::Active));
}

// ----- a forging server: the key schedule of §5.3–§5.5, run by the attacker -----

/// Which transcript field the forger gets wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tweak {
    None,
    DevEui,
    JoinEui,
    Lorawan,
    Session,
    ServerKeyId,
    DeviceKeyId,
}

/// The server's answer to `req` computed outside the server: a fresh ephemeral key, the key
/// schedule over a transcript with `tweak` applied, and a signature by `signer`'s key in `SLOT`.
/// Returns the downlinks P0 and SigVerifyAns(Accepted) ‖ P1, then P2.
pub fn forge_answer(
    signer: &mut Backend,
    signer_public: &PublicKey,
    device_identity: &PublicKey,
    req: &PubKeyReqRepr,
    tweak: Tweak,
) -> [Vec<u8>; 3] {
    let device_ephemeral = signer.public_key_from_sec1(&req.ephemeral).unwrap();
    let (ephemeral, server_ephemeral) = signer.ephemeral_generate().unwrap();
    let z = signer.ecdh_agree(ephemeral, &device_ephemeral).unwrap();
    let mut dev_eui = DEV_EUI;
    let mut join_eui = JOIN_EUI;
    let mut lorawan = LorawanVersion::V1_0;
    let mut server_key_id = keys::key_id(signer, signer_public);
    let mut device_key_id = keys::key_id(signer, device_identity);
    let mut s = req.session.value();
    match tweak {
        Tweak::None => {}
        Tweak::DevEui => dev_eui[7] ^= 1,
        Tweak::JoinEui => join_eui[7] ^= 1,
        Tweak::Lorawan => lorawan = LorawanVersion::V1_1,
        Tweak::Session => s = req.session.next().value(),
        Tweak::ServerKeyId => server_key_id[0] ^= 1,
        Tweak::DeviceKeyId => device_key_id[0] ^= 1,
    }
    let th = Transcript {
        lorawan,
        dev_eui: &dev_eui,
        join_eui: &join_eui,
        server_key_id: &server_key_id,
        device_key_id: &device_key_id,
        session: s,
        device_ephemeral: &device_ephemeral,
        server_ephemeral: &server_ephemeral,
    }
    .hash(signer);
    // The device derives LoRaWAN 1.0 keys whatever the transcript says.
    let keys = keys::derive_session_keys(signer, z, &th, LorawanVersion::V1_0).unwrap();
    let digest = keys::signed_digest(signer, Role::Server, &th, &keys);
    let signature = signer.identity_sign_digest(SLOT, &digest).unwrap();
    let [head, tail] = Part::signature_parts(signature.as_bytes());
    let session = req.session;
    [
        frame(&[CommandRepr::PubKeyAns(PubKeyAnsRepr {
            session,
            part: Part::EphemeralKey(*server_ephemeral.as_bytes()),
        })]),
        frame(&[
            CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
                session,
                code: Code::Accepted,
            }),
            CommandRepr::PubKeyAns(PubKeyAnsRepr {
                session,
                part: head,
            }),
        ]),
        frame(&[CommandRepr::PubKeyAns(PubKeyAnsRepr {
            session,
            part: tail,
        })]),
    ]
}

/// Plays a forged server against the device of `pair`: the real server never sees a frame.
pub fn against_forger(
    pair: &mut Pair,
    signer: &mut Backend,
    signer_public: &PublicKey,
    tweak: Tweak,
) {
    pair.start();
    let req = pub_key_req(&uplink(pair));
    let identity = pair.record.identity;
    for down in forge_answer(signer, signer_public, &identity, &req, tweak) {
        let _ = to_device(pair, &down);
        if pair
            .device_events
            .iter()
            .any(|e| matches!(e, DeviceEvent::Failed(_)))
        {
            return;
        }
        // The device answers P0 with its signature; the forger ignores it.
        let mut buf = [0u8; 242];
        let _ = pair
            .device
            .poll_transmit(&mut pair.device_backend, pair.now, N, &mut buf);
        pair.drain_events();
    }
}

/// `down` with every command renumbered to session `to`.
pub fn renumber(down: &[u8], to: Session) -> Vec<u8> {
    frame(
        &commands(down)
            .into_iter()
            .map(|c| match c {
                CommandRepr::PubKeyAns(a) => {
                    CommandRepr::PubKeyAns(PubKeyAnsRepr { session: to, ..a })
                }
                CommandRepr::SigVerifyAns(a) => {
                    CommandRepr::SigVerifyAns(SigVerifyAnsRepr { session: to, ..a })
                }
                other => other,
            })
            .collect::<Vec<_>>(),
    )
}

/// Delivers `downs` to the device, letting it transmit (into the void) after each.
pub fn feed(pair: &mut Pair, downs: &[Vec<u8>]) {
    for down in downs {
        let _ = to_device(pair, down);
        let mut buf = [0u8; 242];
        let _ = pair
            .device
            .poll_transmit(&mut pair.device_backend, pair.now, N, &mut buf);
        pair.drain_events();
    }
}

/// A device of its own, for runs of several devices against one server.
pub struct Node {
    pub device: DeviceSession<Backend>,
    pub backend: Backend,
    pub record: DeviceRecord,
    pub events: Vec<DeviceEvent>,
}

impl Node {
    pub fn new(seed: u64, dev_eui: [u8; 8], server_public: PublicKey) -> Self {
        let mut backend = super::backend(seed);
        let identity = backend.identity_generate(SLOT).unwrap();
        let config =
            DeviceConfig::new(dev_eui, JOIN_EUI, LorawanVersion::V1_0, SLOT, server_public);
        let status = KeyStoreStatus {
            active_generation: 0,
            staged: false,
        };
        let device =
            DeviceSession::new(&mut backend, config, DevicePersistent::default(), status).unwrap();
        Self {
            device,
            backend,
            record: DeviceRecord {
                dev_eui,
                join_eui: JOIN_EUI,
                lorawan: LorawanVersion::V1_0,
                identity,
            },
            events: Vec::new(),
        }
    }

    pub fn uplink(&mut self, now: Instant) -> Option<Vec<u8>> {
        let mut buf = [0u8; 242];
        let t = self
            .device
            .poll_transmit(&mut self.backend, now, N, &mut buf)
            .unwrap()?;
        Some(buf[..t.len].to_vec())
    }

    pub fn downlink(&mut self, now: Instant, frame: &[u8]) {
        let _ = self.device.handle_downlink(&mut self.backend, now, frame);
        while let Some(e) = self.device.poll_event() {
            self.events.push(e);
        }
    }
}

pub struct Server {
    pub endpoint: ServerEndpoint,
    pub backend: Backend,
    pub public: PublicKey,
    pub events: Vec<ServerEvent>,
}

impl Server {
    pub fn new(seed: u64, change: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut backend = super::backend(seed);
        let public = backend.identity_generate(SLOT).unwrap();
        let mut config = ServerConfig::new(SLOT, public);
        change(&mut config);
        Self {
            endpoint: ServerEndpoint::new(&mut backend, config),
            backend,
            public,
            events: Vec::new(),
        }
    }

    pub fn uplink(
        &mut self,
        now: Instant,
        record: &DeviceRecord,
        frame: &[u8],
    ) -> Result<UplinkOutcome, Error> {
        let r = self.endpoint.handle_uplink(
            &mut self.backend,
            now,
            &record.dev_eui,
            Some(record),
            frame,
        );
        while let Some(e) = self.endpoint.poll_event() {
            self.events.push(e);
        }
        r
    }

    pub fn downlink(&mut self, dev_eui: &[u8; 8]) -> Option<Vec<u8>> {
        let mut buf = [0u8; 242];
        let t = self.endpoint.poll_transmit(dev_eui, N, &mut buf).unwrap()?;
        Some(buf[..t.len].to_vec())
    }

    pub fn staged_for(&self, dev_eui: &[u8; 8]) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, ServerEvent::StageNewKey { dev_eui: d, .. } if d == dev_eui))
            .count()
    }
}

/// Same-window round trips between `node` and `server` until the node stops sending; returns
/// the uplinks.
pub fn exchange(
    node: &mut Node,
    server: &mut Server,
    now: &mut Instant,
    rounds: usize,
) -> Vec<Vec<u8>> {
    let mut ups = Vec::new();
    for _ in 0..rounds {
        let Some(up) = node.uplink(*now) else { break };
        let _ = server.uplink(*now, &node.record.clone(), &up);
        if let Some(down) = server.downlink(&node.record.dev_eui) {
            node.downlink(*now, &down);
        }
        ups.push(up);
        *now = now.saturating_add(Duration::from_secs(3));
    }
    ups
}
