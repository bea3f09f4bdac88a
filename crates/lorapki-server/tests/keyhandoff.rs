//! The hand-off of new root keys to ChirpStack's key store (feature `chirpstack-grpc`), against a
//! fake ChirpStack `DeviceService` built from the same `chirpstack_api` definitions: ChirpStack is
//! switched to the new key only on the device's first JoinRequest under it (reported as an
//! `UPLINK_MIC` log event), a join under the factory key strands nothing, a MIC failure raced
//! against a join's activation cannot split the two key stores, and a successful join under the
//! new key activates it.
#![cfg(feature = "chirpstack-grpc")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use lorapki_crypto::{AesKey, RootKeyKind, RootKeySlot, RootKeyStore};
use lorapki_server::keyhandoff::chirpstack_api::api::device_service_server::{
    DeviceService, DeviceServiceServer,
};
use lorapki_server::keyhandoff::chirpstack_api::api::*;
use lorapki_server::keyhandoff::tonic;
use lorapki_server::keyhandoff::{KeyHandoff, MicOutcome};
use lorapki_server::lorawan::join_request_mic;
use lorapki_server::{KeyState, MacVersion};
use tonic::{Request, Response, Status};

const TOKEN: &str = "t0k3n";

#[derive(Default, Clone)]
struct FakeChirpStack {
    keys: Arc<Mutex<HashMap<String, DeviceKeys>>>,
    updates: Arc<Mutex<u32>>,
    /// How long `GetKeys` takes (to open the window between reading a key and acting on it).
    get_delay: Arc<Mutex<std::time::Duration>>,
}

fn authorized<T>(r: &Request<T>) -> Result<(), Status> {
    match r
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        Some(v) if v == format!("Bearer {TOKEN}") => Ok(()),
        _ => Err(Status::unauthenticated("bad token")),
    }
}

type R<T> = Result<Response<T>, Status>;

fn no<T>() -> R<T> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl DeviceService for FakeChirpStack {
    async fn create(&self, _: Request<CreateDeviceRequest>) -> R<()> {
        no()
    }
    async fn get(&self, _: Request<GetDeviceRequest>) -> R<GetDeviceResponse> {
        no()
    }
    async fn update(&self, _: Request<UpdateDeviceRequest>) -> R<()> {
        no()
    }
    async fn delete(&self, _: Request<DeleteDeviceRequest>) -> R<()> {
        no()
    }
    async fn list(&self, _: Request<ListDevicesRequest>) -> R<ListDevicesResponse> {
        no()
    }
    async fn create_keys(&self, r: Request<CreateDeviceKeysRequest>) -> R<()> {
        authorized(&r)?;
        let k = r.into_inner().device_keys.unwrap();
        self.keys.lock().unwrap().insert(k.dev_eui.clone(), k);
        Ok(Response::new(()))
    }
    async fn get_keys(&self, r: Request<GetDeviceKeysRequest>) -> R<GetDeviceKeysResponse> {
        authorized(&r)?;
        let delay = *self.get_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let dev = r.into_inner().dev_eui;
        let keys = self.keys.lock().unwrap().get(&dev).cloned();
        match keys {
            Some(k) => Ok(Response::new(GetDeviceKeysResponse {
                device_keys: Some(k),
                created_at: None,
                updated_at: None,
            })),
            None => Err(Status::not_found("no keys")),
        }
    }
    async fn update_keys(&self, r: Request<UpdateDeviceKeysRequest>) -> R<()> {
        authorized(&r)?;
        let k = r.into_inner().device_keys.unwrap();
        assert_eq!(k.nwk_key.len(), 32);
        assert_eq!(k.app_key.len(), 32);
        self.keys.lock().unwrap().insert(k.dev_eui.clone(), k);
        *self.updates.lock().unwrap() += 1;
        Ok(Response::new(()))
    }
    async fn delete_keys(&self, _: Request<DeleteDeviceKeysRequest>) -> R<()> {
        no()
    }
    async fn flush_dev_nonces(&self, _: Request<FlushDevNoncesRequest>) -> R<()> {
        no()
    }
    async fn activate(&self, _: Request<ActivateDeviceRequest>) -> R<()> {
        no()
    }
    async fn deactivate(&self, _: Request<DeactivateDeviceRequest>) -> R<()> {
        no()
    }
    async fn get_activation(
        &self,
        _: Request<GetDeviceActivationRequest>,
    ) -> R<GetDeviceActivationResponse> {
        no()
    }
    async fn get_random_dev_addr(
        &self,
        _: Request<GetRandomDevAddrRequest>,
    ) -> R<GetRandomDevAddrResponse> {
        no()
    }
    async fn get_metrics(
        &self,
        _: Request<GetDeviceMetricsRequest>,
    ) -> R<GetDeviceMetricsResponse> {
        no()
    }
    async fn get_link_metrics(
        &self,
        _: Request<GetDeviceLinkMetricsRequest>,
    ) -> R<GetDeviceLinkMetricsResponse> {
        no()
    }
    async fn enqueue(
        &self,
        _: Request<EnqueueDeviceQueueItemRequest>,
    ) -> R<EnqueueDeviceQueueItemResponse> {
        no()
    }
    async fn flush_queue(&self, _: Request<FlushDeviceQueueRequest>) -> R<()> {
        no()
    }
    async fn get_queue(
        &self,
        _: Request<GetDeviceQueueItemsRequest>,
    ) -> R<GetDeviceQueueItemsResponse> {
        no()
    }
    async fn get_next_f_cnt_down(
        &self,
        _: Request<GetDeviceNextFCntDownRequest>,
    ) -> R<GetDeviceNextFCntDownResponse> {
        no()
    }
}

