//! The join frames and keys against an independent LoRaWAN implementation (`lrwn`, ChirpStack's):
//! frames built here verify there and frames built there open here, for LoRaWAN 1.0.x and 1.1,
//! with and without a CFList; the session keys and the join server's keys match its derivation;
//! a key inside a key store gives what the key itself gives; no input makes a parser panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lorapki_crypto::{AesKey, RootKeyKind, RootKeySlot, RootKeyStore, RootKeys};
use lorapki_crypto_soft::SoftKeyStore;
use lorapki_join::{
    JOIN_REQUEST_LEN, JoinAccept, JoinRequest, OPT_NEG, SessionKeys10, SessionKeys11, StoreKey,
    join_request_mic_verifies, js_enc_key, js_int_key,
};
use lrwn::{
    AES128Key, CFList, DLSettings, DevAddr, EUI64, FType, JoinAcceptPayload, JoinRequestPayload,
    JoinType, MHDR, Major, NetID, Payload, PhyPayload,
};

const APP_KEY: [u8; 16] = [0x2b; 16];
const NWK_KEY: [u8; 16] = [0x5c; 16];
const JOIN_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 0];
const DEV_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 0x42];
/// Five EU868 channels 867.1..867.9 MHz, CFList type 0.
const CF_LIST: [u8; 16] = [
    0x18, 0x4f, 0x84, 0xe8, 0x56, 0x84, 0xb8, 0x5e, 0x84, 0x88, 0x66, 0x84, 0x58, 0x6e, 0x84, 0,
];

fn key(bytes: [u8; 16]) -> AesKey {
    AesKey::from_array(bytes)
}

fn accept(cf_list: bool, dl_settings: u8) -> JoinAccept {
    JoinAccept {
        join_nonce: 0x0a_0b0c,
        net_id: 0x13,
        dev_addr: 0x2601_1234,
        dl_settings,
        rx_delay: 1,
        cf_list: cf_list.then_some(CF_LIST),
    }
}

fn lrwn_accept(a: &JoinAccept) -> JoinAcceptPayload {
    JoinAcceptPayload {
        join_nonce: a.join_nonce,
        home_netid: NetID::from_le_bytes(a.net_id.to_le_bytes()[..3].try_into().unwrap()),
        devaddr: DevAddr::from_be_bytes(a.dev_addr.to_be_bytes()),
        dl_settings: DLSettings::from_le_bytes([a.dl_settings]),
        rx_delay: a.rx_delay,
        cflist: a.cf_list.map(|c| CFList::from_bytes(c).unwrap()),
    }
}

fn store() -> SoftKeyStore {
    let mut store = SoftKeyStore::new();
    store
        .provision_factory(RootKeys {
            app_key: key(APP_KEY),
            nwk_key: Some(key(NWK_KEY)),
        })
        .unwrap();
    store
}

#[test]
fn join_requests_match_lrwn_both_ways() {
    for (root, nonce) in [
        (APP_KEY, 0u16),
        (NWK_KEY, 1),
        (APP_KEY, 0x1234),
        (NWK_KEY, u16::MAX),
    ] {
        let request = JoinRequest {
            join_eui: JOIN_EUI,
            dev_eui: DEV_EUI,
            dev_nonce: nonce,
        };
        let ours = request.build(&key(root)).unwrap();
        let mut theirs = PhyPayload {
            mhdr: MHDR {
                f_type: FType::JoinRequest,
                major: Major::LoRaWANR1,
            },
            payload: Payload::JoinRequest(JoinRequestPayload {
                join_eui: EUI64::from_be_bytes(JOIN_EUI),
                dev_eui: EUI64::from_be_bytes(DEV_EUI),
                dev_nonce: nonce,
            }),
            mic: None,
        };
        theirs
            .set_join_request_mic(&AES128Key::from_bytes(root))
            .unwrap();
        assert_eq!(ours.to_vec(), theirs.to_vec().unwrap());
        let parsed = PhyPayload::from_slice(&ours).unwrap();
        assert!(
            parsed
                .validate_join_request_mic(&AES128Key::from_bytes(root))
                .unwrap()
        );
        assert_eq!(JoinRequest::parse(&ours), Ok(request));
        assert!(join_request_mic_verifies(&ours, &key(root)).unwrap());
        assert!(!join_request_mic_verifies(&ours, &key([0; 16])).unwrap());
        // Inside the store, the same frame.
        let mut store = store();
        let kind = if root == APP_KEY {
            RootKeyKind::AppKey
        } else {
            RootKeyKind::NwkKey
        };
        let in_store = request
            .build(StoreKey::new(&mut store, RootKeySlot::Active, kind))
            .unwrap();
        assert_eq!(in_store, ours);
    }
}

