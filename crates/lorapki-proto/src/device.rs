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
    /// The rekey completed: the device runs under the new key.
    Completed,
    /// The run failed; the device keeps its active key and backs off.
    Failed(FailReason),
    /// A frame that the run cannot authenticate said the run should end (`Abort`,
    /// `SigVerifyAns(Rejected/Refused)`: [`FailReason::Aborted`], [`FailReason::Rejected`],
    /// [`FailReason::Refused`]), or a signature of the server failed to verify
    /// ([`FailReason::ServerAuthentication`]). Anyone who knows the factory key can send such a
    /// frame, so the run goes on (PROTOCOL.md §10): for logs and diagnostics only.
    Unauthenticated(FailReason),
    /// Two different EPH_S arrived for the running session: one of them is forged, and which
    /// one cannot be told before SIG_S, which the server completes only after the device's
    /// signature. The run was restarted with a new session number, without counting a failure
    /// (PROTOCOL.md §5.5).
    Restarted {
        /// The new session number.
        session: u8,
    },
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

    /// Stores a part the device does not hold yet (the first copy stands until SIG_S is
    /// checked, §8).
    fn store(&mut self, part: &Part) -> Stored {
        match part {
            Part::EphemeralKey(d) => match self.ephemeral {
                None => self.ephemeral = Some(*d),
                Some(held) if held != *d => return Stored::Conflict,
                Some(_) => return Stored::Held,
            },
            Part::SignatureHead(d) if self.head.is_none() => self.head = Some(*d),
            Part::SignatureTail(d) if self.tail.is_none() => self.tail = Some(*d),
            _ => return Stored::Held,
        }
        Stored::New
    }

    fn signature(&self) -> Option<Signature> {
        let (head, tail) = (self.head?, self.tail?);
        let mut bytes = [0; 96];
        bytes[..49].copy_from_slice(&head);
        bytes[49..].copy_from_slice(&tail);
        Some(Signature::from_bytes(bytes))
    }
}

/// What storing a PubKeyAns part did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    New,
    Held,
    /// A part 0 with another EPH_S than the one held.
    Conflict,
}