async fn start_fake() -> (FakeChirpStack, String) {
    let fake = FakeChirpStack::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let service = DeviceServiceServer::new(fake.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(addr)
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    (fake, format!("http://{addr}"))
}

/// ChirpStack's join check: the JoinRequest's MIC under the key it holds.
fn chirpstack_accepts(fake: &FakeChirpStack, dev: &SimDevice, phy: &[u8]) -> bool {
    let keys = fake.keys.lock().unwrap();
    let k = keys.get(&dev.dev_eui.to_string()).unwrap();
    let mut key = [0u8; 16];
    hex::decode_to_slice(&k.nwk_key, &mut key).unwrap();
    join_request_mic(&AesKey::from_array(key), &phy[..19]) == phy[19..23]
}

/// Whether the device holds the key ChirpStack holds (the device can still join).
fn not_stranded(fake: &FakeChirpStack, dev: &mut SimDevice) -> bool {
    let held = fake.keys.lock().unwrap()[&dev.dev_eui.to_string()]
        .nwk_key
        .clone();
    let mut key = [0u8; 16];
    hex::decode_to_slice(&held, &mut key).unwrap();
    let probe = [b"probe".as_slice()];
    let want = lorapki_server::lorawan::join_request_mic(&AesKey::from_array(key), b"probe");
    [RootKeySlot::Active, RootKeySlot::Staged]
        .into_iter()
        .any(|slot| {
            dev.keys
                .root_cmac(slot, RootKeyKind::AppKey, &probe)
                .is_ok_and(|m| m[..4] == want)
        })
}

async fn setup() -> (
    Arc<lorapki_server::Server>,
    SimDevice,
    FakeChirpStack,
    KeyHandoff,
    Db,
) {
    let (fake, url) = start_fake().await;
    let db = Db::sqlite();
    let key = server_key();
    let dev = SimDevice::new(1, MacVersion::V1_0_3, key.public());
    let server = server_on(&db, &[key], options()).await;
    import_devices(&server, std::slice::from_ref(&dev)).await;
    // ChirpStack holds the factory key (AppKey in nwk_key for LoRaWAN 1.0.x).
    fake.keys.lock().unwrap().insert(
        dev.dev_eui.to_string(),
        DeviceKeys {
            dev_eui: dev.dev_eui.to_string(),
            nwk_key: hex::encode(dev.app_key),
            app_key: "0".repeat(32),
            gen_app_key: String::new(),
        },
    );
    let handoff = KeyHandoff::new(
        Arc::clone(&server),
        &url,
        Some(zeroize::Zeroizing::new(TOKEN.to_owned())),
        None,
    )
    .unwrap();
    (server, dev, fake, handoff, db)
}

/// What happens to one join attempt on the air.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delivered,
    /// The JoinRequest never reaches ChirpStack.
    RequestLost,
}

