//! The device role: one [`DeviceSession`] per end-device.

use lorapki_crypto::{
    CryptoBackend, KeySlot, KeyStoreStatus, PublicKey, RootKeySlot, SHA384_LEN, Signature,
};
use lorapki_wire::{
    AbortRepr, Code, CommandRepr, KeyChangeReqRepr, MAX_COMMAND_LEN, Part, PubKeyAnsRepr,
    PubKeyReqRepr, Reassembler, Session, SigVerifyAnsRepr, SigVerifyReqRepr,
};

use crate::acceptance::{JoinEffect, KeyAcceptance};
use crate::codec::{self, Incoming};
use crate::error::{CryptoFault, Error, FailReason};
use crate::keys::{self, KeyId, LorawanVersion, NewRootKeys, Role, SessionKeys, Transcript};
use crate::outbox::Outbox;
use crate::time::{Duration, Instant};
use crate::{MAX_UPLINKS_WITHOUT_ANSWER, REASSEMBLY_SLOTS, Transmit, check_payload_size};

/// How a device is set up: its identity, the pinned server key, and its timers (PROTOCOL.md §6.3).
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// DevEUI, most significant byte first.
    pub dev_eui: [u8; 8],
    /// JoinEUI, most significant byte first.
    pub join_eui: [u8; 8],
    /// The device's LoRaWAN version (which root keys a run replaces).
    pub lorawan: LorawanVersion,
    /// The backend slot that holds the device's identity key.
    pub identity_slot: KeySlot,
    /// The server's signing key, pinned at manufacture.
    pub server_public_key: PublicKey,
    /// How long to wait after an uplink that brought no progress before sending again.
    pub retransmit_interval: Duration,
    /// Back-off after the first failed run; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// The longest back-off.
    pub backoff_cap: Duration,
    /// JoinRequests under the staged key before one under the active key (§7).
    pub staged_join_attempts: u8,
}

impl DeviceConfig {
    /// A configuration with the defaults of PROTOCOL.md §6.3 and §7.
    #[must_use]
    pub fn new(
        dev_eui: [u8; 8],
        join_eui: [u8; 8],
        lorawan: LorawanVersion,
        identity_slot: KeySlot,
        server_public_key: PublicKey,
    ) -> Self {
        Self {
            dev_eui,
            join_eui,
            lorawan,
            identity_slot,
            server_public_key,
            retransmit_interval: Duration::from_secs(30),
            backoff_base: Duration::from_secs(15 * 60),
            backoff_cap: Duration::from_secs(24 * 3600),
            staged_join_attempts: 3,
        }
    }
}

/// What a device must keep across power cycles besides its key store (PROTOCOL.md §5.1).
///
/// Store it whenever [`DeviceSession::persistent`] changes, before transmitting the frame that
/// [`DeviceSession::poll_transmit`] returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DevicePersistent {
    /// The session number of the last run started, if any.
    pub last_session: Option<u8>,
    /// Consecutive failed runs (drives the back-off).
    pub consecutive_failures: u8,
}

/// What the device side reports to its adapter (see [`DeviceSession::poll_event`]).
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// A run started with this session number.
    RunStarted {
        /// The session number.
        session: u8,
    },
    /// Write these keys to the key store's *staged* slot, then rejoin (§7 step 1).
    StageNewKey(NewRootKeys),
    /// A JoinAccept under the staged key verified: activate it (staged → active, erase old).
    ActivateNewKey,
    /// A join under the old key succeeded: drop the staged key.
    RollBack,
    /// The rekey completed: the device runs under the new key.
    Completed,
    /// The run failed; the device keeps its active key and backs off.
    Failed(FailReason),
}

/// A summary of where the device is, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeviceStatus {
    /// No run, none scheduled.
    Idle,
    /// Waiting before the next run.
    BackingOff {
        /// When the next run starts.
        until: Instant,
    },
    /// A run is exchanging frames.
    Running {
        /// Its session number.
        session: u8,
    },
    /// The new key is staged; the device is rejoining.
    Rejoining,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DeviceCommand {
    PubKeyReq,
    SignatureR,
    SignatureS,
    KeyChange,
}

/// The server's three PubKeyAns parts as they arrive.
#[derive(Default)]
struct ServerParts {
    ephemeral: Option<[u8; 49]>,
    head: Option<[u8; 49]>,
    tail: Option<[u8; 47]>,
}