#[test]
fn lorawan_1_0_accepts_and_keys_match_lrwn() {
    let app = AES128Key::from_bytes(APP_KEY);
    let join_eui = EUI64::from_be_bytes(JOIN_EUI);
    for cf_list in [false, true] {
        let fields = accept(cf_list, 0x03);
        let dev_nonce = 0x0102;
        // Sealed here, opened by lrwn.
        let frame = fields.seal_1_0(&key(APP_KEY));
        let mut theirs = PhyPayload::from_slice(frame.as_bytes()).unwrap();
        theirs.decrypt_join_accept_payload(&app).unwrap();
        assert!(
            theirs
                .validate_join_accept_mic(JoinType::Join, &join_eui, dev_nonce, &app)
                .unwrap()
        );
        let Payload::JoinAccept(pl) = &theirs.payload else {
            panic!("not a JoinAccept");
        };
        assert_eq!(pl, &lrwn_accept(&fields));
        // Sealed by lrwn, opened here: the same bytes both ways.
        let mut built = PhyPayload {
            mhdr: MHDR {
                f_type: FType::JoinAccept,
                major: Major::LoRaWANR1,
            },
            payload: Payload::JoinAccept(lrwn_accept(&fields)),
            mic: None,
        };
        built
            .set_join_accept_mic(JoinType::Join, &join_eui, dev_nonce, &app)
            .unwrap();
        built.encrypt_join_accept_payload(&app).unwrap();
        let phy = built.to_vec().unwrap();
        assert_eq!(phy, frame.as_bytes());
        assert_eq!(
            JoinAccept::open_1_0(&key(APP_KEY), &phy).unwrap(),
            Some(fields)
        );
        let mut keys = store();
        let store_key = StoreKey::new(&mut keys, RootKeySlot::Active, RootKeyKind::AppKey);
        assert_eq!(JoinAccept::open_1_0(store_key, &phy).unwrap(), Some(fields));
        // Another key, a flipped bit: not for this join.
        assert_eq!(JoinAccept::open_1_0(&key(NWK_KEY), &phy).unwrap(), None);
        let mut tampered = phy.clone();
        tampered[5] ^= 1;
        assert_eq!(
            JoinAccept::open_1_0(&key(APP_KEY), &tampered).unwrap(),
            None
        );
        // Session keys: lrwn's, in memory and in the store.
        let net_id = pl.home_netid;
        let nwk_s_key = lrwn::keys::get_f_nwk_s_int_key(
            false,
            &app,
            &net_id,
            &join_eui,
            pl.join_nonce,
            dev_nonce,
        )
        .unwrap();
        let app_s_key =
            lrwn::keys::get_app_s_key(false, &app, &net_id, &join_eui, pl.join_nonce, dev_nonce)
                .unwrap();
        let ours = fields.session_keys_1_0(&key(APP_KEY), dev_nonce).unwrap();
        assert_eq!(ours.nwk_s_key.expose_secret(), &nwk_s_key.to_bytes());
        assert_eq!(ours.app_s_key.expose_secret(), &app_s_key.to_bytes());
        let mut keys = store();
        let in_store: SessionKeys10 = fields
            .session_keys_1_0(
                StoreKey::new(&mut keys, RootKeySlot::Active, RootKeyKind::AppKey),
                dev_nonce,
            )
            .unwrap();
        assert_eq!(in_store.nwk_s_key, ours.nwk_s_key);
        assert_eq!(in_store.app_s_key, ours.app_s_key);
    }
}

