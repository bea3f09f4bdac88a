//! The server configuration file (TOML). Unknown keys are errors, so that a typo never silently
//! falls back to a default. Secrets may come from the environment instead of the file:
//! `LORAPKI_KEK` (storage KEK), `LORAPKI_JS_TOKEN` (join-server bearer token),
//! `LORAPKI_MQTT_PASSWORD`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::kek::{StorageKek, WrapKek};
use crate::server::{ConfirmOn, ServerOptions};

/// The whole file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseSection,
    /// `[mqtt]`; absent: no MQTT integration.
    pub mqtt: Option<MqttSection>,
    /// `[join_server]`; absent: no join server.
    pub join_server: Option<JoinServerSection>,
    /// `[metrics]`; absent: no metrics endpoint.
    pub metrics: Option<MetricsSection>,
    /// `[chirpstack_grpc]`; absent: no key hand-off to ChirpStack's key store.
    pub chirpstack_grpc: Option<ChirpstackGrpcSection>,
}

/// `[chirpstack_grpc]`: hand new keys to ChirpStack's key store (feature `chirpstack-grpc`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ChirpstackGrpcSection {
    /// ChirpStack's gRPC API, e.g. `http://chirpstack:8080`.
    pub server: String,
    /// API token (prefer `api_token_file` or `LORAPKI_CHIRPSTACK_TOKEN`).
    pub api_token: Option<String>,
    /// File holding the API token.
    pub api_token_file: Option<PathBuf>,
}

/// `[server]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// The primary signing key (PKCS#8 PEM).
    pub key_file: PathBuf,
    /// A second signing key during a server-key rotation (devices that pinned it name its key
    /// id in the registry).
    pub second_key_file: Option<PathBuf>,
    /// Storage KEK, 64 hex digits (prefer `kek_file` or `LORAPKI_KEK`).
    pub kek: Option<String>,
    /// File holding the storage KEK (64 hex digits).
    pub kek_file: Option<PathBuf>,
    /// Manufacturer CA bundle (PEM) for device certificates at import.
    pub ca_file: Option<PathBuf>,
    /// Maximum FPort-1 downlink payload.
    pub max_downlink_payload: usize,
    /// Pending run idle expiry, seconds.
    pub idle_timeout_secs: u64,
    /// Runs per device back to back.
    pub runs_burst: u8,
    /// One more run per this many seconds.
    pub runs_refill_secs: u64,
    /// Pending runs over all devices.
    pub max_pending_sessions: usize,
    /// FPort-1 uplinks per device per minute.
    pub uplinks_per_minute: u32,
    /// Burst of that limit.
    pub uplink_burst: u32,
    /// `join` or `uplink`: when the old key is retired.
    pub confirm_on: String,
    /// Crypto engines (0: one per core).
    pub engines: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        let o = ServerOptions::default();
        Self {
            key_file: PathBuf::from("server-key.pem"),
            second_key_file: None,
            kek: None,
            kek_file: None,
            ca_file: None,
            max_downlink_payload: o.max_downlink_payload,
            idle_timeout_secs: o.idle_timeout.as_secs(),
            runs_burst: o.runs_burst,
            runs_refill_secs: o.runs_refill.as_secs(),
            max_pending_sessions: o.max_pending_sessions,
            uplinks_per_minute: o.uplinks_per_minute,
            uplink_burst: o.uplink_burst,
            confirm_on: "join".into(),
            engines: 0,
        }
    }
}

/// `[database]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `sqlite://lorapki.db` (default) or `postgres://user@host/db`.
    pub url: String,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: "sqlite://lorapki.db".into(),
        }
    }
}

/// `[mqtt]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `host:port` of the broker ChirpStack publishes to.
    pub server: String,
    /// Client id; must differ between instances.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Username.
    pub username: Option<String>,
    /// Password (prefer `LORAPKI_MQTT_PASSWORD`).
    pub password: Option<String>,
    /// Shared-subscription group ("" for a plain subscription).
    #[serde(default = "default_group")]
    pub shared_group: String,
    /// Send downlinks confirmed.
    #[serde(default)]
    pub confirmed_downlinks: bool,
    /// ChirpStack's integration topic prefix.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
}

fn default_client_id() -> String {
    format!("lorapki-{}", std::process::id())
}
fn default_group() -> String {
    "lorapki".into()
}
fn default_prefix() -> String {
    "application".into()
}

