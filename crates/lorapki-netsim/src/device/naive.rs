//! [`NaiveExchange`]: the original design's message order, done naively (PROTOCOL.md §9.5).

use std::collections::VecDeque;

use lorapki_crypto::{CryptoBackend, PublicKey, RootKeySlot, Signature};
use lorapki_proto::keys::{self, KeyId, Role, SessionKeys as ProtoKeys, Transcript};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, Duration, Error, FailReason, Instant, JoinEffect, KeyAcceptance,
};
use lorapki_wire::{
    AbortRepr, Code, Command, CommandRepr, Commands, FragmentRepr, KeyChangeReqRepr, Part,
    PubKeyAnsRepr, PubKeyReqRepr, Reassembler, Session, SigVerifyAnsRepr, SigVerifyReqRepr,
};

use super::exchange::{Exchange, Outgoing};
use crate::rng::Backend;

/// The steps of the original design's message order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    PubKey,
    SignatureR,
    SignatureS,
    KeyChange,
}

struct NaiveAuth {
    keys: ProtoKeys,
    th: [u8; 48],
    signature: Signature,
}

struct NaiveRun {
    session: Session,
    ephemeral: Option<<Backend as CryptoBackend>::Ephemeral>,
    ephemeral_public: PublicKey,
    step: Step,
    request: Vec<u8>,
    offset: usize,
    fid: u8,
    next_fid: u8,
    complete: bool,
    answered: bool,
    poll: bool,
    without_progress: u8,
    next_send: Instant,
    reassembler: Reassembler<3>,
    parts: [Option<Vec<u8>>; 3],
    auth: Option<NaiveAuth>,
    accepted: bool,
}

enum NaiveState {
    Idle,
    Backoff(Instant),
    Run(Box<NaiveRun>),
    Rejoin(u32),
}

/// The original design's message order, done naively: one request per uplink, each waiting for its
/// answer before the next, no concatenation (PROTOCOL.md §9.5).
///
/// Requests: PubKeyReq (answer: all three PubKeyAns parts), SigVerifyReq C=0 (no answer in the
/// protocol: sent confirmed, answered by the MAC acknowledgement), SigVerifyReq C=1 (answer:
/// SigVerifyAns), KeyChangeReq (confirmed, answered by the acknowledgement), then the rejoin as
/// in §7. A request longer than N goes out as consecutive Fragments. While an answer is
/// incomplete the device sends an empty uplink whenever the last window brought something, and
/// repeats the request after the retransmit interval when it brought nothing; 8 uplinks without
/// progress fail the run (then back-off, as the pipelined device).
pub struct NaiveExchange {
    config: DeviceConfig,
    device_key_id: KeyId,
    server_key_id: KeyId,
    last_session: Option<u8>,
    failures: u32,
    state: NaiveState,
    events: VecDeque<DeviceEvent>,
}

impl NaiveExchange {
    /// A naive device with the same configuration as a `DeviceSession`.
    ///
    /// # Errors
    ///
    /// The identity key cannot be read.
    pub fn new(backend: &mut Backend, config: DeviceConfig) -> lorapki_crypto::Result<Self> {
        let identity = backend.identity_public_key(config.identity_slot)?;
        let device_key_id = keys::key_id(backend, &identity);
        let server_key_id = keys::key_id(backend, &config.server_public_key);
        Ok(Self {
            config,
            device_key_id,
            server_key_id,
            last_session: None,
            failures: 0,
            state: NaiveState::Idle,
            events: VecDeque::new(),
        })
    }

    fn fail(&mut self, backend: &mut Backend, now: Instant, reason: FailReason) {
        self.failures += 1;
        let base = self.config.backoff_base.as_millis();
        let delay = base
            .saturating_mul(1 << (self.failures - 1).min(20))
            .min(self.config.backoff_cap.as_millis());
        let mut jitter = [0u8; 2];
        let u = backend
            .random_bytes(&mut jitter)
            .map_or(0, |()| u16::from_le_bytes(jitter));
        let wait = delay / 2 + ((u128::from(delay) * u128::from(u)) >> 17) as u64;
        self.state = NaiveState::Backoff(now.saturating_add(Duration::from_millis(wait)));
        self.events.push_back(DeviceEvent::Failed(reason));
    }

