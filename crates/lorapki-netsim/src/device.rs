//! Devices on the air: the [`AirDevice`] interface the simulator drives, and [`EndDevice`], a
//! light LoRaWAN 1.0.x Class A device model that runs a key exchange strategy ([`Exchange`]):
//! the real pipelined [`DeviceSession`] or the [`NaiveExchange`] of the seed's literal order.
//!
//! # A device on the air
//!
//! The simulator knows a device only through [`AirDevice`]; the device owns its MAC (frame
//! counters, keys, DevNonce) and builds real PHY payloads. Per uplink:
//!
//! 1. at [`AirDevice::next_wakeup`] the simulator calls [`AirDevice::poll_uplink`] with a
//!    [`RadioContext`] (the time, the region, and when each duty-cycle sub-band of *this* device
//!    is free); the device returns the PHY payload, channel and data rate, or nothing (then it is
//!    asked again at its next wake-up). A device should wait for its sub-band; if it does not,
//!    the simulated radio defers the transmission until the band is free (counted as a
//!    deferral), as a regulatory radio driver would;
//! 2. the simulator plays the transmission (time on air), the gateway, the network server and the
//!    RX1/RX2 windows (RECEIVE_DELAY1/2, JOIN_ACCEPT_DELAY1/2), then calls
//!    [`AirDevice::handle_rx`] once, at the end of the frame received in RX1 or RX2, or at the
//!    end of RX2 when nothing arrived. The device is busy (sends nothing) until then, as Class A
//!    requires.
//!
//! A real MAC (e.g. `lorawan-device` behind its `PhyRxTx`/`Timer` traits) plugs in by
//! implementing [`AirDevice`]: its radio's `tx` hands the buffer over as the result of
//! `poll_uplink`, and its RX windows complete with what `handle_rx` delivers.

use std::cell::RefCell;
use std::collections::VecDeque;

use lorapki_crypto::{
    AesKey, CryptoBackend, PublicKey, RootKeyKind, RootKeySlot, RootKeyStore, RootKeys, Signature,
};
use lorapki_crypto_soft::{SoftBackend, SoftKeyStore, TestRng};
use lorapki_proto::keys::{self, KeyId, Role, SessionKeys as ProtoKeys, Transcript};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceSession, Duration, FailReason, Instant,
    LorawanVersion, NewRootKeys,
};
use lorapki_wire::{
    AbortRepr, Code, Command, CommandRepr, Commands, FragmentRepr, KeyChangeReqRepr, Part,
    PubKeyAnsRepr, PubKeyReqRepr, Reassembler, Session, SigVerifyAnsRepr, SigVerifyReqRepr,
};

use crate::duty::DutyCycle;
use crate::mac::{self, DataFrame, SessionKeys};
use crate::ns::{Backend, Downlink, Uplink};
use crate::region::{DATA_FRAME_OVERHEAD, Region};
use crate::rng::SimRng;

/// What a device may ask of the air at the moment it is polled.
pub struct RadioContext<'a> {
    /// Now (µs).
    pub now_us: u64,
    /// The region.
    pub region: Region,
    duty: &'a DutyCycle,
}

impl<'a> RadioContext<'a> {
    /// A context over a device's duty-cycle state.
    #[must_use]
    pub fn new(now_us: u64, region: Region, duty: &'a DutyCycle) -> Self {
        Self {
            now_us,
            region,
            duty,
        }
    }

    /// The earliest time (µs) this device may transmit on `frequency_hz`.
    #[must_use]
    pub fn free_at(&self, frequency_hz: u32) -> u64 {
        self.duty.free_at(self.region, frequency_hz)
    }
}