/// `[join_server]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct JoinServerSection {
    /// Listen address.
    pub bind: SocketAddr,
    /// Bearer token (prefer `token_file` or `LORAPKI_JS_TOKEN`).
    pub token: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// KEK label for the network session keys.
    pub nwk_kek_label: Option<String>,
    /// That KEK, hex (16, 24 or 32 bytes).
    pub nwk_kek: Option<String>,
    /// KEK label for the AppSKey.
    pub app_kek_label: Option<String>,
    /// That KEK, hex.
    pub app_kek: Option<String>,
}

/// `[metrics]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Listen address of the Prometheus text endpoint (`GET /metrics`).
    pub bind: SocketAddr,
}

impl Config {
    /// Parses TOML text.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with the position and reason.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.options()?;
        if let Some(m) = &config.mqtt {
            split_host_port(&m.server)?;
        }
        if config.chirpstack_grpc.is_some() {
            if !cfg!(feature = "chirpstack-grpc") {
                return Err(Error::Config(
                    "[chirpstack_grpc] needs a build with the chirpstack-grpc feature".into(),
                ));
            }
            if config.mqtt.is_none() {
                return Err(Error::Config(
                    "[chirpstack_grpc] needs the [mqtt] integration (log and join events)".into(),
                ));
            }
        }
        Ok(config)
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    ///
    /// [`Error::IoAt`] naming the file if it cannot be read, else as [`parse`](Self::parse).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io_at(path.display()))?;
        Self::parse(&text)
    }

    /// The server-core options.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for out-of-range values.
    pub fn options(&self) -> Result<ServerOptions> {
        let s = &self.server;
        if !(lorapki_wire::MIN_PAYLOAD..=lorapki_wire::MAX_PAYLOAD)
            .contains(&s.max_downlink_payload)
        {
            return Err(Error::Config(
                "server.max_downlink_payload must be 11..=242".into(),
            ));
        }
        if s.runs_burst == 0 || s.uplink_burst == 0 || s.uplinks_per_minute == 0 {
            return Err(Error::Config(
                "server.runs_burst, uplink_burst and uplinks_per_minute must be > 0".into(),
            ));
        }
        let confirm_on = match s.confirm_on.as_str() {
            "join" => ConfirmOn::Join,
            "uplink" => ConfirmOn::Uplink,
            _ => {
                return Err(Error::Config(
                    "server.confirm_on must be \"join\" or \"uplink\"".into(),
                ));
            }
        };
        if confirm_on == ConfirmOn::Uplink && self.mqtt.is_none() {
            return Err(Error::Config(
                "server.confirm_on = \"uplink\" needs the [mqtt] integration".into(),
            ));
        }
        let defaults = ServerOptions::default();
        Ok(ServerOptions {
            max_downlink_payload: s.max_downlink_payload,
            idle_timeout: Duration::from_secs(s.idle_timeout_secs.max(1)),
            runs_burst: s.runs_burst,
            runs_refill: Duration::from_secs(s.runs_refill_secs.max(1)),
            max_pending_sessions: s.max_pending_sessions,
            uplinks_per_minute: s.uplinks_per_minute,
            uplink_burst: s.uplink_burst,
            confirm_on,
            engines: if s.engines == 0 {
                defaults.engines
            } else {
                s.engines
            },
        })
    }

    /// The storage KEK: `LORAPKI_KEK`, else `kek_file`, else `kek`; it carries where it came
    /// from, which the errors about it name.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if none is set, [`Error::IoAt`] if `kek_file` cannot be read,
    /// [`Error::Key`] if it is malformed.
    pub fn storage_kek(&self) -> Result<StorageKek> {
        let named = |origin: String, text: &str| match StorageKek::from_hex(text) {
            Ok(kek) => Ok(kek.with_origin(origin)),
            Err(Error::Key(m)) => Err(Error::Key(format!("{origin}: {m}"))),
            Err(e) => Err(e),
        };
        if let Ok(v) = std::env::var("LORAPKI_KEK") {
            return named(
                "the environment variable LORAPKI_KEK".into(),
                &Zeroizing::new(v),
            );
        }
        if let Some(path) = &self.server.kek_file {
            let origin = format!("[server] kek_file = {}", path.display());
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(Error::io_at(&origin))?);
            return named(origin, &text);
        }
        if let Some(k) = &self.server.kek {
            return named("[server] kek in the configuration file".into(), k);
        }
        Err(Error::Config(
            "no storage KEK: set LORAPKI_KEK, server.kek_file or server.kek (64 hex digits; \
             `lorapki-server kekgen --kek storage-kek.hex` writes one)"
                .into(),
        ))
    }

    /// The join-server settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] / [`Error::Key`]; [`Error::IoAt`] if `token_file` cannot be read.
    pub fn join_server_settings(
        &self,
    ) -> Result<Option<(SocketAddr, crate::joinserver::JoinServerSettings)>> {
        let Some(js) = &self.join_server else {
            return Ok(None);
        };
        let token = if let Ok(t) = std::env::var("LORAPKI_JS_TOKEN") {
            Some(Zeroizing::new(t))
        } else if let Some(path) = &js.token_file {
            let t = std::fs::read_to_string(path).map_err(Error::io_at(format_args!(
                "[join_server] token_file = {}",
                path.display()
            )))?;
            Some(Zeroizing::new(t.trim().to_owned()))
        } else {
            js.token.clone().map(Zeroizing::new)
        };
        let kek = |label: &Option<String>, key: &Option<String>, what: &str| match (label, key) {
            (Some(l), Some(k)) => WrapKek::from_hex(l, k).map(Some),
            (None, None) => Ok(None),
            _ => Err(Error::Config(format!(
                "join_server.{what}_kek_label and {what}_kek go together"
            ))),
        };
        Ok(Some((
            js.bind,
            crate::joinserver::JoinServerSettings {
                token: token.filter(|t| !t.is_empty()),
                nwk_kek: kek(&js.nwk_kek_label, &js.nwk_kek, "nwk")?,
                app_kek: kek(&js.app_kek_label, &js.app_kek, "app")?,
            },
        )))
    }

    /// The MQTT settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`].
    pub fn mqtt_settings(&self) -> Result<Option<crate::chirpstack::MqttSettings>> {
        let Some(m) = &self.mqtt else {
            return Ok(None);
        };
        let (host, port) = split_host_port(&m.server)?;
        let mut s = crate::chirpstack::MqttSettings::new(&host, port, &m.client_id);
        s.username = m.username.clone();
        s.password = std::env::var("LORAPKI_MQTT_PASSWORD")
            .ok()
            .or_else(|| m.password.clone());
        s.shared_group = (!m.shared_group.is_empty()).then(|| m.shared_group.clone());
        s.confirmed = m.confirmed_downlinks;
        s.topic_prefix.clone_from(&m.topic_prefix);
        Ok(Some(s))
    }
}