    /// Starts a run; a backend failure fails it (and backs off), as the pipelined device does.
    ///
    /// # Errors
    ///
    /// The first request could not be serialized (nothing changed).
    fn start_run(&mut self, backend: &mut Backend, now: Instant) -> Result<(), Error> {
        let session = match self.last_session.and_then(|s| Session::new(s).ok()) {
            Some(last) => last.next(),
            None => {
                let mut byte = [0u8];
                if let Err(e) = backend.random_bytes(&mut byte) {
                    self.fail(backend, now, FailReason::Crypto(e.into()));
                    return Ok(());
                }
                Session::new(byte[0] & Session::MAX).map_err(|e| Error::Wire(e.into()))?
            }
        };
        let (ephemeral, ephemeral_public) = match backend.ephemeral_generate() {
            Ok(pair) => pair,
            Err(e) => {
                self.fail(backend, now, FailReason::Crypto(e.into()));
                return Ok(());
            }
        };
        let mut reassembler = Reassembler::new();
        reassembler.bind(session);
        let mut run = NaiveRun {
            session,
            ephemeral: Some(ephemeral),
            ephemeral_public,
            step: Step::PubKey,
            request: Vec::new(),
            offset: 0,
            fid: 0,
            next_fid: 0,
            complete: false,
            answered: false,
            poll: false,
            without_progress: 0,
            next_send: now,
            reassembler,
            parts: [None, None, None],
            auth: None,
            accepted: false,
        };
        let request = request(&run, Step::PubKey)?;
        set_request(&mut run, request);
        self.last_session = Some(session.value());
        self.state = NaiveState::Run(Box::new(run));
        self.events.push_back(DeviceEvent::RunStarted {
            session: session.value(),
        });
        Ok(())
    }

    /// After an answer completed a step: the next step, or the staging of the key.
    ///
    /// # Errors
    ///
    /// The next request could not be serialized (the run stays at its step).
    fn advance(&mut self, backend: &mut Backend, now: Instant) -> Result<(), Error> {
        let NaiveState::Run(run) = &mut self.state else {
            return Ok(());
        };
        if run.auth.is_none()
            && let Some(eph) = run.parts[0].clone()
        {
            match self.authenticate(backend, &eph) {
                Ok(auth) => {
                    if let NaiveState::Run(run) = &mut self.state {
                        run.auth = Some(auth);
                    }
                }
                Err(reason) => {
                    self.fail(backend, now, reason);
                    return Ok(());
                }
            }
        }
        let NaiveState::Run(run) = &mut self.state else {
            return Ok(());
        };
        if !run.answered {
            return Ok(());
        }
        let next = match run.step {
            Step::PubKey => Step::SignatureR,
            Step::SignatureR => Step::SignatureS,
            Step::SignatureS => Step::KeyChange,
            Step::KeyChange => {
                // Verify SIG_S now that all parts are here: the server sends the end of part 2
                // only once it has staged the key (PROTOCOL.md §5.5).
                let (Some(head), Some(tail), Some(auth)) = (
                    run.parts[1].as_ref(),
                    run.parts[2].as_ref(),
                    run.auth.as_ref(),
                ) else {
                    return Ok(());
                };
                let mut sig = [0u8; 96];
                sig[..49].copy_from_slice(head);
                sig[49..].copy_from_slice(tail);
                let digest = keys::signed_digest(backend, Role::Server, &auth.th, &auth.keys);
                if backend
                    .ecdsa_verify_digest(
                        &self.config.server_public_key,
                        &digest,
                        &Signature::from_bytes(sig),
                    )
                    .is_err()
                {
                    self.fail(backend, now, FailReason::ServerAuthentication);
                    return Ok(());
                }
                let keys = run.auth.as_ref().map(|a| a.keys.root.clone_secret());
                if let Some(keys) = keys {
                    self.state = NaiveState::Rejoin(0);
                    self.events.push_back(DeviceEvent::StageNewKey(keys));
                }
                return Ok(());
            }
        };
        let request = request(run, next)?;
        run.step = next;
        run.answered = false;
        run.complete = false;
        run.poll = false;
        run.without_progress = 0;
        run.next_send = now;
        set_request(run, request);
        Ok(())
    }

    fn authenticate(&mut self, backend: &mut Backend, eph: &[u8]) -> Result<NaiveAuth, FailReason> {
        let NaiveState::Run(run) = &mut self.state else {
            return Err(FailReason::NoAnswer);
        };
        let server_ephemeral = backend
            .public_key_from_sec1(eph)
            .map_err(|_| FailReason::BadEphemeral)?;
        let ephemeral = run.ephemeral.take().ok_or(FailReason::BadEphemeral)?;
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
        let z = backend
            .ecdh_agree(ephemeral, &server_ephemeral)
            .map_err(|_| FailReason::BadEphemeral)?;
        let th = transcript.hash(backend);
        let keys = keys::derive_session_keys(backend, z, &th, self.config.lorawan)
            .map_err(|e| FailReason::Crypto(e.into()))?;
        let digest = keys::signed_digest(backend, Role::Device, &th, &keys);
        let signature = backend
            .identity_sign_digest(self.config.identity_slot, &digest)
            .map_err(|e| FailReason::Crypto(e.into()))?;
        Ok(NaiveAuth {
            keys,
            th,
            signature,
        })
    }

