//! The adapter's rules, one at a time, with the real MAC and a scripted air: FPort 1 refused,
//! payload limits and pending MAC answers, DevNonce persisted and increasing across reboots,
//! foreign and replayed JoinAccepts ignored, a staged key resumed after a reset, the fall-back to
//! the old key. The join server and the frames are `lorapki-netsim`'s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    DEV_EUI, Device, FACTORY_KEY, FrameReceived, JOIN_EUI, MemPersist, device, factory_store,
    server_key,
};
use lorapki_crypto::{AesKey, KeyStoreStatus, RootKeySlot, RootKeyStore, RootKeys};
use lorapki_crypto_soft::SoftKeyStore;
use lorapki_lorawan::lorawan_device::nb_device::Response;
use lorapki_lorawan::{Error, Event, PersistentState};
use lorapki_netsim::mac::{self, DataFrame, JoinAcceptFields, SessionKeys};
use lorapki_netsim::ns::{JoinServer, KeyEvent};
use lorapki_netsim::region::Region;
use lorapki_proto::{DeviceStatus, Instant};
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::maccommands::SerializableMacCommand;
use lorawan::parser::FCtrl;

const NEW_KEY: [u8; 16] = [0x6c; 16];

/// The MAC's `Response` has no `PartialEq`.
macro_rules! assert_response {
    ($response:expr, $pattern:pat) => {{
        let response = $response;
        assert!(matches!(response, $pattern), "{response:?}");
    }};
}