impl Config {
    /// The ChirpStack API token: `LORAPKI_CHIRPSTACK_TOKEN`, else `api_token_file`, else
    /// `api_token`.
    ///
    /// # Errors
    ///
    /// [`Error::IoAt`] if `api_token_file` cannot be read.
    pub fn chirpstack_token(&self) -> Result<Option<Zeroizing<String>>> {
        let Some(g) = &self.chirpstack_grpc else {
            return Ok(None);
        };
        if let Ok(t) = std::env::var("LORAPKI_CHIRPSTACK_TOKEN") {
            return Ok(Some(Zeroizing::new(t)));
        }
        if let Some(path) = &g.api_token_file {
            let t = std::fs::read_to_string(path).map_err(Error::io_at(format_args!(
                "[chirpstack_grpc] api_token_file = {}",
                path.display()
            )))?;
            return Ok(Some(Zeroizing::new(t.trim().to_owned())));
        }
        Ok(g.api_token.clone().map(Zeroizing::new))
    }
}

fn split_host_port(server: &str) -> Result<(String, u16)> {
    let s = server
        .trim()
        .trim_start_matches("tcp://")
        .trim_start_matches("mqtt://");
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| Error::Config("mqtt.server must be host:port".into()))?;
    let port = port
        .parse()
        .map_err(|_| Error::Config("mqtt.server port must be a number".into()))?;
    if host.is_empty() {
        return Err(Error::Config("mqtt.server host is empty".into()));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../server.toml");
        let c = Config::parse(text).unwrap();
        assert!(c.mqtt.is_some());
        assert!(c.join_server.is_some());
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        for (text, needle) in [
            ("[server]\nkey_fil = \"x\"", "unknown field"),
            ("[server]\nmax_downlink_payload = 5", "11..=242"),
            ("[server]\nconfirm_on = \"never\"", "confirm_on"),
            ("[server]\nconfirm_on = \"uplink\"", "[mqtt]"),
            ("[mqtt]\nserver = \"nohost\"", "host:port"),
            ("[join_server]\nbind = \"not an address\"", "socket address"),
            ("not toml at all ===", "expected"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
