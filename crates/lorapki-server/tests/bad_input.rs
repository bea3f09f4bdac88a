//! Bad input on every interface — MQTT uplink events, FPort-1 payloads, Backend Interfaces JSON,
//! CSV/JSON imports, the configuration file — gives a clear error, changes no state and never
//! panics (property tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, OnceLock};

use common::*;
use lorapki_server::config::Config;
use lorapki_server::joinserver::{JoinServer, JoinServerSettings};
use lorapki_server::registry::{TrustAnchors, parse_csv, parse_json};
use lorapki_server::{Error, KeyState, MacVersion, Server, chirpstack};
use proptest::prelude::*;

struct World {
    rt: tokio::runtime::Runtime,
    server: Arc<Server>,
    dev: lorapki_server::Eui64,
    app_key: [u8; 16],
    _db: Db,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = Db::sqlite();
        let key = server_key();
        let dev = SimDevice::new(1, MacVersion::V1_0_3, key.public());
        let server = rt.block_on(async {
            let server = server_on(&db, &[key], options()).await;
            import_devices(&server, std::slice::from_ref(&dev)).await;
            server
        });
        World {
            rt,
            server,
            dev: dev.dev_eui,
            app_key: dev.app_key,
            _db: db,
        }
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[0-9a-fA-F]{0,40}".prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("MessageType".to_owned()),
                    Just("PHYPayload".to_owned()),
                    Just("DevEUI".to_owned()),
                    Just("DevAddr".to_owned()),
                    Just("SenderID".to_owned()),
                    Just("DLSettings".to_owned()),
                    Just("RxDelay".to_owned()),
                    Just("CFList".to_owned()),
                    Just("deviceInfo".to_owned()),
                    Just("fPort".to_owned()),
                    Just("data".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mqtt_uplink_events_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = chirpstack::parse_uplink(&bytes);
    }

    #[test]
    fn mqtt_uplink_json_is_validated(v in json_value(), port in 0u32..4, data in ".{0,400}") {
        let mut event = serde_json::json!({
            "deviceInfo": {"applicationId": "a", "devEui": "70b3d57e00000001"},
            "fPort": port, "data": data,
        });
        if let serde_json::Value::Object(m) = &mut event && let serde_json::Value::Object(extra) = v {
            m.extend(extra);
        }
        match chirpstack::parse_uplink(event.to_string().as_bytes()) {
            Ok(u) => prop_assert!(u.fport1.as_ref().is_none_or(|p| !p.is_empty() && p.len() <= 242)),
            Err(Error::Malformed(m)) => prop_assert!(!m.is_empty()),
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    #[test]
    fn join_server_refuses_garbage_without_state_change(v in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let w = world();
        let js = JoinServer::new(Arc::clone(&w.server), JoinServerSettings::default());
        let before = w.rt.block_on(w.server.store().device(w.dev)).unwrap().unwrap().version;
        for body in [v.to_string().into_bytes(), raw] {
            let ans = w.rt.block_on(js.handle(&body));
            let code = ans["Result"]["ResultCode"].as_str().unwrap_or("");
            prop_assert!(code != "Success" && !code.is_empty(), "{ans}");
        }
        let after = w.rt.block_on(w.server.store().device(w.dev)).unwrap().unwrap().version;
        prop_assert_eq!(before, after);
    }

    #[test]
    fn join_server_mutated_requests(field in 0usize..6, value in json_value()) {
        let w = world();
        let js = JoinServer::new(Arc::clone(&w.server), JoinServerSettings::default());
        let mut phy = vec![0x00];
        phy.extend_from_slice(&lorapki_server::Eui64(JOIN_EUI).to_le_bytes());
        phy.extend_from_slice(&w.dev.to_le_bytes());
        phy.extend_from_slice(&[0, 0]);
        let mic = lorapki_server::lorawan::join_request_mic(
            &lorapki_crypto::AesKey::from_array([0xee; 16]), &phy);
        phy.extend_from_slice(&mic);
        let mut req: serde_json::Value =
            serde_json::from_slice(&join_req(&phy, w.dev, "01020304", 1)).unwrap();
        let names = ["PHYPayload", "DevEUI", "DevAddr", "SenderID", "DLSettings", "RxDelay"];
        req[names[field]] = value;
        let ans = w.rt.block_on(js.handle(req.to_string().as_bytes()));
        // The MIC is under a wrong key, so nothing can succeed.
        prop_assert_ne!(ans["Result"]["ResultCode"].as_str(), Some("Success"));
        let _ = w.app_key;
    }

    #[test]
    fn fport1_garbage_changes_no_key_state(payload in prop::collection::vec(any::<u8>(), 0..300)) {
        let w = world();
        let r = w.rt.block_on(w.server.handle_uplink(w.dev, &payload));
        if payload.is_empty() || payload.len() > 242 {
            prop_assert!(matches!(r, Err(Error::Malformed(_))));
        }
        let row = w.rt.block_on(w.server.store().device(w.dev)).unwrap().unwrap();
        prop_assert_eq!(row.key_state, KeyState::Factory);
    }

    #[test]
    fn csv_import_never_panics(text in ".{0,600}", header in any::<bool>()) {
        let text = if header {
            format!("dev_eui,join_eui,lorawan_version,app_key,identity_key\n{text}")
        } else {
            text
        };
        if let Err(e) = parse_csv(&text, &TrustAnchors::none(), now()) {
            let Error::Import(list) = e else { panic!("not an import error") };
            prop_assert!(!list.is_empty() && list.iter().all(|e| e.line >= 1 && !e.message.is_empty()));
        }
    }

    #[test]
    fn json_import_never_panics(v in json_value(), text in ".{0,200}") {
        for t in [v.to_string(), text] {
            if let Err(e) = parse_json(&t, &TrustAnchors::none(), now()) {
                let Error::Import(list) = e else { panic!("not an import error") };
                prop_assert!(!list.is_empty() && list.iter().all(|e| e.line >= 1));
            }
        }
    }

    #[test]
    fn config_never_panics(text in "(\\[[a-z_]{1,12}\\]\n)?([a-z_]{1,20} = (\"[^\"\n]{0,20}\"|[0-9]{1,6}|true)\n){0,6}") {
        if let Err(e) = Config::parse(&text) {
            prop_assert!(matches!(e, Error::Config(_) | Error::Key(_)));
        }
    }
}