#[test]
fn lorawan_1_1_accepts_and_keys_match_lrwn() {
    let nwk = AES128Key::from_bytes(NWK_KEY);
    let app = AES128Key::from_bytes(APP_KEY);
    let join_eui = EUI64::from_be_bytes(JOIN_EUI);
    let dev_eui = EUI64::from_be_bytes(DEV_EUI);
    let js_int = lrwn::keys::get_js_int_key(&dev_eui, &nwk).unwrap();
    let js_enc = lrwn::keys::get_js_enc_key(&dev_eui, &nwk).unwrap();
    assert_eq!(
        js_int_key(&key(NWK_KEY), &DEV_EUI).unwrap().expose_secret(),
        &js_int.to_bytes()
    );
    assert_eq!(
        js_enc_key(&key(NWK_KEY), &DEV_EUI).unwrap().expose_secret(),
        &js_enc.to_bytes()
    );
    for cf_list in [false, true] {
        let fields = accept(cf_list, 0x01);
        let dev_nonce = 5;
        let frame = fields.seal_1_1(&key(NWK_KEY), &JOIN_EUI, &DEV_EUI, dev_nonce);
        let mut theirs = PhyPayload::from_slice(frame.as_bytes()).unwrap();
        theirs.decrypt_join_accept_payload(&nwk).unwrap();
        assert!(
            theirs
                .validate_join_accept_mic(JoinType::Join, &join_eui, dev_nonce, &js_int)
                .unwrap()
        );
        let Payload::JoinAccept(pl) = &theirs.payload else {
            panic!("not a JoinAccept");
        };
        assert!(pl.dl_settings.opt_neg);
        let sent = JoinAccept {
            dl_settings: fields.dl_settings | OPT_NEG,
            ..fields
        };
        assert_eq!(pl, &lrwn_accept(&sent));
        let opened = JoinAccept::open_1_1(
            &key(NWK_KEY),
            &JOIN_EUI,
            &DEV_EUI,
            dev_nonce,
            frame.as_bytes(),
        );
        assert_eq!(opened.unwrap(), Some(sent));
        // Under another DevNonce the MIC differs; a 1.0 accept is no 1.1 accept.
        let other = JoinAccept::open_1_1(
            &key(NWK_KEY),
            &JOIN_EUI,
            &DEV_EUI,
            dev_nonce + 1,
            frame.as_bytes(),
        );
        assert_eq!(other.unwrap(), None);
        let v10 = fields.seal_1_0(&key(NWK_KEY));
        let as_11 = JoinAccept::open_1_1(
            &key(NWK_KEY),
            &JOIN_EUI,
            &DEV_EUI,
            dev_nonce,
            v10.as_bytes(),
        );
        assert_eq!(as_11.unwrap(), None);
        let net_id = pl.home_netid;
        let jn = pl.join_nonce;
        use lrwn::keys::{
            get_app_s_key, get_f_nwk_s_int_key, get_nwk_s_enc_key, get_s_nwk_s_int_key,
        };
        let ours: SessionKeys11 = sent
            .session_keys_1_1(&key(NWK_KEY), &key(APP_KEY), &JOIN_EUI, dev_nonce)
            .unwrap();
        let expected = [
            (
                &ours.f_nwk_s_int_key,
                get_f_nwk_s_int_key(true, &nwk, &net_id, &join_eui, jn, dev_nonce),
            ),
            (
                &ours.s_nwk_s_int_key,
                get_s_nwk_s_int_key(true, &nwk, &net_id, &join_eui, jn, dev_nonce),
            ),
            (
                &ours.nwk_s_enc_key,
                get_nwk_s_enc_key(true, &nwk, &net_id, &join_eui, jn, dev_nonce),
            ),
            (
                &ours.app_s_key,
                get_app_s_key(true, &app, &net_id, &join_eui, jn, dev_nonce),
            ),
        ];
        for (k, theirs) in expected {
            assert_eq!(k.expose_secret(), &theirs.unwrap().to_bytes());
        }
    }
}

#[test]
fn no_input_panics_and_none_opens() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) as u8
    };
    for len in 0..48 {
        for round in 0..64 {
            let mut phy: Vec<u8> = (0..len).map(|_| next()).collect();
            if round % 2 == 0 && len > 0 {
                phy[0] = [0x00, 0x20][round % 4 / 2];
            }
            let _ = JoinRequest::parse(&phy);
            assert!(
                len == JOIN_REQUEST_LEN || !join_request_mic_verifies(&phy, &key(APP_KEY)).unwrap()
            );
            assert_eq!(JoinAccept::open_1_0(&key(APP_KEY), &phy).unwrap(), None);
            let v11 = JoinAccept::open_1_1(&key(NWK_KEY), &JOIN_EUI, &DEV_EUI, 1, &phy);
            assert_eq!(v11.unwrap(), None);
        }
    }
    // An empty slot of the store is an error, not a panic.
    let mut store = store();
    let staged = StoreKey::new(&mut store, RootKeySlot::Staged, RootKeyKind::AppKey);
    let frame = accept(false, 0).seal_1_0(&key(APP_KEY));
    assert!(JoinAccept::open_1_0(staged, frame.as_bytes()).is_err());
}

#[test]
fn secrets_are_redacted_in_debug() {
    let keys = accept(false, 0).session_keys_1_0(&key(APP_KEY), 1).unwrap();
    let text = format!("{keys:?}");
    assert!(text.contains("REDACTED"), "{text}");
    assert!(!text.contains("2b"), "{text}");
}
