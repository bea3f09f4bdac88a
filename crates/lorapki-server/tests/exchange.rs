//! Full rekeys through the server core and the join server, in process: one instance, an instance
//! restarted between every two frames, and two instances on one database taking turns — on
//! SQLite, and on PostgreSQL when `LORAPKI_TEST_POSTGRES` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use lorapki_crypto::RootKeySlot;
use lorapki_server::joinserver::{JoinServer, JoinServerSettings};
use lorapki_server::lorawan::{MacVersion, join_request_mic};
use lorapki_server::{Eui64, KeyState, Server, ServerKey};

fn js(server: &Arc<Server>) -> JoinServer {
    JoinServer::new(Arc::clone(server), JoinServerSettings::default())
}

/// A JoinRequest MIC'd under a raw key.
fn raw_join_request(dev: Eui64, key: [u8; 16], dev_nonce: u16) -> Vec<u8> {
    let mut phy = vec![0x00];
    phy.extend_from_slice(&Eui64(JOIN_EUI).to_le_bytes());
    phy.extend_from_slice(&dev.to_le_bytes());
    phy.extend_from_slice(&dev_nonce.to_le_bytes());
    let mic = join_request_mic(&lorapki_crypto::AesKey::from_array(key), &phy);
    phy.extend_from_slice(&mic);
    phy
}

/// Drives every device to completion; frames go to `servers[turn % len]` and, when `restart` is
/// given, the server list is rebuilt before every frame.
async fn drive(
    db: &Db,
    keys: &[ServerKey],
    servers: &mut Vec<Arc<Server>>,
    devices: &mut [SimDevice],
    restart: bool,
) {
    let mut turn = 0usize;
    for dev in devices.iter_mut() {
        dev.start();
        let mut steps = 0;
        while !dev.completed {
            steps += 1;
            assert!(
                steps < 100,
                "device {} stuck: {:?}",
                dev.dev_eui,
                dev.failures
            );
            assert!(dev.failures.is_empty(), "{:?}", dev.failures);
            if restart {
                let fresh = server_on(db, &keys[..1], options()).await;
                servers.clear();
                servers.push(fresh);
            }
            let server = Arc::clone(&servers[turn % servers.len()]);
            turn += 1;
            if let Some((slot, phy)) = dev.join_request() {
                let body = join_req(&phy, dev.dev_eui, "01020304", turn as u32);
                let ans = js(&server).handle(&body).await;
                let accept = join_ans_phy(&ans).ok();
                dev.join_result(slot, accept.as_deref());
                continue;
            }
            let up = dev.uplink(51).expect("device has something to send");
            if let Some(down) = server.handle_uplink(dev.dev_eui, &up).await.unwrap() {
                dev.downlink(&down);
            }
        }
    }
}

async fn check_completed(server: &Arc<Server>, devices: &mut [SimDevice]) {
    for dev in devices.iter_mut() {
        let row = server.store().device(dev.dev_eui).await.unwrap().unwrap();
        assert_eq!(row.key_state, KeyState::ActiveNew, "{}", dev.dev_eui);
        assert_eq!(row.generation, 1);
        assert!(row.staged_keys.is_none());
        // The old (factory) key is retired: MICFailed.
        let old = raw_join_request(dev.dev_eui, dev.nwk_key.unwrap_or(dev.app_key), 1000);
        let ans = js(server)
            .handle(&join_req(&old, dev.dev_eui, "01020305", 1))
            .await;
        assert_eq!(join_ans_phy(&ans), Err("MICFailed".into()));
        // The new key (the device's active one) is accepted.
        let (slot, phy) = {
            // A JoinRequest under the device's (new) active key.
            let mut phy = vec![0x00];
            phy.extend_from_slice(&Eui64(JOIN_EUI).to_le_bytes());
            phy.extend_from_slice(&dev.dev_eui.to_le_bytes());
            dev.dev_nonce += 1;
            phy.extend_from_slice(&dev.dev_nonce.to_le_bytes());
            use lorapki_crypto::{RootKeyKind, RootKeyStore};
            let which = if dev.mac == MacVersion::V1_1 {
                RootKeyKind::NwkKey
            } else {
                RootKeyKind::AppKey
            };
            let mic = dev
                .keys
                .root_cmac(RootKeySlot::Active, which, &[&phy])
                .unwrap();
            phy.extend_from_slice(&mic[..4]);
            (RootKeySlot::Active, phy)
        };
        let ans = js(server)
            .handle(&join_req(&phy, dev.dev_eui, "01020306", 2))
            .await;
        let accept = join_ans_phy(&ans).unwrap();
        assert!(dev.accept_verifies(slot, &accept));
        let history = server.store().key_history(dev.dev_eui).await.unwrap();
        let events: Vec<&str> = history.iter().map(|(_, e)| e.as_str()).collect();
        assert_eq!(events, ["staged", "retired", "activated"], "{history:?}");
    }
    let m = server.metrics();
    assert!(m.completed() >= 1);
}

