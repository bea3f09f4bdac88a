//! [`LorapkiDevice`]: a `lorawan-device` MAC, the key-exchange session, the crypto backend and the
//! key store, driven together.

use heapless::Deque;
use lorapki_crypto::{AesKey, CryptoBackend, KeyStoreStatus, RootKeySlot, RootKeyStore};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DeviceSession, DeviceStatus, Duration, FPORT, FailReason, Instant,
};
use lorapki_wire::{MAX_PAYLOAD, MIN_PAYLOAD};
use lorawan::keys::CryptoFactory;
use lorawan_device::mac::Session;
use lorawan_device::nb_device::{self, Response, radio::PhyRxTx};
use lorawan_device::region::{self, DR};
use lorawan_device::{
    AppEui, AppKey, AppSKey, DevAddr, DevEui, Downlink, JoinMode, NewSKey, Timings,
};

use crate::crypto::MacCrypto;
use crate::error::Error;
use crate::frames;
use crate::persist::{Persist, PersistentState};
use crate::radio::{MacRadio, MacRadioError, PendingJoin};
use crate::rng::ChannelRng;

/// Size of the MAC's radio buffer: the largest LoRaWAN PHY payload (255 bytes) plus the one byte
/// `lorawan-device` keeps free.
pub const MAC_BUFFER: usize = 256;

/// The `lorawan-device` MAC as the adapter instantiates it.
pub type Mac<R, S, C = MacCrypto> =
    nb_device::Device<MacRadio<R, S, C>, C, ChannelRng, MAC_BUFFER, 1>;

/// MHDR + FHDR without FOpts + FPort + MIC: what a data frame adds to its FRMPayload.
const DATA_FRAME_OVERHEAD: usize = 13;
/// FHDR without FOpts + FPort: what the MACPayload limit M holds besides the FRMPayload
/// (RP002: N = M − 8 when there are no FOpts).
const MAC_PAYLOAD_OVERHEAD: usize = 8;
/// FOpts holds at most 15 bytes (TS001-1.0.4 §4.3.1.6).
const MAX_FOPTS: usize = 15;
/// Events kept for the application before the oldest is dropped.
const EVENT_QUEUE: usize = 8;

/// How the adapter behaves; the key exchange's own settings are in [`Config::session`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The device's identity, pinned server key and exchange timers (`lorapki-proto`).
    pub session: DeviceConfig,
    /// Wait between a JoinRequest that brought no JoinAccept and the next one (on top of the
    /// radio's duty-cycle limits, which the radio driver enforces).
    pub join_retry_interval: Duration,
    /// Start a rekey as soon as the device has joined under its factory key (key generation 0).
    pub rekey_factory_key: bool,
    /// After a completed rekey, confirmed empty FPort-1 uplinks until one is answered: the first
    /// uplink of the new session is what makes the join server retire the old key (PROTOCOL.md
    /// §7). At most this many, `retransmit_interval` apart; 0 leaves it to the application.
    pub confirm_attempts: u8,
    /// Use the repeater-compatible MAC-payload limits of RP002 (230 bytes instead of 250).
    pub repeater_compatible: bool,
    /// Use the MAC-payload limits under the 400 ms dwell-time limit (AS923, AU915).
    pub dwell_time: bool,
    /// Accept a JoinAccept only if its JoinNonce is above the last one accepted (TS001-1.0.4
    /// §6.2.6), so that a replayed JoinAccept cannot roll a staged key back. Turn it off only for
    /// a join server whose JoinNonces are not a counter (LoRaWAN 1.0.2 and earlier).
    pub require_increasing_join_nonce: bool,
}

impl Config {
    /// The defaults: a JoinRequest every 30 s until one is answered, rekey right after the first
    /// join under the factory key, up to 8 confirmation uplinks, repeater-compatible payload
    /// limits, no dwell time, increasing JoinNonces required.
    #[must_use]
    pub fn new(session: DeviceConfig) -> Self {
        Self {
            session,
            join_retry_interval: Duration::from_secs(30),
            rekey_factory_key: true,
            confirm_attempts: 8,
            repeater_compatible: true,
            dwell_time: false,
            require_increasing_join_nonce: true,
        }
    }
}