/// One join attempt of the device at ChirpStack, with the hand-off reacting to its events.
async fn attempt(
    fake: &FakeChirpStack,
    handoff: &KeyHandoff,
    dev: &mut SimDevice,
    fate: Fate,
) -> RootKeySlot {
    let (slot, phy) = dev.join_request().unwrap();
    let joined = fate == Fate::Delivered && chirpstack_accepts(fake, dev, &phy);
    if fate == Fate::RequestLost {
        // No event at all.
    } else if joined {
        // ChirpStack publishes the join event.
        handoff.on_join(dev.dev_eui).await.unwrap();
    } else {
        // ChirpStack publishes an UPLINK_MIC log event.
        handoff.on_mic_failure(dev.dev_eui).await.unwrap();
    }
    dev.session
        .handle_join_result(&mut dev.backend, dev.now, slot, joined)
        .unwrap();
    dev.drain();
    assert!(
        not_stranded(fake, dev),
        "device stranded after a {slot:?} attempt"
    );
    slot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chirpstack_switches_on_the_first_join_under_the_new_key() {
    let (server, mut dev, fake, handoff, _db) = setup().await;
    exchange_until_rejoin(&server, &mut dev).await;
    // Staging alone does not touch ChirpStack.
    assert_eq!(*fake.updates.lock().unwrap(), 0);
    let probe = dev.join_request_under(RootKeySlot::Active);
    assert!(chirpstack_accepts(&fake, &dev, &probe));
    // First JoinRequest under the new key: MIC failure at ChirpStack, which is then switched.
    assert_eq!(
        attempt(&fake, &handoff, &mut dev, Fate::Delivered).await,
        RootKeySlot::Staged
    );
    assert_eq!(*fake.updates.lock().unwrap(), 1);
    // The retry joins; the join confirms the new key here too.
    assert_eq!(
        attempt(&fake, &handoff, &mut dev, Fate::Delivered).await,
        RootKeySlot::Staged
    );
    assert!(dev.completed);
    let row = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(row.key_state, KeyState::ActiveNew);
    assert_eq!(server.metrics().completed(), 1);
    // A MIC failure now (nothing staged) changes nothing.
    assert_eq!(
        handoff.on_mic_failure(dev.dev_eui).await.unwrap(),
        MicOutcome::Ignored
    );
}

/// A join under the factory key while a key is staged (the device's own, on the 3:1
/// alternation, or one forged by whoever knows the factory key) changes nothing: the staged key
/// stays, the device is never stranded, and its next JoinRequests under the new key switch
/// ChirpStack and complete the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_under_the_factory_key_while_staged_strands_nothing() {
    let (server, mut dev, fake, handoff, _db) = setup().await;
    exchange_until_rejoin(&server, &mut dev).await;
    // Only the first JoinRequest under each key reaches ChirpStack; ChirpStack follows the key
    // that failed, and the device's alternation (3 × staged, 1 × active) meets it under the old
    // key.
    use Fate::{Delivered, RequestLost};
    let fates = [
        Delivered,
        RequestLost,
        RequestLost,
        Delivered,
        RequestLost,
        RequestLost,
        RequestLost,
        Delivered,
    ];
    let mut slots = Vec::new();
    for fate in fates {
        slots.push(attempt(&fake, &handoff, &mut dev, fate).await);
    }
    use RootKeySlot::{Active, Staged};
    assert_eq!(
        slots,
        [
            Staged, Staged, Staged, Active, Staged, Staged, Staged, Active
        ]
    );
    // The device joined under its old key; the staged key stays on both sides.
    let row = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(row.key_state, KeyState::PendingNew);
    assert!(!dev.completed);
    let probe = dev.join_request_under(RootKeySlot::Active);
    assert!(chirpstack_accepts(&fake, &dev, &probe));
    // Its next JoinRequests under the new key: one MIC failure switches ChirpStack, the next
    // one joins and activates the new key.
    let mut more = Vec::new();
    while !dev.completed {
        assert!(more.len() < 8, "the switch never completed: {more:?}");
        more.push(attempt(&fake, &handoff, &mut dev, Delivered).await);
    }
    assert_eq!(more.last(), Some(&Staged), "{more:?}");
    let row = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(row.key_state, KeyState::ActiveNew);
    let probe = dev.join_request_under(RootKeySlot::Active);
    assert!(
        chirpstack_accepts(&fake, &dev, &probe),
        "ChirpStack holds the new key"
    );
    assert_eq!(server.metrics().completed(), 1);
}

