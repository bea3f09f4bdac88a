//! One device's server-side state machine ([`ServerSession`]), as `quinn_proto::Connection` is one
//! peer's: the run in progress, the stale-session and replay rules, the run budget, and the
//! downlinks it owes. What is shared by every device (demultiplexing, the pending bound over all
//! devices) is the [`ServerEndpoint`](super::ServerEndpoint)'s, or the caller's.

use alloc::collections::VecDeque;

use lorapki_crypto::{CryptoBackend, PublicKey, RootKeySlot, SHA384_LEN, Signature};
use lorapki_wire::{
    AbortRepr, Code, CommandRepr, MAX_COMMAND_LEN, Part, PubKeyAnsRepr, PubKeyReqRepr, Reason,
    Reassembler, Session, SigVerifyAnsRepr, SigVerifyReqRepr,
};

use super::{DeviceRecord, RateLimit, ServerContext, ServerEvent, SessionSnapshot, UplinkOutcome};
use crate::acceptance::{JoinEffect, KeyAcceptance};
use crate::codec::{self, Incoming};
use crate::error::{Error, FailReason};
use crate::keys::{self, Role, SessionKeys, Transcript};
use crate::outbox::{Entry, Outbox, Status};
use crate::time::{Duration, Instant};
use crate::{REASSEMBLY_SLOTS, Transmit, check_payload_size};

/// Bytes of SIG_S the server withholds until it has staged the new keys (§5.5): the end of
/// PubKeyAns part 2. Eight bytes leave a forger 2^64 guesses, each one a downlink the device
/// checks.
pub(crate) const WITHHELD: usize = 8;
/// The length of PubKeyAns part 2 (CID, HDR and 47 bytes of SIG_S).
const PART2_LEN: usize = 49;

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
    /// The result of the last verification of the chunks held: `Accepted` is final, `Rejected`
    /// is not (a forged chunk may have caused it; other bytes are verified again).
    pub(crate) verdict: Option<Code>,
    /// Verifications of SIG_D done in this run (bounded by `verifications_per_run`).
    pub(crate) verifications: u8,
    pub(crate) staged: bool,
    pub(crate) outbox: Outbox<ServerCommand>,
    pub(crate) last_activity: Instant,
}

/// Everything the server keeps of one device between inputs (what a [`SessionSnapshot`] holds,
/// plus the transient reassembly state and the Abort still owed).
pub(crate) struct DeviceState {
    /// The session number of the last *authenticated* run (its SIG_D verified): what makes a
    /// PubKeyReq stale (§8). A forged PubKeyReq never moves it.
    pub(crate) last_session: Option<Session>,
    pub(crate) tokens: u8,
    pub(crate) refilled_at: Instant,
    /// New keys are staged at the join server (accepted beside the active ones).
    pub(crate) staged: bool,
    pub(crate) pending: Option<PendingSession>,
    pub(crate) reassembler: Reassembler<REASSEMBLY_SLOTS>,
    pub(crate) abort: Option<(Session, Reason)>,
}

/// The server side of one device's exchange (PROTOCOL.md §5–§8): a sans-IO state machine.
///
/// Methods, in the style of `quinn_proto::Connection`:
///
/// * **getters**: [`dev_eui`](Self::dev_eui), [`is_pending`](Self::is_pending),
///   [`is_staged`](Self::is_staged), [`export`](Self::export);
/// * **inputs** `handle_*`: [`handle_uplink`](Self::handle_uplink) (an FPort-1 FRMPayload and
///   the device's registry record), [`handle_join_verified`](Self::handle_join_verified),
///   [`handle_timeout`](Self::handle_timeout);
/// * **outputs** `poll_*`: [`poll_transmit`](Self::poll_transmit),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
///
/// Every method that needs the server's configuration takes the [`ServerContext`] shared by all
/// sessions of one server key. A session is made with [`new`](Self::new) for a device the server
/// holds nothing for, or from a stored snapshot with [`from_snapshot`](Self::from_snapshot).
pub struct ServerSession {
    dev_eui: [u8; 8],
    pub(crate) state: DeviceState,
    events: VecDeque<ServerEvent>,
}