impl ServerParts {
    fn all(&self) -> bool {
        self.ephemeral.is_some() && self.head.is_some() && self.tail.is_some()
    }

    /// Stores a part; `true` if it was new (progress).
    fn store(&mut self, part: &Part) -> bool {
        match part {
            Part::EphemeralKey(d) if self.ephemeral.is_none() => self.ephemeral = Some(*d),
            Part::SignatureHead(d) if self.head.is_none() => self.head = Some(*d),
            Part::SignatureTail(d) if self.tail.is_none() => self.tail = Some(*d),
            _ => return false,
        }
        true
    }

    fn signature(&self) -> Option<Signature> {
        let (head, tail) = (self.head?, self.tail?);
        let mut bytes = [0; 96];
        bytes[..49].copy_from_slice(&head);
        bytes[49..].copy_from_slice(&tail);
        Some(Signature::from_bytes(bytes))
    }
}

/// After PubKeyAns part 0: the keys and the device's own signature.
struct Authenticated {
    keys: SessionKeys,
    th: [u8; SHA384_LEN],
    signature: Signature,
    server_verified: bool,
    accepted: bool,
}

// No heap on the device: the states live inline, the largest (the derived keys) sets the size.
#[allow(clippy::large_enum_variant)]
enum Phase<E> {
    AwaitServerKey(E),
    Authenticate(Authenticated),
    /// Only while a transition consumes the ephemeral key; never observed between calls.
    Consumed,
}

struct Run<E> {
    session: Session,
    ephemeral_public: PublicKey,
    outbox: Outbox<DeviceCommand>,
    reassembler: Reassembler<REASSEMBLY_SLOTS>,
    parts: ServerParts,
    uplinks_without_progress: u8,
    next_send: Instant,
    phase: Phase<E>,
}

#[allow(clippy::large_enum_variant)]
enum State<E> {
    Idle,
    Backoff { until: Instant },
    Run(Run<E>),
    Rejoin { attempts: u32 },
}

const EVENT_QUEUE: usize = 4;

/// The device side of the exchange: a sans-IO state machine (PROTOCOL.md §5–§7).
///
/// It does no I/O, reads no clock and draws randomness only through the crypto backend, which
/// every call that needs it borrows. Methods come in four groups, in the style of
/// `quinn_proto::Connection`:
///
/// * **getters**: [`status`](Self::status), [`persistent`](Self::persistent),
///   [`join_key`](Self::join_key);
/// * **inputs** `handle_*`: [`handle_downlink`](Self::handle_downlink) (an FPort-1 FRMPayload),
///   [`handle_join_result`](Self::handle_join_result), [`handle_timeout`](Self::handle_timeout);
/// * **commands**: [`start`](Self::start);
/// * **outputs** `poll_*`: [`poll_transmit`](Self::poll_transmit) (the next FPort-1 uplink,
///   written into the caller's buffer), [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout).
///
/// **Polling order.** After every input, drain [`poll_event`](Self::poll_event) (apply
/// `StageNewKey`/`ActivateNewKey`/`RollBack` to the key store *before* anything else, and persist
/// [`persistent`](Self::persistent)); at every uplink opportunity call
/// [`poll_transmit`](Self::poll_transmit) with the N of that uplink; when no uplink is wanted,
/// sleep until [`poll_timeout`](Self::poll_timeout) and call
/// [`handle_timeout`](Self::handle_timeout).
pub struct DeviceSession<B: CryptoBackend> {
    config: DeviceConfig,
    device_key_id: KeyId,
    server_key_id: KeyId,
    persistent: DevicePersistent,
    state: State<B::Ephemeral>,
    events: [Option<DeviceEvent>; EVENT_QUEUE],
}

impl<B: CryptoBackend> DeviceSession<B> {
    /// A device session after a (re)boot.
    ///
    /// `keys` is the state of the device's root-key store: when a staged key survived a reset,
    /// the session resumes the rejoin (§7).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if the identity key cannot be read from its slot.
    pub fn new(
        backend: &mut B,
        config: DeviceConfig,
        persistent: DevicePersistent,
        keys: KeyStoreStatus,
    ) -> Result<Self, Error> {
        let identity = backend.identity_public_key(config.identity_slot)?;
        let device_key_id = keys::key_id(backend, &identity);
        let server_key_id = keys::key_id(backend, &config.server_public_key);
        let state = if keys.staged {
            State::Rejoin { attempts: 0 }
        } else {
            State::Idle
        };
        Ok(Self {
            config,
            device_key_id,
            server_key_id,
            persistent,
            state,
            events: [const { None }; EVENT_QUEUE],
        })
    }

