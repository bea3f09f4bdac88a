//! The whole path through a real ChirpStack v4: devices on the real `lorawan-device` MAC join
//! with the factory key through ChirpStack and lorapki-server's join server, rekey over FPort 1
//! through ChirpStack's MQTT integration and device queue, rejoin under the new key, and send an
//! application uplink on another port that ChirpStack decrypts with the session keys of the new
//! AppKey.
//!
//! Needs `LORAPKI_TEST_CHIRPSTACK` (the ChirpStack binary), `redis-server` and `mosquitto`;
//! prints `SKIPPED` and passes without the binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lorapki_lorawan::Event;
use lorapki_netsim::region::Region;
use lorapki_proto::LorawanVersion;
use lorapki_server::config::Config;
use lorapki_server::{Store, app, registry, server};
use lorapki_testnet::chirpstack::{ChirpStack, CsRegion, JoinServerLink, Mac, binary, free_port};
use lorapki_testnet::gateway::{Air, GatewayConfig};
use lorapki_testnet::mac_device::{FACTORY_KEY, JOIN_EUI, OnAir, device_with_eui, factory_store};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

const GATEWAY: [u8; 8] = [0x00, 0x16, 0xc0, 0x01, 0xff, 0x10, 0xa2, 0x35];
const KEK_HEX: &str = "00112233445566778899aabbccddeeff";

fn dev_eui(i: u32) -> [u8; 8] {
    let mut eui = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x01, 0, 0];
    eui[6..].copy_from_slice(&u16::try_from(i).unwrap().to_be_bytes());
    eui
}

/// lorapki-server's configuration for this ChirpStack.
fn server_config(dir: &Path, mqtt_port: u16, js_port: u16, token: &str) -> Config {
    let text = format!(
        "[server]\nkey_file = \"{dir}/server-key.pem\"\nkek_file = \"{dir}/storage-kek.hex\"\n\
         runs_burst = 10\nuplinks_per_minute = 1000\nuplink_burst = 100\n\
         [database]\nurl = \"sqlite://{dir}/lorapki.db\"\n\
         [mqtt]\nserver = \"127.0.0.1:{mqtt_port}\"\nclient_id = \"lorapki-test\"\n\
         shared_group = \"lorapki\"\ntopic_prefix = \"application\"\n\
         [join_server]\nbind = \"127.0.0.1:{js_port}\"\ntoken = \"{token}\"\n\
         nwk_kek_label = \"ns-kek\"\nnwk_kek = \"{KEK_HEX}\"\n\
         [metrics]\nbind = \"127.0.0.1:{metrics}\"\n",
        dir = dir.display(),
        metrics = free_port(),
    );
    Config::parse(&text).unwrap()
}

/// Imports the devices as `lorapki-server devices import` does.
async fn import(config: &Config, csv: &str) {
    let store = Store::open(&config.database.url).await.unwrap();
    let kek = config.storage_kek().unwrap();
    let anchors = app::trust_anchors(config).unwrap();
    let mut parsed = registry::parse_file_with(
        "devices.csv",
        csv,
        &anchors,
        SystemTime::now(),
        &registry::ImportPolicy::default(),
    )
    .unwrap();
    let registered = store
        .devices_with_identities(&parsed.identities())
        .await
        .unwrap();
    registry::check_registered_identities(
        &registered,
        &mut parsed,
        &registry::ImportPolicy::default(),
    )
    .unwrap();
    store
        .import_devices(&parsed.devices, &kek, server::now_ms())
        .await
        .unwrap();
}

/// Application uplinks ChirpStack decrypted: (DevEUI hex, FPort, payload).
type Decrypted = Arc<Mutex<Vec<(String, u8, Vec<u8>)>>>;

