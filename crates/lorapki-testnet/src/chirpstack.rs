//! A real ChirpStack v4 for the tests: Redis, a mosquitto broker of its own and ChirpStack,
//! started from the configuration files in this crate's `chirpstack/` directory (the ones the
//! lorapki-server README shows operators), and provisioned over ChirpStack's gRPC API: a tenant
//! that may have gateways, an application, device profiles per region and LoRaWAN version
//! (OTAA), gateways, and devices registered *without* keys (the join server holds them).
//!
//! The binary comes from `LORAPKI_TEST_CHIRPSTACK` (`.ci/services.sh` sets it from
//! `../shared/chirpstack/` when present); [`binary`] is `None` without it and the tests skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chirpstack_api::api;
use chirpstack_api::common;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// ChirpStack's own configuration, as templates (`{{NAME}}` placeholders).
pub const CHIRPSTACK_TOML: &str = include_str!("../chirpstack/chirpstack.toml");
/// The regions: `(file name, text)`.
pub const REGION_FILES: [(&str, &str); 3] = [
    (
        "region_eu868.toml",
        include_str!("../chirpstack/region_eu868.toml"),
    ),
    (
        "region_us915_1.toml",
        include_str!("../chirpstack/region_us915_1.toml"),
    ),
    (
        "region_as923.toml",
        include_str!("../chirpstack/region_as923.toml"),
    ),
];

/// The ChirpStack binary of `LORAPKI_TEST_CHIRPSTACK`, if set and present.
#[must_use]
pub fn binary() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("LORAPKI_TEST_CHIRPSTACK")?);
    path.is_file().then_some(path)
}

/// A free TCP port on loopback.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What ChirpStack is told about its join server.
#[derive(Clone, Debug)]
pub struct JoinServerLink {
    /// `join_eui_prefix`, e.g. `70b3d57ed0000000/64`.
    pub join_eui_prefix: String,
    /// Its URL, e.g. `http://127.0.0.1:8003/`.
    pub url: String,
    /// The bearer token (`authorization_header = "Bearer …"`).
    pub token: String,
    /// The KEK of the network session keys: label and 32 hex digits.
    pub kek_label: String,
    pub kek_hex: String,
}

/// The running processes and how to reach them.
pub struct ChirpStack {
    children: Vec<(&'static str, Child)>,
    dir: PathBuf,
    /// The broker (for the gateway backend and the MQTT integration): `127.0.0.1:port`.
    pub mqtt_port: u16,
    /// The gRPC API, `http://127.0.0.1:port`.
    pub api_url: String,
    /// An API key (bearer token) for the gRPC API.
    pub api_token: String,
}

impl Drop for ChirpStack {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(name: &'static str, dir: &Path, command: &mut Command) -> (&'static str, Child) {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
    (name, child)
}

fn wait_for_port(port: u16, what: &str, dir: &Path) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port} within 60 s; logs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fills `{{NAME}}` placeholders.
#[must_use]
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    assert!(!text.contains("{{"), "an unfilled placeholder in {text}");
    text
}

