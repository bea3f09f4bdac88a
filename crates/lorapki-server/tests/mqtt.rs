//! End to end over a real mosquitto broker (`LORAPKI_TEST_MQTT=host:port`): simulated devices
//! publish ChirpStack v4 uplink events, the server's MQTT integration answers with downlink
//! commands, the devices rejoin through the join server, and every rekey completes — with one
//! instance on SQLite, and with two instances sharing the load (shared subscription) on
//! PostgreSQL when `LORAPKI_TEST_POSTGRES` is set. Prints the measured rekeys/s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use lorapki_server::chirpstack::{self, MqttSettings};
use lorapki_server::joinserver::{JoinServer, JoinServerSettings};
use lorapki_server::{Eui64, KeyState, MacVersion, Server};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

type Routes = Arc<Mutex<HashMap<Eui64, mpsc::UnboundedSender<Vec<u8>>>>>;

fn broker() -> (String, u16) {
    let v = std::env::var("LORAPKI_TEST_MQTT").unwrap();
    let (h, p) = v.rsplit_once(':').unwrap();
    (h.to_owned(), p.parse().unwrap())
}

/// Server-side and device-side CPU time per rekey, measured uncontended on one thread with
/// the same code (a bare `ServerEndpoint` and simulated devices, no I/O): the crypto-bound
/// ceiling of one core.
fn calibrate(rekeys: u32) -> (f64, f64) {
    use lorapki_crypto::KeySlot;
    use lorapki_proto::{ServerConfig, ServerEndpoint};
    let key = server_key();
    let mut backend = lorapki_crypto_soft::SoftBackend::new(getrandom::SysRng);
    key.install(&mut backend, KeySlot(0)).unwrap();
    let mut endpoint =
        ServerEndpoint::new(&mut backend, ServerConfig::new(KeySlot(0), key.public()));
    let (mut server_time, mut device_time) = (Duration::ZERO, Duration::ZERO);
    for i in 0..rekeys {
        let mut dev = SimDevice::new(10_000 + i, MacVersion::V1_0_4, key.public());
        let record = lorapki_proto::DeviceRecord {
            dev_eui: dev.dev_eui.0,
            join_eui: JOIN_EUI,
            lorawan: dev.mac.lorawan(),
            identity: dev.identity,
        };
        let t = Instant::now();
        dev.start();
        device_time += t.elapsed();
        while dev.session.join_key().is_none() {
            let t = Instant::now();
            let up = dev.uplink(51).unwrap();
            device_time += t.elapsed();
            let t = Instant::now();
            let now = lorapki_proto::Instant::from_millis(1);
            let _ = endpoint.handle_uplink(&mut backend, now, &dev.dev_eui.0, Some(&record), &up);
            let mut buf = [0u8; 242];
            let down = endpoint
                .poll_transmit(&dev.dev_eui.0, 51, &mut buf)
                .unwrap();
            while endpoint.poll_event().is_some() {}
            server_time += t.elapsed();
            if let Some(d) = down {
                let t = Instant::now();
                dev.downlink(&buf[..d.len]);
                device_time += t.elapsed();
            }
        }
        endpoint.forget(&dev.dev_eui.0);
    }
    (
        server_time.as_secs_f64() / f64::from(rekeys),
        device_time.as_secs_f64() / f64::from(rekeys),
    )
}

struct Outcome {
    completed: usize,
    wall: f64,
}

