//! The active attacker of PROTOCOL.md §10 inside a [`Pair`]: it knows the factory key, so it can
//! join as the device, forge JoinAccepts under the factory key, and read, forge and inject any
//! FPort-1 frame of a session joined under it; it jams frames; it replays earlier ones. It does
//! not know the device's identity key, the server's signing key, or any ephemeral private key
//! but its own.
//!
//! Its moves are methods of [`Pair`] (`attack_*`); what it learns on the air is kept in
//! [`Adversary`]; [`Pair::check_properties`] asserts the properties P1–P3 of PROTOCOL.md §10 in
//! the current state.

use lorapki_crypto::{
    AesBackend, AesKey, CryptoBackend, PublicKey, RootKeyKind, RootKeySlot, RootKeyStore,
};
use lorapki_proto::keys::{self, Transcript};
use lorapki_proto::{DeviceStatus, LorawanVersion};
use lorapki_wire::{
    AbortRepr, Code, CommandRepr, Commands, FragmentRepr, Part, PubKeyAnsRepr, PubKeyReqRepr,
    Reason, Session, SigVerifyAnsRepr, SigVerifyReqRepr,
};

use super::attacker::frame;
use super::memo::MemoEphemeral;
use super::{Backend, DEV_EUI, Direction, FACTORY_APP_KEY, JOIN_EUI, NsModel, Pair};

/// What the attacker holds.
pub struct Adversary {
    pub backend: Backend,
    /// The ephemeral keys of its forged PubKeyReqs, by session, until it sees their EPH_S.
    runs: Vec<(u8, PublicKey, Option<MemoEphemeral>)>,
    /// Root keys it derived: a forged run's key, once the server's EPH_S for it was on the air.
    pub learned: Vec<AesKey>,
    /// The key under which the join server verified a JoinRequest while it was staged (the
    /// evidence of P2).
    pub js_proof: Option<AesKey>,
    /// By JoinRequest index: jammed before the join server, answered by a forged JoinAccept.
    jammed: Vec<bool>,
    forged: Vec<bool>,
    /// Random bytes for forged signatures and parts.
    counter: u8,
}

impl Adversary {
    pub fn new(seed: u64) -> Self {
        Self {
            backend: super::backend(seed ^ 0xa77a_c4e5),
            runs: Vec::new(),
            learned: Vec::new(),
            js_proof: None,
            jammed: Vec::new(),
            forged: Vec::new(),
            counter: 0,
        }
    }

    /// (jammed, answered by a forged JoinAccept) for JoinRequest `index`.
    pub fn join_moves(&self, index: u32) -> (bool, bool) {
        let at = |v: &Vec<bool>| v.get(index as usize).copied().unwrap_or(false);
        (at(&self.jammed), at(&self.forged))
    }

    fn noise<const L: usize>(&mut self) -> [u8; L] {
        self.counter = self.counter.wrapping_add(1);
        let mut bytes = [0u8; L];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) ^ self.counter.wrapping_mul(0x5b) ^ 0xa5;
        }
        bytes
    }
}

/// The attacker's moves, for explorers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attack {
    /// Joins as the device under the factory key.
    JoinAsDevice,
    /// Jams the device's next JoinRequest and answers it with a JoinAccept under the factory key.
    ForgeJoinAccept,
    /// Jams the device's next JoinRequest (the join server never sees it).
    JamJoinRequest,
    /// A PubKeyReq of its own, with S = the device's S + this offset.
    PubKeyReq(u8),
    /// To the device: Abort(S, ServerError).
    Abort,
    /// To the device: SigVerifyAns(S, Rejected).
    Rejected,
    /// To the device: PubKeyAns part 0 with the attacker's ephemeral key.
    Part0,
    /// To the device: PubKeyAns part 1 or 2 with forged bytes.
    Part1,
    Part2,
    /// To the server: SigVerifyReq chunk 0 or 1 with forged bytes.
    Chunk0,
    Chunk1,
    /// To the server: a Fragment of a PubKeyReq with S = the device's S + 1.
    FragmentOfNewerSession,
}

pub const ATTACKS: [Attack; 14] = [
    Attack::JoinAsDevice,
    Attack::ForgeJoinAccept,
    Attack::JamJoinRequest,
    Attack::PubKeyReq(0),
    Attack::PubKeyReq(1),
    Attack::PubKeyReq(31),
    Attack::Abort,
    Attack::Rejected,
    Attack::Part0,
    Attack::Part1,
    Attack::Part2,
    Attack::Chunk0,
    Attack::Chunk1,
    Attack::FragmentOfNewerSession,
];

impl Pair {
    /// The session the device runs, or ran last.
    pub fn device_session(&self) -> Session {
        let value = match self.device.status() {
            DeviceStatus::Running { session } => session,
            _ => self.device.persistent().last_session.unwrap_or(0),
        };
        Session::new(value & 0x3f).unwrap()
    }