/// Finding 5: a JoinRequest with a bad MIC (anyone can send one, no key needed) reported while
/// the join under the new key is being activated. Reading ChirpStack's key and activating happen
/// under one device lock, so the MIC failure is handled after the activation, finds nothing
/// staged and ChirpStack holding the active key, and changes nothing: ChirpStack and the
/// registry hold the same key. (Released between the two, the MIC failure would have swapped
/// ChirpStack back to the factory key while the registry activated the new one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mic_failure_racing_the_activation_cannot_split_the_key_stores() {
    let (server, mut dev, fake, handoff, _db) = setup().await;
    exchange_until_rejoin(&server, &mut dev).await;
    assert_eq!(
        attempt(&fake, &handoff, &mut dev, Fate::Delivered).await,
        RootKeySlot::Staged
    );
    // ChirpStack now holds the new key; the device's next JoinRequest joins there.
    let (slot, phy) = dev.join_request().unwrap();
    assert_eq!(slot, RootKeySlot::Staged);
    assert!(chirpstack_accepts(&fake, &dev, &phy));
    *fake.get_delay.lock().unwrap() = std::time::Duration::from_millis(300);
    let forged_mic_failure = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        handoff.on_mic_failure(dev.dev_eui).await
    };
    let (joined, mic) = tokio::join!(handoff.on_join(dev.dev_eui), forged_mic_failure);
    assert_eq!(joined.unwrap(), Some(RootKeySlot::Staged));
    assert_eq!(mic.unwrap(), MicOutcome::Ignored);
    dev.session
        .handle_join_result(&mut dev.backend, dev.now, slot, true)
        .unwrap();
    dev.drain();
    assert!(dev.completed);
    let row = server.store().device(dev.dev_eui).await.unwrap().unwrap();
    assert_eq!(row.key_state, KeyState::ActiveNew);
    let probe = dev.join_request_under(RootKeySlot::Active);
    assert!(
        chirpstack_accepts(&fake, &dev, &probe),
        "ChirpStack holds the key the registry activated"
    );
    assert!(not_stranded(&fake, &mut dev));
    assert_eq!(*fake.updates.lock().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_changes_nothing() {
    let (server, mut dev, fake, _, _db) = setup().await;
    exchange_until_rejoin(&server, &mut dev).await;
    let url = {
        // Same fake, wrong token.
        let (_, url) = start_fake().await;
        url
    };
    let bad = KeyHandoff::new(
        Arc::clone(&server),
        &url,
        Some(zeroize::Zeroizing::new("wrong".to_owned())),
        None,
    )
    .unwrap();
    assert!(bad.on_mic_failure(dev.dev_eui).await.is_err());
    assert_eq!(*fake.updates.lock().unwrap(), 0);
}
