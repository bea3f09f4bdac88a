//! [`MacRadio`]: the radio as `lorawan-device` sees it — the application's radio, with the join
//! frames computed inside the key store.
//!
//! `lorawan-device` 0.12 builds its JoinRequest itself, with a random DevNonce and the AppKey it
//! holds in RAM, and decrypts the JoinAccept with that key. The adapter instead gives the MAC a
//! fresh random *relay key* as its "AppKey" for each join and sits between the MAC and the radio:
//!
//! * the MAC's JoinRequest is replaced, on its way to the radio, by one the adapter built in the
//!   key store: the persisted, strictly increasing DevNonce, and the MIC under the root key of the
//!   slot the session asked for;
//! * a frame received while a join is pending is decrypted and verified in the key store; only a
//!   JoinAccept that verifies under that root key (and whose JoinNonce increases) reaches the MAC,
//!   sealed again under the relay key so that the MAC accepts it. Anything else reaches it as an
//!   empty frame, which it ignores;
//! * the session keys derived in the store then replace the ones the MAC derived from the relay
//!   key (`set_session`), so that the MAC encrypts and verifies data frames under the real keys.
//!
//! The root key never leaves the store, and a JoinAccept the MAC accepts is one the store verified.

use core::marker::PhantomData;

use lorapki_crypto::{AesKey, RootKeySlot, RootKeyStore};
use lorawan::keys::CryptoFactory;
use lorawan_device::Timings;
use lorawan_device::nb_device::radio::{Event, PhyRxTx, Response};

use crate::frames::{self, AcceptedJoin, JOIN_ACCEPT_MAX_LEN, JOIN_REQUEST_LEN};

/// Why [`MacRadio`] refused a radio request of the MAC.
#[derive(Debug)]
pub enum MacRadioError<E> {
    /// The application's radio failed.
    Radio(E),
    /// The MAC sent a JoinRequest while the adapter had none prepared (never happens through
    /// [`LorapkiDevice`](crate::LorapkiDevice); nothing was transmitted).
    UnexpectedJoinRequest,
}

/// A join the adapter prepared: what to transmit instead of the MAC's JoinRequest, and how to
/// check the answer.
pub(crate) struct PendingJoin {
    pub(crate) slot: RootKeySlot,
    pub(crate) dev_nonce: u16,
    pub(crate) request: [u8; JOIN_REQUEST_LEN],
    /// The key the MAC holds as its AppKey for this join.
    pub(crate) relay_key: AesKey,
    /// A JoinAccept is accepted only with a JoinNonce above this one.
    pub(crate) min_join_nonce: Option<u32>,
}

/// What became of a prepared join.
pub(crate) struct JoinRelay {
    join: PendingJoin,
    transmitted: bool,
    accepted: Option<AcceptedJoin>,
    fault: Option<lorapki_crypto::Error>,
}

/// The end of a join, as the relay saw it.
pub(crate) struct JoinOutcome {
    /// The JoinAccept that verified in the store, if any.
    pub(crate) accepted: Option<AcceptedJoin>,
    /// A key-store failure while checking a received frame.
    pub(crate) fault: Option<lorapki_crypto::Error>,
}

/// The application's radio `R` with the key store `S`, as `lorawan-device`'s `nb_device` drives it
/// (see the module documentation). `C` is the MAC's crypto factory, the one `lorawan-device` is
/// built with; the JoinAccepts the relay hands the MAC are sealed by `lorapki-join`.
pub struct MacRadio<R, S, C> {
    radio: R,
    store: S,
    factory: PhantomData<C>,
    relay: Option<JoinRelay>,
    rx: [u8; JOIN_ACCEPT_MAX_LEN],
    rx_len: usize,
    /// The MAC reads `rx` instead of the radio's buffer (a join is pending).
    relayed: bool,
}

impl<R, S: RootKeyStore, C: CryptoFactory + Default> MacRadio<R, S, C> {
    pub(crate) fn new(radio: R, store: S) -> Self {
        Self {
            radio,
            store,
            factory: PhantomData,
            relay: None,
            rx: [0; JOIN_ACCEPT_MAX_LEN],
            rx_len: 0,
            relayed: false,
        }
    }

    /// The application's radio.
    pub fn radio(&mut self) -> &mut R {
        &mut self.radio
    }

    /// The key store.
    pub(crate) fn store(&mut self) -> &mut S {
        &mut self.store
    }