/// A device on the air, as the simulator drives it (see the module documentation).
pub trait AirDevice {
    /// The device's DevEUI (MSB first).
    fn dev_eui(&self) -> [u8; 8];
    /// When the device next wants to be polled (µs); `None`: never again on its own.
    fn next_wakeup(&self) -> Option<u64>;
    /// The device may transmit now.
    fn poll_uplink(&mut self, ctx: &RadioContext<'_>) -> Option<Uplink>;
    /// The RX windows of the last uplink are over: `downlink` is what the device received.
    fn handle_rx(&mut self, now_us: u64, downlink: Option<&Downlink>);
}

impl<T: AirDevice + ?Sized> AirDevice for Box<T> {
    fn dev_eui(&self) -> [u8; 8] {
        (**self).dev_eui()
    }
    fn next_wakeup(&self) -> Option<u64> {
        (**self).next_wakeup()
    }
    fn poll_uplink(&mut self, ctx: &RadioContext<'_>) -> Option<Uplink> {
        (**self).poll_uplink(ctx)
    }
    fn handle_rx(&mut self, now_us: u64, downlink: Option<&Downlink>) {
        (**self).handle_rx(now_us, downlink);
    }
}

/// One FPort-1 (or empty) uplink an exchange wants to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// FRMPayload bytes written to the buffer (0: an empty frame without FPort, to open the
    /// receive windows).
    pub len: usize,
    /// Send as confirmed data (the network acknowledges it).
    pub confirmed: bool,
}

/// A key-exchange strategy driven by [`EndDevice`]: the sans-IO surface of `DeviceSession`, plus
/// what a strategy that waits for MAC acknowledgements needs.
pub trait Exchange {
    /// Starts a run.
    fn start(&mut self, backend: &mut Backend, now: Instant);
    /// The root key of the next JoinRequest while rejoining.
    fn join_key(&self) -> Option<RootKeySlot>;
    /// The next FPort-1 uplink with maximum payload `n`.
    fn poll_transmit(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        n: usize,
        buf: &mut [u8],
    ) -> Option<Outgoing>;
    /// An FPort-1 downlink payload.
    fn handle_downlink(&mut self, backend: &mut Backend, now: Instant, payload: &[u8]);
    /// The receive windows of an FPort-1 uplink are over.
    fn handle_rx_done(&mut self, _now: Instant, _received: bool, _acked: bool) {}
    /// The result of a JoinRequest under `slot` while rejoining.
    fn handle_join_result(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        slot: RootKeySlot,
        accepted: bool,
    );
    /// The next event.
    fn poll_event(&mut self) -> Option<DeviceEvent>;
    /// When the exchange next wants to act.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// The pipelined schedule: `lorapki_proto::DeviceSession` as it is.
pub struct Pipelined(pub DeviceSession<Backend>);

impl Exchange for Pipelined {
    fn start(&mut self, backend: &mut Backend, now: Instant) {
        // Only fails when not idle, or on a backend fault (then the run simply does not start).
        let _ = self.0.start(backend, now);
    }
    fn join_key(&self) -> Option<RootKeySlot> {
        self.0.join_key()
    }
    fn poll_transmit(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        n: usize,
        buf: &mut [u8],
    ) -> Option<Outgoing> {
        let t = self.0.poll_transmit(backend, now, n, buf).ok().flatten()?;
        Some(Outgoing {
            len: t.len,
            confirmed: false,
        })
    }
    fn handle_downlink(&mut self, backend: &mut Backend, now: Instant, payload: &[u8]) {
        // Stale, duplicate or foreign commands are the protocol's business: nothing to do here.
        let _ = self.0.handle_downlink(backend, now, payload);
    }
    fn handle_join_result(
        &mut self,
        backend: &mut Backend,
        now: Instant,
        slot: RootKeySlot,
        accepted: bool,
    ) {
        let _ = self.0.handle_join_result(backend, now, slot, accepted);
    }
    fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.0.poll_event()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
}

/// The steps of the seed's literal order.
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

/// The seed's literal message order, done naively: one request per uplink, each waiting for its
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