fn at(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

fn new_device(
    region: Region,
    dr: u8,
    store: SoftKeyStore,
    state: PersistentState,
) -> (Device, MemPersist) {
    let (_, server_public) = server_key();
    let (device, persist, _) = device(region, dr, 11, server_public, store, state, |_| {});
    (device, persist)
}

fn join_server() -> JoinServer {
    let mut js = JoinServer::new();
    js.provision(DEV_EUI, JOIN_EUI, AesKey::from_array(FACTORY_KEY));
    js
}

/// Starts what `poll` wants at `now` and returns the frame it put on the air.
fn transmit(device: &mut Device, now: Instant) -> Option<Vec<u8>> {
    device.poll(now).unwrap();
    device.radio().sent.take().map(|(_, frame)| frame)
}

/// Plays the receive windows of the last uplink; `answer` arrives in RX1. Returns the MAC's
/// final response.
fn windows(device: &mut Device, now: Instant, answer: Option<&[u8]>) -> Response {
    let mut last = device.handle_timeout(now).unwrap();
    if let Some(frame) = answer {
        device.radio().packet = frame.to_vec();
        last = device.handle_radio_event(now, FrameReceived).unwrap();
    }
    while !device.is_idle() {
        last = device.handle_timeout(now).unwrap();
    }
    last
}

fn events(device: &mut Device) -> Vec<Event> {
    core::iter::from_fn(|| device.poll_event()).collect()
}

/// Joins through `js` at `now`; returns the session keys the join server made.
fn join(device: &mut Device, js: &mut JoinServer, now: Instant) -> SessionKeys {
    let request = transmit(device, now).expect("a JoinRequest");
    let answer = js.handle_join_request(&request, 0x13, 0x2600_0001).unwrap();
    assert_response!(
        windows(device, now, Some(&answer.accept)),
        Response::JoinSuccess
    );
    answer.keys
}

fn downlink(keys: &SessionKeys, fcnt: u32, fport: Option<u8>, payload: &[u8]) -> Vec<u8> {
    mac::build_data_frame(
        keys,
        &DataFrame {
            uplink: false,
            confirmed: false,
            ack: true,
            fcnt,
            fport,
            payload,
        },
    )
    .unwrap()
}

#[test]
fn fport_1_is_refused_with_a_clear_error() {
    let (mut device, _) = new_device(
        Region::Eu868,
        0,
        factory_store(),
        PersistentState::default(),
    );
    let refused = device.send(1, b"app data", false).unwrap_err();
    assert!(matches!(refused, Error::ReservedPort));
    assert_eq!(
        refused.to_string(),
        "FPort 1 is reserved for the lorapki key exchange"
    );
    assert!(matches!(
        device.send(0, b"x", false),
        Err(Error::InvalidPort(0))
    ));
    assert!(matches!(
        device.send(224, b"x", false),
        Err(Error::InvalidPort(224))
    ));
    assert!(matches!(device.send(2, b"x", false), Err(Error::NotJoined)));

    let mut js = join_server();
    join(&mut device, &mut js, at(0));
    // Joined, the exchange wants its first uplink: the application still cannot use FPort 1.
    assert!(matches!(
        device.send(1, b"x", false),
        Err(Error::ReservedPort)
    ));
    assert!(device.radio().sent.is_none());
}

#[test]
fn application_payloads_are_bounded_by_n() {
    let (mut device, _) = new_device(
        Region::Eu868,
        0,
        factory_store(),
        PersistentState::default(),
    );
    let mut js = join_server();
    let keys = join(&mut device, &mut js, at(0));
    assert_eq!(device.max_payload(), 51);
    let too_long = [0u8; 52];
    assert!(matches!(
        device.send(2, &too_long, false),
        Err(Error::PayloadTooLarge { len: 52, max: 51 })
    ));
    device.send(2, &too_long[..51], false).unwrap();
    let (_, frame) = device.radio().sent.take().unwrap();
    assert_eq!(frame.len(), 13 + 51);
    let opened = mac::open_data_frame(&keys, &frame, None).unwrap();
    assert_eq!((opened.fport, opened.payload.len()), (Some(2), 51));
    windows(&mut device, at(1), None);
}

#[test]
fn n_per_region_and_data_rate() {
    for (region, dr, n) in [
        (Region::Eu868, 0, 51),
        (Region::Eu868, 3, 115),
        (Region::Eu868, 5, 222),
        (Region::Us915, 0, 11),
        (Region::Us915, 1, 53),
        (Region::Us915, 2, 125),
        // The repeater-compatible limit (M = 230, the default) applies to every region, as in
        // lorawan-device; the simulator gives US915 DR3 the full 242.
        (Region::Us915, 3, 222),
    ] {
        let (mut device, _) = new_device(region, dr, factory_store(), PersistentState::default());
        assert_eq!(device.max_payload(), n, "{} DR{dr}", region.name());
        assert!(n <= region.uplink_data_rate(dr).unwrap().max_payload);
    }
    // Without repeaters in the path: M = 250, N = 242 (the simulator's value).
    let (_, server_public) = server_key();
    let (mut device, _, _) = device(
        Region::Us915,
        3,
        11,
        server_public,
        factory_store(),
        PersistentState::default(),
        |config| config.repeater_compatible = false,
    );
    assert_eq!(device.max_payload(), 242);
}

/// A MAC command for a downlink's FOpts or FPort-0 payload.
struct Command {
    cid: u8,
    payload: [u8; 4],
}

impl SerializableMacCommand for Command {
    fn payload_bytes(&self) -> &[u8] {
        &self.payload
    }
    fn cid(&self) -> u8 {
        self.cid
    }
    fn payload_len(&self) -> usize {
        4
    }
}

/// LinkADRReq keeping the three default EU868 channels: DR0/TXPower0, ChMask 0x0007,
/// ChMaskCntl 0, NbTrans 1.
const LINK_ADR_REQ: Command = Command {
    cid: 0x03,
    payload: [0x00, 0x07, 0x00, 0x01],
};

fn mac_command_downlink(keys: &SessionKeys, fcnt: u32, fopts: usize, fport0: usize) -> Vec<u8> {
    let fopts_cmds: Vec<&dyn SerializableMacCommand> = (0..fopts)
        .map(|_| &LINK_ADR_REQ as &dyn SerializableMacCommand)
        .collect();
    let port0_cmds: Vec<&dyn SerializableMacCommand> = (0..fport0)
        .map(|_| &LINK_ADR_REQ as &dyn SerializableMacCommand)
        .collect();
    let mut creator = DataPayloadCreator::new();
    creator
        .set_uplink(false)
        .set_dev_addr(&keys.dev_addr.to_le_bytes())
        .set_fctrl(&FCtrl::new(0x00, false))
        .set_fcnt(fcnt);
    let nwk = NewSKey::from(keys.nwk_skey);
    let app = AppSKey::from(keys.app_skey);
    if fport0 > 0 {
        creator.set_f_port(0);
        creator
            .build(&[], &port0_cmds, &nwk, &app)
            .unwrap()
            .to_vec()
    } else {
        creator
            .build(&[], &fopts_cmds, &nwk, &app)
            .unwrap()
            .to_vec()
    }
}

#[test]
fn pending_mac_answers_shrink_n_and_cannot_make_the_mac_panic() {
    let (mut device, _) = new_device(
        Region::Eu868,
        0,
        factory_store(),
        PersistentState::default(),
    );
    let mut js = join_server();
    let keys = join(&mut device, &mut js, at(0));
    // An application uplink; its RX1 brings one LinkADRReq in FOpts: one LinkADRAns (2 bytes)
    // is now pending, and N shrinks by 2.
    device.send(2, b"hello", false).unwrap();
    device.radio().sent.take().unwrap();
    let answer = mac_command_downlink(&keys, 0, 1, 0);
    assert_response!(
        windows(&mut device, at(10), Some(&answer)),
        Response::DownlinkReceived(0)
    );
    assert_eq!(device.max_payload(), 49);
    // Nine more in an FPort-0 payload: nine answers would need 18 bytes of FOpts (at most 15) and
    // would make lorawan-device panic; the adapter keeps what fits.
    device.send(2, b"hello", false).unwrap();
    let (_, frame) = device.radio().sent.take().unwrap();
    assert_eq!(frame[5] & 0x0f, 2, "the first answer rides in FOpts");
    let answer = mac_command_downlink(&keys, 1, 0, 9);
    assert_response!(
        windows(&mut device, at(20), Some(&answer)),
        Response::DownlinkReceived(1)
    );
    let n = device.max_payload();
    assert_eq!(n, 51 - 18, "N with nine pending answers");
    device.send(2, &vec![0xaa; n], false).unwrap();
    let (_, frame) = device.radio().sent.take().unwrap();
    let fopts_len = usize::from(frame[5] & 0x0f);
    assert_eq!(fopts_len, 14, "seven LinkADRAns fit in FOpts");
    assert!(frame.len() <= 13 + 51);
    windows(&mut device, at(30), None);
}

#[test]
fn downlinks_on_fport_1_go_to_the_exchange_others_to_the_application() {
    let (mut device, _) = new_device(
        Region::Eu868,
        0,
        factory_store(),
        PersistentState::default(),
    );
    let mut js = join_server();
    let keys = join(&mut device, &mut js, at(0));
    device.send(2, b"ping", false).unwrap();
    device.radio().sent.take().unwrap();
    windows(
        &mut device,
        at(10),
        Some(&downlink(&keys, 0, Some(7), b"pong")),
    );
    let app = device.take_downlink().unwrap();
    assert_eq!((app.fport, &app.data[..]), (7, &b"pong"[..]));
    device.send(2, b"ping", false).unwrap();
    device.radio().sent.take().unwrap();
    windows(
        &mut device,
        at(20),
        Some(&downlink(&keys, 1, Some(1), &[0x04, 0x00, 0x00])),
    );
    assert!(device.take_downlink().is_none());
}

#[test]
fn dev_nonce_is_persisted_before_each_join_request_and_survives_a_reboot() {
    let (mut device, persist) = new_device(
        Region::Eu868,
        0,
        factory_store(),
        PersistentState::default(),
    );
    let log = device.radio().log.clone();
    // Three JoinRequests nobody answers, 30 s apart (the join retry interval).
    for attempt in 0..3u64 {
        let now = at(attempt * 30);
        let request = transmit(&mut device, now).expect("a JoinRequest");
        assert!(mac::join_request_mic_ok(&request, &FACTORY_KEY));
        assert_response!(windows(&mut device, now, None), Response::NoJoinAccept);
        assert_eq!(
            events(&mut device),
            [Event::JoinFailed {
                slot: RootKeySlot::Active
            }]
        );
        assert_eq!(device.poll_timeout(), Some(at(attempt * 30 + 30)));
        assert!(transmit(&mut device, at(attempt * 30 + 29)).is_none());
    }
    assert_eq!(log.borrow().dev_nonces, [0, 1, 2]);
    assert_eq!(log.borrow().write_ahead_violations, 0);
    let stored = persist.stored.borrow().unwrap();
    assert_eq!(stored.last_dev_nonce, Some(2));

    // After a reset, from what was stored: the counter goes on, and the join server accepts it.
    let (mut device, _) = new_device(Region::Eu868, 0, factory_store(), stored);
    let mut js = join_server();
    let request = transmit(&mut device, at(0)).unwrap();
    assert_eq!(mac::parse_join_request(&request).unwrap().dev_nonce, 3);
    let answer = js.handle_join_request(&request, 0x13, 0x2600_0001).unwrap();
    assert_response!(
        windows(&mut device, at(0), Some(&answer.accept)),
        Response::JoinSuccess
    );
}

#[test]
fn no_join_request_without_a_stored_dev_nonce() {
    let state = PersistentState {
        last_dev_nonce: Some(u16::MAX),
        ..PersistentState::default()
    };
    let (mut device, _) = new_device(Region::Eu868, 0, factory_store(), state);
    assert!(matches!(device.poll(at(0)), Err(Error::DevNonceExhausted)));
    assert!(device.radio().sent.is_none());

    let (mut device, persist) = new_device(
        Region::Eu868,
        0,
        factory_store(),
        PersistentState::default(),
    );
    persist.fail.set(true);
    assert!(matches!(device.poll(at(0)), Err(Error::Persist(_))));
    assert!(device.radio().sent.is_none());
    persist.fail.set(false);
    let request = transmit(&mut device, at(1)).unwrap();
    // The nonce whose storage failed is skipped, never reused.
    assert_eq!(mac::parse_join_request(&request).unwrap().dev_nonce, 1);
}

#[test]
fn a_join_accept_under_another_key_is_not_a_join() {
    let (mut device, _) = new_device(
        Region::Eu868,
        0,
        factory_store(),
        PersistentState::default(),
    );
    let request = transmit(&mut device, at(0)).unwrap();
    let nonce = mac::parse_join_request(&request).unwrap().dev_nonce;
    let fields = JoinAcceptFields {
        app_nonce: 1,
        net_id: 0x13,
        dev_addr: 0x2600_0001,
    };
    let (forged, _) = mac::server_join_accept(&[0x11; 16], fields, nonce).unwrap();
    assert_response!(
        windows(&mut device, at(0), Some(&forged)),
        Response::NoJoinAccept
    );
    assert!(!device.is_joined());
    assert!(matches!(device.send(2, b"x", false), Err(Error::NotJoined)));
}

#[test]
fn a_replayed_join_accept_is_not_a_join() {
    let (mut device, persist) = new_device(
        Region::Eu868,
        0,
        factory_store(),
        PersistentState::default(),
    );
    let mut js = join_server();
    let request = transmit(&mut device, at(0)).unwrap();
    let answer = js.handle_join_request(&request, 0x13, 0x2600_0001).unwrap();
    assert_response!(
        windows(&mut device, at(0), Some(&answer.accept)),
        Response::JoinSuccess
    );
    let stored = persist.stored.borrow().unwrap();
    assert_eq!(stored.last_join_nonce, Some(1));

    // After a reset the device joins again; the old JoinAccept (valid MIC under the active key,
    // old JoinNonce) is a replay: ignored. The join server's fresh answer is taken.
    let (mut device, _) = new_device(Region::Eu868, 0, factory_store(), stored);
    let request = transmit(&mut device, at(100)).unwrap();
    device.handle_timeout(at(100)).unwrap();
    device.radio().packet = answer.accept.clone();
    assert_response!(
        device.handle_radio_event(at(100), FrameReceived).unwrap(),
        Response::NoUpdate
    );
    let fresh = js.handle_join_request(&request, 0x13, 0x2600_0002).unwrap();
    device.radio().packet = fresh.accept.clone();
    assert_response!(
        device.handle_radio_event(at(100), FrameReceived).unwrap(),
        Response::JoinSuccess
    );
    assert_eq!(device.persistent_state().last_join_nonce, Some(2));
}

fn staged_store() -> SoftKeyStore {
    let mut store = factory_store();
    store
        .stage(RootKeys {
            app_key: AesKey::from_array(NEW_KEY),
            nwk_key: None,
        })
        .unwrap();
    store
}

#[test]
fn a_staged_key_found_after_a_reset_is_joined_activated_and_confirmed() {
    let (mut device, _) = new_device(Region::Eu868, 0, staged_store(), PersistentState::default());
    assert_eq!(device.status(), DeviceStatus::Rejoining);
    let mut js = join_server();
    js.apply(KeyEvent::Stage {
        dev_eui: DEV_EUI,
        app_key: AesKey::from_array(NEW_KEY),
    });
    let request = transmit(&mut device, at(0)).unwrap();
    assert!(mac::join_request_mic_ok(&request, &NEW_KEY));
    let answer = js.handle_join_request(&request, 0x13, 0x2600_0001).unwrap();
    assert_eq!(answer.slot, RootKeySlot::Staged);
    assert_response!(
        windows(&mut device, at(0), Some(&answer.accept)),
        Response::JoinSuccess
    );
    assert_eq!(
        events(&mut device),
        [
            Event::Joined {
                slot: RootKeySlot::Staged
            },
            Event::RekeyCompleted
        ]
    );
    assert_eq!(
        device.key_status().unwrap(),
        KeyStoreStatus {
            active_generation: 1,
            staged: false
        }
    );
    // The confirmation uplink: confirmed, FPort 1, empty; under the session keys the join server
    // derived (so the MAC runs on the keys from the store, not on its relay key).
    let frame = transmit(&mut device, at(1)).unwrap();
    let opened = mac::open_data_frame(&answer.keys, &frame, None).unwrap();
    assert!(opened.confirmed);
    assert!(opened.payload.is_empty());
    // MHDR, FHDR, the FPort byte 1 and the MIC: no FRMPayload (parsers that see no payload
    // report no FPort, as this one does).
    assert_eq!((frame.len(), frame[8]), (13, 1));
    let ack = downlink(&answer.keys, 0, None, &[]);
    assert_response!(
        windows(&mut device, at(1), Some(&ack)),
        Response::DownlinkReceived(0)
    );
    assert_eq!(events(&mut device), [Event::SwitchConfirmed]);
    assert_eq!(device.poll_timeout(), None);
    assert!(transmit(&mut device, at(100)).is_none());
}

/// A JoinAccept under the old key proves nothing (the factory key may be leaked): the device
/// joins with it for connectivity but keeps the staged key and goes on alternating (§7).
#[test]
fn a_join_under_the_old_key_keeps_both_keys() {
    let (mut device, _) = new_device(Region::Eu868, 0, staged_store(), PersistentState::default());
    let mut js = join_server(); // it never learnt the new key
    let mut slots = Vec::new();
    let mut now = 0;
    loop {
        let request = transmit(&mut device, at(now)).unwrap();
        let answer = js.handle_join_request(&request, 0x13, 0x2600_0001).ok();
        slots.push(mac::join_request_mic_ok(&request, &NEW_KEY));
        let response = windows(&mut device, at(now), answer.as_ref().map(|a| &a.accept[..]));
        now += 30;
        if matches!(response, Response::JoinSuccess) {
            break;
        }
        assert!(slots.len() < 8, "no fall-back to the old key");
    }
    // Three JoinRequests under the new key, then one under the old key (PROTOCOL.md §7).
    assert_eq!(slots, [true, true, true, false]);
    let seen = events(&mut device);
    assert!(seen.contains(&Event::Joined {
        slot: RootKeySlot::Active
    }));
    assert!(!seen.iter().any(|e| matches!(e, Event::RekeyFailed(_))));
    assert_eq!(
        device.key_status().unwrap(),
        KeyStoreStatus {
            active_generation: 0,
            staged: true
        }
    );
    assert!(matches!(device.status(), DeviceStatus::Rejoining));
    // The old key's session is only a fall-back: the device goes on rejoining under the new key.
    assert!(!device.is_joined());
    let next = transmit(&mut device, at(now + 600)).unwrap();
    assert!(mac::join_request_mic_ok(&next, &NEW_KEY));
    assert_eq!(device.radio().log.borrow().dev_nonces, [0, 1, 2, 3, 4]);
}

/// PROTOCOL.md §7 against the attacker of §10, through the real `lorawan-device` MAC: the join
/// server confirms the new key at the device's JoinRequest under it (and retires the factory
/// key); the attacker jams the JoinAccepts under the new key, and answers the device's fall-back
/// JoinRequest under the factory key with a JoinAccept it forged under the factory key. The MAC
/// accepts that JoinAccept (it is valid under the factory key); the device must keep the new
/// key (the old rule rolled back and erased it, leaving a key the join server no longer accepts)
/// and join under it once the attacker stops.
#[test]
fn a_join_accept_forged_under_the_factory_key_never_costs_the_new_key() {
    let (mut device, _) = new_device(Region::Eu868, 0, staged_store(), PersistentState::default());
    let mut js = join_server();
    js.apply(KeyEvent::Stage {
        dev_eui: DEV_EUI,
        app_key: AesKey::from_array(NEW_KEY),
    });
    // The attacker's own join server: it knows only the factory key.
    let mut forger = join_server();
    let mut now = 0;
    let mut forged_joins = 0;
    for _ in 0..8 {
        let request = transmit(&mut device, at(now)).unwrap();
        let answer = match js.handle_join_request(&request, 0x13, 0x2600_0001) {
            Ok(answer) => {
                assert!(mac::join_request_mic_ok(&request, &NEW_KEY));
                if answer.slot == RootKeySlot::Staged {
                    // Confirmed at the JoinRequest: the factory key is retired now.
                    js.apply(KeyEvent::Activate { dev_eui: DEV_EUI });
                }
                None // jammed
            }
            Err(_) => {
                // Under the factory key, which the join server no longer accepts: forged.
                assert!(!mac::join_request_mic_ok(&request, &NEW_KEY));
                forged_joins += 1;
                forger
                    .handle_join_request(&request, 0x13, 0x2600_0002)
                    .ok()
                    .map(|a| a.accept)
            }
        };
        let _ = windows(&mut device, at(now), answer.as_deref());
        now += 30;
    }
    assert!(forged_joins >= 2, "{forged_joins}");
    let seen = events(&mut device);
    assert!(seen.contains(&Event::Joined {
        slot: RootKeySlot::Active
    }));
    assert!(!seen.iter().any(|e| matches!(e, Event::RekeyFailed(_))));
    assert_eq!(
        device.key_status().unwrap(),
        KeyStoreStatus {
            active_generation: 0,
            staged: true
        },
        "the device kept the new key"
    );
    // The attacker stops: the next JoinRequest under the new key joins.
    loop {
        let request = transmit(&mut device, at(now)).unwrap();
        if let Ok(answer) = js.handle_join_request(&request, 0x13, 0x2600_0003) {
            assert_response!(
                windows(&mut device, at(now), Some(&answer.accept)),
                Response::JoinSuccess
            );
            break;
        }
        let _ = windows(&mut device, at(now), None);
        now += 30;
        assert!(now < 30 * 30, "no JoinRequest under the new key");
    }
    assert!(events(&mut device).contains(&Event::RekeyCompleted));
    assert_eq!(device.key_status().unwrap().active_generation, 1);
}