    /// One server command; returns (progress, failure).
    fn accept(run: &mut NaiveRun, repr: &CommandRepr<'_>) -> (bool, Option<FailReason>) {
        match repr {
            CommandRepr::PubKeyAns(PubKeyAnsRepr { session, part }) if *session == run.session => {
                let index = usize::from(part.index());
                if run.parts[index].is_none() {
                    run.parts[index] = Some(part_data(part).to_vec());
                    // The server holds the end of part 2 back until it staged the key: the
                    // naive order asks for it with the KeyChangeReq.
                    let answer = match run.step {
                        Step::PubKey => run.parts[0].is_some() && run.parts[1].is_some(),
                        Step::KeyChange => run.parts[2].is_some(),
                        _ => false,
                    };
                    if answer {
                        run.answered = true;
                    }
                    return (true, None);
                }
                (false, None)
            }
            CommandRepr::SigVerifyAns(SigVerifyAnsRepr { session, code })
                if *session == run.session =>
            {
                match code {
                    Code::Accepted if !run.accepted => {
                        run.accepted = true;
                        if run.step == Step::SignatureS {
                            run.answered = true;
                        }
                        (true, None)
                    }
                    Code::Accepted => (false, None),
                    Code::Rejected => (true, Some(FailReason::Rejected)),
                    _ => (true, Some(FailReason::Refused)),
                }
            }
            CommandRepr::Abort(AbortRepr { session, reason }) if *session == run.session => {
                (true, Some(FailReason::Aborted((*reason).into())))
            }
            _ => (false, None),
        }
    }
}

fn part_data(part: &Part) -> &[u8] {
    match part {
        Part::EphemeralKey(d) | Part::SignatureHead(d) => d,
        Part::SignatureTail(d) => d,
    }
}

/// Serializes the request of `step` in `run`.
fn request(run: &NaiveRun, step: Step) -> Result<Vec<u8>, Error> {
    let session = run.session;
    let holds_all = run.parts.iter().all(Option::is_some);
    let signature = run.auth.as_ref().map(|a| a.signature);
    let repr = match (step, signature) {
        (Step::PubKey, _) => CommandRepr::PubKeyReq(PubKeyReqRepr {
            session,
            version: lorapki_wire::PROTOCOL_VERSION,
            ephemeral: *run.ephemeral_public.as_bytes(),
        }),
        (Step::SignatureR, Some(sig)) => CommandRepr::SigVerifyReq(SigVerifyReqRepr {
            session,
            chunk: 0,
            holds_all_parts: holds_all,
            data: *sig.r(),
        }),
        (Step::SignatureS, Some(sig)) => CommandRepr::SigVerifyReq(SigVerifyReqRepr {
            session,
            chunk: 1,
            holds_all_parts: holds_all,
            data: *sig.s(),
        }),
        _ => CommandRepr::KeyChangeReq(KeyChangeReqRepr),
    };
    let mut bytes = [0u8; lorapki_wire::MAX_COMMAND_LEN];
    let len = repr.emit(&mut bytes).map_err(Error::Wire)?;
    Ok(bytes[..len].to_vec())
}

/// Makes `request` the run's next request, sent from its start under a new fragment id.
fn set_request(run: &mut NaiveRun, request: Vec<u8>) {
    run.request = request;
    run.offset = 0;
    run.fid = run.next_fid;
    run.next_fid = (run.next_fid + 1) & 0b11;
}

impl Exchange for NaiveExchange {
    fn start(&mut self, backend: &mut Backend, now: Instant) -> Result<(), Error> {
        if matches!(self.state, NaiveState::Idle) {
            self.start_run(backend, now)?;
        }
        Ok(())
    }

    fn join_key(&self) -> Option<RootKeySlot> {
        match self.state {
            NaiveState::Rejoin(attempts) => {
                let cycle = u32::from(self.config.staged_join_attempts) + 1;
                Some(if attempts % cycle < cycle - 1 {
                    RootKeySlot::Staged
                } else {
                    RootKeySlot::Active
                })
            }
            _ => None,
        }
    }