    // ----- getters -----

    /// Where the device is.
    #[must_use]
    pub fn status(&self) -> DeviceStatus {
        match &self.state {
            State::Idle => DeviceStatus::Idle,
            State::Backoff { until } => DeviceStatus::BackingOff { until: *until },
            State::Run(run) => DeviceStatus::Running {
                session: run.session.value(),
            },
            State::Rejoin { .. } => DeviceStatus::Rejoining,
        }
    }

    /// The state to keep across power cycles.
    #[must_use]
    pub fn persistent(&self) -> DevicePersistent {
        self.persistent
    }

    /// The root key the next JoinRequest must use, while a rejoin is pending (§7 step 3):
    /// `staged_join_attempts` times the staged key, then once the active key, and again.
    #[must_use]
    pub fn join_key(&self) -> Option<RootKeySlot> {
        match self.state {
            State::Rejoin { attempts } => {
                let cycle = u32::from(self.config.staged_join_attempts) + 1;
                if attempts % cycle < cycle - 1 {
                    Some(RootKeySlot::Staged)
                } else {
                    Some(RootKeySlot::Active)
                }
            }
            _ => None,
        }
    }

    // ----- commands -----

    /// Starts a run (after the first OTAA join, or whenever the application decides to rekey).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidState`] unless the device is idle; [`Error::Crypto`] if the backend cannot
    /// generate the ephemeral key (no state changes then).
    pub fn start(&mut self, backend: &mut B, now: Instant) -> Result<(), Error> {
        if !matches!(self.state, State::Idle) {
            return Err(Error::InvalidState);
        }
        self.start_run(backend, now)
    }

    fn start_run(&mut self, backend: &mut B, now: Instant) -> Result<(), Error> {
        let session = match self
            .persistent
            .last_session
            .and_then(|s| Session::new(s).ok())
        {
            Some(last) => last.next(),
            None => {
                let mut byte = [0u8; 1];
                backend.random_bytes(&mut byte)?;
                Session::new(byte[0] & 0x3f).map_err(|e| Error::Wire(e.into()))?
            }
        };
        let (ephemeral, ephemeral_public) = backend.ephemeral_generate()?;
        let mut outbox = Outbox::new();
        outbox.push(DeviceCommand::PubKeyReq);
        self.persistent.last_session = Some(session.value());
        self.state = State::Run(Run {
            session,
            ephemeral_public,
            outbox,
            reassembler: Reassembler::new(),
            parts: ServerParts::default(),
            uplinks_without_progress: 0,
            next_send: now,
            phase: Phase::AwaitServerKey(ephemeral),
        });
        if let State::Run(run) = &mut self.state {
            run.reassembler.bind(session);
        }
        self.push_event(DeviceEvent::RunStarted {
            session: session.value(),
        });
        Ok(())
    }

    // ----- inputs -----