/// What the adapter reports to the application (see [`LorapkiDevice::poll_event`]).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A JoinAccept under the root key in `slot` verified: the device has a network session.
    Joined {
        /// The key the join used.
        slot: RootKeySlot,
    },
    /// A JoinRequest under the root key in `slot` brought no JoinAccept.
    JoinFailed {
        /// The key the JoinRequest used.
        slot: RootKeySlot,
    },
    /// A rekey run started.
    RekeyStarted {
        /// Its session number.
        session: u8,
    },
    /// The new root key is staged; the device rejoins under it.
    KeyStaged,
    /// A JoinAccept under the new key verified: the new key is active, the old one erased.
    RekeyCompleted,
    /// The run failed; the device keeps its active key and backs off.
    RekeyFailed(FailReason),
    /// An uplink of the new session was answered: the network server has seen it, so the join
    /// server has retired the old key.
    SwitchConfirmed,
}

/// What the MAC is doing for the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Idle,
    Join { slot: RootKeySlot, rejoin: bool },
    Uplink(Uplink),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Uplink {
    Exchange,
    Confirmation,
    Application,
}

type Result<T, R> = core::result::Result<T, Error<<R as PhyRxTx>::PhyError>>;

/// A LoRaWAN Class A device that replaces its factory AppKey through the lorapki exchange.
///
/// It owns the `lorawan-device` MAC ([`Mac`], over the application's radio `R`), the
/// [`DeviceSession`] of `lorapki-proto`, the crypto backend `B`, the root-key store `S` and the
/// persistence hook `P`; `C` is the MAC's crypto factory ([`MacCrypto`] by default).
///
/// It joins under the active root key (the factory key at first), runs the exchange on FPort 1
/// with the maximum application payload N of every uplink, applies the session's key events to
/// the store, rejoins under the staged key (falling back to the active key as PROTOCOL.md §7
/// says), and passes every FPort-1 downlink to the session. DevNonce is a persisted counter.
///
/// Methods, in the manner of `lorapki-proto`'s sans-IO types:
///
/// * **inputs**: [`handle_radio_event`](Self::handle_radio_event) (the radio's interrupt event)
///   and [`handle_timeout`](Self::handle_timeout) (the MAC's timer, at the time of the last
///   `Response::TimeoutRequest`);
/// * **commands**: [`poll`](Self::poll) (start the next join or FPort-1 uplink when the MAC is
///   free), [`send`](Self::send) (an application uplink), [`start_rekey`](Self::start_rekey);
/// * **outputs**: [`poll_event`](Self::poll_event), [`take_downlink`](Self::take_downlink),
///   [`poll_timeout`](Self::poll_timeout) (when to call `poll` again).
///
/// Each input and command returns the MAC's `nb_device::Response`: on
/// `Response::TimeoutRequest(t)` arm the radio timer for `t` (the radio's milliseconds) and call
/// `handle_timeout` then. `now` is the application's clock (milliseconds, any epoch), used by the
/// exchange's timers.
pub struct LorapkiDevice<R, B, S, P, C = MacCrypto>
where
    R: PhyRxTx + Timings,
    B: CryptoBackend,
    S: RootKeyStore,
    P: Persist,
    C: CryptoFactory + Default,
{
    mac: Mac<R, S, C>,
    session: DeviceSession<B>,
    backend: B,
    persist: P,
    state: PersistentState,
    config: Config,
    region: region::Configuration,
    operation: Operation,
    joined: bool,
    next_join: Instant,
    confirm_left: u8,
    confirm_next: Instant,
    now: Instant,
    events: Deque<Event, EVENT_QUEUE>,
    downlink: Option<Downlink>,
}