async fn scenario(db: Db, restart: bool, instances: usize, mac: MacVersion) {
    let key = server_key();
    let keys = [key];
    let mut devices: Vec<SimDevice> = (1..=3)
        .map(|i| SimDevice::new(i, mac, keys[0].public()))
        .collect();
    let mut servers = servers_with_devices(&db, &keys, instances, &devices).await;
    drive(&db, &keys, &mut servers, &mut devices, restart).await;
    let last = Arc::clone(servers.last().unwrap());
    check_completed(&last, &mut devices[..1]).await;
    println!(
        "{}: {} devices rekeyed (restart {restart}, {instances} instances, {mac})",
        db.name(),
        devices.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_rekeys() {
    scenario(Db::sqlite(), false, 1, MacVersion::V1_0_3).await;
    scenario(Db::sqlite(), false, 1, MacVersion::V1_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restart_between_every_frame() {
    scenario(Db::sqlite(), true, 1, MacVersion::V1_0_4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_instances_alternating() {
    scenario(Db::sqlite(), false, 2, MacVersion::V1_0_3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances_alternating() {
    let Some((db, _lock)) = postgres_for("PostgreSQL two-instance rekeys").await else {
        return;
    };
    scenario(db.clone(), false, 2, MacVersion::V1_0_3).await;
    reset_postgres(&db.url()).await;
    scenario(db, true, 1, MacVersion::V1_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Finding 3: no bound spans devices. A pending run of one device (an attacker's, from a leaked
/// factory database) never refuses another device's run; before the revision a store-wide
/// pending bound did. Idle runs still expire.
async fn idle_runs_expire_and_one_devices_run_never_refuses_another() {
    let db = Db::sqlite();
    let keys = [server_key()];
    let mut opts = options();
    opts.idle_timeout = std::time::Duration::from_millis(300);
    let server = server_on(&db, &keys, opts).await;
    let mut a = SimDevice::new(1, MacVersion::V1_0_3, keys[0].public());
    let mut b = SimDevice::new(2, MacVersion::V1_0_3, keys[0].public());
    let records = [(1, a.record()), (2, b.record())];
    server
        .store()
        .import_devices(&records, &kek(), 0)
        .await
        .unwrap();
    a.start();
    b.start();
    let up = a.uplink(51).unwrap();
    assert!(
        server
            .handle_uplink(a.dev_eui, &up)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(server.refresh_pending().await.unwrap(), 1);
    // A second device's PubKeyReq is answered (PubKeyAns, CID 0x02) while the first run is
    // pending.
    let up = b.uplink(51).unwrap();
    let down = server.handle_uplink(b.dev_eui, &up).await.unwrap().unwrap();
    assert_eq!(down[0], 0x02, "PubKeyAns");
    assert_eq!(server.refresh_pending().await.unwrap(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(server.expire_due().await.unwrap(), 2);
    assert_eq!(server.refresh_pending().await.unwrap(), 0);
    assert_eq!(server.metrics().failed().get("expired"), Some(&2));
    assert!(
        server
            .metrics()
            .render()
            .contains("lorapki_rekeys_failed_total{reason=\"expired\"} 2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_devices_cost_no_key_work() {
    let db = Db::sqlite();
    let keys = [server_key()];
    let server = server_on(&db, &keys, options()).await;
    let mut stranger = SimDevice::new(77, MacVersion::V1_0_3, keys[0].public());
    stranger.start();
    let up = stranger.uplink(51).unwrap();
    let down = server
        .handle_uplink(stranger.dev_eui, &up)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((down[0], down[2]), (0x07, 0x02), "Abort(UnknownDevice)");
    assert!(
        server
            .metrics()
            .render()
            .contains("lorapki_key_work_total 0")
    );
    assert!(
        server
            .store()
            .session(stranger.dev_eui)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_key_rotation_serves_devices_pinned_to_either_key() {
    let db = Db::sqlite();
    let keys = [server_key(), server_key()];
    let server = server_on(&db, &keys, options()).await;
    let mut old = SimDevice::new(1, MacVersion::V1_0_3, keys[0].public());
    let mut new = SimDevice::new(2, MacVersion::V1_0_3, keys[1].public());
    let mut pinned_to_second = new.record();
    pinned_to_second.server_key_id = Some(keys[1].key_id());
    let records = [(1, old.record()), (2, pinned_to_second)];
    server
        .store()
        .import_devices(&records, &kek(), 0)
        .await
        .unwrap();
    for dev in [&mut old, &mut new] {
        exchange_until_rejoin(&server, dev).await;
        assert!(dev.failures.is_empty(), "{:?}", dev.failures);
    }
    // A device registered with the other key than the one it pinned: the transcripts differ (they
    // bind the server key id), so the server rejects SIG_D and nothing is staged. The rejection
    // is unauthenticated, so the device does not end its run on it (PROTOCOL.md §7): the run
    // ends on the 8-uplink rule.
    let mut wrong = SimDevice::new(3, MacVersion::V1_0_3, keys[1].public());
    server
        .store()
        .import_devices(&[(3, wrong.record())], &kek(), 0)
        .await
        .unwrap();
    wrong.start();
    while wrong.failures.is_empty() {
        let up = wrong.uplink(51).unwrap();
        if let Some(d) = server.handle_uplink(wrong.dev_eui, &up).await.unwrap() {
            wrong.downlink(&d);
        }
    }
    assert_eq!(wrong.failures, [lorapki_proto::FailReason::NoAnswer]);
    let row = server.store().device(wrong.dev_eui).await.unwrap().unwrap();
    assert_eq!(row.key_state, KeyState::Factory);
}