/// The devices' side of the broker: a client subscribed to every downlink command under
/// `prefix`, routing each downlink's FRMPayload to the channel registered for its DevEUI.
/// Publishes up to 2 MiB (the oversize tests need it).
async fn device_side(prefix: &str) -> (AsyncClient, Routes) {
    let (host, port) = broker();
    let mut opts = MqttOptions::new(format!("{prefix}-sim"), host, port);
    opts.set_max_packet_size(2 << 20, 2 << 20);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    let routes: Routes = Arc::new(Mutex::new(HashMap::new()));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    {
        let routes = Arc::clone(&routes);
        let client = client.clone();
        let filter = format!("{prefix}/+/device/+/command/down");
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .subscribe(filter.clone(), QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                        assert_eq!(v["fPort"], 1);
                        let dev: Eui64 = v["devEui"].as_str().unwrap().parse().unwrap();
                        assert!(p.topic.contains(&dev.to_string()), "{}", p.topic);
                        let data = base64::engine::general_purpose::STANDARD
                            .decode(v["data"].as_str().unwrap())
                            .unwrap();
                        if let Some(tx) = routes.lock().unwrap().get(&dev) {
                            let _ = tx.send(data);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
    }
    ready_rx.recv().await.unwrap();
    (client, routes)
}

/// A ChirpStack v4 uplink event of `dev_eui` carrying `frame` on FPort 1.
fn uplink_event(dev_eui: Eui64, fcnt: u32, frame: &[u8]) -> String {
    serde_json::json!({
        "deduplicationId": format!("{dev_eui}-{fcnt}"),
        "time": "2026-01-01T00:00:00Z",
        "deviceInfo": {"tenantId": "t", "tenantName": "t", "applicationId": "app-1",
            "applicationName": "a", "deviceProfileId": "p", "deviceProfileName": "p",
            "deviceName": "d", "devEui": dev_eui.to_string(), "tags": {}},
        "devAddr": "26000001", "adr": true, "dr": 0, "fCnt": fcnt, "fPort": 1,
        "confirmed": false,
        "data": base64::engine::general_purpose::STANDARD.encode(frame),
        "rxInfo": [], "txInfo": {"frequency": 868100000}
    })
    .to_string()
}

async fn run_devices(servers: &[Arc<Server>], prefix: &str, devices: Vec<SimDevice>) -> Outcome {
    let (client, routes) = device_side(prefix).await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut dev) in devices.into_iter().enumerate() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        routes.lock().unwrap().insert(dev.dev_eui, tx);
        let client = client.clone();
        let prefix = prefix.to_owned();
        let js = JoinServer::new(
            Arc::clone(&servers[i % servers.len()]),
            JoinServerSettings::default(),
        );
        tasks.spawn(async move {
            dev.start();
            let mut fcnt = 0u32;
            let mut steps = 0;
            while !dev.completed {
                steps += 1;
                assert!(steps < 60, "{} stuck: {:?}", dev.dev_eui, dev.failures);
                assert!(dev.failures.is_empty(), "{:?}", dev.failures);
                if let Some((slot, phy)) = dev.join_request() {
                    let body = join_req(&phy, dev.dev_eui, "26000001", steps);
                    let ans = js.handle(&body).await;
                    let accept = join_ans_phy(&ans).ok();
                    dev.join_result(slot, accept.as_deref());
                    continue;
                }
                let up = dev.uplink(51).expect("device has something to send");
                fcnt += 1;
                let event = uplink_event(dev.dev_eui, fcnt, &up);
                let topic = format!("{prefix}/app-1/device/{}/event/up", dev.dev_eui);
                client
                    .publish(topic, QoS::AtLeastOnce, false, event)
                    .await
                    .unwrap();
                if let Ok(Some(down)) =
                    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await
                {
                    dev.downlink(&down);
                }
            }
            dev.dev_eui
        });
    }
    let mut completed = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
        completed += 1;
    }
    let wall = started.elapsed().as_secs_f64();
    Outcome { completed, wall }
}