    fn start_run(&mut self, backend: &mut Backend, now: Instant) {
        let session = match self.last_session.and_then(|s| Session::new(s).ok()) {
            Some(last) => last.next(),
            None => {
                let mut byte = [0u8];
                let _ = backend.random_bytes(&mut byte);
                Session::new(byte[0] & 0x3f)
                    .unwrap_or_else(|_| Session::new(0).unwrap_or_else(|_| unreachable!()))
            }
        };
        let Ok((ephemeral, ephemeral_public)) = backend.ephemeral_generate() else {
            return self.fail(
                backend,
                now,
                FailReason::Crypto(lorapki_proto::CryptoFault::Other),
            );
        };
        self.last_session = Some(session.value());
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
        set_request(&mut run);
        self.state = NaiveState::Run(Box::new(run));
        self.events.push_back(DeviceEvent::RunStarted {
            session: session.value(),
        });
    }

    /// After an answer completed a step: the next step, or the staging of the key.
    fn advance(&mut self, backend: &mut Backend, now: Instant) {
        let NaiveState::Run(run) = &mut self.state else {
            return;
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
                Err(reason) => return self.fail(backend, now, reason),
            }
        }
        let NaiveState::Run(run) = &mut self.state else {
            return;
        };
        if !run.answered {
            return;
        }
        let next = match run.step {
            Step::PubKey => {
                // Verify SIG_S now that all parts are here.
                let (Some(head), Some(tail), Some(auth)) = (
                    run.parts[1].as_ref(),
                    run.parts[2].as_ref(),
                    run.auth.as_ref(),
                ) else {
                    return;
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
                    return self.fail(backend, now, FailReason::ServerAuthentication);
                }
                Step::SignatureR
            }
            Step::SignatureR => Step::SignatureS,
            Step::SignatureS => Step::KeyChange,
            Step::KeyChange => {
                let keys = run.auth.as_ref().map(|a| a.keys.root.clone_secret());
                if let Some(keys) = keys {
                    self.state = NaiveState::Rejoin(0);
                    self.events.push_back(DeviceEvent::StageNewKey(keys));
                }
                return;
            }
        };
        run.step = next;
        run.answered = false;
        run.complete = false;
        run.poll = false;
        run.without_progress = 0;
        run.next_send = now;
        set_request(run);
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
                    if run.step == Step::PubKey && run.parts.iter().all(Option::is_some) {
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

/// Serializes the request of the run's current step.
fn set_request(run: &mut NaiveRun) {
    let session = run.session;
    let holds_all = run.parts.iter().all(Option::is_some);
    let signature = run.auth.as_ref().map(|a| a.signature);
    let repr = match (run.step, signature) {
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
    let len = repr.emit(&mut bytes).unwrap_or(0);
    run.request = bytes[..len].to_vec();
    run.offset = 0;
    run.fid = run.next_fid;
    run.next_fid = (run.next_fid + 1) & 0b11;
}

impl Exchange for NaiveExchange {
    fn start(&mut self, backend: &mut Backend, now: Instant) {
        if matches!(self.state, NaiveState::Idle) {
            self.start_run(backend, now);
        }
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
    ) -> Option<Outgoing> {
        if let NaiveState::Backoff(until) = self.state
            && now >= until
        {
            self.state = NaiveState::Idle;
            self.start_run(backend, now);
        }
        let NaiveState::Run(run) = &mut self.state else {
            return None;
        };
        if now < run.next_send {
            return None;
        }
        if run.complete {
            if run.without_progress >= lorapki_proto::MAX_UPLINKS_WITHOUT_ANSWER {
                self.fail(backend, now, FailReason::NoAnswer);
                return None;
            }
            run.without_progress += 1;
            if run.poll {
                // Something arrived but the answer is incomplete: open the windows again.
                run.next_send = now.saturating_add(self.config.retransmit_interval);
                return Some(Outgoing {
                    len: 0,
                    confirmed: false,
                });
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
            run.offset += take;
            CommandRepr::Fragment(fragment).emit(buf).unwrap_or(0)
        };
        run.complete = run.offset >= run.request.len();
        run.poll = false;
        let confirmed = run.complete && matches!(run.step, Step::SignatureR | Step::KeyChange);
        run.next_send = if run.complete {
            now.saturating_add(self.config.retransmit_interval)
        } else {
            now
        };
        Some(Outgoing { len, confirmed })
    }

    fn handle_downlink(&mut self, backend: &mut Backend, now: Instant, payload: &[u8]) {
        let NaiveState::Run(run) = &mut self.state else {
            return;
        };
        let mut progress = false;
        let mut failure = None;
        for command in Commands::new(payload) {
            let Ok(command) = command else { break };
            let Ok(repr) = CommandRepr::parse(&command) else {
                break;
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
            return self.fail(backend, now, reason);
        }
        self.advance(backend, now);
    }

    fn handle_rx_done(&mut self, now: Instant, received: bool, acked: bool) {
        let NaiveState::Run(run) = &mut self.state else {
            return;
        };
        if !run.complete {
            return;
        }
        if acked && matches!(run.step, Step::SignatureR | Step::KeyChange) {
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
        backend: &mut Backend,
        now: Instant,
        slot: RootKeySlot,
        accepted: bool,
    ) {
        let NaiveState::Rejoin(attempts) = &mut self.state else {
            return;
        };
        match (slot, accepted) {
            (RootKeySlot::Staged, true) => {
                self.state = NaiveState::Idle;
                self.failures = 0;
                self.events.push_back(DeviceEvent::ActivateNewKey);
                self.events.push_back(DeviceEvent::Completed);
            }
            (RootKeySlot::Active, true) => {
                self.events.push_back(DeviceEvent::RollBack);
                self.fail(backend, now, FailReason::RolledBack);
            }
            (_, false) => *attempts += 1,
        }
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

/// Advances a naive run after a MAC acknowledgement (called by [`EndDevice`] after
/// [`Exchange::handle_rx_done`]).
trait AfterRx {
    fn after_rx(&mut self, backend: &mut Backend, now: Instant);
}

impl AfterRx for NaiveExchange {
    fn after_rx(&mut self, backend: &mut Backend, now: Instant) {
        self.advance(backend, now);
    }
}

/// Everything that makes one simulated device.
#[derive(Clone, Debug)]
pub struct DeviceSetup {
    /// DevEUI, MSB first.
    pub dev_eui: [u8; 8],
    /// JoinEUI, MSB first.
    pub join_eui: [u8; 8],
    /// The region.
    pub region: Region,
    /// The uplink data rate (no ADR).
    pub data_rate: u8,
    /// The factory AppKey.
    pub factory_key: [u8; 16],
    /// Seed of the device's crypto backend and of its channel choices.
    pub seed: u64,
    /// When the device powers up and sends its first JoinRequest (µs).
    pub start_us: u64,
    /// Interval between JoinRequests without an answer (on top of the duty cycle).
    pub join_retry: Duration,
    /// Runs the device may start before it gives up (the retry budget).
    pub max_runs: u32,
    /// After completion, confirmed application uplinks (FPort 2) until one is acknowledged:
    /// at most this many (0: none). The first uplink of the new session confirms the key switch
    /// at the server.
    pub confirm_attempts: u32,
    /// Interval between those application uplinks.
    pub app_retry: Duration,
}

impl DeviceSetup {
    /// A device with the defaults: joins at `start_us`, retries joins every 30 s, a budget of 3
    /// runs, up to 8 confirmation uplinks 60 s apart.
    #[must_use]
    pub fn new(dev_eui: [u8; 8], region: Region, data_rate: u8, seed: u64) -> Self {
        Self {
            dev_eui,
            join_eui: [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 0],
            region,
            data_rate,
            factory_key: [0x2b; 16],
            seed,
            start_us: 0,
            join_retry: Duration::from_secs(30),
            max_runs: 3,
            confirm_attempts: 8,
            app_retry: Duration::from_secs(60),
        }
    }
}

/// Where an [`EndDevice`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The first OTAA join, under the factory key.
    Joining,
    /// The rekey (runs, rejoin).
    Rekeying,
    /// Rekey completed; application uplinks confirm the new session.
    Confirming,
    /// Done: rekey completed.
    Finished,
    /// Done: the retry budget is spent without a new key.
    GaveUp,
}

/// What a device did (for reports and acceptance checks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceReport {
    /// The first join completed (µs).
    pub joined_us: Option<u64>,
    /// The first run started (µs).
    pub run_started_us: Option<u64>,
    /// The first FPort-1 uplink went on air (µs).
    pub first_fport1_us: Option<u64>,
    /// The rekey completed: JoinAccept under the new key (µs).
    pub completed_us: Option<u64>,
    /// An application uplink of the new session was acknowledged (µs).
    pub confirmed_us: Option<u64>,
    /// Runs started.
    pub runs: u32,
    /// Why runs failed.
    pub failures: Vec<FailReason>,
    /// Roll-backs to the old key.
    pub rollbacks: u32,
    /// JoinRequests sent.
    pub join_requests: u32,
    /// FPort-1 uplinks sent (empty polls included).
    pub fport1_uplinks: u32,
    /// FPort-1 downlinks received.
    pub fport1_downlinks: u32,
    /// FPort-1 payload bytes sent / received.
    pub fport1_bytes_up: u32,
    /// FPort-1 payload bytes received.
    pub fport1_bytes_down: u32,
    /// Application (FPort 2) uplinks sent.
    pub app_uplinks: u32,
}

#[derive(Clone, Copy, Debug)]
enum InFlight {
    Join { slot: RootKeySlot, nonce: u16 },
    Data { confirmed: bool, fport1: bool },
}

struct MacState {
    keys: SessionKeys,
    fcnt_up: u32,
    last_fcnt_down: Option<u32>,
}

/// A light LoRaWAN 1.0.x Class A device with a key store, running the exchange `X`.
pub struct EndDevice<X> {
    setup: DeviceSetup,
    backend: Backend,
    store: RefCell<SoftKeyStore>,
    exchange: X,
    rng: SimRng,
    mac: Option<MacState>,
    dev_nonce: u16,
    phase: Phase,
    in_flight: Option<InFlight>,
    wake: Option<u64>,
    confirm_left: u32,
    report: DeviceReport,
}

fn to_instant(us: u64) -> Instant {
    Instant::from_millis(us / 1000)
}

fn dur_us(d: Duration) -> u64 {
    d.as_millis().saturating_mul(1000)
}

fn to_us(t: Instant) -> u64 {
    t.as_millis().saturating_mul(1000)
}

/// Creates a device's crypto backend and its identity key; returns the backend and the public key.
///
/// # Errors
///
/// Backend failures.
pub fn device_backend(
    seed: u64,
    slot: lorapki_crypto::KeySlot,
) -> lorapki_crypto::Result<(Backend, PublicKey)> {
    let mut backend = SoftBackend::new(TestRng::from_seed(seed));
    let public = backend.identity_generate(slot)?;
    Ok((backend, public))
}

/// The identity slot simulated devices use.
pub const IDENTITY_SLOT: lorapki_crypto::KeySlot = lorapki_crypto::KeySlot(0);

/// A [`DeviceConfig`] for a simulated device with the protocol's default timers.
#[must_use]
pub fn device_config(setup: &DeviceSetup, server_public: PublicKey) -> DeviceConfig {
    DeviceConfig::new(
        setup.dev_eui,
        setup.join_eui,
        LorawanVersion::V1_0,
        IDENTITY_SLOT,
        server_public,
    )
}

impl EndDevice<Pipelined> {
    /// A device running the pipelined `DeviceSession` with `config`.
    ///
    /// # Errors
    ///
    /// Backend or key-store failures.
    pub fn pipelined(
        setup: DeviceSetup,
        mut backend: Backend,
        config: DeviceConfig,
    ) -> Result<Self, lorapki_proto::Error> {
        let store = factory_store(&setup)?;
        let session = DeviceSession::new(
            &mut backend,
            config,
            DevicePersistent::default(),
            lorapki_crypto::KeyStoreStatus {
                active_generation: 0,
                staged: false,
            },
        )?;
        Ok(Self::with_exchange(
            setup,
            backend,
            store,
            Pipelined(session),
        ))
    }
}

impl EndDevice<NaiveExchange> {
    /// A device running the naive order with `config`.
    ///
    /// # Errors
    ///
    /// Backend or key-store failures.
    pub fn naive(
        setup: DeviceSetup,
        mut backend: Backend,
        config: DeviceConfig,
    ) -> Result<Self, lorapki_proto::Error> {
        let store = factory_store(&setup)?;
        let exchange = NaiveExchange::new(&mut backend, config)?;
        Ok(Self::with_exchange(setup, backend, store, exchange))
    }
}

fn factory_store(setup: &DeviceSetup) -> Result<SoftKeyStore, lorapki_proto::Error> {
    let mut store = SoftKeyStore::new();
    store.provision_factory(RootKeys {
        app_key: AesKey::from_array(setup.factory_key),
        nwk_key: None,
    })?;
    Ok(store)
}

impl<X: Exchange + MaybeAfterRx> EndDevice<X> {
    fn with_exchange(
        setup: DeviceSetup,
        backend: Backend,
        store: SoftKeyStore,
        exchange: X,
    ) -> Self {
        let rng = SimRng::derive(setup.seed, 0x5eed);
        let wake = Some(setup.start_us);
        let confirm_left = setup.confirm_attempts;
        Self {
            setup,
            backend,
            store: RefCell::new(store),
            exchange,
            rng,
            mac: None,
            dev_nonce: 0,
            phase: Phase::Joining,
            in_flight: None,
            wake,
            confirm_left,
            report: DeviceReport::default(),
        }
    }

    /// The setup.
    #[must_use]
    pub fn setup(&self) -> &DeviceSetup {
        &self.setup
    }

    /// Where the device is.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// What the device did.
    #[must_use]
    pub fn report(&self) -> &DeviceReport {
        &self.report
    }

    /// The exchange strategy.
    pub fn exchange(&self) -> &X {
        &self.exchange
    }

    /// AES-CMAC of `message` under the key in `slot` of the device's key store (to compare with
    /// the join server's keys without reading either); `None` if the slot is empty.
    pub fn key_cmac(&self, slot: RootKeySlot, message: &[u8]) -> Option<[u8; 16]> {
        self.store
            .borrow_mut()
            .root_cmac(slot, RootKeyKind::AppKey, &[message])
            .ok()
    }

    /// The key store's status (generation, staged).
    pub fn key_status(&self) -> Option<lorapki_crypto::KeyStoreStatus> {
        self.store.borrow_mut().status().ok()
    }

    fn uplink_n(&self) -> Option<usize> {
        self.setup
            .region
            .uplink_data_rate(self.setup.data_rate)
            .map(|d| d.max_payload)
    }

    fn drain(&mut self, now_us: u64) {
        while let Some(event) = self.exchange.poll_event() {
            let mut store = self.store.borrow_mut();
            match event {
                DeviceEvent::RunStarted { .. } => {
                    self.report.runs += 1;
                    self.report.run_started_us.get_or_insert(now_us);
                }
                DeviceEvent::StageNewKey(keys) => {
                    let _ = store.stage(keys.to_root_keys());
                }
                DeviceEvent::ActivateNewKey => {
                    let _ = store.activate();
                }
                DeviceEvent::RollBack => {
                    self.report.rollbacks += 1;
                    let _ = store.roll_back();
                }
                DeviceEvent::Completed => {
                    self.report.completed_us = Some(now_us);
                    self.phase = if self.confirm_left > 0 {
                        Phase::Confirming
                    } else {
                        Phase::Finished
                    };
                }
                DeviceEvent::Failed(reason) => {
                    self.report.failures.push(reason);
                    if self.report.runs >= self.setup.max_runs {
                        self.phase = Phase::GaveUp;
                    }
                }
                _ => {}
            }
        }
    }

    fn schedule(&mut self, now_us: u64) {
        self.wake = match self.phase {
            Phase::Joining => Some(now_us + dur_us(self.setup.join_retry)),
            Phase::Rekeying => {
                if self.exchange.join_key().is_some() {
                    Some(now_us + dur_us(self.setup.join_retry))
                } else {
                    self.exchange.poll_timeout().map(|t| to_us(t).max(now_us))
                }
            }
            Phase::Confirming => Some(now_us + dur_us(self.setup.app_retry)),
            Phase::Finished | Phase::GaveUp => None,
        };
    }

    fn join_request(&mut self, slot: RootKeySlot, channel: u32) -> Option<Uplink> {
        let nonce = self.dev_nonce;
        let phy = mac::device_join_request(
            &self.store,
            slot,
            &self.setup.join_eui,
            &self.setup.dev_eui,
            nonce,
        )?;
        // DevNonce increases strictly across all JoinRequests (LoRaWAN 1.0.4, PROTOCOL.md §7).
        self.dev_nonce = self.dev_nonce.wrapping_add(1);
        self.report.join_requests += 1;
        self.in_flight = Some(InFlight::Join { slot, nonce });
        Some(Uplink {
            phy: phy.to_vec(),
            frequency_hz: channel,
            data_rate: self.setup.data_rate,
        })
    }

    fn data_uplink(
        &mut self,
        channel: u32,
        fport: Option<u8>,
        payload: &[u8],
        confirmed: bool,
    ) -> Option<Uplink> {
        let mac = self.mac.as_mut()?;
        let fcnt = mac.fcnt_up;
        mac.fcnt_up += 1;
        let phy = mac::build_data_frame(
            &mac.keys,
            &DataFrame {
                uplink: true,
                confirmed,
                ack: false,
                fcnt,
                fport,
                payload,
            },
        )?;
        self.in_flight = Some(InFlight::Data {
            confirmed,
            fport1: fport != Some(2),
        });
        Some(Uplink {
            phy,
            frequency_hz: channel,
            data_rate: self.setup.data_rate,
        })
    }
}

/// The hook a strategy may need after its receive windows (naive: an acknowledgement completes a
/// step). Implemented for both strategies of this crate.
pub trait MaybeAfterRx {
    /// Called after [`Exchange::handle_rx_done`].
    fn maybe_after_rx(&mut self, backend: &mut Backend, now: Instant);
}

impl MaybeAfterRx for Pipelined {
    fn maybe_after_rx(&mut self, _backend: &mut Backend, _now: Instant) {}
}

impl MaybeAfterRx for NaiveExchange {
    fn maybe_after_rx(&mut self, backend: &mut Backend, now: Instant) {
        self.after_rx(backend, now);
    }
}

impl<X: Exchange + MaybeAfterRx> AirDevice for EndDevice<X> {
    fn dev_eui(&self) -> [u8; 8] {
        self.setup.dev_eui
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.wake
    }

    fn poll_uplink(&mut self, ctx: &RadioContext<'_>) -> Option<Uplink> {
        let now_us = ctx.now_us;
        let now = to_instant(now_us);
        let channels = self.setup.region.uplink_channels();
        let channel = channels[self.rng.below(channels.len() as u64) as usize];
        let free = ctx.free_at(channel);
        if free > now_us {
            // Wait for the sub-band: the frame is built when it can go out.
            self.wake = Some(free);
            return None;
        }
        let uplink = match self.phase {
            Phase::Joining => self.join_request(RootKeySlot::Active, channel),
            Phase::Rekeying => {
                if let Some(slot) = self.exchange.join_key() {
                    self.join_request(slot, channel)
                } else {
                    let n = self.uplink_n()?;
                    let mut buf = [0u8; 242];
                    let out = self
                        .exchange
                        .poll_transmit(&mut self.backend, now, n, &mut buf);
                    self.drain(now_us);
                    match out {
                        Some(out) => {
                            self.report.fport1_uplinks += 1;
                            self.report.first_fport1_us.get_or_insert(now_us);
                            self.report.fport1_bytes_up += out.len as u32;
                            let fport = (out.len > 0).then_some(lorapki_proto::FPORT);
                            self.data_uplink(channel, fport, &buf[..out.len], out.confirmed)
                        }
                        None => None,
                    }
                }
            }
            Phase::Confirming => {
                self.report.app_uplinks += 1;
                self.confirm_left = self.confirm_left.saturating_sub(1);
                self.data_uplink(channel, Some(2), &[0x01], true)
            }
            Phase::Finished | Phase::GaveUp => None,
        };
        if uplink.is_none() {
            self.schedule(now_us);
            if self.wake.is_some_and(|w| w <= now_us) {
                // Nothing to send now although the exchange wanted to: look again shortly.
                self.wake = Some(now_us + 1_000_000);
            }
        } else {
            self.wake = None;
        }
        uplink
    }

    fn handle_rx(&mut self, now_us: u64, downlink: Option<&Downlink>) {
        let now = to_instant(now_us);
        let in_flight = self.in_flight.take();
        match in_flight {
            Some(InFlight::Join { slot, nonce }) => {
                let keys = downlink
                    .and_then(|d| mac::device_open_join_accept(&self.store, slot, &d.phy, nonce));
                let accepted = keys.is_some();
                if let Some(keys) = keys {
                    self.mac = Some(MacState {
                        keys,
                        fcnt_up: 0,
                        last_fcnt_down: None,
                    });
                }
                match self.phase {
                    Phase::Joining if accepted => {
                        self.report.joined_us = Some(now_us);
                        self.phase = Phase::Rekeying;
                        self.exchange.start(&mut self.backend, now);
                    }
                    Phase::Rekeying => {
                        self.exchange
                            .handle_join_result(&mut self.backend, now, slot, accepted);
                    }
                    _ => {}
                }
                self.drain(now_us);
            }
            Some(InFlight::Data { confirmed, fport1 }) => {
                let mut acked = false;
                let mut received = false;
                if let (Some(d), Some(mac)) = (downlink, self.mac.as_mut())
                    && let Some(frame) = mac::open_data_frame(&mac.keys, &d.phy, mac.last_fcnt_down)
                    && !frame.uplink
                    && mac.last_fcnt_down.is_none_or(|last| frame.fcnt > last)
                {
                    mac.last_fcnt_down = Some(frame.fcnt);
                    received = true;
                    acked = frame.ack && confirmed;
                    if frame.fport == Some(lorapki_proto::FPORT) {
                        self.report.fport1_downlinks += 1;
                        self.report.fport1_bytes_down += frame.payload.len() as u32;
                        if self.phase == Phase::Rekeying {
                            self.exchange
                                .handle_downlink(&mut self.backend, now, &frame.payload);
                        }
                    }
                }
                if fport1 && self.phase == Phase::Rekeying {
                    self.exchange.handle_rx_done(now, received, acked);
                    self.exchange.maybe_after_rx(&mut self.backend, now);
                }
                self.drain(now_us);
                if self.phase == Phase::Confirming && !fport1 {
                    if acked {
                        self.report.confirmed_us = Some(now_us);
                        self.phase = Phase::Finished;
                    } else if self.confirm_left == 0 {
                        self.phase = Phase::Finished;
                    }
                }
            }
            None => {}
        }
        self.schedule(now_us);
        if self.phase == Phase::Rekeying
            && self.exchange.join_key().is_none()
            && self.exchange.poll_timeout().is_none()
        {
            // Idle without completion (e.g. a run that could not start): nothing more to do.
            self.wake = None;
        }
    }
}

/// A quick sanity helper for tests: the FPort-1 FRMPayload capacity of `region`/`dr`, and the PHY
/// size of a full frame.
#[must_use]
pub fn frame_capacity(region: Region, dr: u8) -> Option<(usize, usize)> {
    let n = region.uplink_data_rate(dr)?.max_payload;
    Some((n, n + DATA_FRAME_OVERHEAD))
}

/// Stages `keys` into a store (used by tests that set up a device mid-switch).
///
/// # Errors
///
/// Key-store failures.
pub fn stage_into(store: &mut SoftKeyStore, keys: &NewRootKeys) -> lorapki_crypto::Result<()> {
    store.stage(keys.to_root_keys())
}
