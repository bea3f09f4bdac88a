//! Shared test harness: simulated devices (a `lorapki_proto::DeviceSession` with a software key
//! store, building real JoinRequests and checking real JoinAccepts), servers on a temporary
//! SQLite file or the PostgreSQL of `LORAPKI_TEST_POSTGRES`, and JoinReq bodies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::SystemTime;

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use lorapki_crypto::{
    AesKey, CryptoBackend, KeySlot, PublicKey, RootKeyKind, RootKeySlot, RootKeyStore, RootKeys,
};
use lorapki_crypto_soft::{SoftBackend, SoftKeyStore, TestRng};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceSession, Duration, FailReason, Instant,
};
use lorapki_server::lorawan::MacVersion;
use lorapki_server::registry::{IdentitySource, NewDevice};
use lorapki_server::{Eui64, Metrics, Server, ServerKey, ServerOptions, StorageKek, Store};

pub type Backend = SoftBackend<TestRng>;

pub const KEK_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
pub const JOIN_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x00];
pub const NET_ID: &str = "000013";

pub fn kek() -> StorageKek {
    StorageKek::from_hex(KEK_HEX).unwrap()
}

/// A server key for tests (fresh per call).
pub fn server_key() -> ServerKey {
    lorapki_server::identity::generate().unwrap().1
}

pub fn dev_eui(i: u32) -> Eui64 {
    let mut b = [0x70, 0xb3, 0xd5, 0x7e, 0, 0, 0, 0];
    b[4..].copy_from_slice(&i.to_be_bytes());
    Eui64(b)
}

pub fn factory_app_key(i: u32) -> [u8; 16] {
    let mut k = [0x2b; 16];
    k[..4].copy_from_slice(&i.to_be_bytes());
    k
}

/// Which database a test runs on.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(Arc<tempfile::TempDir>),
    Postgres(String),
}

impl Db {
    pub fn sqlite() -> Self {
        Self::Sqlite(Arc::new(tempfile::tempdir().unwrap()))
    }