    fn poll_transmit(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        n: usize,
        buf: &mut [u8],
    ) -> Result<Option<Outgoing>, Error> {
        if !(lorapki_wire::MIN_PAYLOAD..=lorapki_wire::MAX_PAYLOAD).contains(&n) || buf.len() < n {
            return Err(Error::PayloadSize { n });
        }
        if let NaiveState::Backoff(until) = self.state
            && now >= until
        {
            self.state = NaiveState::Idle;
            self.start_run(backend, now)?;
        }
        let NaiveState::Run(run) = &mut self.state else {
            return Ok(None);
        };
        if now < run.next_send {
            return Ok(None);
        }
        if run.complete {
            if run.without_progress >= lorapki_proto::MAX_UPLINKS_WITHOUT_ANSWER {
                self.fail(backend, now, FailReason::NoAnswer);
                return Ok(None);
            }
            run.without_progress += 1;
            if run.poll {
                // Something arrived but the answer is incomplete: open the windows again.
                run.next_send = now.saturating_add(self.config.retransmit_interval);
                return Ok(Some(Outgoing {
                    len: 0,
                    confirmed: false,
                }));
            }
            // Nothing arrived: repeat the request.
            run.offset = 0;
        }
        let len = if run.offset == 0 && run.request.len() <= n {
            buf[..run.request.len()].copy_from_slice(&run.request);
            run.offset = run.request.len();
            run.request.len()
        } else {
            let take = (run.request.len() - run.offset).min(n - 3);
            let fragment = FragmentRepr {
                session: run.session,
                fid: run.fid,
                offset: run.offset as u8,
                data: &run.request[run.offset..run.offset + take],
            };
            let len = CommandRepr::Fragment(fragment)
                .emit(&mut buf[..n])
                .map_err(Error::Wire)?;
            run.offset += take;
            len
        };
        run.complete = run.offset >= run.request.len();
        run.poll = false;
        let confirmed = run.complete && matches!(run.step, Step::SignatureR | Step::KeyChange);
        run.next_send = if run.complete {
            now.saturating_add(self.config.retransmit_interval)
        } else {
            now
        };
        Ok(Some(Outgoing { len, confirmed }))
    }

    /// Takes what it can of `payload`; the first malformed command ends it, and is the error
    /// returned once the commands before it took effect.
    fn handle_downlink(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        payload: &[u8],
    ) -> Result<(), Error> {
        let NaiveState::Run(run) = &mut self.state else {
            return Err(Error::StaleSession);
        };
        let mut progress = false;
        let mut failure = None;
        let mut malformed = None;
        for command in Commands::new(payload) {
            let command = match command {
                Ok(command) => command,
                Err(e) => {
                    malformed = Some(Error::Wire(e));
                    break;
                }
            };
            let repr = match CommandRepr::parse(&command) {
                Ok(repr) => repr,
                Err(e) => {
                    malformed = Some(Error::Wire(e));
                    break;
                }
            };
            if let CommandRepr::Fragment(fragment) = repr {
                if let Ok(Some(inner)) = run.reassembler.push_repr(&fragment) {
                    let inner = inner.to_vec();
                    progress = true;
                    if let Some(Ok(command)) = Commands::new(&inner).next()
                        && let Ok(repr) = CommandRepr::parse(&command)
                    {
                        let (p, f) = Self::accept(run, &repr);
                        progress |= p;
                        failure = failure.or(f);
                    }
                } else if matches!(command, Command::Fragment(_)) {
                    progress = true;
                }
                continue;
            }
            let (p, f) = Self::accept(run, &repr);
            progress |= p;
            failure = failure.or(f);
        }
        if progress {
            run.without_progress = 0;
            if run.complete {
                run.poll = true;
                run.next_send = now;
            }
        }
        if let Some(reason) = failure {
            self.fail(backend, now, reason);
        } else {
            self.advance(backend, now)?;
        }
        malformed.map_or(Ok(()), Err)
    }

    /// A MAC acknowledgement may have completed a step.
    fn after_rx(&mut self, backend: &mut Backend, now: Instant) -> Result<(), Error> {
        self.advance(backend, now)
    }

    fn handle_rx_done(&mut self, now: Instant, received: bool, acked: bool) {
        let NaiveState::Run(run) = &mut self.state else {
            return;
        };
        if !run.complete {
            return;
        }
        if acked && run.step == Step::SignatureR {
            run.answered = true;
            run.without_progress = 0;
        }
        if received && !run.answered {
            run.poll = true;
            run.next_send = now;
        }
    }

    fn handle_join_result(
        &mut self,
        _backend: &mut Backend,
        _now: Instant,
        slot: RootKeySlot,
        accepted: bool,
    ) -> Result<(), Error> {
        let NaiveState::Rejoin(attempts) = &mut self.state else {
            return Err(Error::InvalidState);
        };
        if !accepted {
            *attempts += 1;
            return Ok(());
        }
        // Rejoining, the device holds a staged key.
        match KeyAcceptance::new(true).effect(slot) {
            JoinEffect::Confirm => {
                self.state = NaiveState::Idle;
                self.failures = 0;
                self.events.push_back(DeviceEvent::ActivateNewKey);
                self.events.push_back(DeviceEvent::Completed);
            }
            // A join under the old key proves nothing (§7): keep both keys, go on alternating.
            JoinEffect::Unchanged => {}
        }
        Ok(())
    }

    fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            NaiveState::Backoff(until) => Some(*until),
            NaiveState::Run(run) => Some(run.next_send),
            _ => None,
        }
    }
}