fn mac_error<R, S, C>(e: nb_device::Error<MacRadio<R, S, C>>) -> Error<R::PhyError>
where
    R: PhyRxTx,
    S: RootKeyStore,
    C: CryptoFactory + Default,
{
    match e {
        nb_device::Error::Radio(MacRadioError::Radio(e)) => Error::Radio(e),
        nb_device::Error::Mac(lorawan_device::mac::Error::NotJoined) => Error::NotJoined,
        _ => Error::Mac,
    }
}

fn little_endian(eui: &[u8; 8]) -> [u8; 8] {
    let mut out = *eui;
    out.reverse();
    out
}

impl<R, B, S, P> LorapkiDevice<R, B, S, P>
where
    R: PhyRxTx + Timings,
    B: CryptoBackend,
    S: RootKeyStore,
    P: Persist,
{
    /// A device after a (re)boot, with [`MacCrypto`] as the MAC's crypto.
    ///
    /// `store` holds the factory key (or the keys of earlier rekeys) and `state` what
    /// [`Persist::save`] stored last ([`PersistentState::default`] on first boot). A staged key
    /// that survived a reset makes the device resume the rejoin (PROTOCOL.md §7).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if the store holds no key or the backend fails; [`Error::Session`] if the
    /// identity key cannot be read.
    pub fn new(
        config: Config,
        region: region::Configuration,
        radio: R,
        backend: B,
        store: S,
        persist: P,
        state: PersistentState,
    ) -> Result<Self, R> {
        Self::with_crypto(config, region, radio, backend, store, persist, state)
    }
}