    /// A fresh PostgreSQL schema-less database: the tables are dropped first.
    pub async fn postgres() -> Option<Self> {
        let url = std::env::var("LORAPKI_TEST_POSTGRES").ok()?;
        Some(Self::Postgres(url))
    }

    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}", dir.path().join("lorapki.db").display()),
            Self::Postgres(url) => url.clone(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// PostgreSQL tests share one database: they take this lock and start from empty tables.
pub static PG_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The PostgreSQL database of `LORAPKI_TEST_POSTGRES`, emptied, with the lock that keeps the
/// suites using it apart (hold it for the test); `None` when the variable is not set (the test
/// is skipped, see [`skip`]).
pub async fn postgres_for(what: &str) -> Option<(Db, tokio::sync::MutexGuard<'static, ()>)> {
    if skip("LORAPKI_TEST_POSTGRES", what) {
        return None;
    }
    let lock = PG_LOCK.lock().await;
    let db = Db::postgres().await.unwrap();
    reset_postgres(&db.url()).await;
    Some((db, lock))
}

pub async fn reset_postgres(url: &str) {
    let store = Store::open(url).await.unwrap();
    store.close().await;
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
    for t in ["devices", "sessions", "key_history", "meta"] {
        sqlx::query(&format!("DELETE FROM {t}"))
            .execute(&mut c)
            .await
            .unwrap();
    }
    c.close().await.unwrap();
}

/// Whether a service-backed test must be skipped because `var` is not set. Under
/// `LORAPKI_REQUIRE_SERVICES` (set by `.ci/run`) a missing service fails the test instead.
pub fn skip(var: &str, what: &str) -> bool {
    if std::env::var(var).is_err() {
        assert!(
            std::env::var_os("LORAPKI_REQUIRE_SERVICES").is_none(),
            "{what}: {var} is not set but LORAPKI_REQUIRE_SERVICES is (.ci/services.sh sets it)"
        );
        println!("SKIPPED: {what} (set {var})");
        true
    } else {
        false
    }
}

pub fn options() -> ServerOptions {
    ServerOptions {
        uplinks_per_minute: 100_000,
        uplink_burst: 10_000,
        runs_burst: 100,
        engines: 2,
        ..ServerOptions::default()
    }
}

pub async fn server_on(db: &Db, keys: &[ServerKey], options: ServerOptions) -> Arc<Server> {
    let store = Store::open(&db.url()).await.unwrap();
    Arc::new(Server::new(store, kek(), keys, options, Arc::new(Metrics::default())).unwrap())
}

/// `instances` servers on `db`, all with `keys`, and `devices` imported (owner 1) through the
/// first.
pub async fn servers_with_devices(
    db: &Db,
    keys: &[ServerKey],
    instances: usize,
    devices: &[SimDevice],
) -> Vec<Arc<Server>> {
    let mut servers = Vec::new();
    for _ in 0..instances {
        servers.push(server_on(db, keys, options()).await);
    }
    import_devices(&servers[0], devices).await;
    servers
}

/// Imports `devices` (owner 1) through `server`.
pub async fn import_devices(server: &Server, devices: &[SimDevice]) {
    let records: Vec<_> = devices.iter().map(|d| (1, d.record())).collect();
    server
        .store()
        .import_devices(&records, &kek(), 0)
        .await
        .unwrap();
}

/// A simulated device.
pub struct SimDevice {
    pub dev_eui: Eui64,
    pub mac: MacVersion,
    pub session: DeviceSession<Backend>,
    pub backend: Backend,
    pub keys: SoftKeyStore,
    pub config: DeviceConfig,
    pub now: Instant,
    pub dev_nonce: u16,
    pub completed: bool,
    pub failures: Vec<FailReason>,
    pub identity: PublicKey,
    pub app_key: [u8; 16],
    pub nwk_key: Option<[u8; 16]>,
}

impl SimDevice {
    pub fn new(i: u32, mac: MacVersion, server_public: PublicKey) -> Self {
        let mut backend = SoftBackend::new(TestRng::from_seed(u64::from(i) * 7 + 1));
        let identity = backend.identity_generate(KeySlot(0)).unwrap();
        let app_key = factory_app_key(i);
        let nwk_key = (mac == MacVersion::V1_1).then_some([0x55; 16]);
        let mut keys = SoftKeyStore::new();
        keys.provision_factory(RootKeys {
            app_key: AesKey::from_array(app_key),
            nwk_key: nwk_key.map(AesKey::from_array),
        })
        .unwrap();
        let dev_eui = dev_eui(i);
        let mut config = DeviceConfig::new(
            dev_eui.0,
            JOIN_EUI,
            mac.lorawan(),
            KeySlot(0),
            server_public,
        );
        config.retransmit_interval = Duration::from_secs(10);
        let status = keys.status().unwrap();
        let session = DeviceSession::new(
            &mut backend,
            config.clone(),
            DevicePersistent::default(),
            status,
        )
        .unwrap();
        Self {
            dev_eui,
            mac,
            session,
            backend,
            keys,
            config,
            now: Instant::from_millis(1_000_000),
            dev_nonce: 0,
            completed: false,
            failures: Vec::new(),
            identity,
            app_key,
            nwk_key,
        }
    }

    /// The registry record of this device.
    pub fn record(&self) -> NewDevice {
        NewDevice {
            dev_eui: self.dev_eui,
            join_eui: Eui64(JOIN_EUI),
            mac_version: self.mac,
            app_key: AesKey::from_array(self.app_key),
            nwk_key: self.nwk_key.map(AesKey::from_array),
            identity: self.identity,
            identity_source: IdentitySource::Raw,
            server_key_id: None,
        }
    }

    pub fn start(&mut self) {
        self.session.start(&mut self.backend, self.now).unwrap();
        self.drain();
    }

    pub fn drain(&mut self) {
        while let Some(e) = self.session.poll_event() {
            match e {
                DeviceEvent::StageNewKey(k) => self.keys.stage(k.to_root_keys()).unwrap(),
                DeviceEvent::ActivateNewKey => self.keys.activate().unwrap(),
                DeviceEvent::Completed => self.completed = true,
                DeviceEvent::Failed(r) => self.failures.push(r),
                _ => {}
            }
        }
    }

    /// The next FPort-1 uplink, advancing the device's clock to its next deadline if it has
    /// nothing to send now (at most `max_waits` times).
    pub fn uplink(&mut self, n: usize) -> Option<Vec<u8>> {
        for _ in 0..4 {
            let mut buf = [0u8; 242];
            let t = self
                .session
                .poll_transmit(&mut self.backend, self.now, n, &mut buf)
                .unwrap();
            self.drain();
            if let Some(t) = t {
                self.now = self.now.saturating_add(Duration::from_secs(3));
                return Some(buf[..t.len].to_vec());
            }
            match self.session.poll_timeout() {
                Some(t) if t > self.now => self.now = t,
                _ => return None,
            }
        }
        None
    }

    pub fn downlink(&mut self, frame: &[u8]) {
        let _ = self
            .session
            .handle_downlink(&mut self.backend, self.now, frame);
        self.drain();
    }

    /// The JoinRequest the device wants to send now, with the key slot it uses.
    pub fn join_request(&mut self) -> Option<(RootKeySlot, Vec<u8>)> {
        let slot = self.session.join_key()?;
        self.dev_nonce += 1;
        let mut phy = vec![0x00];
        phy.extend_from_slice(&Eui64(JOIN_EUI).to_le_bytes());
        phy.extend_from_slice(&self.dev_eui.to_le_bytes());
        phy.extend_from_slice(&self.dev_nonce.to_le_bytes());
        let which = if self.mac == MacVersion::V1_1 {
            RootKeyKind::NwkKey
        } else {
            RootKeyKind::AppKey
        };
        let mic = self.keys.root_cmac(slot, which, &[&phy]).unwrap();
        phy.extend_from_slice(&mic[..4]);
        Some((slot, phy))
    }

    /// Checks a JoinAccept with the key store (decryption and MIC under `slot`'s keys).
    pub fn accept_verifies(&mut self, slot: RootKeySlot, phy: &[u8]) -> bool {
        if phy.len() != 17 && phy.len() != 33 {
            return false;
        }
        let which = if self.mac == MacVersion::V1_1 {
            RootKeyKind::NwkKey
        } else {
            RootKeyKind::AppKey
        };
        let mut plain = Vec::new();
        for chunk in phy[1..].chunks(16) {
            let mut block = [0u8; 16];
            block.copy_from_slice(chunk);
            self.keys
                .root_encrypt_block(slot, which, &mut block)
                .unwrap();
            plain.extend_from_slice(&block);
        }
        let (body, mic) = plain.split_at(plain.len() - 4);
        let expected = if self.mac == MacVersion::V1_1 {
            let mut block = [0u8; 16];
            block[0] = 0x06;
            block[1..9].copy_from_slice(&self.dev_eui.to_le_bytes());
            self.keys
                .root_encrypt_block(slot, RootKeyKind::NwkKey, &mut block)
                .unwrap();
            let mut mac = <Cmac<Aes128> as KeyInit>::new((&block).into());
            mac.update(&[0xff]);
            mac.update(&Eui64(JOIN_EUI).to_le_bytes());
            mac.update(&self.dev_nonce.to_le_bytes());
            mac.update(&[0x20]);
            mac.update(body);
            let tag: [u8; 16] = mac.finalize().into_bytes().into();
            tag
        } else {
            self.keys.root_cmac(slot, which, &[&[0x20], body]).unwrap()
        };
        expected[..4] == *mic
    }

    /// The outcome of a join attempt (JoinAccept or none).
    pub fn join_result(&mut self, slot: RootKeySlot, accept: Option<&[u8]>) {
        let ok = accept.is_some_and(|a| self.accept_verifies(slot, a));
        self.session
            .handle_join_result(&mut self.backend, self.now, slot, ok)
            .unwrap();
        self.now = self.now.saturating_add(Duration::from_secs(6));
        self.drain();
    }
}

/// A JoinReq body as ChirpStack sends it.
pub fn join_req(phy: &[u8], dev_eui: Eui64, dev_addr: &str, transaction: u32) -> Vec<u8> {
    serde_json::json!({
        "ProtocolVersion": "1.0",
        "SenderID": NET_ID,
        "ReceiverID": hex::encode(JOIN_EUI),
        "TransactionID": transaction,
        "MessageType": "JoinReq",
        "MACVersion": "1.0.3",
        "PHYPayload": hex::encode(phy),
        "DevEUI": dev_eui.to_string(),
        "DevAddr": dev_addr,
        "DLSettings": "00",
        "RxDelay": 1,
    })
    .to_string()
    .into_bytes()
}

/// The PHYPayload of a successful JoinAns, or `None` with the result code.
pub fn join_ans_phy(ans: &serde_json::Value) -> Result<Vec<u8>, String> {
    let code = ans["Result"]["ResultCode"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    if code != "Success" {
        return Err(code);
    }
    Ok(hex::decode(ans["PHYPayload"].as_str().unwrap()).unwrap())
}

pub fn now() -> SystemTime {
    SystemTime::now()
}

/// AES-128 block encryption for test-side key derivations.
pub fn aes_encrypt(key: &[u8; 16], block: &mut [u8; 16]) {
    Aes128::new(key.into()).encrypt_block(block.into());
}

/// Runs the exchange of `dev` against `server` until the device has staged its new key and
/// wants to rejoin.
pub async fn exchange_until_rejoin(server: &Server, dev: &mut SimDevice) {
    dev.start();
    for _ in 0..40 {
        if dev.session.join_key().is_some() {
            return;
        }
        let up = dev.uplink(51).expect("device has something to send");
        if let Some(down) = server.handle_uplink(dev.dev_eui, &up).await.unwrap() {
            dev.downlink(&down);
        }
    }
    panic!("no rejoin: {:?}", dev.failures);
}

impl SimDevice {
    /// A JoinRequest under `slot` without changing the device's state (DevNonce not consumed).
    pub fn join_request_under(&mut self, slot: lorapki_crypto::RootKeySlot) -> Vec<u8> {
        let mut phy = vec![0x00];
        phy.extend_from_slice(&Eui64(JOIN_EUI).to_le_bytes());
        phy.extend_from_slice(&self.dev_eui.to_le_bytes());
        phy.extend_from_slice(&(self.dev_nonce + 1).to_le_bytes());
        let mic = self
            .keys
            .root_cmac(slot, RootKeyKind::AppKey, &[&phy])
            .unwrap();
        phy.extend_from_slice(&mic[..4]);
        phy
    }
}

/// The value of the sample `series` (name and labels, as rendered) in the server's metrics, 0
/// when absent.
pub fn sample(server: &Server, series: &str) -> u64 {
    let text = server.metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}
