//! The server role: one [`ServerEndpoint`] serves every device, demultiplexing by DevEUI.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use lorapki_crypto::{CryptoBackend, KeySlot, PublicKey, RootKeySlot, SHA384_LEN, Signature};
use lorapki_wire::{
    AbortRepr, Code, CommandRepr, MAX_COMMAND_LEN, Part, PubKeyAnsRepr, PubKeyReqRepr, Reason,
    Reassembler, Session, SigVerifyAnsRepr, SigVerifyReqRepr,
};

use crate::acceptance::{JoinEffect, KeyAcceptance};
use crate::codec::{self, Incoming};
use crate::error::{Error, FailReason};
use crate::keys::{self, KeyId, LorawanVersion, NewRootKeys, Role, SessionKeys, Transcript};
use crate::outbox::{Entry, Outbox, Status};
use crate::time::{Duration, Instant};
use crate::{REASSEMBLY_SLOTS, Transmit, check_payload_size};

mod snapshot;
pub use snapshot::SessionSnapshot;

/// A token bucket that bounds how many runs a device may start (PROTOCOL.md §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Runs a device may start back to back.
    pub burst: u8,
    /// One more run is allowed per this interval.
    pub refill: Duration,
}

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The backend slot holding the server's signing key.
    pub signing_slot: KeySlot,
    /// Its public key (the one the devices pinned).
    pub signing_public_key: PublicKey,
    /// A pending session with no frame for this long is dropped.
    pub idle_timeout: Duration,
    /// Runs per device.
    pub rate_limit: RateLimit,
    /// Pending sessions over all devices; more PubKeyReqs are answered `RateLimited`.
    pub max_pending_sessions: usize,
}

impl ServerConfig {
    /// The defaults of PROTOCOL.md §6.4.
    #[must_use]
    pub fn new(signing_slot: KeySlot, signing_public_key: PublicKey) -> Self {
        Self {
            signing_slot,
            signing_public_key,
            idle_timeout: Duration::from_secs(3600),
            rate_limit: RateLimit {
                burst: 3,
                refill: Duration::from_secs(3600),
            },
            max_pending_sessions: 10_000,
        }
    }
}

/// What the server knows of a registered device (from its registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// DevEUI, most significant byte first.
    pub dev_eui: [u8; 8],
    /// JoinEUI, most significant byte first.
    pub join_eui: [u8; 8],
    /// LoRaWAN version.
    pub lorawan: LorawanVersion,
    /// The device's identity public key.
    pub identity: PublicKey,
}

/// What the server reports (see [`ServerEndpoint::poll_event`]).
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A run started.
    SessionStarted {
        /// The device.
        dev_eui: [u8; 8],
        /// Its session number.
        session: u8,
    },
    /// The device is authenticated and asked for the key change: the join server must accept
    /// these keys *in addition to* the active ones from now on (§7).
    StageNewKey {
        /// The device.
        dev_eui: [u8; 8],
        /// The new root keys.
        keys: NewRootKeys,
    },
    /// The first session under the staged keys is confirmed: make them active, retire the old.
    ActivateNewKey {
        /// The device.
        dev_eui: [u8; 8],
    },
    /// The device rolled back to its old keys: forget the staged ones.
    RollBack {
        /// The device.
        dev_eui: [u8; 8],
    },
    /// The rekey of this device completed.
    Completed {
        /// The device.
        dev_eui: [u8; 8],
    },
    /// A run ended without a new key.
    Failed {
        /// The device.
        dev_eui: [u8; 8],
        /// Why.
        reason: FailReason,
    },
}