impl<R, B, S, P, C> LorapkiDevice<R, B, S, P, C>
where
    R: PhyRxTx + Timings,
    B: CryptoBackend,
    S: RootKeyStore,
    P: Persist,
    C: CryptoFactory + Default,
{
    /// As [`LorapkiDevice::new`], with the crypto factory `C` for the MAC (e.g. `lorawan`'s
    /// `DefaultFactory`, at the flash cost the README measures).
    ///
    /// # Errors
    ///
    /// As [`LorapkiDevice::new`].
    pub fn with_crypto(
        config: Config,
        region: region::Configuration,
        radio: R,
        mut backend: B,
        mut store: S,
        persist: P,
        state: PersistentState,
    ) -> Result<Self, R> {
        let status = store.status()?;
        let session =
            DeviceSession::new(&mut backend, config.session.clone(), state.session, status)?;
        let mut seed = [0u8; 8];
        backend.random_bytes(&mut seed)?;
        let mac = nb_device::Device::new(
            region.clone(),
            MacRadio::new(radio, store),
            ChannelRng::new(u64::from_le_bytes(seed)),
        );
        Ok(Self {
            mac,
            session,
            backend,
            persist,
            state,
            config,
            region,
            operation: Operation::Idle,
            joined: false,
            next_join: Instant::from_millis(0),
            confirm_left: 0,
            confirm_next: Instant::from_millis(0),
            now: Instant::from_millis(0),
            events: Deque::new(),
            downlink: None,
        })
    }

    // ----- getters -----

    /// The key exchange's state.
    #[must_use]
    pub fn status(&self) -> DeviceStatus {
        self.session.status()
    }

    /// Whether the device has a network session (and no rejoin is due).
    #[must_use]
    pub fn is_joined(&self) -> bool {
        self.joined && self.session.join_key().is_none()
    }

    /// Whether the MAC is free: no uplink or join and its receive windows in progress.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.operation == Operation::Idle
    }

    /// What is persisted.
    #[must_use]
    pub fn persistent_state(&self) -> PersistentState {
        self.state
    }

    /// The maximum application payload N of the next uplink: the MAC-payload limit M of the
    /// region and current data rate, less 8 (FHDR without FOpts, FPort), less the MAC answers
    /// pending in FOpts. FPort-1 frames use it capped at 242.
    pub fn max_payload(&mut self) -> usize {
        let fopts = self.pending_fopts();
        let dr = self.mac.get_datarate();
        let limit = usize::from(self.region.get_max_payload_length(
            dr,
            self.config.repeater_compatible,
            self.config.dwell_time,
        ));
        // The MAC's buffer holds at most MAC_BUFFER - 1 bytes of PHY payload.
        limit
            .saturating_sub(MAC_PAYLOAD_OVERHEAD + fopts)
            .min((MAC_BUFFER - 1).saturating_sub(DATA_FRAME_OVERHEAD + fopts))
    }

    /// The current uplink data rate.
    pub fn data_rate(&mut self) -> DR {
        self.mac.get_datarate()
    }

    /// Sets the uplink data rate (N follows it).
    pub fn set_data_rate(&mut self, data_rate: DR) {
        self.mac.set_datarate(data_rate);
    }

    /// The application's radio.
    pub fn radio(&mut self) -> &mut R {
        self.mac.get_radio().radio()
    }

    /// The root-key store, e.g. to read its status or compare keys by a MAC over a probe.
    ///
    /// Changing its keys behind the adapter's back breaks the two-phase switch.
    pub fn key_store(&mut self) -> &mut S {
        self.mac.get_radio().store()
    }

    /// The key store's status (generation of the active key, staged key present).
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if the store fails.
    pub fn key_status(&mut self) -> Result<KeyStoreStatus, R> {
        Ok(self.key_store().status()?)
    }

    // ----- inputs -----

    /// The radio signalled `event` (e.g. its interrupt): handed to the MAC, then the result is
    /// applied (a JoinAccept, an FPort-1 downlink for the exchange, the end of an uplink).
    ///
    /// # Errors
    ///
    /// [`Error::Radio`] and [`Error::Mac`] from the MAC; [`Error::Crypto`] and
    /// [`Error::Persist`] when a key event or the state could not be stored (the adapter's state
    /// moved on all the same: retry what depends on it).
    pub fn handle_radio_event(&mut self, now: Instant, event: R::PhyEvent) -> Result<Response, R> {
        self.now = now;
        let result =
            self.mac
                .handle_event(nb_device::Event::RadioEvent(nb_device::radio::Event::Phy(
                    event,
                )));
        self.after_mac(now, result)
    }

    /// The MAC's timer (requested by the last `Response::TimeoutRequest`) fired.
    ///
    /// # Errors
    ///
    /// As [`handle_radio_event`](Self::handle_radio_event).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<Response, R> {
        self.now = now;
        let result = self.mac.handle_event(nb_device::Event::TimeoutFired);
        self.after_mac(now, result)
    }

    // ----- commands -----

    /// Starts the next thing the device must do when the MAC is free: a (re)join under the key
    /// the exchange asks for, the next FPort-1 uplink, or a confirmation uplink. Returns
    /// `Response::NoUpdate` when there is nothing to do before [`poll_timeout`](Self::poll_timeout).
    ///
    /// # Errors
    ///
    /// [`Error::DevNonceExhausted`]; [`Error::Persist`] if the DevNonce or the session state
    /// could not be stored (nothing was transmitted); [`Error::Crypto`] if the store cannot
    /// compute the JoinRequest; the MAC's and the radio's errors.
    pub fn poll(&mut self, now: Instant) -> Result<Response, R> {
        self.now = now;
        if self.operation != Operation::Idle {
            return Ok(Response::NoUpdate);
        }
        self.session.handle_timeout(&mut self.backend, now);
        self.drain_session(now)?;
        let rejoin = self.session.join_key();
        if rejoin.is_some() || !self.joined {
            if now < self.next_join {
                return Ok(Response::NoUpdate);
            }
            return self.start_join(now, rejoin.unwrap_or(RootKeySlot::Active), rejoin.is_some());
        }
        let n = self.max_payload();
        if n >= MIN_PAYLOAD {
            let mut buf = [0u8; MAX_PAYLOAD];
            let transmit =
                self.session
                    .poll_transmit(&mut self.backend, now, n.min(MAX_PAYLOAD), &mut buf)?;
            // The session's state is stored before the frame goes out (lorapki-proto).
            self.drain_session(now)?;
            if let Some(transmit) = transmit {
                return self.start_uplink(
                    now,
                    Uplink::Exchange,
                    FPORT,
                    &buf[..transmit.len],
                    false,
                );
            }
        } else if self.session.poll_timeout().is_some_and(|t| t <= now) {
            // The pending MAC answers leave fewer than the 11 bytes the exchange needs: an empty
            // FPort-1 frame carries them first, and the next uplink has its full N again.
            return self.start_uplink(now, Uplink::Exchange, FPORT, &[], false);
        }
        if self.confirm_left > 0 && now >= self.confirm_next {
            return self.start_uplink(now, Uplink::Confirmation, FPORT, &[], true);
        }
        Ok(Response::NoUpdate)
    }

    /// Sends an application uplink on `fport`.
    ///
    /// # Errors
    ///
    /// [`Error::ReservedPort`] for FPort 1, which only the key exchange uses;
    /// [`Error::InvalidPort`] for 0 and 224..=255; [`Error::Busy`] while the MAC is busy or a
    /// rejoin is due; [`Error::NotJoined`] without a network session;
    /// [`Error::PayloadTooLarge`] beyond [`max_payload`](Self::max_payload) (the MAC would
    /// panic on it); the MAC's and the radio's errors.
    pub fn send(&mut self, fport: u8, data: &[u8], confirmed: bool) -> Result<Response, R> {
        match fport {
            FPORT => return Err(Error::ReservedPort),
            0 | 224..=255 => return Err(Error::InvalidPort(fport)),
            _ => {}
        }
        if self.operation != Operation::Idle || self.session.join_key().is_some() {
            return Err(Error::Busy);
        }
        if !self.joined {
            return Err(Error::NotJoined);
        }
        let max = self.max_payload();
        if data.len() > max {
            return Err(Error::PayloadTooLarge {
                len: data.len(),
                max,
            });
        }
        let now = self.now;
        self.start_uplink(now, Uplink::Application, fport, data, confirmed)
    }

    /// Starts a rekey now (the device must be idle: no run, no back-off, no rejoin).
    ///
    /// # Errors
    ///
    /// [`Error::Session`] with `InvalidState` unless idle; [`Error::Crypto`] on backend failure.
    pub fn start_rekey(&mut self, now: Instant) -> Result<(), R> {
        self.now = now;
        self.session.start(&mut self.backend, now)?;
        self.drain_session(now)
    }

    // ----- outputs -----

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The last application downlink (any FPort but 1), if not taken yet.
    #[must_use]
    pub fn take_downlink(&mut self) -> Option<Downlink> {
        self.downlink.take()
    }

    /// When [`poll`](Self::poll) has something to do next; `None` while the MAC is busy (its
    /// own timer and the radio drive it then) or when nothing is pending.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.operation != Operation::Idle {
            return None;
        }
        if self.session.join_key().is_some() || !self.joined {
            return Some(self.next_join);
        }
        let confirm = (self.confirm_left > 0).then_some(self.confirm_next);
        match (self.session.poll_timeout(), confirm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- internals -----

    fn push_event(&mut self, event: Event) {
        if let Err(event) = self.events.push_back(event) {
            self.events.pop_front();
            let _ = self.events.push_back(event);
        }
    }

    fn save(&mut self) -> Result<(), R> {
        Ok(self.persist.save(&self.state)?)
    }

    fn pending_fopts(&self) -> usize {
        self.mac.get_session().map_or(0, |s| {
            2 * usize::from(s.uplink.adr_ans) + usize::from(s.uplink.rx_delay_ans)
        })
    }

    /// `lorawan-device` panics when its pending MAC answers overflow FOpts (more than seven
    /// LinkADRAns after a downlink with many LinkADRReqs): keep what fits.
    fn bound_fopts(&mut self) {
        let Some(session) = self.mac.get_session() else {
            return;
        };
        let rx_delay = usize::from(session.uplink.rx_delay_ans);
        if 2 * usize::from(session.uplink.adr_ans) + rx_delay <= MAX_FOPTS {
            return;
        }
        let mut session = session.clone();
        session.uplink.adr_ans = ((MAX_FOPTS - rx_delay) / 2) as u8;
        self.mac.set_session(session);
    }

    fn start_join(&mut self, now: Instant, slot: RootKeySlot, rejoin: bool) -> Result<Response, R> {
        let dev_nonce = self
            .state
            .next_dev_nonce()
            .ok_or(Error::DevNonceExhausted)?;
        let (join_eui, dev_eui) = (self.config.session.join_eui, self.config.session.dev_eui);
        let request =
            match frames::join_request(self.key_store(), slot, &join_eui, &dev_eui, dev_nonce) {
                Ok(request) => request,
                Err(e) => {
                    // The store cannot compute under this key (e.g. a staged key it could not
                    // write): the attempt counts as unanswered, and the exchange moves on to the
                    // active key in its turn.
                    self.next_join = now.saturating_add(self.config.join_retry_interval);
                    if rejoin {
                        self.session
                            .handle_join_result(&mut self.backend, now, slot, false)?;
                        self.drain_session(now)?;
                    }
                    return Err(Error::Crypto(e));
                }
            };
        // Write-ahead: the DevNonce is spent before it can reach the air, so that no reset can
        // make the device send it twice (TS001-1.0.4 §6.2.5).
        self.state.last_dev_nonce = Some(dev_nonce);
        self.save()?;
        let mut relay_key = AesKey::new_zeroed();
        self.backend.random_bytes(relay_key.as_mut_bytes())?;
        let mac_key = AppKey::from(*relay_key.expose_secret());
        let min_join_nonce = if self.config.require_increasing_join_nonce {
            self.state.last_join_nonce
        } else {
            None
        };
        self.mac.get_radio().arm(PendingJoin {
            slot,
            dev_nonce,
            request,
            relay_key,
            min_join_nonce,
        });
        self.operation = Operation::Join { slot, rejoin };
        let result = self.mac.join(JoinMode::OTAA {
            deveui: DevEui::from(little_endian(&dev_eui)),
            appeui: AppEui::from(little_endian(&join_eui)),
            appkey: mac_key,
        });
        if result.is_err() {
            // Nothing went out: the MAC stays idle.
            self.operation = Operation::Idle;
            let _ = self.mac.get_radio().disarm();
            self.next_join = now.saturating_add(self.config.join_retry_interval);
        }
        self.after_mac(now, result)
    }

    fn start_uplink(
        &mut self,
        now: Instant,
        kind: Uplink,
        fport: u8,
        data: &[u8],
        confirmed: bool,
    ) -> Result<Response, R> {
        self.bound_fopts();
        self.operation = Operation::Uplink(kind);
        let result = self.mac.send(data, fport, confirmed);
        if result.is_err() {
            self.operation = Operation::Idle;
        }
        self.after_mac(now, result)
    }

    /// Applies what the MAC reported.
    fn after_mac(
        &mut self,
        now: Instant,
        result: core::result::Result<Response, nb_device::Error<MacRadio<R, S, C>>>,
    ) -> Result<Response, R> {
        let response = result.map_err(mac_error)?;
        let outcome = match &response {
            Response::JoinSuccess => self.join_done(now, true),
            Response::NoJoinAccept => self.join_done(now, false),
            Response::DownlinkReceived(_) => {
                self.receive_downlinks(now);
                self.uplink_done(now, true);
                Ok(())
            }
            Response::RxComplete | Response::NoAck => {
                self.uplink_done(now, false);
                Ok(())
            }
            Response::SessionExpired => {
                // FCnt is spent: only a new join gives a new session.
                self.operation = Operation::Idle;
                self.joined = false;
                Ok(())
            }
            _ => Ok(()),
        };
        let drained = self.drain_session(now);
        outcome.and(drained).map(|()| response)
    }

    fn join_done(&mut self, now: Instant, mac_accepted: bool) -> Result<(), R> {
        let Operation::Join { slot, rejoin } = self.operation else {
            return Ok(());
        };
        self.operation = Operation::Idle;
        let outcome = self.mac.get_radio().disarm();
        let mut result = match outcome.fault {
            Some(fault) => Err(Error::Crypto(fault)),
            None => Ok(()),
        };
        // The MAC can only have accepted the frame the store verified and sealed for it.
        let accepted = outcome.accepted.filter(|_| mac_accepted);
        let joined = accepted.is_some();
        if let Some(accepted) = accepted {
            // The MAC derived its session keys from the relay key: the real ones come from
            // the store.
            self.mac.set_session(Session::new(
                NewSKey::from(*accepted.nwk_skey.expose_secret()),
                AppSKey::from(*accepted.app_skey.expose_secret()),
                DevAddr::from(accepted.dev_addr),
            ));
            self.state.last_join_nonce = Some(accepted.join_nonce);
            result = result.and(self.save());
        } else {
            self.next_join = now.saturating_add(self.config.join_retry_interval);
        }
        // After any join attempt the MAC holds only what that join gave it.
        self.joined = joined;
        self.push_event(if joined {
            Event::Joined { slot }
        } else {
            Event::JoinFailed { slot }
        });
        if rejoin {
            self.session
                .handle_join_result(&mut self.backend, now, slot, joined)?;
        } else if joined && self.config.rekey_factory_key && self.status() == DeviceStatus::Idle {
            let generation = self.key_status()?.active_generation;
            if generation == 0 {
                self.session.start(&mut self.backend, now)?;
            }
        }
        result
    }

    fn receive_downlinks(&mut self, now: Instant) {
        while let Some(downlink) = self.mac.take_downlink() {
            if downlink.fport == FPORT {
                // Stale, duplicated or foreign commands are the exchange's business: it drops
                // them without changing state (PROTOCOL.md §8).
                let _ = self
                    .session
                    .handle_downlink(&mut self.backend, now, &downlink.data);
            } else {
                self.downlink = Some(downlink);
            }
        }
    }

    fn uplink_done(&mut self, now: Instant, answered: bool) {
        let Operation::Uplink(kind) = self.operation else {
            return;
        };
        self.operation = Operation::Idle;
        if self.confirm_left == 0 {
            return;
        }
        if answered {
            // Any downlink of the new session answers one of its uplinks.
            self.confirm_left = 0;
            self.push_event(Event::SwitchConfirmed);
        } else if kind == Uplink::Confirmation {
            self.confirm_left -= 1;
            self.confirm_next = now.saturating_add(self.config.session.retransmit_interval);
        }
    }

    /// Applies the session's events to the key store, reports them, and stores the session's
    /// persistent state when it changed. Every event is applied; the first failure is returned.
    fn drain_session(&mut self, now: Instant) -> Result<(), R> {
        let mut result = Ok(());
        while let Some(event) = self.session.poll_event() {
            let step = match event {
                DeviceEvent::RunStarted { session } => {
                    self.push_event(Event::RekeyStarted { session });
                    Ok(())
                }
                DeviceEvent::StageNewKey(keys) => {
                    let staged = self.key_store().stage(keys.to_root_keys());
                    if staged.is_ok() {
                        self.push_event(Event::KeyStaged);
                    }
                    staged
                }
                DeviceEvent::ActivateNewKey => self.key_store().activate(),
                DeviceEvent::Completed => {
                    self.confirm_left = self.config.confirm_attempts;
                    self.confirm_next = now;
                    self.push_event(Event::RekeyCompleted);
                    Ok(())
                }
                DeviceEvent::Failed(reason) => {
                    self.push_event(Event::RekeyFailed(reason));
                    Ok(())
                }
                _ => Ok(()),
            };
            result = result.and(step.map_err(Error::Crypto));
        }
        let persistent = self.session.persistent();
        if persistent != self.state.session {
            self.state.session = persistent;
            result = result.and(self.save());
        }
        result
    }
}