/// After PubKeyAns part 0: the keys and the device's own signature.
struct Authenticated {
    keys: SessionKeys,
    th: [u8; SHA384_LEN],
    signature: Signature,
    /// SigVerifyAns(Accepted) arrived (unauthenticated: progress only, §6.3).
    accepted: bool,
    /// A SIG_S assembled from parts 1 and 2 failed to verify: parts arriving after it are not
    /// progress, so that forged parts cannot keep the run alive forever.
    forged_signature_seen: bool,
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
    /// FIDs (bits 0..=3) whose fragments carry a PubKeyAns part the device holds already: their
    /// new bytes bring nothing, so they are no progress (§6.3).
    held_fids: u8,
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
/// `StageNewKey`/`ActivateNewKey` to the key store *before* anything else, and persist
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
            held_fids: 0,
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
        let fresh_fragment = run.note_fragments(payload);
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
        // A fragment with new bytes is progress only if it may belong to a part the device lacks:
        // a repeated part it holds brings nothing (§6.3).
        let new_fragment = partial > 0 && fresh_fragment && !run.parts.all();
        let forged_seen = matches!(&run.phase, Phase::Authenticate(a) if a.forged_signature_seen);
        if outcome.progress || (new_fragment && !forged_seen) {
            run.uplinks_without_progress = 0;
            run.next_send = now;
        }
        if let Some(reason) = outcome.refusal {
            self.push_event(DeviceEvent::Unauthenticated(reason));
        }
        if outcome.conflict {
            self.restart(backend, now);
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
        // Rejoining, the device holds a staged key. A JoinAccept under the old key proves
        // nothing (whoever knows the factory key can forge one): the device keeps both keys and
        // goes on alternating (§7).
        match KeyAcceptance::new(true).effect(slot) {
            JoinEffect::Confirm => {
                self.state = State::Idle;
                self.persistent.consecutive_failures = 0;
                self.push_event(DeviceEvent::ActivateNewKey);
                self.push_event(DeviceEvent::Completed);
            }
            JoinEffect::Unchanged => *attempts = attempts.saturating_add(1),
        }
        let _ = (backend, now);
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

    /// Abandons the run without counting a failure and starts the next one at once (a forged
    /// EPH_S was detected, §5.5).
    fn restart(&mut self, backend: &mut B, now: Instant) {
        self.state = State::Idle;
        match self.start_run(backend, now) {
            Ok(()) => {
                if let Some(session) = self.persistent.last_session {
                    self.push_event(DeviceEvent::Restarted { session });
                }
            }
            Err(e) => self.fail(backend, now, FailReason::Crypto(crypto_fault(e))),
        }
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
            // An invalid point is no EPH_S: forgotten, as if it never came (it may be forged).
            let Ok(server_ephemeral) = backend.public_key_from_sec1(&server_ephemeral) else {
                run.parts.ephemeral = None;
                self.push_event(DeviceEvent::Unauthenticated(FailReason::BadEphemeral));
                return;
            };
            let Phase::AwaitServerKey(ephemeral) =
                core::mem::replace(&mut run.phase, Phase::Consumed)
            else {
                return;
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
        let Some(signature) = run.parts.signature() else {
            return;
        };
        // SIG_S is the evidence that the server staged the new key: it sends the end of part 2
        // only once it has (§5.5, §7). SigVerifyAns(Accepted) alone proves nothing.
        let digest = keys::signed_digest(backend, Role::Server, &auth.th, &auth.keys);
        match backend.ecdsa_verify_digest(&self.config.server_public_key, &digest, &signature) {
            Ok(()) => {}
            Err(lorapki_crypto::Error::InvalidSignature) => {
                // A forged part 1 or 2 (or a forged EPH_S): forgotten, the device's
                // retransmissions (A = 0) ask for them again (§8).
                run.parts.head = None;
                run.parts.tail = None;
                auth.forged_signature_seen = true;
                self.push_event(DeviceEvent::Unauthenticated(
                    FailReason::ServerAuthentication,
                ));
                return;
            }
            Err(e) => return self.fail(backend, now, FailReason::Crypto(e.into())),
        }
        // The device's commands are acknowledged only now: until it holds every part, its
        // retransmissions are what makes the server send the missing ones (§6.1).
        let keys = auth.keys.root.clone_secret();
        self.state = State::Rejoin { attempts: 0 };
        self.push_event(DeviceEvent::StageNewKey(keys));
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
        accepted: false,
        forged_signature_seen: false,
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
    /// An unauthenticated frame asked to end the run (reported, not obeyed).
    refusal: Option<FailReason>,
    /// A second, different EPH_S arrived.
    conflict: bool,
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
    if outcome.conflict {
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
            let forged_seen = matches!(phase, Phase::Authenticate(a) if a.forged_signature_seen);
            match parts.store(&part) {
                Stored::New if !forged_seen || matches!(part, Part::EphemeralKey(_)) => {
                    outcome.progress = true;
                }
                Stored::Conflict => outcome.conflict = true,
                Stored::New | Stored::Held => {}
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
                Code::Rejected => outcome.refusal = Some(FailReason::Rejected),
                _ => outcome.refusal = Some(FailReason::Refused),
            }
        }
        Incoming::Abort(AbortRepr { session: s, reason }) => {
            check(s)?;
            outcome.refusal = Some(FailReason::Aborted(reason.into()));
        }
        other => return Err(Error::WrongDirection { cid: other.cid() }),
    }
    Ok(())
}

impl<E> Run<E> {
    /// Notes which FIDs carry parts the device holds (their offset-0 fragment names the part);
    /// returns whether any fragment of the run's session in `payload` may carry a part it lacks.
    fn note_fragments(&mut self, payload: &[u8]) -> bool {
        let mut fresh = false;
        for command in lorapki_wire::Commands::new(payload).map_while(Result::ok) {
            let lorapki_wire::Command::Fragment(fragment) = command else {
                continue;
            };
            if fragment.check().is_err() || command.session() != Some(self.session) {
                continue;
            }
            let bit = 1u8 << (fragment.fid() & 3);
            if fragment.offset() == 0
                && let [lorapki_wire::cid::PUB_KEY_ANS, hdr, ..] = fragment.data()
            {
                let held = match hdr & 3 {
                    0 => self.parts.ephemeral.is_some(),
                    1 => self.parts.head.is_some(),
                    2 => self.parts.tail.is_some(),
                    _ => false,
                };
                if held {
                    self.held_fids |= bit;
                } else {
                    self.held_fids &= !bit;
                }
            }
            fresh |= self.held_fids & bit == 0;
        }
        fresh
    }

    fn build(&mut self, out: &mut [u8]) -> usize {
        let session = self.session;
        // A = 1: the device holds every part the server sends before it staged the keys, parts 0
        // and 1 (§3.5); part 2 ends the run on the device's side.
        let holds_all_parts = self.parts.ephemeral.is_some() && self.parts.head.is_some();
        let ephemeral = *self.ephemeral_public.as_bytes();
        let signature = match &self.phase {
            Phase::Authenticate(auth) => Some(auth.signature),
            Phase::AwaitServerKey(_) | Phase::Consumed => None,
        };
        self.outbox.build(
            out,
            session,
            |_| false,
            |_| None,
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