    /// Plays one attacker move now. Returns whether it had anything to act on (a join move
    /// needs a JoinRequest to come, a run move a run).
    pub fn attack(&mut self, attack: Attack) -> bool {
        let s = self.device_session();
        let running = matches!(self.device.status(), DeviceStatus::Running { .. });
        match attack {
            Attack::JoinAsDevice => self.attack_join_as_device(),
            Attack::ForgeJoinAccept | Attack::JamJoinRequest => {
                if self.device.join_key().is_none() {
                    return false;
                }
                let index = self.join_index as usize;
                let list = if attack == Attack::ForgeJoinAccept {
                    &mut self.adversary.forged
                } else {
                    &mut self.adversary.jammed
                };
                if list.len() <= index {
                    list.resize(index + 1, false);
                }
                list[index] = true;
                if attack == Attack::ForgeJoinAccept {
                    // The genuine JoinRequest is jammed too: the forged answer takes its place.
                    let jammed = &mut self.adversary.jammed;
                    if jammed.len() <= index {
                        jammed.resize(index + 1, false);
                    }
                    jammed[index] = true;
                }
            }
            Attack::PubKeyReq(offset) => {
                let session = Session::new((s.value() + offset) & 0x3f).unwrap();
                let (ephemeral, public) = self.adversary.backend.ephemeral_generate().unwrap();
                self.adversary
                    .runs
                    .push((session.value(), public, Some(ephemeral)));
                let up = frame(&[CommandRepr::PubKeyReq(PubKeyReqRepr {
                    session,
                    version: lorapki_wire::PROTOCOL_VERSION,
                    ephemeral: *public.as_bytes(),
                })]);
                self.inject_uplink(&up);
            }
            Attack::Chunk0 | Attack::Chunk1 => {
                if !running {
                    return false;
                }
                let data = self.adversary.noise::<48>();
                let up = frame(&[CommandRepr::SigVerifyReq(SigVerifyReqRepr {
                    session: s,
                    chunk: u8::from(attack == Attack::Chunk1),
                    // A forged chunk 1 also claims the device holds parts 0 and 1 (A = 1).
                    holds_all_parts: attack == Attack::Chunk1,
                    data,
                })]);
                self.inject_uplink(&up);
            }
            Attack::FragmentOfNewerSession => {
                let data = [lorapki_wire::cid::PUB_KEY_REQ, (s.next().value() << 2) | 1];
                let up = frame(&[CommandRepr::Fragment(FragmentRepr {
                    session: s.next(),
                    fid: 0,
                    offset: 0,
                    data: &data,
                })]);
                self.inject_uplink(&up);
            }
            Attack::Abort | Attack::Rejected | Attack::Part0 | Attack::Part1 | Attack::Part2 => {
                if !running {
                    return false;
                }
                let command = match attack {
                    Attack::Abort => CommandRepr::Abort(AbortRepr {
                        session: s,
                        reason: Reason::ServerError,
                    }),
                    Attack::Rejected => CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
                        session: s,
                        code: Code::Rejected,
                    }),
                    Attack::Part0 => {
                        let (_, public) = self.adversary.backend.ephemeral_generate().unwrap();
                        CommandRepr::PubKeyAns(PubKeyAnsRepr {
                            session: s,
                            part: Part::EphemeralKey(*public.as_bytes()),
                        })
                    }
                    Attack::Part1 => CommandRepr::PubKeyAns(PubKeyAnsRepr {
                        session: s,
                        part: Part::SignatureHead(self.adversary.noise::<49>()),
                    }),
                    _ => CommandRepr::PubKeyAns(PubKeyAnsRepr {
                        session: s,
                        part: Part::SignatureTail(self.adversary.noise::<47>()),
                    }),
                };
                self.inject_downlink(&frame(&[command]));
            }
        }
        true
    }

    /// A JoinRequest under the factory key, made by the attacker: the join server verifies it
    /// like any other.
    fn attack_join_as_device(&mut self) {
        let nonce = (0x8000_0000u32 | self.join_index).to_be_bytes();
        let message = [&DEV_EUI[..], &JOIN_EUI[..], &nonce[..]];
        let factory = AesKey::from_array(FACTORY_APP_KEY);
        let mic = self.server_backend.aes128_cmac(&factory, &message).unwrap();
        if let Some(key) = self.join_server_verifies(&message, &mic) {
            self.server.handle_join_verified(&DEV_EUI, key);
            self.drain_events();
        }
    }

    /// A forged uplink the server receives. Its answer goes out in that uplink's window, where
    /// the device does not listen (the attacker reads it); in the next-uplink model the network
    /// server sends what it held for the device in that window too, so the device loses it.
    pub fn inject_uplink(&mut self, up: &[u8]) {
        self.air.push((Direction::Up, up.to_vec()));
        let _ = self.server.handle_uplink(
            &mut self.server_backend,
            self.now,
            &DEV_EUI,
            Some(&self.record),
            up,
        );
        self.drain_events();
        let n = (self.payload_size)(self.up_index);
        if self.model == NsModel::NextUplink
            && let Some(lost) = self.ns_queue.pop_front()
        {
            self.adversary_observes(&lost);
            self.air.push((Direction::Down, lost));
        }
        let mut down = [0u8; 242];
        if let Some(t) = self.server.poll_transmit(&DEV_EUI, n, &mut down).unwrap() {
            let answer = down[..t.len].to_vec();
            self.adversary_observes(&answer);
            self.air.push((Direction::Down, answer.clone()));
            if self.model == NsModel::NextUplink {
                self.ns_queue.push_back(answer);
            }
        }
        self.drain_events();
    }

    /// A forged downlink the device receives (in an RX window of its last uplink).
    pub fn inject_downlink(&mut self, down: &[u8]) {
        self.air.push((Direction::Down, down.to_vec()));
        self.view.sync(self.device.status());
        self.view.downlink(down);
        let _ = self
            .device
            .handle_downlink(&mut self.device_backend, self.now, down);
        self.drain_events();
    }

    /// The attacker reads a downlink: an EPH_S for one of its own runs gives it that run's key.
    pub fn adversary_observes(&mut self, down: &[u8]) {
        for command in Commands::new(down).map_while(Result::ok) {
            let Ok(CommandRepr::PubKeyAns(PubKeyAnsRepr {
                session,
                part: Part::EphemeralKey(eph_s),
            })) = CommandRepr::parse(&command)
            else {
                continue;
            };
            let Some(at) = self
                .adversary
                .runs
                .iter()
                .position(|(s, _, e)| *s == session.value() && e.is_some())
            else {
                continue;
            };
            let (s, eph_d, ephemeral) = &mut self.adversary.runs[at];
            let (s, eph_d, ephemeral) = (*s, *eph_d, ephemeral.take().unwrap());
            let backend = &mut self.adversary.backend;
            let Ok(server_ephemeral) = backend.public_key_from_sec1(&eph_s) else {
                continue;
            };
            let z = backend.ecdh_agree(ephemeral, &server_ephemeral).unwrap();
            let server_key_id = keys::key_id(backend, &self.server_config.signing_public_key);
            let device_key_id = keys::key_id(backend, &self.record.identity);
            let th = Transcript {
                lorawan: LorawanVersion::V1_0,
                dev_eui: &DEV_EUI,
                join_eui: &JOIN_EUI,
                server_key_id: &server_key_id,
                device_key_id: &device_key_id,
                session: s,
                device_ephemeral: &eph_d,
                server_ephemeral: &server_ephemeral,
            }
            .hash(backend);
            let derived = keys::derive_session_keys(backend, z, &th, LorawanVersion::V1_0).unwrap();
            self.adversary.learned.push(derived.root.app_key);
        }
    }

    /// Whether the join server still accepts the factory key for the device.
    pub fn join_server_accepts_factory_key(&mut self) -> bool {
        let factory = AesKey::from_array(FACTORY_APP_KEY);
        self.join_server.active == factory || self.join_server.staged.as_ref() == Some(&factory)
    }

    /// Whether the device's `slot` holds the factory key.
    pub fn device_slot_is_factory(&mut self, slot: RootKeySlot) -> bool {
        self.device_slot_holds(slot, &AesKey::from_array(FACTORY_APP_KEY))
    }

    /// Whether the device's `slot` holds `key`.
    pub fn device_slot_holds(&mut self, slot: RootKeySlot, key: &AesKey) -> bool {
        let message: [&[u8]; 1] = [b"holds"];
        let Ok(mic) = self
            .device_store
            .root_cmac(slot, RootKeyKind::AppKey, &message)
        else {
            return false;
        };
        self.server_backend.aes128_cmac(key, &message).unwrap() == mic
    }

    fn device_holds(&mut self, key: &AesKey) -> bool {
        self.device_slot_holds(RootKeySlot::Active, key)
            || self.device_slot_holds(RootKeySlot::Staged, key)
    }

    /// P1–P3 of PROTOCOL.md §10 in the current state.
    pub fn check_properties(&mut self) -> Result<(), String> {
        // P1: the device holds a key the join server accepts.
        self.check_invariants().map_err(|e| format!("P1: {e}"))?;
        // P2: once the join server saw a JoinRequest under the new key, the device keeps it.
        if let Some(proof) = self.adversary.js_proof.as_ref().map(AesKey::clone_secret)
            && !self.device_holds(&proof)
        {
            return Err("P2: the device dropped the key the join server saw proof of".into());
        }
        // P2: the join server never drops a key the device activated (P1 covers it: the device
        // then holds nothing else), nor the staged key while the device holds it staged (P3).
        // P3: the attacker never learns a key that either side holds.
        let js_keys: Vec<AesKey> = [
            Some(&self.join_server.active),
            self.join_server.staged.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(AesKey::clone_secret)
        .collect();
        let learned: Vec<AesKey> = self
            .adversary
            .learned
            .iter()
            .map(AesKey::clone_secret)
            .collect();
        for key in &learned {
            if js_keys.contains(key) || self.device_holds(key) {
                return Err("P3: a side holds a key the attacker derived".into());
            }
        }
        // P3: the device never stages a key the join server does not hold.
        if self.device_store.status().unwrap().staged {
            let mut held = false;
            for key in &js_keys {
                held |= self.device_slot_holds(RootKeySlot::Staged, key);
            }
            if !held {
                return Err("P3: the device staged a key the join server does not hold".into());
            }
        }
        Ok(())
    }
}