impl core::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerSession")
            .field("dev_eui", &self.dev_eui)
            .field("pending", &self.is_pending())
            .field("staged", &self.is_staged())
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// A session for a device the server holds no state for, with a full run budget.
    #[must_use]
    pub fn new(context: &ServerContext, dev_eui: [u8; 8], now: Instant) -> Self {
        Self::from_state(
            dev_eui,
            DeviceState {
                last_session: None,
                tokens: context.config.rate_limit.burst,
                refilled_at: now,
                staged: false,
                pending: None,
                reassembler: Reassembler::new(),
                abort: None,
            },
        )
    }

    /// The session a snapshot exported by any server holds (after a restart, or on another
    /// instance).
    ///
    /// # Errors
    ///
    /// [`Error::BadSnapshot`] if the bytes are not a snapshot.
    pub fn from_snapshot(snapshot: &SessionSnapshot) -> Result<Self, Error> {
        let (dev_eui, state) = snapshot.decode()?;
        Ok(Self::from_state(dev_eui, state))
    }

    fn from_state(dev_eui: [u8; 8], state: DeviceState) -> Self {
        Self {
            dev_eui,
            state,
            events: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// The device.
    #[must_use]
    pub fn dev_eui(&self) -> [u8; 8] {
        self.dev_eui
    }

    /// Whether a run is pending (it counts against the pending bound).
    #[must_use]
    pub fn is_pending(&self) -> bool {
        self.state.pending.is_some()
    }

    /// Whether new keys are staged (the join server then accepts both).
    #[must_use]
    pub fn is_staged(&self) -> bool {
        self.state.staged
    }

    /// The persistable state.
    #[must_use]
    pub fn export(&self) -> SessionSnapshot {
        SessionSnapshot::encode(&self.dev_eui, &self.state)
    }

    // ----- inputs -----

    /// An FPort-1 FRMPayload from the device; `record` is its registry entry. A device has at
    /// most one pending run, and its run budget bounds the key work its frames can cause
    /// (PROTOCOL.md §6.4): nothing one device's frames do touches another device.
    ///
    /// # Errors
    ///
    /// The first problem met (a record of another device, malformed frame, stale session, wrong
    /// direction); commands before it took effect, the bad one changed nothing.
    pub fn handle_uplink<B: CryptoBackend>(
        &mut self,
        backend: &mut B,
        context: &ServerContext,
        now: Instant,
        record: &DeviceRecord,
        payload: &[u8],
    ) -> Result<UplinkOutcome, Error> {
        if record.dev_eui != self.dev_eui {
            return Err(Error::UnknownDevice);
        }
        if let Some(e) = undefined_first_command(payload) {
            return Err(e);
        }
        let entry = &mut self.state;
        let mut outcome = UplinkOutcome::default();
        let mut first_error = None;
        // The reassembler is moved out for the duration of the frame, so that the commands it
        // completes can be applied to the rest of the state.
        let mut scratch = Reassembler::<REASSEMBLY_SLOTS>::new();
        core::mem::swap(&mut entry.reassembler, &mut scratch);
        let last_session = entry.last_session;
        let pending_session = entry.pending.as_ref().map(|p| p.session);
        let leased = entry
            .pending
            .as_ref()
            .is_some_and(|p| p.leased(context, now));
        // A KeyChangeReq carries no session: it belongs to the session of the commands it travels
        // with (§3.7), so in a frame of another session it is stale like them (§8); alone, or
        // beside Fragments of the pending run, it is the pending run's.
        let foreign_frame = lorapki_wire::Commands::new(payload)
            .map_while(Result::ok)
            .filter_map(|command| command.session())
            .any(|session| Some(session) != pending_session);
        let mut work = Work {
            backend,
            context,
            events: &mut self.events,
            foreign_frame,
        };
        codec::for_each_command(
            payload,
            &mut scratch,
            |reassembler, session| {
                // A fragment of the pending session, or, unless the pending run holds its lease,
                // of a session newer than the last authenticated one (the PubKeyReq of a new run
                // arriving in pieces), may be reassembled (§4, §8).
                let admissible = Some(session) == pending_session
                    || (!leased && last_session.is_none_or(|last| session.is_newer_than(last)));
                if admissible && reassembler.session() != Some(session) {
                    reassembler.bind(session);
                }
            },
            |incoming| {
                let result = incoming
                    .and_then(|incoming| work.accept(now, entry, record, incoming, &mut outcome));
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
        match first_error {
            Some(e) if outcome.accepted == 0 && outcome.duplicates == 0 => Err(e),
            _ => Ok(outcome),
        }
    }

    /// The join server verified a JoinRequest of the device under `key` (§7). Under the staged
    /// key it confirms it: only the device can make that MIC. Under the active key it changes
    /// nothing: whoever knows the old (factory) key can join with it.
    pub fn handle_join_verified(&mut self, key: RootKeySlot) {
        let dev_eui = self.dev_eui;
        let entry = &mut self.state;
        if KeyAcceptance::new(entry.staged).effect(key) != JoinEffect::Confirm {
            return;
        }
        entry.staged = false;
        entry.pending = None;
        self.events
            .push_back(ServerEvent::ActivateNewKey { dev_eui });
        self.events.push_back(ServerEvent::Completed { dev_eui });
    }

    /// Expires an idle pending run (its staged keys, if any, stay until a join decides).
    pub fn handle_timeout(&mut self, context: &ServerContext, now: Instant) {
        let idle = context.config.idle_timeout;
        let entry = &mut self.state;
        let expired = entry
            .pending
            .as_ref()
            .is_some_and(|p| now.saturating_since(p.last_activity) >= idle);
        if expired {
            let staged = entry.pending.as_ref().is_some_and(|p| p.staged);
            entry.pending = None;
            if !staged {
                self.events.push_back(ServerEvent::Failed {
                    dev_eui: self.dev_eui,
                    reason: FailReason::Expired,
                });
            }
        }
    }

    // ----- outputs -----

    /// The downlink at a transmit opportunity with maximum payload `n`, written into `buf`;
    /// `None` if nothing is owed.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadSize`] if `n` is outside 11..=242 or `buf` is shorter than `n`.
    pub fn poll_transmit(&mut self, n: usize, buf: &mut [u8]) -> Result<Option<Transmit>, Error> {
        check_payload_size(n, buf.len())?;
        let out = &mut buf[..n];
        let entry = &mut self.state;
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
        // §5.5: until the keys are staged, the last WITHHELD bytes of SIG_S stay here.
        let staged = pending.staged;
        let hold = |kind: ServerCommand| {
            (kind == ServerCommand::Part2 && !staged).then_some(PART2_LEN - WITHHELD)
        };
        let len = pending.outbox.build(
            out,
            session,
            first,
            hold,
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

    /// The next event, if any, in the order they happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work (the idle expiry of the
    /// pending run).
    #[must_use]
    pub fn poll_timeout(&self, context: &ServerContext) -> Option<Instant> {
        self.state
            .pending
            .as_ref()
            .map(|p| p.last_activity.saturating_add(context.config.idle_timeout))
    }

    /// Moves the events out, oldest first (for an endpoint that queues them with others).
    pub(crate) fn drain_events(&mut self) -> impl Iterator<Item = ServerEvent> + '_ {
        self.events.drain(..)
    }
}

/// §3: a frame that starts with an undefined CID holds no command to act on. It is malformed
/// input, refused before it touches the device's state.
pub(crate) fn undefined_first_command(payload: &[u8]) -> Option<Error> {
    match lorapki_wire::Commands::new(payload).next() {
        Some(Ok(lorapki_wire::Command::Unknown { cid, .. })) => {
            Some(Error::Wire(lorapki_wire::Error::UnknownCid { cid }))
        }
        _ => None,
    }
}

/// The session an uplink of an unregistered device names first, if any: the one its Abort
/// (`UnknownDevice`) is for.
pub(crate) fn unknown_device_session(payload: &[u8]) -> Option<Session> {
    lorapki_wire::Commands::new(payload).find_map(|c| c.ok()?.session())
}

/// The answer to an uplink of a device that is not registered (§8): an Abort(`UnknownDevice`)
/// for the first session the payload names, written into `buf` for a maximum payload `n`; no
/// state, no key work. For a server that keeps no [`ServerEndpoint`](super::ServerEndpoint).
///
/// # Errors
///
/// [`Error::PayloadSize`] if `n` is outside 11..=242 or `buf` is shorter than `n`.
pub fn unknown_device_abort(
    payload: &[u8],
    n: usize,
    buf: &mut [u8],
) -> Result<Option<Transmit>, Error> {
    check_payload_size(n, buf.len())?;
    Ok(unknown_device_session(payload)
        .and_then(|session| emit_abort(&mut buf[..n], session, Reason::UnknownDevice)))
}

pub(crate) fn emit_abort(out: &mut [u8], session: Session, reason: Reason) -> Option<Transmit> {
    let len = CommandRepr::Abort(AbortRepr { session, reason })
        .emit(out)
        .ok()?;
    Some(Transmit { len })
}

/// The per-uplink context in which one command is applied.
struct Work<'a, B> {
    backend: &'a mut B,
    context: &'a ServerContext,
    events: &'a mut VecDeque<ServerEvent>,
    /// The frame carries commands of a session other than the pending one.
    foreign_frame: bool,
}

impl PendingSession {
    /// Whether the run holds its lease (§8): it had a frame within `run_lease`, and no
    /// verification of its SIG_D has failed (after a failure the device may hold a forged EPH_S
    /// and start over).
    pub(crate) fn leased(&self, context: &ServerContext, now: Instant) -> bool {
        self.verdict != Some(Code::Rejected)
            && now.saturating_since(self.last_activity) < context.config.run_lease
    }
}

impl<B: CryptoBackend> Work<'_, B> {
    fn accept(
        &mut self,
        now: Instant,
        entry: &mut DeviceState,
        record: &DeviceRecord,
        incoming: Incoming,
        outcome: &mut UplinkOutcome,
    ) -> Result<(), Error> {
        match incoming {
            Incoming::PubKeyReq(req) => self.pub_key_req(now, entry, record, req, outcome),
            Incoming::SigVerifyReq(req) => self.sig_verify_req(entry, record, req, outcome),
            Incoming::KeyChangeReq => {
                // §3.7: it only sets a flag that the verification consults, so a forged one asks
                // for nothing the device does not ask for anyway.
                if self.foreign_frame {
                    return Err(Error::StaleSession);
                }
                let pending = entry.pending.as_mut().ok_or(Error::StaleSession)?;
                if pending.key_change_requested {
                    outcome.duplicates += 1;
                    resend_answer(pending);
                    return Ok(());
                }
                pending.key_change_requested = true;
                outcome.accepted += 1;
                if pending.verdict == Some(Code::Accepted) {
                    self.stage(entry, record);
                }
                Ok(())
            }
            Incoming::Abort(AbortRepr { session, .. }) => {
                // Unauthenticated: anyone with the factory key can send it, so it ends nothing;
                // an idle run expires on its own (§6.4).
                let pending = entry.pending.as_ref().ok_or(Error::StaleSession)?;
                if pending.session != session {
                    return Err(Error::StaleSession);
                }
                outcome.duplicates += 1;
                Ok(())
            }
            other => Err(Error::WrongDirection { cid: other.cid() }),
        }
    }

    fn pub_key_req(
        &mut self,
        now: Instant,
        entry: &mut DeviceState,
        record: &DeviceRecord,
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
            && pending.device_ephemeral == req.ephemeral
        {
            // The device still lacks EPH_S: send it first again (§6.2 step 1).
            outcome.duplicates += 1;
            pending.outbox.resend(ServerCommand::Part0);
            return Ok(());
        }
        if entry
            .last_session
            .is_some_and(|last| !session.is_newer_than(last))
        {
            entry.abort = Some((session, Reason::StaleSession));
            return Err(Error::StaleSession);
        }
        // §8: a run that holds its lease is not displaced (a forged PubKeyReq would end it).
        if entry
            .pending
            .as_ref()
            .is_some_and(|p| p.leased(self.context, now))
        {
            entry.abort = Some((session, Reason::RateLimited));
            return Err(Error::Refused);
        }
        // §6.4: the run budget, still before key work.
        refill(entry, &self.context.config.rate_limit, now);
        if entry.tokens == 0 {
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
            self.events.push_back(ServerEvent::Failed {
                dev_eui: record.dev_eui,
                reason: FailReason::Superseded,
            });
        }
        entry.abort = None;
        outcome.accepted += 1;
        self.events.push_back(ServerEvent::SessionStarted {
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
            server_key_id: &self.context.server_key_id,
            device_key_id: &device_key_id,
            session: session.value(),
            device_ephemeral,
            server_ephemeral: &server_ephemeral,
        }
        .hash(backend);
        let keys = keys::derive_session_keys(backend, z, &th, record.lorawan)?;
        let digest = keys::signed_digest(backend, Role::Server, &th, &keys);
        let server_signature =
            backend.identity_sign_digest(self.context.config.signing_slot, &digest)?;
        // The end of part 2 (the last bytes of SIG_S) is held until the new keys are staged.
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
            verifications: 0,
            staged: false,
            outbox,
            last_activity: now,
        })
    }

    fn sig_verify_req(
        &mut self,
        entry: &mut DeviceState,
        record: &DeviceRecord,
        req: SigVerifyReqRepr,
        outcome: &mut UplinkOutcome,
    ) -> Result<(), Error> {
        let pending = entry.pending.as_mut().ok_or(Error::StaleSession)?;
        if pending.session != req.session {
            return Err(Error::StaleSession);
        }
        // After a failed verification the device may hold a forged EPH_S: part 0 stays owed
        // until a verification succeeds (§6.1).
        if pending.verdict != Some(Code::Rejected) {
            pending.outbox.ack(ServerCommand::Part0);
        }
        if req.holds_all_parts {
            // A = 1: the device holds parts 0 and 1 (§3.5). Part 2 stays owed until the run ends:
            // the device's retransmissions ask for it.
            pending.outbox.ack(ServerCommand::Part1);
        } else {
            // A = 0: the device lacks part 1, whatever an earlier (perhaps forged) A = 1 said.
            pending.outbox.unack(ServerCommand::Part1);
        }
        let chunk = usize::from(req.chunk.min(1));
        let held = pending.device_signature[chunk];
        if held == Some(req.data) || pending.verdict == Some(Code::Accepted) {
            // §8: a duplicate, or any copy once the signature verified, changes nothing. The
            // device retransmits because it lacks an answer: resend it.
            outcome.duplicates += 1;
            resend_answer(pending);
            return Ok(());
        }
        // The latest copy stands: chunks are unauthenticated, so a forged first copy must not
        // poison the run (§8). The pair is verified again, within the run's bound.
        pending.device_signature[chunk] = Some(req.data);
        outcome.accepted += 1;
        let (Some(r), Some(s)) = (pending.device_signature[0], pending.device_signature[1]) else {
            return Ok(());
        };
        if pending.verifications >= self.context.config.verifications_per_run {
            return Ok(());
        }
        pending.verifications += 1;
        outcome.key_work = true;
        let signature = Signature::from_scalars(&r, &s);
        let digest =
            keys::signed_digest(&mut *self.backend, Role::Device, &pending.th, &pending.keys);
        let verified = self
            .backend
            .ecdsa_verify_digest(&record.identity, &digest, &signature)
            .is_ok();
        if verified {
            // Authenticated: from now on this session number is spent (§8).
            pending.verdict = Some(Code::Accepted);
            pending.outbox.push(ServerCommand::Answer);
            pending.outbox.resend(ServerCommand::Answer);
            entry.last_session = Some(pending.session);
            if pending.key_change_requested {
                self.stage(entry, record);
            }
            return Ok(());
        }
        pending.verdict = Some(Code::Rejected);
        pending.outbox.push(ServerCommand::Answer);
        pending.outbox.resend(ServerCommand::Answer);
        pending.outbox.reopen(ServerCommand::Part0);
        if pending.verifications >= self.context.config.verifications_per_run {
            self.events.push_back(ServerEvent::Failed {
                dev_eui: record.dev_eui,
                reason: FailReason::DeviceAuthentication,
            });
        }
        Ok(())
    }

    fn stage(&mut self, entry: &mut DeviceState, record: &DeviceRecord) {
        let Some(pending) = entry.pending.as_mut() else {
            return;
        };
        if pending.staged {
            return;
        }
        pending.staged = true;
        entry.staged = true;
        // The end of SIG_S, released now, is the device's proof that the keys are staged (§5.5):
        // SigVerifyAns(Accepted) only says that SIG_D verified.
        self.events.push_back(ServerEvent::StageNewKey {
            dev_eui: record.dev_eui,
            keys: pending.keys.root.clone_secret(),
        });
    }
}

/// The device retransmits because it lacks an answer: send the verdict again, if there is one.
fn resend_answer(pending: &mut PendingSession) {
    pending.outbox.resend(ServerCommand::Answer);
}

fn refill(entry: &mut DeviceState, limit: &RateLimit, now: Instant) {
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