impl ChirpStack {
    /// Starts Redis, mosquitto and ChirpStack in `dir` (logs there too), and creates an API key.
    ///
    /// # Panics
    ///
    /// If a process does not start or listen within 60 s.
    pub fn start(binary: &Path, dir: &Path, js: &JoinServerLink) -> Self {
        let (redis_port, mqtt_port, api_port) = (free_port(), free_port(), free_port());
        let mut children = Vec::new();
        children.push(spawn(
            "redis",
            dir,
            Command::new("redis-server")
                .args(["--port", &redis_port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]),
        ));
        let mosquitto_conf = dir.join("mosquitto.conf");
        std::fs::write(
            &mosquitto_conf,
            format!("listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n"),
        )
        .unwrap();
        let mosquitto = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|m| Path::new(m).is_file())
            .unwrap_or("mosquitto");
        children.push(spawn(
            "mosquitto",
            dir,
            Command::new(mosquitto).arg("-c").arg(&mosquitto_conf),
        ));
        let mut this = Self {
            children,
            dir: dir.to_owned(),
            mqtt_port,
            api_url: format!("http://127.0.0.1:{api_port}"),
            api_token: String::new(),
        };
        wait_for_port(redis_port, "redis-server", dir);
        wait_for_port(mqtt_port, "mosquitto", dir);
        let config_dir = dir.join("chirpstack");
        std::fs::create_dir_all(&config_dir).unwrap();
        let (redis, mqtt, api) = (
            format!("127.0.0.1:{redis_port}"),
            format!("127.0.0.1:{mqtt_port}"),
            format!("127.0.0.1:{api_port}"),
        );
        let values = [
            ("DIR", dir.to_str().unwrap()),
            ("REDIS", redis.as_str()),
            ("MQTT", mqtt.as_str()),
            ("API", api.as_str()),
            ("API_SECRET", "lorapki-tests-api-secret"),
            ("JOIN_EUI_PREFIX", js.join_eui_prefix.as_str()),
            ("JOIN_SERVER", js.url.as_str()),
            ("JS_TOKEN", js.token.as_str()),
            ("KEK_LABEL", js.kek_label.as_str()),
            ("KEK", js.kek_hex.as_str()),
        ];
        std::fs::write(
            config_dir.join("chirpstack.toml"),
            fill(CHIRPSTACK_TOML, &values),
        )
        .unwrap();
        for (name, text) in REGION_FILES {
            std::fs::write(config_dir.join(name), fill(text, &values)).unwrap();
        }
        this.children.push(spawn(
            "chirpstack",
            dir,
            Command::new(binary).arg("-c").arg(&config_dir),
        ));
        wait_for_port(api_port, "chirpstack", dir);
        let out = Command::new(binary)
            .arg("-c")
            .arg(&config_dir)
            .args(["create-api-key", "--name", "lorapki-tests"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        this.api_token = stdout
            .lines()
            .find_map(|l| l.strip_prefix("token: "))
            .unwrap_or_else(|| {
                panic!(
                    "create-api-key printed no token: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .trim()
            .to_owned();
        this
    }

    /// The directory with the configuration and the logs.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tail of ChirpStack's log (for failure messages).
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("chirpstack.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A gRPC client connection to the API.
    pub async fn api(&self) -> Api {
        let channel = Channel::from_shared(self.api_url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Api {
            channel,
            auth: format!("Bearer {}", self.api_token).parse().unwrap(),
        }
    }
}

/// The gRPC API with its bearer token.
pub struct Api {
    channel: Channel,
    auth: MetadataValue<tonic::metadata::Ascii>,
}

/// A LoRaWAN version of a device profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mac {
    V1_0_3,
    V1_0_4,
    V1_1,
}

/// A region of the configuration: its id in ChirpStack and its topic prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CsRegion {
    Eu868,
    Us915SubBand2,
    As923Dwell,
}

impl CsRegion {
    /// `region_config_id` and the gateway topic prefix.
    #[must_use]
    pub const fn id(self) -> &'static str {
        match self {
            Self::Eu868 => "eu868",
            Self::Us915SubBand2 => "us915_1",
            Self::As923Dwell => "as923",
        }
    }

    const fn common(self) -> common::Region {
        match self {
            Self::Eu868 => common::Region::Eu868,
            Self::Us915SubBand2 => common::Region::Us915,
            Self::As923Dwell => common::Region::As923,
        }
    }
}

impl Api {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.auth.clone());
        request
    }

    /// A tenant that may have gateways; its id.
    pub async fn create_tenant(&self, name: &str) -> String {
        let mut client = api::tenant_service_client::TenantServiceClient::new(self.channel.clone());
        client
            .create(self.request(api::CreateTenantRequest {
                tenant: Some(api::Tenant {
                    name: name.to_owned(),
                    can_have_gateways: true,
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .id
    }

    /// An application; its id.
    pub async fn create_application(&self, tenant_id: &str, name: &str) -> String {
        let mut client =
            api::application_service_client::ApplicationServiceClient::new(self.channel.clone());
        client
            .create(self.request(api::CreateApplicationRequest {
                application: Some(api::Application {
                    name: name.to_owned(),
                    tenant_id: tenant_id.to_owned(),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .id
    }

    /// An OTAA device profile; its id.
    pub async fn create_device_profile(
        &self,
        tenant_id: &str,
        region: CsRegion,
        mac: Mac,
    ) -> String {
        let (mac_version, revision) = match mac {
            Mac::V1_0_3 => (common::MacVersion::Lorawan103, common::RegParamsRevision::A),
            Mac::V1_0_4 => (
                common::MacVersion::Lorawan104,
                common::RegParamsRevision::Rp002103,
            ),
            Mac::V1_1 => (
                common::MacVersion::Lorawan110,
                common::RegParamsRevision::Rp002103,
            ),
        };
        let mut client = api::device_profile_service_client::DeviceProfileServiceClient::new(
            self.channel.clone(),
        );
        client
            .create(self.request(api::CreateDeviceProfileRequest {
                device_profile: Some(api::DeviceProfile {
                    tenant_id: tenant_id.to_owned(),
                    name: format!("{}-{mac:?}", region.id()),
                    region: region.common().into(),
                    region_config_id: region.id().to_owned(),
                    mac_version: mac_version.into(),
                    reg_params_revision: revision.into(),
                    supports_otaa: true,
                    adr_algorithm_id: "default".to_owned(),
                    uplink_interval: 3600,
                    flush_queue_on_activate: true,
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .id
    }

    /// A gateway.
    pub async fn create_gateway(&self, tenant_id: &str, gateway_id: [u8; 8]) {
        let mut client =
            api::gateway_service_client::GatewayServiceClient::new(self.channel.clone());
        client
            .create(self.request(api::CreateGatewayRequest {
                gateway: Some(api::Gateway {
                    gateway_id: hex::encode(gateway_id),
                    name: format!("vgw-{}", hex::encode(gateway_id)),
                    tenant_id: tenant_id.to_owned(),
                    stats_interval: 30,
                    ..Default::default()
                }),
            }))
            .await
            .unwrap();
    }

    /// A device without keys (its join server holds them).
    pub async fn create_device(
        &self,
        application_id: &str,
        profile_id: &str,
        dev_eui: [u8; 8],
        join_eui: [u8; 8],
    ) {
        let mut client = api::device_service_client::DeviceServiceClient::new(self.channel.clone());
        client
            .create(self.request(api::CreateDeviceRequest {
                device: Some(api::Device {
                    dev_eui: hex::encode(dev_eui),
                    name: hex::encode(dev_eui),
                    application_id: application_id.to_owned(),
                    device_profile_id: profile_id.to_owned(),
                    join_eui: hex::encode(join_eui),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap();
    }
}