async fn watch_integration(mqtt_port: u16) -> Decrypted {
    let seen: Decrypted = Arc::default();
    let mut options = MqttOptions::new("integration-watch", "127.0.0.1", mqtt_port);
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client
        .subscribe("application/+/device/+/event/up", QoS::AtLeastOnce)
        .await
        .unwrap();
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    let port = v["fPort"].as_u64().unwrap_or(0);
                    if port == 0 || port == 1 {
                        continue;
                    }
                    let data = v["data"].as_str().map(|d| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD
                            .decode(d)
                            .unwrap_or_default()
                    });
                    let dev = v["deviceInfo"]["devEui"].as_str().unwrap_or("").to_owned();
                    sink.lock().unwrap().push((
                        dev,
                        u8::try_from(port).unwrap(),
                        data.unwrap_or_default(),
                    ));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eu868_dr0_devices_rekey_through_a_real_chirpstack() {
    let Some(binary) = binary() else {
        println!("SKIPPED: a real ChirpStack (set LORAPKI_TEST_CHIRPSTACK)");
        return;
    };
    let devices: u32 = std::env::var("LORAPKI_TEST_CS_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let js_port = free_port();
    let token = "js-token-for-the-tests";
    let cs = ChirpStack::start(
        &binary,
        d,
        &JoinServerLink {
            join_eui_prefix: format!("{}/64", hex::encode(JOIN_EUI)),
            url: format!("http://127.0.0.1:{js_port}/"),
            token: token.to_owned(),
            kek_label: "ns-kek".to_owned(),
            kek_hex: KEK_HEX.to_owned(),
        },
    );
    let api = cs.api().await;
    let tenant = api.create_tenant("lorapki").await;
    let app_id = api.create_application(&tenant, "rekey").await;
    let profile = api
        .create_device_profile(&tenant, CsRegion::Eu868, Mac::V1_0_3)
        .await;
    api.create_gateway(&tenant, GATEWAY).await;

    // lorapki-server: its key, KEK, devices, then `serve`.
    let server_key = lorapki_server::identity::generate_file(&d.join("server-key.pem")).unwrap();
    std::fs::write(
        d.join("storage-kek.hex"),
        lorapki_server::StorageKek::generate_hex()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let config = server_config(d, cs.mqtt_port, js_port, token);
    let mut csv = String::from("dev_eui,join_eui,lorawan_version,app_key,identity_key\n");
    let mut on_air = Vec::new();
    for i in 1..=devices {
        let eui = dev_eui(i);
        let (device, persist, identity) = device_with_eui(
            eui,
            LorawanVersion::V1_0,
            Region::Eu868,
            0,
            u64::from(i),
            server_key.public(),
            factory_store(),
            Default::default(),
            |_| {},
        );
        csv.push_str(&format!(
            "{},{},1.0.3,{},{}\n",
            hex::encode(eui),
            hex::encode(JOIN_EUI),
            hex::encode(FACTORY_KEY),
            hex::encode(identity.as_bytes())
        ));
        api.create_device(&app_id, &profile, eui, JOIN_EUI).await;
        on_air.push(OnAir::new(device, persist, Region::Eu868).with_dev_eui(eui));
    }
    import(&config, &csv).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app::serve(config, async {
        let _ = stopped.await;
    }));
    let decrypted = watch_integration(cs.mqtt_port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let gateway = GatewayConfig::new("127.0.0.1", cs.mqtt_port, "eu868", GATEWAY, Region::Eu868);
    let mut air = Air::connect(gateway, on_air).await;
    let rekeyed = air
        .run_until(Duration::from_secs(600), |ds| {
            ds.iter().all(|d| d.saw(&Event::RekeyCompleted))
        })
        .await;
    let summary = |air: &Air<OnAir>| {
        let done = air
            .devices
            .iter()
            .filter(|d| d.saw(&Event::RekeyCompleted))
            .count();
        format!(
            "{done}/{devices} rekeyed; gateway {:?}; first device's events {:?}, errors {:?}\n\
             ChirpStack log:\n{}",
            air.stats,
            air.devices[0].events,
            air.devices[0].errors,
            cs.log_tail(40)
        )
    };
    assert!(rekeyed, "{}", summary(&air));
    for (i, device) in air.devices.iter_mut().enumerate() {
        device.queue_uplink(2, format!("after rekey {i}").as_bytes());
    }
    let sent = air
        .run_until(Duration::from_secs(120), |ds| {
            ds.iter().all(|d| !d.uplink_queued())
        })
        .await;
    assert!(sent, "{}", summary(&air));
    // The windows of the last uplinks close, ChirpStack publishes their events.
    air.run_until(Duration::from_secs(5), |_| false).await;
    let seen = decrypted.lock().unwrap().clone();
    for i in 1..=devices {
        let eui = hex::encode(dev_eui(i));
        let want = format!("after rekey {}", i - 1).into_bytes();
        assert!(
            seen.iter()
                .any(|(dev, port, data)| *dev == eui && *port == 2 && *data == want),
            "ChirpStack did not decrypt the application uplink of {eui}: {seen:?}\n{}",
            summary(&air)
        );
    }
    let answers = &air.stats.answer_ms;
    let data: Vec<f64> = answers
        .iter()
        .filter(|(_, join)| !join)
        .map(|(ms, _)| *ms)
        .collect();
    println!(
        "{devices} devices: {}; data answers {} (max {:.0} ms), rx1 {} rx2 {}",
        summary(&air).lines().next().unwrap(),
        data.len(),
        data.iter().copied().fold(0.0, f64::max),
        air.stats.rx1,
        air.stats.rx2
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
}