/// What an uplink did (for metrics and logs).
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkOutcome {
    /// Commands acted upon.
    pub accepted: u8,
    /// Commands recognised as duplicates and answered from the stored state, without key work.
    pub duplicates: u8,
    /// Whether expensive key work (ECDH + signing, or a signature verification) was done.
    pub key_work: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ServerCommand {
    Part0,
    Part1,
    Part2,
    Answer,
}

/// A run in progress at the server.
pub(crate) struct PendingSession {
    pub(crate) session: Session,
    pub(crate) record: DeviceRecord,
    pub(crate) device_ephemeral: [u8; 49],
    pub(crate) server_ephemeral: [u8; 49],
    pub(crate) th: [u8; SHA384_LEN],
    pub(crate) keys: SessionKeys,
    pub(crate) server_signature: Signature,
    pub(crate) device_signature: [Option<[u8; 48]>; 2],
    pub(crate) key_change_requested: bool,
    pub(crate) verdict: Option<Code>,
    pub(crate) staged: bool,
    pub(crate) outbox: Outbox<ServerCommand>,
    pub(crate) last_activity: Instant,
}

/// Everything the server keeps per device.
pub(crate) struct DeviceEntry {
    pub(crate) last_session: Option<Session>,
    pub(crate) tokens: u8,
    pub(crate) refilled_at: Instant,
    /// New keys are staged at the join server (accepted beside the active ones).
    pub(crate) staged: bool,
    pub(crate) pending: Option<PendingSession>,
    pub(crate) reassembler: Reassembler<REASSEMBLY_SLOTS>,
    pub(crate) abort: Option<(Session, Reason)>,
}

impl DeviceEntry {
    fn new(config: &ServerConfig, now: Instant) -> Self {
        Self {
            last_session: None,
            tokens: config.rate_limit.burst,
            refilled_at: now,
            staged: false,
            pending: None,
            reassembler: Reassembler::new(),
            abort: None,
        }
    }
}

/// Aborts owed to devices that are not registered, bounded so that unknown DevEUIs cost no memory
/// beyond this (property 9).
const MAX_UNKNOWN_ABORTS: usize = 64;

/// The server side of the exchange for many devices: a sans-IO endpoint (PROTOCOL.md §5–§8).
///
/// Methods, in the style of `quinn_proto::Endpoint`:
///
/// * **getters**: [`pending_sessions`](Self::pending_sessions), [`is_staged`](Self::is_staged),
///   [`export`](Self::export);
/// * **inputs** `handle_*`: [`handle_uplink`](Self::handle_uplink) (an FPort-1 FRMPayload and the
///   registry record of its device), [`handle_session_confirmed`](Self::handle_session_confirmed)
///   (the first uplink of a session created by a join under a given key),
///   [`handle_timeout`](Self::handle_timeout);
/// * **commands**: [`import`](Self::import), [`forget`](Self::forget);
/// * **outputs** `poll_*`: [`poll_transmit`](Self::poll_transmit) (the downlink for one device,
///   into the caller's buffer), [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout).
///
/// **Polling order.** After each input drain [`poll_event`](Self::poll_event) and apply key events
/// to the join server transactionally; when the network server offers a downlink for a device
/// (same window, or queued for after its next uplink) call
/// [`poll_transmit`](Self::poll_transmit); persist [`export`](Self::export) of every device an
/// input touched before acknowledging that input; call [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout).
pub struct ServerEndpoint {
    config: ServerConfig,
    server_key_id: KeyId,
    devices: BTreeMap<[u8; 8], DeviceEntry>,
    unknown_aborts: VecDeque<([u8; 8], Session)>,
    events: VecDeque<ServerEvent>,
}

impl ServerEndpoint {
    /// An endpoint with no device state.
    pub fn new<B: CryptoBackend>(backend: &mut B, config: ServerConfig) -> Self {
        let server_key_id = keys::key_id(backend, &config.signing_public_key);
        Self {
            config,
            server_key_id,
            devices: BTreeMap::new(),
            unknown_aborts: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// How many runs are pending.
    #[must_use]
    pub fn pending_sessions(&self) -> usize {
        self.devices
            .values()
            .filter(|d| d.pending.is_some())
            .count()
    }

    /// Whether new keys are staged for `dev_eui` (the join server then accepts both).
    #[must_use]
    pub fn is_staged(&self, dev_eui: &[u8; 8]) -> bool {
        self.devices.get(dev_eui).is_some_and(|d| d.staged)
    }

    /// The persistable state of one device (None if the endpoint holds nothing for it).
    #[must_use]
    pub fn export(&self, dev_eui: &[u8; 8]) -> Option<SessionSnapshot> {
        self.devices
            .get(dev_eui)
            .map(|entry| SessionSnapshot::encode(dev_eui, entry))
    }

    // ----- commands -----

    /// Loads a device's state exported by any endpoint (e.g. after a restart, or on another
    /// instance), replacing what this endpoint held for it.
    ///
    /// # Errors
    ///
    /// [`Error::BadSnapshot`] if the bytes are not a snapshot.
    pub fn import(&mut self, snapshot: &SessionSnapshot) -> Result<[u8; 8], Error> {
        let (dev_eui, entry) = snapshot.decode()?;
        self.devices.insert(dev_eui, entry);
        Ok(dev_eui)
    }

    /// Drops everything held for a device.
    pub fn forget(&mut self, dev_eui: &[u8; 8]) {
        self.devices.remove(dev_eui);
    }

    // ----- inputs -----

    /// An FPort-1 FRMPayload from `dev_eui`; `record` is the device's registry entry, `None` if it
    /// is not registered (then no key work is done and only an Abort is owed).
    ///
    /// # Errors
    ///
    /// The first problem met (unknown device, malformed frame, stale session, wrong direction);
    /// commands before it took effect, the bad one changed nothing.
    pub fn handle_uplink<B: CryptoBackend>(
        &mut self,
        backend: &mut B,
        now: Instant,
        dev_eui: &[u8; 8],
        record: Option<&DeviceRecord>,
        payload: &[u8],
    ) -> Result<UplinkOutcome, Error> {
        let Some(record) = record.filter(|r| r.dev_eui == *dev_eui) else {
            self.owe_unknown_abort(dev_eui, payload);
            return Err(Error::UnknownDevice);
        };
        let pending_total = self.pending_sessions();
        let config = &self.config;
        let server_key_id = &self.server_key_id;
        let entry = self
            .devices
            .entry(*dev_eui)
            .or_insert_with(|| DeviceEntry::new(config, now));
        let mut outcome = UplinkOutcome::default();
        let mut first_error = None;
        let mut events = Vec::new();
        // The reassembler is moved out for the duration of the frame, so that the commands it
        // completes can be applied to the rest of the entry.
        let mut scratch = Reassembler::<REASSEMBLY_SLOTS>::new();
        core::mem::swap(&mut entry.reassembler, &mut scratch);
        let last_session = entry.last_session;
        let pending_session = entry.pending.as_ref().map(|p| p.session);
        // A KeyChangeReq carries no session: it belongs to the session of the commands it travels
        // with (§3.7), so in a frame of another session it is stale like them (§8).
        let foreign_frame = lorapki_wire::Commands::new(payload)
            .map_while(Result::ok)
            .filter_map(|command| command.session())
            .any(|session| Some(session) != pending_session);
        codec::for_each_command(
            payload,
            &mut scratch,
            |reassembler, session| {
                // A fragment of the pending session, or of a session newer than any seen (the
                // PubKeyReq of a new run arriving in pieces), may be reassembled (§4, §8).
                let admissible = Some(session) == pending_session
                    || last_session.is_none_or(|last| session.is_newer_than(last));
                if admissible && reassembler.session() != Some(session) {
                    reassembler.bind(session);
                }
            },
            |incoming| {
                let result = incoming.and_then(|incoming| {
                    let mut work = Work {
                        backend: &mut *backend,
                        config,
                        server_key_id,
                        events: &mut events,
                        foreign_frame,
                    };
                    work.accept(now, entry, record, pending_total, incoming, &mut outcome)
                });
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            },
        );
        core::mem::swap(&mut entry.reassembler, &mut scratch);
        if (outcome.accepted > 0 || outcome.duplicates > 0)
            && let Some(pending) = entry.pending.as_mut()
        {
            pending.last_activity = now;
        }
        self.events.extend(events);
        match first_error {
            Some(e) if outcome.accepted == 0 && outcome.duplicates == 0 => Err(e),
            _ => Ok(outcome),
        }
    }

    /// The network server saw the first uplink of a session created by a join of `dev_eui` under
    /// `key` (§7): this is what confirms or rolls back a staged key.
    pub fn handle_session_confirmed(&mut self, dev_eui: &[u8; 8], key: RootKeySlot) {
        let Some(entry) = self.devices.get_mut(dev_eui) else {
            return;
        };
        let effect = KeyAcceptance::new(entry.staged).effect(key);
        if effect == JoinEffect::Unchanged {
            return;
        }
        entry.staged = false;
        entry.pending = None;
        match effect {
            JoinEffect::Confirm => {
                self.events
                    .push_back(ServerEvent::ActivateNewKey { dev_eui: *dev_eui });
                self.events
                    .push_back(ServerEvent::Completed { dev_eui: *dev_eui });
            }
            JoinEffect::RollBack => {
                self.events
                    .push_back(ServerEvent::RollBack { dev_eui: *dev_eui });
                self.events.push_back(ServerEvent::Failed {
                    dev_eui: *dev_eui,
                    reason: FailReason::RolledBack,
                });
            }
            JoinEffect::Unchanged => {}
        }
    }

    /// Expires idle pending sessions (their staged keys, if any, stay until a join decides).
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.config.idle_timeout;
        for (dev_eui, entry) in &mut self.devices {
            let expired = entry
                .pending
                .as_ref()
                .is_some_and(|p| now.saturating_since(p.last_activity) >= idle);
            if expired {
                let staged = entry.pending.as_ref().is_some_and(|p| p.staged);
                entry.pending = None;
                if !staged {
                    self.events.push_back(ServerEvent::Failed {
                        dev_eui: *dev_eui,
                        reason: FailReason::Expired,
                    });
                }
            }
        }
    }

    // ----- outputs -----

    /// The downlink for `dev_eui` at a transmit opportunity with maximum payload `n`, written into
    /// `buf`; `None` if the server has nothing for that device.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadSize`] if `n` is outside 11..=242 or `buf` is shorter than `n`.
    pub fn poll_transmit(
        &mut self,
        dev_eui: &[u8; 8],
        n: usize,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, Error> {
        check_payload_size(n, buf.len())?;
        let out = &mut buf[..n];
        if let Some(index) = self.unknown_aborts.iter().position(|(d, _)| d == dev_eui)
            && let Some((_, session)) = self.unknown_aborts.remove(index)
        {
            return Ok(emit_abort(out, session, Reason::UnknownDevice));
        }
        let Some(entry) = self.devices.get_mut(dev_eui) else {
            return Ok(None);
        };
        if let Some((session, reason)) = entry.abort.take() {
            return Ok(emit_abort(out, session, reason));
        }
        let Some(pending) = entry.pending.as_mut() else {
            return Ok(None);
        };
        let session = pending.session;
        let ephemeral = pending.server_ephemeral;
        let [head, tail] = Part::signature_parts(pending.server_signature.as_bytes());
        let verdict = pending.verdict;
        // §6.2 step 1: a new answer goes before everything else.
        let first = |e: &Entry<ServerCommand>| {
            e.kind == ServerCommand::Answer && e.status == Status::Unsent
        };
        let len = pending.outbox.build(
            out,
            session,
            first,
            |kind, bytes: &mut [u8; MAX_COMMAND_LEN]| {
                let repr = match kind {
                    ServerCommand::Part0 => CommandRepr::PubKeyAns(PubKeyAnsRepr {
                        session,
                        part: Part::EphemeralKey(ephemeral),
                    }),
                    ServerCommand::Part1 => CommandRepr::PubKeyAns(PubKeyAnsRepr {
                        session,
                        part: head,
                    }),
                    ServerCommand::Part2 => CommandRepr::PubKeyAns(PubKeyAnsRepr {
                        session,
                        part: tail,
                    }),
                    ServerCommand::Answer => match verdict {
                        Some(code) => CommandRepr::SigVerifyAns(SigVerifyAnsRepr { session, code }),
                        None => return 0,
                    },
                };
                codec::emit(&repr, bytes)
            },
        );
        Ok((len > 0).then_some(Transmit { len }))
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work (the earliest idle expiry).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.devices
            .values()
            .filter_map(|d| d.pending.as_ref())
            .map(|p| p.last_activity.saturating_add(self.config.idle_timeout))
            .min()
    }

    fn owe_unknown_abort(&mut self, dev_eui: &[u8; 8], payload: &[u8]) {
        let session = lorapki_wire::Commands::new(payload).find_map(|c| c.ok()?.session());
        let Some(session) = session else { return };
        if self.unknown_aborts.iter().any(|(d, _)| d == dev_eui) {
            return;
        }
        if self.unknown_aborts.len() >= MAX_UNKNOWN_ABORTS {
            self.unknown_aborts.pop_front();
        }
        self.unknown_aborts.push_back((*dev_eui, session));
    }
}

fn emit_abort(out: &mut [u8], session: Session, reason: Reason) -> Option<Transmit> {
    let len = CommandRepr::Abort(AbortRepr { session, reason })
        .emit(out)
        .ok()?;
    Some(Transmit { len })
}

/// The per-uplink context in which one command is applied.
struct Work<'a, B> {
    backend: &'a mut B,
    config: &'a ServerConfig,
    server_key_id: &'a KeyId,
    events: &'a mut Vec<ServerEvent>,
    /// The frame carries commands of a session other than the pending one.
    foreign_frame: bool,
}

impl<B: CryptoBackend> Work<'_, B> {
    fn accept(
        &mut self,
        now: Instant,
        entry: &mut DeviceEntry,
        record: &DeviceRecord,
        pending_total: usize,
        incoming: Incoming,
        outcome: &mut UplinkOutcome,
    ) -> Result<(), Error> {
        match incoming {
            Incoming::PubKeyReq(req) => {
                self.pub_key_req(now, entry, record, pending_total, req, outcome)
            }
            Incoming::SigVerifyReq(req) => self.sig_verify_req(entry, record, req, outcome),
            Incoming::KeyChangeReq => {
                if self.foreign_frame {
                    return Err(Error::StaleSession);
                }
                let pending = entry.pending.as_mut().ok_or(Error::StaleSession)?;
                if pending.key_change_requested {
                    outcome.duplicates += 1;
                    pending.outbox.resend(ServerCommand::Answer);
                    return Ok(());
                }
                pending.key_change_requested = true;
                outcome.accepted += 1;
                if pending.verdict == Some(Code::Accepted) {
                    self.stage(entry, record);
                }
                Ok(())
            }
            Incoming::Abort(AbortRepr { session, reason }) => {
                let pending = entry.pending.as_ref().ok_or(Error::StaleSession)?;
                if pending.session != session {
                    return Err(Error::StaleSession);
                }
                outcome.accepted += 1;
                if !pending.staged {
                    entry.pending = None;
                    self.events.push(ServerEvent::Failed {
                        dev_eui: record.dev_eui,
                        reason: FailReason::Aborted(reason.into()),
                    });
                }
                Ok(())
            }
            other => Err(Error::WrongDirection { cid: other.cid() }),
        }
    }

    fn pub_key_req(
        &mut self,
        now: Instant,
        entry: &mut DeviceEntry,
        record: &DeviceRecord,
        pending_total: usize,
        req: PubKeyReqRepr,
        outcome: &mut UplinkOutcome,
    ) -> Result<(), Error> {
        let session = req.session;
        if req.version != lorapki_wire::PROTOCOL_VERSION {
            entry.abort = Some((session, Reason::UnsupportedVersion));
            return Err(Error::Refused);
        }
        // §8: the replay and stale-session rules, all before any key work.
        if let Some(pending) = &mut entry.pending
            && pending.session == session
        {
            if pending.device_ephemeral == req.ephemeral {
                // The device still lacks EPH_S: send it first again (§6.2 step 1).
                outcome.duplicates += 1;
                pending.outbox.resend(ServerCommand::Part0);
                return Ok(());
            }
            entry.abort = Some((session, Reason::StaleSession));
            return Err(Error::StaleSession);
        }
        if entry
            .last_session
            .is_some_and(|last| !session.is_newer_than(last))
        {
            entry.abort = Some((session, Reason::StaleSession));
            return Err(Error::StaleSession);
        }
        // §6.4: rate limits, still before key work.
        refill(entry, &self.config.rate_limit, now);
        if entry.tokens == 0
            || (entry.pending.is_none() && pending_total >= self.config.max_pending_sessions)
        {
            entry.abort = Some((session, Reason::RateLimited));
            return Err(Error::Refused);
        }
        let Ok(device_ephemeral) = self.backend.public_key_from_sec1(&req.ephemeral) else {
            entry.abort = Some((session, Reason::Malformed));
            return Err(Error::Crypto(lorapki_crypto::Error::InvalidPublicKey));
        };
        entry.tokens -= 1;
        outcome.key_work = true;
        let pending = match self.respond(now, record, session, &device_ephemeral) {
            Ok(pending) => pending,
            Err(e) => {
                entry.abort = Some((session, Reason::ServerError));
                return Err(Error::Crypto(e));
            }
        };
        if let Some(old) = entry.pending.replace(pending)
            && !old.staged
        {
            self.events.push(ServerEvent::Failed {
                dev_eui: record.dev_eui,
                reason: FailReason::Superseded,
            });
        }
        entry.last_session = Some(session);
        entry.abort = None;
        outcome.accepted += 1;
        self.events.push(ServerEvent::SessionStarted {
            dev_eui: record.dev_eui,
            session: session.value(),
        });
        Ok(())
    }

    /// Ephemeral key, ECDH, transcript, key schedule and the server's signature (§5.2 step 6).
    fn respond(
        &mut self,
        now: Instant,
        record: &DeviceRecord,
        session: Session,
        device_ephemeral: &PublicKey,
    ) -> lorapki_crypto::Result<PendingSession> {
        let backend = &mut *self.backend;
        let (ephemeral, server_ephemeral) = backend.ephemeral_generate()?;
        let z = backend.ecdh_agree(ephemeral, device_ephemeral)?;
        let device_key_id = keys::key_id(backend, &record.identity);
        let th = Transcript {
            lorawan: record.lorawan,
            dev_eui: &record.dev_eui,
            join_eui: &record.join_eui,
            server_key_id: self.server_key_id,
            device_key_id: &device_key_id,
            session: session.value(),
            device_ephemeral,
            server_ephemeral: &server_ephemeral,
        }
        .hash(backend);
        let keys = keys::derive_session_keys(backend, z, &th, record.lorawan)?;
        let digest = keys::signed_digest(backend, Role::Server, &th, &keys);
        let server_signature = backend.identity_sign_digest(self.config.signing_slot, &digest)?;
        let mut outbox = Outbox::new();
        outbox.push(ServerCommand::Part0);
        outbox.push(ServerCommand::Part1);
        outbox.push(ServerCommand::Part2);
        Ok(PendingSession {
            session,
            record: *record,
            device_ephemeral: *device_ephemeral.as_bytes(),
            server_ephemeral: *server_ephemeral.as_bytes(),
            th,
            keys,
            server_signature,
            device_signature: [None, None],
            key_change_requested: false,
            verdict: None,
            staged: false,
            outbox,
            last_activity: now,
        })
    }

    fn sig_verify_req(
        &mut self,
        entry: &mut DeviceEntry,
        record: &DeviceRecord,
        req: SigVerifyReqRepr,
        outcome: &mut UplinkOutcome,
    ) -> Result<(), Error> {
        let pending = entry.pending.as_mut().ok_or(Error::StaleSession)?;
        if pending.session != req.session {
            return Err(Error::StaleSession);
        }
        pending.outbox.ack(ServerCommand::Part0);
        if req.holds_all_parts {
            pending.outbox.ack(ServerCommand::Part1);
            pending.outbox.ack(ServerCommand::Part2);
        }
        let chunk = usize::from(req.chunk.min(1));
        match pending.device_signature[chunk] {
            Some(_) => {
                // §8: a duplicate (or a conflicting copy) changes nothing; the signature is
                // verified once. The device retransmits because it lacks an answer: resend it.
                outcome.duplicates += 1;
                pending.outbox.resend(ServerCommand::Answer);
                return Ok(());
            }
            None => pending.device_signature[chunk] = Some(req.data),
        }
        outcome.accepted += 1;
        let (Some(r), Some(s)) = (pending.device_signature[0], pending.device_signature[1]) else {
            return Ok(());
        };
        if pending.verdict.is_some() {
            return Ok(());
        }
        outcome.key_work = true;
        let signature = Signature::from_scalars(&r, &s);
        let digest =
            keys::signed_digest(&mut *self.backend, Role::Device, &pending.th, &pending.keys);
        let verdict = match self
            .backend
            .ecdsa_verify_digest(&record.identity, &digest, &signature)
        {
            Ok(()) => Code::Accepted,
            Err(_) => Code::Rejected,
        };
        pending.verdict = Some(verdict);
        pending.outbox.push(ServerCommand::Answer);
        if verdict == Code::Accepted {
            if pending.key_change_requested {
                self.stage(entry, record);
            }
        } else {
            self.events.push(ServerEvent::Failed {
                dev_eui: record.dev_eui,
                reason: FailReason::DeviceAuthentication,
            });
        }
        Ok(())
    }

    fn stage(&mut self, entry: &mut DeviceEntry, record: &DeviceRecord) {
        let Some(pending) = entry.pending.as_mut() else {
            return;
        };
        if pending.staged {
            return;
        }
        pending.staged = true;
        entry.staged = true;
        self.events.push(ServerEvent::StageNewKey {
            dev_eui: record.dev_eui,
            keys: pending.keys.root.clone_secret(),
        });
    }
}

fn refill(entry: &mut DeviceEntry, limit: &RateLimit, now: Instant) {
    let interval = limit.refill.as_millis().max(1);
    let elapsed = now.saturating_since(entry.refilled_at).as_millis();
    let add = elapsed / interval;
    if add > 0 {
        let tokens = u64::from(entry.tokens)
            .saturating_add(add)
            .min(u64::from(limit.burst));
        entry.tokens = u8::try_from(tokens).unwrap_or(limit.burst);
        entry.refilled_at = entry
            .refilled_at
            .saturating_add(Duration::from_millis(add * interval));
    }
}