    pub(crate) fn arm(&mut self, join: PendingJoin) {
        self.relay = Some(JoinRelay {
            join,
            transmitted: false,
            accepted: None,
            fault: None,
        });
    }

    /// Ends the pending join (the relay key is zeroized with it).
    pub(crate) fn disarm(&mut self) -> JoinOutcome {
        self.relayed = false;
        self.rx = [0; JOIN_ACCEPT_MAX_LEN];
        self.rx_len = 0;
        match self.relay.take() {
            Some(relay) => JoinOutcome {
                accepted: relay.accepted,
                fault: relay.fault,
            },
            None => JoinOutcome {
                accepted: None,
                fault: None,
            },
        }
    }

    /// A frame arrived while a join is pending: only a JoinAccept that verifies in the store
    /// reaches the MAC.
    fn relay_received(&mut self)
    where
        R: PhyRxTx,
    {
        let Some(relay) = self.relay.as_mut().filter(|r| r.transmitted) else {
            self.relayed = false;
            return;
        };
        self.relayed = true;
        self.rx_len = 0;
        if relay.accepted.is_some() {
            return; // one JoinAccept per JoinRequest
        }
        let join = &relay.join;
        let packet = self.radio.get_received_packet();
        match frames::open_join_accept(&mut self.store, join.slot, packet, join.dev_nonce) {
            Ok(Some(accepted)) => {
                // A replayed JoinAccept (JoinNonce not increasing) is not for this join
                // (TS001-1.0.4 §6.2.6).
                if join
                    .min_join_nonce
                    .is_some_and(|min| accepted.join_nonce <= min)
                {
                    return;
                }
                self.rx_len = frames::seal_join_accept(&join.relay_key, &accepted, &mut self.rx);
                relay.accepted = Some(accepted);
            }
            Ok(None) => {}
            Err(e) => relay.fault = Some(e),
        }
    }
}

fn map_response<R, S, C>(response: Response<R>) -> Response<MacRadio<R, S, C>>
where
    R: PhyRxTx,
    S: RootKeyStore,
    C: CryptoFactory + Default,
{
    match response {
        Response::Idle => Response::Idle,
        Response::Txing => Response::Txing,
        Response::Rxing => Response::Rxing,
        Response::TxDone(ms) => Response::TxDone(ms),
        Response::RxDone(quality) => Response::RxDone(quality),
        Response::Phy(response) => Response::Phy(response),
    }
}

impl<R, S, C> PhyRxTx for MacRadio<R, S, C>
where
    R: PhyRxTx,
    S: RootKeyStore,
    C: CryptoFactory + Default,
{
    type PhyEvent = R::PhyEvent;
    type PhyError = MacRadioError<R::PhyError>;
    type PhyResponse = R::PhyResponse;

    const ANTENNA_GAIN: i8 = R::ANTENNA_GAIN;
    const MAX_RADIO_POWER: u8 = R::MAX_RADIO_POWER;

    fn get_mut_radio(&mut self) -> &mut Self {
        self
    }

    fn get_received_packet(&mut self) -> &mut [u8] {
        if self.relayed {
            &mut self.rx[..self.rx_len]
        } else {
            self.radio.get_received_packet()
        }
    }

    fn handle_event(&mut self, event: Event<'_, Self>) -> Result<Response<Self>, Self::PhyError> {
        let response = match event {
            Event::TxRequest(config, frame) => {
                let frame: &[u8] = if frames::is_join_request(frame) {
                    let Some(relay) = self.relay.as_mut() else {
                        return Err(MacRadioError::UnexpectedJoinRequest);
                    };
                    relay.transmitted = true;
                    &relay.join.request
                } else {
                    frame
                };
                self.radio.handle_event(Event::TxRequest(config, frame))
            }
            Event::RxRequest(config) => self.radio.handle_event(Event::RxRequest(config)),
            Event::CancelRx => self.radio.handle_event(Event::CancelRx),
            Event::Phy(event) => self.radio.handle_event(Event::Phy(event)),
        }
        .map_err(MacRadioError::Radio)?;
        if let Response::RxDone(_) = response {
            self.relay_received();
        }
        Ok(map_response(response))
    }
}

impl<R: Timings, S, C> Timings for MacRadio<R, S, C> {
    fn get_rx_window_offset_ms(&self) -> i32 {
        self.radio.get_rx_window_offset_ms()
    }

    fn get_rx_window_duration_ms(&self) -> u32 {
        self.radio.get_rx_window_duration_ms()
    }
}