async fn scenario(db: Db, instances: usize, count: u32) {
    let prefix = format!("lpk{}{}", std::process::id(), db.name());
    let key = server_key();
    let keys = [key];
    let devices: Vec<SimDevice> = (1..=count)
        .map(|i| SimDevice::new(i, MacVersion::V1_0_4, keys[0].public()))
        .collect();
    let servers = servers_with_devices(&db, &keys, instances, &devices).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (host, port) = broker();
    let mut runs = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let mut settings = MqttSettings::new(&host, port, &format!("{prefix}-server-{i}"));
        settings.topic_prefix.clone_from(&prefix);
        settings.shared_group = Some(format!("{prefix}-group"));
        runs.push(tokio::spawn(chirpstack::run(
            Arc::clone(server),
            settings,
            stop_rx.clone(),
        )));
    }
    // Let the servers subscribe before the first uplink.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dev_euis: Vec<Eui64> = devices.iter().map(|d| d.dev_eui).collect();
    let out = run_devices(&servers, &prefix, devices).await;
    stop_tx.send(true).unwrap();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    assert_eq!(out.completed, count as usize);
    for dev in &dev_euis {
        let row = servers[0].store().device(*dev).await.unwrap().unwrap();
        assert_eq!(row.key_state, KeyState::ActiveNew);
    }
    let completed: u64 = servers.iter().map(|s| s.metrics().completed()).sum();
    assert_eq!(completed, u64::from(count));
    let cores = std::thread::available_parallelism().map_or(2, usize::from) as f64;
    let per_instance: Vec<u64> = servers.iter().map(|s| s.metrics().started()).collect();
    let (server_cost, device_cost) = calibrate(count.clamp(10, 100));
    let n = f64::from(count);
    // The simulated devices run on the same cores: their CPU is taken out of the capacity.
    let server_capacity = (out.wall * cores - n * device_cost).max(1e-9);
    println!(
        "MEASURE {} instances={instances} rekeys={count} wall={:.2}s end-to-end={:.1} rekeys/s \
         = {:.1} rekeys/s/core over {cores} cores (simulated devices included), \
         {:.1} rekeys/s/core of server-side capacity (device CPU {:.1} ms/rekey excluded); \
         crypto-bound ceiling {:.1} rekeys/s/core (server {:.1} ms/rekey); runs per instance \
         {per_instance:?}",
        db.name(),
        out.wall,
        n / out.wall,
        n / out.wall / cores,
        n / server_capacity,
        device_cost * 1e3,
        1.0 / server_cost,
        server_cost * 1e3,
    );
}

