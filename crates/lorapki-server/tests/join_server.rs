//! The join server against an independent LoRaWAN implementation (`lrwn`): JoinRequests built by
//! lrwn are answered, the JoinAccepts decrypt and their MICs verify with lrwn, the session keys
//! match lrwn's derivation; the two-phase accept rule; result codes; bearer-token auth over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::*;
use lorapki_crypto::RootKeySlot;
use lorapki_server::joinserver::{JoinServer, JoinServerSettings};
use lorapki_server::lorawan::MacVersion;
use lorapki_server::{Eui64, KeyState, Server, WrapKek};
use lrwn::{
    AES128Key, DevAddr, EUI64, JoinRequestPayload, JoinType, MHDR, Major, NetID, Payload,
    PhyPayload,
};
use serde_json::Value;

fn lrwn_join_request(dev: Eui64, key: [u8; 16], dev_nonce: u16) -> Vec<u8> {
    let mut phy = PhyPayload {
        mhdr: MHDR {
            f_type: lrwn::FType::JoinRequest,
            major: Major::LoRaWANR1,
        },
        payload: Payload::JoinRequest(JoinRequestPayload {
            join_eui: EUI64::from_be_bytes(JOIN_EUI),
            dev_eui: EUI64::from_be_bytes(dev.0),
            dev_nonce,
        }),
        mic: None,
    };
    phy.set_join_request_mic(&AES128Key::from_bytes(key))
        .unwrap();
    phy.to_vec().unwrap()
}

fn envelope_key(ans: &Value, name: &str, kek: Option<&WrapKek>) -> [u8; 16] {
    let env = &ans[name];
    let bytes = hex::decode(env["AESKey"].as_str().unwrap()).unwrap();
    match kek {
        Some(k) => {
            assert_eq!(env["KEKLabel"], k.label());
            k.unwrap(&bytes).unwrap().as_slice().try_into().unwrap()
        }
        None => {
            assert_eq!(env["KEKLabel"], "");
            bytes.try_into().unwrap()
        }
    }
}

async fn setup(mac: MacVersion) -> (Arc<Server>, SimDevice, Db) {
    let db = Db::sqlite();
    let key = server_key();
    let dev = SimDevice::new(1, mac, key.public());
    let server = server_on(&db, &[key], options()).await;
    server
        .store()
        .import_devices(&[(2, dev.record())], &kek(), 0)
        .await
        .unwrap();
    (server, dev, db)
}

fn js(server: &Arc<Server>, settings: JoinServerSettings) -> JoinServer {
    JoinServer::new(Arc::clone(server), settings)
}