    /// An FPort-1 FRMPayload received in a downlink.
    ///
    /// Commands are processed in order; a command of another session or direction is dropped.
    ///
    /// # Errors
    ///
    /// The first problem met (malformed frame, stale session, refused fragment, wrong direction);
    /// the commands before it took effect, the bad one changed nothing.
    pub fn handle_downlink(
        &mut self,
        backend: &mut B,
        now: Instant,
        payload: &[u8],
    ) -> Result<(), Error> {
        let State::Run(run) = &mut self.state else {
            return Err(Error::StaleSession);
        };
        let mut first_error = None;
        let mut outcome = Outcome::default();
        let (session, parts, phase) = (run.session, &mut run.parts, &mut run.phase);
        let partial = codec::for_each_command(
            payload,
            &mut run.reassembler,
            |_, _| {},
            |incoming| {
                let result = incoming
                    .and_then(|incoming| accept(session, parts, phase, incoming, &mut outcome));
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            },
        );
        // A fragment with new bytes is progress only while the device lacks a part it could
        // belong to: once it holds all three PubKeyAns parts (SigVerifyAns is never fragmented),
        // fragments can only repeat a part it holds, which brings nothing (§6.3).
        let new_fragment = partial > 0 && !run.parts.all();
        if outcome.progress || new_fragment {
            run.uplinks_without_progress = 0;
            run.next_send = now;
        }
        if let Some(reason) = outcome.failure {
            self.fail(backend, now, reason);
        } else {
            self.advance(backend, now);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The result of a JoinRequest made under `slot` while a rejoin is pending (§7).
    ///
    /// `accepted` is true when a JoinAccept under that key verified.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidState`] when no rejoin is pending (nothing changes).
    pub fn handle_join_result(
        &mut self,
        backend: &mut B,
        now: Instant,
        slot: RootKeySlot,
        accepted: bool,
    ) -> Result<(), Error> {
        let State::Rejoin { attempts } = &mut self.state else {
            return Err(Error::InvalidState);
        };
        if !accepted {
            *attempts = attempts.saturating_add(1);
            return Ok(());
        }
        // Rejoining, the device holds a staged key.
        match KeyAcceptance::new(true).effect(slot) {
            JoinEffect::Confirm => {
                self.state = State::Idle;
                self.persistent.consecutive_failures = 0;
                self.push_event(DeviceEvent::ActivateNewKey);
                self.push_event(DeviceEvent::Completed);
            }
            JoinEffect::RollBack => {
                self.push_event(DeviceEvent::RollBack);
                self.fail(backend, now, FailReason::RolledBack);
            }
            JoinEffect::Unchanged => {}
        }
        Ok(())
    }

    /// Time has passed: starts the next run when a back-off expired.
    pub fn handle_timeout(&mut self, backend: &mut B, now: Instant) {
        if let State::Backoff { until } = self.state
            && now >= until
        {
            self.state = State::Idle;
            if let Err(e) = self.start_run(backend, now) {
                self.fail(backend, now, FailReason::Crypto(crypto_fault(e)));
            }
        }
    }

    // ----- outputs -----

    /// The next FPort-1 uplink, written into `buf[..n]`, where `n` is the maximum application
    /// payload of this uplink (11..=242, the MAC's limit for the current data rate minus FOpts).
    ///
    /// Returns `None` when the device has nothing to send now. Applies the 8-uplink rule: when
    /// 8 uplinks brought no progress, the run fails instead (§6.3).
    ///
    /// # Errors
    ///
    /// [`Error::PayloadSize`] if `n` is outside 11..=242 or `buf` is shorter than `n`.
    pub fn poll_transmit(
        &mut self,
        backend: &mut B,
        now: Instant,
        n: usize,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, Error> {
        check_payload_size(n, buf.len())?;
        self.handle_timeout(backend, now);
        let State::Run(run) = &mut self.state else {
            return Ok(None);
        };
        if !run.outbox.has_unacked() || now < run.next_send {
            return Ok(None);
        }
        if run.uplinks_without_progress >= MAX_UPLINKS_WITHOUT_ANSWER {
            self.fail(backend, now, FailReason::NoAnswer);
            return Ok(None);
        }
        // The rule counts the uplinks made *after* the step's request went out completely, so
        // that a request fragmented over several uplinks is not cut short (§6.3).
        let request_complete = !run.outbox.has_unsent();
        let len = run.build(&mut buf[..n]);
        if len == 0 {
            return Ok(None);
        }
        if request_complete {
            run.uplinks_without_progress += 1;
        }
        // More of the request to go out: at the next opportunity; otherwise wait for an answer.
        run.next_send = if run.outbox.has_unsent() {
            now
        } else {
            now.saturating_add(self.config.retransmit_interval)
        };
        Ok(Some(Transmit { len }))
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        let first = self.events.iter_mut().find(|e| e.is_some())?.take();
        self.events.rotate_left(1);
        first
    }

    /// The earliest time at which the device wants to act (send again or start a run).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Backoff { until } => Some(*until),
            State::Run(run) if run.outbox.has_unacked() => Some(run.next_send),
            _ => None,
        }
    }

    // ----- internals -----

    fn push_event(&mut self, event: DeviceEvent) {
        // The queue holds more than any one input produces; a full queue drops the oldest
        // progress notice rather than a key event.
        if let Some(slot) = self.events.iter_mut().find(|e| e.is_none()) {
            *slot = Some(event);
        } else {
            self.events.rotate_left(1);
            self.events[EVENT_QUEUE - 1] = Some(event);
        }
    }

    fn fail(&mut self, backend: &mut B, now: Instant, reason: FailReason) {
        let failures = self.persistent.consecutive_failures.saturating_add(1);
        self.persistent.consecutive_failures = failures;
        // base · 2^(k−1), capped (§6.3); 32 doublings already exceed any cap in milliseconds.
        let doublings = u32::from(failures.saturating_sub(1)).min(32);
        let delay = self
            .config
            .backoff_base
            .as_millis()
            .saturating_mul(1u64 << doublings)
            .min(self.config.backoff_cap.as_millis());
        let mut jitter = [0u8; 2];
        // A failing RNG must not stop the back-off: it then waits the shortest jittered delay.
        let u = if backend.random_bytes(&mut jitter).is_ok() {
            u16::from_le_bytes(jitter)
        } else {
            0
        };
        // delay · (1/2 + u/2), u in [0, 1) with 16 bits (§6.3).
        let jittered = delay / 2 + ((u128::from(delay) * u128::from(u)) >> 17) as u64;
        self.state = State::Backoff {
            until: now.saturating_add(Duration::from_millis(jittered)),
        };
        self.push_event(DeviceEvent::Failed(reason));
    }

    /// Moves the run on after input: key agreement once EPH_S arrived, the server's signature once
    /// both halves arrived, and the staging of the new key once both the server and the device are
    /// authenticated (§5.5).
    fn advance(&mut self, backend: &mut B, now: Instant) {
        let State::Run(run) = &mut self.state else {
            return;
        };
        if let (Phase::AwaitServerKey(_), Some(server_ephemeral)) =
            (&run.phase, run.parts.ephemeral)
        {
            let Phase::AwaitServerKey(ephemeral) =
                core::mem::replace(&mut run.phase, Phase::Consumed)
            else {
                return;
            };
            let server_ephemeral = match backend.public_key_from_sec1(&server_ephemeral) {
                Ok(key) => key,
                Err(_) => return self.fail(backend, now, FailReason::BadEphemeral),
            };
            let transcript = Transcript {
                lorawan: self.config.lorawan,
                dev_eui: &self.config.dev_eui,
                join_eui: &self.config.join_eui,
                server_key_id: &self.server_key_id,
                device_key_id: &self.device_key_id,
                session: run.session.value(),
                device_ephemeral: &run.ephemeral_public,
                server_ephemeral: &server_ephemeral,
            };
            match authenticate(backend, &self.config, &transcript, ephemeral) {
                Ok(auth) => {
                    run.phase = Phase::Authenticate(auth);
                    run.outbox.ack(DeviceCommand::PubKeyReq);
                    run.outbox.push(DeviceCommand::SignatureR);
                    run.outbox.push(DeviceCommand::SignatureS);
                    run.outbox.push(DeviceCommand::KeyChange);
                    run.next_send = now;
                }
                Err(reason) => return self.fail(backend, now, reason),
            }
        }
        let Phase::Authenticate(auth) = &mut run.phase else {
            return;
        };
        if !auth.server_verified
            && let Some(signature) = run.parts.signature()
        {
            let digest = keys::signed_digest(backend, Role::Server, &auth.th, &auth.keys);
            match backend.ecdsa_verify_digest(&self.config.server_public_key, &digest, &signature) {
                Ok(()) => auth.server_verified = true,
                Err(lorapki_crypto::Error::InvalidSignature) => {
                    return self.fail(backend, now, FailReason::ServerAuthentication);
                }
                Err(e) => return self.fail(backend, now, FailReason::Crypto(e.into())),
            }
        }
        if auth.accepted && run.parts.all() {
            // The device's commands are acknowledged only now: until it holds every part, its
            // retransmissions are what makes the server send the missing ones (§6.1).
            run.outbox.ack(DeviceCommand::SignatureR);
            run.outbox.ack(DeviceCommand::SignatureS);
            run.outbox.ack(DeviceCommand::KeyChange);
        }
        if auth.server_verified && auth.accepted && run.parts.all() {
            let keys = auth.keys.root.clone_secret();
            self.state = State::Rejoin { attempts: 0 };
            self.push_event(DeviceEvent::StageNewKey(keys));
        }
    }
}

/// ECDH, transcript, key schedule and the device's signature, from EPH_S (§5.5, device).
fn authenticate<B: CryptoBackend>(
    backend: &mut B,
    config: &DeviceConfig,
    transcript: &Transcript<'_>,
    ephemeral: B::Ephemeral,
) -> Result<Authenticated, FailReason> {
    let z = backend
        .ecdh_agree(ephemeral, transcript.server_ephemeral)
        .map_err(|e| match e {
            lorapki_crypto::Error::InvalidPublicKey => FailReason::BadEphemeral,
            e => FailReason::Crypto(e.into()),
        })?;
    let th = transcript.hash(backend);
    let keys = keys::derive_session_keys(backend, z, &th, config.lorawan)
        .map_err(|e| FailReason::Crypto(e.into()))?;
    let digest = keys::signed_digest(backend, Role::Device, &th, &keys);
    let signature = backend
        .identity_sign_digest(config.identity_slot, &digest)
        .map_err(|e| FailReason::Crypto(e.into()))?;
    Ok(Authenticated {
        keys,
        th,
        signature,
        server_verified: false,
        accepted: false,
    })
}

fn crypto_fault(e: Error) -> CryptoFault {
    match e {
        Error::Crypto(e) => e.into(),
        _ => CryptoFault::Other,
    }
}

/// What one downlink did to a run.
#[derive(Default)]
struct Outcome {
    progress: bool,
    failure: Option<FailReason>,
}

/// Applies one server command of the run (§5.5, §8). A free function over the run's fields, so
/// that it can run while the reassembler is borrowed.
fn accept<E>(
    session: Session,
    parts: &mut ServerParts,
    phase: &mut Phase<E>,
    incoming: Incoming,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    if outcome.failure.is_some() {
        return Ok(());
    }
    let check = |s: Session| {
        if s == session {
            Ok(())
        } else {
            Err(Error::StaleSession)
        }
    };
    match incoming {
        Incoming::PubKeyAns(PubKeyAnsRepr { session: s, part }) => {
            check(s)?;
            if parts.store(&part) {
                outcome.progress = true;
            }
        }
        Incoming::SigVerifyAns(SigVerifyAnsRepr { session: s, code }) => {
            check(s)?;
            match code {
                Code::Accepted => {
                    if let Phase::Authenticate(auth) = phase
                        && !auth.accepted
                    {
                        auth.accepted = true;
                        outcome.progress = true;
                    }
                }
                Code::Rejected => outcome.failure = Some(FailReason::Rejected),
                _ => outcome.failure = Some(FailReason::Refused),
            }
        }
        Incoming::Abort(AbortRepr { session: s, reason }) => {
            check(s)?;
            outcome.failure = Some(FailReason::Aborted(reason.into()));
        }
        other => return Err(Error::WrongDirection { cid: other.cid() }),
    }
    Ok(())
}

impl<E> Run<E> {
    fn build(&mut self, out: &mut [u8]) -> usize {
        let session = self.session;
        let holds_all_parts = self.parts.all();
        let ephemeral = *self.ephemeral_public.as_bytes();
        let signature = match &self.phase {
            Phase::Authenticate(auth) => Some(auth.signature),
            Phase::AwaitServerKey(_) | Phase::Consumed => None,
        };
        self.outbox.build(
            out,
            session,
            |_| false,
            |kind, bytes: &mut [u8; MAX_COMMAND_LEN]| {
                let repr = match (kind, signature) {
                    (DeviceCommand::PubKeyReq, _) => CommandRepr::PubKeyReq(PubKeyReqRepr {
                        session,
                        version: lorapki_wire::PROTOCOL_VERSION,
                        ephemeral,
                    }),
                    (DeviceCommand::SignatureR, Some(sig)) => {
                        CommandRepr::SigVerifyReq(SigVerifyReqRepr {
                            session,
                            chunk: 0,
                            holds_all_parts,
                            data: *sig.r(),
                        })
                    }
                    (DeviceCommand::SignatureS, Some(sig)) => {
                        CommandRepr::SigVerifyReq(SigVerifyReqRepr {
                            session,
                            chunk: 1,
                            holds_all_parts,
                            data: *sig.s(),
                        })
                    }
                    (DeviceCommand::KeyChange, _) => CommandRepr::KeyChangeReq(KeyChangeReqRepr),
                    _ => return 0,
                };
                codec::emit(&repr, bytes)
            },
        )
    }
}