/// Rekeys per scenario: 60, or `LORAPKI_TEST_REKEYS` for a longer measurement.
fn rekeys() -> u32 {
    std::env::var("LORAPKI_TEST_REKEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_rekeys_sqlite() {
    if skip("LORAPKI_TEST_MQTT", "rekeys over mosquitto") {
        return;
    }
    scenario(Db::sqlite(), 1, rekeys()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_rekeys_postgres_two_instances() {
    if skip("LORAPKI_TEST_MQTT", "rekeys over mosquitto")
        || skip(
            "LORAPKI_TEST_POSTGRES",
            "two instances on PostgreSQL over mosquitto",
        )
    {
        return;
    }
    let _lock = PG_LOCK.lock().await;
    let db = Db::postgres().await.unwrap();
    reset_postgres(&db.url()).await;
    scenario(db, 2, rekeys()).await;
}

/// Messages that anyone allowed to publish on the uplink topic may send — 1 MB live and
/// retained, 100 KB, a retained copy of a genuine event, an event whose topic names another
/// device than its payload — are dropped (and counted where they reach the server), and cost
/// neither the connection nor the genuine uplinks around them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_hostile_messages_cost_no_uplinks() {
    if skip("LORAPKI_TEST_MQTT", "hostile messages over mosquitto") {
        return;
    }
    const GENUINE: u32 = 30;
    let prefix = format!("lpk{}hostile", std::process::id());
    let keys = [server_key()];
    let mut devices: Vec<SimDevice> = (1..=GENUINE + 2)
        .map(|i| SimDevice::new(i, MacVersion::V1_0_4, keys[0].public()))
        .collect();
    let servers = servers_with_devices(&Db::sqlite(), &keys, 1, &devices).await;
    let server = &servers[0];
    let (client, routes) = device_side(&prefix).await;
    let topic = |dev: &str| format!("{prefix}/app-1/device/{dev}/event/up");
    let victim = devices[0].dev_eui.to_string();
    let big = vec![b'x'; 1_000_000];
    // Retained before the server subscribes: the broker offers it at every subscription.
    client
        .publish(topic(&victim), QoS::AtLeastOnce, true, big.clone())
        .await
        .unwrap();
    // A retained copy of a genuine event is a replay, not a live uplink: never served.
    let mut replayed = devices.pop().unwrap();
    replayed.start();
    let replayed_topic = topic(&replayed.dev_eui.to_string());
    let (tx, mut replayed_rx) = mpsc::unbounded_channel();
    routes.lock().unwrap().insert(replayed.dev_eui, tx);
    client
        .publish(
            replayed_topic.clone(),
            QoS::AtLeastOnce,
            true,
            uplink_event(replayed.dev_eui, 1, &replayed.uplink(51).unwrap()),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (host, port) = broker();
    let mut settings = MqttSettings::new(&host, port, &format!("{prefix}-server"));
    settings.topic_prefix.clone_from(&prefix);
    settings.shared_group = Some(format!("{prefix}-group"));
    let run = tokio::spawn(chirpstack::run(Arc::clone(server), settings, stop_rx));
    tokio::time::sleep(Duration::from_millis(500)).await;

    client
        .publish(topic(&victim), QoS::AtLeastOnce, false, big.clone())
        .await
        .unwrap();
    client
        .publish(topic(&victim), QoS::AtLeastOnce, false, vec![b'{'; 100_000])
        .await
        .unwrap();
    // A genuine frame of the last device, on a topic naming another device.
    let mut stray = devices.pop().unwrap();
    stray.start();
    let (tx, mut stray_rx) = mpsc::unbounded_channel();
    routes.lock().unwrap().insert(stray.dev_eui, tx);
    client
        .publish(
            topic(&victim),
            QoS::AtLeastOnce,
            false,
            uplink_event(stray.dev_eui, 1, &stray.uplink(51).unwrap()),
        )
        .await
        .unwrap();

    // An unregistered device's PubKeyReq: answered with an Abort.
    devices.push(SimDevice::new(999, MacVersion::V1_0_4, keys[0].public()));

    let mut answers = tokio::task::JoinSet::new();
    for mut dev in devices {
        let (tx, mut rx) = mpsc::unbounded_channel();
        routes.lock().unwrap().insert(dev.dev_eui, tx);
        dev.start();
        let event = uplink_event(dev.dev_eui, 1, &dev.uplink(51).unwrap());
        client
            .publish(
                topic(&dev.dev_eui.to_string()),
                QoS::AtLeastOnce,
                false,
                event,
            )
            .await
            .unwrap();
        answers.spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .ok()
                .flatten()
                .is_some()
        });
    }
    let mut answered = 0;
    while let Some(r) = answers.join_next().await {
        answered += u32::from(r.unwrap());
    }
    let stray_answered = stray_rx.try_recv().is_ok();
    let replay_answered = replayed_rx.try_recv().is_ok();
    // Leave no retained message behind on the broker.
    for t in [topic(&victim), replayed_topic] {
        client
            .publish(t, QoS::AtLeastOnce, true, Vec::new())
            .await
            .unwrap();
    }
    stop_tx.send(true).unwrap();
    run.await.unwrap().unwrap();

    println!("{}", server.metrics().render());
    assert_eq!(answered, GENUINE + 1, "genuine uplinks answered");
    assert!(
        !stray_answered,
        "an event on another device's topic was served"
    );
    assert!(!replay_answered, "a retained event was served");
    assert_eq!(sample(server, "lorapki_mqtt_connections_total"), 1);
    assert_eq!(sample(server, "lorapki_mqtt_connection_errors_total"), 0);
    assert_eq!(
        sample(server, "lorapki_mqtt_dropped_total{reason=\"oversize\"}"),
        1,
        "the 100 KB message (the 1 MB ones the broker discards)"
    );
    assert_eq!(
        sample(
            server,
            "lorapki_mqtt_dropped_total{reason=\"topic-mismatch\"}"
        ),
        1
    );
    assert_eq!(
        sample(server, "lorapki_uplinks_total{outcome=\"accepted\"}"),
        u64::from(GENUINE)
    );
    assert_eq!(
        sample(server, "lorapki_downlinks_total{kind=\"answer\"}"),
        u64::from(GENUINE)
    );
    assert_eq!(sample(server, "lorapki_downlinks_total{kind=\"abort\"}"), 1);
}