const DEV_ADDR: &str = "26011234";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lorawan_1_0_3_join_verifies_with_lrwn() {
    let (server, dev, _db) = setup(MacVersion::V1_0_3).await;
    let nwk_kek = WrapKek::from_hex("ns-kek", "000102030405060708090a0b0c0d0e0f").unwrap();
    let app_kek = WrapKek::from_hex("as-kek", "0f0e0d0c0b0a09080706050403020100").unwrap();
    let settings = JoinServerSettings {
        nwk_kek: Some(WrapKek::from_hex("ns-kek", "000102030405060708090a0b0c0d0e0f").unwrap()),
        app_kek: Some(WrapKek::from_hex("as-kek", "0f0e0d0c0b0a09080706050403020100").unwrap()),
        ..JoinServerSettings::default()
    };
    let js = js(&server, settings);
    let app_key = AES128Key::from_bytes(dev.app_key);
    let join_eui = EUI64::from_be_bytes(JOIN_EUI);
    let net_id = NetID::from_be_bytes([0, 0, 0x13]);
    for (round, dev_nonce) in [(1u32, 0x1234u16), (2, 0x0042)] {
        let req = lrwn_join_request(dev.dev_eui, dev.app_key, dev_nonce);
        let ans = js.handle(&join_req(&req, dev.dev_eui, DEV_ADDR, 7)).await;
        assert_eq!(ans["MessageType"], "JoinAns");
        assert_eq!(ans["TransactionID"], 7);
        assert_eq!(ans["SenderID"], hex::encode(JOIN_EUI));
        assert_eq!(ans["ReceiverID"], NET_ID);
        let phy = join_ans_phy(&ans).unwrap();
        let mut accept = PhyPayload::from_slice(&phy).unwrap();
        accept.decrypt_join_accept_payload(&app_key).unwrap();
        assert!(
            accept
                .validate_join_accept_mic(JoinType::Join, &join_eui, dev_nonce, &app_key)
                .unwrap()
        );
        let Payload::JoinAccept(pl) = &accept.payload else {
            panic!("not a JoinAccept");
        };
        assert_eq!(pl.join_nonce, round, "24-bit JoinNonce counter");
        assert_eq!(pl.devaddr, DevAddr::from_be_bytes([0x26, 0x01, 0x12, 0x34]));
        assert_eq!(pl.home_netid, net_id);
        assert!(!pl.dl_settings.opt_neg);
        let nwk_s_key = lrwn::keys::get_f_nwk_s_int_key(
            false,
            &app_key,
            &net_id,
            &join_eui,
            pl.join_nonce,
            dev_nonce,
        )
        .unwrap();
        let app_s_key = lrwn::keys::get_app_s_key(
            false,
            &app_key,
            &net_id,
            &join_eui,
            pl.join_nonce,
            dev_nonce,
        )
        .unwrap();
        assert_eq!(
            envelope_key(&ans, "NwkSKey", Some(&nwk_kek)),
            nwk_s_key.to_bytes()
        );
        assert_eq!(
            envelope_key(&ans, "AppSKey", Some(&app_kek)),
            app_s_key.to_bytes()
        );
    }
    // LoRaWAN 1.0.3: random DevNonces, none used twice.
    let replay = lrwn_join_request(dev.dev_eui, dev.app_key, 0x1234);
    let ans = js
        .handle(&join_req(&replay, dev.dev_eui, DEV_ADDR, 8))
        .await;
    assert_eq!(join_ans_phy(&ans), Err("JoinReqFailed".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lorawan_1_1_join_verifies_with_lrwn() {
    let (server, dev, _db) = setup(MacVersion::V1_1).await;
    let js = js(&server, JoinServerSettings::default());
    let nwk_key = AES128Key::from_bytes(dev.nwk_key.unwrap());
    let app_key = AES128Key::from_bytes(dev.app_key);
    let join_eui = EUI64::from_be_bytes(JOIN_EUI);
    let dev_eui = EUI64::from_be_bytes(dev.dev_eui.0);
    let net_id = NetID::from_be_bytes([0, 0, 0x13]);
    let dev_nonce = 5;
    let req = lrwn_join_request(dev.dev_eui, dev.nwk_key.unwrap(), dev_nonce);
    let ans = js.handle(&join_req(&req, dev.dev_eui, DEV_ADDR, 1)).await;
    let phy = join_ans_phy(&ans).unwrap();
    let mut accept = PhyPayload::from_slice(&phy).unwrap();
    accept.decrypt_join_accept_payload(&nwk_key).unwrap();
    let js_int_key = lrwn::keys::get_js_int_key(&dev_eui, &nwk_key).unwrap();
    assert!(
        accept
            .validate_join_accept_mic(JoinType::Join, &join_eui, dev_nonce, &js_int_key)
            .unwrap()
    );
    let Payload::JoinAccept(pl) = &accept.payload else {
        panic!("not a JoinAccept");
    };
    assert!(pl.dl_settings.opt_neg, "OptNeg set for a 1.1 device");
    let jn = pl.join_nonce;
    use lrwn::keys::{get_app_s_key, get_f_nwk_s_int_key, get_nwk_s_enc_key, get_s_nwk_s_int_key};
    let expected = [
        (
            "FNwkSIntKey",
            get_f_nwk_s_int_key(true, &nwk_key, &net_id, &join_eui, jn, dev_nonce),
        ),
        (
            "SNwkSIntKey",
            get_s_nwk_s_int_key(true, &nwk_key, &net_id, &join_eui, jn, dev_nonce),
        ),
        (
            "NwkSEncKey",
            get_nwk_s_enc_key(true, &nwk_key, &net_id, &join_eui, jn, dev_nonce),
        ),
        (
            "AppSKey",
            get_app_s_key(true, &app_key, &net_id, &join_eui, jn, dev_nonce),
        ),
    ];
    for (name, key) in expected {
        assert_eq!(
            envelope_key(&ans, name, None),
            key.unwrap().to_bytes(),
            "{name}"
        );
    }
    // LoRaWAN 1.1: DevNonce strictly increasing.
    for nonce in [5, 4] {
        let again = lrwn_join_request(dev.dev_eui, dev.nwk_key.unwrap(), nonce);
        let ans = js.handle(&join_req(&again, dev.dev_eui, DEV_ADDR, 2)).await;
        assert_eq!(join_ans_phy(&ans), Err("JoinReqFailed".into()));
    }
    let next = lrwn_join_request(dev.dev_eui, dev.nwk_key.unwrap(), 6);
    let ans = js.handle(&join_req(&next, dev.dev_eui, DEV_ADDR, 3)).await;
    assert!(join_ans_phy(&ans).is_ok());
}

/// The device's staged (new) AppKey, read through a JoinRequest MIC: the test builds the
/// JoinRequest with the device's key store.
fn join_under(dev: &mut SimDevice, slot: RootKeySlot) -> Vec<u8> {
    use lorapki_crypto::{RootKeyKind, RootKeyStore};
    dev.dev_nonce += 1;
    let mut phy = vec![0x00];
    phy.extend_from_slice(&Eui64(JOIN_EUI).to_le_bytes());
    phy.extend_from_slice(&dev.dev_eui.to_le_bytes());
    phy.extend_from_slice(&dev.dev_nonce.to_le_bytes());
    let mic = dev
        .keys
        .root_cmac(slot, RootKeyKind::AppKey, &[&phy])
        .unwrap();
    phy.extend_from_slice(&mic[..4]);
    phy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_key_accepted_until_first_join_under_new_key() {
    let (server, mut dev, _db) = setup(MacVersion::V1_0_4).await;
    let js = js(&server, JoinServerSettings::default());
    exchange_until_rejoin(&server, &mut dev).await;
    let row = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(row.key_state, KeyState::PendingNew);
    let new_join = join_under(&mut dev, RootKeySlot::Staged);
    let ans = js
        .handle(&join_req(&new_join, dev.dev_eui, DEV_ADDR, 1))
        .await;
    let accept = join_ans_phy(&ans).unwrap();
    assert!(dev.accept_verifies(RootKeySlot::Staged, &accept));
    let row = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(
        row.key_state,
        KeyState::ActiveNew,
        "first join under the new key retires the old"
    );
    let old_join = join_under(&mut dev, RootKeySlot::Active);
    let ans = js
        .handle(&join_req(&old_join, dev.dev_eui, DEV_ADDR, 2))
        .await;
    assert_eq!(join_ans_phy(&ans), Err("MICFailed".into()));
    assert_eq!(server.metrics().completed(), 1);
}

/// Finding 1 (b) of the key switch revision, at the join server: a join under the factory key
/// while the new key is staged is answered (the device may not hold the new key yet) but is no
/// evidence: the attacker knows the factory key. Before the revision it rolled the staged key
/// back; now both keys stay until a join under the new key, which then retires the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_under_the_factory_key_while_staged_keeps_the_staged_key() {
    let (server, mut dev, _db) = setup(MacVersion::V1_0_4).await;
    let js = js(&server, JoinServerSettings::default());
    exchange_until_rejoin(&server, &mut dev).await;
    for (i, slot) in [
        RootKeySlot::Active,
        RootKeySlot::Active,
        RootKeySlot::Active,
    ]
    .into_iter()
    .enumerate()
    {
        let old_join = join_under(&mut dev, slot);
        let ans = js
            .handle(&join_req(&old_join, dev.dev_eui, DEV_ADDR, i as u32))
            .await;
        let accept = join_ans_phy(&ans).unwrap();
        assert!(dev.accept_verifies(RootKeySlot::Active, &accept));
        let row = server.store().device(dev.dev_eui).await.unwrap().unwrap();
        assert_eq!(row.key_state, KeyState::PendingNew, "join {i}");
        assert!(row.staged_keys.is_some());
    }
    let new_join = join_under(&mut dev, RootKeySlot::Staged);
    let ans = js
        .handle(&join_req(&new_join, dev.dev_eui, DEV_ADDR, 9))
        .await;
    let accept = join_ans_phy(&ans).unwrap();
    assert!(dev.accept_verifies(RootKeySlot::Staged, &accept));
    let row = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(row.key_state, KeyState::ActiveNew);
    assert_eq!(server.metrics().failed().get("rolled-back"), None);
}

/// Finding 1 (a): an uplink of a session joined under the factory key (the attacker joins as
/// the device after the device activated the new key) changes no key. There is no "session
/// confirmation" any more: the JoinRequest under the new key already retired the old key, and a
/// factory-key join after that is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_key_join_after_activation_is_refused_and_changes_nothing() {
    let (server, mut dev, _db) = setup(MacVersion::V1_0_4).await;
    let js = js(&server, JoinServerSettings::default());
    exchange_until_rejoin(&server, &mut dev).await;
    let new_join = join_under(&mut dev, RootKeySlot::Staged);
    let ans = js
        .handle(&join_req(&new_join, dev.dev_eui, DEV_ADDR, 1))
        .await;
    assert!(join_ans_phy(&ans).is_ok());
    let before = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(before.key_state, KeyState::ActiveNew);
    let forged = join_under(&mut dev, RootKeySlot::Active);
    let ans = js
        .handle(&join_req(&forged, dev.dev_eui, "26019999", 2))
        .await;
    assert_eq!(join_ans_phy(&ans), Err("MICFailed".into()));
    let after = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(after.key_state, KeyState::ActiveNew);
    assert_eq!(after.active_keys, before.active_keys);
    assert_eq!(
        after.version, before.version,
        "a refused join writes nothing"
    );
    // The device's own next join under its (new) key is still accepted.
    let again = join_under(&mut dev, RootKeySlot::Staged);
    let ans = js.handle(&join_req(&again, dev.dev_eui, DEV_ADDR, 3)).await;
    assert!(join_ans_phy(&ans).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_codes_and_no_state_change_on_refusal() {
    let (server, dev, _db) = setup(MacVersion::V1_0_3).await;
    let js = js(&server, JoinServerSettings::default());
    let before = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    let good = lrwn_join_request(dev.dev_eui, dev.app_key, 1);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "MalformedRequest"),
        (b"[1,2]".to_vec(), "MalformedRequest"),
        (
            br#"{"MessageType":"RejoinReq"}"#.to_vec(),
            "MalformedRequest",
        ),
        (br#"{"MessageType":"JoinReq"}"#.to_vec(), "MalformedRequest"),
        (
            join_req(&good[..10], dev.dev_eui, DEV_ADDR, 1),
            "MalformedRequest",
        ),
        (
            join_req(&good, dev_eui(99), DEV_ADDR, 1),
            "MalformedRequest",
        ),
        (join_req(&good, dev.dev_eui, "0102", 1), "MalformedRequest"),
        (
            join_req(
                &lrwn_join_request(dev_eui(99), dev.app_key, 1),
                dev_eui(99),
                DEV_ADDR,
                1,
            ),
            "UnknownDevEUI",
        ),
        (
            join_req(
                &lrwn_join_request(dev.dev_eui, [9; 16], 1),
                dev.dev_eui,
                DEV_ADDR,
                1,
            ),
            "MICFailed",
        ),
    ];
    for (body, code) in cases {
        let ans = js.handle(&body).await;
        assert_eq!(
            ans["Result"]["ResultCode"],
            code,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    let after = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(before.version, after.version, "refusals change nothing");
    assert_eq!(after.join_nonce, 0);
    let counts = server.metrics().join_requests();
    assert_eq!(counts.get("MICFailed"), Some(&1));
    assert_eq!(counts.get("UnknownDevEUI"), Some(&1));
}

/// One POST over HTTP/1.1 with the `Authorization` header value `authorization`; the status, the
/// response head and the body.
fn http_post(
    addr: std::net::SocketAddr,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let head = format!(
        "POST / HTTP/1.1\r\nHost: js\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bearer_token() {
    let (server, dev, _db) = setup(MacVersion::V1_0_3).await;
    let settings = JoinServerSettings {
        token: Some(zeroize::Zeroizing::new("s3cret".to_owned())),
        ..JoinServerSettings::default()
    };
    let router = lorapki_server::joinserver::router(Arc::new(js(&server, settings)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let body = join_req(
        &lrwn_join_request(dev.dev_eui, dev.app_key, 3),
        dev.dev_eui,
        DEV_ADDR,
        1,
    );
    let (no_token, wrong, right, oversize) = tokio::task::spawn_blocking(move || {
        (
            http_post(addr, None, &body),
            http_post(addr, Some("Bearer nope"), &body),
            http_post(addr, Some("Bearer s3cret"), &body),
            http_post(addr, Some("Bearer s3cret"), &vec![b' '; 20_000]).0,
        )
    })
    .await
    .unwrap();
    assert_eq!(no_token.0, 401);
    assert_eq!(wrong.0, 401);
    assert_eq!(right.0, 200);
    assert!(right.2.contains("\"Success\""), "{}", right.2);
    assert_eq!(oversize, 413);
    // The 401s are Backend Interfaces answers too (JSON, the transaction echoed), with the
    // challenge of RFC 6750 §3: no error code without credentials, invalid_token for a wrong one.
    for (answer, challenge) in [
        (&no_token, "www-authenticate: bearer\r\n"),
        (
            &wrong,
            "www-authenticate: bearer error=\"invalid_token\"\r\n",
        ),
    ] {
        let (_, head, body) = answer;
        assert!(head.contains(challenge), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(v["MessageType"], "JoinAns", "{v}");
        assert_eq!(v["TransactionID"], 1, "{v}");
        assert_eq!(v["Result"]["ResultCode"], "Other", "{v}");
        assert!(
            v["Result"]["Description"]
                .as_str()
                .unwrap()
                .contains("bearer token"),
            "{v}"
        );
    }
}

/// Auth schemes are case-insensitive (RFC 9110 §11.1) and the token follows 1*SP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive() {
    let (server, dev, _db) = setup(MacVersion::V1_0_3).await;
    let settings = JoinServerSettings {
        token: Some(zeroize::Zeroizing::new("s3cret".to_owned())),
        ..JoinServerSettings::default()
    };
    let js = js(&server, settings);
    for ok in [
        "Bearer s3cret",
        "bearer s3cret",
        "BEARER s3cret",
        "bEaReR s3cret",
        "Bearer   s3cret",
        "bearer s3cret ",
    ] {
        assert!(js.authorized(Some(ok)), "{ok:?} is accepted");
    }
    for refused in [
        "Bearer nope",
        "Bearer",
        "Bearer ",
        "Bearers3cret",
        "Basic s3cret",
        "Bearer s3cret2",
        "Bearer\ts3cret",
        "s3cret",
        "",
    ] {
        assert!(!js.authorized(Some(refused)), "{refused:?} is refused");
    }
    assert!(!js.authorized(None));
    let router = lorapki_server::joinserver::router(Arc::new(js));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let body = join_req(
        &lrwn_join_request(dev.dev_eui, dev.app_key, 3),
        dev.dev_eui,
        DEV_ADDR,
        1,
    );
    let (status, _, answer) =
        tokio::task::spawn_blocking(move || http_post(addr, Some("bearer   s3cret"), &body))
            .await
            .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"Success\""), "{answer}");
}
